//! `smp-agent top --name envoy` / `--all`: every proxy discovery finds, followed live (exec,
//! fork and exit events, procfs rescans), with CPU, memory, requests and hops per proxy
//! identity, so a proxy that restarts keeps its line and its counters.

use std::process::ExitCode;

use serde::Serialize;
use tokio::time::Instant;

use super::{print_hops, Args, HopView};
use crate::{
    aggregate::{hops::percentiles, LossCounters},
    cli::OutputFormat,
    duration,
    proxy::{discovery::DiscoveryStats, DiscoveryConfig, ProxyChange},
    tracker::{self, ProxyWindow, Tracker, TrackerConfig, TrackerView},
};

/// One proxy in the JSON document.
#[derive(Debug, Serialize)]
pub struct ProxyReport {
    #[serde(flatten)]
    pub window: ProxyWindow,
    /// Live processes at the end.
    pub pids: Vec<u32>,
    /// Resident memory at the end, MiB.
    pub rss_mb: f64,
    /// perf_event counters since the proxy was found (absent counters say why).
    pub perf: Option<crate::proxy::perf::PerfReading>,
    pub hops: Vec<HopView>,
}

/// The document `--output json` prints.
#[derive(Debug, Serialize)]
pub struct ProxiesReport {
    pub duration_seconds: f64,
    /// Names looked for.
    pub names: Vec<String>,
    pub proxies: Vec<ProxyReport>,
    /// Processes started and stopped being tracked, with when (seconds since the start).
    pub changes: Vec<ChangeView>,
    pub discovery: DiscoveryStats,
    pub loss: LossCounters,
    /// Exchanges from processes not (yet) attributed to a proxy.
    pub unattributed_exchanges: u64,
}

/// One entry of the change log.
#[derive(Debug, Serialize)]
pub struct ChangeView {
    pub at_seconds: f64,
    #[serde(flatten)]
    pub change: ProxyChange,
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut discovery = DiscoveryConfig::default();
    if !args.all {
        discovery.names = args.name.clone();
    }
    if discovery.names.iter().any(|n| n.trim().is_empty()) {
        anyhow::bail!("--name: empty proxy name");
    }
    let names = discovery.names.clone();
    let text = args.output == OutputFormat::Text;
    if text {
        println!(
            "loading probes, then following {}{}; Ctrl-C to stop",
            names.join(", "),
            args.duration
                .map(|d| format!(" for {}", duration::format(d)))
                .unwrap_or_default()
        );
    }
    let mut tracker = Tracker::start(TrackerConfig {
        discovery,
        ..TrackerConfig::default()
    })
    .await?;
    let first = tracker.view();
    if !text {
        // Machine output goes to stdout at the end; say on stderr when measuring starts.
        eprintln!(
            "tracking {} prox{}",
            first.proxies.len(),
            if first.proxies.len() == 1 { "y" } else { "ies" }
        );
    }
    if text {
        if first.proxies.is_empty() {
            println!(
                "no {} running yet; waiting for one to start",
                names.join("/")
            );
        }
        for p in &first.proxies {
            println!("  found {} pid(s) {:?}", p.id, p.pids);
        }
    }
    let start = Instant::now();
    let deadline = args.duration.map(|d| start + d);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut prev = first.clone();
    let mut next = start + args.interval;
    loop {
        let until = deadline.map_or(next, |d| d.min(next));
        tokio::select! {
            r = tracker.pump_until(until) => r?,
            _ = &mut ctrl_c => break,
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        if Instant::now() >= next {
            tracker.sample()?;
            let now = tracker.view();
            if text {
                print_interval(&prev, &now);
            }
            prev = now;
            next += args.interval;
        }
    }
    tracker.sample()?;
    let last = tracker.view();
    drop(tracker); // detach before printing
    let report = build_report(names, &first, &last);
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print_summary(&report),
    }
    Ok(ExitCode::SUCCESS)
}

fn hop_views(view: &TrackerView, w: &ProxyWindow) -> Vec<HopView> {
    view.hops_of(&w.proxy)
        .map(|(direction, leg, h)| HopView {
            direction: direction.name(),
            leg: leg.name(),
            latency: percentiles(h),
            wait: view.wait_of(&w.proxy, direction, leg).map(percentiles),
            send: view.send_of(&w.proxy, direction, leg).map(percentiles),
        })
        .collect()
}

