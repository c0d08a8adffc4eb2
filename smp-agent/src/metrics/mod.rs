//! Prometheus metrics of one node (pure userspace, no aya): the daemon loop hands a plain
//! [`NodeSnapshot`] to [`NodeMetrics::update`] every interval; [`server`] serves the result on
//! `/metrics` in OpenMetrics or Prometheus text format. Every metric is listed in
//! docs/metrics.md.
//!
//! # Counter semantics
//! Snapshot values are *cumulative per proxy identity* ([`ProxyId`], stable across restarts of
//! the proxy's processes), as [`crate::tracker::Tracker`] keeps them: a proxy that restarts
//! continues its CPU, request and byte totals, and its restart count comes with the snapshot
//! ([`ProxySample::restarts`]). [`NodeMetrics`] exports them as they are, so it needs no
//! restart detection of its own and cannot count an instance twice. As a guard, a counter never
//! goes down: a value below the last exported one (or not finite) leaves the counter where it
//! was.
//!
//! Hop latencies are *new observations since the previous update* (the daemon diffs the
//! tracker's cumulative histograms), so they only add.
//!
//! # Cardinality
//! Labels are the proxy kind, its identity, pod and namespace, plus small fixed enums
//! (direction, leg, reason); nothing per connection, path or pid. At most
//! [`MetricsOptions::max_proxies`] proxies are exported (others are counted in
//! `smp_proxies_over_limit`), and a proxy absent from snapshots for
//! [`MetricsOptions::forget_after`] is dropped from the exposition.
//!
//! # The daemon loop
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use std::sync::Arc;
//!
//! use smp_agent::{
//!     cli::daemon_config::{DaemonArgs, DaemonConfig},
//!     metrics::{server::MetricsServer, AgentUsage, NodeMetrics, NodeSnapshot},
//! };
//!
//! let config = DaemonConfig::load(&DaemonArgs::default())?; // flags > env > file > defaults
//! let metrics = Arc::new(NodeMetrics::new(config.metrics_options()));
//! let server = MetricsServer::bind(config.listen, Arc::clone(&metrics)).await?; // port in use: error
//! // … load the probes, start discovery (config.discovery()) …
//! server.set_ready(true);
//! let mut tick = tokio::time::interval(config.interval);
//! loop {
//!     tick.tick().await;
//!     let snap = NodeSnapshot {
//!         agent: AgentUsage::current(),
//!         ..NodeSnapshot::default()
//!     };
//!     // Per tracked proxy, identity-cumulative figures (`Tracker::view()`):
//!     //     snap.proxies.push(ProxySample { id, pod, cpu_seconds, restarts, … });
//!     // This interval's hops: the difference of two views' hop histograms.
//!     // snap.loss = view.loss.clone();
//!     metrics.update(&snap);
//! }
//! # }
//! ```

use smp_common::hop::HopCounts;
use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use hdrhistogram::Histogram;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use crate::{
    aggregate::{
        hops::{new_histogram, Direction, HopAggregator, Leg, Sides},
        path::{PathCounts, Peer, RttEstimates},
        LossCounters,
    },
    proxy::{kube::PodRef, ProxyId},
};

pub mod buckets;
pub mod exposition;
pub mod server;
pub mod synthetic;
pub mod workloads;

pub use buckets::HOP_BUCKETS_SECONDS;
pub use exposition::Format;
pub use workloads::{WorkloadDrops, WorkloadRef, WorkloadSample, MAX_WORKLOAD_ROWS};

use buckets::BucketCounts;

/// Everything the daemon knows about its node at one instant.
#[derive(Debug, Clone, Default)]
pub struct NodeSnapshot {
    /// One entry per tracked proxy (a second entry with the same `id` is ignored).
    pub proxies: Vec<ProxySample>,
    /// Hop latencies observed since the previous update, per (proxy, direction, leg).
    pub hops: Vec<HopSample>,
    /// Hop observations whose process belongs to no known proxy since the previous update
    /// ([`NodeSnapshot::add_hops`] counts them).
    pub unattributed_hops: u64,
    /// The probes' loss counters, cumulative since the probes were loaded.
    pub loss: LossCounters,
    /// The agent's own CPU and memory (`None`: keep the last values).
    pub agent: Option<AgentUsage>,
    /// Network legs between two proxies of the node observed since the previous update.
    pub legs: Vec<LegSample>,
    /// How exchanges facing a peer were joined into paths, cumulative.
    pub paths: PathCounts,
    /// TCP's round-trip estimates of each proxy's upstream connections since the previous
    /// update, by where the peer is.
    pub estimates: Vec<(ProxyId, Peer, RttEstimates)>,
    /// Node proxies' exchanges per workload since the previous update.
    pub workloads: Vec<WorkloadSample>,
    /// Exchanges the tracker kept out of `workloads`, cumulative.
    pub workload_drops: WorkloadDrops,
}

