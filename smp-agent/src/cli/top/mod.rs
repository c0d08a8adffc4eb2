//! `smp-agent top`: live figures of running proxies, every interval and at the end.
//!
//! * `--pid PID` ([`process`]): one process (and its child processes), with its sockets.
//! * `--name envoy` / `--all` ([`proxies`]): every proxy discovery finds, followed as they
//!   start, restart and exit, with figures per proxy identity.

use smp_common::hop::HopCounts;
use std::{process::ExitCode, time::Duration};

use serde::Serialize;

use super::OutputFormat;
use crate::{aggregate::hops::HopPercentiles, duration};

mod process;
mod proxies;

pub use process::TopReport;
pub use proxies::{ProxiesReport, ProxyReport};

/// Arguments of `top`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["pid", "name", "all"])))]
pub struct Args {
    /// The process to watch (a process id, not a thread id).
    /// Example: --pid 4242
    #[arg(long, verbatim_doc_comment)]
    pub pid: Option<u32>,

    /// Proxies to find by executable or comm name (repeat or comma-separate), followed live
    /// as they start, restart and exit.
    /// Example: --name envoy --name nginx
    #[arg(long, value_delimiter = ',', verbatim_doc_comment)]
    pub name: Vec<String>,

    /// Every proxy of the default list (envoy, linkerd2-proxy, haproxy, nginx, traefik, ztunnel).
    #[arg(long)]
    pub all: bool,

    /// Optional: how long to watch (Go-style duration). Without it, until Ctrl-C.
    /// Example: --duration 10s
    #[arg(long, value_parser = duration::clap_parse, verbatim_doc_comment)]
    pub duration: Option<Duration>,

    /// Optional: how often to print a line.
    /// Example: --interval 500ms
    #[arg(long, default_value = "1s", value_parser = duration::clap_parse, verbatim_doc_comment)]
    pub interval: Duration,

    /// Optional (with --pid): watch only this process, not its child processes (by default a
    /// proxy's workers, e.g. nginx's or haproxy's, are watched with it and summed).
    #[arg(long)]
    pub no_children: bool,

    /// Optional (with --pid): sockets shown per interval in text output (busiest first).
    #[arg(long, default_value_t = 5)]
    pub sockets: usize,

    /// Output format. `json` prints one document at the end (nothing per interval).
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

pub async fn execute(args: Args) -> anyhow::Result<ExitCode> {
    if args.interval.is_zero() {
        anyhow::bail!("--interval must be greater than zero");
    }
    match args.pid {
        Some(pid) => process::run(args, pid).await,
        None => proxies::run(args).await,
    }
}

/// One hop (direction, leg) of a proxy, as the JSON documents show it.
#[derive(Debug, Clone, Serialize)]
pub struct HopView {
    pub direction: &'static str,
    pub leg: &'static str,
    #[serde(flatten)]
    pub latency: HopPercentiles,
    /// How long messages waited in the proxy's socket before it read them (wake-up and
    /// event-loop delay, outside the hop); absent when no arrival was seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wait: Option<HopPercentiles>,
    /// Time inside the write that forwarded the messages (delivery to the next socket).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send: Option<HopPercentiles>,
}

/// Bytes with a binary unit, e.g. `1.5 MiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub(crate) fn print_hops(hops: &[HopView], pairing: Option<&HopCounts>) {
    if hops.is_empty() {
        return;
    }
    println!(
        "    {:<9} {:<8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "HOP", "LEG", "COUNT", "p50", "p90", "p99", "p99.9", "max", "WAIT p50", "SEND p50"
    );
    for h in hops {
        let l = &h.latency;
        println!(
            "    {:<9} {:<8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
            h.direction,
            h.leg,
            l.count,
            us_text(l.p50_us),
            us_text(l.p90_us),
            us_text(l.p99_us),
            us_text(l.p999_us),
            us_text(l.max_us),
            h.wait.map_or("-".into(), |w| us_text(w.p50_us)),
            h.send.map_or("-".into(), |w| us_text(w.p50_us))
        );
    }
    if let Some(p) = pairing {
        println!(
            "    requests {} paired {} ({:.1}%) unpaired {}",
            p.requests,
            p.paired,
            100.0 * p.paired_ratio(),
            p.unpaired()
        );
    }
}

pub(crate) fn us_text(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{us:.1}us")
    }
}
