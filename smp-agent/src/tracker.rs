//! Live tracking of sidecars: probes + discovery + per-proxy attribution, the engine behind
//! `top --name`, `profile` and `daemon`.
//!
//! A [`Tracker`] loads the probes, finds the proxies ([`crate::proxy::Discovery`]) and keeps
//! their probe tracking in step with what discovery decides: exec/fork/exit events from the
//! kernel are applied as they arrive, a procfs rescan runs every `rescan_every` as the safety
//! net. Figures are kept per proxy *identity* ([`ProxyId`]), not per pid, so a proxy that
//! restarts continues its CPU, request and hop counters.
//!
//! Everything it hands out ([`TrackerView`]) is plain data: callers never see aya.

use smp_common::hop::HopCounts;
use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::{
    aggregate::{
        hops::{self, Direction, Exchange, Leg, Sides},
        path::{self, PartsAt, PathCounts, PathJoiner, Peer, RttEstimates},
        LossCounters,
    },
    probes::{EventReader, ProbeError, ProbeEvent, Probes},
    proxy::{
        cpu::CpuFigures,
        discovery::DiscoveryStats,
        memory::{MemorySampler, MemorySummary},
        perf::{PerfReading, ProxyPerf},
        CgroupAttribution, Discovery, DiscoveryConfig, ProcEvent, ProcFs, ProxyChange, ProxyId,
    },
};

/// Responses waiting for their `SendDone` at most (a bound, never reached in practice: the
/// event follows its exchange within microseconds).
const MAX_PENDING_SENDS: usize = 65_536;
/// Rows of the per-workload book ([`WorkloadHops`]): (proxy, direction, served pod, peer)
/// combinations kept; exchanges of further ones are counted, not kept.
const MAX_WORKLOAD_ROWS: usize = 256;
/// Connections a per-workload row tells apart at most ([`WorkloadHops::connections`]).
pub const MAX_ROW_CONNECTIONS: usize = 4096;

/// Longest time a kernel event waits in the ring buffer before the tracker reads it.
pub const EVENT_BATCH_PERIOD: Duration = Duration::from_millis(10);

/// How a [`Tracker`] finds proxies and how often it does its chores.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    pub discovery: DiscoveryConfig,
    /// procfs rescan period (the safety net under the exec/exit events).
    pub rescan_every: Duration,
    /// Probe snapshot + memory sample period.
    pub sample_every: Duration,
    /// Read PSS too (smaps_rollup: costs more than RSS).
    pub with_pss: bool,
    /// Which exchanges to book per pod served as well ([`TrackerView::workloads`]): a hash
    /// lookup and two histogram records per exchange, for a consumer that shows them.
    pub per_workload: PerWorkload,
}

/// Which proxies' exchanges the per-workload book holds ([`TrackerConfig::per_workload`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerWorkload {
    /// None.
    Off,
    /// Every proxy's (a window's report picks the node proxies among them).
    All,
    /// Only node proxies': a proxy is one from its exchange for a second pod on. A sidecar
    /// serves one pod, whose rows would repeat its hops; a node proxy's exchanges before its
    /// second pod are counted ([`TrackerView::workload_unbooked`]), not booked.
    NodeProxies,
}

/// The pods a proxy has served so far, as far as [`PerWorkload::NodeProxies`] needs them.
#[derive(Debug, Clone, Copy)]
enum Served {
    /// One pod, and the exchanges for it not booked.
    One(std::net::IpAddr, u64),
    /// More than one: a node proxy.
    Many,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            discovery: DiscoveryConfig::default(),
            rescan_every: Duration::from_secs(2),
            sample_every: Duration::from_secs(1),
            with_pss: false,
            per_workload: PerWorkload::All,
        }
    }
}

/// Key of a per-proxy hop histogram.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProxyHopKey {
    pub proxy: ProxyId,
    pub direction: Direction,
    pub leg: Leg,
}

/// What a proxy did for one workload it served, toward one peer ([`hops::workloads`]): a
/// node proxy's hops, split by pod. Histograms in nanoseconds (2 significant digits: a row
/// per pod pair, not per proxy).
#[derive(Debug, Clone)]
pub struct WorkloadHops {
    pub proxy: ProxyId,
    pub direction: Direction,
    /// Address of the pod served.
    pub served: std::net::IpAddr,
    /// Address of the pod at the other end.
    pub peer: std::net::IpAddr,
    pub exchanges: u64,
    pub request: Histogram<u64>,
    pub response: Histogram<u64>,
    /// Connections its exchanges went through: distinct (downstream, upstream) pairs, at
    /// most [`MAX_ROW_CONNECTIONS`]. The basis on which a node proxy's memory is
    /// apportioned to the workloads it serves: a proxy holds buffers per connection, not per
    /// request.
    pub connections: u64,
}

