//! `cargo xtask bench pairing`: how right the per-exchange pairing is on every lab proxy kind,
//! plain and with mTLS between the sidecars, at one fixed rate over many connections, and how
//! much of the mesh's overhead the hops explain (self-consistency). The measuring is
//! `smp-tests`'s `bench_pairing` (it shares the integration tests' exchange check); this
//! sets the machine up, builds both, and runs it. Prints a markdown table; docs/hops.md
//! records it.

use crate::{
    build,
    util::{cargo, run_cmd},
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Options passed on to `bench_pairing` (`--rate`, `--connections`, `--seconds`,
    /// `--workers`, `--proxies`; see `cargo xtask bench pairing -- --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    let agent = build::run(&build::Options { release: true })?;
    run_cmd(cargo().args([
        "build",
        "--release",
        "-p",
        "smp-tests",
        "--bin",
        "bench_pairing",
    ]))?;
    run_cmd(
        std::process::Command::new(build::target_dir().join("release/bench_pairing"))
            .args(&o.args)
            .env("SMP_AGENT_BIN", agent),
    )
}
