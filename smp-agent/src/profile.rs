//! The main job (`smp-agent profile`): drive load through the mesh while the probes measure
//! the sidecars, then the same load around them (baseline), and assemble the SMP result set.
//!
//! [`run`] is the library entry point; `cli/profile.rs` builds a [`Plan`] from a file and
//! flags, prints the summary and writes the files. Nothing here touches aya: the probes are
//! reached through [`Tracker`].

use std::{
    collections::BTreeMap,
    sync::Arc,
    time::{Duration, SystemTime},
};

use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::{
    aggregate::hops,
    loadgen::{self, Control, LoadSpec, Results},
    proxy::{DiscoveryConfig, ProxyId},
    report::{
        breakdown::{self, Breakdown, BreakdownAt, NetworkLeg},
        details::{
            self, scale_histogram, ConsistencyCheck, Details, Distribution, HistogramCodecError,
            Hop, Losses, Percentiles, RunSummary, SideShare, SidecarUsage,
        },
        set::{environment_for_this_host, sidecar_totals},
        smp::{Latency, PerformanceTestResult, ServiceMeshConfig, TestConfigFile, Timestamp},
        ResultSet,
    },
    tracker::{self, PathView, ProxyWindow, Tracker, TrackerConfig, TrackerView},
};

/// Label on the result when Ctrl-C cut the run short.
pub const INTERRUPTED_LABEL: &str = "smp-agent/interrupted";

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The test as it will be written (`test-config.yaml`): load and mesh.
    pub test: TestConfigFile,
    /// The load through the mesh.
    pub meshed: LoadSpec,
    /// The same load around the sidecars, if a baseline URL was given.
    pub baseline: Option<LoadSpec>,
    /// Which processes are the sidecars.
    pub sidecars: DiscoveryConfig,
    /// Run the load from inside this network namespace (the lab's client pod).
    pub netns: Option<String>,
    /// mTLS between the sidecars, when known (SMP `mtls_enabled`).
    pub mtls: bool,
    /// Worker threads of the sidecars, when known (SMP `proxy_concurrency`).
    pub proxy_concurrency: Option<i32>,
    /// Report only proxies that had one of these pids (the lab's sidecars; other proxies of
    /// the same kind on this machine are found by name but not ours).
    pub only_pids: Option<Vec<u32>>,
    /// Names of pods by address (the lab's `client` and `server`), for the per-workload rows
    /// of a node proxy; other pods are shown by address.
    pub pod_names: BTreeMap<std::net::IpAddr, String>,
}

/// Progress, for the command line to show.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Probes attached; these sidecars were found.
    Tracking { sidecars: Vec<String> },
    /// A load phase starts.
    Phase {
        name: &'static str,
        url: String,
        seconds: f64,
    },
}

/// Why a profile could not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(transparent)]
    Tracker(#[from] tracker::TrackerError),
    #[error(
        "no sidecar found (looked for {looked_for}); is the mesh running on this node? \
         Name them with --sidecar NAME or --sidecar-pid PID"
    )]
    NoSidecars { looked_for: String },
    #[error("{phase} load failed")]
    Load {
        phase: &'static str,
        #[source]
        source: loadgen::LoadError,
    },
    #[error("cannot run the load in network namespace {netns}: {reason}")]
    Netns { netns: String, reason: String },
    #[error("cannot encode a histogram: {0}")]
    Histogram(String),
}

/// A finished (or interrupted) profile.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub set: ResultSet,
    /// Ctrl-C cut it short: what was measured until then is in `set`.
    pub interrupted: bool,
    /// Per-sidecar figures over the meshed run (for the summary).
    pub sidecars: Vec<ProxyWindow>,
    pub meshed: Results,
    pub baseline: Option<Results>,
}

