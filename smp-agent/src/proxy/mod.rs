//! Sidecar proxies: discovery, Kubernetes attribution, CPU, memory and perf-event figures.
//!
//! Pure userspace, no aya: the probe layer feeds [`discovery::ProcEvent`]s and per-thread CPU
//! snapshots ([`cpu::ThreadCpu`]) in; plain types come out. See docs/discovery.md.
//!
//! * [`kind`]: the proxy kinds the agent knows (names, recognition, display): one place.
//! * [`discovery`]: `classify` (pure) and the live [`Discovery`] state machine.
//! * [`procfs`]: the procfs [`discovery::ProcSource`] and thread listing.
//! * [`cgroup`]: cgroup path → pod UID, container ID, QoS.
//! * [`cpu`]: on-CPU snapshots → CPU seconds, millicores, CPU-µs/request, vCPU per 1 000 rps.
//! * [`memory`]: RSS/PSS sampling → mean and peak MB.
//! * [`perf`]: perf_event_open counters (task-clock, context switches, cycles, instructions).
//! * [`kube`]: optional pod UID → namespace/name from the API server (in-cluster).

pub mod cgroup;
pub mod cpu;
pub mod discovery;
pub mod kind;
pub mod kube;
pub mod memory;
pub mod perf;
pub mod procfs;

pub use cgroup::{CgroupAttribution, ContainerRuntime, QosClass};
pub use discovery::{
    classify, Discovery, DiscoveryConfig, ProcEvent, ProcessSnapshot, ProxyChange, ProxyId,
    ProxyKind, ProxyMatch, TrackedProxy,
};
pub use procfs::ProcFs;

/// Reading one process from procfs failed. `Gone` and `PermissionDenied` are normal on a live
/// node (processes exit; other users' processes are private): callers skip and count them.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The process exited (or never existed).
    #[error("process {pid} is gone")]
    Gone { pid: u32 },
    /// Not allowed to read it (needs CAP_SYS_PTRACE or the same uid).
    #[error("no permission to read process {pid}")]
    PermissionDenied { pid: u32 },
    /// A procfs file had an unexpected shape.
    #[error("cannot parse {file} of process {pid}: {reason}")]
    Parse {
        pid: u32,
        file: &'static str,
        reason: &'static str,
    },
    /// Any other I/O error.
    #[error("cannot read {file} of process {pid}")]
    Io {
        pid: u32,
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// Listing `/proc` itself failed.
    #[error("cannot list processes in {root}")]
    List {
        root: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ProcError {
    /// Maps an I/O error on `file` of `pid` to `Gone` / `PermissionDenied` / `Io`.
    pub fn from_io(pid: u32, file: &'static str, e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::NotFound => Self::Gone { pid },
            std::io::ErrorKind::PermissionDenied => Self::PermissionDenied { pid },
            // ESRCH: the task died while the file was open.
            _ if e.raw_os_error() == Some(libc::ESRCH) => Self::Gone { pid },
            _ => Self::Io {
                pid,
                file,
                source: e,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use super::ProcError;

    #[test]
    fn io_errors_map_to_skippable_kinds() {
        let gone = ProcError::from_io(7, "stat", Error::from(ErrorKind::NotFound));
        assert!(matches!(gone, ProcError::Gone { pid: 7 }));
        let esrch = ProcError::from_io(7, "cmdline", Error::from_raw_os_error(libc::ESRCH));
        assert!(matches!(esrch, ProcError::Gone { pid: 7 }));
        let denied = ProcError::from_io(8, "exe", Error::from(ErrorKind::PermissionDenied));
        assert_eq!(denied.to_string(), "no permission to read process 8");
        let other = ProcError::from_io(9, "cgroup", Error::from_raw_os_error(libc::EIO));
        assert!(matches!(
            other,
            ProcError::Io {
                pid: 9,
                file: "cgroup",
                ..
            }
        ));
        assert_eq!(other.to_string(), "cannot read cgroup of process 9");
    }
}