/// A [`WorkloadHops`] row in the making (keyed by proxy index).
#[derive(Debug, Clone)]
struct WorkloadRow {
    exchanges: u64,
    request: Histogram<u64>,
    response: Histogram<u64>,
    /// Hashes of the (downstream, upstream) endpoints of its exchanges.
    connections: std::collections::HashSet<u64>,
}

impl WorkloadRow {
    fn new() -> Self {
        let h =
            || Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("constant bounds are valid");
        Self {
            exchanges: 0,
            request: h(),
            response: h(),
            connections: std::collections::HashSet::new(),
        }
    }

    /// Books exchange `x`.
    fn record(&mut self, x: &Exchange) {
        use std::hash::{Hash, Hasher};
        self.exchanges += 1;
        self.request.saturating_record(x.request_hop_ns().max(1));
        self.response.saturating_record(x.response_hop_ns().max(1));
        if self.connections.len() < MAX_ROW_CONNECTIONS {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                x.downstream.local,
                x.downstream.remote,
                x.upstream.local,
                x.upstream.remote,
            )
                .hash(&mut h);
            self.connections.insert(h.finish());
        }
    }

    fn hops(
        &self,
        proxy: ProxyId,
        direction: Direction,
        served: std::net::IpAddr,
        peer: std::net::IpAddr,
    ) -> WorkloadHops {
        WorkloadHops {
            proxy,
            direction,
            served,
            peer,
            exchanges: self.exchanges,
            request: self.request.clone(),
            response: self.response.clone(),
            connections: self.connections.len() as u64,
        }
    }
}

/// One proxy as the tracker sees it: identity, processes and cumulative figures since it was
/// first found.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyView {
    /// Stable identity (survives restarts), e.g. `envoy@cgroup:/…#1a2b3c4d`.
    pub id: String,
    #[serde(skip)]
    pub proxy: ProxyId,
    pub kind: String,
    pub attribution: CgroupAttribution,
    /// Leader pid while one is alive.
    pub leader: Option<u32>,
    /// Live processes (leader and workers).
    pub pids: Vec<u32>,
    /// Every pid that was ever part of this proxy, in the order they were found.
    pub pids_seen: Vec<u32>,
    /// Times a new leader took over after the old processes were gone.
    pub restarts: u32,
    /// On-CPU time of all its processes, nanoseconds, cumulative.
    pub cpu_ns: u64,
    /// Hop pairing counters summed over its processes, cumulative.
    pub pairing: HopCounts,
    /// Bytes its socket reads returned, cumulative.
    pub received_bytes: u64,
    /// Bytes its socket writes sent, cumulative.
    pub sent_bytes: u64,
    /// Resident memory of its live processes at the last sample, bytes.
    pub rss_bytes: u64,
    /// Memory over the samples taken so far.
    pub memory: Option<MemorySummary>,
    /// perf_event counters of its processes since they were found (task-clock, context
    /// switches; cycles and instructions where the PMU exposes them, else absent with the
    /// reason). `None` before the first sample.
    pub perf: Option<PerfReading>,
}

/// The requests' paths through two proxies of this node ([`Tracker::paths`]).
#[derive(Debug, Clone, Default)]
pub struct PathView {
    /// Network leg per (source proxy, destination proxy, leg), ns.
    pub legs: BTreeMap<(ProxyId, ProxyId, Leg), Histogram<u64>>,
    /// Each part's distribution over the outbound → inbound paths, ns.
    pub parts: BTreeMap<path::Part, Histogram<u64>>,
    /// TCP's round-trip estimates of each proxy's upstream connections, by where the peer is.
    pub estimates: BTreeMap<(ProxyId, Peer), RttEstimates>,
    /// The breakdown at the quantiles asked for (none without a complete path).
    pub at: Vec<PartsAt>,
    pub counts: PathCounts,
}

