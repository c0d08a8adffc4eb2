//! `smp-agent profile`: what does my mesh cost? Drives load through the mesh while the probes
//! measure every sidecar on the path, then the same load around the sidecars (baseline), and
//! writes an SMP result set, a details document and an HTML report.

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Duration,
};

use anyhow::{bail, Context as _};
use serde::Serialize;

use super::{
    signals::{StopSignal, StopSignals},
    OutputFormat,
};
use crate::{
    lab::{
        config::{AppProtocol, ProxyKind},
        Lab, LabConfig, LabInfo,
    },
    loadgen::{grpc, LoadSpec, Protocol as LoadProtocol, Rate},
    profile::{self, Outcome, Plan, Progress},
    proxy::DiscoveryConfig,
    report::{
        file::read_test_config,
        smp::{Client, MeshType, PerformanceTestConfig, Protocol, ServiceMesh, SmpDuration},
        TestConfigFile,
    },
};

/// Measure a mesh's overhead: per-hop sidecar latency, sidecar CPU and memory, meshed vs
/// baseline client latency; write SMP results and a report.
///
/// Examples:
///   smp-agent profile --lab                              # the built-in mesh lab (Envoy)
///   smp-agent profile --lab --proxy nginx --mtls --rate 500 --duration 20s
///   smp-agent profile --lab --proxy ours --app-protocol grpc
///   smp-agent profile --config load-test.yaml --baseline-url http://10.0.0.7:8081/
///   smp-agent profile --url http://svc:8080/ --rate 1000 --sidecar envoy --mesh istio
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// SMP test configuration (mesheryctl `{test, mesh}` YAML/JSON): the load
    /// (`test.clients[0]`, `test.duration`) and the mesh. Flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Meshed URL (through the sidecars). With --lab: the lab's meshed URL.
    #[arg(long)]
    pub url: Option<String>,

    /// The same service bypassing the sidecars; without it no baseline run is made.
    /// With --lab: the lab's baseline URL.
    #[arg(long)]
    pub baseline_url: Option<String>,

    /// Requests per second (open loop), or `max` [default: 300, or the file's rps].
    #[arg(long, value_name = "RPS|max")]
    pub rate: Option<String>,

    /// Concurrent connections [default: 16, or the file's].
    #[arg(long)]
    pub connections: Option<u32>,

    /// Measured duration of each run, Go syntax [default: 10s, or the file's].
    #[arg(long, value_name = "DURATION")]
    pub duration: Option<String>,

    /// Load before measuring starts (sent, not measured), each run.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    pub warmup: String,

    /// Mesh type for the SMP result (istio, linkerd, consul, …) [default: the file's, or
    /// INVALID_MESH]. Example: --mesh istio
    #[arg(long)]
    pub mesh: Option<String>,

    /// Mesh version for the SMP result. Example: --mesh-version 1.24.0
    #[arg(long)]
    pub mesh_version: Option<String>,

    /// Sidecar proxies to measure, by executable or comm name (repeatable) [default: envoy,
    /// linkerd2-proxy, haproxy, nginx, traefik, ztunnel].
    #[arg(long = "sidecar", value_name = "NAME")]
    pub sidecars: Vec<String>,

    /// Sidecar proxies to measure, by pid (repeatable).
    #[arg(long = "sidecar-pid", value_name = "PID")]
    pub sidecar_pids: Vec<u32>,

    /// mTLS between the sidecars (recorded in the SMP mesh config; with --lab: turned on).
    #[arg(long)]
    pub mtls: bool,

    /// Bring up the built-in mesh lab, profile it, take it down.
    #[arg(long)]
    pub lab: bool,

    /// With --lab: the sidecar proxy kind.
    #[arg(long, value_enum, default_value = "envoy", requires = "lab")]
    pub proxy: ProxyKind,

    /// With --lab: HTTP/2 between the sidecars (envoy, haproxy, ours; not nginx).
    #[arg(long, requires = "lab")]
    pub h2: bool,

    /// With --lab: what the client and the app speak. h2c and grpc (unary `/smp.Lab/Echo`,
    /// SMP protocol PROTOCOL_GRPC) put HTTP/2 on every leg, --h2 implied; not with nginx.
    #[arg(long, value_enum, default_value = "http1", requires = "lab")]
    pub app_protocol: AppProtocol,

    /// With --lab --proxy ztunnel: one ztunnel per pod (dedicated) or one on the node serving
    /// both pods (shared).
    #[arg(long, value_enum, default_value = "dedicated", requires = "lab")]
    pub ztunnel_mode: crate::lab::config::ZtunnelMode,

    /// With --lab: worker threads of each sidecar.
    #[arg(long, requires = "lab")]
    pub concurrency: Option<u32>,

    /// With --lab: IPv6 pods (fd77::/64) instead of IPv4 (10.77.0.0/24).
    #[arg(long, requires = "lab")]
    pub ipv6: bool,

    /// With --lab: one-way delay, microseconds, added to every TCP segment the sidecars
    /// exchange across the pods' link (the baseline crosses undelayed).
    #[arg(long, default_value_t = 0, requires = "lab")]
    pub link_delay_us: u64,

    /// With --lab: the lab's name.
    #[arg(long, default_value = "smpprofile", requires = "lab")]
    pub lab_name: String,

    /// Where to write the results [default: ./smp-results/<UTC time>/].
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,

    /// Summary format on stdout (the files are written either way).
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// What `--output json` prints.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    pub output_dir: &'a Path,
    pub files: Vec<PathBuf>,
    pub interrupted: bool,
    pub actual_qps: f64,
    pub meshed_p50_ms: f64,
    pub meshed_p99_ms: f64,
    pub baseline_p50_ms: Option<f64>,
    pub baseline_p99_ms: Option<f64>,
    pub sidecars: usize,
}