/// Runs the plan: meshed load with the sidecars measured, then the baseline. `stop` resolving
/// (Ctrl-C) stops the current load phase early and skips the rest; the outcome then holds
/// what was measured.
pub async fn run(
    plan: &Plan,
    stop: impl std::future::Future<Output = ()>,
    mut progress: impl FnMut(Progress),
) -> Result<Outcome, ProfileError> {
    tokio::pin!(stop);
    let mut tracker = Tracker::start(TrackerConfig {
        discovery: plan.sidecars.clone(),
        ..TrackerConfig::default()
    })
    .await?;
    let found = tracker.view();
    if found.proxies.iter().all(|p| p.pids.is_empty()) {
        let mut looked_for: Vec<String> = plan.sidecars.names.clone();
        looked_for.extend(plan.sidecars.pids.iter().map(|p| format!("pid {p}")));
        return Err(ProfileError::NoSidecars {
            looked_for: looked_for.join(", "),
        });
    }
    progress(Progress::Tracking {
        sidecars: found.proxies.iter().map(|p| p.id.clone()).collect(),
    });

    // What waking tasks on idle CPUs costs here, before any load: the self-consistency
    // check's resolution (`host::wake`); the check needs a baseline run.
    let ends_wake = match plan.baseline {
        Some(_) => tokio::task::spawn_blocking(|| {
            use crate::host::wake::{idle_cpu_round_trip, PAUSE, ROUNDS};
            idle_cpu_round_trip(ROUNDS, PAUSE)
        })
        .await
        .ok()
        .flatten(),
        None => None,
    };
    let mut interrupted = false;
    // Meshed: the sidecars are measured over the measured part of the load (after warm-up).
    progress(Progress::Phase {
        name: "meshed",
        url: plan.meshed.urls.join(", "),
        seconds: (plan.meshed.warmup + plan.meshed.duration).as_secs_f64(),
    });
    let control = Control::new();
    let mut load = spawn_load(plan.meshed.clone(), plan.netns.clone(), control.clone());
    let warm_until = Instant::now() + plan.meshed.warmup;
    let mut window_start: Option<(TrackerView, SystemTime)> = None;
    let meshed = loop {
        if window_start.is_none() && Instant::now() >= warm_until {
            // The window's start is taken before the CPU sample, which may take a few ms:
            // the client's measured part begins at `warm_until` too.
            let from_ns = crate::host::monotonic_ns();
            tracker.sample()?;
            tracker.reset_window(from_ns);
            window_start = Some((tracker.view(), SystemTime::now()));
        }
        let until = if window_start.is_none() {
            warm_until
        } else {
            Instant::now() + Duration::from_millis(250)
        };
        tokio::select! {
            r = &mut load => {
                break joined(r).map_err(|source| ProfileError::Load { phase: "meshed", source })?
            }
            r = tracker.pump_until(until) => r?,
            _ = &mut stop, if !interrupted => {
                interrupted = true;
                control.stop();
            }
        }
    };
    // Let the last exchanges arrive, then close the window.
    tracker
        .pump_until(Instant::now() + Duration::from_millis(200))
        .await?;
    tracker.sample()?;
    let end_view = tracker.view();
    let paths = tracker.paths(&breakdown::QUANTILES.map(|(_, q)| q));
    let t1 = SystemTime::now();
    let (start_view, t0) = window_start.unwrap_or_else(|| (found.clone(), t1));
    let mut windows = tracker::window(&start_view, &end_view);
    if let Some(pids) = &plan.only_pids {
        windows.retain(|w| w.pids_seen.iter().any(|p| pids.contains(p)));
    }

    let baseline = match (&plan.baseline, interrupted) {
        (Some(spec), false) => {
            progress(Progress::Phase {
                name: "baseline",
                url: spec.urls.join(", "),
                seconds: (spec.warmup + spec.duration).as_secs_f64(),
            });
            let control = Control::new();
            let mut load = spawn_load(spec.clone(), plan.netns.clone(), control.clone());
            let r = loop {
                tokio::select! {
                    r = &mut load => break joined(r),
                    _ = &mut stop, if !interrupted => {
                        interrupted = true;
                        control.stop();
                    }
                }
            };
            Some(r.map_err(|source| ProfileError::Load {
                phase: "baseline",
                source,
            })?)
        }
        _ => None,
    };
    drop(tracker); // detach the probes

    let set = assemble(
        plan,
        (&meshed, baseline.as_ref()),
        &windows,
        (&end_view, &paths),
        (t0, t1),
        interrupted,
        ends_wake,
    )?;
    Ok(Outcome {
        set,
        interrupted,
        sidecars: windows,
        meshed,
        baseline,
    })
}

/// Runs the load on its own thread (inside `netns` when given), so the probes' event loop
/// and the load generator do not share a runtime.
fn spawn_load(
    spec: LoadSpec,
    netns: Option<String>,
    control: Arc<Control>,
) -> tokio::sync::oneshot::Receiver<Result<Results, loadgen::LoadError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let go = move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| loadgen::LoadError::Runtime(e.to_string()))?;
            rt.block_on(loadgen::run(&spec, control))
        };
        let r = match netns {
            // Threads inherit the namespace of the thread that creates them: the load
            // generator's threads join the pod too.
            Some(ns) => crate::lab::netns::in_netns(&ns, go).unwrap_or_else(|e| {
                Err(loadgen::LoadError::Runtime(format!(
                    "cannot enter network namespace {ns}: {e}"
                )))
            }),
            None => go(),
        };
        let _ = tx.send(r);
    });
    rx
}

