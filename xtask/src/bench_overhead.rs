//! `cargo xtask bench overhead`: what the probes cost, measured side by side in one run.
//!
//! (a) CPU ns per socket syscall of a tight write/read loop (`sysloop`, its own thread CPU
//!     clock, so co-tenants holding the CPU do not count), and per `getppid` (a syscall no probe
//!     traces, but every hook sees), in rounds that alternate: no probes;
//!     the floor (empty programs on the 19 classic syscall tracepoints the agent used before, and
//!     on the two raw syscall tracepoints it uses now, `smp-agent probe-floor`); and per agent
//!     binary, its probes attached while tracking another process (what every other process on
//!     the node pays) and tracking the loop itself. `--baseline-agent` adds an agent built from
//!     an earlier commit to the same rounds, for before/after figures from one run.
//! (a') the same loop once per condition with the kernel's `bpf_stats`: each program's runs
//!     and run time per socket syscall, and what the agent's bodies cost above the empty
//!     floor (tens of ns the loop's own clock cannot tell apart).
//! (b) a sidecar mesh's max throughput through the lab (Envoy), and (c) p50/p99 at a fixed
//!     rate, without probes and with each agent tracking both sidecars, rounds alternating;
//! (d) per agent, each eBPF program's run time per request at the fixed rate (the kernel's
//!     `bpf_stats`), in rounds whose order rotates: where the probes' time goes; with `--h2`,
//!     again on the lab with HTTP/2 between the sidecars (the kernel walks its frames).
//!
//! In (b), (c) and (d) one agent follows both sidecars (`top --name envoy`), as one agent per
//! node does.
//!
//! Other engineers' agents attached to the same hooks slow every syscall down too: the bench
//! lists the tracing programs it did not load itself whenever it sees any (via `bpftool`).
//! Prints tables; docs/benchmarks.md records them by hand.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::Value;

use crate::{
    build,
    lab::Lab,
    util::{cargo, run_cmd},
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Alternating rounds of (a).
    #[arg(long, default_value_t = 5)]
    pub rounds: u32,
    /// write+read iterations of the loop per round of (a) (two syscalls each).
    #[arg(long, default_value_t = 200_000)]
    pub iterations: u64,
    /// Seconds per load run in (b) and (c).
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Alternating rounds of (b) and (c).
    #[arg(long, default_value_t = 1)]
    pub lab_rounds: u32,
    /// Fixed rate for (c).
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
    /// Another smp-agent binary (e.g. built from an earlier commit) to measure in the same
    /// rounds, for before/after figures from one run.
    #[arg(long)]
    pub baseline_agent: Option<PathBuf>,
    /// Only (a): no mesh lab.
    #[arg(long)]
    pub no_lab: bool,
    /// (d) once more on the lab with HTTP/2 in the clear between the sidecars (`lab up
    /// --h2`), beside the HTTP/1.1 figures of the same run: the frame walk's cost.
    #[arg(long)]
    pub h2: bool,
    /// Only (d), the programs' run time per request on the lab (no (a), (b), (c)), for this
    /// build and the baseline (not this build with the syscall hooks): the quick A/B of a
    /// change to the programs.
    #[arg(long, conflicts_with = "no_lab")]
    pub programs_only: bool,
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns a command whose first stdout line says its programs are attached; returns it and
/// how long loading and attaching took.
fn attached(mut cmd: Command) -> anyhow::Result<(Kill, Duration)> {
    let start = Instant::now();
    let mut c = Kill(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?,
    );
    let mut first = String::new();
    BufReader::new(c.0.stdout.as_mut().context("stdout")?).read_line(&mut first)?;
    anyhow::ensure!(
        first.starts_with("watching"),
        "{cmd:?} did not attach: {first}"
    );
    Ok((c, start.elapsed()))
}

/// `smp-agent top` on `pids` until killed (its first line comes once the probes are attached).
fn top(agent: &Agent, pids: &[u64]) -> anyhow::Result<(Vec<Kill>, Duration)> {
    let mut out = Vec::new();
    let mut load = Duration::ZERO;
    for pid in pids {
        let mut cmd = crate::lab::top(&agent.bin, *pid, 3600);
        cmd.args(["--interval", "1h"]);
        if let Some(h) = agent.socket_hooks {
            cmd.env("SMP_SOCKET_HOOKS", h);
        }
        let (k, d) = attached(cmd)?;
        load += d;
        out.push(k);
    }
    Ok((out, load))
}

/// One `smp-agent top --name envoy` following both sidecars of the lab (`pids`), as one agent
/// per node does: each hook runs one copy of each program, whatever the number of sidecars
/// (one agent per sidecar ran every hook twice). Returns once it reported every pid found.
fn top_envoys(agent: &Agent, pids: &[u64]) -> anyhow::Result<Kill> {
    let mut cmd = Command::new(&agent.bin);
    cmd.args([
        "top",
        "--name",
        "envoy",
        "--interval",
        "1h",
        "--duration",
        "3600s",
    ]);
    if let Some(h) = agent.socket_hooks {
        cmd.env("SMP_SOCKET_HOOKS", h);
    }
    let mut c = Kill(
        cmd.stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?,
    );
    let mut out = BufReader::new(c.0.stdout.as_mut().context("stdout")?);
    // "loading probes, …", then one "  found <proxy> pid(s) [..]" line per proxy found.
    let mut found = BTreeSet::new();
    let mut line = String::new();
    for _ in 0..=pids.len() {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            break;
        }
        if let Some(list) = line.trim().strip_prefix("found ") {
            let list = list
                .split_once('[')
                .map_or("", |(_, l)| l.trim_end_matches(']'));
            found.extend(list.split(',').filter_map(|p| p.trim().parse::<u64>().ok()));
        }
        if pids.iter().all(|p| found.contains(p)) {
            return Ok(c);
        }
    }
    anyhow::bail!("{cmd:?} did not report tracking {pids:?} (found {found:?}; last line: {line})")
}