/// Network leg latencies from one proxy to another observed since the previous update
/// (docs/hops.md, Where the time goes).
#[derive(Debug, Clone)]
pub struct LegSample {
    /// The proxy that wrote the message.
    pub source: ProxyId,
    /// The proxy whose socket received it.
    pub destination: ProxyId,
    pub leg: Leg,
    /// Nanoseconds.
    pub histogram: Histogram<u64>,
}

/// One proxy: identity, where it runs and figures cumulative over every process the identity
/// ever had (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySample {
    /// Stable identity (kind, pod/container/cgroup scope, argument fingerprint).
    pub id: ProxyId,
    /// The pod it runs in, when known (Kubernetes enrichment).
    pub pod: Option<PodRef>,
    /// Times a new leader process took over the identity, cumulative.
    pub restarts: u32,
    /// On-CPU seconds of all its processes and threads, cumulative.
    pub cpu_seconds: f64,
    /// Resident memory of all its processes, bytes, now.
    pub rss_bytes: u64,
    /// The kernel's pairing counters summed over its processes, cumulative. `requests` feeds
    /// `smp_proxy_requests_total`; the failure counters feed `smp_unpaired_messages_total`.
    pub pairing: HopCounts,
    /// Bytes its socket reads returned, cumulative.
    pub received_bytes: u64,
    /// Bytes its socket writes sent, cumulative.
    pub sent_bytes: u64,
    /// Exchanges paired per direction and what their two sides spoke, cumulative.
    pub sides: BTreeMap<(Direction, Sides), u64>,
}

impl ProxySample {
    /// A sample with every figure zero.
    pub fn new(id: ProxyId) -> Self {
        Self {
            id,
            pod: None,
            restarts: 0,
            cpu_seconds: 0.0,
            rss_bytes: 0,
            pairing: HopCounts::default(),
            received_bytes: 0,
            sent_bytes: 0,
            sides: BTreeMap::new(),
        }
    }
}

/// Hop latencies of one (proxy, direction, leg) observed since the previous update.
#[derive(Debug, Clone)]
pub struct HopSample {
    pub proxy: ProxyId,
    pub direction: Direction,
    pub leg: Leg,
    /// Nanoseconds, as [`HopAggregator`] records them.
    pub histogram: Histogram<u64>,
}

impl HopSample {
    /// A sample from raw nanosecond values (tests, synthetic feeds).
    pub fn from_ns(proxy: ProxyId, direction: Direction, leg: Leg, values_ns: &[u64]) -> Self {
        let mut histogram = new_histogram();
        for v in values_ns {
            histogram.saturating_record((*v).max(1));
        }
        Self {
            proxy,
            direction,
            leg,
            histogram,
        }
    }
}

impl NodeSnapshot {
    /// Adds the hop histograms of an aggregator that holds one interval's exchanges, merged per
    /// proxy (`owner` maps a process to its proxy, e.g. `Discovery::proxy_of`). Observations
    /// of processes without an owner are counted in `unattributed_hops`. Returns how many of
    /// those there were.
    pub fn add_hops(
        &mut self,
        hops: &HopAggregator,
        owner: impl Fn(u32) -> Option<ProxyId>,
    ) -> u64 {
        let mut unattributed = 0;
        for (key, h) in &hops.hops {
            let Some(proxy) = owner(key.tgid) else {
                unattributed += h.len();
                continue;
            };
            match self
                .hops
                .iter_mut()
                .find(|s| s.proxy == proxy && s.direction == key.direction && s.leg == key.leg)
            {
                // Same bounds on both sides: adding cannot fail.
                Some(s) => drop(s.histogram.add(h)),
                None => self.hops.push(HopSample {
                    proxy,
                    direction: key.direction,
                    leg: key.leg,
                    histogram: h.clone(),
                }),
            }
        }
        self.unattributed_hops += unattributed;
        unattributed
    }
}

