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

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};

use crate::{
    build,
    util::{cargo, is_root, output, root},
};

/// Test targets of `smp-tests` that run in the matrix (probe level, no mesh lab).
const TEST_TARGETS: &[&str] = &["probes", "cli"];
/// Workload binaries the tests spawn through `env!("CARGO_BIN_EXE_…")`, and `btfbreak`,
/// which `/init` runs for `--break`.
const WORKLOADS: &[&str] = &["burner", "sockmover", "btfbreak"];
/// Host programs the tests or `/init` call, copied into the guest with their libraries.
const HOST_PROGRAMS: &[(&str, &str)] = &[
    (
        "capsh",
        "check_without_cap_bpf_… drops capabilities with capsh",
    ),
    ("bash", "capsh runs /bin/bash"),
];
/// Per-test limit inside the guest and on the host.
const TEST_TIMEOUT_SECS: u64 = 180;

/// The kernels the matrix knows. Each is a Debian cloud-flavour package found by name
/// pattern; the newest ABI that downloads is used and then cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Spec {
    /// What `--kernels` accepts.
    alias: &'static str,
    /// Debian suite it comes from (documentation only: the private apt config has them all).
    suite: &'static str,
    /// Package name = prefix + middle + suffix.
    prefix: &'static str,
    middle: Middle,
    suffix: &'static str,
    /// `linux-image-*` has an `-unsigned` twin (same vmlinuz, no signature); try it first.
    unsigned_twin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Middle {
    /// An ABI number: `linux-image-6.1.0-<56>-cloud-amd64`.
    Abi,
    /// `<patch>+debNN`: `linux-image-6.12.<117>+deb12-cloud-amd64`.
    PatchDeb(&'static str),
    /// `<minor>.<patch>+debNN`: `linux-binary-7.<2.13>+deb14-cloud-amd64`.
    MinorPatchDeb,
}

const SPECS: &[Spec] = &[
    Spec {
        alias: "5.10",
        suite: "bullseye",
        prefix: "linux-image-5.10.0-",
        middle: Middle::Abi,
        suffix: "-cloud-amd64",
        unsigned_twin: true,
    },
    Spec {
        alias: "6.1",
        suite: "bookworm",
        prefix: "linux-image-6.1.0-",
        middle: Middle::Abi,
        suffix: "-cloud-amd64",
        unsigned_twin: true,
    },
    Spec {
        alias: "6.12",
        suite: "bookworm",
        prefix: "linux-image-6.12.",
        middle: Middle::PatchDeb("+deb12"),
        suffix: "-cloud-amd64",
        unsigned_twin: true,
    },
    Spec {
        // trixie and later split the kernel: vmlinuz is in linux-binary-KVER.
        alias: "7",
        suite: "sid",
        prefix: "linux-binary-7.",
        middle: Middle::MinorPatchDeb,
        suffix: "-cloud-amd64",
        unsigned_twin: false,
    },
];

/// The private apt sources (no change to /etc/apt).
const APT_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
";

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
    matrix(&kernels, break_on, o)
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
// The matrix

/// One test's outcome on one kernel.
#[derive(Debug, Clone)]
struct TestResult {
    name: String,
    ok: bool,
    secs: f64,
    /// Tail of its output when it failed.
    tail: String,
}

/// One kernel's run.
#[derive(Debug, Default)]
struct KernelRun {
    label: String,
    release: String,
    check: Option<serde_json::Value>,
    tests: Vec<TestResult>,
    /// Boot failure, panic, time-out, missing results: with the console tail.
    error: Option<String>,
    skipped: Option<String>,
    secs: f64,
    broken: bool,
}

impl KernelRun {
    fn ok(&self) -> bool {
        self.skipped.is_some()
            || (self.error.is_none()
                && self.check_ok()
                && !self.tests.is_empty()
                && self.tests.iter().all(|t| t.ok))
    }

    fn check_ok(&self) -> bool {
        self.check.as_ref().is_some_and(|c| c["ok"] == true)
    }
}

/// The built artefacts the matrix runs.
struct Built {
    agent: PathBuf,
    /// (target name, executable, test names)
    tests: Vec<(String, PathBuf, Vec<String>)>,
    workloads: Vec<PathBuf>,
}

fn matrix(kernels: &[Target], break_on: Option<&str>, o: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let vms = kernels.iter().any(|k| matches!(k, Target::Vm(_)));
    if vms && !have_qemu() {
        bail!("qemu-system-x86_64 not found: run `cargo xtask setup` (installs qemu-system-x86, busybox-static)");
    }
    if vms && !Path::new(BUSYBOX).is_file() {
        bail!("{BUSYBOX} not found: run `cargo xtask setup` (installs busybox-static)");
    }
    let built = build_all(o.filter.as_deref())?;
    let total_tests: usize = built.tests.iter().map(|t| t.2.len()).sum();
    if total_tests == 0 {
        bail!(
            "no test matches the filter {:?} in {TEST_TARGETS:?}",
            o.filter
        );
    }
    let mut runs = Vec::new();
    let mut initramfs = None;
    for k in kernels {
        let t0 = Instant::now();
        let mut run = match k {
            Target::Host => run_host(&built),
            Target::Vm(spec) => {
                let broken = break_on == Some(spec.alias);
                let r = (|| -> anyhow::Result<KernelRun> {
                    let vmlinuz = fetch_kernel(spec, o.refresh)?;
                    if initramfs.is_none() {
                        initramfs = Some(build_initramfs(&built)?);
                    }
                    let img = initramfs.as_ref().context("initramfs")?;
                    Ok(run_vm(spec, &vmlinuz, img, broken, o))
                })();
                r.unwrap_or_else(|e| KernelRun {
                    label: spec.alias.into(),
                    error: Some(format!("{e:#}")),
                    broken,
                    ..KernelRun::default()
                })
            }
        };
        run.secs = t0.elapsed().as_secs_f64();
        print_run(&run);
        runs.push(run);
    }
    if let Some(img) = initramfs {
        let _ = fs::remove_file(img);
    }
    let table = render_table(&runs, &built);
    println!("\n{table}");
    let _ = fs::create_dir_all(out_dir());
    let _ = fs::write(out_dir().join("last-matrix.md"), &table);
    println!(
        "vm-test: {} kernel(s) in {:.0} s; table saved to target/vm/last-matrix.md",
        runs.len(),
        started.elapsed().as_secs_f64()
    );
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| !r.ok())
        .map(|r| r.label.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("kernel matrix failed on: {}", failed.join(", "));
    }
    if let Some(b) = break_on {
        // The break is a self-test of the harness: passing with it is the failure.
        bail!("--break {b}: the deliberately broken kernel passed: the harness cannot fail");
    }
    Ok(())
}

