//! `cargo xtask fuzz`: runs every cargo-fuzz target (fuzz/) for a time budget and sums up.
//!
//! The targets exercise the readers of input we do not control: SMP documents and configs,
//! details documents and load results, histograms, durations, ring-buffer records. A crash
//! stops the run with the artifact's path (fuzz/artifacts/<target>/); it then becomes a unit
//! test with that input. Needs nightly and cargo-fuzz (`cargo xtask setup` installs it).

use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

use crate::util::{on_every_cpu, root};

/// The targets, in fuzz/fuzz_targets/.
pub const TARGETS: &[&str] = &[
    "smp_documents",
    "results",
    "histogram",
    "duration",
    "ring_record",
];

/// Seconds per target when `cargo xtask test` runs them (5 targets, as many at once as there
/// are CPUs: 60 s on two).
pub const TEST_SECONDS: u64 = 20;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only this target.
    #[arg(long)]
    pub target: Option<String>,
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    let targets: Vec<&str> = match &o.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!(
            "unknown fuzz target {t:?} (targets: {})",
            TARGETS.join(", ")
        ),
        None => TARGETS.to_vec(),
    };
    run_targets(&targets, o.seconds)
}

/// Runs each target for `seconds`, as many at once as this machine has CPUs (libFuzzer runs
/// one process on one core; built once, first); prints executions per target and in total.
pub fn run_targets(targets: &[&str], seconds: u64) -> anyhow::Result<()> {
    build_targets()?;
    let results = on_every_cpu(targets, |t| run_target(t, seconds));
    let mut total = 0u64;
    let mut rows = Vec::new();
    for (t, r) in targets.iter().zip(results) {
        let execs = r?;
        total += execs;
        rows.push((*t, execs));
    }
    println!("xtask fuzz: {seconds} s per target, no crash:");
    for (t, n) in &rows {
        println!("  {t:<14} {n:>12} executions");
    }
    println!("  {:<14} {total:>12} executions", "total");
    Ok(())
}

/// `cargo fuzz` for `args` in fuzz/, on nightly, without the eBPF object.
fn cargo_fuzz(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(root().join("fuzz"))
        .arg("+nightly")
        .arg("fuzz")
        .args(args)
        // The fuzzed code is userspace only: no eBPF object needed.
        .env("AYA_BUILD_SKIP", "1")
        .env_remove("RUSTFLAGS");
    cmd
}

/// Builds every target once, so the runs that follow (in parallel) find them built.
fn build_targets() -> anyhow::Result<()> {
    let mut cmd = cargo_fuzz(&["build"]);
    let status = cmd.status().with_context(|| {
        format!("failed to spawn {cmd:?} (is cargo-fuzz installed? `cargo xtask setup`)")
    })?;
    if !status.success() {
        bail!("building the fuzz targets failed ({status})");
    }
    Ok(())
}

fn run_target(target: &str, seconds: u64) -> anyhow::Result<u64> {
    let corpus = root().join("fuzz").join("corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("failed to create {}", corpus.display()))?;
    println!("xtask fuzz: {target} for {seconds} s");
    let mut cmd = cargo_fuzz(&["run", target]);
    cmd.arg(&corpus)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-max_len=65536",
            "-rss_limit_mb=1024",
            "-print_final_stats=1",
        ])
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped());
    let out = cmd.output().with_context(|| {
        format!("failed to spawn {cmd:?} (is cargo-fuzz installed? `cargo xtask setup`)")
    })?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        for l in tail.iter().rev() {
            eprintln!("{l}");
        }
        bail!(
            "fuzz target {target} failed ({}): a crash input is under fuzz/artifacts/{target}/",
            out.status
        );
    }
    Ok(executions(&log))
}

/// `stat::number_of_executed_units: N` from libFuzzer's final statistics.
fn executions(log: &str) -> u64 {
    log.lines()
        .filter_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum()
}

/// True when `cargo fuzz` runs.
pub fn cargo_fuzz_installed() -> bool {
    Command::new("cargo")
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_stats() {
        let log = "INFO: seed\nstat::number_of_executed_units: 12345\nstat::average_exec_per_sec:   411\n";
        assert_eq!(executions(log), 12345);
        assert_eq!(executions("crash\n"), 0);
    }

    #[test]
    fn every_target_has_a_source() {
        for t in TARGETS {
            let p = root().join("fuzz/fuzz_targets").join(format!("{t}.rs"));
            assert!(p.exists(), "{}", p.display());
        }
    }
}