/// The load thread's answer (a thread that died without one panicked).
fn joined(
    r: Result<Result<Results, loadgen::LoadError>, tokio::sync::oneshot::error::RecvError>,
) -> Result<Results, loadgen::LoadError> {
    r.unwrap_or_else(|_| Err(loadgen::LoadError::Runtime("load thread panicked".into())))
}

/// µs histogram of the load generator → ns histogram with our latency settings.
fn client_histogram_ns(r: &Results) -> Result<Histogram<u64>, ProfileError> {
    scale_histogram(r.histogram(), 1000)
        .ok_or_else(|| ProfileError::Histogram("client latency does not fit in ns".into()))
}

fn run_summary(spec: &LoadSpec, r: &Results) -> Result<RunSummary, ProfileError> {
    let h = client_histogram_ns(r)?;
    Ok(RunSummary {
        url: spec.urls.join(", "),
        actual_qps: r.achieved_rate,
        errors: r.errors.total(),
        grpc_status: r
            .grpc_status
            .iter()
            .map(|(c, n)| (format!("{} ({c})", loadgen::grpc::code_name(*c)), *n))
            .collect(),
        latency: Distribution::from_histogram_ns(&h)
            .map_err(|e| ProfileError::Histogram(e.to_string()))?,
    })
}

/// A name for each proxy that stays the same from run to run: `envoy-client` (the outbound
/// sidecar, in the client's pod) / `envoy-server` (the inbound one) when that is unique (the
/// usual two sidecars of a request path), else the full identity.
fn stable_names(windows: &[ProxyWindow], view: &TrackerView) -> BTreeMap<String, String> {
    let dominant = |w: &ProxyWindow| {
        let mut best: Option<(hops::Direction, u64)> = None;
        for (d, _, h) in view.hops_of(&w.proxy) {
            if best.is_none_or(|(_, n)| h.len() > n) {
                best = Some((d, h.len()));
            }
        }
        best.map(|(d, _)| match d {
            // The outbound sidecar sits in the client's pod, the inbound one in the server's.
            hops::Direction::Outbound => "client",
            hops::Direction::Inbound => "server",
            hops::Direction::Gateway => "gateway",
        })
    };
    // A node proxy serves pods on both sides of a request: it is named for the node.
    let role = |w: &ProxyWindow| {
        if served_pods(view, &w.proxy) > 1 {
            Some("node")
        } else {
            dominant(w)
        }
    };
    let short: Vec<(String, Option<String>)> = windows
        .iter()
        .map(|w| (w.id.clone(), role(w).map(|d| format!("{}-{d}", w.kind))))
        .collect();
    short
        .iter()
        .map(|(id, s)| {
            let unique = s
                .as_ref()
                .is_some_and(|s| short.iter().filter(|(_, o)| o.as_ref() == Some(s)).count() == 1);
            (
                id.clone(),
                if unique {
                    s.clone().unwrap_or_default()
                } else {
                    id.clone()
                },
            )
        })
        .collect()
}

