//! `smp-agent top --pid PID`: attach to one running process and show, every interval and at
//! the end, its on-CPU time, its socket syscalls (count, bytes, time inside the call) and the
//! hops through it.

use smp_common::hop::HopCounts;
use std::{
    collections::{BTreeMap, HashMap},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context as _;
use serde::Serialize;
use tokio::time::Instant;

use super::{human_bytes, print_hops, Args, HopView};
use crate::{
    aggregate::{
        hops::HopAggregator,
        sockets::{self, IoStats, SocketSummary},
        LossCounters, ProbeSnapshot,
    },
    cli::OutputFormat,
    duration,
    host::{self, sockets::SocketEndpoints},
    probes::{ProbeEvent, Probes},
};

/// Counts of one direction, as the JSON document shows them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct IoView {
    pub calls: u64,
    pub bytes: u64,
    pub errors: u64,
    /// Total time inside the syscalls.
    pub time_seconds: f64,
    /// Mean time inside one syscall, microseconds.
    pub mean_latency_us: Option<f64>,
}

impl From<&IoStats> for IoView {
    fn from(s: &IoStats) -> Self {
        IoView {
            calls: s.calls,
            bytes: s.bytes,
            errors: s.errors,
            time_seconds: s.time_ns as f64 / 1e9,
            mean_latency_us: s.mean_ns().map(|n| n as f64 / 1e3),
        }
    }
}

/// One socket in the JSON document.
#[derive(Debug, Serialize)]
pub struct SocketView {
    pub fd: u32,
    pub inode: u64,
    #[serde(flatten)]
    pub endpoints: Option<SocketEndpoints>,
    pub recv: IoView,
    pub send: IoView,
    pub syscalls: BTreeMap<&'static str, IoView>,
}

/// The document `--output json` prints.
#[derive(Debug, Serialize)]
pub struct TopReport {
    pub pid: u32,
    pub comm: String,
    /// Every process watched: the pid and its children (figures are summed over them).
    pub processes: Vec<u32>,
    /// Wall time watched.
    pub duration_seconds: f64,
    /// The process exited before the end.
    pub exited: bool,
    /// On-CPU time of all threads over the run (scheduler probe).
    pub cpu_seconds: f64,
    /// `cpu_seconds / duration_seconds`, in % of one core.
    pub cpu_percent: f64,
    pub threads_seen: u32,
    pub context_switches: u64,
    /// On-CPU seconds of each interval, in order.
    pub cpu_seconds_per_interval: Vec<f64>,
    /// Totals per syscall over every socket.
    pub syscalls: BTreeMap<&'static str, IoView>,
    pub sockets: Vec<SocketView>,
    /// Per-hop latency through the process, if it proxied HTTP/1.x exchanges.
    pub hops: Vec<HopView>,
    /// Hop pairing counters (requests seen, paired, unpaired and why).
    pub pairing: HopCounts,
    /// Requests seen that were not paired.
    pub unpaired: u64,
    /// The probes' own losses (non-zero means figures are low).
    pub loss: LossCounters,
}

fn hop_views(hops: &HopAggregator, group: &[u32]) -> Vec<HopView> {
    hops.group_summary(group)
        .into_iter()
        .map(|((direction, leg), p)| HopView {
            direction: direction.name(),
            leg: leg.name(),
            latency: p,
            wait: None,
            send: None,
        })
        .collect()
}

