//! The command line: one module per subcommand, each with an `Args` struct and `execute()`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::probes::tracefs;

pub mod check;
pub mod compare;
pub mod daemon;
pub mod daemon_config;
pub mod lab;
pub mod load;
pub mod probe_floor;
pub mod profile;
pub mod signals;
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
    /// Measure a mesh's overhead (per-hop sidecar latency, sidecar CPU and memory, meshed vs
    /// baseline) and write SMP results and an HTML report. `--lab` profiles the built-in lab.
    Profile(profile::Args),
    /// Live CPU, memory, requests and per-hop latency of running proxies: one process
    /// (`--pid`) or every proxy found by name (`--name envoy`, `--all`), every second.
    Top(top::Args),
    /// Compare two results (ours, SMP from elsewhere, or Meshery's) per percentile and per hop,
    /// say what is within noise, and gate CI with `--fail-if 'p99>+10%'` (exit 1 when a rule
    /// fires, 2 when an input cannot be read).
    Compare(compare::Args),
    /// Run as a node agent: follow every proxy on this node and serve per-hop latency, proxy
    /// CPU, memory and requests as Prometheus metrics on /metrics (with /healthz and /readyz).
    /// Configured by flags, SMP_AGENT_* variables and a YAML file (docs/deploy.md).
    Daemon(daemon::Args),
    /// The mesh lab: a real sidecar topology (two pod namespaces, real proxies) on this machine.
    Lab(lab::Args),
    /// Drive HTTP load (open loop at a fixed rate, coordinated-omission corrected, or
    /// `--rate max`) and report latency percentiles, rates, status codes and errors.
    Load(load::Args),
    /// Benchmark aid: attach empty programs to the syscall hooks and wait (the hook floor).
    #[command(hide = true)]
    ProbeFloor(probe_floor::Args),
}

impl Command {
    /// Whether the subcommand attaches the probes (and so needs tracefs).
    fn attaches_probes(&self) -> bool {
        matches!(
            self,
            Command::Check(_)
                | Command::Profile(_)
                | Command::Top(_)
                | Command::Daemon(_)
                | Command::ProbeFloor(_)
        )
    }

    /// Runs the subcommand.
    pub async fn execute(self) -> anyhow::Result<ExitCode> {
        if self.attaches_probes() {
            prepare_tracefs();
        }
        match self {
            Command::Check(args) => check::execute(args).await,
            Command::Profile(args) => profile::execute(args).await,
            Command::Top(args) => top::execute(args).await,
            Command::Compare(args) => compare::execute(args).await,
            Command::Daemon(args) => daemon::execute(args).await,
            Command::Lab(args) => lab::execute(args).await,
            Command::Load(args) => load::execute(args).await,
            Command::ProbeFloor(args) => probe_floor::execute(args).await,
        }
    }
}

/// Mounts tracefs where it is missing ([`tracefs::ensure_mounted`]) and says so; when that
/// fails, says what to do and carries on (`check` then reports the hooks that need it).
fn prepare_tracefs() {
    match tracefs::ensure_mounted() {
        Ok(tracefs::Mounted::Already(_)) => {}
        Ok(tracefs::Mounted::Now(at)) => tracing::info!(
            "tracefs was not mounted in this mount namespace (`ip netns exec` remounts /sys \
             without it): mounted it at {} (as `{}`)",
            at.display(),
            tracefs::MOUNT_COMMAND
        ),
        Err(e) => tracing::warn!("{e}"),
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
