//! Facts about the host read from procfs/sysfs: kernel release, capabilities, processes, sockets;
//! and what waking a task on an idle CPU costs here ([`wake`]).
//! Plain reads, no eBPF; the probes and the CLI use them to explain what they find.

use serde::Serialize;

pub mod addresses;
pub mod sockets;
pub mod wake;

/// Capabilities the agent needs or may use (bit numbers from `linux/capability.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Capability {
    SysAdmin = 21,
    NetAdmin = 12,
    SysResource = 24,
    Perfmon = 38,
    Bpf = 39,
}

impl Capability {
    /// The capability's name as capsh and man pages write it.
    pub const fn name(self) -> &'static str {
        match self {
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::SysResource => "CAP_SYS_RESOURCE",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::Bpf => "CAP_BPF",
        }
    }
}

/// Effective capabilities of this process (`CapEff` in `/proc/self/status`).
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0)
}

/// Parses the `CapEff:` line of a `/proc/<pid>/status` text.
pub fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Whether `caps` grants `cap`.
pub fn has_cap(caps: u64, cap: Capability) -> bool {
    caps & (1u64 << cap as u32) != 0
}

/// The capabilities that loading the probes needs and `caps` lacks. CAP_SYS_ADMIN stands in
/// for both CAP_BPF and CAP_PERFMON (kernels before 5.8 know only it).
pub fn missing_probe_caps(caps: u64) -> Vec<Capability> {
    if has_cap(caps, Capability::SysAdmin) {
        return Vec::new();
    }
    [Capability::Bpf, Capability::Perfmon]
        .into_iter()
        .filter(|c| !has_cap(caps, *c))
        .collect()
}

/// `uname -r`, from `/proc/sys/kernel/osrelease`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// A short description of a process, for messages and outputs.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub comm: String,
    pub threads: usize,
}

/// Errors looking up a process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("no process with pid {pid} (it does not exist or already exited)")]
    NotFound { pid: u32 },
    #[error("pid {pid} is a thread of process {tgid}, not a process; use --pid {tgid}")]
    IsThread { pid: u32, tgid: u32 },
    #[error("cannot read /proc/{pid}")]
    Unreadable {
        pid: u32,
        #[source]
        source: std::io::Error,
    },
}

/// Looks up a process by pid.
pub fn process_info(pid: u32) -> Result<ProcessInfo, ProcessError> {
    let dir = format!("/proc/{pid}");
    let status = std::fs::read_to_string(format!("{dir}/status")).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ProcessError::NotFound { pid }
        } else {
            ProcessError::Unreadable { pid, source }
        }
    })?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
    };
    let tgid: u32 = field("Tgid:").and_then(|v| v.parse().ok()).unwrap_or(pid);
    if tgid != pid {
        return Err(ProcessError::IsThread { pid, tgid });
    }
    Ok(ProcessInfo {
        pid,
        comm: field("Name:").unwrap_or_default(),
        threads: field("Threads:").and_then(|v| v.parse().ok()).unwrap_or(0),
    })
}

/// `pid` and all its descendant processes (nginx master + workers, haproxy master-worker),
/// sorted; threads are not listed (their tgid is in the list).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let p = out[i];
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.flatten() {
                let children =
                    std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                out.extend(
                    children
                        .split_whitespace()
                        .filter_map(|c| c.parse::<u32>().ok()),
                );
            }
        }
        i += 1;
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// True while `/proc/<pid>` exists and is not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the parenthesised comm, which may contain spaces.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

/// Clock `clock` (`libc::CLOCK_*`) now, in nanoseconds (0 if the clock cannot be read).
pub fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return 0;
    }
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of the kernel programs' timestamps
/// (`bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff_and_names_missing_caps() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(root).unwrap();
        assert!(has_cap(caps, Capability::Bpf) && has_cap(caps, Capability::Perfmon));
        assert!(missing_probe_caps(caps).is_empty());
        let none = parse_cap_eff("CapEff:\t0000000000000000\n").unwrap();
        assert_eq!(
            missing_probe_caps(none),
            vec![Capability::Bpf, Capability::Perfmon]
        );
        let only_bpf = 1u64 << 39;
        assert_eq!(missing_probe_caps(only_bpf), vec![Capability::Perfmon]);
        let sys_admin = 1u64 << 21;
        assert!(missing_probe_caps(sys_admin).is_empty());
    }

    #[test]
    fn process_lookup_errors_are_clear() {
        let me = std::process::id();
        assert_eq!(process_info(me).unwrap().pid, me);
        let e = process_info(u32::MAX - 1).unwrap_err().to_string();
        assert!(e.contains("no process with pid"), "{e}");
        assert!(process_alive(me));
        let child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = process_tree(me);
        assert!(tree.contains(&me) && tree.contains(&child.id()), "{tree:?}");
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        assert!(!process_alive(u32::MAX - 1));
    }
}
