//! `cargo xtask bench <name>`: benchmarks measured side by side in one run.

#[derive(Debug, clap::Args)]
pub struct Options {
    #[command(subcommand)]
    pub bench: Bench,
}

#[derive(Debug, clap::Subcommand)]
pub enum Bench {
    /// Load generator: max throughput vs wrk and oha, and latency at a fixed rate.
    Loadgen(crate::bench_loadgen::Options),
    /// Probe overhead: ns per traced syscall, and a lab mesh's throughput and latency with and
    /// without the probes attached.
    Overhead(crate::bench_overhead::Options),
    /// The agent's own CPU and memory while it tracks the lab's sidecars at fixed rates.
    Agent(crate::bench_agent::Options),
    /// `smp-agent daemon` tracking the lab's Envoy sidecars at a steady rate for minutes: RSS
    /// growth, lost events, CPU.
    Soak(crate::bench_soak::Options),
    /// Per-exchange pairing on every lab proxy kind, plain and mTLS: paired, right and wrong
    /// per the lab's exchange check, and self-consistency.
    Pairing(crate::bench_pairing::Options),
    /// Istio's sidecar (Envoy, mTLS) and ambient (ztunnel per pod and for the node) data
    /// planes on the same lab, in rotating rounds: overhead, per-hop p50/p99, CPU per 1 000
    /// client rps, memory.
    Ambient(crate::bench_pairing::Options),
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    match &o.bench {
        Bench::Loadgen(o) => crate::bench_loadgen::run(o),
        Bench::Overhead(o) => crate::bench_overhead::run(o),
        Bench::Agent(o) => crate::bench_agent::run(o),
        Bench::Soak(o) => crate::bench_soak::run(o),
        Bench::Pairing(o) => crate::bench_pairing::run("bench_pairing", o),
        Bench::Ambient(o) => crate::bench_pairing::run("bench_ambient", o),
    }
}
