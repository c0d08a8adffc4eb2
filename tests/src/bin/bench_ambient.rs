//! `cargo xtask bench ambient` runs this: Istio's two data planes on the same lab, side by side
//! — Envoy sidecars with mTLS between them, and ambient's ztunnel, one per pod (dedicated mode)
//! and one for the node (shared mode, as Istio deploys it), HBONE between the pods — at one
//! fixed rate, in rounds whose order rotates. Per round and data plane one
//! `smp-agent profile --lab` gives the end-to-end overhead, each hop, the proxies' CPU per
//! 1 000 client requests per second and memory. Prints each round, then per figure the median
//! over the rounds with its spread (min–max) and the ratio of each ztunnel's median to
//! Envoy's. docs/benchmarks.md records it. Needs root, a set-up machine (`cargo xtask setup`
//! with `$SMP_ZTUNNEL_SRC`, or `$SMP_ZTUNNEL`), and `SMP_AGENT_BIN`.

use clap::Parser as _;
use smp_agent::report::{
    details::{Direction, Leg},
    ResultSet,
};
use smp_tests::{agent_bin, bench_lab_profile, require_root, require_ztunnel, BenchLoad};

#[derive(Debug, clap::Parser)]
struct Options {
    /// Requests per second (open loop). The default is the ambient issue's load: at 1 000 rps
    /// over 64 connections ztunnel's HBONE streams overlap often enough that record
    /// alternation leaves 2–13 % of its requests unpaired (docs/hops.md).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Client connections.
    #[arg(long, default_value_t = 32)]
    connections: u32,
    /// Seconds of load per profile (each adds a 1 s warm-up and a baseline run as long).
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// Worker threads of every proxy (ztunnel's default is 2).
    #[arg(long, default_value_t = 2)]
    workers: u32,
    /// Rounds; each profiles both data planes, the first in alternating order.
    #[arg(long, default_value_t = 6)]
    rounds: u32,
}

/// The data planes compared: the lab's proxy kind and its extra flags.
const PLANES: [(&str, &str, &[&str]); 3] = [
    ("Envoy sidecars, mTLS", "envoy", &["--mtls"]),
    ("ztunnel per pod", "ztunnel", &[]),
    (
        "ztunnel for the node",
        "ztunnel",
        &["--ztunnel-mode", "shared"],
    ),
];

/// The hops in the order the table shows them.
const HOPS: [(Direction, Leg); 4] = [
    (Direction::Outbound, Leg::Request),
    (Direction::Outbound, Leg::Response),
    (Direction::Inbound, Leg::Request),
    (Direction::Inbound, Leg::Response),
];

/// The names of the figures of one profile, in [`figures`]' order.
const FIGURES: [&str; 14] = [
    "overhead p50 ms",
    "overhead p99 ms",
    "Σ hop p50 ms",
    "outbound request hop p50 ms",
    "outbound response hop p50 ms",
    "inbound request hop p50 ms",
    "inbound response hop p50 ms",
    "outbound request hop p99 ms",
    "outbound response hop p99 ms",
    "inbound request hop p99 ms",
    "inbound response hop p99 ms",
    "vCPU per 1 000 client rps, all proxies",
    "memory MB, all proxies",
    "requests paired, % of sent",
];

/// One profile's figures ([`FIGURES`]).
fn figures(set: &ResultSet) -> anyhow::Result<Vec<f64>> {
    let d = set
        .details
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no details"))?;
    let o = d
        .end_to_end
        .overhead
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no overhead (no baseline run)"))?;
    let hop = |dir: Direction, leg: Leg| {
        d.hops
            .iter()
            .find(|h| h.direction == dir && h.leg == leg)
            .map(|h| &h.latency)
            .ok_or_else(|| anyhow::anyhow!("no {dir:?} {leg:?} hop"))
    };
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut fewest = u64::MAX;
    for (dir, leg) in HOPS {
        let h = hop(dir, leg)?;
        p50.push(h.percentiles.p50);
        p99.push(h.percentiles.p99);
        fewest = fewest.min(h.count);
    }
    let sent = d.end_to_end.meshed.latency.count.max(1) as f64;
    let mut out = vec![o.p50, o.p99, p50.iter().sum()];
    out.extend(p50);
    out.extend(p99);
    // Per client request: a node proxy counts each request twice (once per pod), so its own
    // per-request figure is not comparable with a sidecar's.
    let qps = d.end_to_end.meshed.actual_qps.max(1.0);
    out.push(d.sidecars.iter().map(|s| s.cpu_mcores).sum::<f64>() / qps);
    out.push(d.sidecars.iter().map(|s| s.mem_mb).sum());
    out.push(100.0 * fewest as f64 / sent);
    Ok(out)
}

fn profile(o: &Options, kind: &str, extra: &[&str]) -> anyhow::Result<Vec<f64>> {
    let load = BenchLoad {
        workers: o.workers,
        rate: o.rate,
        connections: o.connections,
        seconds: o.seconds,
    };
    figures(&bench_lab_profile("bamb", kind, extra, load)?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let o = Options::parse();
    anyhow::ensure!(require_root("bench ambient"), "needs root");
    anyhow::ensure!(require_ztunnel("bench ambient"), "needs ztunnel");
    eprintln!("agent {}; {o:?}", agent_bin().display());
    // runs[plane][round][figure]
    let mut runs: [Vec<Vec<f64>>; 3] = Default::default();
    for round in 0..o.rounds {
        // Each plane goes first, second and last in turn.
        let order = [0, 1, 2].map(|i| (i + round as usize) % 3);
        for p in order {
            let (name, kind, extra) = PLANES[p];
            let f = profile(&o, kind, extra)?;
            println!(
                "round {round}, {name}: overhead p50 {:.3} ms, Σ hop p50 {:.3} ms, {:.3} vCPU per 1 000 rps, {:.1} MB",
                f[0], f[2], f[11], f[12]
            );
            runs[p].push(f);
        }
    }
    println!();
    println!(
        "| figure | {} | {} | {} | per pod / Envoy | node / Envoy |",
        PLANES[0].0, PLANES[1].0, PLANES[2].0
    );
    println!("|---|---|---|---|---|---|");
    for (i, name) in FIGURES.iter().enumerate() {
        let mut cells = Vec::new();
        let mut medians = Vec::new();
        for plane in &runs {
            let v: Vec<f64> = plane.iter().map(|f| f[i]).collect();
            let (lo, hi) = v
                .iter()
                .fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(*x), b.max(*x)));
            let m = median(v);
            medians.push(m);
            cells.push(format!("{m:.3} ({lo:.3}–{hi:.3})"));
        }
        println!(
            "| {name} | {} | {} | {} | {:.2} | {:.2} |",
            cells[0],
            cells[1],
            cells[2],
            medians[1] / medians[0],
            medians[2] / medians[0]
        );
    }
    Ok(())
}
