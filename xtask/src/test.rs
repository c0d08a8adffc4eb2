//! `cargo xtask test`: every test, privileged ones included.
//!
//! 1. setup (idempotent); 2. unit tests of the default members (no root needed), then each
//!    fuzz target for a short budget (`cargo xtask fuzz`);
//! 3. the integration tests in `tests/` (built for release, as the agent is) against the
//!    freshly built agent, one test at a time (they share the kernel: probes, namespaces,
//!    ports). As non-root outside CI the privileged
//!    ones say they skip; under `CI=true` they fail instead.

use crate::{
    build::{self, agent_path},
    util::{cargo, is_root, run_cmd},
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Only run integration tests whose name contains this (passed to the test harness).
    #[arg(long)]
    pub filter: Option<String>,
    /// Skip the unit tests.
    #[arg(long)]
    pub integration_only: bool,
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    if !is_root() {
        eprintln!("xtask test: not root: privileged tests will skip (and fail under CI=true)");
    }
    // The release agent, as users run it: the lab's proxies are this binary too, and a debug
    // build's TLS (rustls without optimisation) is slow enough to change what is measured.
    build::run(&build::Options { release: true })?;
    if !o.integration_only {
        println!("xtask test: unit tests");
        run_cmd(cargo().args(["test", "--quiet", "--no-fail-fast"]))?;
        println!(
            "xtask test: fuzz targets, {} s each",
            crate::fuzz::TEST_SECONDS
        );
        crate::fuzz::run_targets(crate::fuzz::TARGETS, crate::fuzz::TEST_SECONDS)?;
    }
    // Optimised, like the agent: the tests run the tracker, the lab's clients and their
    // checks in their own process, beside the proxies they measure on the same cores.
    // Unoptimised they took the CPU those proxies needed: Envoy's HTTP/2-inside-mTLS
    // outbound at 1 000 rps paired 91.8 % of its requests in a debug run of the suite and
    // 98.6 % with the tests built for release, on the same machine.
    println!("xtask test: integration tests (tests/, release)");
    let mut cmd = cargo();
    cmd.args([
        "test",
        "--release",
        "--no-fail-fast",
        "--package",
        "smp-tests",
        "--",
        "--test-threads=1",
    ])
    .env("SMP_AGENT_BIN", agent_path(true));
    if let Some(f) = &o.filter {
        cmd.arg(f);
    }
    run_cmd(&mut cmd)?;
    crate::vm::run_matrix_for_test()
}
