//! Pure aggregation of probe snapshots (no aya, no kernel): the probes hand over plain
//! [`ProbeSnapshot`]s; this module turns them into per-process CPU and per-socket figures.

use smp_common::hop::HopCounts;
use std::collections::BTreeMap;

use serde::Serialize;
use smp_common::sock::SyscallKind;

pub mod hops;
pub mod path;
pub mod sockets;

/// On-CPU time of one thread, as the scheduler probe accounted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadCpuSample {
    pub tid: u32,
    pub tgid: u32,
    pub on_cpu_ns: u64,
    pub switches: u64,
}

/// A tracked thread on a CPU right now, since `since_ns` (CLOCK_MONOTONIC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningSample {
    pub tid: u32,
    pub tgid: u32,
    pub since_ns: u64,
}

/// Socket syscall accounting of one (process, socket, syscall kind), summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketSample {
    pub tgid: u32,
    pub fd: u32,
    pub ino: u64,
    pub kind: SyscallKind,
    pub calls: u64,
    pub bytes: u64,
    pub errors: u64,
    pub ns: u64,
}

/// The probes' own loss and failure counters (docs/design.md, rule 5: loss is data).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LossCounters {
    pub ringbuf_dropped: u64,
    pub map_insert_failed: u64,
    pub kernel_read_failed: u64,
    pub switch_in_missed: u64,
    /// Data on a socket whose pairing state the kernel's LRU had evicted.
    pub state_evicted: u64,
    /// Reads or writes of plain HTTP/2 connections whose frames the kernel's walk could not
    /// all follow: the streams that started in the rest of that data were not seen.
    pub h2_walk_lost: u64,
    /// Ring-buffer records the agent could not decode (counted in userspace).
    pub undecodable: u64,
    /// Runs of the agent's programs the kernel skipped: a program already running on that
    /// CPU (it was preempted, on a kernel whose hooks run preemptible) is not run again
    /// (`recursion_misses` of `bpf_prog_info`, summed over the programs; kernels 5.12+).
    pub program_skipped: u64,
}

/// A `reason` label value and the [`LossCounters`] field it reads.
pub type LossReason = (&'static str, fn(&LossCounters) -> u64);

impl LossCounters {
    /// Every loss: the `reason` label of `smp_events_lost_total` (docs/metrics.md) and the
    /// field it reads. The one table every output (metrics, top) derives its reasons from.
    pub const REASONS: [LossReason; 8] = [
        ("ringbuf_full", |l| l.ringbuf_dropped),
        ("map_full", |l| l.map_insert_failed),
        ("kernel_read_failed", |l| l.kernel_read_failed),
        ("switch_in_missed", |l| l.switch_in_missed),
        ("state_evicted", |l| l.state_evicted),
        ("h2_walk_lost", |l| l.h2_walk_lost),
        ("undecodable", |l| l.undecodable),
        ("program_skipped", |l| l.program_skipped),
    ];

    /// Data lost (every reason but `switch_in_missed`, which is recovered).
    pub fn lost(&self) -> u64 {
        Self::REASONS
            .iter()
            .filter(|(r, _)| *r != "switch_in_missed")
            .map(|(_, f)| f(self))
            .sum()
    }

    /// `reason=count` for every non-zero reason, for a one-line display.
    pub fn text(&self) -> String {
        Self::REASONS
            .iter()
            .filter(|(_, f)| f(self) > 0)
            .map(|(r, f)| format!("{r}={}", f(self)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Everything the probes know at one instant.
#[derive(Debug, Clone, Default)]
pub struct ProbeSnapshot {
    /// CLOCK_MONOTONIC when the snapshot was taken (the clock of `bpf_ktime_get_ns`).
    pub now_ns: u64,
    pub threads: Vec<ThreadCpuSample>,
    pub running: Vec<RunningSample>,
    pub sockets: Vec<SocketSample>,
    pub loss: LossCounters,
    /// Hop pairing counters per process.
    pub pairing: BTreeMap<u32, HopCounts>,
}

/// On-CPU figures of one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProcessCpu {
    /// Total on-CPU time of all its threads, including the stints still running.
    pub on_cpu_ns: u64,
    /// Threads seen on a CPU.
    pub threads: u32,
    /// Context switches away from a CPU.
    pub switches: u64,
}

impl ProbeSnapshot {
    /// On-CPU time per process: completed stints plus the stints running at `now_ns`.
    pub fn cpu_by_process(&self) -> BTreeMap<u32, ProcessCpu> {
        let mut out: BTreeMap<u32, ProcessCpu> = BTreeMap::new();
        for t in &self.threads {
            let p = out.entry(t.tgid).or_default();
            p.on_cpu_ns += t.on_cpu_ns;
            p.threads += 1;
            p.switches += t.switches;
        }
        for r in &self.running {
            let p = out.entry(r.tgid).or_default();
            p.on_cpu_ns += self.now_ns.saturating_sub(r.since_ns);
            if !self.threads.iter().any(|t| t.tid == r.tid) {
                p.threads += 1;
            }
        }
        out
    }

    /// On-CPU figures of a group of processes (a proxy's master and workers), summed.
    pub fn group_cpu(&self, tgids: &[u32]) -> ProcessCpu {
        let all = self.cpu_by_process();
        let mut out = ProcessCpu::default();
        for c in tgids.iter().filter_map(|t| all.get(t)) {
            out.on_cpu_ns += c.on_cpu_ns;
            out.threads += c.threads;
            out.switches += c.switches;
        }
        out
    }

    /// Pairing counters of a group of processes, summed.
    pub fn group_pairing(&self, tgids: &[u32]) -> HopCounts {
        let mut out = HopCounts::default();
        for c in tgids.iter().filter_map(|t| self.pairing.get(t)) {
            out.add(c);
        }
        out
    }

    /// On-CPU figures of one process (zero if never seen on a CPU).
    pub fn process_cpu(&self, tgid: u32) -> ProcessCpu {
        self.cpu_by_process().remove(&tgid).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_sums_threads_and_running_stints() {
        let snap = ProbeSnapshot {
            now_ns: 10_000,
            threads: vec![
                ThreadCpuSample {
                    tid: 11,
                    tgid: 10,
                    on_cpu_ns: 1_000,
                    switches: 3,
                },
                ThreadCpuSample {
                    tid: 12,
                    tgid: 10,
                    on_cpu_ns: 2_000,
                    switches: 4,
                },
                ThreadCpuSample {
                    tid: 21,
                    tgid: 20,
                    on_cpu_ns: 500,
                    switches: 1,
                },
            ],
            running: vec![
                RunningSample {
                    tid: 12,
                    tgid: 10,
                    since_ns: 9_000,
                },
                RunningSample {
                    tid: 13,
                    tgid: 10,
                    since_ns: 9_500,
                },
            ],
            ..Default::default()
        };
        let p = snap.process_cpu(10);
        assert_eq!(p.on_cpu_ns, 1_000 + 2_000 + 1_000 + 500);
        assert_eq!(p.threads, 3);
        assert_eq!(p.switches, 7);
        assert_eq!(snap.process_cpu(20).on_cpu_ns, 500);
        assert_eq!(snap.process_cpu(99), ProcessCpu::default());
    }
}
