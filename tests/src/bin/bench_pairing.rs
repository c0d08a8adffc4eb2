//! `cargo xtask bench pairing` runs this: per lab proxy kind, plain and with mTLS between the
//! sidecars, at one fixed rate over many client connections:
//! - the exchange check (`smp_tests::exchange_check`): per sidecar, the first exchanges of
//!   TLS connections (dropped by design), paired (% of the rest), right (% of all requests)
//!   and wrong (% of the exchanges), held against what the lab client and the lab app
//!   recorded per request;
//! - a lab profile (`smp-agent profile --lab`) at the same load: how much of the meshed −
//!   baseline median its per-hop medians explain (self-consistency).
//!
//! Prints one markdown table row per case as it goes (docs/hops.md records the table). Needs
//! root and a set-up machine (`cargo xtask setup`); `SMP_AGENT_BIN` names the agent.

use std::path::PathBuf;

use clap::Parser as _;
use smp_agent::lab::config::ProxyKind;
use smp_tests::{
    agent_bin, bench_lab_profile,
    exchange_check::{measure, SideFigures},
    require_root, BenchLoad,
};

#[derive(Debug, clap::Parser)]
struct Options {
    /// Requests per second (open loop).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Client connections.
    #[arg(long, default_value_t = 64)]
    connections: u32,
    /// Seconds of load per case (the profile adds a 1 s warm-up).
    #[arg(long, default_value_t = 4)]
    seconds: u32,
    /// Threads (workers, processes) of each sidecar.
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Proxy kinds, comma separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ours,envoy,haproxy,nginx,traefik"
    )]
    proxies: Vec<ProxyKind>,
}

/// The self-consistency of one lab profile: (explained ms, overhead ms).
fn consistency(o: &Options, kind: ProxyKind, mtls: bool) -> anyhow::Result<(f64, f64)> {
    let load = BenchLoad {
        workers: o.workers,
        rate: o.rate,
        connections: o.connections,
        seconds: o.seconds,
    };
    let extra: &[&str] = if mtls { &["--mtls"] } else { &[] };
    let set = bench_lab_profile("bpprof", kind.as_str(), extra, load)?;
    let c = set
        .details
        .and_then(|d| d.consistency)
        .ok_or_else(|| anyhow::anyhow!("{kind}: the profile has no consistency check"))?;
    Ok((
        c.sum_hop_p50_ms + c.sum_wait_p50_ms + c.sum_send_p50_ms,
        c.overhead_p50_ms,
    ))
}

/// "a / b" of one figure of the outbound and the inbound sidecar.
fn both(figs: &[SideFigures; 2], f: impl Fn(&SideFigures) -> f64) -> String {
    format!("{:.2} / {:.2}", f(&figs[0]), f(&figs[1]))
}

fn main() -> anyhow::Result<()> {
    let o = Options::parse();
    anyhow::ensure!(require_root("bench pairing"), "needs root");
    let agent: PathBuf = agent_bin();
    eprintln!("agent {}", agent.display());
    println!(
        "| proxy | threads | mTLS | requests | TLS firsts (out / in) | paired % (out / in) | right % (out / in) | wrong % (out / in) | explained / overhead p50 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &kind in &o.proxies {
        for mtls in [false, true] {
            let figs = measure(
                "bpcheck",
                kind,
                o.workers,
                mtls,
                f64::from(o.rate),
                o.connections as usize,
                u64::from(o.seconds),
            );
            let (explained, overhead) = consistency(&o, kind, mtls)?;
            println!(
                "| {kind} | {} | {} | {} | {} / {} | {} | {} | {} | {:.3} / {:.3} ms ({:.0} %) |",
                o.workers,
                if mtls { "yes" } else { "no" },
                figs[0].requests,
                figs[0].tls_first_dropped,
                figs[1].tls_first_dropped,
                both(&figs, |f| f.paired_pct),
                both(&figs, SideFigures::right_pct),
                both(&figs, SideFigures::wrong_pct),
                explained,
                overhead,
                100.0 * explained / overhead
            );
        }
    }
    Ok(())
}
