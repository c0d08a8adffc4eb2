//! `smp-agent top`.

use std::process::ExitCode;

/// Arguments of `top`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Process to watch.
    #[arg(long)]
    pub pid: u32,
}

pub async fn execute(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
