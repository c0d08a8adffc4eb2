//! The procfs side of discovery: read [`ProcessSnapshot`]s, list threads, and (as a fallback
//! for the scheduler probe) per-thread on-CPU time from `schedstat`.
//!
//! Every read can fail because the process exits mid-read or belongs to another user; those
//! come back as [`ProcError::Gone`] / [`ProcError::PermissionDenied`] for the caller to skip.

use std::{
    fs,
    path::{Path, PathBuf},
};

use super::{
    cpu::ThreadCpu,
    discovery::{ProcSource, ProcessSnapshot},
    ProcError,
};

/// procfs mounted at `root` (normally `/proc`; a host's `/proc` mounted elsewhere in a
/// container, e.g. `/host/proc`, works too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcFs {
    root: PathBuf,
}

impl Default for ProcFs {
    fn default() -> Self {
        Self::new("/proc")
    }
}

/// The fields of `/proc/<pid>/stat` discovery uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatFields {
    pub comm: String,
    pub state: char,
    pub ppid: u32,
    /// Field 22, clock ticks since boot.
    pub start_time: u64,
}

/// The inode in a namespace link's target (`net:[4026531840]`).
pub fn parse_ns_link(target: &str) -> Option<u64> {
    target.split_once(":[")?.1.strip_suffix(']')?.parse().ok()
}

/// Parses `/proc/<pid>/stat`. The comm sits in parentheses and may itself contain spaces and
/// parentheses, so it ends at the *last* `)`.
pub fn parse_stat(text: &str) -> Option<StatFields> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = text[open + 1..close].to_string();
    // After ")": state(3) ppid(4) ... starttime(22) → index 0 is field 3.
    let rest: Vec<&str> = text[close + 1..].split_whitespace().collect();
    let state = rest.first()?.chars().next()?;
    let ppid = rest.get(1)?.parse().ok()?;
    let start_time = rest.get(22 - 3)?.parse().ok()?;
    Some(StatFields {
        comm,
        state,
        ppid,
        start_time,
    })
}

impl ProcFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, pid: u32, file: &str) -> PathBuf {
        self.root.join(pid.to_string()).join(file)
    }

    fn read(&self, pid: u32, file: &'static str) -> Result<String, ProcError> {
        let bytes = fs::read(self.path(pid, file)).map_err(|e| ProcError::from_io(pid, file, e))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `/proc/<pid>/stat`, parsed.
    pub fn stat(&self, pid: u32) -> Result<StatFields, ProcError> {
        let text = self.read(pid, "stat")?;
        parse_stat(&text).ok_or(ProcError::Parse {
            pid,
            file: "stat",
            reason: "unexpected layout",
        })
    }

    /// The inode of `pid`'s network namespace (`/proc/<pid>/ns/net` → `net:[<inode>]`).
    pub fn netns(&self, pid: u32) -> Option<u64> {
        let target = fs::read_link(self.path(pid, "ns/net")).ok()?;
        parse_ns_link(target.to_str()?)
    }

    /// `pid`'s network namespace when it is not pid 1's (the host's, for an agent that sees
    /// the host's processes): a pod's, or one made with `ip netns`.
    pub fn own_netns(&self, pid: u32) -> Option<u64> {
        let ns = self.netns(pid)?;
        (self.netns(1) != Some(ns)).then_some(ns)
    }

    /// `/proc/<pid>/cgroup` as text.
    pub fn cgroup(&self, pid: u32) -> Result<String, ProcError> {
        self.read(pid, "cgroup")
    }

    /// Thread ids of `pid` (`/proc/<pid>/task`).
    pub fn threads(&self, pid: u32) -> Result<Vec<u32>, ProcError> {
        let dir = self.path(pid, "task");
        let entries = fs::read_dir(&dir).map_err(|e| ProcError::from_io(pid, "task", e))?;
        let mut tids: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        tids.sort_unstable();
        Ok(tids)
    }

    /// On-CPU nanoseconds of every thread of `pid`, from `/proc/<pid>/task/<tid>/schedstat`
    /// (first field: time spent on the CPU, ns). A fallback/cross-check for the scheduler probe;
    /// threads that exit mid-read are skipped.
    pub fn thread_cpu(&self, pid: u32) -> Result<Vec<ThreadCpu>, ProcError> {
        let mut out = Vec::new();
        for tid in self.threads(pid)? {
            let path = self
                .root
                .join(pid.to_string())
                .join("task")
                .join(tid.to_string())
                .join("schedstat");
            let Ok(text) = fs::read_to_string(path) else {
                continue;
            };
            if let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse().ok()) {
                out.push(ThreadCpu {
                    tid,
                    tgid: pid,
                    on_cpu_ns: ns,
                });
            }
        }
        Ok(out)
    }
}

