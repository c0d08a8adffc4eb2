//! `cargo xtask vm-test`: the kernel matrix (issue 9).
//!
//! The same built `smp-agent` binary and the same compiled probe-level integration tests
//! (`tests/tests/{probes,cli}.rs`, with the `burner`/`sockmover` workloads) run on the host and
//! inside Debian kernels booted in qemu (TCG: KVM does not work on our machines, see
//! `docs/kernels.md`). Per kernel:
//!
//! 1. the Debian cloud kernel package is resolved in a private apt configuration (bullseye,
//!    bookworm, their security suites, sid), downloaded, and only its `vmlinuz` kept, under
//!    `<repo>/.cache/vm/kernels/<alias>/` (git-ignored); warm runs do not touch the network;
//! 2. one initramfs (uncompressed newc cpio, written here) holds static busybox, `/init`, the
//!    agent, the test binaries and workloads *at their host absolute paths* (they find each
//!    other through `env!("CARGO_BIN_EXE_…")`), `bash`/`capsh` and every glibc library `ldd`
//!    names; no kernel modules are needed;
//! 3. qemu boots it with the console on ttyS0 (a log file) and machine-readable results on
//!    ttyS1 (another file), under a wall-clock deadline: a panic (`panic=-1 -no-reboot`) or a
//!    hang is a failure with the console tail shown.
//!
//! The guest runs `smp-agent check --output json`, then every test of the chosen test targets
//! one at a time (`--exact`, `CI=true`), each under its own `timeout`.
//!
//! `--break <alias>` (or `SMP_VM_BREAK`) proves the harness can fail: in that guest
//! `/sys/kernel/btf/vmlinux` is bind-mounted over by a copy with the names `di` and `si`
//! swapped (`btfbreak`), so the agent (which reads `pt_regs` offsets from BTF at load time)
//! reads the wrong syscall argument as the fd and the socket accounting test must fail there.
//!
//! Here: options, kernel names, process helpers. `kernels` fetches the kernels, `initramfs`
//! writes the guest's root, `qemu` boots one kernel and reads its results, `matrix` runs them
//! all (and the host) and prints the table.

mod initramfs;
mod kernels;
mod matrix;
mod qemu;

use std::{
    io::Read as _,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use self::kernels::{Spec, SPECS};
use crate::util::root;

/// Test targets of `smp-tests` that run in the matrix (probe level, no mesh lab).
const TEST_TARGETS: &[&str] = &["probes", "cli"];
/// Workload binaries the tests spawn through `env!("CARGO_BIN_EXE_…")`, and `btfbreak`,
/// which `/init` runs for `--break`.
const WORKLOADS: &[&str] = &["burner", "sockmover", "h2relay", "btfbreak"];
/// Per-test limit inside the guest and on the host.
const TEST_TIMEOUT_SECS: u64 = 180;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Kernels to test, comma-separated: host, 5.10, 6.1, 6.12, 7.
    #[arg(long, value_delimiter = ',', default_value = "host,5.10,6.1,6.12,7")]
    pub kernels: Vec<String>,
    /// Harness self-test: break the socket probes' `fd` register offset (from BTF) on this
    /// kernel (a VM alias); its socket test must then fail. Off by default.
    #[arg(long = "break", env = "SMP_VM_BREAK", value_name = "ALIAS")]
    pub break_on: Option<String>,
    /// Wall-clock limit per kernel (boot, tests, poweroff), in seconds.
    #[arg(long, default_value_t = 420)]
    pub timeout: u64,
    /// Re-resolve and re-download the kernel packages (newest ABI in the archive).
    #[arg(long)]
    pub refresh: bool,
    /// Only run tests whose name contains this.
    #[arg(long)]
    pub filter: Option<String>,
    /// Guest CPUs (TCG threads).
    #[arg(long, default_value_t = DEFAULT_SMP)]
    pub smp: u32,
    /// Run the release build of the agent and tests (what `cargo xtask test` has just built
    /// and run on the host) instead of a debug build.
    #[arg(long)]
    pub release: bool,
}

/// Guest CPUs. 2, as measured in the feasibility study: with 4 vCPU threads on a busy 2-core
/// host, a 6.1 guest soft-locked (vCPUs starved, "rcu_preempt kthread timer wakeup didn't
/// happen") while attaching; 4 did not make the burner's figures any closer either.
const DEFAULT_SMP: u32 = 2;

