//! `cargo xtask bench pairing`: how right the per-exchange pairing is on every lab proxy kind,
//! plain and with mTLS between the sidecars, at one fixed rate over many connections, and how
//! much of the mesh's overhead the hops explain (self-consistency). The measuring is
//! `smp-tests`'s `bench_pairing` (it shares the integration tests' exchange check); this
//! sets the machine up, builds both, and runs it. Prints a markdown table; docs/hops.md
//! records it.
//!
//! `cargo xtask bench ambient` runs `smp-tests`'s `bench_ambient` the same way: Envoy
//! sidecars with mTLS and ambient's ztunnel (per pod and for the node) side by side on the
//! lab (docs/benchmarks.md).

use crate::{
    build,
    util::{cargo, run_cmd},
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Options passed on to the measuring binary (`bench_pairing`: `--rate`,
    /// `--connections`, `--seconds`, `--workers`, `--proxies`; `bench_ambient`: the same
    /// without `--proxies`, and `--rounds`; see `cargo xtask bench <name> -- --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Sets the machine up, builds the agent and `smp-tests`'s binary `bin`, and runs it.
pub fn run(bin: &str, o: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    let agent = build::run(&build::Options { release: true })?;
    run_cmd(cargo().args(["build", "--release", "-p", "smp-tests", "--bin", bin]))?;
    run_cmd(
        std::process::Command::new(build::target_dir().join("release").join(bin))
            .args(&o.args)
            .env("SMP_AGENT_BIN", agent),
    )
}
