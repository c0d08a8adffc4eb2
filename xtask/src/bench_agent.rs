//! `cargo xtask bench agent`: the agent's own cost while it tracks the lab's sidecars.
//!
//! For each rate: `smp-agent top --name envoy` follows both Envoy sidecars of a lab while
//! `smp-agent load` drives the rate through them; the agent's CPU (utime + stime from
//! /proc/<pid>/stat over the load window only, probe loading excluded) and RSS (VmRSS at the
//! end, VmHWM peak) are read from procfs. Prints a table; docs/benchmarks.md records it.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    time::Instant,
};

use anyhow::Context as _;
use serde_json::Value;

use crate::{build, lab::Lab};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Request rates to measure at.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    pub rates: Vec<u32>,
    /// Seconds of load per rate.
    #[arg(long, default_value_t = 20)]
    pub seconds: u64,
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// A `/proc/<pid>/status` field in kB, as MiB.
pub fn status_mib(pid: u32, field: &str) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in status"))?;
    Ok(kb / 1024.0)
}

struct Interrupt(Child);
impl Interrupt {
    /// SIGINT (what Ctrl-C sends), then the JSON document `top` prints on the way out.
    fn finish(mut self) -> anyhow::Result<Value> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let mut out = String::new();
        std::io::Read::read_to_string(self.0.stdout.as_mut().context("stdout")?, &mut out)?;
        self.0.wait()?;
        serde_json::from_str(&out).context("top: not JSON")
    }
}
impl Drop for Interrupt {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    let agent = build::run(&build::Options { release: true })?;
    let lab = Lab::up(&agent, "smpbench", "envoy")?;
    let url = lab.str("meshed_url")?.to_string();
    let mut rows = Vec::new();
    for &rate in &o.rates {
        let mut top = Command::new(&agent)
            .args([
                "top",
                "--name",
                "envoy",
                "--interval",
                "1h",
                "--output",
                "json",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let pid = top.id();
        let mut first = String::new();
        BufReader::new(top.stderr.take().context("top stderr")?).read_line(&mut first)?;
        anyhow::ensure!(first.starts_with("tracking 2"), "top: {first}");
        let top = Interrupt(top);
        let cpu0 = cpu_seconds(pid)?;
        let t0 = Instant::now();
        let (_, load) = lab.load(&url, &rate.to_string(), o.seconds)?;
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(pid)? - cpu0;
        let rss = status_mib(pid, "VmRSS:")?;
        let hwm = status_mib(pid, "VmHWM:")?;
        let doc = top.finish()?;
        let achieved = load["achieved_rate"].as_f64().unwrap_or(f64::NAN);
        let counted: u64 = doc["proxies"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p["requests"].as_u64()).sum())
            .unwrap_or(0);
        let lost = doc["loss"]["ringbuf_dropped"].as_u64().unwrap_or(0);
        let pct = 100.0 * cpu / wall;
        rows.push((
            rate,
            achieved,
            pct,
            pct / (achieved / 1000.0),
            rss,
            hwm,
            counted,
            lost,
        ));
    }
    println!(
        "\n| target rps | achieved rps | agent CPU % of a core | per 1k rps | RSS MiB | peak RSS MiB | requests counted (both sidecars) | ring-buffer drops |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (rate, achieved, pct, per1k, rss, hwm, counted, lost) in rows {
        println!(
            "| {rate} | {achieved:.0} | {pct:.2} | {per1k:.2} | {rss:.1} | {hwm:.1} | {counted} | {lost} |"
        );
    }
    Ok(())
}