/// Builds the agent (with its eBPF object) and the test binaries; lists their tests.
fn build_all(filter: Option<&str>) -> anyhow::Result<Built> {
    let agent = absolute(build::run(&build::Options { release: false })?);
    println!("vm-test: building the integration tests (cargo test -p smp-tests --no-run)");
    let json = output(cargo().args([
        "test",
        "--package",
        "smp-tests",
        "--no-run",
        "--message-format=json",
    ]))?;
    let mut tests = Vec::new();
    let mut workloads = BTreeMap::new();
    for line in json.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let (Some(name), Some(exe)) = (msg["target"]["name"].as_str(), msg["executable"].as_str())
        else {
            continue;
        };
        let is_test = msg["profile"]["test"] == true;
        if is_test && TEST_TARGETS.contains(&name) {
            tests.push((name.to_string(), absolute(PathBuf::from(exe))));
        } else if !is_test && WORKLOADS.contains(&name) {
            workloads.insert(name.to_string(), absolute(PathBuf::from(exe)));
        }
    }
    for w in WORKLOADS {
        if !workloads.contains_key(*w) {
            bail!("cargo did not report the workload binary {w} of smp-tests");
        }
    }
    let mut listed = Vec::new();
    for t in TEST_TARGETS {
        let (name, exe) = tests
            .iter()
            .find(|(n, _)| n == t)
            .with_context(|| format!("cargo did not report the test binary {t} of smp-tests"))?;
        let list = output(Command::new(exe).args(["--list", "--format", "terse"]))?;
        let names: Vec<String> = list
            .lines()
            .filter_map(|l| l.strip_suffix(": test"))
            .filter(|n| filter.is_none_or(|f| n.contains(f)))
            .map(String::from)
            .collect();
        listed.push((name.clone(), exe.clone(), names));
    }
    Ok(Built {
        agent,
        tests: listed,
        workloads: workloads.into_values().collect(),
    })
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        root().join(p)
    }
}

// ---------------------------------------------------------------------------------------------
// Host

fn run_host(b: &Built) -> KernelRun {
    let mut run = KernelRun {
        label: "host".into(),
        release: fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        ..KernelRun::default()
    };
    if !is_root() {
        if ci() {
            run.error = Some("not root and CI=true: the host row needs root".into());
        } else {
            run.skipped = Some("not root".into());
        }
        return run;
    }
    match run_deadline(
        Command::new(&b.agent).args(["check", "--output", "json"]),
        Duration::from_secs(TEST_TIMEOUT_SECS),
    ) {
        Ok((_, out)) => run.check = serde_json::from_slice(&out).ok(),
        Err(e) => run.error = Some(format!("check: {e:#}")),
    }
    for (target, exe, names) in &b.tests {
        for name in names {
            let t0 = Instant::now();
            let r = run_deadline(
                Command::new(exe)
                    .args(["--exact", name, "--test-threads=1", "--nocapture"])
                    .env("CI", "true")
                    .env("SMP_AGENT_BIN", &b.agent)
                    .env("RUST_BACKTRACE", "0")
                    .stderr(Stdio::piped()),
                Duration::from_secs(TEST_TIMEOUT_SECS),
            );
            let (ok, tail) = match r {
                Ok((status, out)) => (status, tail_lines(&String::from_utf8_lossy(&out), 30)),
                Err(e) => (false, format!("{e:#}")),
            };
            run.tests.push(TestResult {
                name: format!("{target}::{name}"),
                ok,
                secs: t0.elapsed().as_secs_f64(),
                tail,
            });
        }
    }
    run
}

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

