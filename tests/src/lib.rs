//! Support for the privileged integration tests: root checks that fail under CI instead of
//! skipping, and the path of the built `smp-agent` binary.

use std::path::PathBuf;

/// True when running as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Call first in every privileged test. Returns `false` (test should return early) when not
/// root outside CI; panics when not root under `CI=true`: in CI a privileged test that cannot
/// run is a failure, never a pass.
#[must_use]
pub fn require_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test}: needs root (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN) and CI=true: failing, not skipping");
    }
    eprintln!("skipping {test}: needs root; run `cargo xtask test` as root");
    false
}

/// Path of the `smp-agent` binary under test: `$SMP_AGENT_BIN` (set by `cargo xtask test`),
/// else `target/<profile>/smp-agent` next to this test binary.
pub fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SMP_AGENT_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-binary> -> target/<profile>/smp-agent
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = profile_dir.join("smp-agent");
    assert!(
        bin.exists(),
        "{} does not exist: build it first (`cargo build -p smp-agent`) or set SMP_AGENT_BIN",
        bin.display()
    );
    bin
}
