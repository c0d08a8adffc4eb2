//! `smp-agent daemon`: follow every proxy on this node and serve their figures as Prometheus
//! metrics (docs/metrics.md), the way the DaemonSet runs it (docs/deploy.md).
//!
//! Startup order, so a misconfigured agent fails fast and loads nothing:
//! 1. the configuration (flags > env > file, [`DaemonConfig::load`]): an invalid value is an
//!    error naming the field and where it came from;
//! 2. the Kubernetes client when `kube` asks for one (`on` outside a cluster is an error);
//! 3. the metrics server is bound: a taken port is an error naming the address, before any
//!    probe is loaded. `/healthz` answers from here on, `/readyz` says 503;
//! 4. the [`Tracker`] loads and attaches the probes and finds the proxies; then `/readyz`
//!    says 200.
//!
//! Then, every `interval`: the tracker is sampled and its per-identity cumulative figures go to
//! [`NodeMetrics`] ([`SnapshotBuilder`]). SIGTERM or SIGINT stops serving, drops the tracker
//! (which detaches every program; nothing is pinned, so a SIGKILL leaves nothing behind either)
//! and exits 0.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    process::ExitCode,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::Notify,
    time::Instant,
};

use super::daemon_config::{DaemonArgs, DaemonConfig, KubeMode};
use crate::{
    aggregate::hops::Leg,
    duration,
    host::addresses::AddressBook,
    metrics::{
        server::MetricsServer, AgentUsage, HopSample, LegSample, NodeMetrics, NodeSnapshot,
        ProxySample, WorkloadDrops, WorkloadRef, WorkloadSample,
    },
    proxy::{
        discovery::ProxyScope,
        kube::{KubeClient, KubeError, PodRef},
        ProxyChange, ProxyId,
    },
    tracker::{PerWorkload, ProxyHopKey, Tracker, TrackerConfig, TrackerView, WorkloadHops},
};

/// Arguments of `daemon` (they live with the configuration they feed).
pub type Args = DaemonArgs;

/// procfs rescan period: the safety net under the exec/fork/exit events, which find proxies at
/// once. Rarer than `top`'s (2 s): a node has many processes and the daemon runs for ever.
pub const RESCAN_EVERY: Duration = Duration::from_secs(10);
/// "Never" for the tracker's own periodic sampling (the daemon samples explicitly).
const OWN_SAMPLING_OFF: Duration = Duration::from_secs(24 * 3600);
/// The metrics server gets this long to finish open scrapes on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(1000);
/// Pod list refresh period, and the shortest time between two refreshes (a new pod asks for
/// one sooner).
const POD_REFRESH: PodRefresh = PodRefresh {
    every: Duration::from_secs(60),
    min_gap: Duration::from_secs(5),
};