// ---------------------------------------------------------------------------------------------
// Kernels: private apt, download, keep vmlinuz

fn apt_dir() -> PathBuf {
    cache_dir().join("apt")
}

fn apt_opts() -> Vec<String> {
    let d = apt_dir();
    let d = d.display();
    [
        format!("Dir::Etc::SourceList={d}/sources.list"),
        format!("Dir::Etc::SourceParts={d}/sources.list.d"),
        format!("Dir::Etc::Preferences={d}/preferences"),
        format!("Dir::Etc::PreferencesParts={d}/preferences.d"),
        format!("Dir::State::Lists={d}/lists"),
        format!("Dir::Cache={d}/cache"),
        "Dir::State::status=/dev/null".into(),
        "APT::Architectures::=amd64".into(),
        "APT::Sandbox::User=root".into(),
        "Acquire::Languages=none".into(),
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
        "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
        "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false".into(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

fn apt(tool: &str) -> Command {
    let mut c = Command::new(tool);
    c.args(apt_opts());
    c
}

/// `apt-get update` of the private configuration.
fn apt_update() -> anyhow::Result<()> {
    let d = apt_dir();
    for sub in [
        "lists/partial",
        "cache/archives/partial",
        "sources.list.d",
        "preferences.d",
    ] {
        fs::create_dir_all(d.join(sub))?;
    }
    fs::write(d.join("sources.list"), APT_SOURCES)?;
    println!("vm-test: apt-get update (private config in .cache/vm/apt: bullseye, bookworm, sid)");
    let (ok, out) = run_deadline(apt("apt-get").arg("update"), Duration::from_secs(300))?;
    if !ok {
        bail!(
            "apt-get update failed:\n{}",
            tail_lines(&String::from_utf8_lossy(&out), 15)
        );
    }
    Ok(())
}

/// Sort key of a package name for this spec, or None if it is not one of its packages.
fn match_spec(spec: &Spec, name: &str) -> Option<Vec<u64>> {
    let mid = name.strip_prefix(spec.prefix)?.strip_suffix(spec.suffix)?;
    let nums =
        |s: &str| -> Option<Vec<u64>> { s.split('.').map(|p| p.parse::<u64>().ok()).collect() };
    match spec.middle {
        Middle::Abi => nums(mid).filter(|v| v.len() == 1),
        Middle::PatchDeb(deb) => nums(mid.strip_suffix(deb)?).filter(|v| v.len() == 1),
        Middle::MinorPatchDeb => {
            let (ver, deb) = mid.split_once("+deb")?;
            deb.parse::<u64>().ok()?;
            nums(ver).filter(|v| v.len() == 2)
        }
    }
}

/// Package names to try, best first.
fn candidates(spec: &Spec) -> anyhow::Result<Vec<String>> {
    let names = output(apt("apt-cache").args(["pkgnames", spec.prefix]))?;
    let mut found: Vec<(Vec<u64>, String)> = names
        .lines()
        .filter_map(|n| match_spec(spec, n.trim()).map(|k| (k, n.trim().to_string())))
        .collect();
    found.sort();
    found.dedup();
    let mut out = Vec::new();
    for (_, n) in found.into_iter().rev().take(3) {
        if spec.unsigned_twin {
            out.push(format!("{n}-unsigned"));
        }
        out.push(n);
    }
    Ok(out)
}

/// The cached `vmlinuz` of a kernel, fetched first if needed.
fn fetch_kernel(spec: &Spec, refresh: bool) -> anyhow::Result<PathBuf> {
    let dir = cache_dir().join("kernels").join(spec.alias);
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.is_file() && dir.join("package").is_file() && !refresh {
        return Ok(vmlinuz);
    }
    let t0 = Instant::now();
    let lists = apt_dir().join("lists");
    let fresh = fs::read_dir(&lists)
        .ok()
        .and_then(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with("InRelease"))
                .filter_map(|e| e.metadata().ok()?.modified().ok())
                .min()
        })
        .is_some_and(|m| {
            SystemTime::now()
                .duration_since(m)
                .is_ok_and(|age| age < Duration::from_secs(24 * 3600))
        });
    let same_sources =
        fs::read_to_string(apt_dir().join("sources.list")).is_ok_and(|s| s == APT_SOURCES);
    let mut updated = false;
    if !fresh || !same_sources || refresh {
        apt_update()?;
        updated = true;
    }
    let debs = cache_dir().join("debs");
    fs::create_dir_all(&debs)?;
    let mut errors = Vec::new();
    for attempt in 0..2 {
        let names = candidates(spec)?;
        if names.is_empty() {
            errors.push(format!(
                "no package {}*{} in the {} archive",
                spec.prefix, spec.suffix, spec.suite
            ));
        }
        for name in &names {
            println!("vm-test: {}: apt-get download {name}", spec.alias);
            match run_deadline(
                apt("apt-get").args(["download", name]).current_dir(&debs),
                Duration::from_secs(600),
            ) {
                Ok((true, _)) => {
                    let v = extract_vmlinuz(&debs, name, &dir)?;
                    println!(
                        "vm-test: {}: {} ready in {:.0} s",
                        spec.alias,
                        v.display(),
                        t0.elapsed().as_secs_f64()
                    );
                    return Ok(v);
                }
                Ok((false, out)) => errors.push(format!(
                    "{name}: {}",
                    tail_lines(&String::from_utf8_lossy(&out), 2)
                )),
                Err(e) => errors.push(format!("{name}: {e:#}")),
            }
        }
        if attempt == 0 && !updated {
            // Stale lists name packages the mirror no longer has: refresh once.
            apt_update()?;
            updated = true;
        } else {
            break;
        }
    }
    bail!(
        "kernel {}: no package could be downloaded:\n  {}",
        spec.alias,
        errors.join("\n  ")
    )
}

/// Extracts only the `vmlinuz*` of the downloaded `.deb` into `dir/vmlinuz`; deletes the .deb.
fn extract_vmlinuz(debs: &Path, name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let deb = fs::read_dir(debs)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&format!("{name}_")) && f.ends_with(".deb"))
        })
        .with_context(|| format!("apt-get download {name} left no .deb in {}", debs.display()))?;
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("dpkg-deb")?;
    let stdout = dpkg.stdout.take().context("dpkg-deb stdout")?;
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(&tmp)
        .arg("*vmlinuz*")
        .stdin(stdout)
        .status()
        .context("tar")?;
    let dpkg_ok = dpkg.wait()?.success();
    if !tar.success() || !dpkg_ok {
        bail!("extracting vmlinuz from {} failed", deb.display());
    }
    let found = find_file(&tmp, &|p: &Path| {
        p.file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with("vmlinuz"))
    })
    .with_context(|| format!("{} holds no vmlinuz", deb.display()))?;
    // /boot/vmlinuz-KVER or /usr/lib/modules/KVER/vmlinuz
    let fname = found.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let kver = match fname.strip_prefix("vmlinuz-") {
        Some(k) => k.to_string(),
        None => found
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|f| f.to_str())
            .unwrap_or("?")
            .to_string(),
    };
    fs::create_dir_all(dir)?;
    fs::rename(&found, dir.join("vmlinuz"))?;
    let pkg = deb.file_name().and_then(|f| f.to_str()).unwrap_or(name);
    fs::write(dir.join("package"), format!("{kver} {pkg}\n"))?;
    let _ = fs::remove_dir_all(&tmp);
    let _ = fs::remove_file(&deb);
    Ok(dir.join("vmlinuz"))
}

