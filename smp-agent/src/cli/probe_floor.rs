//! `smp-agent probe-floor` (hidden, for `cargo xtask bench overhead`): attaches empty programs
//! to the syscall hooks and waits, so a benchmark can measure what the hook mechanism alone
//! costs every syscall (the floor under any probe body).

use std::{process::ExitCode, time::Duration};

use crate::{
    duration,
    probes::{FloorHooks, FloorProbes},
};

/// Arguments of `probe-floor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which hooks get the empty program.
    #[arg(long, value_enum)]
    pub hooks: FloorHooks,

    /// How long to stay attached (Go-style duration).
    #[arg(long, value_parser = duration::clap_parse)]
    pub duration: Duration,
}

pub async fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let hooks = args.hooks;
    let probes = tokio::task::spawn_blocking(move || FloorProbes::load(hooks)).await??;
    // The first line says the programs are attached (the bench waits for it).
    println!(
        "watching: floor programs ({:?}) attached to {} hooks",
        hooks, probes.attached
    );
    tokio::select! {
        _ = tokio::time::sleep(args.duration) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(probes);
    Ok(ExitCode::SUCCESS)
}
