//! `smp-agent lab up|down|status`: the mesh lab (see docs/lab.md), plus the hidden `proxy`
//! (ground-truth sidecar) and `app` (server app) the lab spawns from this same binary.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use super::OutputFormat;
use crate::lab::{
    self,
    config::{AppProtocol, ProxyKind},
    Lab, LabConfig, LabInfo, LabStatus,
};

/// Arguments of `lab`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: LabCommand,
}

/// The lab subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LabCommand {
    /// Create the two pod namespaces, the redirect rules, the app and both sidecars.
    Up(UpArgs),
    /// Remove every namespace, rule and process a lab created (idempotent; also after a crash).
    Down(DownArgs),
    /// Show a lab (or every lab): namespaces, processes, URLs.
    Status(StatusArgs),
    /// Kill one sidecar and start it again the same way (a container restart in a pod).
    Restart(RestartArgs),
    /// Ground-truth sidecar (spawned by `up`).
    #[command(hide = true)]
    Proxy(lab::gtproxy::ProxyOptions),
    /// Server app (spawned by `up`).
    #[command(hide = true)]
    App(lab::app::AppOptions),
    /// Stand-in for the CNI node agent that hands pods to a shared ztunnel (spawned by `up`).
    #[command(hide = true)]
    Zds(lab::zds::ZdsOptions),
    /// The slow link's netfilter queue (spawned by `up` with a link delay).
    #[command(hide = true)]
    LinkDelay(lab::linkdelay::LinkDelayOptions),
}

/// Arguments of `lab up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Optional: topology file (YAML); every field has a default, flags below override it.
    /// Example: --config lab.yaml
    #[arg(long, short, verbatim_doc_comment)]
    pub config: Option<PathBuf>,
    /// Optional: lab name, prefix of its namespaces and interfaces (default smplab).
    /// Example: --name lab2
    #[arg(long, verbatim_doc_comment)]
    pub name: Option<String>,
    /// Optional: proxy kind in both sidecar slots (default envoy).
    /// Example: --proxy haproxy
    #[arg(long, value_enum, verbatim_doc_comment)]
    pub proxy: Option<ProxyKind>,
    /// Optional: mTLS on the sidecar-to-sidecar leg.
    #[arg(long)]
    pub mtls: bool,
    /// Optional: HTTP/2 on the sidecar-to-sidecar leg (envoy, haproxy, ours; not nginx).
    #[arg(long)]
    pub h2: bool,
    /// Optional: what the client and the app speak (default http1). h2c and grpc (unary
    /// `/smp.Lab/Echo`) put HTTP/2 on every leg, --h2 implied; not with nginx.
    /// Example: --app-protocol grpc
    #[arg(long, value_enum, verbatim_doc_comment)]
    pub app_protocol: Option<AppProtocol>,
    /// Optional: worker threads of both sidecars (Envoy --concurrency).
    /// Example: --concurrency 2
    #[arg(long, verbatim_doc_comment)]
    pub concurrency: Option<u32>,
    /// Optional: IPv6 pods (fd77::1 and fd77::2 on fd77::/64): sidecars listen on [::], the
    /// inbound one reaches the app on [::1].
    #[arg(long)]
    pub ipv6: bool,
    /// Optional: delay per request added by the ground-truth proxy in both slots, microseconds
    /// (only with --proxy ours). Example: --delay-us 1000
    #[arg(long, verbatim_doc_comment)]
    pub delay_us: Option<u64>,
    /// Optional: one-way delay, microseconds, added to every TCP segment the sidecars exchange
    /// across the pods' link (the baseline port's cross undelayed). Example: --link-delay-us 3000
    #[arg(long, verbatim_doc_comment)]
    pub link_delay_us: Option<u64>,
    /// Optional: Envoy binary (else $SMP_ENVOY, else <repo>/.cache/envoy-venv, else PATH).
    #[arg(long, env = "SMP_ENVOY")]
    pub envoy_bin: Option<PathBuf>,
    /// Optional: ztunnel binary (else $SMP_ZTUNNEL, else <repo>/.cache/ztunnel/ztunnel made by
    /// `cargo xtask setup`, else PATH). Example: --ztunnel-bin ~/ztunnel/out/rust/release/ztunnel
    #[arg(long, env = "SMP_ZTUNNEL", verbatim_doc_comment)]
    pub ztunnel_bin: Option<PathBuf>,
    /// Optional: with --proxy ztunnel, one ztunnel per pod (dedicated, the default) or one on
    /// the node serving both pods (shared, as Istio's ambient mode deploys it).
    /// Example: --ztunnel-mode shared
    #[arg(long, value_enum, verbatim_doc_comment)]
    pub ztunnel_mode: Option<lab::config::ZtunnelMode>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Arguments of `lab down`.