/// Everything the tracker knows at one instant (plain data).
#[derive(Debug, Clone, Default)]
pub struct TrackerView {
    /// Time since the tracker started.
    pub elapsed: Duration,
    pub proxies: Vec<ProxyView>,
    /// Hop histograms (nanoseconds) per (proxy, direction, leg), cumulative since the start (or
    /// the last [`Tracker::reset_window`] or [`Tracker::take_hops`]).
    pub hops: BTreeMap<ProxyHopKey, Histogram<u64>>,
    /// How long messages waited in the proxy's socket before it read them (ns), same keys.
    pub waits: BTreeMap<ProxyHopKey, Histogram<u64>>,
    /// Time inside the write that forwarded them (ns), same keys.
    pub sends: BTreeMap<ProxyHopKey, Histogram<u64>>,
    /// Exchanges per (proxy, direction) by what their sides spoke, since the start (or the
    /// last [`Tracker::reset_window`]; [`Tracker::take_hops`] leaves them).
    pub sides: BTreeMap<(ProxyId, Direction), BTreeMap<Sides, u64>>,
    /// Hops per workload served and peer, for every proxy whose exchanges name pods (same
    /// window as `sides`).
    pub workloads: Vec<WorkloadHops>,
    /// Exchanges left out of `workloads`: beyond its row limit (cumulative).
    pub workload_overflow: u64,
    /// Exchanges of a node proxy from before its second pod, left out of `workloads` under
    /// [`PerWorkload::NodeProxies`] (cumulative).
    pub workload_unbooked: u64,
    /// Probe losses (ring buffer, map inserts, kernel reads, evicted state, undecodable
    /// records).
    pub loss: LossCounters,
    /// Exchanges of processes discovery had not attributed (normally 0).
    pub unattributed_exchanges: u64,
    /// How the exchanges facing a peer were joined into paths, since the start (or the last
    /// [`Tracker::reset_window`]).
    pub paths: PathCounts,
    /// Exchanges whose request the proxy read before the window began, and whose records
    /// arrived after it began (the warm-up's last ones): kept out of the histograms.
    pub before_window_exchanges: u64,
    pub discovery: DiscoveryStats,
    /// Changes applied since the start (or the last [`Tracker::take_changes`]), with when.
    pub changes: Vec<(Duration, ProxyChange)>,
}

impl TrackerView {
    /// The per-workload rows of one proxy.
    pub fn workloads_of<'a>(
        &'a self,
        proxy: &'a ProxyId,
    ) -> impl Iterator<Item = &'a WorkloadHops> + 'a {
        self.workloads.iter().filter(move |w| &w.proxy == proxy)
    }

    /// The proxy with this identity string.
    pub fn proxy(&self, id: &str) -> Option<&ProxyView> {
        self.proxies.iter().find(|p| p.id == id)
    }

    /// Wait histogram of one hop, if any arrival was seen.
    pub fn wait_of(
        &self,
        proxy: &ProxyId,
        direction: Direction,
        leg: Leg,
    ) -> Option<&Histogram<u64>> {
        self.waits.get(&ProxyHopKey {
            proxy: proxy.clone(),
            direction,
            leg,
        })
    }

    /// Send histogram of one hop (time inside the forwarding write), if measured.
    pub fn send_of(
        &self,
        proxy: &ProxyId,
        direction: Direction,
        leg: Leg,
    ) -> Option<&Histogram<u64>> {
        self.sends.get(&ProxyHopKey {
            proxy: proxy.clone(),
            direction,
            leg,
        })
    }

    /// What the exchanges of one proxy's hops in `direction` spoke on their two sides.
    pub fn sides_of(&self, proxy: &ProxyId, direction: Direction) -> Option<&BTreeMap<Sides, u64>> {
        self.sides.get(&(proxy.clone(), direction))
    }

    /// Hop histograms of one proxy, by (direction, leg).
    pub fn hops_of<'a>(
        &'a self,
        proxy: &'a ProxyId,
    ) -> impl Iterator<Item = (Direction, Leg, &'a Histogram<u64>)> + 'a {
        self.hops
            .iter()
            .filter(move |(k, _)| &k.proxy == proxy)
            .map(|(k, h)| (k.direction, k.leg, h))
    }
}

/// Per-tgid figures that only go up (a process's last values stay after it exits).
#[derive(Debug, Clone, Copy, Default)]
struct TgidTotals {
    cpu_ns: u64,
    pairing: HopCounts,
    received_bytes: u64,
    sent_bytes: u64,
}

/// Key of one entry of the probes' per-socket accounting: (tgid, fd, inode, syscall kind).
type SockKey = (u32, u32, u64, u32);

/// Socket bytes per tgid gained since the previous call. The probes account bytes per
/// (process, socket, syscall) in an LRU map, whose entries go away when evicted: `last` holds
/// each entry's value at the previous call (entries that vanished are dropped from it, so it
/// never outgrows the map); an entry that is new or smaller than before (evicted and created
/// again) counts in full. Returns tgid → (received, sent).
fn socket_gains(
    last: &mut HashMap<SockKey, u64>,
    samples: &[crate::aggregate::SocketSample],
) -> HashMap<u32, (u64, u64)> {
    let mut gains: HashMap<u32, (u64, u64)> = HashMap::new();
    let mut now = HashMap::with_capacity(samples.len());
    for s in samples {
        let key = (s.tgid, s.fd, s.ino, s.kind as u32);
        let before = last.get(&key).copied().unwrap_or(0);
        let gain = if s.bytes >= before {
            s.bytes - before
        } else {
            s.bytes
        };
        if gain > 0 {
            let g = gains.entry(s.tgid).or_default();
            if s.kind.is_ingress() {
                g.0 += gain;
            } else {
                g.1 += gain;
            }
        }
        now.insert(key, s.bytes);
    }
    *last = now;
    gains
}

/// A hop of one proxy: (index into the tracker's `proxy_ids`, direction, leg). No `ProxyId`
/// clone or string comparison per exchange.
type HopSlot = (usize, Direction, Leg);

