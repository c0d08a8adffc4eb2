//! Network namespaces, veth, external commands and daemonised processes.

use std::{
    fs::File,
    net::{SocketAddr, TcpStream},
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use super::LabError;

/// Runs a command to completion; a failure names the command and carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let cmdline = || format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| LabError::Command {
            cmd: cmdline(),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: cmdline(),
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Names of existing network namespaces (`ip netns list`).
pub fn list() -> Result<Vec<String>, LabError> {
    Ok(run("ip", &["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

/// Whether a named namespace exists.
pub fn exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Pids of processes in a namespace (`ip netns pids`).
pub fn pids(ns: &str) -> Vec<i32> {
    run("ip", &["netns", "pids", ns])
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn open_ns(ns: &str) -> Result<File, LabError> {
    let path = Path::new("/run/netns").join(ns);
    File::open(&path).map_err(|e| LabError::io(format!("open {}", path.display()), e))
}

/// Spawns `program args` daemonised inside `ns`: new session, stdin from /dev/null, stdout and
/// stderr appended to `log`, optionally as `uid`/`gid` (set after entering the namespace).
/// Returns the pid (the proxy itself: no wrapper process).
pub fn spawn(
    ns: &str,
    uid: Option<u32>,
    program: &Path,
    args: &[String],
    log: &Path,
) -> Result<u32, LabError> {
    let nsfile = open_ns(ns)?;
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| LabError::io(format!("open {}", log.display()), e))?;
    let logf2 = logf
        .try_clone()
        .map_err(|e| LabError::io(format!("dup {}", log.display()), e))?;
    let nsfd = nsfile.as_raw_fd();
    let mut cmd = Command::new(program);
    if uid.is_some() {
        // The caller's directory may be closed to the sidecar's uid (a checkout under
        // /root): haproxy, for one, fails when it cannot return to its starting directory.
        cmd.current_dir("/");
    }
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(logf)
        .stderr(logf2)
        .env_remove("SMP_LOG");
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // syscalls (setsid, setns, setgroups, setgid, setuid) on values captured by copy.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setns(nsfd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(uid) = uid {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(uid) != 0
                    || libc::setuid(uid) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| LabError::Command {
        cmd: format!("{} {} (in netns {ns})", program.display(), args.join(" ")),
        reason: e.to_string(),
    })?;
    drop(nsfile);
    Ok(child.id())
}

/// Runs `f` on a fresh thread that has entered `ns` (setns only affects that thread).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LabError> {
    let nsfile = open_ns(ns)?;
    let ns_name = ns.to_string();
    std::thread::spawn(move || {
        // SAFETY: setns on a valid namespace fd affects only this thread.
        if unsafe { libc::setns(nsfile.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(LabError::io(
                format!("setns into {ns_name}"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| {
        LabError::io(
            format!("thread in netns {ns}"),
            std::io::Error::other("panicked"),
        )
    })?
}

/// Waits until `addr` accepts TCP connections inside `ns`, or `pid` dies, or the timeout.
pub fn wait_listening(
    ns: &str,
    addr: SocketAddr,
    pid: u32,
    timeout: Duration,
) -> Result<(), WaitError> {
    let deadline = Instant::now() + timeout;
    loop {
        let ok = in_netns(ns, move || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
        })
        .unwrap_or(false);
        if ok {
            return Ok(());
        }
        reap(pid);
        if !alive(pid) {
            return Err(WaitError::Died);
        }
        if Instant::now() > deadline {
            return Err(WaitError::Timeout);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Why [`wait_listening`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// The process exited.
    Died,
    /// Nothing listened in time.
    Timeout,
}

/// Reaps `pid` if it is our exited child (no-op otherwise).
pub fn reap(pid: u32) {
    let mut status = 0;
    // SAFETY: non-blocking waitpid on a specific pid; ECHILD when not our child is fine.
    unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Process start time (clock ticks since boot, field 22 of /proc/pid/stat): with the pid, it
/// identifies a process across pid reuse.
pub fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit(')').next()?;
    // Fields after "comm)": state is field 3; starttime is field 22 → index 19 here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Sends SIGTERM, waits up to `grace`, then SIGKILL; reaps our own children.
pub fn kill(pid: u32, grace: Duration) {
    // SAFETY: kill(2) with a specific pid > 0.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        reap(pid);
        if !alive(pid) {
            // It may have died between the reap and the check: reap the zombie too.
            reap(pid);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    for _ in 0..100 {
        reap(pid);
        if !alive(pid) {
            reap(pid);
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