#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Lab name.
    #[arg(long, default_value = "smplab")]
    pub name: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Arguments of `lab status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Optional: lab name; default: every lab with state on disk.
    #[arg(long)]
    pub name: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Arguments of `lab restart`.
#[derive(Debug, clap::Args)]
pub struct RestartArgs {
    /// Required: which sidecar.
    #[arg(value_enum)]
    pub side: lab::config::Side,
    /// Lab name.
    #[arg(long, default_value = "smplab")]
    pub name: String,
}

/// Runs `lab …`.
pub async fn execute(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        LabCommand::Up(a) => tokio::task::spawn_blocking(move || up(a)).await?,
        LabCommand::Down(a) => tokio::task::spawn_blocking(move || down(a)).await?,
        LabCommand::Status(a) => status(a),
        LabCommand::Restart(a) => {
            let side = a.side;
            let pid =
                tokio::task::spawn_blocking(move || Lab::restart_sidecar(&a.name, side)).await??;
            println!("{side} sidecar restarted: pid {pid}");
            Ok(ExitCode::SUCCESS)
        }
        // The proxy and the app build their own runtime (current-thread for 1 worker) on a
        // thread of their own: a runtime cannot start inside this one.
        LabCommand::Proxy(o) => {
            std::thread::spawn(move || lab::gtproxy::run(o))
                .join()
                .map_err(|_| anyhow::anyhow!("proxy thread panicked"))?
                .context("ground-truth proxy failed")?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::App(o) => {
            std::thread::spawn(move || lab::app::run(o))
                .join()
                .map_err(|_| anyhow::anyhow!("app thread panicked"))?
                .context("lab app failed")?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::LinkDelay(o) => {
            tokio::task::spawn_blocking(move || lab::linkdelay::run(o))
                .await?
                .context("lab link delay failed")?;
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Zds(o) => {
            tokio::task::spawn_blocking(move || lab::zds::run(o))
                .await?
                .context("lab node agent failed")?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_config(a: &UpArgs) -> anyhow::Result<LabConfig> {
    let mut cfg = match &a.config {
        Some(p) => {
            let text = crate::input::read_text(p)
                .with_context(|| format!("failed to read lab config {}", p.display()))?;
            LabConfig::from_yaml(&text).with_context(|| format!("in {}", p.display()))?
        }
        None => LabConfig::default(),
    };
    if let Some(n) = &a.name {
        cfg.name.clone_from(n);
    }
    if let Some(p) = a.proxy {
        cfg.proxy = p;
    }
    cfg.mtls |= a.mtls;
    cfg.h2 |= a.h2;
    if let Some(p) = a.app_protocol {
        cfg.app_protocol = p;
    }
    if let Some(c) = a.concurrency {
        cfg.outbound.workers = c;
        cfg.inbound.workers = c;
    }
    if a.ipv6 {
        cfg.network = lab::config::NetworkConfig::ipv6();
    }
    if let Some(d) = a.delay_us {
        cfg.outbound.delay_us = d;
        cfg.inbound.delay_us = d;
    }
    if let Some(d) = a.link_delay_us {
        cfg.link_delay_us = d;
    }
    if let Some(b) = a.envoy_bin.as_ref().filter(|b| !b.as_os_str().is_empty()) {
        cfg.envoy_bin = Some(b.clone());
    }
    if let Some(b) = a.ztunnel_bin.as_ref().filter(|b| !b.as_os_str().is_empty()) {
        cfg.ztunnel_bin = Some(b.clone());
    }
    if let Some(m) = a.ztunnel_mode {
        cfg.ztunnel_mode = m;
    }
    cfg.validate()?;
    Ok(cfg)
}

fn up(a: UpArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(&a)?;
    let started = std::time::Instant::now();
    let info = Lab::up(&cfg).with_context(|| format!("failed to bring lab {:?} up", cfg.name))?;
    match a.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&info)?),
        OutputFormat::Text => {
            print_info(&info);
            println!("up in {:.1} s", started.elapsed().as_secs_f64());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_info(i: &LabInfo) {
    println!("lab {} is up", i.name);
    println!(
        "  client namespace: {}   (run clients with: {} <command>)",
        i.client_netns, i.client_exec
    );
    println!("  server namespace: {}", i.server_netns);
    println!(
        "  meshed URL:       {}   (client → outbound → inbound → app)",
        i.meshed_url
    );
    println!(
        "  baseline URL:     {}   (client → app, no sidecar)",
        i.baseline_url
    );
    for s in [&i.outbound, &i.inbound] {
        println!(
            "  {:<8} sidecar: {} pid {} (netns {}, port {}, admin {}, log {})",
            s.side.as_str(),
            s.kind,
            s.pid,
            s.netns,
            s.port,
            s.admin,
            s.log.display()
        );
    }
    println!(
        "  app pid {}; app protocol {}; mTLS {}; h2 between sidecars {}",
        i.app_pid, i.app_protocol, i.mtls, i.h2
    );
    match i.app_protocol {
        AppProtocol::Http1 => println!("  try: {} curl -si {}", i.client_exec, i.meshed_url),
        AppProtocol::H2c => println!(
            "  try: {} curl -si --http2-prior-knowledge {}",
            i.client_exec, i.meshed_url
        ),
        AppProtocol::Grpc => println!(
            "  try: {} smp-agent load --grpc --rate 10 -d 1s {}",
            i.client_exec,
            crate::loadgen::grpc::lab_method_url(&i.meshed_url)
        ),
    }
    println!("  stop: smp-agent lab down --name {}", i.name);
}

fn down(a: DownArgs) -> anyhow::Result<ExitCode> {
    let r = Lab::down(&a.name).with_context(|| format!("failed to take lab {:?} down", a.name))?;
    match a.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        OutputFormat::Text => {
            if r.netns_deleted.is_empty() && r.killed.is_empty() && !r.state_removed {
                println!("lab {}: nothing to remove", r.name);
            } else {
                println!(
                    "lab {} down: stopped {} process(es), deleted namespaces [{}]",
                    r.name,
                    r.killed.len(),
                    r.netns_deleted.join(", ")
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn status(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let names = match &a.name {
        Some(n) => vec![n.clone()],
        None => Lab::list(),
    };
    let mut all: Vec<LabStatus> = Vec::new();
    for n in &names {
        all.push(Lab::status(n).with_context(|| format!("failed to read lab {n:?}"))?);
    }
    let healthy = all.iter().all(|s| s.healthy);
    match a.output {
        OutputFormat::Json => {
            if a.name.is_some() {
                println!("{}", serde_json::to_string_pretty(&all[0])?);
            } else {
                println!("{}", serde_json::to_string_pretty(&all)?);
            }
        }
        OutputFormat::Text => {
            if all.is_empty() {
                println!("no labs");
            }
            for s in &all {
                println!(
                    "lab {}: {:?}{}",
                    s.name,
                    s.phase,
                    if s.healthy {
                        ", healthy"
                    } else {
                        ", NOT healthy"
                    }
                );
                for (ns, exists) in &s.netns {
                    println!(
                        "  netns {ns}: {}",
                        if *exists { "present" } else { "missing" }
                    );
                }
                for p in &s.processes {
                    println!(
                        "  {:<8} {:<7} pid {:<7} {}",
                        p.role,
                        p.kind,
                        p.pid,
                        if p.alive { "running" } else { "GONE" }
                    );
                }
                if let Some(l) = &s.link {
                    match l.queue {
                        Some(q) => println!(
                            "  link     +{} µs each way; segments held now {}, dropped {} (queue full {}, not delivered {})",
                            l.delay_us,
                            q.held,
                            q.dropped(),
                            q.queue_dropped,
                            q.user_dropped
                        ),
                        None => println!(
                            "  link     +{} µs each way, NOT SERVED: its segments are dropped",
                            l.delay_us
                        ),
                    }
                }
                if let Some(i) = &s.info {
                    println!(
                        "  meshed {}  baseline {}  (from {})",
                        i.meshed_url, i.baseline_url, i.client_exec
                    );
                }
            }
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