/// What a hop histogram measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Measure {
    /// The hop's latency through the proxy.
    Hop,
    /// How long the message waited in the proxy's socket before it read it.
    Wait,
    /// Time inside the write that forwarded it.
    Send,
}

/// The hop histograms of every proxy, by [`HopSlot`] and [`Measure`] (nanoseconds), and
/// what its exchanges' sides spoke.
#[derive(Debug, Default)]
struct HopBook {
    hops: HashMap<HopSlot, Histogram<u64>>,
    waits: HashMap<HopSlot, Histogram<u64>>,
    sends: HashMap<HopSlot, Histogram<u64>>,
    /// Exchanges per (proxy, direction) and [`Sides`] (at most 9 per proxy and direction).
    sides: HashMap<(usize, Direction), BTreeMap<Sides, u64>>,
    /// Hops per (proxy, direction, pod served, peer pod); at most [`MAX_WORKLOAD_ROWS`].
    workloads: HashMap<(usize, Direction, std::net::IpAddr, std::net::IpAddr), WorkloadRow>,
    /// Exchanges beyond the row limit.
    workload_overflow: u64,
    /// Pods each proxy served ([`PerWorkload::NodeProxies`]).
    served: HashMap<usize, Served>,
    /// Exchanges of node proxies from before their second pod.
    workload_unbooked: u64,
}

impl HopBook {
    /// Whether proxy `idx`, seen serving `served`, has served more than one pod: from that
    /// exchange on. The exchanges before are counted in `workload_unbooked`.
    fn node_proxy(&mut self, idx: usize, served: std::net::IpAddr) -> bool {
        let s = self.served.entry(idx).or_insert(Served::One(served, 0));
        match s {
            Served::Many => true,
            Served::One(first, n) if *first == served => {
                *n += 1;
                false
            }
            Served::One(_, n) => {
                self.workload_unbooked += *n;
                *s = Served::Many;
                true
            }
        }
    }

    /// Records `ns` (values beyond the histogram's range are clamped, not lost).
    fn record(&mut self, m: Measure, slot: HopSlot, ns: u64) {
        let map = match m {
            Measure::Hop => &mut self.hops,
            Measure::Wait => &mut self.waits,
            Measure::Send => &mut self.sends,
        };
        map.entry(slot)
            .or_insert_with(hops::new_histogram)
            .saturating_record(ns);
    }
}

/// The live engine (see the module docs).
pub struct Tracker {
    cfg: TrackerConfig,
    probes: Probes,
    events: EventReader,
    discovery: Discovery<ProcFs>,
    procfs: ProcFs,
    started: Instant,
    next_rescan: Instant,
    next_sample: Instant,
    tgid: HashMap<u32, TgidTotals>,
    /// Per-socket byte counts at the last sample ([`socket_gains`]).
    sock_last: HashMap<SockKey, u64>,
    /// Pids per proxy in the order found (for the view).
    seen: BTreeMap<ProxyId, Vec<u32>>,
    /// Hop, wait and send histograms.
    book: HopBook,
    /// Responses whose forwarding write has not returned yet: (tid, resp_out_ns) → hop, and
    /// how many responses that write forwards (one HTTP/2 write may carry several).
    pending_sends: HashMap<(u32, u64), (usize, Direction, u32)>,
    /// Exchanges of two proxies on this node joined into a request's path.
    paths: PathJoiner,
    proxy_ids: Vec<ProxyId>,
    /// tgid → index into `proxy_ids` (every tgid ever attributed).
    tgid_proxy: HashMap<u32, usize>,
    memory: MemorySampler,
    /// perf_event counters per proxy (index into `proxy_ids`); exited processes stay in the
    /// sum so it never goes backwards.
    perf: HashMap<usize, ProxyPerf>,
    perf_last: HashMap<usize, PerfReading>,
    rss: HashMap<ProxyId, u64>,
    loss: LossCounters,
    unattributed_exchanges: u64,
    /// Kernel time (CLOCK_MONOTONIC ns) the window began ([`Tracker::reset_window`]): an
    /// exchange whose request the proxy read earlier belongs to the time before it, even when
    /// its response is forwarded (or its record read: records are drained every 100 ms)
    /// after. By the request, as the client counts a request in the part it was sent in: a
    /// warm-up request slow to complete is not one of the measured ones.
    window_from_ns: u64,
    /// Exchanges read after the window began that belong before it (not in the histograms).
    before_window_exchanges: u64,
    changes: Vec<(Duration, ProxyChange)>,
}