fn parse_duration(flag: &str, text: &str) -> anyhow::Result<Duration> {
    crate::duration::parse(text).with_context(|| format!("invalid --{flag} {text:?}"))
}

/// The label of a run through Istio's ambient data plane (ztunnel), key and value.
pub const AMBIENT_LABEL: (&str, &str) = ("istio_data_plane", "ambient");

/// The test config: the file's (if any) with the flags applied, one client.
fn test_config(args: &Args, lab: Option<&LabInfo>) -> anyhow::Result<TestConfigFile> {
    let mut file = match &args.config {
        Some(p) => read_test_config(p)
            .with_context(|| format!("failed to read SMP test config {}", p.display()))?,
        None => TestConfigFile {
            test: PerformanceTestConfig {
                name: "smp-agent profile".into(),
                clients: vec![Client {
                    protocol: Protocol::Http,
                    connections: 16,
                    rps: 300,
                    ..Client::default()
                }],
                duration: Some(SmpDuration::new(Duration::from_secs(10))),
                ..PerformanceTestConfig::default()
            },
            mesh: ServiceMesh::default(),
        },
    };
    if file.test.clients.is_empty() {
        file.test.clients.push(Client::default());
    }
    let client = &mut file.test.clients[0];
    client.load_generator = "smp-agent".into();
    if let Some(u) = args.url.as_ref() {
        client.endpoint_urls = vec![u.clone()];
    } else if let Some(l) = lab {
        client.endpoint_urls = vec![lab_url(l, &l.meshed_url)];
        if l.app_protocol == AppProtocol::Grpc {
            client.protocol = Protocol::Grpc;
        }
        if l.app_protocol != AppProtocol::Http1 {
            // SMP has no HTTP/2 protocol value: the label says what the client spoke.
            file.test
                .labels
                .insert("app_protocol".into(), l.app_protocol.to_string());
        }
        if args.link_delay_us > 0 {
            file.test
                .labels
                .insert("lab_link_delay_us".into(), args.link_delay_us.to_string());
        }
        if l.outbound.kind == crate::lab::ProxyKind::Ztunnel {
            // (`LabConfig::ambient`: ztunnel is in both pods or in neither.)
            // Istio's ambient data plane: SMP's mesh type has no mode, the label tells it
            // from Istio's sidecars.
            if file.mesh.r#type == MeshType::InvalidMesh {
                file.mesh.r#type = MeshType::Istio;
            }
            file.test
                .labels
                .insert(AMBIENT_LABEL.0.into(), AMBIENT_LABEL.1.into());
        }
    }
    if client.endpoint_urls.is_empty() {
        bail!("give --url (the meshed URL), --config with endpoint_urls, or --lab");
    }
    if let Some(r) = &args.rate {
        client.rps = match Rate::parse(r)? {
            Rate::Max => 0,
            Rate::Fixed(v) => v.round() as i64,
        };
    }
    if let Some(c) = args.connections {
        client.connections = i32::try_from(c).context("--connections is too large")?;
    }
    if let Some(d) = &args.duration {
        file.test.duration = Some(SmpDuration::new(parse_duration("duration", d)?));
    }
    if let Some(m) = &args.mesh {
        file.mesh.r#type = MeshType::from_name(m).with_context(|| {
            format!("unknown --mesh {m:?}: use istio, linkerd, consul, kuma, app_mesh, …")
        })?;
    }
    if let Some(v) = &args.mesh_version {
        file.mesh.version.clone_from(v);
    }
    Ok(file)
}