/// CPU and memory of the agent process itself.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AgentUsage {
    /// User + system CPU seconds since the agent started.
    pub cpu_seconds: f64,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
}

impl AgentUsage {
    /// This process's usage: CPU from `getrusage`, RSS from `/proc/self/statm`.
    pub fn current() -> Option<Self> {
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: getrusage writes a complete rusage into the buffer we own.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: initialised by the successful call above.
        let ru = unsafe { ru.assume_init() };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        Some(Self {
            cpu_seconds: tv(ru.ru_utime) + tv(ru.ru_stime),
            rss_bytes: crate::proxy::memory::parse_statm(
                &statm,
                crate::proxy::memory::page_size(),
            )?,
        })
    }
}

/// Limits on what is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsOptions {
    /// Most proxies exported at once (each costs ~30 series plus 28 per hop kind). The default,
    /// 128, is above the kubelet's default of 110 pods per node.
    pub max_proxies: usize,
    /// A proxy missing from snapshots this long is dropped from the exposition (its counters
    /// start again from its cumulative values if it comes back).
    pub forget_after: Duration,
}

impl Default for MetricsOptions {
    fn default() -> Self {
        Self {
            max_proxies: 128,
            forget_after: Duration::from_secs(600),
        }
    }
}

/// Network leg series exported at most (pairs × legs): a node's sidecars talk to a few
/// peers each, and a series costs 28 samples.
pub const MAX_LEG_SERIES: usize = 1024;

/// Path join outcomes: `outcome` label value and the [`PathCounts`] field.
const PATH_OUTCOMES: [Reason<PathCounts>; 6] = [
    ("joined", |c| c.joined),
    ("no_peer", |c| c.no_peer),
    ("ambiguous", |c| c.ambiguous),
    ("unclaimed", |c| c.unclaimed),
    ("overflow", |c| c.overflow),
    ("send_unseen", |c| c.send_unseen),
];

/// Field by field, the larger: counters that never go down.
fn max_counts(a: &PathCounts, b: &PathCounts) -> PathCounts {
    PathCounts {
        joined: a.joined.max(b.joined),
        breakdown: a.breakdown.max(b.breakdown),
        no_peer: a.no_peer.max(b.no_peer),
        ambiguous: a.ambiguous.max(b.ambiguous),
        unclaimed: a.unclaimed.max(b.unclaimed),
        overflow: a.overflow.max(b.overflow),
        send_unseen: a.send_unseen.max(b.send_unseen),
        sampled: a.sampled.max(b.sampled),
    }
}

/// A `reason` label value and the counter field it reads.
pub(crate) type Reason<T> = (&'static str, fn(&T) -> u64);

/// Unpaired-message reasons: label value and the [`HopCounts`] field (one table, in
/// `smp-common`; also the reasons of the profile's details, `losses.unpaired_reasons`).
pub(crate) const UNPAIRED_REASONS: [Reason<HopCounts>; 8] = HopCounts::UNPAIRED_REASONS;

/// Event-loss reasons: label value and the [`LossCounters`] field.
const LOSS_REASONS: [Reason<LossCounters>; 10] = LossCounters::REASONS;

/// What a counter gains from a cumulative value that may start again from zero (the probes'
/// loss counters if they were reloaded): everything the first time, the growth after that,
/// nothing (a new baseline) when it went down.
fn gain_u64(last: Option<u64>, now: u64) -> u64 {
    match last {
        None => now,
        Some(l) => now.saturating_sub(l),
    }
}

/// Exported state of one proxy identity.
#[derive(Debug, Clone)]
struct ProxyState {
    kind: String,
    id: String,
    pod: String,
    namespace: String,
    cpu_seconds: f64,
    requests: u64,
    received: u64,
    sent: u64,
    unpaired: [u64; UNPAIRED_REASONS.len()],
    restarts: u64,
    rss_bytes: u64,
    hops: BTreeMap<(Direction, Leg), BucketCounts>,
    sides: BTreeMap<(Direction, Sides), u64>,
    /// TCP's smoothed and minimum RTT of its upstream connections, by where the peer is.
    rtt: BTreeMap<(Peer, RttKind), BucketCounts>,
    last_seen: Instant,
}

/// Which of TCP's round-trip estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum RttKind {
    Srtt,
    MinRtt,
}

impl RttKind {
    const fn name(self) -> &'static str {
        match self {
            RttKind::Srtt => "srtt",
            RttKind::MinRtt => "min_rtt",
        }
    }
}