pub async fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let config = DaemonConfig::load(&args)?;
    if args.print_config {
        print!("{}", config.to_yaml());
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(filter) = &config.log_level {
        crate::logging::set_filter(filter).map_err(anyhow::Error::msg)?;
    }
    let kube = kube_client(config.kube)?;
    let mut signals = Signals::new()?;

    let metrics = Arc::new(NodeMetrics::new(config.metrics_options()));
    let server = MetricsServer::bind_with(
        config.listen,
        Arc::clone(&metrics),
        &config.server_options(),
    )
    .await?;
    tracing::info!(
        listen = %server.local_addr(),
        interval = %duration::format(config.interval),
        proxy_names = ?config.proxy_names,
        pids = ?config.pids,
        kube = kube.is_some(),
        config_file = ?config.config_file,
        "daemon starting: loading probes"
    );

    let tracker_config = TrackerConfig {
        discovery: config.discovery(),
        rescan_every: RESCAN_EVERY,
        // The loop below samples right before each snapshot; the tracker's own periodic
        // sampling would only read every map a second time per interval.
        sample_every: OWN_SAMPLING_OFF,
        with_pss: false,
        // Per-pod series for node proxies only: a sidecar's one pod repeats its hops.
        per_workload: PerWorkload::NodeProxies,
    };
    let mut tracker = tokio::select! {
        t = Tracker::start(tracker_config) => t?,
        s = signals.recv() => {
            tracing::info!(signal = s, "stopping before the probes were loaded");
            stop_serving(server).await;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let pods = kube.map(|client| PodNames::start(client, config.node_name.clone(), POD_REFRESH));
    let mut builder = SnapshotBuilder::default();
    // The first scan's changes are logged below as the proxies found.
    let mut addresses = AddressBook::default();
    let (snap, first) = take_snapshot(
        &mut tracker,
        &mut builder,
        pods.as_ref(),
        &mut addresses,
        drop,
    );
    metrics.update(&snap);
    server.set_ready(true);
    tracing::info!(
        proxies = first.proxies.len(),
        "probes attached; ready (proxies found: {})",
        first
            .proxies
            .iter()
            .map(|p| p.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut over_limit = OverLimitLog::default();
    over_limit.check(metrics.over_limit(), config.max_proxies);
    let mut next = Instant::now();
    let outcome = loop {
        next += config.interval;
        let now = Instant::now();
        if next + config.interval < now {
            // Far behind (a suspended VM, a starved CPU): skip the missed ticks.
            next = now;
        }
        tokio::select! {
            r = tracker.pump_until(next) => if let Err(e) = r { break Err(e) },
            s = signals.recv() => {
                tracing::info!(signal = s, "stopping");
                break Ok(());
            }
        }
        if let Err(e) = tracker.sample() {
            break Err(e);
        }
        let (snap, _) = take_snapshot(
            &mut tracker,
            &mut builder,
            pods.as_ref(),
            &mut addresses,
            log_changes,
        );
        metrics.update(&snap);
        over_limit.check(metrics.over_limit(), config.max_proxies);
    };
    let t = std::time::Instant::now();
    stop_serving(server).await;
    // Each tracepoint detach waits for an RCU grace period in the kernel (~40 ms here): most
    // of the shutdown time.
    drop(tracker);
    tracing::info!(
        ms = t.elapsed().as_millis(),
        "stopped serving, probes detached; exiting"
    );
    match outcome {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(anyhow::Error::new(e).context("tracking failed")),
    }
}

/// This interval's snapshot, and the view it was built from. The hops, network legs, RTT
/// estimates and per-workload rows since the previous snapshot and the change log are taken
/// first (the view then has none to copy); `changes` gets the log.
fn take_snapshot(
    tracker: &mut Tracker,
    builder: &mut SnapshotBuilder,
    pods: Option<&PodNames>,
    addresses: &mut AddressBook,
    changes: impl FnOnce(Vec<(Duration, ProxyChange)>),
) -> (NodeSnapshot, TrackerView) {
    let hops = tracker.take_hops();
    let legs = tracker.take_legs();
    let workloads = tracker.take_workloads();
    let estimates = tracker.take_estimates();
    changes(tracker.take_changes());
    let view = tracker.view();
    if let Some(p) = pods {
        p.ask_for_unknown(&view);
    }
    let pods = pods_now(pods);
    let mut snap = builder.build(&view, hops, &pods);
    snap.legs = leg_samples(legs);
    snap.workloads = workload_samples(workloads, addresses, &pods);
    snap.workload_drops = WorkloadDrops {
        row_limit: view.workload_overflow,
        before_second_pod: view.workload_unbooked,
    };
    snap.estimates = estimates
        .into_iter()
        .map(|((id, peer), e)| (id, peer, e))
        .collect();
    (snap, view)
}

/// One log line per process that started or stopped being tracked.
fn log_changes(changes: Vec<(Duration, ProxyChange)>) {
    for (_, c) in changes {
        match c {
            ProxyChange::Added {
                proxy,
                tgid,
                restart,
                ..
            } => tracing::info!(proxy = %proxy, pid = tgid, restart, "tracking"),
            ProxyChange::Removed { proxy, tgid } => {
                tracing::info!(proxy = %proxy, pid = tgid, "process gone")
            }
        }
    }
}

/// Says once (per daemon run) that proxies were left out by `max_proxies`; the number is
/// exported all along (`smp_proxies_over_limit`).
#[derive(Debug, Default)]
struct OverLimitLog {
    said: bool,
}

impl OverLimitLog {
    /// Whether this call logged.
    fn check(&mut self, over: usize, max_proxies: usize) -> bool {
        if over == 0 || self.said {
            return false;
        }
        self.said = true;
        tracing::warn!(
            left_out = over,
            max_proxies,
            "more proxies than max_proxies: {over} not exported (see smp_proxies_over_limit; \
             raise max_proxies, or select proxies by proxy_exes/cgroups so that no process can \
             pose as one by its name); said once"
        );
        true
    }
}

/// Not ready any more, stop accepting, give open scrapes a moment.
async fn stop_serving(server: MetricsServer) {
    server.set_ready(false);
    if tokio::time::timeout(SHUTDOWN_GRACE, server.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("metrics server: scrapes still open at shutdown");
    }
}

/// The Kubernetes client `mode` asks for.
fn kube_client(mode: KubeMode) -> anyhow::Result<Option<KubeClient>> {
    match mode {
        KubeMode::Off => Ok(None),
        KubeMode::Auto => match KubeClient::in_cluster() {
            Ok(c) => Ok(c),
            Err(e) => {
                tracing::warn!(error = %e, "kube: auto: no usable in-cluster credentials; pod and namespace labels stay empty");
                Ok(None)
            }
        },
        KubeMode::On => KubeClient::in_cluster()
            .context("kube: on: cannot use the in-cluster credentials")?
            .map(Some)
            .context(
                "kube: on, but not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set); use --kube auto or off",
            ),
    }
}

/// SIGTERM (the kubelet, systemd) and SIGINT (Ctrl-C).
struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// Waits for either; cancel-safe.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// How often the pod list is read.
#[derive(Debug, Clone, Copy)]
struct PodRefresh {
    every: Duration,
    min_gap: Duration,
}

/// Pod UID → name, from the API server, refreshed in the background (every minute, and soon
/// after a proxy in an unknown pod appears). The daemon loop never waits for the API server.
struct PodNames {
    known: Arc<Mutex<HashMap<String, PodRef>>>,
    refresh: Arc<Notify>,
    /// UIDs a refresh was already asked for (each once: a pod the API does not list, e.g. a
    /// static pod's mirror, must not cause a refresh every interval).
    asked: Mutex<HashSet<String>>,
}

impl PodNames {
    fn start(client: KubeClient, node: Option<String>, timing: PodRefresh) -> Self {
        Self::start_with(
            move || {
                let (client, node) = (client.clone(), node.clone());
                async move { client.pods(node.as_deref()).await }
            },
            timing,
        )
    }

    /// [`PodNames::start`] with the pod list read by `fetch`. The refresh loop runs in a task
    /// of its own under a supervisor: should it panic, the panic is logged and the loop starts
    /// again (after `min_gap`), keeping the names it had.
    fn start_with<F, Fut>(fetch: F, timing: PodRefresh) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<HashMap<String, PodRef>, KubeError>>
            + Send
            + 'static,
    {
        let known = Arc::new(Mutex::new(HashMap::new()));
        let refresh = Arc::new(Notify::new());
        let (k, r) = (Arc::clone(&known), Arc::clone(&refresh));
        let fetch = Arc::new(fetch);
        tokio::spawn(async move {
            loop {
                let task = tokio::spawn(refresh_pods(
                    Arc::clone(&fetch),
                    Arc::clone(&k),
                    Arc::clone(&r),
                    timing,
                ));
                match task.await {
                    Err(e) if e.is_panic() => {
                        let panic = e.into_panic();
                        let message = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "(no message)".into());
                        tracing::error!(
                            panic = %message,
                            "kube: the pod name task panicked; restarting it (names read so far are kept)"
                        );
                        tokio::time::sleep(timing.min_gap).await;
                    }
                    // Cancelled (the runtime is shutting down), or returned (it never does).
                    _ => return,
                }
            }
        });
        Self {
            known,
            refresh,
            asked: Mutex::new(HashSet::new()),
        }
    }

    fn ask_for_unknown(&self, view: &TrackerView) {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        for p in &view.proxies {
            if let ProxyScope::Pod(uid) = &p.proxy.scope {
                if !known.contains_key(uid) && asked.insert(uid.clone()) {
                    self.refresh.notify_one();
                }
            }
        }
    }
}

/// The pod name refresh loop (runs for ever; see [`PodNames::start_with`]).
async fn refresh_pods<F, Fut>(
    fetch: Arc<F>,
    known: Arc<Mutex<HashMap<String, PodRef>>>,
    refresh: Arc<Notify>,
    timing: PodRefresh,
) where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<HashMap<String, PodRef>, KubeError>> + Send + 'static,
{
    let mut failing = false;
    loop {
        match fetch().await {
            Ok(pods) => {
                if failing {
                    tracing::info!(pods = pods.len(), "kube: pod list works again");
                }
                failing = false;
                tracing::debug!(pods = pods.len(), "kube: pod list refreshed");
                *known.lock().unwrap_or_else(|e| e.into_inner()) = pods;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "kube: cannot list pods; pod and namespace labels stay as they were");
                }
                failing = true;
            }
        }
        tokio::time::sleep(timing.min_gap).await;
        let _ = tokio::time::timeout(
            timing.every.saturating_sub(timing.min_gap),
            refresh.notified(),
        )
        .await;
    }
}

fn pods_now(p: Option<&PodNames>) -> HashMap<String, PodRef> {
    p.map(|p| p.known.lock().unwrap_or_else(|e| e.into_inner()).clone())
        .unwrap_or_default()
}

/// The per-workload rows booked since the previous snapshot ([`Tracker::take_workloads`]),
/// each address named by the pod that holds it ([`workload_ref`]).
pub fn workload_samples(
    rows: Vec<WorkloadHops>,
    addresses: &mut AddressBook,
    pods: &HashMap<String, PodRef>,
) -> Vec<WorkloadSample> {
    rows.into_iter()
        .map(|r| WorkloadSample {
            served: workload_ref(r.served, addresses, pods),
            peer: workload_ref(r.peer, addresses, pods),
            proxy: r.proxy,
            direction: r.direction,
            exchanges: r.exchanges,
            request: r.request,
            response: r.response,
            connections: r.connections,
        })
        .collect()
}

/// An address as a workload: the pod holding it by name (API server) or UID (its cgroup),
/// else the name of its network namespace, else the address alone.
pub fn workload_ref(
    a: std::net::IpAddr,
    addresses: &mut AddressBook,
    pods: &HashMap<String, PodRef>,
) -> WorkloadRef {
    let Some(owner) = addresses.owner(a) else {
        return WorkloadRef::address(a);
    };
    let (pod, namespace) = match (&owner.pod_uid, &owner.netns_name) {
        (Some(uid), _) => match pods.get(uid) {
            Some(p) => (p.name.clone(), p.namespace.clone()),
            None => (uid.clone(), String::new()),
        },
        (None, Some(name)) => (name.clone(), String::new()),
        (None, None) => (String::new(), String::new()),
    };
    WorkloadRef {
        address: a,
        pod,
        namespace,
    }
}

/// The network legs joined since the previous snapshot ([`Tracker::take_legs`]), as the
/// metrics take them.
pub fn leg_samples(legs: BTreeMap<(ProxyId, ProxyId, Leg), Histogram<u64>>) -> Vec<LegSample> {
    legs.into_iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|((source, destination, leg), histogram)| LegSample {
            source,
            destination,
            leg,
            histogram,
        })
        .collect()
}