/// A lab URL (`meshed_url` or `baseline_url`) for the lab's app protocol: the gRPC method's
/// path for grpc.
fn lab_url(lab: &LabInfo, base: &str) -> String {
    match lab.app_protocol {
        AppProtocol::Grpc => grpc::lab_method_url(base),
        AppProtocol::Http1 | AppProtocol::H2c => base.to_string(),
    }
}

fn default_output_dir() -> PathBuf {
    let now = time::OffsetDateTime::now_utc();
    let stamp = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    PathBuf::from("smp-results").join(stamp)
}

pub async fn execute(args: Args) -> anyhow::Result<ExitCode> {
    let warmup = parse_duration("warmup", &args.warmup)?;
    if let Some(d) = &args.duration {
        parse_duration("duration", d)?;
    }
    if args.config.is_none() && args.url.is_none() && !args.lab {
        bail!("give --url (the meshed URL), --config FILE, or --lab");
    }
    let out_dir = args.output_dir.clone().unwrap_or_else(default_output_dir);
    // From here on SIGTERM and SIGINT stop the run instead of killing the process: what was
    // measured is written and a lab we brought up is taken down. One that arrives while the
    // lab comes up is kept and stops the run as soon as it starts.
    let mut signals = StopSignals::new()?;
    if args.lab {
        let mut cfg = LabConfig {
            name: args.lab_name.clone(),
            proxy: args.proxy,
            mtls: args.mtls,
            h2: args.h2,
            app_protocol: args.app_protocol,
            ztunnel_mode: args.ztunnel_mode,
            link_delay_us: args.link_delay_us,
            ..LabConfig::default()
        };
        if let Some(c) = args.concurrency {
            cfg.outbound.workers = c;
            cfg.inbound.workers = c;
        }
        if args.ipv6 {
            cfg.network = crate::lab::config::NetworkConfig::ipv6();
        }
        cfg.agent_bin = Some(std::env::current_exe().context("cannot find this executable")?);
        let text = args.output == OutputFormat::Text;
        if text {
            println!(
                "bringing up the mesh lab {:?}: {} sidecars{}{}{}{}, app protocol {}",
                cfg.name,
                cfg.proxy.as_str(),
                if cfg.network.is_ipv6() {
                    ", IPv6 pods"
                } else {
                    ""
                },
                if cfg.sidecar_mtls() {
                    ", mTLS between them"
                } else {
                    ""
                },
                if cfg.sidecar_h2() {
                    ", HTTP/2 between them"
                } else {
                    ""
                },
                if cfg.link_delay_us > 0 {
                    format!(
                        ", +{} µs each way on the link between them",
                        cfg.link_delay_us
                    )
                } else {
                    String::new()
                },
                cfg.app_protocol
            );
        }
        let up = cfg.clone();
        let info = tokio::task::spawn_blocking(move || {
            let _ = Lab::down(&up.name);
            Lab::up(&up)
        })
        .await?
        .context("failed to bring up the mesh lab")?;
        let r = profile_lab(&args, &info, warmup, &out_dir, &mut signals).await;
        let name = cfg.name.clone();
        if cfg.link_delay_us > 0 {
            warn_link_losses(&name).await;
        }
        tokio::task::spawn_blocking(move || Lab::down(&name))
            .await?
            .context("failed to take the mesh lab down")?;
        return r;
    }
    let test = test_config(&args, None)?;
    let mut sidecars = DiscoveryConfig::default();
    if !args.sidecars.is_empty() || !args.sidecar_pids.is_empty() {
        sidecars.names = args.sidecars.clone();
        sidecars.pids = args.sidecar_pids.clone();
    }
    let plan = plan(
        &args,
        test,
        warmup,
        args.baseline_url.clone(),
        sidecars,
        None,
    )?;
    finish(&args, &plan, &out_dir, &mut signals).await
}