fn build_report(names: Vec<String>, first: &TrackerView, last: &TrackerView) -> ProxiesReport {
    let proxies = tracker::window(first, last)
        .into_iter()
        .map(|w| {
            let live = last.proxies.iter().find(|p| p.proxy == w.proxy);
            ProxyReport {
                pids: live.map(|p| p.pids.clone()).unwrap_or_default(),
                rss_mb: live.map_or(0.0, |p| p.rss_bytes as f64 / (1024.0 * 1024.0)),
                perf: live.and_then(|p| p.perf.clone()),
                hops: hop_views(last, &w),
                window: w,
            }
        })
        .collect();
    ProxiesReport {
        duration_seconds: last.elapsed.saturating_sub(first.elapsed).as_secs_f64(),
        names,
        proxies,
        changes: last
            .changes
            .iter()
            .map(|(at, c)| ChangeView {
                at_seconds: at.as_secs_f64(),
                change: c.clone(),
            })
            .collect(),
        discovery: last.discovery,
        loss: last.loss.clone(),
        unattributed_exchanges: last.unattributed_exchanges,
    }
}

fn print_interval(prev: &TrackerView, now: &TrackerView) {
    let secs = now.elapsed.saturating_sub(prev.elapsed).as_secs_f64();
    let fresh: Vec<_> = now
        .changes
        .iter()
        .skip(prev.changes.len())
        .map(|(_, c)| c)
        .collect();
    for c in fresh {
        match c {
            ProxyChange::Added {
                proxy,
                tgid,
                restart,
                ..
            } => println!(
                "  + {proxy} pid {tgid}{}",
                if *restart { " (restarted)" } else { "" }
            ),
            ProxyChange::Removed { proxy, tgid } => println!("  - {proxy} pid {tgid} gone"),
        }
    }
    let width = now.proxies.iter().map(|p| p.id.len()).max().unwrap_or(5);
    println!(
        "[{:>6.1}s] {:<width$} {:>5} {:>7} {:>9} {:>8}",
        now.elapsed.as_secs_f64(),
        "PROXY",
        "PIDS",
        "CPU%",
        "RSS",
        "REQ/s"
    );
    for w in tracker::window(prev, now) {
        let live = now.proxies.iter().find(|p| p.proxy == w.proxy);
        println!(
            "          {:<width$} {:>5} {:>6.1}% {:>9} {:>8.0}",
            w.id,
            live.map_or(0, |p| p.pids.len()),
            w.cpu.mcores / 10.0,
            super::human_bytes(live.map_or(0, |p| p.rss_bytes)),
            w.requests as f64 / secs.max(1e-9),
        );
    }
}

fn print_summary(r: &ProxiesReport) {
    println!();
    if r.proxies.is_empty() {
        println!(
            "no {} found in {:.1}s",
            r.names.join("/"),
            r.duration_seconds
        );
        return;
    }
    println!(
        "{} prox{} over {:.1}s",
        r.proxies.len(),
        if r.proxies.len() == 1 { "y" } else { "ies" },
        r.duration_seconds
    );
    for p in &r.proxies {
        let w = &p.window;
        println!(
            "{}  pid {}  restarts {}  cpu {:.3} s ({:.0} mcores){}  rss {:.1} MiB  requests {}",
            w.id,
            w.pid.map_or("-".into(), |p| p.to_string()),
            w.restarts,
            w.cpu.cpu_seconds,
            w.cpu.mcores,
            w.cpu
                .cpu_us_per_request
                .map(|u| format!(", {u:.0} us/request"))
                .unwrap_or_default(),
            p.rss_mb,
            w.requests,
        );
        if let Some(perf) = &p.perf {
            let show = |v: &crate::proxy::perf::PerfValue| match v.value() {
                Some(n) => n.to_string(),
                None => "absent".into(),
            };
            println!(
                "    perf: task-clock {} ns, context switches {}, cycles {}, instructions {}{}",
                show(&perf.task_clock_ns),
                show(&perf.context_switches),
                show(&perf.cycles),
                show(&perf.instructions),
                perf.ipc()
                    .map(|i| format!(", IPC {i:.2}"))
                    .unwrap_or_default()
            );
        }
        print_hops(&p.hops, Some(&w.pairing));
    }
    let l = &r.loss;
    if l.lost() > 0 {
        println!("probe losses: {}", l.text());
    }
}
