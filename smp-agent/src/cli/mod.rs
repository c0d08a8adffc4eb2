//! The command line: one module per subcommand, each with an `Args` struct and `execute()`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod check;
pub mod top;

/// eBPF service-mesh overhead profiler: per-hop sidecar latency, proxy CPU, SMP results.
#[derive(Debug, Parser)]
#[command(name = "smp-agent", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug). The SMP_LOG env var overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load and attach every probe, report kernel facts and hook status; exit non-zero if a
    /// required hook fails.
    Check(check::Args),
    /// Attach to one running process and show its CPU and socket syscalls every second.
    Top(top::Args),
}

impl Command {
    /// Runs the subcommand.
    pub async fn execute(self) -> anyhow::Result<ExitCode> {
        match self {
            Command::Check(args) => check::execute(args).await,
            Command::Top(args) => top::execute(args).await,
        }
    }
}

/// Output format of commands that print a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum OutputFormat {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document.
    Json,
}