async fn profile_lab(
    args: &Args,
    info: &LabInfo,
    warmup: Duration,
    out_dir: &Path,
    signals: &mut StopSignals,
) -> anyhow::Result<ExitCode> {
    let test = test_config(args, Some(info))?;
    let pids = vec![info.outbound.pid, info.inbound.pid];
    let sidecars = DiscoveryConfig {
        // Our ground-truth proxy is `smp-agent` itself: by pid only. Other kinds by name too,
        // so that forked workers (nginx, haproxy) join their master.
        names: info
            .outbound
            .kind
            .proxy_kind()
            .map(|k| vec![k.name().to_string()])
            .unwrap_or_default(),
        pids: pids.clone(),
        ..DiscoveryConfig::default()
    };
    let mut plan = plan(
        args,
        test,
        warmup,
        Some(
            args.baseline_url
                .clone()
                .unwrap_or_else(|| lab_url(info, &info.baseline_url)),
        ),
        sidecars,
        Some(info.client_netns.clone()),
    )?;
    if info.app_protocol == AppProtocol::H2c {
        plan.meshed.protocol = LoadProtocol::Http2;
        if let Some(b) = plan.baseline.as_mut() {
            b.protocol = LoadProtocol::Http2;
        }
    }
    plan.mtls = info.mtls;
    plan.proxy_concurrency = args.concurrency.and_then(|c| i32::try_from(c).ok());
    plan.only_pids = Some(pids);
    plan.pod_names = [
        (info.client_addr, "client".to_string()),
        (info.server_addr, "server".to_string()),
    ]
    .into();
    finish(args, &plan, out_dir, signals).await
}

fn plan(
    args: &Args,
    test: TestConfigFile,
    warmup: Duration,
    baseline_url: Option<String>,
    sidecars: DiscoveryConfig,
    netns: Option<String>,
) -> anyhow::Result<Plan> {
    let mut meshed = LoadSpec::from_smp(&test.test).context("cannot use the test's load")?;
    meshed.warmup = warmup;
    meshed.validate()?;
    let baseline = baseline_url.map(|u| LoadSpec {
        urls: vec![u],
        ..meshed.clone()
    });
    if let Some(b) = &baseline {
        b.validate().context("invalid --baseline-url")?;
    }
    Ok(Plan {
        test,
        meshed,
        baseline,
        sidecars,
        netns,
        mtls: args.mtls,
        proxy_concurrency: None,
        only_pids: None,
        pod_names: Default::default(),
    })
}

async fn finish(
    args: &Args,
    plan: &Plan,
    out_dir: &Path,
    signals: &mut StopSignals,
) -> anyhow::Result<ExitCode> {
    let text = args.output == OutputFormat::Text;
    let mut stopped_by: Option<StopSignal> = None;
    let stop = async {
        let s = signals.recv().await;
        eprintln!(
            "{}: stopping; what was measured until now is written",
            s.name()
        );
        stopped_by = Some(s);
    };
    let mut outcome = profile::run(plan, stop, |p| {
        if !text {
            return;
        }
        match p {
            Progress::Tracking { sidecars } => {
                println!("probes attached; {} sidecar(s):", sidecars.len());
                for s in sidecars {
                    println!("  {s}");
                }
            }
            Progress::Phase { name, url, seconds } => {
                println!("{name} run: {url} for {seconds:.0}s (Ctrl-C or SIGTERM stops and keeps what was measured)");
            }
        }
    })
    .await?;
    let written = outcome
        .set
        .write_to_dir(out_dir)
        .with_context(|| format!("failed to write the results into {}", out_dir.display()))?;
    let mut files = vec![
        written.test_config,
        written.result,
        written.mesh_config,
        written.environment,
    ];
    files.extend(written.details);
    files.push(written.report);
    match args.output {
        OutputFormat::Text => print_summary(&outcome, stopped_by, out_dir, &files),
        OutputFormat::Json => {
            let d = outcome.set.details.as_ref();
            let b = d.and_then(|d| d.end_to_end.baseline.as_ref());
            let m = &outcome.meshed.latency;
            let s = Summary {
                output_dir: out_dir,
                files,
                interrupted: outcome.interrupted,
                actual_qps: outcome.meshed.achieved_rate,
                meshed_p50_ms: m.p50_ms,
                meshed_p99_ms: m.p99_ms,
                baseline_p50_ms: b.map(|b| b.latency.percentiles.p50),
                baseline_p99_ms: b.map(|b| b.latency.percentiles.p99),
                sidecars: outcome.sidecars.len(),
            };
            println!("{}", serde_json::to_string_pretty(&s)?);
        }
    }
    Ok(match stopped_by {
        Some(s) if outcome.interrupted => ExitCode::from(s.exit_status()),
        _ => ExitCode::SUCCESS,
    })
}