/// Two figures per eBPF program, by program name.
type PerProgram = std::collections::BTreeMap<String, (f64, f64)>;

/// Run time (ns) and run count of each eBPF program process `pid` holds, summed by program
/// name (`bpftool prog show`: counted only while `kernel.bpf_stats_enabled` is on).
fn prog_stats(pid: u32) -> anyhow::Result<PerProgram> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()?;
    let progs: Value = serde_json::from_slice(&out.stdout).context("bpftool prog show")?;
    let mine = programs_of(pid);
    let mut by_name = std::collections::BTreeMap::new();
    for p in progs.as_array().into_iter().flatten() {
        if !p["id"].as_u64().is_some_and(|id| mine.contains(&id)) {
            continue;
        }
        let e: &mut (f64, f64) = by_name
            .entry(p["name"].as_str().unwrap_or("?").to_string())
            .or_default();
        e.0 += p["run_time_ns"].as_f64().unwrap_or(0.0);
        e.1 += p["run_cnt"].as_f64().unwrap_or(0.0);
    }
    Ok(by_name)
}

/// Ids of the eBPF programs process `pid` holds (`prog_id:` in its fdinfo).
fn programs_of(pid: u32) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            ids.extend(
                text.lines()
                    .filter_map(|l| l.strip_prefix("prog_id:"))
                    .filter_map(|v| v.trim().parse::<u64>().ok()),
            );
        }
    }
    ids
}

/// Names of attached tracing programs that `ours` (processes this bench started) do not hold:
/// other agents on the machine, whose programs run on our syscalls too. `None` without bpftool.
fn foreign_tracing_programs(ours: &[&Kill]) -> Option<BTreeSet<String>> {
    let json = |args: &[&str]| -> Option<Value> {
        let out = Command::new("bpftool").args(args).output().ok()?;
        serde_json::from_slice(&out.stdout).ok()
    };
    // Attached = held by a link (aya attaches tracepoints through links).
    let links = json(&["-j", "link", "show"])?;
    let attached: BTreeSet<u64> = links
        .as_array()?
        .iter()
        .filter_map(|l| l["prog_id"].as_u64())
        .collect();
    let progs = json(&["-j", "prog", "show"])?;
    let mine: BTreeSet<u64> = ours.iter().flat_map(|k| programs_of(k.0.id())).collect();
    Some(
        progs
            .as_array()?
            .iter()
            .filter(|p| {
                matches!(
                    p["type"].as_str(),
                    Some("tracepoint" | "raw_tracepoint" | "tracing" | "kprobe" | "perf_event")
                ) && p["id"]
                    .as_u64()
                    .is_some_and(|id| attached.contains(&id) && !mine.contains(&id))
            })
            .filter_map(|p| p["name"].as_str().map(String::from))
            .collect(),
    )
}