/// The pods a proxy served (by address), from its per-workload rows: more than one makes it a
/// node proxy.
fn served_pods(view: &TrackerView, proxy: &crate::proxy::ProxyId) -> usize {
    view.workloads_of(proxy)
        .map(|w| w.served)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// The per-workload rows of every node proxy (a proxy that served more than one pod), with its
/// CPU apportioned by each row's share of its exchanges and its memory by each row's share of
/// its connections.
fn workload_shares(
    plan: &Plan,
    windows: &[ProxyWindow],
    view: &TrackerView,
    name_of: &dyn Fn(&ProxyWindow) -> String,
    run_seconds: f64,
) -> Result<Vec<details::WorkloadShare>, ProfileError> {
    // The lab's names, else the pod (its UID) or named namespace holding the address on this
    // node, else the address.
    let mut book = crate::host::addresses::AddressBook::default();
    let mut name = |a: std::net::IpAddr| {
        plan.pod_names
            .get(&a)
            .cloned()
            .or_else(|| {
                let o = book.owner(a)?;
                o.pod_uid.clone().or_else(|| o.netns_name.clone())
            })
            .unwrap_or(a.to_string())
    };
    let dist = |h: &Histogram<u64>| {
        Distribution::from_histogram_ns(h).map_err(|e| ProfileError::Histogram(e.to_string()))
    };
    let mut out = Vec::new();
    for w in windows {
        if served_pods(view, &w.proxy) < 2 {
            continue;
        }
        let total: u64 = view.workloads_of(&w.proxy).map(|r| r.exchanges).sum();
        let connections: u64 = view.workloads_of(&w.proxy).map(|r| r.connections).sum();
        let mem_mb = w.memory.as_ref().map_or(0.0, |m| m.mem_mb);
        let mut rows: Vec<_> = view.workloads_of(&w.proxy).collect();
        rows.sort_by_key(|r| (r.served, r.direction, r.peer));
        for r in rows {
            let share = r.exchanges as f64 / total.max(1) as f64;
            let cpu_seconds = w.cpu.cpu_seconds * share;
            out.push(details::WorkloadShare {
                proxy: name_of(w),
                workload: name(r.served),
                address: r.served.to_string(),
                direction: r.direction,
                peer: name(r.peer),
                exchanges: r.exchanges,
                request_hop: dist(&r.request)?,
                response_hop: dist(&r.response)?,
                cpu_seconds,
                cpu_mcores: if run_seconds > 0.0 {
                    cpu_seconds / run_seconds * 1000.0
                } else {
                    0.0
                },
                connections: r.connections,
                mem_mb: mem_mb * r.connections as f64 / connections.max(1) as f64,
            });
        }
    }
    Ok(out)
}

/// The breakdown document of the joined paths (`None` when none was joined).
fn breakdown_of(
    paths: &PathView,
    overhead: Option<&Percentiles>,
    names: &BTreeMap<String, String>,
) -> Result<Option<Breakdown>, ProfileError> {
    let c = &paths.counts;
    if c.joined + c.no_peer + c.ambiguous + c.unclaimed + c.overflow == 0 {
        return Ok(None);
    }
    let hist = |e: HistogramCodecError| ProfileError::Histogram(e.to_string());
    let name = |id: &ProxyId| {
        let id = id.to_string();
        names.get(&id).cloned().unwrap_or(id)
    };
    let mut network_legs = Vec::new();
    for ((a, b, leg), h) in &paths.legs {
        network_legs.push(NetworkLeg {
            source: name(a),
            destination: name(b),
            leg: *leg,
            latency: Distribution::from_histogram_ns(h).map_err(hist)?,
        });
    }
    let at = breakdown::QUANTILES
        .iter()
        .zip(&paths.at)
        .map(|((name, _), a)| BreakdownAt::new(name, a, overhead.and_then(|o| o.get(name))))
        .collect();
    let rtt_estimates = paths
        .estimates
        .iter()
        .map(|((id, peer), e)| breakdown::rtt_estimate(name(id), *peer, e).map_err(hist))
        .collect::<Result<_, _>>()?;
    Ok(Some(Breakdown {
        paths: *c,
        network_legs,
        parts: breakdown::part_distributions(&paths.parts).map_err(hist)?,
        at,
        rtt_estimates,
    }))
}

fn assemble(
    plan: &Plan,
    (meshed, baseline): (&Results, Option<&Results>),
    windows: &[ProxyWindow],
    (view, paths): (&TrackerView, &PathView),
    (t0, t1): (SystemTime, SystemTime),
    interrupted: bool,
    ends_wake: Option<Duration>,
) -> Result<ResultSet, ProfileError> {
    let run_seconds = t1.duration_since(t0).unwrap_or_default().as_secs_f64();
    let names = stable_names(windows, view);
    let name_of = |w: &ProxyWindow| names.get(&w.id).cloned().unwrap_or_else(|| w.id.clone());

    let mut d = Details::new("");
    d.start_time = Some(Timestamp::from_system_time(t0));
    d.end_time = Some(Timestamp::from_system_time(t1));
    d.end_to_end.meshed = run_summary(&plan.meshed, meshed)?;
    if let (Some(spec), Some(b)) = (&plan.baseline, baseline) {
        d.end_to_end.baseline = Some(run_summary(spec, b)?);
    }
    d.end_to_end.compute_overhead();

    let mut losses = Losses {
        ringbuf_drops: view.loss.ringbuf_dropped,
        map_full: view.loss.map_insert_failed,
        events_lost: crate::aggregate::LossCounters::REASONS
            .iter()
            .map(|(r, n)| (r.to_string(), n(&view.loss)))
            .filter(|(_, n)| *n > 0)
            .collect(),
        exchanges_left_out: [
            ("before_window", view.before_window_exchanges),
            ("unattributed", view.unattributed_exchanges),
            ("workload_rows_full", view.workload_overflow),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (r.to_string(), n))
        .collect(),
        ..Losses::default()
    };
    for w in windows {
        // HTTP/2 messages are not requests to the pairing: they are counted here, not lost.
        losses.unpaired += w.pairing.unpaired();
        losses.paired += w.pairing.paired;
        for (reason, count) in crate::metrics::UNPAIRED_REASONS {
            let n = count(&w.pairing);
            if n > 0 {
                *losses
                    .unpaired_reasons
                    .entry(reason.to_string())
                    .or_default() += n;
            }
        }
        for (hop_direction, hop_leg, h) in view.hops_of(&w.proxy) {
            let dist = |h: Option<&Histogram<u64>>| {
                h.map(Distribution::from_histogram_ns)
                    .transpose()
                    .map_err(|e| ProfileError::Histogram(e.to_string()))
            };
            let wait = dist(view.wait_of(&w.proxy, hop_direction, hop_leg))?;
            let send = dist(view.send_of(&w.proxy, hop_direction, hop_leg))?;
            let (direction, leg) = (hop_direction, hop_leg);
            d.hops.push(Hop {
                proxy: name_of(w),
                kind: w.kind.clone(),
                pid: w.pid,
                direction,
                direction_reason: hop_direction.reason().to_string(),
                leg,
                latency: Distribution::from_histogram_ns(h)
                    .map_err(|e| ProfileError::Histogram(e.to_string()))?,
                unpaired: if leg == details::Leg::Request {
                    w.pairing.unpaired()
                } else {
                    0
                },
                wait,
                send,
                sides: view
                    .sides_of(&w.proxy, hop_direction)
                    .map(SideShare::from_counts)
                    .unwrap_or_default(),
            });
        }
        let mut usage = SidecarUsage {
            proxy: name_of(w),
            kind: w.kind.clone(),
            pid: w.pid,
            cpu_seconds: w.cpu.cpu_seconds,
            mem_mb: w.memory.as_ref().map_or(0.0, |m| m.mem_mb),
            mem_peak_mb: w.memory.as_ref().map_or(0.0, |m| m.rss_peak_mb),
            requests: w.requests,
            ..SidecarUsage::default()
        };
        usage.derive(run_seconds);
        d.sidecars.push(usage);
    }
    d.workloads = workload_shares(plan, windows, view, &name_of, run_seconds)?;
    d.data_plane =
        crate::report::details::DataPlane::of_kinds(d.sidecars.iter().map(|s| s.kind.as_str()));
    d.losses = losses;
    if let Some(o) = &d.end_to_end.overhead {
        d.consistency = Some(ConsistencyCheck::compute(
            &d.hops,
            o.p50,
            0.05,
            0.25,
            ends_wake.map_or(0.0, |w| w.as_secs_f64() * 1e3),
        ));
    }
    d.breakdown = breakdown_of(paths, d.end_to_end.overhead.as_ref(), &names)?;

    let mut result = PerformanceTestResult {
        start_time: Some(Timestamp::from_system_time(t0)),
        end_time: Some(Timestamp::from_system_time(t1)),
        latencies_ms: Some(Latency::from_histogram_ns(&client_histogram_ns(meshed)?)),
        actual_qps: meshed.achieved_rate,
        ..Default::default()
    };
    if interrupted {
        result
            .labels
            .insert(INTERRUPTED_LABEL.to_string(), "true".to_string());
    }
    // gRPC runs: the meshed run's responses by status (SMP results have no field for them).
    for (code, n) in &meshed.grpc_status {
        result.labels.insert(
            format!("grpc_status_{}", loadgen::grpc::code_name(*code)),
            n.to_string(),
        );
    }
    // Requests per second through the sidecars, once per request (each request crosses every
    // sidecar on its path): the busiest sidecar's count (SMP `sidecar.rps`).
    let sidecar_rps = d
        .sidecars
        .iter()
        .map(|s| s.requests as f64 / run_seconds.max(1e-9))
        .fold(0.0, f64::max);
    let sidecar_bps =
        (meshed.bytes.sent + meshed.bytes.received) as f64 / meshed.duration_s.max(1e-9);
    let mesh_config = ServiceMeshConfig {
        sidecar: Some(sidecar_totals(&d.sidecars, sidecar_rps, sidecar_bps)),
        mesh_type: Some(plan.test.mesh.clone()),
        mtls_enabled: plan.mtls,
        proxy_concurrency: plan.proxy_concurrency.unwrap_or(0),
        ..Default::default()
    };
    Ok(ResultSet {
        test: plan.test.clone(),
        result,
        mesh_config,
        environment: environment_for_this_host(),
        details: Some(d),
    })
}