impl ProxyState {
    fn new(now: Instant) -> Self {
        Self {
            kind: String::new(),
            id: String::new(),
            pod: String::new(),
            namespace: String::new(),
            cpu_seconds: 0.0,
            requests: 0,
            received: 0,
            sent: 0,
            unpaired: [0; UNPAIRED_REASONS.len()],
            restarts: 0,
            rss_bytes: 0,
            hops: BTreeMap::new(),
            sides: BTreeMap::new(),
            rtt: BTreeMap::new(),
            last_seen: now,
        }
    }

    /// Takes the identity-cumulative values of `s`; a counter never goes down (module docs).
    fn observe(&mut self, s: &ProxySample, now: Instant) {
        self.kind = s.id.kind.name().to_string();
        self.id = s.id.to_string();
        (self.pod, self.namespace) = match &s.pod {
            Some(p) => (p.name.clone(), p.namespace.clone()),
            None => (String::new(), String::new()),
        };
        if s.cpu_seconds.is_finite() {
            self.cpu_seconds = self.cpu_seconds.max(s.cpu_seconds);
        }
        self.requests = self.requests.max(s.pairing.requests);
        self.received = self.received.max(s.received_bytes);
        self.sent = self.sent.max(s.sent_bytes);
        for (total, (_, f)) in self.unpaired.iter_mut().zip(UNPAIRED_REASONS) {
            *total = (*total).max(f(&s.pairing));
        }
        self.restarts = self.restarts.max(u64::from(s.restarts));
        for (k, n) in &s.sides {
            let total = self.sides.entry(*k).or_default();
            *total = (*total).max(*n);
        }
        self.rss_bytes = s.rss_bytes;
        self.last_seen = now;
    }

