//! Booting one kernel under qemu (TCG) and reading what its `/init` reported.

use std::{fs, path::Path, process::Command, time::Duration};

use super::{
    kernels::Spec,
    matrix::{KernelRun, TestResult},
    out_dir, run_deadline, tail_lines, Options,
};

pub(super) fn run_vm(
    spec: &Spec,
    vmlinuz: &Path,
    initramfs: &Path,
    broken: bool,
    o: &Options,
) -> KernelRun {
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

pub(super) fn parse_results(res: &str, run: &mut KernelRun) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
