//! The matrix: build once, run every kernel (and the host), print and save the table.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};

use super::{
    ci, have_qemu,
    initramfs::{build_initramfs, BUSYBOX},
    kernels::fetch_kernel,
    out_dir,
    qemu::run_vm,
    run_deadline, tail_lines, Options, Target, TEST_TARGETS, TEST_TIMEOUT_SECS, WORKLOADS,
};
use crate::{
    build,
    util::{cargo, is_root, on_every_cpu, output, root},
};

/// One test's outcome on one kernel.
#[derive(Debug, Clone)]
pub(super) struct TestResult {
    pub(super) name: String,
    pub(super) ok: bool,
    pub(super) secs: f64,
    /// Tail of its output when it failed.
    pub(super) tail: String,
}

/// One kernel's run.
#[derive(Debug, Default)]
pub(super) struct KernelRun {
    pub(super) label: String,
    pub(super) release: String,
    pub(super) check: Option<serde_json::Value>,
    pub(super) tests: Vec<TestResult>,
    /// Boot failure, panic, time-out, missing results: with the console tail.
    pub(super) error: Option<String>,
    pub(super) skipped: Option<String>,
    pub(super) secs: f64,
    pub(super) broken: bool,
}

impl KernelRun {
    pub(super) fn ok(&self) -> bool {
        self.skipped.is_some()
            || (self.error.is_none()
                && self.check_ok()
                && !self.tests.is_empty()
                && self.tests.iter().all(|t| t.ok))
    }

    pub(super) fn check_ok(&self) -> bool {
        self.check.as_ref().is_some_and(|c| c["ok"] == true)
    }
}

/// The built artefacts the matrix runs.
pub(super) struct Built {
    pub(super) agent: PathBuf,
    /// (target name, executable, test names)
    pub(super) tests: Vec<(String, PathBuf, Vec<String>)>,
    pub(super) workloads: Vec<PathBuf>,
}

pub(super) fn run_all(
    kernels: &[Target],
    break_on: Option<&str>,
    o: &Options,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let vms = kernels.iter().any(|k| matches!(k, Target::Vm(_)));
    if vms && !have_qemu() {
        bail!("qemu-system-x86_64 not found: run `cargo xtask setup` (installs qemu-system-x86, busybox-static)");
    }
    if vms && !Path::new(BUSYBOX).is_file() {
        bail!("{BUSYBOX} not found: run `cargo xtask setup` (installs busybox-static)");
    }
    let built = build_all(o.filter.as_deref(), o.release)?;
    let total_tests: usize = built.tests.iter().map(|t| t.2.len()).sum();
    if total_tests == 0 {
        bail!(
            "no test matches the filter {:?} in {TEST_TARGETS:?}",
            o.filter
        );
    }
    // The host first, alone: its tests time real work on this machine's CPUs, which the
    // emulated guests would take.
    let mut runs: Vec<Option<KernelRun>> = kernels.iter().map(|_| None).collect();
    for (i, k) in kernels.iter().enumerate() {
        if *k == Target::Host {
            let t0 = Instant::now();
            let mut run = run_host(&built);
            run.secs = t0.elapsed().as_secs_f64();
            print_run(&run);
            runs[i] = Some(run);
        }
    }
    // Then the guests. Kernels are fetched one after the other (apt's cache is shared); each
    // guest is one host thread (TCG, `thread=single`), so as many boot at once as this
    // machine has CPUs, each on a core of its own as when they ran one after the other.
    let mut guests = Vec::new();
    let mut initramfs = None;
    for (i, k) in kernels.iter().enumerate() {
        let Target::Vm(spec) = *k else { continue };
        let broken = break_on == Some(spec.alias);
        let prepared = (|| -> anyhow::Result<PathBuf> {
            let vmlinuz = fetch_kernel(spec, o.refresh)?;
            if initramfs.is_none() {
                initramfs = Some(build_initramfs(&built)?);
            }
            Ok(vmlinuz)
        })();
        match prepared {
            Ok(vmlinuz) => guests.push((i, spec, vmlinuz, broken)),
            Err(e) => {
                let run = KernelRun {
                    label: spec.alias.into(),
                    error: Some(format!("{e:#}")),
                    broken,
                    ..KernelRun::default()
                };
                print_run(&run);
                runs[i] = Some(run);
            }
        }
    }
    if let Some(img) = &initramfs {
        let done = on_every_cpu(&guests, |(i, spec, vmlinuz, broken)| {
            let t0 = Instant::now();
            let mut run = run_vm(spec, vmlinuz, img, *broken, o);
            run.secs = t0.elapsed().as_secs_f64();
            print_run(&run);
            (*i, run)
        });
        for (i, run) in done {
            runs[i] = Some(run);
        }
        let _ = fs::remove_file(img);
    }
    let runs: Vec<KernelRun> = runs.into_iter().flatten().collect();
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
pub(super) fn build_all(filter: Option<&str>, release: bool) -> anyhow::Result<Built> {
    let agent = absolute(build::run(&build::Options { release })?);
    let profile = if release { &["--release"][..] } else { &[] };
    println!(
        "vm-test: building the integration tests (cargo test -p smp-tests --no-run{})",
        if release { " --release" } else { "" }
    );
    let json = output(
        cargo()
            .args([
                "test",
                "--package",
                "smp-tests",
                "--no-run",
                "--message-format=json",
            ])
            .args(profile),
    )?;
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

pub(super) fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        root().join(p)
    }
}

// ---------------------------------------------------------------------------------------------
// Host

pub(super) fn run_host(b: &Built) -> KernelRun {
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

// ---------------------------------------------------------------------------------------------
// Reporting

pub(super) fn print_run(r: &KernelRun) {
    // One run's lines together when guests finish at once (println! re-enters this lock).
    let _whole = std::io::stdout().lock();
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
pub(super) fn hooks_summary(c: &serde_json::Value) -> String {
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

pub(super) fn render_table(runs: &[KernelRun], b: &Built) -> String {
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