fn find_file(dir: &Path, pred: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let p = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_dir() {
            if let Some(f) = find_file(&p, pred) {
                return Some(f);
            }
        } else if ft.is_file() && pred(&p) {
            return Some(p);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Initramfs

const BUSYBOX: &str = "/bin/busybox";

/// A newc cpio archive written as we go (no cpio tool needed).
struct Cpio {
    out: std::io::BufWriter<fs::File>,
    ino: u32,
    written: u64,
    dirs: BTreeSet<PathBuf>,
}

impl Cpio {
    fn create(path: &Path) -> anyhow::Result<Cpio> {
        Ok(Cpio {
            out: std::io::BufWriter::new(fs::File::create(path)?),
            ino: 1,
            written: 0,
            dirs: BTreeSet::new(),
        })
    }

    fn header(&mut self, name: &str, mode: u32, size: u32) -> anyhow::Result<()> {
        let name = name.trim_start_matches('/');
        let mut h = String::with_capacity(110 + name.len());
        write!(
            h,
            "070701{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            size,
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        )?;
        self.ino += 1;
        self.out.write_all(h.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += (110 + name.len() + 1) as u64;
        self.pad()
    }

    fn pad(&mut self) -> anyhow::Result<()> {
        while !self.written.is_multiple_of(4) {
            self.out.write_all(&[0])?;
            self.written += 1;
        }
        Ok(())
    }

    fn parents(&mut self, path: &str) -> anyhow::Result<()> {
        let p = Path::new(path);
        let mut todo = Vec::new();
        let mut cur = p.parent();
        while let Some(d) = cur {
            if d.as_os_str().is_empty() || d == Path::new("/") || self.dirs.contains(d) {
                break;
            }
            todo.push(d.to_path_buf());
            cur = d.parent();
        }
        for d in todo.into_iter().rev() {
            self.header(&d.to_string_lossy(), 0o040755, 0)?;
            self.dirs.insert(d);
        }
        Ok(())
    }

    fn dir(&mut self, path: &str) -> anyhow::Result<()> {
        self.parents(&format!("{}/x", path.trim_end_matches('/')))
    }

    fn bytes(&mut self, path: &str, mode: u32, data: &[u8]) -> anyhow::Result<()> {
        self.parents(path)?;
        let size = u32::try_from(data.len()).context("file too large for cpio")?;
        self.header(path, 0o100000 | mode, size)?;
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        self.pad()
    }

    fn symlink(&mut self, path: &str, target: &str) -> anyhow::Result<()> {
        self.parents(path)?;
        self.header(path, 0o120777, target.len() as u32)?;
        self.out.write_all(target.as_bytes())?;
        self.written += target.len() as u64;
        self.pad()
    }

    fn finish(mut self) -> anyhow::Result<u64> {
        self.header("TRAILER!!!", 0, 0)?;
        self.out.flush()?;
        Ok(self.written)
    }
}

/// The host's copy of a binary for the guest: without debug info (smaller, faster to boot).
fn stripped(src: &Path, stage: &Path, n: usize) -> PathBuf {
    let dst = stage.join(format!("{n}"));
    let ok = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dst)
        .arg(src)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        dst
    } else {
        src.to_path_buf()
    }
}

/// Shared libraries `ldd` names for a binary (none for static ones).
fn libs_of(bin: &Path, libs: &mut BTreeSet<PathBuf>) {
    let Ok(out) = Command::new("ldd").arg(bin).stderr(Stdio::null()).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        for tok in line.split_whitespace() {
            if tok.starts_with('/') {
                libs.insert(PathBuf::from(tok));
            }
        }
    }
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(prog))
        .find(|p| p.is_file())
}

