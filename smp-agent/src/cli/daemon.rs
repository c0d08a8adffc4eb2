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
    duration,
    metrics::{
        server::MetricsServer, AgentUsage, HopSample, NodeMetrics, NodeSnapshot, ProxySample,
    },
    proxy::{
        discovery::ProxyScope,
        kube::{KubeClient, KubeError, PodRef},
        ProxyChange, ProxyId,
    },
    tracker::{ProxyHopKey, Tracker, TrackerConfig, TrackerView},
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
    let hops = tracker.take_hops();
    let _ = tracker.take_changes(); // the first scan: logged below as the proxies found
    let first = tracker.view();
    metrics.update(&builder.build(&first, hops, &pods_now(pods.as_ref())));
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
        // Hops and changes first: the view then has none to copy.
        let hops = tracker.take_hops();
        log_changes(tracker.take_changes());
        let view = tracker.view();
        if let Some(p) = &pods {
            p.ask_for_unknown(&view);
        }
        metrics.update(&builder.build(&view, hops, &pods_now(pods.as_ref())));
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
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        aggregate::hops::{new_histogram, Direction, Leg},
        proxy::{discovery::ProxyKind, CgroupAttribution},
        tracker::ProxyView,
    };
    use smp_common::hop::HopCounts;

    const UID: &str = "0b6a1c52-7d1e-4f0e-9a57-3c2b1f0e9d01";

    fn pod_proxy() -> ProxyId {
        ProxyId {
            kind: ProxyKind::Envoy,
            scope: ProxyScope::Pod(UID.into()),
            fingerprint: 7 << 32,
        }
    }

    fn proxy_view(id: &ProxyId, pids: &[u32], cpu_ns: u64, requests: u64) -> ProxyView {
        ProxyView {
            id: id.to_string(),
            proxy: id.clone(),
            kind: "envoy".into(),
            attribution: CgroupAttribution::unknown("/kubepods"),
            leader: pids.first().copied(),
            pids: pids.to_vec(),
            pids_seen: pids.to_vec(),
            restarts: 0,
            cpu_ns,
            pairing: HopCounts {
                requests,
                ..HopCounts::default()
            },
            received_bytes: 10 * requests,
            sent_bytes: 20 * requests,
            rss_bytes: 1 << 20,
            memory: None,
            perf: None,
        }
    }

    fn hist(values_us: &[u64]) -> Histogram<u64> {
        let mut h = new_histogram();
        for v in values_us {
            h.record(v * 1000).unwrap();
        }
        h
    }

    fn hops(list: &[(ProxyId, Direction, Leg, &[u64])]) -> BTreeMap<ProxyHopKey, Histogram<u64>> {
        list.iter()
            .map(|(proxy, direction, leg, v)| {
                (
                    ProxyHopKey {
                        proxy: proxy.clone(),
                        direction: *direction,
                        leg: *leg,
                    },
                    hist(v),
                )
            })
            .collect()
    }

    fn view(proxies: Vec<ProxyView>) -> TrackerView {
        TrackerView {
            elapsed: Duration::from_secs(1),
            proxies,
            ..TrackerView::default()
        }
    }

    #[test]
    fn new_hops_add_up_in_the_exported_histogram() {
        use crate::metrics::{Format, MetricsOptions};
        let m = NodeMetrics::new(MetricsOptions::default());
        let p = pod_proxy();
        let v = view(vec![proxy_view(&p, &[10], 0, 0)]);
        let mut b = SnapshotBuilder::default();
        let (i, r) = (Direction::Inbound, Leg::Request);
        let s = b.build(&v, hops(&[(p.clone(), i, r, &[100, 200])]), &HashMap::new());
        assert_eq!(s.hops.len(), 1);
        m.update(&s);
        // The next interval's new observations; an empty histogram is left out.
        let s = b.build(
            &v,
            hops(&[
                (p.clone(), i, r, &[300, 300, 5000]),
                (p.clone(), i, Leg::Response, &[]),
            ]),
            &HashMap::new(),
        );
        assert_eq!(s.hops.len(), 1);
        m.update(&s);
        let text = m.encode(Format::PrometheusText);
        let count = text
            .lines()
            .find(|l| l.starts_with("smp_hop_duration_seconds_count{"))
            .unwrap();
        assert!(count.ends_with(" 5"), "{count}");
        let le = |b: &str| {
            text.lines()
                .find(|l| l.starts_with(&format!("smp_hop_duration_seconds_bucket{{le=\"{b}\"")))
                .unwrap()
                .rsplit_once(' ')
                .unwrap()
                .1
                .to_string()
        };
        assert_eq!(le("0.0001"), "1");
        assert_eq!(le("0.0003"), "4");
        assert_eq!(le("0.005"), "5");
    }

    #[test]
    fn proxies_pass_through_with_pod_names_and_gone_ones_leave() {
        let p = pod_proxy();
        let host = ProxyId {
            kind: ProxyKind::Nginx,
            scope: ProxyScope::Cgroup("/system.slice/nginx.service".into()),
            fingerprint: 1 << 32,
        };
        let pods = HashMap::from([(
            UID.to_string(),
            PodRef {
                namespace: "shop".into(),
                name: "web-1".into(),
            },
        )]);
        let mut b = SnapshotBuilder::default();
        let mut pv = proxy_view(&p, &[10], 2_500_000_000, 7);
        pv.restarts = 2;
        let s = b.build(
            &view(vec![pv, proxy_view(&host, &[20], 0, 0)]),
            BTreeMap::new(),
            &pods,
        );
        assert_eq!(s.proxies.len(), 2);
        let sp = s.proxies.iter().find(|s| s.id == p).unwrap();
        assert_eq!(sp.pod.as_ref().unwrap().name, "web-1");
        assert_eq!(sp.restarts, 2);
        assert!((sp.cpu_seconds - 2.5).abs() < 1e-12);
        assert_eq!(sp.pairing.requests, 7);
        assert_eq!((sp.received_bytes, sp.sent_bytes), (70, 140));
        let sh = s.proxies.iter().find(|s| s.id == host).unwrap();
        assert!(sh.pod.is_none());
        // The host proxy exits: sent once more with its final figures, then left out.
        let s = b.build(
            &view(vec![
                proxy_view(&p, &[10], 3_000_000_000, 9),
                proxy_view(&host, &[], 5, 0),
            ]),
            BTreeMap::new(),
            &pods,
        );
        assert_eq!(s.proxies.len(), 2);
        let s = b.build(
            &view(vec![
                proxy_view(&p, &[10], 3_000_000_000, 9),
                proxy_view(&host, &[], 5, 0),
            ]),
            BTreeMap::new(),
            &pods,
        );
        assert_eq!(s.proxies.len(), 1);
        assert_eq!(s.proxies[0].id, p);
        // It comes back (a restart under the same identity): sent again.
        let s = b.build(
            &view(vec![
                proxy_view(&p, &[10], 3_000_000_000, 9),
                proxy_view(&host, &[21], 6, 0),
            ]),
            BTreeMap::new(),
            &pods,
        );
        assert_eq!(s.proxies.len(), 2);
    }

    #[test]
    fn proxies_over_the_cap_are_exported_as_a_number_and_logged_once() {
        use crate::metrics::{Format, MetricsOptions};
        let m = NodeMetrics::new(MetricsOptions {
            max_proxies: 2,
            ..MetricsOptions::default()
        });
        let proxies: Vec<ProxyView> = (1..=5u64)
            .map(|i| {
                let id = ProxyId {
                    kind: ProxyKind::Envoy,
                    scope: ProxyScope::Pod(format!("{UID}-{i}")),
                    fingerprint: i << 32,
                };
                proxy_view(&id, &[i as u32 + 100], 0, 0)
            })
            .collect();
        let mut b = SnapshotBuilder::default();
        m.update(&b.build(&view(proxies), BTreeMap::new(), &HashMap::new()));
        assert_eq!(m.over_limit(), 3);
        assert!(m
            .encode(Format::PrometheusText)
            .lines()
            .any(|l| l == "smp_proxies_over_limit 3"));
        let mut log = OverLimitLog::default();
        assert!(!log.check(0, 2));
        assert!(log.check(3, 2), "logged the first time");
        assert!(!log.check(3, 2), "and only then");
    }

    #[test]
    fn unattributed_exchanges_become_dropped_hop_counts() {
        let mut b = SnapshotBuilder::default();
        let mut v = view(vec![]);
        v.unattributed_exchanges = 3;
        assert_eq!(
            b.build(&v, BTreeMap::new(), &HashMap::new())
                .unattributed_hops,
            6
        );
        v.unattributed_exchanges = 4;
        assert_eq!(
            b.build(&v, BTreeMap::new(), &HashMap::new())
                .unattributed_hops,
            2
        );
        assert_eq!(
            b.build(&v, BTreeMap::new(), &HashMap::new())
                .unattributed_hops,
            0
        );
    }

    /// A fake API server on 127.0.0.1 (self-signed certificate) answering every request with
    /// the pod list in `list`; returns its port and the CA to trust.
    async fn fake_api_server(list: Arc<Mutex<String>>) -> (u16, String) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (listener, acceptor, ca_pem) = crate::proxy::kube::test_tls_listener().await;
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let body = list.lock().unwrap().clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        (port, ca_pem)
    }

    fn pod_list(pods: &[(&str, &str)]) -> String {
        let items: Vec<String> = pods
            .iter()
            .map(|(uid, name)| {
                format!(r#"{{"metadata":{{"name":"{name}","namespace":"shop","uid":"{uid}"}}}}"#)
            })
            .collect();
        format!(r#"{{"kind":"PodList","items":[{}]}}"#, items.join(","))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pod_names_come_from_the_api_server_and_new_pods_refresh_soon() {
        const NEW: &str = "5d2e8f3a-1c4b-4a6e-8b7d-2f9e0a1b3c02";
        let list = Arc::new(Mutex::new(pod_list(&[(UID, "web-1")])));
        let (port, ca) = fake_api_server(Arc::clone(&list)).await;
        let client = KubeClient::new("127.0.0.1", port, "t".into(), ca.as_bytes()).unwrap();
        // A long period: only a new pod can cause the second refresh within the test.
        let names = PodNames::start(
            client,
            Some("n1".into()),
            PodRefresh {
                every: Duration::from_secs(3600),
                min_gap: Duration::from_millis(100),
            },
        );
        let wait_for = |uid: &'static str| {
            let names = &names;
            async move {
                for _ in 0..100 {
                    if let Some(p) = pods_now(Some(names)).get(uid) {
                        return p.clone();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("pod {uid} never named");
            }
        };
        assert_eq!(wait_for(UID).await.name, "web-1");

        // A pod created later: a proxy in it is seen, the list is read again at once.
        *list.lock().unwrap() = pod_list(&[(UID, "web-1"), (NEW, "web-2")]);
        let new_proxy = ProxyId {
            kind: ProxyKind::Envoy,
            scope: ProxyScope::Pod(NEW.into()),
            fingerprint: 9 << 32,
        };
        let v = view(vec![proxy_view(&new_proxy, &[30], 0, 0)]);
        names.ask_for_unknown(&v);
        let pod = wait_for(NEW).await;
        assert_eq!(
            (pod.namespace.as_str(), pod.name.as_str()),
            ("shop", "web-2")
        );
        let snap = SnapshotBuilder::default().build(&v, BTreeMap::new(), &pods_now(Some(&names)));
        assert_eq!(snap.proxies[0].pod, Some(pod));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_in_the_pod_name_task_is_survived() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let c = Arc::clone(&calls);
        let names = PodNames::start_with(
            move || {
                let call = c.fetch_add(1, Ordering::SeqCst);
                async move {
                    if call == 0 {
                        panic!("injected: first pod list read panics");
                    }
                    Ok(HashMap::from([(
                        UID.to_string(),
                        PodRef {
                            namespace: "shop".into(),
                            name: "web-1".into(),
                        },
                    )]))
                }
            },
            PodRefresh {
                every: Duration::from_secs(3600),
                min_gap: Duration::from_millis(50),
            },
        );
        for _ in 0..100 {
            if pods_now(Some(&names)).contains_key(UID) {
                assert!(calls.load(Ordering::SeqCst) >= 2);
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the pod name task did not come back after its panic");
    }

    #[test]
    fn the_builder_feeds_monotonic_counters_across_a_restart() {
        // End to end through NodeMetrics: a restart in the tracker's view (same identity,
        // totals continue, restarts + 1) moves the exported counters by the growth only.
        use crate::metrics::{Format, MetricsOptions};
        let m = NodeMetrics::new(MetricsOptions::default());
        let p = pod_proxy();
        let mut b = SnapshotBuilder::default();
        m.update(&b.build(
            &view(vec![proxy_view(&p, &[10], 1_000_000_000, 100)]),
            BTreeMap::new(),
            &HashMap::new(),
        ));
        let mut after = proxy_view(&p, &[11], 1_200_000_000, 130);
        after.restarts = 1;
        m.update(&b.build(&view(vec![after]), BTreeMap::new(), &HashMap::new()));
        let text = m.encode(Format::PrometheusText);
        let line = |name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
                .rsplit_once(' ')
                .unwrap()
                .1
                .to_string()
        };
        assert_eq!(line("smp_proxy_requests_total{"), "130");
        assert_eq!(line("smp_proxy_cpu_seconds_total{"), "1.2");
        assert_eq!(line("smp_proxy_restarts_total{"), "1");
    }
}
