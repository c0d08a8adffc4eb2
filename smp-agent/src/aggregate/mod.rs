//! Pure aggregation of probe snapshots (no aya, no kernel): the probes hand over plain
//! [`ProbeSnapshot`]s; this module turns them into per-process CPU and per-socket figures.

use smp_common::hop::HopCounts;
use std::collections::{BTreeMap, HashMap};

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
    /// The thread's `sum_exec_runtime` at its last switch-out (0: unknown).
    pub last_exec: u64,
}

/// A thread that existed when its process began to be tracked, with the scheduler's
/// `sum_exec_runtime` of it then (`/proc/<pid>/task/<tid>/schedstat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadBase {
    pub tgid: u32,
    pub exec_ns: u64,
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
    /// Responses of a write on a plain HTTP/2 downstream the kernel answered without pairing
    /// (more than it pairs per write, or its tail call failed).
    pub h2_answers_lost: u64,
    /// TLS ClientHellos the kernel could not walk for their ALPN offer (its tail call
    /// failed): an HTTP/2-only connection among them is paired by record alternation.
    pub tls_hello_lost: u64,
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
    pub const REASONS: [LossReason; 10] = [
        ("ringbuf_full", |l| l.ringbuf_dropped),
        ("map_full", |l| l.map_insert_failed),
        ("kernel_read_failed", |l| l.kernel_read_failed),
        ("switch_in_missed", |l| l.switch_in_missed),
        ("state_evicted", |l| l.state_evicted),
        ("h2_walk_lost", |l| l.h2_walk_lost),
        ("h2_answers_lost", |l| l.h2_answers_lost),
        ("tls_hello_lost", |l| l.tls_hello_lost),
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
    /// Charges the threads that were on a CPU when tracking began from that moment.
    ///
    /// The scheduler probe charges a stint from the switch-in it saw; a thread already running
    /// when its process began to be tracked has no switch-in, and the probe charges nothing
    /// of that stint (it cannot tell how much came before). A busy thread that is never
    /// preempted (an idle CPU, a pinned poller) would so show no CPU at all. With the
    /// thread's `sum_exec_runtime` at tracking start (`bases`): a thread the probe has seen
    /// leave a CPU is charged `last_exec − base` when that is more than the probe counted (the
    /// stints since are all in `last_exec`); a thread it has not seen at all (neither left
    /// nor entered a CPU since) is charged what the scheduler says now (`exec_now`) minus its
    /// base. Threads born later are charged from birth by the probe already.
    pub fn charge_from_tracking_start(
        &mut self,
        bases: &HashMap<u32, ThreadBase>,
        exec_now: impl Fn(u32, u32) -> Option<u64>,
    ) {
        // The threads the probe has not seen since tracking began are what remains.
        let mut unseen = bases.clone();
        for t in &mut self.threads {
            if let Some(b) = unseen.remove(&t.tid) {
                if b.tgid == t.tgid && t.last_exec != 0 {
                    t.on_cpu_ns = t.on_cpu_ns.max(t.last_exec.saturating_sub(b.exec_ns));
                }
            }
        }
        for r in &self.running {
            unseen.remove(&r.tid);
        }
        for (tid, b) in unseen {
            if let Some(now) = exec_now(b.tgid, tid) {
                let on_cpu_ns = now.saturating_sub(b.exec_ns);
                if on_cpu_ns > 0 {
                    self.threads.push(ThreadCpuSample {
                        tid,
                        tgid: b.tgid,
                        on_cpu_ns,
                        switches: 0,
                        last_exec: 0,
                    });
                }
            }
        }
    }

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
                    last_exec: 0,
                },
                ThreadCpuSample {
                    tid: 12,
                    tgid: 10,
                    on_cpu_ns: 2_000,
                    switches: 4,
                    last_exec: 0,
                },
                ThreadCpuSample {
                    tid: 21,
                    tgid: 20,
                    on_cpu_ns: 500,
                    switches: 1,
                    last_exec: 0,
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

    #[test]
    fn threads_on_a_cpu_when_tracking_began_are_charged_from_then() {
        let base = |tgid, exec_ns| ThreadBase { tgid, exec_ns };
        let bases: HashMap<u32, ThreadBase> = [
            (11, base(10, 5_000)), // on a CPU since before tracking, never left it
            (12, base(10, 7_000)), // on a CPU then, left it once since (the probe charged 0)
            (13, base(10, 9_000)), // asleep then, seen in and out since (charged exactly)
            (14, base(10, 4_000)), // asleep then and since
            (15, base(10, 1_000)), // gone
            (31, base(77, 1_000)), // a tid since reused by another process
        ]
        .into();
        let t = |tid, tgid, on_cpu_ns, last_exec| ThreadCpuSample {
            tid,
            tgid,
            on_cpu_ns,
            switches: 1,
            last_exec,
        };
        let mut snap = ProbeSnapshot {
            threads: vec![
                t(12, 10, 0, 9_500),
                t(13, 10, 300, 9_300),
                t(31, 30, 50, 9_999),
            ],
            ..Default::default()
        };
        let now = |tgid: u32, tid: u32| match (tgid, tid) {
            (10, 11) => Some(8_000),
            (10, 14) => Some(4_000),
            _ => None,
        };
        snap.charge_from_tracking_start(&bases, now);
        let cpu = |tid: u32| {
            snap.threads
                .iter()
                .find(|t| t.tid == tid)
                .map(|t| t.on_cpu_ns)
        };
        assert_eq!(cpu(11), Some(3_000), "the whole time since tracking began");
        assert_eq!(cpu(12), Some(2_500), "its first stint's tracked part too");
        assert_eq!(cpu(13), Some(300), "the probe's own count, exact");
        assert_eq!(cpu(14), None, "no CPU used: nothing to add");
        assert_eq!(
            cpu(31),
            Some(50),
            "another process's thread keeps its count"
        );
        assert_eq!(snap.process_cpu(10).on_cpu_ns, 3_000 + 2_500 + 300);
        // Charged again later: no more than once.
        snap.charge_from_tracking_start(&bases, now);
        assert_eq!(snap.process_cpu(10).on_cpu_ns, 3_000 + 2_500 + 300);
    }
}