pub async fn run(args: Args, pid: u32) -> anyhow::Result<ExitCode> {
    let info = host::process_info(pid)?;
    let mut probes = tokio::task::spawn_blocking(Probes::load)
        .await?
        .context("failed to load the probes")?;
    let tree = |pid: u32| {
        if args.no_children {
            vec![pid]
        } else {
            host::process_tree(pid)
        }
    };
    let mut group = tree(info.pid);
    for &t in &group {
        probes
            .track(t)
            .with_context(|| format!("failed to track pid {t}"))?;
    }
    let mut events = probes.events()?;
    // A process that exited between the lookup and the tracking sends no exit event.
    if !host::process_alive(info.pid) {
        anyhow::bail!("pid {} exited before tracing started", info.pid);
    }
    let text = args.output == OutputFormat::Text;
    if text {
        println!(
            "watching pid {} ({}), {} thread(s){}{}; Ctrl-C to stop",
            info.pid,
            info.comm,
            info.threads,
            if group.len() > 1 {
                format!(" and {} child process(es)", group.len() - 1)
            } else {
                String::new()
            },
            args.duration
                .map(|d| format!(" for {}", duration::format(d)))
                .unwrap_or_default()
        );
    }

    let start = Instant::now();
    let first = probes.snapshot()?;
    let mut prev = first.clone();
    let mut per_interval = Vec::new();
    let mut ticker = tokio::time::interval_at(start + args.interval, args.interval);
    let deadline = args.duration.map(|d| start + d);
    let mut exited = false;
    let mut hops = HopAggregator::default();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let sleep_until_deadline = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ticker.tick() => {
                // Workers a proxy (re)spawned since the last tick join the group.
                for t in tree(info.pid) {
                    if !group.contains(&t) {
                        probes.track(t)?;
                        group.push(t);
                    }
                }
                let now = probes.snapshot()?;
                let cpu = interval_cpu(&prev, &now, &group);
                per_interval.push(cpu);
                if text {
                    print_interval(&args, &info, &group, start.elapsed(), &prev, &now, cpu);
                    print_hops(&hop_views(&hops, &group), Some(&now.group_pairing(&group)));
                }
                prev = now;
                if !host::process_alive(info.pid) {
                    exited = true;
                    break;
                }
            }
            batch = events.next_batch() => {
                let mut gone = false;
                for e in batch? {
                    match e {
                        ProbeEvent::Exchange(x) => hops.record(&x),
                        ProbeEvent::ProcessExit { tgid, .. } => gone |= tgid == info.pid,
                        // Other processes' execs and forks: `--pid` follows children by
                        // listing the process tree each tick.
                        ProbeEvent::ProcessExec { .. }
                        | ProbeEvent::ProcessFork { .. }
                        | ProbeEvent::SendDone { .. } => {}
                    }
                }
                if gone {
                    exited = true;
                    break;
                }
            }
            _ = sleep_until_deadline => break,
            _ = &mut ctrl_c => break,
        }
    }
    let last = probes.snapshot()?;
    let elapsed = start.elapsed();
    drop(events);
    drop(probes); // detach now, before printing
    let mut report = build_report(&info, &group, elapsed, exited, &first, &last, per_interval);
    report.hops = hop_views(&hops, &group);
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print_summary(&report),
    }
    if exited {
        eprintln!(
            "error: pid {} ({}) exited after {:.1}s; the figures above cover its life until then",
            info.pid,
            info.comm,
            elapsed.as_secs_f64()
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn interval_cpu(before: &ProbeSnapshot, now: &ProbeSnapshot, group: &[u32]) -> f64 {
    let a = before.group_cpu(group).on_cpu_ns;
    let b = now.group_cpu(group).on_cpu_ns;
    b.saturating_sub(a) as f64 / 1e9
}

fn own_sockets(s: &ProbeSnapshot, group: &[u32]) -> BTreeMap<sockets::SocketId, SocketSummary> {
    let mine: Vec<_> = s
        .sockets
        .iter()
        .filter(|x| group.contains(&x.tgid))
        .copied()
        .collect();
    sockets::summarize(&mine)
}

fn print_interval(
    args: &Args,
    info: &host::ProcessInfo,
    group: &[u32],
    at: Duration,
    before: &ProbeSnapshot,
    now: &ProbeSnapshot,
    cpu_seconds: f64,
) {
    let mut d = sockets::delta(&own_sockets(now, group), &own_sockets(before, group));
    let recv: u64 = d.iter().map(|s| s.recv.calls).sum();
    let send: u64 = d.iter().map(|s| s.send.calls).sum();
    let rbytes: u64 = d.iter().map(|s| s.recv.bytes).sum();
    let sbytes: u64 = d.iter().map(|s| s.send.bytes).sum();
    let secs = args.interval.as_secs_f64();
    println!(
        "[{:>6.1}s] {} cpu {:5.1}% ({:.1} ms)  {} socket(s) active  recv {} calls {}  send {} calls {}",
        at.as_secs_f64(),
        info.comm,
        100.0 * cpu_seconds / secs,
        cpu_seconds * 1e3,
        d.len(),
        recv,
        human_bytes(rbytes),
        send,
        human_bytes(sbytes),
    );
    d.sort_by_key(|s| std::cmp::Reverse(s.recv.calls + s.send.calls));
    let eps = if d.is_empty() {
        HashMap::new()
    } else {
        host::sockets::endpoints(info.pid)
    };
    for s in d.iter().take(args.sockets) {
        println!(
            "    fd {:<5} {:<48} recv {:>7} calls {:>9} {:>8}  send {:>7} calls {:>9} {:>8}",
            s.fd,
            endpoint_text(eps.get(&s.inode), s.inode),
            s.recv.calls,
            human_bytes(s.recv.bytes),
            mean_text(&s.recv),
            s.send.calls,
            human_bytes(s.send.bytes),
            mean_text(&s.send),
        );
    }
}

fn build_report(
    info: &host::ProcessInfo,
    group: &[u32],
    elapsed: Duration,
    exited: bool,
    first: &ProbeSnapshot,
    last: &ProbeSnapshot,
    per_interval: Vec<f64>,
) -> TopReport {
    let cpu0 = first.group_cpu(group);
    let cpu1 = last.group_cpu(group);
    let cpu_seconds = cpu1.on_cpu_ns.saturating_sub(cpu0.on_cpu_ns) as f64 / 1e9;
    let socks = sockets::delta(&own_sockets(last, group), &own_sockets(first, group));
    let eps = if exited {
        HashMap::new()
    } else {
        host::sockets::endpoints(info.pid)
    };
    let mut syscalls: BTreeMap<&'static str, IoStats> = BTreeMap::new();
    for s in &socks {
        for (k, v) in &s.by_syscall {
            let t = syscalls.entry(k).or_default();
            t.calls += v.calls;
            t.bytes += v.bytes;
            t.errors += v.errors;
            t.time_ns += v.time_ns;
        }
    }
    let mut sockets_view: Vec<SocketView> = socks
        .iter()
        .map(|s| SocketView {
            fd: s.fd,
            inode: s.inode,
            endpoints: eps.get(&s.inode).cloned(),
            recv: (&s.recv).into(),
            send: (&s.send).into(),
            syscalls: s.by_syscall.iter().map(|(k, v)| (*k, v.into())).collect(),
        })
        .collect();
    sockets_view.sort_by_key(|s| std::cmp::Reverse(s.recv.calls + s.send.calls));
    let secs = elapsed.as_secs_f64();
    TopReport {
        pid: info.pid,
        comm: info.comm.clone(),
        processes: group.to_vec(),
        duration_seconds: secs,
        exited,
        cpu_seconds,
        cpu_percent: if secs > 0.0 {
            100.0 * cpu_seconds / secs
        } else {
            0.0
        },
        threads_seen: cpu1.threads,
        context_switches: cpu1.switches.saturating_sub(cpu0.switches),
        cpu_seconds_per_interval: per_interval,
        hops: Vec::new(),
        pairing: last.group_pairing(group),
        unpaired: last.group_pairing(group).unpaired(),
        syscalls: syscalls.iter().map(|(k, v)| (*k, v.into())).collect(),
        sockets: sockets_view,
        loss: last.loss.clone(),
    }
}

fn print_summary(r: &TopReport) {
    println!();
    println!(
        "pid {} ({}) over {:.1}s{}: cpu {:.3} s ({:.1}% of a core), {} thread(s), {} context switches",
        r.pid,
        r.comm,
        r.duration_seconds,
        if r.exited { " (exited)" } else { "" },
        r.cpu_seconds,
        r.cpu_percent,
        r.threads_seen,
        r.context_switches
    );
    if r.syscalls.is_empty() {
        println!("no socket syscalls seen");
    } else {
        println!(
            "{:<10} {:>10} {:>12} {:>8} {:>12}",
            "SYSCALL", "CALLS", "BYTES", "ERRORS", "MEAN"
        );
        for (k, v) in &r.syscalls {
            println!(
                "{:<10} {:>10} {:>12} {:>8} {:>12}",
                k,
                v.calls,
                human_bytes(v.bytes),
                v.errors,
                v.mean_latency_us
                    .map(|u| format!("{u:.1} us"))
                    .unwrap_or_default()
            );
        }
        println!("{} socket(s) used", r.sockets.len());
    }
    print_hops(&r.hops, Some(&r.pairing));
    let l = &r.loss;
    if l.lost() > 0 {
        println!("probe losses: {}", l.text());
    }
}

fn endpoint_text(e: Option<&SocketEndpoints>, inode: u64) -> String {
    match e {
        Some(SocketEndpoints {
            proto,
            local: Some(l),
            remote: Some(r),
        }) => format!("{proto} {l} -> {r}"),
        Some(SocketEndpoints { proto, .. }) => format!("{proto} socket:[{inode}]"),
        None => format!("socket:[{inode}]"),
    }
}

fn mean_text(s: &IoStats) -> String {
    s.mean_ns()
        .map(|n| format!("{:.1}us", n as f64 / 1e3))
        .unwrap_or_else(|| "-".into())
}