    fn labels(&self) -> [(&'static str, &str); 4] {
        [
            ("proxy", &self.kind),
            ("proxy_id", &self.id),
            ("pod", &self.pod),
            ("namespace", &self.namespace),
        ]
    }
}

/// Labels of a node proxy's workload row: the proxy's, the direction, both workloads.
#[expect(
    clippy::type_complexity,
    reason = "a label set is nested pairs of arrays"
)]
fn workload_labels<'a>(
    p: &'a ProxyState,
    direction: Direction,
    w: &workloads::WorkloadState,
) -> (
    (
        [(&'static str, &'a str); 4],
        [(&'static str, &'static str); 1],
    ),
    [(&'static str, String); 6],
) {
    (
        (p.labels(), [("direction", direction.name())]),
        [
            ("workload_address", w.served.address.to_string()),
            ("workload_pod", w.served.pod.clone()),
            ("workload_namespace", w.served.namespace.clone()),
            ("peer_address", w.peer.address.to_string()),
            ("peer_pod", w.peer.pod.clone()),
            ("peer_namespace", w.peer.namespace.clone()),
        ],
    )
}

#[derive(Debug, Clone)]
struct State {
    opts: MetricsOptions,
    proxies: BTreeMap<ProxyId, ProxyState>,
    loss_last: Option<LossCounters>,
    loss: [u64; LOSS_REASONS.len()],
    hops_dropped: u64,
    /// Network legs per (source, destination, leg), both exported proxies.
    legs: BTreeMap<(ProxyId, ProxyId, Leg), BucketCounts>,
    /// Leg observations (and RTT estimates) not exported: a proxy of the pair (the proxy) is
    /// not exported, or [`MAX_LEG_SERIES`] pairs are.
    legs_dropped: u64,
    paths: PathCounts,
    /// Node proxies' rows per workload.
    workloads: workloads::WorkloadBook,
    over_limit: usize,
    agent: AgentUsage,
    updates: u64,
    last_update: Option<SystemTime>,
}

/// The node's metrics: update with [`NodeMetrics::update`], encode with
/// [`NodeMetrics::encode`]. Cheap to share (`Arc`): updates and scrapes take a short lock.
#[derive(Debug)]
pub struct NodeMetrics {
    registry: Registry,
    state: Arc<Mutex<State>>,
}

/// The registry collector: encodes [`State`] on every scrape.
#[derive(Debug)]
struct NodeCollector(Arc<Mutex<State>>);

impl NodeMetrics {
    /// Metrics with their own registry.
    pub fn new(opts: MetricsOptions) -> Self {
        Self::with_registry(opts, Registry::default())
    }

    /// Metrics added to `registry`, which may already hold other metrics (they are encoded
    /// before ours).
    pub fn with_registry(opts: MetricsOptions, mut registry: Registry) -> Self {
        let state = Arc::new(Mutex::new(State {
            opts,
            proxies: BTreeMap::new(),
            loss_last: None,
            loss: [0; LOSS_REASONS.len()],
            hops_dropped: 0,
            legs: BTreeMap::new(),
            legs_dropped: 0,
            paths: PathCounts::default(),
            workloads: workloads::WorkloadBook::default(),
            over_limit: 0,
            agent: AgentUsage::default(),
            updates: 0,
            last_update: None,
        }));
        registry.register_collector(Box::new(NodeCollector(Arc::clone(&state))));
        Self { registry, state }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain numbers behind: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one snapshot (now).
    pub fn update(&self, snap: &NodeSnapshot) {
        self.update_at(snap, Instant::now());
    }

    /// Takes one snapshot at `now` (for tests of forgetting).
    pub fn update_at(&self, snap: &NodeSnapshot, now: Instant) {
        let mut st = self.lock();
        let st = &mut *st;
        st.updates += 1;
        st.last_update = Some(SystemTime::now());
        let mut seen = HashSet::new();
        let mut over = 0;
        let cpu_before: BTreeMap<ProxyId, f64> = st
            .proxies
            .iter()
            .map(|(id, p)| (id.clone(), p.cpu_seconds))
            .collect();
        for s in &snap.proxies {
            if !seen.insert(&s.id) {
                tracing::debug!(proxy = %s.id, "duplicate proxy in snapshot ignored");
                continue;
            }
            if !st.proxies.contains_key(&s.id) && st.proxies.len() >= st.opts.max_proxies {
                over += 1;
                continue;
            }
            st.proxies
                .entry(s.id.clone())
                .or_insert_with(|| ProxyState::new(now))
                .observe(s, now);
        }
        st.over_limit = over;
        for h in &snap.hops {
            match st.proxies.get_mut(&h.proxy) {
                Some(p) => p
                    .hops
                    .entry((h.direction, h.leg))
                    .or_default()
                    .add_hdr(&h.histogram),
                None => st.hops_dropped += h.histogram.len(),
            }
        }
        st.hops_dropped += snap.unattributed_hops;
        let proxies = &st.proxies;
        st.workloads.update(
            &snap.workloads,
            snap.workload_drops,
            |id| {
                let now = proxies.get(id)?.cpu_seconds;
                Some(now - cpu_before.get(id).copied().unwrap_or(0.0))
            },
            now,
        );
        for l in &snap.legs {
            let key = (l.source.clone(), l.destination.clone(), l.leg);
            let exported = st.proxies.contains_key(&l.source)
                && st.proxies.contains_key(&l.destination)
                && (st.legs.contains_key(&key) || st.legs.len() < MAX_LEG_SERIES);
            if exported {
                st.legs.entry(key).or_default().add_hdr(&l.histogram);
            } else {
                st.legs_dropped += l.histogram.len();
            }
        }
        st.paths = max_counts(&st.paths, &snap.paths);
        for (id, peer, e) in &snap.estimates {
            match st.proxies.get_mut(id) {
                Some(p) => {
                    for (kind, h) in [(RttKind::Srtt, &e.srtt), (RttKind::MinRtt, &e.min_rtt)] {
                        p.rtt.entry((*peer, kind)).or_default().add_hdr(h);
                    }
                }
                None => st.legs_dropped += e.srtt.len(),
            }
        }
        for (i, (_, f)) in LOSS_REASONS.iter().enumerate() {
            st.loss[i] += gain_u64(st.loss_last.as_ref().map(f), f(&snap.loss));
        }
        st.loss_last = Some(snap.loss.clone());
        if let Some(a) = snap.agent {
            // One process: its CPU time cannot go down.
            st.agent.cpu_seconds = st.agent.cpu_seconds.max(a.cpu_seconds);
            st.agent.rss_bytes = a.rss_bytes;
        }
        let forget_after = st.opts.forget_after;
        st.proxies
            .retain(|_, p| now.saturating_duration_since(p.last_seen) <= forget_after);
        let proxies = &st.proxies;
        st.legs
            .retain(|(a, b, _), _| proxies.contains_key(a) && proxies.contains_key(b));
        st.workloads
            .forget(|p| proxies.contains_key(p), forget_after, now);
    }

    /// The registry (to encode with other tools).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Proxies of the latest snapshot left out because `max_proxies` was reached.
    pub fn over_limit(&self) -> usize {
        self.lock().over_limit
    }

    /// Number of proxies exported now.
    pub fn proxies(&self) -> usize {
        self.lock().proxies.len()
    }

    /// The exposition in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut om = String::new();
        // Writing into a String cannot fail, and our collector returns no other error.
        prometheus_client::encoding::text::encode(&mut om, &self.registry)
            .expect("encoding into a String");
        match format {
            Format::OpenMetrics => om,
            Format::PrometheusText => exposition::openmetrics_to_prometheus_text(&om),
        }
    }
}

static SECONDS: Unit = Unit::Seconds;
static BYTES: Unit = Unit::Bytes;

/// Writes one family: descriptor, then each `(labels, value)` series. Families without series
/// are left out.
fn family<'a, L, I>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    ty: MetricType,
    series: I,
) -> std::fmt::Result
where
    L: EncodeLabelSet + 'a,
    I: IntoIterator<Item = (L, Value<'a>)>,
{
    let mut series = series.into_iter().peekable();
    if series.peek().is_none() {
        return Ok(());
    }
    let mut m: MetricEncoder<'_> = enc.encode_descriptor(name, help, unit, ty)?;
    for (labels, v) in series {
        encode_value(&mut m.encode_family(&labels)?, v)?;
    }
    Ok(())
}

/// Writes a family of one series without labels.
fn single(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    ty: MetricType,
    v: Value<'_>,
) -> std::fmt::Result {
    encode_value(&mut enc.encode_descriptor(name, help, unit, ty)?, v)
}

fn encode_value(m: &mut MetricEncoder<'_>, v: Value<'_>) -> std::fmt::Result {
    match v {
        Value::CounterF(v) => m.encode_counter::<NoLabelSet, _, f64>(&v, None),
        Value::Counter(v) => m.encode_counter::<NoLabelSet, _, u64>(&v, None),
        Value::GaugeF(v) => m.encode_gauge(&v),
        Value::Gauge(v) => m.encode_gauge(&v),
        Value::Histogram(b) => {
            m.encode_histogram::<NoLabelSet>(b.sum_seconds, b.count, &b.encoder_buckets(), None)
        }
    }
}

enum Value<'a> {
    CounterF(f64),
    Counter(u64),
    GaugeF(f64),
    Gauge(u64),
    Histogram(&'a BucketCounts),
}

impl Collector for NodeCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        // A copy: encoding (and a slow scrape) never holds the lock `update` needs.
        let st = self.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let enc = &mut enc;
        let proxies: Vec<&ProxyState> = st.proxies.values().collect();

        family(
            enc,
            "smp_agent_build_info",
            "Build of the running smp-agent (always 1).",
            None,
            MetricType::Gauge,
            [([("version", env!("CARGO_PKG_VERSION"))], Value::Gauge(1))],
        )?;
        single(
            enc,
            "smp_agent_cpu",
            "CPU time (user + system) the agent itself has used.",
            Some(&SECONDS),
            MetricType::Counter,
            Value::CounterF(st.agent.cpu_seconds),
        )?;
        single(
            enc,
            "smp_agent_resident_memory",
            "Resident memory of the agent itself.",
            Some(&BYTES),
            MetricType::Gauge,
            Value::Gauge(st.agent.rss_bytes),
        )?;
        single(
            enc,
            "smp_agent_updates",
            "Snapshots the agent has taken (one per interval).",
            None,
            MetricType::Counter,
            Value::Counter(st.updates),
        )?;
        if let Some(t) = st.last_update {
            let secs = t
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            single(
                enc,
                "smp_agent_last_update_timestamp",
                "Unix time of the latest snapshot.",
                Some(&SECONDS),
                MetricType::Gauge,
                Value::GaugeF(secs),
            )?;
        }
        family(
            enc,
            "smp_events_lost",
            "Probe events or accounting lost in the kernel, by reason.",
            None,
            MetricType::Counter,
            LOSS_REASONS
                .iter()
                .zip(st.loss)
                .map(|((reason, _), v)| ([("reason", *reason)], Value::Counter(v))),
        )?;
        single(
            enc,
            "smp_hop_observations_dropped",
            "Hop latencies not exported: their process belongs to no exported proxy.",
            None,
            MetricType::Counter,
            Value::Counter(st.hops_dropped),
        )?;
        single(
            enc,
            "smp_proxies",
            "Proxies exported now.",
            None,
            MetricType::Gauge,
            Value::Gauge(proxies.len() as u64),
        )?;
        single(
            enc,
            "smp_proxies_over_limit",
            "Proxies seen in the latest snapshot but not exported (max_proxies reached).",
            None,
            MetricType::Gauge,
            Value::Gauge(st.over_limit as u64),
        )?;
        family(
            enc,
            "smp_proxy_cpu",
            "On-CPU time of all threads of the proxy's processes (scheduler accounting).",
            Some(&SECONDS),
            MetricType::Counter,
            proxies
                .iter()
                .map(|p| (p.labels(), Value::CounterF(p.cpu_seconds))),
        )?;
        family(
            enc,
            "smp_proxy_resident_memory",
            "Resident memory of the proxy's processes (sum of RSS).",
            Some(&BYTES),
            MetricType::Gauge,
            proxies
                .iter()
                .map(|p| (p.labels(), Value::Gauge(p.rss_bytes))),
        )?;
        family(
            enc,
            "smp_proxy_requests",
            "HTTP requests the proxy read from its downstream sockets (seen by the kernel probes).",
            None,
            MetricType::Counter,
            proxies
                .iter()
                .map(|p| (p.labels(), Value::Counter(p.requests))),
        )?;
        family(
            enc,
            "smp_proxy_received",
            "Bytes the proxy's socket reads returned.",
            Some(&BYTES),
            MetricType::Counter,
            proxies
                .iter()
                .map(|p| (p.labels(), Value::Counter(p.received))),
        )?;
        family(
            enc,
            "smp_proxy_sent",
            "Bytes the proxy's socket writes sent.",
            Some(&BYTES),
            MetricType::Counter,
            proxies.iter().map(|p| (p.labels(), Value::Counter(p.sent))),
        )?;
        family(
            enc,
            "smp_proxy_restarts",
            "Times the proxy's process was replaced while its identity continued.",
            None,
            MetricType::Counter,
            proxies
                .iter()
                .map(|p| (p.labels(), Value::Counter(p.restarts))),
        )?;
        family(
            enc,
            "smp_unpaired_messages",
            "HTTP messages the kernel could not pair into a hop, by reason.",
            None,
            MetricType::Counter,
            proxies.iter().flat_map(|p| {
                UNPAIRED_REASONS
                    .iter()
                    .zip(p.unpaired)
                    .map(move |((reason, _), v)| {
                        ((p.labels(), [("reason", *reason)]), Value::Counter(v))
                    })
            }),
        )?;
        family(
            enc,
            "smp_hop_exchanges",
            "Exchanges paired into hops, by direction and what the proxy's downstream and upstream spoke (http1, h2c, tls).",
            None,
            MetricType::Counter,
            proxies.iter().flat_map(|p| {
                p.sides.iter().map(move |((direction, sides), n)| {
                    (
                        (
                            p.labels(),
                            [
                                ("direction", direction.name()),
                                ("downstream_protocol", sides.downstream.name()),
                                ("upstream_protocol", sides.upstream.name()),
                            ],
                        ),
                        Value::Counter(*n),
                    )
                })
            }),
        )?;
        family(
            enc,
            "smp_hop_duration",
            "Time one HTTP message spent inside the proxy: from the read of its first bytes to the write forwarding them.",
            Some(&SECONDS),
            MetricType::Histogram,
            proxies.iter().flat_map(|p| {
                p.hops.iter().map(move |((direction, leg), b)| {
                    (
                        (
                            p.labels(),
                            [("direction", direction.name()), ("leg", leg.name())],
                        ),
                        Value::Histogram(b),
                    )
                })
            }),
        )?;
        let labels = |prefix: &'static str, id: &ProxyId| {
            let p = st.proxies.get(id);
            let (id, pod, ns) = p.map_or((String::new(), String::new(), String::new()), |p| {
                (p.id.clone(), p.pod.clone(), p.namespace.clone())
            });
            [
                (format!("{prefix}_proxy_id"), id),
                (format!("{prefix}_pod"), pod),
                (format!("{prefix}_namespace"), ns),
            ]
        };
        family(
            enc,
            "smp_network_leg_duration",
            "Time from one proxy's write of a message to another proxy of the node receiving it in its socket (same clock): the copy, the stack, the wire and the receiver's queue.",
            Some(&SECONDS),
            MetricType::Histogram,
            st.legs.iter().map(|((a, b, leg), v)| {
                (
                    (
                        (labels("source", a), labels("destination", b)),
                        [("leg", leg.name())],
                    ),
                    Value::Histogram(v),
                )
            }),
        )?;
        family(
            enc,
            "smp_network_rtt_estimate",
            "TCP's own estimate of the round trip of the proxy's upstream connections (smoothed or windowed-minimum RTT), one observation per exchange, by whether the peer is a tracked proxy of this node: the network leg's estimate where it is not measured per request.",
            Some(&SECONDS),
            MetricType::Histogram,
            proxies.iter().flat_map(|p| {
                p.rtt.iter().map(move |((peer, kind), b)| {
                    (
                        (
                            p.labels(),
                            [("peer", peer.name()), ("estimate", kind.name())],
                        ),
                        Value::Histogram(b),
                    )
                })
            }),
        )?;
        family(
            enc,
            "smp_network_leg_exchanges",
            "Exchanges facing another proxy, by how they were joined with that proxy's exchange: joined, or why not (no_peer, ambiguous, unclaimed, overflow, send_unseen).",
            None,
            MetricType::Counter,
            PATH_OUTCOMES
                .iter()
                .map(|(outcome, f)| ([("outcome", *outcome)], Value::Counter(f(&st.paths)))),
        )?;
        let rows: Vec<_> = st
            .workloads
            .rows
            .iter()
            .filter_map(|((id, direction, ..), w)| Some((st.proxies.get(id)?, *direction, w)))
            .collect();
        family(
            enc,
            "smp_workload_hop_duration",
            "A node proxy's hops (Istio ambient's ztunnel) for one workload it serves, toward one peer: as smp_hop_duration, split by pod.",
            Some(&SECONDS),
            MetricType::Histogram,
            rows.iter().flat_map(|(p, d, w)| {
                [(Leg::Request, &w.request), (Leg::Response, &w.response)]
                    .into_iter()
                    .map(move |(leg, b)| {
                        (
                            (workload_labels(p, *d, w), [("leg", leg.name())]),
                            Value::Histogram(b),
                        )
                    })
            }),
        )?;
        family(
            enc,
            "smp_workload_exchanges",
            "A node proxy's exchanges (request and response) for one workload it serves, toward one peer.",
            None,
            MetricType::Counter,
            rows.iter()
                .map(|(p, d, w)| (workload_labels(p, *d, w), Value::Counter(w.exchanges))),
        )?;
        family(
            enc,
            "smp_workload_cpu",
            "A node proxy's CPU time apportioned to one workload and peer by its share of the proxy's exchanges in each interval (CPU of intervals without exchanges is not apportioned).",
            Some(&SECONDS),
            MetricType::Counter,
            rows.iter()
                .map(|(p, d, w)| (workload_labels(p, *d, w), Value::CounterF(w.cpu_seconds))),
        )?;
        family(
            enc,
            "smp_workload_memory",
            "A node proxy's resident memory apportioned to one workload and peer by its share of the connections of the proxy's exchanges in the last interval the proxy had any (a proxy holds buffers per connection, not per request).",
            Some(&BYTES),
            MetricType::Gauge,
            rows.iter().map(|(p, d, w)| {
                let bytes = p.rss_bytes as f64 * w.memory_share;
                (workload_labels(p, *d, w), Value::GaugeF(bytes))
            }),
        )?;
        family(
            enc,
            "smp_workload_exchanges_dropped",
            "A node proxy's exchanges left out of the per-workload series, by reason: row_limit (the agent's rows of one interval), before_second_pod (before the proxy served a second pod), series_limit (beyond the exported rows, or the proxy is not exported).",
            None,
            MetricType::Counter,
            st.workloads
                .drops()
                .map(|(reason, v)| ([("reason", reason)], Value::Counter(v))),
        )?;
        single(
            enc,
            "smp_network_leg_observations_dropped",
            "Network leg latencies and TCP round-trip estimates not exported: their proxy (or one of the pair) is not exported, or the leg series limit was reached.",
            None,
            MetricType::Counter,
            Value::Counter(st.legs_dropped),
        )?;
        Ok(())
    }
}

/// Metric names (as queried: counters with `_total`, histograms with `_bucket`/`_sum`/`_count`)
/// present in an exposition in the Prometheus text format.
pub fn sample_names(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests;