/// Writes the one initramfs all kernels boot (the break switch is on the kernel command line).
fn build_initramfs(b: &Built) -> anyhow::Result<PathBuf> {
    let t0 = Instant::now();
    let dir = out_dir();
    let stage = dir.join("stage");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage)?;
    let img = dir.join("initramfs.cpio");
    let mut cpio = Cpio::create(&img)?;
    for d in [
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/root",
        "/run",
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
        "/etc",
    ] {
        cpio.dir(d)?;
    }
    cpio.bytes(BUSYBOX, 0o755, &fs::read(BUSYBOX)?)?;
    cpio.symlink("/bin/sh", "busybox")?;
    cpio.bytes("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    cpio.bytes("/etc/group", 0o644, b"root:x:0:\n")?;
    cpio.bytes("/init", 0o755, INIT.as_bytes())?;

    let mut bins: Vec<(PathBuf, PathBuf)> = Vec::new(); // (guest path, host source)
    bins.push((b.agent.clone(), b.agent.clone()));
    for (_, exe, _) in &b.tests {
        bins.push((exe.clone(), exe.clone()));
    }
    for w in &b.workloads {
        bins.push((w.clone(), w.clone()));
    }
    for (prog, why) in HOST_PROGRAMS {
        let p = find_in_path(prog)
            .with_context(|| format!("{prog} not found on the host ({why}): cargo xtask setup"))?;
        bins.push((PathBuf::from("/bin").join(prog), p.clone()));
        bins.push((PathBuf::from("/usr/sbin").join(prog), p));
    }
    let mut libs = BTreeSet::new();
    let mut seen: BTreeMap<PathBuf, String> = BTreeMap::new();
    for (i, (guest, src)) in bins.iter().enumerate() {
        libs_of(src, &mut libs);
        let gs = guest.to_string_lossy().to_string();
        if let Some(first) = seen.get(src) {
            // A second name of the same program: a symlink.
            cpio.symlink(&gs, &first.clone())?;
            continue;
        }
        let s = stripped(src, &stage, i);
        cpio.bytes(&gs, 0o755, &fs::read(&s)?)?;
        seen.insert(src.clone(), gs);
    }
    for lib in &libs {
        let data = fs::read(lib).with_context(|| format!("read {}", lib.display()))?;
        cpio.bytes(&lib.to_string_lossy(), 0o755, &data)?;
    }
    // The test list: "<binary> <test name>" per line.
    let mut list = String::new();
    for (target, exe, names) in &b.tests {
        for n in names {
            writeln!(list, "{} {target} {n}", exe.display())?;
        }
    }
    cpio.bytes("/smpvm/tests", 0o644, list.as_bytes())?;
    cpio.bytes(
        "/smpvm/agent",
        0o644,
        format!("{}\n", b.agent.display()).as_bytes(),
    )?;
    let btfbreak = b
        .workloads
        .iter()
        .find(|w| w.file_name().is_some_and(|n| n == "btfbreak"))
        .context("no btfbreak binary")?;
    cpio.bytes(
        "/smpvm/btfbreak",
        0o644,
        format!("{}\n", btfbreak.display()).as_bytes(),
    )?;
    cpio.bytes(
        "/smpvm/timeout",
        0o644,
        format!("{TEST_TIMEOUT_SECS}\n").as_bytes(),
    )?;
    let size = cpio.finish()?;
    let _ = fs::remove_dir_all(&stage);
    println!(
        "vm-test: initramfs {} ({:.0} MB, {} libraries) in {:.1} s",
        img.display(),
        size as f64 / 1e6,
        libs.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(img)
}

/// The guest's `/init` (busybox sh). Results go to ttyS1, one line each.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
# No tmpfs on /tmp: the binaries sit at their host paths, and a checkout under /tmp would be
# hidden. The initramfs root is itself in memory and writable.
chmod 1777 /tmp
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
R=/dev/ttyS1
stty -F $R raw -echo 2>/dev/null
say() { echo "$*" > $R; }
now() { cut -d' ' -f1 /proc/uptime; }
say "SMPVM-BOOT release=$(uname -r) uptime=$(now) btf=$([ -e /sys/kernel/btf/vmlinux ] && echo yes || echo no)"
echo "smpvm: kernel $(uname -r), init at $(now) s"
if grep -q 'smpvm.break=1' /proc/cmdline; then
  # Harness self-test: the BTF the agent reads says pt_regs.di is where si is (and back).
  mkdir -p /tmp/brk
  $(cat /smpvm/btfbreak) /sys/kernel/btf/vmlinux /tmp/brk/vmlinux \
    && mount -o bind /tmp/brk/vmlinux /sys/kernel/btf/vmlinux && n=1 || n=0
  say "SMPVM-BREAK btf=$n"
  echo "smpvm: BREAK: BTF with di/si swapped mounted: $n"
fi
AGENT=$(cat /smpvm/agent)
T=$(cat /smpvm/timeout)
export CI=true SMP_AGENT_BIN=$AGENT RUST_BACKTRACE=0
timeout -s KILL $T $AGENT check --output json > /tmp/check.json 2> /tmp/check.err
rc=$?
say "SMPVM-CHECK rc=$rc"
say "SMPVM-CHECK-BEGIN"
cat /tmp/check.json > $R
say "SMPVM-CHECK-END"
cat /tmp/check.err
while read bin target name; do
  t0=$(now)
  echo "smpvm: test $target::$name"
  timeout -s KILL $T $bin --exact "$name" --test-threads=1 --nocapture > /tmp/out 2>&1
  rc=$?
  t1=$(now)
  cat /tmp/out
  say "SMPVM-TEST name=$target::$name rc=$rc secs=$(awk "BEGIN { print $t1 - $t0 }")"
  if [ $rc -ne 0 ]; then
    say "SMPVM-OUT-BEGIN"
    tail -n 30 /tmp/out > $R
    say "SMPVM-OUT-END"
  fi
done < /smpvm/tests
say "SMPVM-DONE uptime=$(now)"
echo "smpvm: done at $(now) s"
sync
poweroff -f
"#;

// ---------------------------------------------------------------------------------------------
// Booting

fn run_vm(spec: &Spec, vmlinuz: &Path, initramfs: &Path, broken: bool, o: &Options) -> KernelRun {
    let mut run = KernelRun {
        label: spec.alias.into(),
        broken,
        ..KernelRun::default()
    };
    let dir = out_dir().join("runs").join(spec.alias);
    let _ = fs::create_dir_all(&dir);
    let console = dir.join("console.log");
    let results = dir.join("results.log");
    let _ = fs::remove_file(&console);
    let _ = fs::remove_file(&results);
    let pkg = fs::read_to_string(vmlinuz.with_file_name("package")).unwrap_or_default();
    println!(
        "vm-test: {}: booting {} (TCG){}",
        spec.alias,
        pkg.trim(),
        if broken {
            " with the BREAK switch on"
        } else {
            ""
        }
    );
    let mut cmd = Command::new("qemu-system-x86_64");
    // One host thread for all vCPUs: with multi-threaded TCG, guests now and then oopsed on
    // an int3 of a live-patched static branch in the syscall exit path (the sys_enter/sys_exit
    // tracepoints' keys flip when the agent attaches and detaches), or soft-locked: emulated
    // cross-modifying code racing between vCPU threads, not a kernel or probe bug (never seen
    // on real CPUs). Round-robin vCPUs keep -smp 2's concurrency semantics without the race.
    cmd.args(["-accel", "tcg,thread=single", "-cpu", "max", "-m", "1536"])
        .arg("-smp")
        .arg(o.smp.clamp(1, 16).to_string())
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
        ])
        .args(["-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-serial")
        .arg(format!("file:{}", results.display()))
        .arg("-kernel")
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 panic=-1 quiet loglevel=5 softlockup_panic=1 softlockup_all_cpu_backtrace=1 rdinit=/init smpvm.break={}",
            u8::from(broken)
        ));
    let r = run_deadline(&mut cmd, Duration::from_secs(o.timeout));
    let console_text = fs::read_to_string(&console).unwrap_or_default();
    let res = fs::read_to_string(&results)
        .unwrap_or_default()
        .replace('\r', "");
    parse_results(&res, &mut run);
    let done = res.lines().any(|l| l.starts_with("SMPVM-DONE"));
    let why = match r {
        Err(e) => Some(format!("qemu: {e:#}")),
        Ok((_, _)) if !done => Some(if console_text.contains("Kernel panic") {
            "the guest panicked".to_string()
        } else {
            "the guest stopped before finishing the tests".to_string()
        }),
        Ok(_) => None,
    };
    if let Some(why) = why {
        run.error = Some(format!(
            "{why}; console tail ({}):\n{}",
            console.display(),
            tail_lines(&console_text.replace('\r', ""), 25)
        ));
    }
    run
}