/// Why the tracker stopped.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error("failed to load the probes")]
    Load(#[source] Box<ProbeError>),
    #[error(transparent)]
    Probe(Box<ProbeError>),
    #[error("probe loading task failed")]
    Join(#[from] tokio::task::JoinError),
}

impl From<ProbeError> for TrackerError {
    fn from(e: ProbeError) -> Self {
        Self::Probe(Box::new(e))
    }
}

impl Tracker {
    /// Loads the probes (a few seconds: the verifier), runs a first discovery pass and starts
    /// tracking what it found.
    pub async fn start(cfg: TrackerConfig) -> Result<Self, TrackerError> {
        let mut probes = tokio::task::spawn_blocking(Probes::load)
            .await?
            .map_err(|e| TrackerError::Load(Box::new(e)))?;
        let events = probes.events()?;
        let now = Instant::now();
        let mut t = Tracker {
            discovery: Discovery::new(cfg.discovery.clone(), ProcFs::default()),
            procfs: ProcFs::default(),
            probes,
            events,
            started: now,
            next_rescan: now + cfg.rescan_every,
            next_sample: now,
            tgid: HashMap::new(),
            sock_last: HashMap::new(),
            seen: BTreeMap::new(),
            book: HopBook::default(),
            pending_sends: HashMap::new(),
            paths: PathJoiner::default(),
            proxy_ids: Vec::new(),
            tgid_proxy: HashMap::new(),
            memory: MemorySampler::new(),
            perf: HashMap::new(),
            perf_last: HashMap::new(),
            rss: HashMap::new(),
            loss: LossCounters::default(),
            unattributed_exchanges: 0,
            window_from_ns: 0,
            before_window_exchanges: 0,
            changes: Vec::new(),
            cfg,
        };
        let changes = t.discovery.rescan();
        t.apply(changes);
        t.sample()?;
        Ok(t)
    }

    /// Processes kernel events and does the periodic chores until `until`. Cancel-safe: it
    /// may be dropped at any await (e.g. in a `select!` with Ctrl-C) without losing events.
    pub async fn pump_until(&mut self, until: Instant) -> Result<(), TrackerError> {
        loop {
            let now = Instant::now();
            if now >= self.next_sample {
                self.sample()?;
                self.next_sample = now + self.cfg.sample_every;
            }
            if now >= self.next_rescan {
                let changes = self.discovery.rescan();
                self.apply(changes);
                self.next_rescan = now + self.cfg.rescan_every;
            }
            if now >= until {
                return Ok(());
            }
            // Exec'd processes whose command line is not readable yet are retried soon.
            let retry = self
                .discovery
                .has_pending()
                .then(|| now + Duration::from_millis(50));
            let wake = [
                Some(until),
                Some(self.next_sample),
                Some(self.next_rescan),
                retry,
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(until);
            tokio::select! {
                batch = self.events.next_batch() => {
                    for e in batch? {
                        self.handle(e);
                    }
                    // Read the ring buffer in batches: under load a wake-up per exchange
                    // would cost more than the exchanges. Events wait at most this long.
                    tokio::time::sleep(EVENT_BATCH_PERIOD.min(wake.saturating_duration_since(Instant::now()))).await;
                }
                _ = tokio::time::sleep_until(wake) => {
                    if self.discovery.has_pending() {
                        let changes = self.discovery.retry_pending();
                        self.apply(changes);
                    }
                }
            }
        }
    }

    fn handle(&mut self, e: ProbeEvent) {
        let event = match e {
            ProbeEvent::Exchange(x) => {
                self.record(&x);
                return;
            }
            ProbeEvent::SendDone {
                tid,
                out_ns,
                sent_ns,
                ..
            } => {
                self.paths.sent(tid, out_ns, sent_ns);
                if let Some((idx, direction, n)) = self.pending_sends.remove(&(tid, out_ns)) {
                    for _ in 0..n {
                        self.book.record(
                            Measure::Send,
                            (idx, direction, Leg::Response),
                            sent_ns.saturating_sub(out_ns).max(1),
                        );
                    }
                }
                return;
            }
            ProbeEvent::ProcessExit { tgid, .. } => ProcEvent::Exit { pid: tgid },
            ProbeEvent::ProcessExec { tgid, .. } => ProcEvent::Exec { pid: tgid },
            ProbeEvent::ProcessFork {
                parent_tgid,
                child_tgid,
                ..
            } => ProcEvent::Fork {
                parent: parent_tgid,
                pid: child_tgid,
            },
        };
        let changes = self.discovery.handle_event(event);
        self.apply(changes);
    }

    fn record(&mut self, x: &Exchange) {
        let Some(&idx) = self.tgid_proxy.get(&x.tgid) else {
            self.unattributed_exchanges += 1;
            return;
        };
        if x.req_in_ns < self.window_from_ns {
            self.before_window_exchanges += 1;
            return;
        }
        let direction = hops::direction(x);
        *self
            .book
            .sides
            .entry((idx, direction))
            .or_default()
            .entry(x.sides())
            .or_default() += 1;
        for (leg, ns, wait) in [
            (Leg::Request, x.request_hop_ns(), x.request_wait_ns()),
            (Leg::Response, x.response_hop_ns(), x.response_wait_ns()),
        ] {
            self.book
                .record(Measure::Hop, (idx, direction, leg), ns.max(1));
            // 0: the arrival was not seen (not TCP, or it arrived before tracking began).
            if wait > 0 {
                self.book.record(Measure::Wait, (idx, direction, leg), wait);
            }
        }
        let workload = match self.cfg.per_workload {
            PerWorkload::Off => None,
            mode => hops::workloads(x, direction).filter(|(served, _)| {
                mode == PerWorkload::All || self.book.node_proxy(idx, *served)
            }),
        };
        if let Some((served, peer)) = workload {
            let key = (idx, direction, served, peer);
            let book = &mut self.book;
            if book.workloads.len() < MAX_WORKLOAD_ROWS || book.workloads.contains_key(&key) {
                book.workloads
                    .entry(key)
                    .or_insert_with(WorkloadRow::new)
                    .record(x);
            } else {
                book.workload_overflow += 1;
            }
        }
        let send = x.request_send_ns();
        if send > 0 {
            self.book
                .record(Measure::Send, (idx, direction, Leg::Request), send);
        }
        // The response's forwarding write returns after this record was emitted.
        if self.pending_sends.len() >= MAX_PENDING_SENDS {
            self.pending_sends.clear();
        }
        self.pending_sends
            .entry((x.tid, x.resp_out_ns))
            .or_insert((idx, direction, 0))
            .2 += 1;
        self.paths.exchange(idx, direction, x);
    }

    /// Applies discovery's decisions to the probes' target set.
    fn apply(&mut self, changes: Vec<ProxyChange>) {
        let elapsed = self.started.elapsed();
        let added: Vec<u32> = changes
            .iter()
            .filter_map(|c| match c {
                ProxyChange::Added { tgid, .. } => Some(*tgid),
                ProxyChange::Removed { .. } => None,
            })
            .collect();
        for c in changes {
            match &c {
                ProxyChange::Added { proxy, tgid, .. } => {
                    let idx = match self.proxy_ids.iter().position(|p| p == proxy) {
                        Some(i) => i,
                        None => {
                            self.proxy_ids.push(proxy.clone());
                            self.proxy_ids.len() - 1
                        }
                    };
                    self.tgid_proxy.insert(*tgid, idx);
                    if let Err(e) = self
                        .perf
                        .entry(idx)
                        .or_default()
                        .add_process(&self.procfs, *tgid)
                    {
                        tracing::debug!(pid = tgid, error = %e, "no perf counters");
                    }
                    if let Err(e) = self.probes.track(*tgid) {
                        tracing::warn!(pid = tgid, error = %e, "cannot track process");
                    }
                    let seen = self.seen.entry(proxy.clone()).or_default();
                    if !seen.contains(tgid) {
                        seen.push(*tgid);
                    }
                    tracing::debug!(proxy = %proxy, pid = tgid, "tracking");
                }
                ProxyChange::Removed { proxy, tgid } => {
                    if let Err(e) = self.probes.untrack(*tgid) {
                        tracing::warn!(pid = tgid, error = %e, "cannot untrack process");
                    }
                    tracing::debug!(proxy = %proxy, pid = tgid, "process gone");
                }
            }
            self.changes.push((elapsed, c));
        }
        // Processes a new proxy process forked before it was tracked (nginx starts its workers
        // at once; fork events only come for tracked parents): look at its children now that
        // it is tracked, so a fork from here on sends its event.
        for parent in added {
            for pid in crate::host::process_tree(parent) {
                if pid == parent || self.discovery.proxy_of(pid).is_some() {
                    continue;
                }
                let more = self.discovery.handle_event(ProcEvent::Fork { parent, pid });
                self.apply(more);
            }
        }
    }

    /// Reads the probe maps and samples memory: per-tgid totals only ever go up.
    pub fn sample(&mut self) -> Result<(), TrackerError> {
        let snap = self.probes.snapshot()?;
        let cpu = snap.cpu_by_process();
        let bytes = socket_gains(&mut self.sock_last, &snap.sockets);
        for tgid in self.discovery.tgid_owners().keys() {
            let t = self.tgid.entry(*tgid).or_default();
            if let Some((received, sent)) = bytes.get(tgid) {
                t.received_bytes += received;
                t.sent_bytes += sent;
            }
            if let Some(c) = cpu.get(tgid) {
                t.cpu_ns = t.cpu_ns.max(c.on_cpu_ns);
            }
            if let Some(p) = snap.pairing.get(tgid) {
                if p.requests >= t.pairing.requests {
                    t.pairing = *p;
                }
            }
        }
        self.loss = snap.loss;
        self.rss.clear();
        for p in self.discovery.proxies().filter(|p| !p.tgids.is_empty()) {
            let m = self
                .procfs
                .proxy_memory(p.tgids.iter().copied(), self.cfg.with_pss);
            self.rss.insert(p.id.clone(), m.rss_bytes);
            self.memory.record(&p.id, m);
        }
        for (idx, perf) in &mut self.perf {
            self.perf_last.insert(*idx, perf.read());
        }
        Ok(())
    }

    /// Forgets hop histograms, memory samples and the change log (CPU and pairing totals
    /// stay cumulative; take differences of two views for a window). For a measurement window
    /// that starts now.
    ///
    /// Exchanges whose request was read before `from_ns` (CLOCK_MONOTONIC, e.g.
    /// [`crate::host::monotonic_ns`] when the measured part began) are not recorded, even
    /// those completed or read later (they are counted in
    /// [`TrackerView::before_window_exchanges`]).
    pub fn reset_window(&mut self, from_ns: u64) {
        self.window_from_ns = from_ns;
        self.book = HopBook::default();
        self.pending_sends.clear();
        self.paths = PathJoiner::default();
        self.memory = MemorySampler::new();
    }

    /// Hands over the hop histograms recorded since the start or the previous call, and starts
    /// new ones: for a consumer that wants new observations only (the daemon adds them to its
    /// Prometheus histograms each interval). Afterwards [`Tracker::view`] shows only hops
    /// recorded since this call. Nothing is lost or counted twice: every exchange is in exactly
    /// one handed-over set. The histograms are large (≈ 220 KB each, dense HdrHistograms), so
    /// taking them also keeps the daemon from holding a second cumulative copy to diff against.
    pub fn take_hops(&mut self) -> BTreeMap<ProxyHopKey, Histogram<u64>> {
        std::mem::take(&mut self.book.hops)
            .into_iter()
            .map(|(k, h)| (self.hop_key(&k), h))
            .collect()
    }

    /// Hands over the network legs joined since the start or the previous call (as
    /// [`Tracker::take_hops`] does for hops): (source proxy, destination proxy, leg) → ns.
    pub fn take_legs(&mut self) -> BTreeMap<(ProxyId, ProxyId, Leg), Histogram<u64>> {
        std::mem::take(&mut self.paths.legs)
            .into_iter()
            .map(|((a, b, leg), h)| {
                (
                    (self.proxy_ids[a].clone(), self.proxy_ids[b].clone(), leg),
                    h,
                )
            })
            .collect()
    }

    /// Hands over the per-workload rows booked since the start or the previous call (as
    /// [`Tracker::take_hops`] does for hops); their row limit then starts again.
    pub fn take_workloads(&mut self) -> Vec<WorkloadHops> {
        std::mem::take(&mut self.book.workloads)
            .into_iter()
            .map(|((idx, direction, served, peer), r)| {
                r.hops(self.proxy_ids[idx].clone(), direction, served, peer)
            })
            .collect()
    }

    /// Hands over TCP's round-trip estimates recorded since the start or the previous call
    /// (as [`Tracker::take_legs`]).
    pub fn take_estimates(&mut self) -> BTreeMap<(ProxyId, Peer), RttEstimates> {
        std::mem::take(&mut self.paths.estimates)
            .into_iter()
            .map(|((a, peer), e)| ((self.proxy_ids[a].clone(), peer), e))
            .collect()
    }

    /// The paths joined in this window, at its end: the network legs, each part's
    /// distribution, and the breakdown at `quantiles` of the paths' total time in the mesh.
    /// Paths still waiting for their response send are counted as `send_unseen`.
    pub fn paths(&mut self, quantiles: &[f64]) -> PathView {
        self.paths.finish();
        let p = &self.paths;
        PathView {
            legs: p
                .legs
                .iter()
                .map(|((a, b, leg), h)| {
                    (
                        (self.proxy_ids[*a].clone(), self.proxy_ids[*b].clone(), *leg),
                        h.clone(),
                    )
                })
                .collect(),
            parts: p.parts.clone(),
            estimates: p
                .estimates
                .iter()
                .map(|((a, peer), e)| ((self.proxy_ids[*a].clone(), *peer), e.clone()))
                .collect(),
            at: quantiles
                .iter()
                .filter_map(|q| path::parts_at(&p.samples, *q))
                .collect(),
            counts: p.counts,
        }
    }

    fn hop_key(&self, (idx, direction, leg): &HopSlot) -> ProxyHopKey {
        ProxyHopKey {
            proxy: self.proxy_ids[*idx].clone(),
            direction: *direction,
            leg: *leg,
        }
    }

    fn keyed(&self, m: &HashMap<HopSlot, Histogram<u64>>) -> BTreeMap<ProxyHopKey, Histogram<u64>> {
        m.iter()
            .map(|(k, h)| (self.hop_key(k), h.clone()))
            .collect()
    }

    /// Hands over the change log (processes that started and stopped being tracked, with
    /// when) and starts a new one. A long-running consumer (the daemon) calls it every interval
    /// so the log, which [`Tracker::view`] copies, does not grow with process churn.
    pub fn take_changes(&mut self) -> Vec<(Duration, ProxyChange)> {
        std::mem::take(&mut self.changes)
    }

    /// The current figures.
    pub fn view(&self) -> TrackerView {
        let owners = self.discovery.tgid_owners();
        let mut proxies = Vec::new();
        for p in self.discovery.proxies() {
            let mut cpu_ns = 0;
            let mut pairing = HopCounts::default();
            let (mut received_bytes, mut sent_bytes) = (0, 0);
            for (tgid, owner) in owners {
                if owner == &p.id {
                    if let Some(t) = self.tgid.get(tgid) {
                        cpu_ns += t.cpu_ns;
                        pairing.add(&t.pairing);
                        received_bytes += t.received_bytes;
                        sent_bytes += t.sent_bytes;
                    }
                }
            }
            proxies.push(ProxyView {
                id: p.id.to_string(),
                proxy: p.id.clone(),
                kind: p.kind.to_string(),
                attribution: p.attribution.clone(),
                leader: p.leader,
                pids: p.tgids.iter().copied().collect(),
                pids_seen: self.seen.get(&p.id).cloned().unwrap_or_default(),
                restarts: p.restarts,
                cpu_ns,
                pairing,
                received_bytes,
                sent_bytes,
                rss_bytes: self.rss.get(&p.id).copied().unwrap_or(0),
                memory: self.memory.summary(&p.id),
                perf: self
                    .proxy_ids
                    .iter()
                    .position(|id| id == &p.id)
                    .and_then(|i| self.perf_last.get(&i))
                    .cloned(),
            });
        }
        TrackerView {
            elapsed: self.started.elapsed(),
            proxies,
            hops: self.keyed(&self.book.hops),
            waits: self.keyed(&self.book.waits),
            sends: self.keyed(&self.book.sends),
            sides: self
                .book
                .sides
                .iter()
                .map(|((idx, d), m)| ((self.proxy_ids[*idx].clone(), *d), m.clone()))
                .collect(),
            workloads: self
                .book
                .workloads
                .iter()
                .map(|((idx, direction, served, peer), r)| {
                    r.hops(self.proxy_ids[*idx].clone(), *direction, *served, *peer)
                })
                .collect(),
            workload_overflow: self.book.workload_overflow,
            workload_unbooked: self.book.workload_unbooked,
            loss: LossCounters {
                ..self.loss.clone()
            },
            unattributed_exchanges: self.unattributed_exchanges,
            paths: self.paths.counts,
            before_window_exchanges: self.before_window_exchanges,
            discovery: self.discovery.stats(),
            changes: self.changes.clone(),
        }
    }
}

/// One proxy's figures over a window between two views of the same tracker.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyWindow {
    pub id: String,
    #[serde(skip)]
    pub proxy: ProxyId,
    pub kind: String,
    pub pod_uid: Option<String>,
    pub container_id: Option<String>,
    /// Leader pid at the end (or the last one seen).
    pub pid: Option<u32>,
    pub pids_seen: Vec<u32>,
    /// Restarts within the window.
    pub restarts: u32,
    /// CPU over the window, with per-request figures from the requests the probes parsed.
    pub cpu: CpuFigures,
    /// Requests the proxy received in the window (probe-parsed HTTP/1.x requests).
    pub requests: u64,
    /// Pairing counters over the window.
    pub pairing: HopCounts,
    /// Memory over the window's samples.
    pub memory: Option<MemorySummary>,
}

/// Figures per proxy between `start` and `end` (a proxy found after `start` counts from when
/// it was found, which is when its probe counters began).
pub fn window(start: &TrackerView, end: &TrackerView) -> Vec<ProxyWindow> {
    let wall = end.elapsed.saturating_sub(start.elapsed);
    end.proxies
        .iter()
        .map(|p| {
            let before = start.proxies.iter().find(|q| q.proxy == p.proxy);
            let cpu_ns = p.cpu_ns - before.map_or(0, |b| b.cpu_ns.min(p.cpu_ns));
            let pairing = match before {
                Some(b) => p.pairing.delta(&b.pairing),
                None => p.pairing,
            };
            let requests = pairing.requests;
            ProxyWindow {
                id: p.id.clone(),
                proxy: p.proxy.clone(),
                kind: p.kind.clone(),
                pod_uid: p.attribution.pod_uid.clone(),
                container_id: p.attribution.container_id.clone(),
                pid: p.leader.or_else(|| p.pids_seen.last().copied()),
                pids_seen: p.pids_seen.clone(),
                restarts: p.restarts - before.map_or(0, |b| b.restarts.min(p.restarts)),
                cpu: CpuFigures::new(cpu_ns, wall, requests),
                requests,
                pairing,
                memory: p.memory.clone(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
