//! Per-socket summaries of socket syscall samples, and their change between two snapshots.

use std::collections::BTreeMap;

use serde::Serialize;
use smp_common::sock::SyscallKind;

use super::SocketSample;

/// Counts of one direction (or one syscall) on one socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct IoStats {
    pub calls: u64,
    pub bytes: u64,
    pub errors: u64,
    /// Total time inside the syscalls, nanoseconds.
    pub time_ns: u64,
}

impl IoStats {
    fn add(&mut self, s: &SocketSample) {
        self.calls += s.calls;
        self.bytes += s.bytes;
        self.errors += s.errors;
        self.time_ns += s.ns;
    }

    /// `self - earlier`, saturating (LRU eviction can make a key vanish and reappear).
    pub fn since(&self, earlier: &IoStats) -> IoStats {
        IoStats {
            calls: self.calls.saturating_sub(earlier.calls),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            errors: self.errors.saturating_sub(earlier.errors),
            time_ns: self.time_ns.saturating_sub(earlier.time_ns),
        }
    }

    /// Mean time inside one call, nanoseconds.
    pub fn mean_ns(&self) -> Option<u64> {
        self.time_ns.checked_div(self.calls)
    }

    pub fn is_empty(&self) -> bool {
        self.calls == 0
    }
}

/// One socket of one process: receive side, send side, and per syscall.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SocketSummary {
    pub tgid: u32,
    pub fd: u32,
    pub inode: u64,
    /// read, readv, recvfrom, recvmsg.
    pub recv: IoStats,
    /// write, writev, sendto, sendmsg.
    pub send: IoStats,
    /// Per syscall name.
    pub by_syscall: BTreeMap<&'static str, IoStats>,
}

/// Identity of a socket in a summary table: (tgid, inode, fd).
pub type SocketId = (u32, u64, u32);

/// Groups samples per socket.
pub fn summarize(samples: &[SocketSample]) -> BTreeMap<SocketId, SocketSummary> {
    let mut out: BTreeMap<SocketId, SocketSummary> = BTreeMap::new();
    for s in samples {
        let e = out
            .entry((s.tgid, s.ino, s.fd))
            .or_insert_with(|| SocketSummary {
                tgid: s.tgid,
                fd: s.fd,
                inode: s.ino,
                ..Default::default()
            });
        if s.kind.is_ingress() {
            e.recv.add(s);
        } else {
            e.send.add(s);
        }
        e.by_syscall.entry(s.kind.name()).or_default().add(s);
    }
    out
}

/// The change of every socket between two summaries (sockets idle in between are left out).
pub fn delta(
    now: &BTreeMap<SocketId, SocketSummary>,
    before: &BTreeMap<SocketId, SocketSummary>,
) -> Vec<SocketSummary> {
    let empty = SocketSummary::default();
    now.iter()
        .filter_map(|(id, s)| {
            let b = before.get(id).unwrap_or(&empty);
            let d = SocketSummary {
                tgid: s.tgid,
                fd: s.fd,
                inode: s.inode,
                recv: s.recv.since(&b.recv),
                send: s.send.since(&b.send),
                by_syscall: s
                    .by_syscall
                    .iter()
                    .map(|(k, v)| {
                        (
                            *k,
                            v.since(b.by_syscall.get(k).unwrap_or(&IoStats::default())),
                        )
                    })
                    .filter(|(_, v)| !v.is_empty())
                    .collect(),
            };
            (!d.recv.is_empty() || !d.send.is_empty()).then_some(d)
        })
        .collect()
}

/// Totals over all sockets of a table, per syscall kind.
pub fn totals_by_syscall(samples: &[SocketSample]) -> BTreeMap<SyscallKind, IoStats> {
    let mut out: BTreeMap<SyscallKind, IoStats> = BTreeMap::new();
    for s in samples {
        out.entry(s.kind).or_default().add(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ino: u64, kind: SyscallKind, calls: u64, bytes: u64) -> SocketSample {
        SocketSample {
            tgid: 7,
            fd: 3,
            ino,
            kind,
            calls,
            bytes,
            errors: 0,
            ns: calls * 100,
        }
    }

    #[test]
    fn groups_by_socket_and_direction() {
        let t = summarize(&[
            sample(1, SyscallKind::Read, 2, 20),
            sample(1, SyscallKind::Recvfrom, 1, 5),
            sample(1, SyscallKind::Writev, 4, 400),
            sample(2, SyscallKind::Sendto, 1, 1),
        ]);
        assert_eq!(t.len(), 2);
        let s1 = &t[&(7, 1, 3)];
        assert_eq!((s1.recv.calls, s1.recv.bytes), (3, 25));
        assert_eq!((s1.send.calls, s1.send.bytes), (4, 400));
        assert_eq!(s1.by_syscall["writev"].calls, 4);
        assert_eq!(s1.recv.mean_ns(), Some(100));
    }

    #[test]
    fn delta_drops_idle_sockets_and_saturates() {
        let before = summarize(&[
            sample(1, SyscallKind::Read, 2, 20),
            sample(2, SyscallKind::Write, 5, 50),
        ]);
        let now = summarize(&[
            sample(1, SyscallKind::Read, 5, 80),
            sample(2, SyscallKind::Write, 5, 50),
        ]);
        let d = delta(&now, &before);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].recv.calls, d[0].recv.bytes), (3, 60));
        // An evicted-and-recreated key never yields a negative delta.
        let d = delta(&before, &now);
        assert!(d.is_empty());
    }
}
