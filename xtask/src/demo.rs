//! `cargo xtask demo`: set up, build, and measure a real sidecar mesh on the built-in lab.
//!
//! 1. `smp-agent check`.
//! 2. `smp-agent lab up` (Envoy in both sidecar slots, the lab's app behind them).
//! 3. `smp-agent top` on both sidecars while `smp-agent load` drives a fixed rate through the
//!    meshed URL, then the baseline URL.
//! 4. Per-hop medians against the meshed − baseline difference (DESIGN.md's self-consistency
//!    check).
//! 5. `lab down`, always.
//!
//! Everything lands in `smp-results/demo-<timestamp>/`.

use std::{
    fs,
    path::Path,
    process::{Child, Command},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::{
    build,
    lab::Lab,
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
}

const LAB: &str = "smpdemo";

fn spawn_top(agent: &Path, pid: u64, secs: u64, out: &Path) -> anyhow::Result<Child> {
    let file = fs::File::create(out)?;
    crate::lab::top(agent, pid, secs)
        .args(["--output", "json"])
        .stdout(file)
        .spawn()
        .context("failed to start smp-agent top")
}

fn hop_p50_ms(top: &Value, leg: &str) -> Option<f64> {
    top["hops"]
        .as_array()?
        .iter()
        .find(|h| h["leg"] == leg)
        .and_then(|h| h["p50_us"].as_f64())
        .map(|us| us / 1e3)
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    let agent = build::run(&build::Options { release: true })?;
    println!("\n== smp-agent check");
    run_cmd(Command::new(&agent).arg("check"))?;

    let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let dir = root().join("smp-results").join(format!("demo-{stamp}"));
    fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;

    println!(
        "\n== smp-agent lab up --proxy {} (a client pod and a server pod, sidecars in both)",
        o.proxy
    );
    let lab = Lab::up(&agent, LAB, &o.proxy)?;
    fs::write(
        dir.join("lab.json"),
        serde_json::to_string_pretty(&lab.info)?,
    )?;
    let meshed = lab.str("meshed_url")?.to_string();
    let baseline = lab.str("baseline_url")?.to_string();
    let out_pid = lab.sidecar_pid("outbound")?;
    let in_pid = lab.sidecar_pid("inbound")?;
    println!("meshed {meshed}  baseline {baseline}  sidecars: outbound pid {out_pid}, inbound pid {in_pid}");

    // Attach to both sidecars for the meshed run (probe loading takes a few seconds).
    let attach = 8;
    let top_secs = attach + o.seconds + 3;
    let mut tops = vec![
        spawn_top(&agent, out_pid, top_secs, &dir.join("outbound-top.json"))?,
        spawn_top(&agent, in_pid, top_secs, &dir.join("inbound-top.json"))?,
    ];
    std::thread::sleep(Duration::from_secs(attach));
    println!(
        "\n== load through the mesh: {} rps for {}s",
        o.rate, o.seconds
    );
    let (text, m) = lab.load(&meshed, &o.rate.to_string(), o.seconds)?;
    fs::write(dir.join("meshed-load.json"), text)?;
    for t in &mut tops {
        t.wait()?;
    }
    println!(
        "== load on the baseline path (no sidecars): {} rps for {}s",
        o.rate, o.seconds
    );
    let (text, b) = lab.load(&baseline, &o.rate.to_string(), o.seconds)?;
    fs::write(dir.join("baseline-load.json"), text)?;

    let read = |name: &str| -> anyhow::Result<Value> {
        let text = fs::read_to_string(dir.join(name))?;
        serde_json::from_str(&text).with_context(|| format!("{name}: not JSON: {text}"))
    };
    let (outb, inb) = (read("outbound-top.json")?, read("inbound-top.json")?);
    let p50 = |v: &Value| v["latency"]["p50_ms"].as_f64().unwrap_or(f64::NAN);
    let p99 = |v: &Value| v["latency"]["p99_ms"].as_f64().unwrap_or(f64::NAN);
    println!(
        "\n{:<26} {:>10} {:>10} {:>10}",
        "", "p50 ms", "p99 ms", "rps"
    );
    for (name, v) in [("meshed (client view)", &m), ("baseline (client view)", &b)] {
        println!(
            "{name:<26} {:>10.3} {:>10.3} {:>10.1}",
            p50(v),
            p99(v),
            v["achieved_rate"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "\nper hop (kernel probes)    {:>10} {:>10} {:>12} {:>12}",
        "p50 ms", "p99 ms", "CPU s", "paired"
    );
    let mut sum = 0.0;
    for (side, v) in [("outbound", &outb), ("inbound", &inb)] {
        for h in v["hops"].as_array().into_iter().flatten() {
            let leg = h["leg"].as_str().unwrap_or("?");
            let (a, z) = (
                h["p50_us"].as_f64().unwrap_or(0.0) / 1e3,
                h["p99_us"].as_f64().unwrap_or(0.0) / 1e3,
            );
            println!(
                "{:<26} {a:>10.3} {z:>10.3}",
                format!("{side} sidecar, {leg}")
            );
        }
        sum += hop_p50_ms(v, "request").unwrap_or(0.0) + hop_p50_ms(v, "response").unwrap_or(0.0);
        let pairing = &v["pairing"];
        println!(
            "{:<26} {:>10} {:>10} {:>12.3} {:>7}/{}",
            format!("{side} sidecar (pid {})", v["pid"]),
            "",
            "",
            v["cpu_seconds"].as_f64().unwrap_or(0.0),
            pairing["paired"],
            pairing["requests"]
        );
    }
    let overhead = p50(&m) - p50(&b);
    println!(
        "\nself-consistency: sum of the four hop medians {sum:.3} ms vs meshed - baseline median {overhead:.3} ms ({:+.0}%)",
        if overhead.abs() > 1e-9 { 100.0 * (sum - overhead) / overhead } else { 0.0 }
    );
    if outb["hops"].as_array().is_none_or(|a| a.is_empty()) {
        bail!(
            "no hops measured on the outbound sidecar (see {})",
            dir.display()
        );
    }
    println!("\nresults: {}", dir.display());
    Ok(())
}