/// Notes foreign programs seen during a measurement.
#[derive(Default)]
struct Disturbances(Vec<(String, BTreeSet<String>)>);

impl Disturbances {
    fn check(&mut self, what: &str, ours: &[&Kill]) {
        match foreign_tracing_programs(ours) {
            Some(f) if !f.is_empty() => self.0.push((what.to_string(), f)),
            Some(_) => {}
            None => {
                if self.0.is_empty() {
                    self.0.push((
                        "bpftool missing: other agents' programs not checked".into(),
                        BTreeSet::new(),
                    ));
                }
            }
        }
    }

    fn report(&self) {
        if self.0.is_empty() {
            println!("\nNo other tracing programs were attached during the measurements.");
            return;
        }
        println!(
            "\nWARNING: other tracing programs (other agents on this machine) were attached during {} measurements; their programs run on these syscalls too:",
            self.0.len()
        );
        for (what, names) in &self.0 {
            let names: Vec<_> = names.iter().map(String::as_str).collect();
            println!("  {what}: {}", names.join(", "));
        }
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// An agent configuration measured: a binary, and the socket hooks it is told to use.
struct Agent {
    name: String,
    bin: PathBuf,
    /// `SMP_SOCKET_HOOKS` for it (`None`: its own choice for this kernel).
    socket_hooks: Option<&'static str>,
}

/// The agents measured: this tree's with its own choice of socket hooks and, where the
/// kernel has the socket tracepoints and `syscall_hooks`, with the raw syscall hooks instead;
/// and the baseline if given.
fn agents(this: PathBuf, baseline: Option<&PathBuf>, syscall_hooks: bool) -> Vec<Agent> {
    let mut out = vec![Agent {
        name: "this".into(),
        bin: this.clone(),
        socket_hooks: None,
    }];
    if syscall_hooks && sock_tracepoints() {
        out.push(Agent {
            name: "this, SMP_SOCKET_HOOKS=syscalls".into(),
            bin: this,
            socket_hooks: Some("syscalls"),
        });
    }
    if let Some(b) = baseline {
        out.push(Agent {
            name: "baseline".into(),
            bin: b.clone(),
            socket_hooks: None,
        });
    }
    out
}

/// Whether this kernel has the socket tracepoints the agent prefers (6.4+).
fn sock_tracepoints() -> bool {
    std::path::Path::new("/sys/kernel/tracing/events/sock/sock_send_length").exists()
        || std::path::Path::new("/sys/kernel/debug/tracing/events/sock/sock_send_length").exists()
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    crate::setup::run()?;
    let agent = build::run(&build::Options { release: true })?;
    run_cmd(cargo().args(["build", "--release", "-p", "smp-tests", "--bin", "sysloop"]))?;
    let sysloop = build::target_dir().join("release/sysloop");
    if let Some(b) = &o.baseline_agent {
        anyhow::ensure!(
            b.exists(),
            "--baseline-agent {} does not exist",
            b.display()
        );
    }
    let agents = agents(agent.clone(), o.baseline_agent.as_ref(), !o.programs_only);
    if std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").is_ok_and(|s| s.trim() != "0")
    {
        println!("WARNING: kernel.bpf_stats_enabled is on: every program run also pays two clock reads (sysctl kernel.bpf_stats_enabled=0 for these figures)");
    }
    let mut disturbed = Disturbances::default();

    if !o.programs_only {
        syscall_cost(o, &sysloop, &agent, &agents, &mut disturbed)?;
    }
    if !o.no_lab {
        lab(o, &agent, &agents, &mut disturbed)?;
    }
    disturbed.report();
    Ok(())
}

/// (a): CPU ns per socket syscall under each condition.
fn syscall_cost(
    o: &Options,
    sysloop: &Path,
    agent: &Path,
    agents: &[Agent],
    disturbed: &mut Disturbances,
) -> anyhow::Result<()> {
    let mut child = Kill(
        Command::new(sysloop)
            .arg(o.iterations.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?,
    );
    let pid = u64::from(child.0.id());
    let idle = Kill(Command::new("sleep").arg("1000000").spawn()?);
    let idle_pid = u64::from(idle.0.id());
    let mut stdin = child.0.stdin.take().context("stdin")?;
    let mut lines = BufReader::new(child.0.stdout.take().context("stdout")?).lines();
    anyhow::ensure!(
        lines.next().transpose()?.as_deref() == Some("ready"),
        "sysloop did not start"
    );
    // One round: the socket loop, then the getppid loop; CPU ns per syscall of each.
    let mut round = |label: &str, ours: &[&Kill], disturbed: &mut Disturbances| {
        disturbed.check(label, ours);
        let mut cpu = [0.0; 2];
        for (i, cmd) in [&b"go\n"[..], b"ppid\n"].into_iter().enumerate() {
            stdin.write_all(cmd)?;
            stdin.flush()?;
            let l = lines.next().transpose()?.context("sysloop ended")?;
            // `ns_per_syscall <wall> cpu_ns_per_syscall <cpu>`
            let f: Vec<&str> = l.split_whitespace().collect();
            anyhow::ensure!(f.len() == 4, "sysloop: unexpected line {l:?}");
            cpu[i] = f[3].parse()?;
        }
        println!(
            "  {label:<40} {:8.1} CPU ns per socket syscall, {:6.1} per getppid",
            cpu[0], cpu[1]
        );
        anyhow::Ok((cpu[0], cpu[1]))
    };

    // (label, per-round CPU ns per socket syscall and per getppid, load+attach seconds)
    let mut rows: Vec<Row> = vec![Row::new("no probes")];
    let mut floors = vec![
        ("floor: empty, 19 classic tracepoints", "classic"),
        ("floor: empty, 2 raw syscall tracepoints", "raw"),
    ];
    if sock_tracepoints() {
        floors.push(("floor: empty, the socket tracepoints", "sock"));
        floors.push((
            "floor: clock + socket hash update, socket tracepoints and tcp_probe",
            "sock-min",
        ));
    }
    for (label, _) in &floors {
        rows.push(Row::new(label));
    }
    for a in agents {
        rows.push(Row::new(&format!("{}: attached, loop untracked", a.name)));
        rows.push(Row::new(&format!("{}: loop tracked", a.name)));
    }
    println!(
        "(a) tight write/read loop on a loopback TCP pair, {} rounds of {} syscalls",
        o.rounds,
        2 * o.iterations
    );
    for r in 0..o.rounds {
        println!(" round {}", r + 1);
        let mut i = 0;
        let mut push = |rows: &mut Vec<Row>, cpu: (f64, f64), load: Option<f64>| {
            rows[i].socket.push(cpu.0);
            rows[i].ppid.push(cpu.1);
            rows[i].load.extend(load);
            i += 1;
        };
        let cpu = round("no probes", &[&child, &idle], disturbed)?;
        push(&mut rows, cpu, None);
        for &(label, hooks) in &floors {
            let mut cmd = Command::new(agent);
            cmd.args(["probe-floor", "--hooks", hooks, "--duration", "1h"]);
            let (k, load) = attached(cmd)?;
            let cpu = round(label, &[&child, &idle, &k], disturbed)?;
            drop(k);
            push(&mut rows, cpu, Some(load.as_secs_f64()));
        }
        for a in agents {
            for (target, what) in [
                (idle_pid, "attached, loop untracked"),
                (pid, "loop tracked"),
            ] {
                let (tops, load) = top(a, &[target])?;
                let mut ours = vec![&child, &idle];
                ours.extend(tops.iter());
                let cpu = round(&format!("{}: {what}", a.name), &ours, disturbed)?;
                drop(tops);
                push(&mut rows, cpu, Some(load.as_secs_f64()));
            }
        }
    }
    print_rows(&rows, o.rounds);

    // (a') The same loop once more per condition with `kernel.bpf_stats_enabled` on: each
    // program's runs and run time per socket syscall, from the kernel's own accounting (the
    // loop's time cannot tell tens of ns apart; this can). The stats' own two clock reads per
    // run are in every figure, the empty floor's included, so "above the empty floor" is the
    // bodies' cost.
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let was = std::fs::read_to_string(STATS)?.trim().to_string();
    let mut measure = |label: &str, holder: &Kill, cmd: &[u8], disturbed: &mut Disturbances| {
        disturbed.check(label, &[&child, &idle, holder]);
        std::fs::write(STATS, "1")?;
        let before = prog_stats(holder.0.id());
        stdin.write_all(cmd)?;
        stdin.flush()?;
        let done = lines.next().transpose()?.context("sysloop ended");
        let after = prog_stats(holder.0.id());
        std::fs::write(STATS, &was)?;
        let (before, after, _) = (before?, after?, done?);
        let syscalls = 2.0 * o.iterations as f64;
        let mut out = PerProgram::new();
        for (name, (ns1, n1)) in after {
            let (ns0, n0) = before.get(&name).copied().unwrap_or_default();
            if n1 > n0 {
                out.insert(name, ((n1 - n0) / syscalls, (ns1 - ns0) / syscalls));
            }
        }
        anyhow::Ok(out)
    };
    let mut stat_rows: Vec<(String, PerProgram)> = Vec::new();
    if sock_tracepoints() {
        for (label, hooks) in [
            ("floor: empty, the socket tracepoints", "sock"),
            (
                "floor: clock + socket hash update, socket tracepoints and tcp_probe",
                "sock-min",
            ),
        ] {
            let mut cmd = Command::new(agent);
            cmd.args(["probe-floor", "--hooks", hooks, "--duration", "1h"]);
            let (k, _) = attached(cmd)?;
            stat_rows.push((label.to_string(), measure(label, &k, b"go\n", disturbed)?));
        }
    }
    // Per condition, `sched_switch` over a ping-pong of two threads of the loop's process
    // (blocking pipe reads: each side sleeps and wakes): (label, runs, ns per run).
    let mut switch_rows: Vec<(String, f64, f64)> = Vec::new();
    for a in agents {
        for (target, what) in [
            (idle_pid, "attached, loop untracked"),
            (pid, "loop tracked"),
        ] {
            let (mut tops, _) = top(a, &[target])?;
            let k = tops.pop().context("no agent")?;
            let label = format!("{}: {what}", a.name);
            stat_rows.push((label.clone(), measure(&label, &k, b"go\n", disturbed)?));
            let switches = measure(&label, &k, b"switch\n", disturbed)?;
            if let Some((runs, ns)) = switches.get("smp_sched_switch") {
                switch_rows.push((label, *runs, ns / runs));
            }
        }
    }
    drop(child);
    drop(idle);
    println!(
        "\n(a') eBPF run time per socket syscall of the loop ({} syscalls per condition, kernel.bpf_stats_enabled)\n",
        2 * o.iterations
    );
    // An empty program's run (the hook's dispatch and the stats' clock reads): what each of
    // ours would cost with no body, on whichever hook.
    let empty_run = stat_rows
        .first()
        .filter(|(l, _)| l.starts_with("floor: empty"))
        .and_then(|(_, m)| m.values().next().map(|v| v.1 / v.0));
    println!("| condition | programs: runs per syscall × ns per run | ns per syscall | bodies: above an empty program on the same hooks |");
    println!("|---|---|---|---|");
    for (label, m) in &stat_rows {
        let total: f64 = m.values().map(|v| v.1).sum();
        let runs: f64 = m.values().map(|v| v.0).sum();
        let parts: Vec<String> = m
            .iter()
            .filter(|(_, v)| v.0 >= 0.01)
            .map(|(n, v)| format!("{n} {:.2} × {:.0}", v.0, v.1 / v.0))
            .collect();
        println!(
            "| {label} | {} | {total:.0} | {} |",
            parts.join(", "),
            empty_run.map_or("-".into(), |e| format!("{:+.0}", total - runs * e))
        );
    }
    println!(
        "\n(a') sched_switch while two threads of the loop's process ping-pong a byte ({} round trips)\n",
        o.iterations
    );
    println!("| condition | runs per round trip | ns per run | body: above an empty program |");
    println!("|---|---|---|---|");
    for (label, runs, ns) in &switch_rows {
        println!(
            "| {label} | {:.2} | {ns:.0} | {} |",
            runs * 2.0,
            empty_run.map_or("-".into(), |e| format!("{:+.0}", ns - e))
        );
    }
    Ok(())
}

/// (a)'s table: per condition, the loop's CPU per syscall and what the probes added.
fn print_rows(rows: &[Row], rounds: u32) {
    let (none_socket, none_ppid) = (rows[0].socket.clone(), rows[0].ppid.clone());
    // Interference only ever adds time: the fastest round of each condition is the least
    // disturbed one, so the difference of minima is the steadier figure on a busy machine.
    let added = |v: &[f64], none: &[f64]| {
        let per_round = median(&v.iter().zip(none).map(|(c, n)| c - n).collect::<Vec<_>>());
        (per_round, min(v) - min(none))
    };
    println!(
        "\n| condition | CPU ns per socket syscall, median (min) | added: median of per-round differences (difference of minima) | CPU ns per getppid, median (min) | added | load + attach s |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let load = if r.load.is_empty() {
            "-".to_string()
        } else {
            format!("{:.2}", median(&r.load))
        };
        let (s_med, s_min) = added(&r.socket, &none_socket);
        let (p_med, p_min) = added(&r.ppid, &none_ppid);
        println!(
            "| {} | {:.1} ({:.1}) | {s_med:+.1} ({s_min:+.1}) | {:.1} ({:.1}) | {p_med:+.1} ({p_min:+.1}) | {load} |",
            r.label,
            median(&r.socket),
            min(&r.socket),
            median(&r.ppid),
            min(&r.ppid),
        );
    }
    println!("({rounds} rounds)");
}

/// One condition of (a), per round.
struct Row {
    label: String,
    socket: Vec<f64>,
    ppid: Vec<f64>,
    load: Vec<f64>,
}

impl Row {
    fn new(label: &str) -> Row {
        Row {
            label: label.to_string(),
            socket: Vec::new(),
            ppid: Vec::new(),
            load: Vec::new(),
        }
    }
}

/// (b), (c): throughput and latency through the Envoy lab without probes and with each agent.
fn lab(
    o: &Options,
    agent: &Path,
    agents: &[Agent],
    disturbed: &mut Disturbances,
) -> anyhow::Result<()> {
    let lab = Lab::up(agent, "smpbench", "envoy")?;
    let url = lab.str("meshed_url")?.to_string();
    if o.programs_only {
        return lab_programs(o, agent, lab, agents);
    }
    let pids = [lab.sidecar_pid("outbound")?, lab.sidecar_pid("inbound")?];
    let rate = o.rate.to_string();
    let rps = |v: &Value| v["achieved_rate"].as_f64().unwrap_or(f64::NAN);
    let p = |v: &Value, k: &str| v["latency"][k].as_f64().unwrap_or(f64::NAN);
    // Requests over the whole run: the measured part plus the 1 s warm-up at the same rate
    // (`Lab::load`), which the CPU readings include too.
    let requests = |v: &Value| {
        let d = v["duration_s"].as_f64().unwrap_or(f64::NAN);
        v["requests"].as_f64().unwrap_or(f64::NAN) * (d + 1.0) / d
    };

    // Condition 0: no probes; then one per agent.
    let mut conds: Vec<(String, Option<&Agent>)> = vec![("no probes".into(), None)];
    conds.extend(
        agents
            .iter()
            .map(|a| (format!("{} tracking both sidecars", a.name), Some(a))),
    );
    let mut results: Vec<Vec<LabRun>> = vec![Vec::new(); conds.len()];
    println!(
        "\n(b), (c) Envoy mesh lab, {} s per load run, {} rounds",
        o.seconds, o.lab_rounds
    );
    for r in 0..o.lab_rounds as usize {
        // Rotate the order so no condition always runs first.
        for k in 0..conds.len() {
            let c = (k + r) % conds.len();
            let (label, bin) = &conds[c];
            let tops = match bin {
                Some(b) => Some(top_envoys(b, &pids)?),
                None => None,
            };
            if tops.is_some() {
                std::thread::sleep(Duration::from_millis(500));
            }
            let ours: Vec<&Kill> = tops.iter().collect();
            disturbed.check(&format!("lab, {label}"), &ours);
            let max = lab.load(&url, "max", o.seconds)?.1;
            // CPU of the sidecars and of the agents over the fixed-rate run.
            let agent_pids: Vec<u64> = ours.iter().map(|k| u64::from(k.0.id())).collect();
            let (side0, agent0) = (cpu_ns(&pids), cpu_ns(&agent_pids));
            let fixed = lab.load(&url, &rate, o.seconds)?.1;
            let (side1, agent1) = (cpu_ns(&pids), cpu_ns(&agent_pids));
            drop(tops);
            let n = requests(&fixed);
            let v = LabRun {
                max_rps: rps(&max),
                p50: p(&fixed, "p50_ms"),
                p99: p(&fixed, "p99_ms"),
                sidecar_us: cpu_since(&side0, &side1) as f64 / 1e3 / n,
                agent_us: cpu_since(&agent0, &agent1) as f64 / 1e3 / n,
            };
            println!(
                "  round {} {label:<32} max {:.0} rps; at {} rps p50 {:.3} ms p99 {:.3} ms, sidecars {:.1} CPU µs/request, agents {:.1}",
                r + 1,
                v.max_rps,
                o.rate,
                v.p50,
                v.p99,
                v.sidecar_us,
                v.agent_us,
            );
            results[c].push(v);
        }
    }
    let base = results[0].clone();
    let ratio = |i: usize, f: fn(&LabRun) -> f64| {
        let r: Vec<f64> = results[i]
            .iter()
            .zip(&base)
            .map(|(a, b)| f(a) / f(b))
            .collect();
        median(&r)
    };
    println!(
        "\n| condition | (b) max rps | ratio | (c) p50 ms at {} rps | ratio | (c) p99 ms | ratio | sidecars CPU µs/request | ratio | agents CPU µs/request |",
        o.rate
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (i, (label, _)) in conds.iter().enumerate() {
        let col = |f: fn(&LabRun) -> f64| median(&results[i].iter().map(f).collect::<Vec<_>>());
        println!(
            "| {label} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.3} | {:.1} |",
            col(|v| v.max_rps),
            ratio(i, |v| v.max_rps),
            col(|v| v.p50),
            ratio(i, |v| v.p50),
            col(|v| v.p99),
            ratio(i, |v| v.p99),
            col(|v| v.sidecar_us),
            ratio(i, |v| v.sidecar_us),
            col(|v| v.agent_us),
        );
    }
    println!("(medians of {} rounds; ratios are medians of per-round ratios to no probes; CPU over the fixed-rate run, from the threads' schedstat)", o.lab_rounds);
    lab_programs(o, agent, lab, agents)
}

/// (d) on `lab` (HTTP/1.1 between the sidecars), then with `--h2` on a lab with HTTP/2 in its
/// place (the same name: `lab` goes first).
fn lab_programs(o: &Options, agent: &Path, lab: Lab, agents: &[Agent]) -> anyhow::Result<()> {
    let on = |lab: &Lab, what: &str| -> anyhow::Result<()> {
        let url = lab.str("meshed_url")?.to_string();
        let pids = [lab.sidecar_pid("outbound")?, lab.sidecar_pid("inbound")?];
        program_time(o, what, lab, &url, &pids, agents)
    };
    on(&lab, "HTTP/1.1 between the sidecars")?;
    if o.h2 {
        drop(lab);
        let lab = Lab::up_with(agent, "smpbench", "envoy", &["--h2"])?;
        on(&lab, "HTTP/2 (h2c) between the sidecars")?;
    }
    Ok(())
}

/// (d): where the probes' time goes: each program's run time per request at the fixed rate,
/// from the kernel's own accounting (`kernel.bpf_stats_enabled`, on only for these runs: it
/// adds two clock reads to every program run, which the figures include). One agent follows
/// both sidecars ([`top_envoys`]); `--lab-rounds` rounds, the agents' order rotating, and
/// per agent and program the medians of the per-round figures, with the per-round totals
/// (their spread) and, beside the first agent, each other's ratio to it.
fn program_time(
    o: &Options,
    what: &str,
    lab: &Lab,
    url: &str,
    pids: &[u64],
    agents: &[Agent],
) -> anyhow::Result<()> {
    const STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let was = std::fs::read_to_string(STATS)?.trim().to_string();
    let stats = |ours: &Kill| prog_stats(ours.0.id());
    println!(
        "\n(d) eBPF run time per request at {} rps, {} s, by program, Envoy lab with {what} (kernel.bpf_stats_enabled; one agent following both sidecars; {} rounds)",
        o.rate, o.seconds, o.lab_rounds
    );
    // Per agent, per round: program → (runs per request, ns per request).
    type Round = PerProgram;
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); agents.len()];
    for r in 0..o.lab_rounds as usize {
        for k in 0..agents.len() {
            let i = (k + r) % agents.len();
            let top = top_envoys(&agents[i], pids)?;
            std::thread::sleep(Duration::from_millis(500));
            std::fs::write(STATS, "1")?;
            let before = stats(&top);
            let fixed = lab.load(url, &o.rate.to_string(), o.seconds);
            let after = stats(&top);
            std::fs::write(STATS, &was)?;
            drop(top);
            let (before, after, fixed) = (before?, after?, fixed?.1);
            // The stats cover the 1 s warm-up at the same rate too (`Lab::load`).
            let d = fixed["duration_s"].as_f64().unwrap_or(f64::NAN);
            let requests = fixed["requests"].as_f64().unwrap_or(f64::NAN) * (d + 1.0) / d;
            let mut round = Round::new();
            for (name, (ns1, n1)) in &after {
                let (ns0, n0) = before.get(name).copied().unwrap_or_default();
                if n1 > &n0 {
                    round.insert(name.clone(), ((n1 - n0) / requests, (ns1 - ns0) / requests));
                }
            }
            let total: f64 = round.values().map(|v| v.1).sum();
            println!(
                "  round {} {}: {requests:.0} requests, {total:.0} ns per request",
                r + 1,
                agents[i].name
            );
            rounds[i].push(round);
        }
    }
    let col = |i: usize, name: &str, f: fn(&(f64, f64)) -> f64| {
        median(
            &rounds[i]
                .iter()
                .map(|r| r.get(name).map_or(0.0, f))
                .collect::<Vec<_>>(),
        )
    };
    let totals = |i: usize| -> Vec<f64> {
        rounds[i]
            .iter()
            .map(|r| r.values().map(|v| v.1).sum())
            .collect()
    };
    let names: BTreeSet<String> = rounds
        .iter()
        .flatten()
        .flat_map(|r| r.keys().cloned())
        .collect();
    for (i, a) in agents.iter().enumerate() {
        println!("\n{} (medians of {} rounds)\n", a.name, rounds[i].len());
        println!("| program | runs per request | ns per run | ns per request |");
        println!("|---|---|---|---|");
        for name in &names {
            let (runs, ns) = (col(i, name, |v| v.0), col(i, name, |v| v.1));
            if runs == 0.0 {
                continue;
            }
            println!("| {name} | {runs:.1} | {:.0} | {ns:.0} |", ns / runs);
        }
        let t = totals(i);
        println!(
            "| all (per-round totals {}) | | | {:.0} |",
            t.iter()
                .map(|v| format!("{v:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            median(&t)
        );
    }
    if agents.len() > 1 {
        // Ratios to the first agent, as medians of per-round ratios (rounds pair up by index).
        println!(
            "\nns per request against {} (medians of per-round ratios)\n",
            agents[0].name
        );
        let head: Vec<&str> = agents[1..].iter().map(|a| a.name.as_str()).collect();
        println!("| program | {} |", head.join(" | "));
        println!("|---|{}", "---|".repeat(head.len()));
        let ratio = |i: usize, f: &dyn Fn(&Round) -> f64| {
            median(
                &rounds[i]
                    .iter()
                    .zip(&rounds[0])
                    .map(|(a, b)| f(a) / f(b))
                    .collect::<Vec<_>>(),
            )
        };
        for name in names.iter().map(Some).chain([None]) {
            let f = |r: &Round| match name {
                Some(n) => r.get(n).map_or(0.0, |v| v.1),
                None => r.values().map(|v| v.1).sum(),
            };
            // A program one of the two agents does not run (the other socket hooks) has no
            // ratio: "-", not 0 or inf.
            let ran = |i: usize| rounds[i].iter().any(|r| f(r) > 0.0);
            let cells: Vec<String> = (1..agents.len())
                .map(|i| {
                    if ran(i) && ran(0) {
                        format!("{:.3}", ratio(i, &f))
                    } else {
                        "-".into()
                    }
                })
                .collect();
            println!(
                "| {} | {} |",
                name.map_or("all", |n| n.as_str()),
                cells.join(" | ")
            );
        }
    }
    Ok(())
}

/// One load run pair of one condition in (b), (c).
#[derive(Clone, Copy)]
struct LabRun {
    max_rps: f64,
    p50: f64,
    p99: f64,
    /// Both sidecars' CPU per request at the fixed rate.
    sidecar_us: f64,
    /// The agents' CPU per request at the fixed rate.
    agent_us: f64,
}

/// On-CPU ns of every thread of `pids`, by thread id (`/proc/<pid>/task/*/schedstat`, first
/// field).
fn cpu_ns(pids: &[u64]) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    for pid in pids {
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
                let ns = s
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
                out.insert(format!("{pid}/{}", task.file_name().to_string_lossy()), ns);
            }
        }
    }
    out
}

/// CPU ns the threads in `after` spent since `before` (threads that ended in between, such
/// as the agent's idle blocking-pool threads, are not counted: a slight undercount).
fn cpu_since(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> u64 {
    after
        .iter()
        .map(|(tid, ns)| ns.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum()
}
