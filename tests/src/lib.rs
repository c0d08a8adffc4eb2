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

/// A child process driven line by line over stdin/stdout (the `tests/src/bin` workloads).
pub struct Workload {
    pub child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Workload {
    /// Spawns `bin args…` and returns it with its first line (e.g. `ready …`).
    pub fn spawn(bin: &str, args: &[&str]) -> (Workload, String) {
        let mut child = std::process::Command::new(bin)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("failed to spawn {bin}: {e}"));
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut w = Workload {
            child,
            stdin,
            stdout,
        };
        let first = w.line();
        (w, first)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads one line of the workload's stdout.
    pub fn line(&mut self) -> String {
        use std::io::BufRead as _;
        let mut s = String::new();
        self.stdout.read_line(&mut s).expect("read workload stdout");
        s.trim().to_string()
    }

    /// Sends the go line.
    pub fn go(&mut self) {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin
            .write_all(b"go\n")
            .and_then(|_| stdin.flush())
            .expect("write go");
    }

    /// Closes stdin (the workload exits) and reaps it.
    pub fn finish(mut self) {
        self.stdin.take();
        let _ = self.child.wait();
    }
}

/// utime + stime of a process in nanoseconds, from `/proc/<pid>/stat` (clock-tick resolution).
pub fn proc_cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    let after_comm = stat.rsplit_once(')').expect("stat format").1;
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields after the comm start at field 3 (state): utime is field 14, stime 15.
    let utime: u64 = f[11].parse().expect("utime");
    let stime: u64 = f[12].parse().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    (utime + stime) * 1_000_000_000 / hz
}

/// Socket inode of `fd` in process `pid` (`/proc/<pid>/fd/<fd>` → `socket:[ino]`).
pub fn socket_inode(pid: u32, fd: i32) -> u64 {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).expect("readlink fd");
    let s = link.to_string_lossy();
    s.strip_prefix("socket:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("fd {fd} of {pid} is not a socket: {s}"))
}

/// Ids of the loaded eBPF programs whose name starts with `smp_` (ours), from the kernel's
/// list of every loaded program.
pub fn loaded_smp_programs() -> Vec<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("smp_")))
        .map(|p| p.id())
        .collect()
}
