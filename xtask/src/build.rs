//! `cargo xtask build`: builds the agent binary (and with it the eBPF object).

use std::path::PathBuf;

use crate::util::{cargo, root, run_cmd};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Build with the release profile.
    #[arg(long)]
    pub release: bool,
}

/// Builds `smp-agent` and returns the path of the binary.
pub fn run(o: &Options) -> anyhow::Result<PathBuf> {
    let mut cmd = cargo();
    cmd.args(["build", "--package", "smp-agent", "--bin", "smp-agent"]);
    if o.release {
        cmd.arg("--release");
    }
    run_cmd(&mut cmd)?;
    Ok(agent_path(o.release))
}

/// Where `cargo build` puts the agent.
pub fn agent_path(release: bool) -> PathBuf {
    target_dir()
        .join(if release { "release" } else { "debug" })
        .join("smp-agent")
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `<root>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}
