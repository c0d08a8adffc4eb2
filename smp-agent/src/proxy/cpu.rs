//! Proxy CPU figures from per-thread on-CPU time (pure arithmetic).
//!
//! Input: snapshots of per-thread on-CPU nanoseconds (from the scheduler probe, or
//! [`super::procfs::ProcFs::thread_cpu`] as a fallback), the tgid → proxy mapping from
//! discovery ([`super::Discovery::tgid_owners`]), a request count and the wall time.
//! Output: CPU seconds per proxy and per pod, millicores over the run (SMP `cpu_mcores`),
//! CPU-µs per request and vCPU per 1 000 rps.
//!
//! Counters never go backwards: a thread missing from the later snapshot (it exited and its map
//! entry was dropped) keeps its last value (contributes what it had already been seen to use);
//! a thread whose counter went down is a new thread reusing the tid and counts from zero.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use serde::Serialize;

use super::discovery::{ProxyId, ProxyScope};

/// One thread's cumulative on-CPU time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ThreadCpu {
    pub tid: u32,
    pub tgid: u32,
    pub on_cpu_ns: u64,
}

/// On-CPU nanoseconds per tgid used between two snapshots `t0` and `t1`.
pub fn tgid_deltas(t0: &[ThreadCpu], t1: &[ThreadCpu]) -> HashMap<u32, u64> {
    let before: HashMap<u32, &ThreadCpu> = t0.iter().map(|t| (t.tid, t)).collect();
    let mut out: HashMap<u32, u64> = HashMap::new();
    for t in t1 {
        let delta = match before.get(&t.tid) {
            Some(b) if b.tgid == t.tgid && t.on_cpu_ns >= b.on_cpu_ns => t.on_cpu_ns - b.on_cpu_ns,
            // Thread born after t0, or tid reused by another thread: all of it is new.
            _ => t.on_cpu_ns,
        };
        *out.entry(t.tgid).or_default() += delta;
    }
    // Threads only in t0 keep their last value: delta 0 (nothing to add, nothing taken away).
    for t in t0 {
        out.entry(t.tgid).or_default();
    }
    out
}

/// Accumulates successive snapshots into monotonic per-tgid totals, so frequent snapshots keep
/// the CPU of threads that exit between reports.
#[derive(Debug, Clone, Default)]
pub struct CpuAccumulator {
    last: HashMap<u32, ThreadCpu>,
    totals: HashMap<u32, u64>,
}

impl CpuAccumulator {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one snapshot. The first snapshot of a thread sets its baseline (nothing counted),
    /// unless `count_first` is true (the probe started counting when tracking started, so
    /// everything it reports was used while tracked).
    pub fn ingest(&mut self, snapshot: &[ThreadCpu], count_first: bool) {
        for t in snapshot {
            let delta = match self.last.get(&t.tid) {
                Some(p) if p.tgid == t.tgid && t.on_cpu_ns >= p.on_cpu_ns => {
                    t.on_cpu_ns - p.on_cpu_ns
                }
                Some(_) => t.on_cpu_ns,
                None if count_first => t.on_cpu_ns,
                None => 0,
            };
            *self.totals.entry(t.tgid).or_default() += delta;
            self.last.insert(t.tid, *t);
        }
    }

    /// Cumulative on-CPU ns of `tgid` since it was first seen.
    pub fn total_ns(&self, tgid: u32) -> u64 {
        self.totals.get(&tgid).copied().unwrap_or(0)
    }

    /// All per-tgid totals (for [`report`], diff two of them with [`diff_totals`]).
    pub fn totals(&self) -> &HashMap<u32, u64> {
        &self.totals
    }

    /// Drops per-thread state of a tgid that exited (its total stays).
    pub fn forget_threads_of(&mut self, tgid: u32) {
        self.last.retain(|_, t| t.tgid != tgid);
    }
}

/// `later - earlier` per tgid, saturating (totals are monotonic).
pub fn diff_totals(earlier: &HashMap<u32, u64>, later: &HashMap<u32, u64>) -> HashMap<u32, u64> {
    later
        .iter()
        .map(|(tgid, ns)| {
            (
                *tgid,
                ns.saturating_sub(earlier.get(tgid).copied().unwrap_or(0)),
            )
        })
        .collect()
}

/// CPU figures of one proxy (or one pod, or all proxies).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuFigures {
    /// On-CPU seconds over the window.
    pub cpu_seconds: f64,
    /// Average millicores over the window (1000 = one core busy all the time): SMP `cpu_mcores`.
    pub mcores: f64,
    /// Requests this CPU is divided by.
    pub requests: u64,
    /// CPU microseconds per request (`None` without requests).
    pub cpu_us_per_request: Option<f64>,
    /// vCPU needed per 1 000 requests/s: Istio's published sidecar figure (`None` without
    /// requests).
    pub vcpu_per_1k_rps: Option<f64>,
}

