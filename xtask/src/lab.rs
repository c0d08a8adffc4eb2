//! The mesh lab as the demo and the benchmarks drive it: `smp-agent lab up/down` and
//! `smp-agent load` from inside the client pod.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::Context as _;
use serde_json::Value;

use crate::util::output;

/// `smp-agent top --pid PID --duration SECSs`: attaches the probes to a sidecar for a while.
pub fn top(agent: &Path, pid: u64, secs: u64) -> Command {
    let mut cmd = Command::new(agent);
    cmd.args([
        "top",
        "--pid",
        &pid.to_string(),
        "--duration",
        &format!("{secs}s"),
    ]);
    cmd
}

/// A lab that is taken down when dropped (errors and Ctrl-C leave nothing behind).
pub struct Lab {
    agent: PathBuf,
    name: String,
    /// `smp-agent lab up --output json`.
    pub info: Value,
}

impl Lab {
    /// Brings lab `name` up with `proxy` sidecars (taking down a leftover of the same name).
    pub fn up(agent: &Path, name: &str, proxy: &str) -> anyhow::Result<Lab> {
        Lab::up_with(agent, name, proxy, &[])
    }

    /// [`Lab::up`] with more `lab up` flags (`--h2`, `--mtls`, …).
    pub fn up_with(agent: &Path, name: &str, proxy: &str, extra: &[&str]) -> anyhow::Result<Lab> {
        let _ = Command::new(agent)
            .args(["lab", "down", "--name", name])
            .stdout(Stdio::null())
            .status();
        let text = output(
            Command::new(agent)
                .args([
                    "lab", "up", "--name", name, "--proxy", proxy, "--output", "json",
                ])
                .args(extra),
        )?;
        let info: Value = serde_json::from_str(&text).context("lab up: not JSON")?;
        Ok(Lab {
            agent: agent.to_path_buf(),
            name: name.to_string(),
            info,
        })
    }

    pub fn str(&self, key: &str) -> anyhow::Result<&str> {
        self.info[key]
            .as_str()
            .with_context(|| format!("lab: no {key}"))
    }

    /// Pid of the `outbound` or `inbound` sidecar.
    pub fn sidecar_pid(&self, side: &str) -> anyhow::Result<u64> {
        self.info[side]["pid"]
            .as_u64()
            .with_context(|| format!("lab: no {side} pid"))
    }

    /// `smp-agent load --output json` from the client pod; `rate` is a number or `max`.
    pub fn load(&self, url: &str, rate: &str, seconds: u64) -> anyhow::Result<(String, Value)> {
        let text = output(&mut self.load_command(url, rate, seconds, "1s")?)?;
        let v = serde_json::from_str(&text).context("load: not JSON")?;
        Ok((text, v))
    }
}

impl Lab {
    /// The command [`Lab::load`] runs, with its warm-up (`1s`, `0s`, …).
    pub fn load_command(
        &self,
        url: &str,
        rate: &str,
        seconds: u64,
        warmup: &str,
    ) -> anyhow::Result<Command> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.str("client_netns")?])
            .arg(&self.agent)
            .args([
                "load",
                "--rate",
                rate,
                "--connections",
                "16",
                "--warmup",
                warmup,
                "--duration",
                &format!("{seconds}s"),
                "--output",
                "json",
                url,
            ]);
        Ok(cmd)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Command::new(&self.agent)
            .args(["lab", "down", "--name", &self.name])
            .status();
    }
}