/// What `cargo xtask vm-test` does.
pub fn run(o: &Options) -> anyhow::Result<()> {
    let kernels = parse_kernels(&o.kernels)?;
    let break_on = match o.break_on.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(b) => {
            let spec = find_spec(b).with_context(|| {
                let vms: Vec<&str> = SPECS.iter().map(|s| s.alias).collect();
                format!("--break {b:?}: not a VM kernel; one of {}", vms.join(", "))
            })?;
            if !kernels.contains(&Target::Vm(spec)) {
                bail!("--break {b}: kernel {b} is not in --kernels");
            }
            Some(spec.alias)
        }
    };
    matrix::run_all(&kernels, break_on, o)
}

/// Called at the end of `cargo xtask test`: host + 6.1 + 6.12 when qemu is present.
pub fn run_matrix_for_test() -> anyhow::Result<()> {
    if !have_qemu() {
        if ci() {
            bail!("qemu-system-x86_64 is missing and CI=true: the kernel matrix cannot be skipped (cargo xtask setup installs it)");
        }
        println!("xtask test: kernel matrix skipped: qemu-system-x86_64 is not installed (cargo xtask setup)");
        return Ok(());
    }
    let o = Options {
        kernels: vec!["host".into(), "6.1".into(), "6.12".into()],
        break_on: None,
        timeout: 420,
        refresh: false,
        filter: None,
        smp: DEFAULT_SMP,
        // The build the integration tests just ran: no second, debug build of everything.
        release: true,
    };
    println!("xtask test: kernel matrix (host, 6.1, 6.12)");
    run(&o)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Host,
    Vm(&'static Spec),
}

fn aliases() -> String {
    std::iter::once("host")
        .chain(SPECS.iter().map(|s| s.alias))
        .collect::<Vec<_>>()
        .join(", ")
}

fn find_spec(alias: &str) -> Option<&'static Spec> {
    let a = alias.trim().trim_start_matches('v');
    // "7.2" or "7.x" also mean the 7 series.
    let a = if a.starts_with("7.") { "7" } else { a };
    SPECS.iter().find(|s| s.alias == a)
}

fn parse_kernels(list: &[String]) -> anyhow::Result<Vec<Target>> {
    let mut out = Vec::new();
    for k in list.iter().map(|k| k.trim()).filter(|k| !k.is_empty()) {
        let t = if k == "host" {
            Target::Host
        } else {
            Target::Vm(
                find_spec(k)
                    .with_context(|| format!("unknown kernel {k:?}: supported: {}", aliases()))?,
            )
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.is_empty() {
        bail!("--kernels is empty: supported: {}", aliases());
    }
    Ok(out)
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

fn have_qemu() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Downloads kept between runs (apt lists, kernels): `<repo>/.cache/vm`.
fn cache_dir() -> PathBuf {
    root().join(".cache/vm")
}

/// What one run writes (initramfs, consoles, results, the table): `<repo>/target/vm`, so two
/// checkouts that share `.cache` never boot each other's initramfs.
fn out_dir() -> PathBuf {
    root().join("target/vm")
}

// ---------------------------------------------------------------------------------------------
// Processes

/// Runs a command with a wall-clock limit; returns (success, stdout+stderr). Kills it (and
/// says so) at the deadline.
fn run_deadline(cmd: &mut Command, limit: Duration) -> anyhow::Result<(bool, Vec<u8>)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to spawn {cmd:?}"))?;
    // Drain both pipes in threads so a chatty child never blocks.
    let mut so = child.stdout.take().context("stdout")?;
    let mut se = child.stderr.take().context("stderr")?;
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = t_out.join().unwrap_or_default();
    out.extend(t_err.join().unwrap_or_default());
    match status {
        Some(s) => Ok((s.success(), out)),
        None => {
            let tail = tail_lines(&String::from_utf8_lossy(&out), 20);
            if tail.trim().is_empty() {
                bail!("timed out after {} s", limit.as_secs())
            }
            bail!("timed out after {} s: {tail}", limit.as_secs())
        }
    }
}

fn tail_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_parse_and_reject_unknown_ones_clearly() {
        let k = parse_kernels(&["host".into(), "6.1".into(), "7.2".into()]).unwrap();
        assert_eq!(k.len(), 3);
        let e = parse_kernels(&["4.2".into()]).unwrap_err().to_string();
        assert!(
            e.contains("unknown kernel \"4.2\"") && e.contains("5.10, 6.1, 6.12, 7"),
            "{e}"
        );
        assert!(parse_kernels(&[]).is_err());
    }
}
