//! `cargo xtask bench overhead`: what the probes cost, measured side by side in one run.
//!
//! (a) ns added per traced socket syscall: a tight write/read loop (`sysloop`), alternating
//!     rounds untracked and tracked by `smp-agent top`;
//! (b) a sidecar mesh's max throughput through the lab (Envoy), without and with both sidecars
//!     tracked; (c) p50/p99 at a fixed rate, without and with.
//! Prints a table; docs/benchmarks.md records it by hand.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::Context as _;
use serde_json::Value;

use crate::{
    build,
    lab::Lab,
    util::{cargo, root, run_cmd},
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Alternating rounds of (a), each untracked then tracked.
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// Seconds per load run in (b) and (c).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Fixed rate for (c).
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn attach(agent: &std::path::Path, pids: &[u64], secs: u64) -> anyhow::Result<Vec<Kill>> {
    let mut out = Vec::new();
    for pid in pids {
        let mut c = crate::lab::top(agent, *pid, secs)
            .args(["--interval", "1h"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        // `top` prints its first line once the probes are attached.
        let mut first = String::new();
        BufReader::new(c.stdout.as_mut().context("top stdout")?).read_line(&mut first)?;
        anyhow::ensure!(first.starts_with("watching"), "top did not attach: {first}");
        out.push(Kill(c));
    }
    Ok(out)
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    let agent = build::run(&build::Options { release: true })?;
    run_cmd(cargo().args(["build", "--release", "-p", "smp-tests", "--bin", "sysloop"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(Into::into)
        .unwrap_or_else(|| root().join("target"));
    let sysloop = target.join("release/sysloop");

    // (a) per-syscall cost.
    let mut child = Kill(
        Command::new(&sysloop)
            .arg("400000")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let pid = u64::from(child.0.id());
    let mut stdin = child.0.stdin.take().context("stdin")?;
    let mut lines = BufReader::new(child.0.stdout.take().context("stdout")?).lines();
    anyhow::ensure!(
        lines.next().transpose()?.as_deref() == Some("ready"),
        "sysloop did not start"
    );
    let mut round = |label: &str| -> anyhow::Result<f64> {
        stdin.write_all(b"go\n")?;
        stdin.flush()?;
        let l = lines.next().transpose()?.context("sysloop ended")?;
        // `ns_per_syscall <wall> cpu_ns_per_syscall <cpu>`
        let f: Vec<&str> = l.split_whitespace().collect();
        anyhow::ensure!(f.len() == 4, "sysloop: unexpected line {l:?}");
        let (wall, cpu): (f64, f64) = (f[1].parse()?, f[3].parse()?);
        println!("  {label:<10} {cpu:8.1} CPU ns/syscall ({wall:.1} wall)");
        Ok(cpu)
    };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    println!(
        "(a) tight write/read loop on a loopback TCP pair, {} rounds",
        o.rounds
    );
    for _ in 0..o.rounds {
        off.push(round("untracked")?);
        let _probes = attach(&agent, &[pid], 3600)?;
        on.push(round("tracked")?);
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a_off, a_on) = (med(&mut off), med(&mut on));
    drop(child);

    // (b), (c) through the lab.
    let lab = Lab::up(&agent, "smpbench", "envoy")?;
    let url = lab.str("meshed_url")?.to_string();
    let pids = [lab.sidecar_pid("outbound")?, lab.sidecar_pid("inbound")?];
    let load = |rate: &str| -> anyhow::Result<Value> { Ok(lab.load(&url, rate, o.seconds)?.1) };
    let rate = o.rate.to_string();
    let max_off = load("max")?;
    let fixed_off = load(&rate)?;
    let probes = attach(&agent, &pids, 3600)?;
    std::thread::sleep(Duration::from_millis(500));
    let max_on = load("max")?;
    let fixed_on = load(&rate)?;
    drop(probes);
    let rps = |v: &Value| v["achieved_rate"].as_f64().unwrap_or(f64::NAN);
    let p = |v: &Value, k: &str| v["latency"][k].as_f64().unwrap_or(f64::NAN);

    println!("\n| measure | untracked | tracked | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| (a) ns per socket syscall (median of {} rounds) | {a_off:.1} | {a_on:.1} | +{:.1} ns |",
        o.rounds,
        a_on - a_off
    );
    println!(
        "| (b) max rps through the Envoy lab | {:.0} | {:.0} | {:.3} |",
        rps(&max_off),
        rps(&max_on),
        rps(&max_on) / rps(&max_off)
    );
    for k in ["p50_ms", "p99_ms"] {
        println!(
            "| (c) {k} at {} rps | {:.3} | {:.3} | {:.3} |",
            o.rate,
            p(&fixed_off, k),
            p(&fixed_on, k),
            p(&fixed_on, k) / p(&fixed_off, k)
        );
    }
    Ok(())
}