fn parse_results(res: &str, run: &mut KernelRun) {
    let field = |line: &str, key: &str| -> Option<String> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .map(String::from)
    };
    let mut lines = res.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("SMPVM-BOOT") {
            run.release = field(line, "release").unwrap_or_default();
        } else if line == "SMPVM-CHECK-BEGIN" {
            let json: Vec<&str> = lines
                .by_ref()
                .take_while(|l| *l != "SMPVM-CHECK-END")
                .collect();
            run.check = serde_json::from_str(&json.join("\n")).ok();
        } else if line.starts_with("SMPVM-TEST") {
            run.tests.push(TestResult {
                name: field(line, "name").unwrap_or_default(),
                ok: field(line, "rc").as_deref() == Some("0"),
                secs: field(line, "secs")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0.0),
                tail: String::new(),
            });
        } else if line == "SMPVM-OUT-BEGIN" {
            let out: Vec<&str> = lines
                .by_ref()
                .take_while(|l| *l != "SMPVM-OUT-END")
                .collect();
            if let Some(t) = run.tests.last_mut() {
                t.tail = out.join("\n");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reporting

fn print_run(r: &KernelRun) {
    let status = if r.skipped.is_some() {
        "SKIPPED"
    } else if r.ok() {
        "ok"
    } else {
        "FAILED"
    };
    println!(
        "vm-test: {} ({}) {status} in {:.1} s{}",
        r.label,
        if r.release.is_empty() {
            "?"
        } else {
            &r.release
        },
        r.secs,
        r.skipped
            .as_deref()
            .map(|s| format!(": {s}"))
            .unwrap_or_default()
    );
    if let Some(c) = &r.check {
        if c["ok"] != true {
            println!("  check failed: {}", c["error"]);
        }
        for h in c["hooks"].as_array().into_iter().flatten() {
            if h["status"] != "attached" {
                println!(
                    "  hook {} ({}) {}: {}",
                    h["program"].as_str().unwrap_or("?"),
                    h["target"].as_str().unwrap_or("?"),
                    h["status"].as_str().unwrap_or("?"),
                    h["reason"].as_str().unwrap_or("")
                );
            }
        }
    } else if r.skipped.is_none() {
        println!("  check: no JSON report");
    }
    for t in &r.tests {
        println!(
            "  {} {} ({:.1} s)",
            if t.ok { "ok    " } else { "FAILED" },
            t.name,
            t.secs
        );
        if !t.ok {
            for l in t.tail.lines() {
                println!("    | {l}");
            }
        }
    }
    if let Some(e) = &r.error {
        println!("  ERROR: {}", e.replace('\n', "\n    | "));
    }
}

/// `attached/total required; kinds; optional`.
fn hooks_summary(c: &serde_json::Value) -> String {
    let hooks = c["hooks"].as_array().cloned().unwrap_or_default();
    let req: Vec<_> = hooks.iter().filter(|h| h["required"] == true).collect();
    let att = req.iter().filter(|h| h["status"] == "attached").count();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for h in hooks.iter().filter(|h| h["status"] == "attached") {
        *kinds
            .entry(h["kind"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}×{n}")).collect();
    let opt = &c["optional_hooks"];
    format!(
        "{att}/{} required attached ({}); optional kprobe={} fentry={}",
        req.len(),
        kinds.join(", "),
        opt["kprobe"],
        opt["fentry"]
    )
}

fn render_table(runs: &[KernelRun], b: &Built) -> String {
    let mut names: Vec<String> = Vec::new();
    for (target, _, ns) in &b.tests {
        for n in ns {
            names.push(format!("{target}::{n}"));
        }
    }
    let mut s = String::new();
    let _ = write!(s, "| test |");
    for r in runs {
        let _ = write!(
            s,
            " {}{} |",
            r.label,
            if r.broken { " (BREAK)" } else { "" }
        );
    }
    let _ = write!(s, "\n|---|");
    for _ in runs {
        let _ = write!(s, "---|");
    }
    let _ = write!(s, "\n| kernel release |");
    for r in runs {
        let _ = write!(
            s,
            " {} |",
            if r.release.is_empty() {
                "?"
            } else {
                &r.release
            }
        );
    }
    let _ = write!(s, "\n| `check` |");
    for r in runs {
        let cell = if let Some(sk) = &r.skipped {
            format!("skipped ({sk})")
        } else if r.check_ok() {
            "pass".to_string()
        } else {
            "**FAIL**".to_string()
        };
        let _ = write!(s, " {cell} |");
    }
    for n in &names {
        let _ = write!(s, "\n| {} |", n.replace("::", " `").to_string() + "`");
        for r in runs {
            let cell = match r.tests.iter().find(|t| &t.name == n) {
                Some(t) if t.ok => format!("pass ({:.1} s)", t.secs),
                Some(t) => format!("**FAIL** ({:.1} s)", t.secs),
                None if r.skipped.is_some() => "skipped".into(),
                None => "**not run**".into(),
            };
            let _ = write!(s, " {cell} |");
        }
    }
    let _ = write!(s, "\n| wall time (boot to poweroff) |");
    for r in runs {
        let _ = write!(s, " {:.0} s |", r.secs);
    }
    s.push_str("\n\nHooks `check` chose:\n");
    for r in runs {
        match &r.check {
            Some(c) => {
                let _ = write!(s, "\n- **{}**: {}", r.label, hooks_summary(c));
                // Group programs by (kind, status, variant).
                let mut groups: BTreeMap<(String, String, String), Vec<String>> = BTreeMap::new();
                for h in c["hooks"].as_array().into_iter().flatten() {
                    groups
                        .entry((
                            h["kind"].as_str().unwrap_or("?").into(),
                            h["status"].as_str().unwrap_or("?").into(),
                            h["variant"].as_str().unwrap_or("").into(),
                        ))
                        .or_default()
                        .push(h["program"].as_str().unwrap_or("?").into());
                }
                for ((kind, status, variant), progs) in groups {
                    let progs = if progs.len() > 3 {
                        format!(
                            "{} … {} ({} programs)",
                            progs[0],
                            progs[progs.len() - 1],
                            progs.len()
                        )
                    } else {
                        progs.join(", ")
                    };
                    let _ = write!(s, "\n  - {progs}: {kind}, {status}; {variant}");
                }
            }
            None => {
                let _ = write!(s, "\n- **{}**: no check report", r.label);
            }
        }
    }
    s.push('\n');
    s
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

    #[test]
    fn package_names_match_their_kernel_only() {
        let s = |a| find_spec(a).unwrap();
        assert_eq!(
            match_spec(s("6.1"), "linux-image-6.1.0-56-cloud-amd64"),
            Some(vec![56])
        );
        assert_eq!(
            match_spec(s("6.1"), "linux-image-6.1.0-0.deb11.52-cloud-amd64"),
            None
        );
        assert_eq!(
            match_spec(s("6.1"), "linux-image-6.1.0-56-cloud-amd64-dbg"),
            None
        );
        assert_eq!(
            match_spec(s("6.12"), "linux-image-6.12.117+deb12-cloud-amd64"),
            Some(vec![117])
        );
        assert_eq!(
            match_spec(s("7"), "linux-binary-7.2.13+deb14-cloud-amd64"),
            Some(vec![2, 13])
        );
        assert_eq!(
            match_spec(s("5.10"), "linux-image-5.10.0-46-cloud-amd64"),
            Some(vec![46])
        );
    }

    #[test]
    fn guest_results_are_parsed() {
        let mut r = KernelRun::default();
        parse_results(
            "SMPVM-BOOT release=6.1.0-56-cloud-amd64 uptime=2.1 btf=yes\nSMPVM-CHECK rc=0\nSMPVM-CHECK-BEGIN\n{\"ok\": true}\nSMPVM-CHECK-END\nSMPVM-TEST name=probes::a rc=0 secs=1.5\nSMPVM-TEST name=probes::b rc=101 secs=2\nSMPVM-OUT-BEGIN\npanicked\nSMPVM-OUT-END\nSMPVM-DONE uptime=9\n",
            &mut r,
        );
        assert_eq!(r.release, "6.1.0-56-cloud-amd64");
        assert!(r.check_ok());
        assert_eq!(r.tests.len(), 2);
        assert!(r.tests[0].ok && !r.tests[1].ok);
        assert_eq!(r.tests[1].tail, "panicked");
    }
}