/// Turns successive [`TrackerView`]s into [`NodeSnapshot`]s (pure: tested without root).
///
/// * Proxy figures are the tracker's per-identity cumulative values, passed on as they are.
/// * Hops are the observations since the previous snapshot ([`Tracker::take_hops`]), which
///   [`NodeMetrics`] adds up.
/// * A proxy with no live process is sent once more (its last figures, read after it exited)
///   and then left out, so [`NodeMetrics`] forgets it after `forget_after`.
#[derive(Debug, Default)]
pub struct SnapshotBuilder {
    unattributed_exchanges: u64,
    live: HashSet<ProxyId>,
}

impl SnapshotBuilder {
    /// The snapshot for `view` and the hops recorded since the previous one; `pods` names pods
    /// by UID (empty without Kubernetes).
    pub fn build(
        &mut self,
        view: &TrackerView,
        new_hops: BTreeMap<ProxyHopKey, Histogram<u64>>,
        pods: &HashMap<String, PodRef>,
    ) -> NodeSnapshot {
        let mut snap = NodeSnapshot {
            loss: view.loss.clone(),
            paths: view.paths,
            agent: AgentUsage::current(),
            ..NodeSnapshot::default()
        };
        let mut live = HashSet::new();
        for p in &view.proxies {
            let alive = !p.pids.is_empty();
            if alive {
                live.insert(p.proxy.clone());
            }
            if !alive && !self.live.contains(&p.proxy) {
                continue;
            }
            let pod = match &p.proxy.scope {
                ProxyScope::Pod(uid) => pods.get(uid).cloned(),
                _ => None,
            };
            snap.proxies.push(ProxySample {
                id: p.proxy.clone(),
                pod,
                restarts: p.restarts,
                cpu_seconds: p.cpu_ns as f64 / 1e9,
                rss_bytes: p.rss_bytes,
                pairing: p.pairing,
                received_bytes: p.received_bytes,
                sent_bytes: p.sent_bytes,
                sides: view
                    .sides
                    .iter()
                    .filter(|((id, _), _)| id == &p.proxy)
                    .flat_map(|((_, d), m)| m.iter().map(move |(s, n)| ((*d, *s), *n)))
                    .collect(),
            });
        }
        self.live = live;
        snap.hops = new_hops
            .into_iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(key, histogram)| HopSample {
                proxy: key.proxy,
                direction: key.direction,
                leg: key.leg,
                histogram,
            })
            .collect();
        // Each exchange carries a request and a response hop.
        snap.unattributed_hops = 2 * view
            .unattributed_exchanges
            .saturating_sub(self.unattributed_exchanges);
        self.unattributed_exchanges = view.unattributed_exchanges;
        snap
    }
}

#[cfg(test)]
mod tests;
