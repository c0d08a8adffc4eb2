//! `cargo xtask demo`: set up, build, and run the main job on the built-in mesh lab.
//!
//! 1. `smp-agent check`: every probe attaches on this kernel.
//! 2. `smp-agent profile --lab`: brings up the lab (Envoy in both sidecar slots by default),
//!    drives a fixed rate through the meshed URL while the probes measure both sidecars, then
//!    the same rate through the baseline URL, writes the SMP result set, the details document
//!    and the HTML report, and takes the lab down.
//!
//! Everything lands in `smp-results/demo-<timestamp>/`.

use std::{
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

use crate::{
    build,
    util::{root, run_cmd},
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds of load through each path.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Requests per second.
    #[arg(long, default_value_t = 300)]
    pub rate: u32,
    /// Sidecar kind: envoy, haproxy, nginx or ours.
    #[arg(long, default_value = "envoy")]
    pub proxy: String,
    /// mTLS between the sidecars.
    #[arg(long)]
    pub mtls: bool,
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    let agent = build::run(&build::Options { release: true })?;
    println!("\n== smp-agent check");
    run_cmd(Command::new(&agent).arg("check"))?;

    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let dir = root().join("smp-results").join(format!("demo-{stamp}"));
    let mut cmd = Command::new(&agent);
    cmd.args([
        "profile",
        "--lab",
        "--lab-name",
        "smpdemo",
        "--proxy",
        &o.proxy,
        "--rate",
        &o.rate.to_string(),
        "--duration",
        &format!("{}s", o.seconds),
        "--output-dir",
    ])
    .arg(&dir);
    if o.mtls {
        cmd.arg("--mtls");
    }
    println!(
        "\n== smp-agent profile --lab --proxy {}{} --rate {} --duration {}s",
        o.proxy,
        if o.mtls { " --mtls" } else { "" },
        o.rate,
        o.seconds
    );
    run_cmd(&mut cmd)?;
    println!(
        "\nSMP result: {}\nreport:     {}\ncompare two runs: smp-agent compare <dir-a> <dir-b> --fail-if 'p99>+10%'",
        dir.join("result.yaml").display(),
        dir.join("report.html").display()
    );
    Ok(())
}