impl CpuFigures {
    /// Figures for `ns` nanoseconds of CPU over `wall` with `requests` requests.
    pub fn new(ns: u64, wall: Duration, requests: u64) -> Self {
        let cpu_seconds = ns as f64 / 1e9;
        let wall_s = wall.as_secs_f64();
        let mcores = if wall_s > 0.0 {
            cpu_seconds / wall_s * 1000.0
        } else {
            0.0
        };
        let (per_req, per_1k) = if requests > 0 {
            let per = cpu_seconds / requests as f64;
            // (cpu_s / wall) / (requests / wall) * 1000 = cpu_s / requests * 1000
            (Some(per * 1e6), Some(per * 1000.0))
        } else {
            (None, None)
        };
        Self {
            cpu_seconds,
            mcores,
            requests,
            cpu_us_per_request: per_req,
            vcpu_per_1k_rps: per_1k,
        }
    }

    /// SMP `cpu_mcores` is an int32.
    pub fn mcores_i32(&self) -> i32 {
        self.mcores.round().clamp(0.0, f64::from(i32::MAX)) as i32
    }
}

/// CPU of one proxy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyCpu {
    pub proxy: ProxyId,
    pub pod_uid: Option<String>,
    pub ns: u64,
    pub figures: CpuFigures,
}

/// CPU of all proxies of one pod (`pod_uid: None` groups proxies outside Kubernetes).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodCpu {
    pub pod_uid: Option<String>,
    pub proxies: usize,
    pub ns: u64,
    pub figures: CpuFigures,
}

/// The CPU part of a run's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuReport {
    pub wall_seconds: f64,
    pub proxies: Vec<ProxyCpu>,
    pub pods: Vec<PodCpu>,
    /// All proxies together (SMP `ServiceMeshConfig.sidecar.cpu_mcores`).
    pub total: CpuFigures,
    /// CPU of tgids with no proxy owner (should be 0; not in any figure above).
    pub unattributed_ns: u64,
}

/// Request counts for the per-request figures.
#[derive(Debug, Clone, Default)]
pub struct Requests {
    /// Requests of the whole run (client side, or the sum of hop counts).
    pub total: u64,
    /// Requests each proxy handled (hop counts) when known; otherwise `total` is used.
    pub per_proxy: HashMap<ProxyId, u64>,
}

/// Builds the CPU report from per-tgid on-CPU deltas over `wall`.
pub fn report(
    tgid_ns: &HashMap<u32, u64>,
    owners: &HashMap<u32, ProxyId>,
    requests: &Requests,
    wall: Duration,
) -> CpuReport {
    let mut per_proxy: BTreeMap<&ProxyId, u64> = BTreeMap::new();
    let mut unattributed_ns = 0u64;
    for (tgid, ns) in tgid_ns {
        match owners.get(tgid) {
            Some(id) => *per_proxy.entry(id).or_default() += ns,
            None => unattributed_ns += ns,
        }
    }
    // Proxies known to discovery but idle still appear, with 0.
    for id in owners.values() {
        per_proxy.entry(id).or_default();
    }
    let proxies: Vec<ProxyCpu> = per_proxy
        .iter()
        .map(|(id, ns)| {
            let reqs = requests
                .per_proxy
                .get(*id)
                .copied()
                .unwrap_or(requests.total);
            ProxyCpu {
                proxy: (*id).clone(),
                pod_uid: pod_of(id),
                ns: *ns,
                figures: CpuFigures::new(*ns, wall, reqs),
            }
        })
        .collect();
    let mut pods: BTreeMap<Option<String>, (usize, u64)> = BTreeMap::new();
    for p in &proxies {
        let e = pods.entry(p.pod_uid.clone()).or_default();
        e.0 += 1;
        e.1 += p.ns;
    }
    let pods = pods
        .into_iter()
        .map(|(pod_uid, (n, ns))| PodCpu {
            pod_uid,
            proxies: n,
            ns,
            figures: CpuFigures::new(ns, wall, requests.total),
        })
        .collect();
    let total_ns: u64 = proxies.iter().map(|p| p.ns).sum();
    CpuReport {
        wall_seconds: wall.as_secs_f64(),
        proxies,
        pods,
        total: CpuFigures::new(total_ns, wall, requests.total),
        unattributed_ns,
    }
}

