//! `cargo xtask setup`: idempotent installation of everything the build and tests need.
//! Each step checks first, installs only what is missing, and says what it did.

use std::process::Command;

use anyhow::{bail, Context as _};

use crate::util::{is_root, output, run_cmd};

/// The pinned bpf-linker (see shared TOOLCHAIN.md: 0.10.0/0.10.1 emit BTF 6.18 rejects).
pub const BPF_LINKER_VERSION: &str = "0.10.4";

/// Debian packages the build, the lab and the tests use, with why.
pub const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    (
        "iproute2",
        "ip netns / veth for the mesh lab and network tests",
    ),
    ("libcap2-bin", "capsh, to test `check` without CAP_BPF"),
    ("nftables", "transparent redirection rules in the mesh lab"),
    ("nginx-light", "nginx as a sidecar and a demo workload"),
    ("wrk", "reference load generator (benchmarks, demo)"),
];

/// Runs every setup step.
pub fn run() -> anyhow::Result<()> {
    let root = is_root();
    let mut needs_root = Vec::new();
    rust_src()?;
    bpf_linker()?;
    debian_packages(root, &mut needs_root)?;
    tracefs(root, &mut needs_root)?;
    if !needs_root.is_empty() {
        bail!(
            "not root: these steps need root, run them as root (or run `cargo xtask setup` as root):\n  {}",
            needs_root.join("\n  ")
        );
    }
    println!("setup: done");
    Ok(())
}

fn rust_src() -> anyhow::Result<()> {
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        println!("setup: nightly rust-src present");
        return Ok(());
    }
    println!("setup: installing nightly rust-src");
    run_cmd(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> anyhow::Result<()> {
    let version = output(Command::new("bpf-linker").arg("--version")).unwrap_or_default();
    if version.split_whitespace().any(|w| w == BPF_LINKER_VERSION) {
        println!("setup: bpf-linker {BPF_LINKER_VERSION} present");
        return Ok(());
    }
    if version.is_empty() {
        println!("setup: installing bpf-linker {BPF_LINKER_VERSION}");
    } else {
        println!(
            "setup: replacing {} with bpf-linker {BPF_LINKER_VERSION}",
            version.trim()
        );
    }
    run_cmd(Command::new("cargo").args([
        "+nightly",
        "install",
        &format!("bpf-linker@{BPF_LINKER_VERSION}"),
        "--locked",
        "--force",
    ]))
    .context("failed to install bpf-linker")
}

fn package_installed(name: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", name]))
        .map(|s| s.contains("install ok installed"))
        .unwrap_or(false)
}

fn debian_packages(root: bool, needs_root: &mut Vec<String>) -> anyhow::Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !package_installed(p))
        .collect();
    if missing.is_empty() {
        println!("setup: Debian packages present");
        return Ok(());
    }
    for (p, why) in DEBIAN_PACKAGES.iter().filter(|(p, _)| missing.contains(p)) {
        println!("setup: installing {p} ({why})");
    }
    if !root {
        needs_root.push("apt-get update".into());
        needs_root.push(format!("apt-get install -y {}", missing.join(" ")));
        return Ok(());
    }
    run_cmd(Command::new("apt-get").args(["update", "-q"]))?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn tracefs(root: bool, needs_root: &mut Vec<String>) -> anyhow::Result<()> {
    if std::path::Path::new("/sys/kernel/tracing/events").exists() {
        println!("setup: tracefs mounted");
        return Ok(());
    }
    if !root {
        needs_root.push("mount -t tracefs tracefs /sys/kernel/tracing".into());
        return Ok(());
    }
    println!("setup: mounting tracefs at /sys/kernel/tracing");
    run_cmd(Command::new("mount").args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"]))
}
