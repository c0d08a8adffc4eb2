//! The `smp-agent` binary as a user runs it: `check` and `top`, good and bad input.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use smp_tests::{
    agent_bin, loaded_smp_programs, max_program_id, proc_cpu_ns, require_root, Workload,
};

fn agent(args: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(args)
        .output()
        .expect("run smp-agent")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// smp_ programs loaded after `before` (a [`max_program_id`] taken before the agent started):
/// the agent under test's, not those of another agent running on the machine.
fn ours(before: u32) -> Vec<u32> {
    loaded_smp_programs()
        .into_iter()
        .filter(|id| *id > before)
        .collect()
}

/// Asserts no program loaded since `before` is left (they die with the agent process).
fn assert_nothing_left(context: &str, before: u32) {
    // Program release is asynchronous in the kernel (RCU): give it a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = ours(before);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: programs still loaded: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn check_attaches_every_required_hook() {
    if !require_root("check_attaches_every_required_hook") {
        return;
    }
    let before = max_program_id();
    let out = agent(&["check", "--output", "json"]);
    assert!(
        out.status.success(),
        "check failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["ring_buffer"], true);
    let hooks = doc["hooks"].as_array().expect("hooks");
    let required: Vec<_> = hooks.iter().filter(|h| h["required"] == true).collect();
    // The catalog is the one table of hooks; `check` must attach every required one.
    let catalog = smp_agent::probes::catalog::hooks()
        .iter()
        .filter(|h| h.required)
        .count();
    assert_eq!(required.len(), catalog);
    assert!(catalog >= 7, "{catalog} required hooks");
    for h in &required {
        assert_eq!(h["status"], "attached", "{h}");
        assert!(h["variant"].as_str().is_some_and(|v| !v.is_empty()));
    }
    assert!(doc["kernel"]["release"]
        .as_str()
        .is_some_and(|r| !r.is_empty()));
    let table = agent(&["check"]);
    assert!(table.status.success());
    assert!(text(&table.stdout).contains("OK: every required hook attached"));
    assert_nothing_left("after check", before);
}

#[test]
fn check_without_cap_bpf_fails_and_names_the_capability() {
    if !require_root("check_without_cap_bpf_fails_and_names_the_capability") {
        return;
    }
    let bin = agent_bin();
    let out = Command::new("capsh")
        .args(["--drop=cap_bpf,cap_perfmon,cap_sys_admin", "--", "-c"])
        .arg(format!("{} check", bin.display()))
        .output()
        .expect("capsh (libcap2-bin) is installed by `cargo xtask setup`");
    assert!(!out.status.success(), "check succeeded without CAP_BPF");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("missing CAP_BPF, CAP_PERFMON"), "{stdout}");
    assert!(stdout.contains("FAILED"), "{stdout}");
}

#[test]
fn top_reports_cpu_of_a_busy_process_as_json() {
    if !require_root("top_reports_cpu_of_a_busy_process_as_json") {
        return;
    }
    let before = max_program_id();
    let (mut w, _) = Workload::spawn(env!("CARGO_BIN_EXE_burner"), &["1", "60000"]);
    let pid = w.pid();
    w.go();
    let stat0 = proc_cpu_ns(pid);
    let out = agent(&[
        "top",
        "--pid",
        &pid.to_string(),
        "--duration",
        "2s",
        "--output",
        "json",
    ]);
    let stat1 = proc_cpu_ns(pid);
    let _ = w.child.kill();
    w.finish();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(doc["pid"], pid);
    assert_eq!(doc["exited"], false);
    let cpu = doc["cpu_seconds"].as_f64().expect("cpu_seconds");
    let window = (stat1 - stat0) as f64 / 1e9;
    let dur = doc["duration_seconds"].as_f64().unwrap();
    // top's window lies inside the /proc/stat window, and the burner is busy throughout.
    assert!(cpu > 0.3 * dur, "cpu {cpu} s over {dur} s");
    assert!(
        cpu <= window * 1.05 + 0.02,
        "cpu {cpu} s > /proc/stat window {window} s"
    );
    assert!(doc["cpu_seconds_per_interval"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    assert_nothing_left("after top", before);
}

#[test]
fn top_of_a_missing_pid_is_a_clear_error() {
    if !require_root("top_of_a_missing_pid_is_a_clear_error") {
        return;
    }
    let out = agent(&["top", "--pid", "4194300", "--duration", "1s"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("no process with pid 4194300"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn top_of_a_process_that_exits_reports_what_it_measured() {
    if !require_root("top_of_a_process_that_exits_reports_what_it_measured") {
        return;
    }
    let before = max_program_id();
    let mut victim = Command::new("sleep")
        .arg("600")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = victim.id();
    let agent_run = Command::new(agent_bin())
        .args([
            "top",
            "--pid",
            &pid.to_string(),
            "--duration",
            "300s",
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill the victim once the probes are loaded (loading takes seconds, minutes under TCG).
    let deadline = Instant::now() + Duration::from_secs(240);
    // Every required program of the catalog; they load one by one.
    let required = smp_agent::probes::catalog::hooks()
        .iter()
        .filter(|h| h.required)
        .count();
    while ours(before).len() < required {
        assert!(Instant::now() < deadline, "top never loaded its probes");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2)); // tracking and the ring buffer follow the load
    let killed = Instant::now();
    victim.kill().unwrap();
    let _ = victim.wait();
    let out = agent_run.wait_with_output().unwrap();
    assert!(
        killed.elapsed() < Duration::from_secs(30),
        "top did not notice the exit"
    );
    assert!(!out.status.success(), "exit mid-run must be non-zero");
    let err = text(&out.stderr);
    assert!(err.contains(&format!("pid {pid} (sleep) exited")), "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json still printed");
    assert_eq!(doc["exited"], true);
    assert_nothing_left("after top of an exiting process", before);
}

#[test]
fn bad_flags_and_durations_are_rejected_clearly() {
    let out = agent(&["top", "--pid", "1", "--frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unexpected argument '--frobnicate'"));
    let out = agent(&["top", "--pid", "1", "--duration", "abc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("invalid duration \"abc\""),
        "{}",
        text(&out.stderr)
    );
    let out = agent(&["top", "--pid", "notapid"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn killed_agent_leaves_nothing_attached() {
    if !require_root("killed_agent_leaves_nothing_attached") {
        return;
    }
    let before = max_program_id();
    let mut child = Command::new(agent_bin())
        .args(["top", "--pid", &std::process::id().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the probes to be attached (the first line is printed after attaching).
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("watching pid"), "{first}");
    assert!(
        !ours(before).is_empty(),
        "programs are loaded while top runs"
    );
    child.kill().unwrap(); // SIGKILL: no cleanup code runs
    let _ = child.wait();
    assert_nothing_left("after SIGKILL", before);
}