fn ms(v: f64) -> String {
    if v.abs() < 1.0 {
        format!("{:.0} us", v * 1000.0)
    } else {
        format!("{v:.2} ms")
    }
}

fn print_summary(o: &Outcome, stopped_by: Option<StopSignal>, dir: &Path, files: &[PathBuf]) {
    let Some(d) = o.set.details.as_ref() else {
        return;
    };
    println!();
    if o.interrupted {
        println!(
            "INTERRUPTED by {}: the figures cover the run until then",
            stopped_by.map_or("a stop signal", StopSignal::name)
        );
    }
    let m = &d.end_to_end.meshed;
    println!(
        "client latency        p50        p90        p99      p99.9    ({:.0} req/s, {} errors)",
        m.actual_qps, m.errors
    );
    let row = |label: &str, p: &crate::report::details::Percentiles| {
        println!(
            "  {label:<10} {:>10} {:>10} {:>10} {:>10}",
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.p999)
        );
    };
    row("meshed", &m.latency.percentiles);
    if let Some(b) = &d.end_to_end.baseline {
        row("baseline", &b.latency.percentiles);
    }
    if let Some(ov) = &d.end_to_end.overhead {
        row("overhead", ov);
    }
    if !d.hops.is_empty() {
        println!(
            "per-hop latency (time inside the proxy)   p50        p99      count   wait p50   send p50  sides"
        );
        for h in &d.hops {
            let p = &h.latency.percentiles;
            println!(
                "  {:<24} {:<8} {:<9} {:>10} {:>10} {:>8} {:>10} {:>10}  {}",
                h.proxy,
                h.direction.name(),
                match h.leg {
                    crate::report::details::Leg::Request => "request",
                    crate::report::details::Leg::Response => "response",
                },
                ms(p.p50),
                ms(p.p99),
                h.latency.count,
                h.wait
                    .as_ref()
                    .map_or("-".into(), |w| ms(w.percentiles.p50)),
                h.send
                    .as_ref()
                    .map_or("-".into(), |w| ms(w.percentiles.p50)),
                h.sides_label()
            );
        }
    }
    // A proxy classed a gateway is shown with the reason, once.
    let mut told = std::collections::BTreeSet::new();
    for h in d
        .hops
        .iter()
        .filter(|h| h.direction == crate::report::details::Direction::Gateway)
    {
        if told.insert(&h.proxy) {
            println!("  {} is classed gateway: {}", h.proxy, h.direction_reason);
        }
    }
    for s in d
        .sidecars
        .iter()
        .filter(|s| s.requests > 0 && !d.hops.iter().any(|h| h.proxy == s.proxy))
    {
        println!(
            "WARNING: sidecar {} (pid {}) carried {} requests but reported NO hops: its exchanges were not paired (see the pairing line and docs/hops.md)",
            s.proxy,
            s.pid.map_or("?".into(), |p| p.to_string()),
            s.requests
        );
    }
    for s in &d.sidecars {
        println!(
            "sidecar {:<24} cpu {:>5.0} mcores  {:>6.0} us/request  {:.2} vCPU per 1k rps  mem {:.0} MB (peak {:.0})",
            s.proxy, s.cpu_mcores, s.cpu_us_per_request, s.vcpu_per_1000_rps, s.mem_mb, s.mem_peak_mb
        );
    }
    if !d.workloads.is_empty() {
        println!(
            "per workload of a node proxy (CPU by exchanges, memory by connections)   request p50/p99     response p50/p99   exchanges  cpu  mem"
        );
        for w in &d.workloads {
            let (q, r) = (&w.request_hop.percentiles, &w.response_hop.percentiles);
            println!(
                "  {:<18} {:<14} {:<8} {:<10} {:>8} {:>8}   {:>8} {:>8}  {:>9}  {:.0} mcores  {:.1} MB ({} connections)",
                w.proxy,
                w.workload,
                w.direction.name(),
                match w.direction {
                    crate::report::details::Direction::Inbound => format!("from {}", w.peer),
                    _ => format!("to {}", w.peer),
                },
                ms(q.p50),
                ms(q.p99),
                ms(r.p50),
                ms(r.p99),
                w.exchanges,
                w.cpu_mcores,
                w.mem_mb,
                w.connections
            );
        }
    }
    if let Some(c) = &d.consistency {
        let explained = c.sum_hop_p50_ms + c.sum_wait_p50_ms + c.sum_send_p50_ms;
        println!(
            "self-consistency: p50s of hops {} + waits {} + sends {} = {} vs overhead p50 {} ({:.0}% explained; {:?})",
            ms(c.sum_hop_p50_ms),
            ms(c.sum_wait_p50_ms),
            ms(c.sum_send_p50_ms),
            ms(explained),
            ms(c.overhead_p50_ms),
            if c.overhead_p50_ms > 0.0 {
                100.0 * explained / c.overhead_p50_ms
            } else {
                f64::NAN
            },
            c.verdict
        );
        if c.ends_wake_ms > 0.0 {
            println!(
                "  tolerance {}: the larger of 25 %, 0.05 ms and two wake-ups of a task on an idle CPU here ({}), which no proxy's socket holds",
                ms(c.tolerance_ms),
                ms(c.ends_wake_ms)
            );
        }
        println!("  hops summed: {}", c.hops_used.join(", "));
    }
    if let Some(b) = &d.breakdown {
        let failed = d
            .consistency
            .as_ref()
            .is_some_and(|c| c.verdict == crate::report::details::ConsistencyVerdict::Inconsistent);
        for line in crate::report::breakdown::summary_lines(b, failed) {
            println!("{line}");
        }
    }
    let l = &d.losses;
    let reasons: Vec<String> = l
        .unpaired_reasons
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let lost: Vec<String> = l
        .events_lost
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    let left_out: Vec<String> = l
        .exchanges_left_out
        .iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect();
    println!(
        "pairing: {} paired, {} unpaired{}; probe losses: {}{}",
        l.paired,
        l.unpaired,
        if reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", reasons.join(", "))
        },
        if lost.is_empty() {
            "none".to_string()
        } else {
            lost.join(", ")
        },
        if left_out.is_empty() {
            String::new()
        } else {
            format!("; exchanges left out of the hops: {}", left_out.join(", "))
        }
    );
    println!("results in {}:", dir.display());
    for f in files {
        println!(
            "  {}",
            f.file_name().map_or_else(
                || f.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        );
    }
}

/// Says when the lab's slow link lost segments (a full queue) or stopped being served: TCP
/// retransmitted them, so some requests waited longer than the link's delay.
async fn warn_link_losses(name: &str) {
    let n = name.to_string();
    let status = tokio::task::spawn_blocking(move || Lab::status(&n)).await;
    let Ok(Ok(status)) = status else {
        return;
    };
    match status.link.and_then(|l| l.queue) {
        Some(q) if q.dropped() == 0 => {}
        Some(q) => eprintln!(
            "warning: the lab's slow link dropped {} segments (queue full {}, not delivered {}): TCP resent them, later than the link's delay",
            q.dropped(),
            q.queue_dropped,
            q.user_dropped
        ),
        None => eprintln!("warning: the lab's slow link was no longer served at the end of the run: its segments were dropped"),
    }
}