impl ProcSource for ProcFs {
    fn pids(&mut self) -> Result<Vec<u32>, ProcError> {
        let entries = fs::read_dir(&self.root).map_err(|source| ProcError::List {
            root: self.root.clone(),
            source,
        })?;
        let mut pids: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        pids.sort_unstable();
        Ok(pids)
    }

    fn snapshot(&mut self, pid: u32, full: bool) -> Result<ProcessSnapshot, ProcError> {
        let stat = self.stat(pid)?;
        if stat.state == 'Z' || stat.state == 'X' {
            // A zombie has exited; only its parent has not reaped it yet.
            return Err(ProcError::Gone { pid });
        }
        // exe: ENOENT for kernel threads, EACCES for other users' processes without
        // CAP_SYS_PTRACE. Either way discovery falls back to comm.
        let exe = fs::read_link(self.path(pid, "exe")).ok();
        let mut snap = ProcessSnapshot {
            pid,
            ppid: stat.ppid,
            comm: stat.comm,
            exe,
            cmdline: Vec::new(),
            cgroup: String::new(),
            start_time: stat.start_time,
            netns: None,
        };
        if full {
            let raw = self.read(pid, "cmdline")?;
            snap.cmdline = raw
                .split('\0')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            snap.cgroup = self.cgroup(pid)?;
            snap.netns = self.own_netns(pid);
        }
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let text = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 987654 1000 10 18446744073709551615\n";
        let s = parse_stat(text).unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.start_time, 987_654);
        assert!(parse_stat("").is_none());
        assert!(parse_stat("12 (x) S").is_none());
        assert!(parse_stat("12 )x( S 1").is_none());
    }

    #[test]
    fn namespace_links() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(4_026_531_840));
        assert_eq!(parse_ns_link("net:[]"), None);
        assert_eq!(parse_ns_link("net:4026531840"), None);
        assert_eq!(parse_ns_link("net:[12"), None);
        let fs = ProcFs::default();
        assert!(fs.netns(std::process::id()).is_some());
    }

    #[test]
    fn reads_self() {
        let mut fs = ProcFs::default();
        let me = std::process::id();
        let s = fs.snapshot(me, true).unwrap();
        assert_eq!(s.pid, me);
        assert!(s.exe.is_some());
        assert!(!s.cmdline.is_empty());
        assert!(!s.cgroup.is_empty());
        assert!(fs.pids().unwrap().contains(&me));
        let threads = fs.threads(me).unwrap();
        assert!(threads.contains(&me));
        let cpu = fs.thread_cpu(me).unwrap();
        assert!(cpu.iter().any(|t| t.tid == me && t.on_cpu_ns > 0));
    }

    #[test]
    fn missing_pid_is_gone() {
        let mut fs = ProcFs::default();
        // pid_max is at most 2^22.
        let err = fs.snapshot(4_194_304 + 7, true).unwrap_err();
        assert!(matches!(err, ProcError::Gone { .. }), "{err:?}");
        let mut bad = ProcFs::new("/nonexistent-proc");
        assert!(matches!(bad.pids(), Err(ProcError::List { .. })));
    }
}
