//! A node proxy's figures per workload it serves (Istio ambient's ztunnel: one proxy for every
//! pod of the node): hops, exchanges, CPU and memory per (proxy, direction, pod served, peer),
//! kept for the exposition ([`super::NodeMetrics`]). Rows are bounded; what does not fit is
//! counted.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;

use super::buckets::BucketCounts;
use crate::{aggregate::hops::Direction, proxy::ProxyId};

/// Rows exported at most (each is 2 histograms and 2 counters: 58 series).
pub const MAX_WORKLOAD_ROWS: usize = 128;

/// A workload by its address, and its pod when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRef {
    pub address: IpAddr,
    /// The pod's name (API server), else its UID (cgroup), else its network namespace's name;
    /// empty when unknown.
    pub pod: String,
    /// The pod's Kubernetes namespace; empty when unknown.
    pub namespace: String,
}

impl WorkloadRef {
    /// A workload known by its address only.
    pub fn address(address: IpAddr) -> Self {
        Self {
            address,
            pod: String::new(),
            namespace: String::new(),
        }
    }
}

/// One node proxy's exchanges for one (direction, workload, peer) since the previous update.
#[derive(Debug, Clone)]
pub struct WorkloadSample {
    pub proxy: ProxyId,
    pub direction: Direction,
    /// The pod served: the one that sent the request (outbound) or that it was for (inbound).
    pub served: WorkloadRef,
    /// The pod at the other end.
    pub peer: WorkloadRef,
    pub exchanges: u64,
    /// Request and response hops, nanoseconds.
    pub request: Histogram<u64>,
    pub response: Histogram<u64>,
    /// Connections the exchanges went through (distinct downstream and upstream pairs).
    pub connections: u64,
}

/// Exchanges the tracker kept out of its per-workload rows, cumulative.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkloadDrops {
    /// Beyond the tracker's rows of one interval.
    pub row_limit: u64,
    /// A node proxy's exchanges from before it served a second pod.
    pub before_second_pod: u64,
}

/// Exported state of one row.
#[derive(Debug, Clone)]
pub(super) struct WorkloadState {
    pub served: WorkloadRef,
    pub peer: WorkloadRef,
    pub exchanges: u64,
    pub request: BucketCounts,
    pub response: BucketCounts,
    /// The proxy's CPU apportioned to this row by its share of the proxy's exchanges in each
    /// interval, cumulative.
    pub cpu_seconds: f64,
    /// The row's share of the connections of the proxy's exchanges in the last interval the
    /// proxy had any (0 for a row without exchanges then): the share of the proxy's resident
    /// memory apportioned to it.
    pub memory_share: f64,
    last_seen: Instant,
}

/// Key of a row: proxy, direction, served address, peer address.
pub(super) type RowKey = (ProxyId, Direction, IpAddr, IpAddr);

/// Every exported row, and what was left out.
#[derive(Debug, Clone, Default)]
pub(super) struct WorkloadBook {
    pub rows: BTreeMap<RowKey, WorkloadState>,
    /// The tracker's drops (the larger of what it said: counters never go down).
    pub tracker: WorkloadDrops,
    /// Exchanges not exported: beyond [`MAX_WORKLOAD_ROWS`], or their proxy is not exported.
    pub series_limit: u64,
}

/// The `reason` values of `smp_workload_exchanges_dropped_total`.
pub(super) const DROP_REASONS: [&str; 3] = ["row_limit", "before_second_pod", "series_limit"];

impl WorkloadBook {
    /// Exchanges left out, by [`DROP_REASONS`].
    pub fn drops(&self) -> [(&'static str, u64); 3] {
        let [a, b, c] = DROP_REASONS;
        [
            (a, self.tracker.row_limit),
            (b, self.tracker.before_second_pod),
            (c, self.series_limit),
        ]
    }

    /// Adds one interval's samples. `cpu_gain` gives each exported proxy's CPU seconds gained
    /// in the interval (`None`: the proxy is not exported); it is apportioned over the
    /// proxy's samples by exchanges. The proxy's memory shares follow its samples'
    /// connections.
    pub fn update(
        &mut self,
        samples: &[WorkloadSample],
        drops: WorkloadDrops,
        cpu_gain: impl Fn(&ProxyId) -> Option<f64>,
        now: Instant,
    ) {
        self.tracker.row_limit = self.tracker.row_limit.max(drops.row_limit);
        self.tracker.before_second_pod =
            self.tracker.before_second_pod.max(drops.before_second_pod);
        // Per proxy: (exchanges, connections) of the interval.
        let mut totals: HashMap<&ProxyId, (u64, u64)> = HashMap::new();
        for s in samples {
            let t = totals.entry(&s.proxy).or_default();
            t.0 += s.exchanges;
            t.1 += s.connections;
        }
        // A proxy's rows without exchanges in this interval hold none of its connections.
        for ((p, ..), row) in self.rows.iter_mut() {
            if totals.contains_key(p) {
                row.memory_share = 0.0;
            }
        }
        for s in samples {
            let Some(gain) = cpu_gain(&s.proxy) else {
                self.series_limit += s.exchanges;
                continue;
            };
            let key = (
                s.proxy.clone(),
                s.direction,
                s.served.address,
                s.peer.address,
            );
            if !self.rows.contains_key(&key) && self.rows.len() >= MAX_WORKLOAD_ROWS {
                self.series_limit += s.exchanges;
                continue;
            }
            let (total, connections) = totals.get(&s.proxy).copied().unwrap_or_default();
            let row = self.rows.entry(key).or_insert_with(|| WorkloadState {
                served: s.served.clone(),
                peer: s.peer.clone(),
                exchanges: 0,
                request: BucketCounts::default(),
                response: BucketCounts::default(),
                cpu_seconds: 0.0,
                memory_share: 0.0,
                last_seen: now,
            });
            // A pod name found later names the row from then on; a name once known stays
            // (a later scan may miss a pod whose processes are gone).
            for (mine, new) in [(&mut row.served, &s.served), (&mut row.peer, &s.peer)] {
                if !new.pod.is_empty() {
                    mine.clone_from(new);
                }
            }
            row.exchanges += s.exchanges;
            row.request.add_hdr(&s.request);
            row.response.add_hdr(&s.response);
            row.cpu_seconds += gain.max(0.0) * s.exchanges as f64 / total.max(1) as f64;
            row.memory_share += s.connections as f64 / connections.max(1) as f64;
            row.last_seen = now;
        }
    }

    /// Drops rows of proxies no longer exported, and rows idle for `forget_after` (a pod
    /// gone, its address perhaps another pod's later).
    pub fn forget(
        &mut self,
        exported: impl Fn(&ProxyId) -> bool,
        forget_after: Duration,
        now: Instant,
    ) {
        self.rows.retain(|(p, ..), r| {
            exported(p) && now.saturating_duration_since(r.last_seen) <= forget_after
        });
    }
}
