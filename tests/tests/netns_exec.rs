//! The agent run under `ip netns exec`, which remounts `/sys` in a mount namespace of its own
//! without tracefs: the agent mounts tracefs there and says so (before, every classic
//! tracepoint failed with "tracefs not found"); when it may not mount, it says what to do.

use std::process::{Command, Output};

use smp_agent::probes::tracefs::MOUNT_COMMAND;
use smp_tests::{agent_bin, require_root, require_tool};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A network namespace of this test's own, deleted when dropped.
struct NetNs(String);

impl NetNs {
    fn new(tag: &str) -> Self {
        let name = format!("smp-tfs-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run ip netns add");
        assert!(out.status.success(), "ip netns add: {}", text(&out.stderr));
        NetNs(name)
    }

    /// Runs `prefix… smp-agent args…` inside it with `ip netns exec`.
    fn exec_agent(&self, prefix: &[&str], args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(prefix)
            .arg(agent_bin())
            .args(args)
            .output()
            .expect("run ip netns exec")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// tracefs mounts in this process's mount namespace (the host's).
fn host_tracefs_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("read mountinfo")
        .lines()
        .filter(|l| l.contains(" - tracefs "))
        .count()
}

/// `ip netns exec <ns> smp-agent check`: every required hook attaches (the classic
/// tracepoints among them), the agent says it mounted tracefs, and the mount stayed inside
/// the command's own mount namespace.
#[test]
fn check_under_ip_netns_exec_mounts_tracefs() {
    if !require_root("check_under_ip_netns_exec_mounts_tracefs") {
        return;
    }
    let ns = NetNs::new("check");
    let before = host_tracefs_mounts();
    let out = ns.exec_agent(&[], &["check"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "check failed under ip netns exec:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("tracefs not found"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("tracefs") && l.ends_with(" mounted")),
        "{stdout}"
    );
    assert!(
        stderr.contains("mounted it at /sys/kernel/tracing"),
        "the agent says what it did: {stderr}"
    );
    assert_eq!(
        host_tracefs_mounts(),
        before,
        "the mount stays in ip netns exec's mount namespace"
    );
}

/// Without CAP_SYS_ADMIN the mount fails: the agent says why and gives the exact command,
/// and `check` fails on the hooks that need tracefs.
#[test]
fn without_the_right_to_mount_says_what_to_do() {
    if !require_root("without_the_right_to_mount_says_what_to_do") {
        return;
    }
    let Some(setpriv) = require_tool(
        "setpriv",
        "without_the_right_to_mount_says_what_to_do",
        "apt-get install util-linux",
    ) else {
        return;
    };
    let ns = NetNs::new("nocap");
    let setpriv = setpriv.to_string_lossy().into_owned();
    let out = ns.exec_agent(
        &[
            &setpriv,
            "--bounding-set=-sys_admin",
            "--inh-caps=-sys_admin",
        ],
        &["check"],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("mounting it at /sys/kernel/tracing failed")
            && stderr.contains("CAP_SYS_ADMIN")
            && stderr.contains(MOUNT_COMMAND),
        "{stderr}"
    );
    assert!(stdout.contains("tracefs not found"), "{stdout}");
}