fn pod_of(id: &ProxyId) -> Option<String> {
    match &id.scope {
        ProxyScope::Pod(uid) => Some(uid.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::discovery::ProxyKind;

    fn t(tid: u32, tgid: u32, ns: u64) -> ThreadCpu {
        ThreadCpu {
            tid,
            tgid,
            on_cpu_ns: ns,
        }
    }

    fn id(kind: ProxyKind, pod: Option<&str>) -> ProxyId {
        ProxyId {
            kind,
            scope: match pod {
                Some(p) => ProxyScope::Pod(p.into()),
                None => ProxyScope::Cgroup("/x".into()),
            },
            fingerprint: 1,
        }
    }

    #[test]
    fn deltas_never_go_backwards() {
        let t0 = [t(10, 10, 1_000), t(11, 10, 5_000), t(20, 20, 7_000)];
        // 11 exited (gone), 12 is new, 20 was reused by another process's thread (lower value).
        let t1 = [t(10, 10, 4_000), t(12, 10, 500), t(20, 30, 100)];
        let d = tgid_deltas(&t0, &t1);
        assert_eq!(d[&10], 3_000 + 500);
        assert_eq!(
            d[&20], 0,
            "tgid 20 vanished: keeps its last value, adds nothing"
        );
        assert_eq!(d[&30], 100);
        // A counter that went down for the same tid+tgid (map entry recreated): counts from 0.
        let d = tgid_deltas(&[t(1, 1, 900)], &[t(1, 1, 200)]);
        assert_eq!(d[&1], 200);
    }

    #[test]
    fn accumulator_keeps_exited_threads() {
        let mut acc = CpuAccumulator::new();
        acc.ingest(&[t(10, 10, 100), t(11, 10, 200)], false);
        assert_eq!(acc.total_ns(10), 0, "first sight is the baseline");
        let before = acc.totals().clone();
        acc.ingest(&[t(10, 10, 150), t(11, 10, 260)], false);
        acc.ingest(&[t(10, 10, 170)], false); // 11 exited
        assert_eq!(acc.total_ns(10), 50 + 60 + 20);
        acc.ingest(&[t(10, 10, 170), t(11, 10, 260)], false); // 11 shows up again: no double count
        assert_eq!(acc.total_ns(10), 130);
        assert_eq!(diff_totals(&before, acc.totals())[&10], 130);
        let mut fresh = CpuAccumulator::new();
        fresh.ingest(&[t(1, 1, 42)], true);
        assert_eq!(fresh.total_ns(1), 42);
        fresh.forget_threads_of(1);
        assert_eq!(fresh.total_ns(1), 42, "totals survive forgetting threads");
    }

    #[test]
    fn figures_arithmetic() {
        // 2 s of CPU over 10 s wall = 200 mcores; 4 000 requests → 500 µs/request,
        // 400 rps → 0.2 cores per 400 rps = 0.5 vCPU per 1 000 rps.
        let f = CpuFigures::new(2_000_000_000, Duration::from_secs(10), 4_000);
        assert!((f.cpu_seconds - 2.0).abs() < 1e-12);
        assert!((f.mcores - 200.0).abs() < 1e-9);
        assert_eq!(f.mcores_i32(), 200);
        assert!((f.cpu_us_per_request.unwrap() - 500.0).abs() < 1e-9);
        assert!((f.vcpu_per_1k_rps.unwrap() - 0.5).abs() < 1e-12);
        let none = CpuFigures::new(5, Duration::ZERO, 0);
        assert_eq!(
            (none.mcores, none.cpu_us_per_request, none.vcpu_per_1k_rps),
            (0.0, None, None)
        );
    }

    #[test]
    fn report_per_proxy_and_pod() {
        let pod = "1c2a3b4d-5e6f-4a1b-9c8d-0123456789ab";
        let envoy = id(ProxyKind::Envoy, Some(pod));
        let nginx = id(ProxyKind::Nginx, Some(pod));
        let host = id(ProxyKind::Haproxy, None);
        let idle = ProxyId {
            fingerprint: 2,
            ..host.clone()
        };
        let owners: HashMap<u32, ProxyId> = [
            (100, envoy.clone()),
            (200, nginx.clone()),
            (201, nginx.clone()),
            (300, host.clone()),
            (400, idle.clone()),
        ]
        .into();
        let ns: HashMap<u32, u64> = [
            (100, 1_000_000_000),
            (200, 250_000_000),
            (201, 250_000_000),
            (300, 500_000_000),
            (999, 7),
        ]
        .into();
        let reqs = Requests {
            total: 1_000,
            per_proxy: [(nginx.clone(), 500)].into(),
        };
        let r = report(&ns, &owners, &reqs, Duration::from_secs(2));
        assert_eq!(r.unattributed_ns, 7);
        assert_eq!(r.proxies.len(), 4);
        let get = |id: &ProxyId| r.proxies.iter().find(|p| &p.proxy == id).unwrap();
        assert!((get(&envoy).figures.mcores - 500.0).abs() < 1e-9);
        assert!((get(&envoy).figures.cpu_us_per_request.unwrap() - 1_000.0).abs() < 1e-9);
        assert!(
            (get(&nginx).figures.cpu_us_per_request.unwrap() - 1_000.0).abs() < 1e-9,
            "per-proxy hop count used"
        );
        assert_eq!(get(&idle).ns, 0);
        let in_pod = r
            .pods
            .iter()
            .find(|p| p.pod_uid.as_deref() == Some(pod))
            .unwrap();
        assert_eq!((in_pod.proxies, in_pod.ns), (2, 1_500_000_000));
        let off_pod = r.pods.iter().find(|p| p.pod_uid.is_none()).unwrap();
        assert_eq!((off_pod.proxies, off_pod.ns), (2, 500_000_000));
        assert!((r.total.cpu_seconds - 2.0).abs() < 1e-12);
        assert_eq!(r.total.mcores_i32(), 1_000);
    }
}
