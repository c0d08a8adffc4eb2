//! `cargo xtask bench loadgen`: our load generator side by side with `wrk` (Debian) and `oha`
//! (a Rust tool; `cargo install oha --locked` if missing), in one run, against the same local
//! nginx (a tiny config in a temp dir, one worker, loopback port), same connection count.
//!
//! Two measurements:
//! 1. **Max throughput** (closed loop): `smp-agent load --rate max`, `wrk`, `oha`.
//! 2. **Latency at a fixed rate** (open loop): `smp-agent load --rate R`, `oha -q R
//!    --latency-correction`. Plain wrk cannot hold a rate (that is wrk2, not in Debian), so it
//!    has no row there.
//!
//! Prints a table; copy it into docs/benchmarks.md ("Load generator").

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::util::cargo;

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Connections for every tool.
    #[arg(short, long, default_value_t = 50)]
    pub connections: u32,
    /// Seconds per measurement.
    #[arg(short, long, default_value_t = 10)]
    pub seconds: u32,
    /// Requests per second of the fixed-rate comparison.
    #[arg(short, long, default_value_t = 5000)]
    pub rate: u32,
    /// Threads for wrk (its `-t`); defaults to the number of CPUs.
    #[arg(long)]
    pub wrk_threads: Option<usize>,
    /// Rounds of the throughput measurement (tools interleaved; the best round of each counts).
    #[arg(long, default_value_t = 2)]
    pub rounds: u32,
}

/// Kills and reaps a child when dropped.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One row of the table.
#[derive(Debug, Default, Clone)]
struct Row {
    tool: String,
    mode: String,
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: Option<f64>,
    max_ms: f64,
    errors: u64,
    /// The tool's own CPU time (user + system) per request, microseconds.
    cpu_us_per_req: f64,
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("failed to find a free loopback port")?;
    Ok(l.local_addr()?.port())
}

fn start_nginx(dir: &Path, port: u16) -> anyhow::Result<Reap> {
    let conf = dir.join("nginx.conf");
    fs::write(
        &conf,
        format!(
            "daemon off; master_process off; worker_processes 1; pid {dir}/nginx.pid;\n\
             error_log {dir}/nginx-error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; keepalive_requests 1000000; \
             client_body_temp_path {dir}; proxy_temp_path {dir}; fastcgi_temp_path {dir}; \
             uwsgi_temp_path {dir}; scgi_temp_path {dir};\n\
             server {{ listen 127.0.0.1:{port}; \
             location / {{ return 200 \"hello from the loadgen bench\\n\"; }} }} }}\n",
            dir = dir.display()
        ),
    )?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .spawn()
        .context("failed to start nginx (installed by `cargo xtask setup`: nginx-light)")?;
    let guard = Reap(child);
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(guard);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "nginx did not listen on 127.0.0.1:{port}; see {}/nginx-error.log",
        dir.display()
    )
}

fn find_oha() -> anyhow::Result<PathBuf> {
    if let Ok(p) = which("oha") {
        return Ok(p);
    }
    println!("== oha not found: cargo install oha --locked (one-time, takes a few minutes)");
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["install", "oha", "--locked"])
        .status()
        .context("failed to run cargo install oha")?;
    if !status.success() {
        bail!("cargo install oha --locked failed: {status}");
    }
    which("oha")
}

fn which(name: &str) -> anyhow::Result<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found in PATH"))
}

/// The first number after `"key":` that follows `after` (a section name) in JSON text.
fn json_number(text: &str, after: &str, key: &str) -> Option<f64> {
    let from = if after.is_empty() {
        0
    } else {
        text.find(&format!("\"{after}\""))?
    };
    let rest = &text[from..];
    let i = rest.find(&format!("\"{key}\""))?;
    let rest = rest[i + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// wrk prints `50%  123.00us`; returns milliseconds.
fn wrk_duration_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic())?);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

/// Runs a tool to completion and returns its stdout and the CPU time (user + system, all
/// threads) it used, sampled from `/proc/<pid>/stat` every 20 ms until it exits. CPU per
/// request is the figure that background load on a shared machine disturbs least.
fn run_measured(cmd: &mut Command) -> anyhow::Result<(String, f64)> {
    use std::io::Read as _;
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("failed to spawn {cmd:?}"))?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let stat = format!("/proc/{}/stat", child.id());
    let mut ticks = 0u64;
    let status = loop {
        if let Ok(text) = fs::read_to_string(&stat) {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            if let Some(rest) = text.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let t = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
                    + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                ticks = ticks.max(t);
            }
        }
        if let Some(st) = child.try_wait()? {
            break st;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    // USER_HZ is 100 on every Linux architecture we run on.
    Ok((out, ticks as f64 / 100.0))
}

fn run_ours(agent: &Path, url: &str, o: &Options, rate: Option<u32>) -> anyhow::Result<Row> {
    let rate_arg = rate.map_or("max".to_string(), |r| r.to_string());
    let (text, cpu) = run_measured(Command::new(agent).args([
        "load",
        "--rate",
        &rate_arg,
        "-c",
        &o.connections.to_string(),
        "-d",
        &format!("{}s", o.seconds),
        // No warm-up: wrk and oha have none, and CPU per request must count the same work.
        "--warmup",
        "0s",
        "--output",
        "json",
        "--no-progress",
        url,
    ]))?;
    let n = |k: &str| json_number(&text, "latency", k).unwrap_or(f64::NAN);
    let requests = json_number(&text, "", "requests").unwrap_or(f64::NAN);
    Ok(Row {
        cpu_us_per_req: cpu * 1e6 / requests,
        tool: "smp-agent load".into(),
        mode: rate.map_or("max".into(), |r| format!("{r}/s")),
        rps: json_number(&text, "", "achieved_rate").unwrap_or(f64::NAN),
        p50_ms: n("p50_ms"),
        p90_ms: n("p90_ms"),
        p99_ms: n("p99_ms"),
        p999_ms: Some(n("p99_9_ms")),
        max_ms: n("max_ms"),
        errors: ["connect", "timeout", "reset", "protocol"]
            .iter()
            .map(|k| json_number(&text, "errors", k).unwrap_or(0.0) as u64)
            .sum(),
    })
}

fn run_wrk(url: &str, o: &Options) -> anyhow::Result<Row> {
    let threads = o
        .wrk_threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, usize::from))
        .min(o.connections as usize);
    let (text, cpu) = run_measured(Command::new("wrk").args([
        &format!("-t{threads}"),
        &format!("-c{}", o.connections),
        &format!("-d{}s", o.seconds),
        "--latency",
        url,
    ]))
    .context("wrk failed (apt-get install wrk)")?;
    let mut row = Row {
        tool: format!("wrk -t{threads}"),
        mode: "max".into(),
        ..Row::default()
    };
    for line in text.lines() {
        let l = line.trim();
        if l.contains(" requests in ") {
            let n: f64 = l
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            row.cpu_us_per_req = cpu * 1e6 / n;
        }
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            row.rps = v.trim().parse().unwrap_or(f64::NAN);
        }
        let mut it = l.split_whitespace();
        match (it.next(), it.next()) {
            (Some("50%"), Some(v)) => row.p50_ms = wrk_duration_ms(v).unwrap_or(f64::NAN),
            (Some("90%"), Some(v)) => row.p90_ms = wrk_duration_ms(v).unwrap_or(f64::NAN),
            (Some("99%"), Some(v)) => row.p99_ms = wrk_duration_ms(v).unwrap_or(f64::NAN),
            (Some("Latency"), Some(_)) => {
                // "Latency   avg   stdev   max   +/- stdev"
                let cols: Vec<&str> = l.split_whitespace().collect();
                if let Some(m) = cols.get(3).and_then(|v| wrk_duration_ms(v)) {
                    row.max_ms = m;
                }
            }
            (Some("Socket"), Some("errors:")) => {
                row.errors = l
                    .split(',')
                    .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                    .sum();
            }
            (Some("Non-2xx"), _) => {
                row.errors += l
                    .split_whitespace()
                    .last()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
            }
            _ => {}
        }
    }
    Ok(row)
}

fn run_oha(oha: &Path, url: &str, o: &Options, rate: Option<u32>) -> anyhow::Result<Row> {
    let mut cmd = Command::new(oha);
    cmd.args([
        "-c",
        &o.connections.to_string(),
        "-z",
        &format!("{}s", o.seconds),
        "--no-tui",
        "--output-format",
        "json",
    ]);
    if let Some(r) = rate {
        cmd.args(["-q", &r.to_string(), "--latency-correction"]);
    }
    cmd.arg(url);
    let (text, cpu) = run_measured(&mut cmd)?;
    let p = |k: &str| json_number(&text, "latencyPercentiles", k).map_or(f64::NAN, |s| s * 1000.0);
    let rps = json_number(&text, "summary", "requestsPerSec").unwrap_or(f64::NAN);
    let success = json_number(&text, "summary", "successRate").unwrap_or(1.0);
    // The target only answers 200, so that bucket is the successful request count.
    let ok = json_number(&text, "statusCodeDistribution", "200").unwrap_or(f64::NAN);
    let errors = if success > 0.0 && success < 1.0 {
        (ok * (1.0 / success - 1.0)).round() as u64
    } else {
        0
    };
    Ok(Row {
        cpu_us_per_req: cpu * 1e6 / (ok + errors as f64),
        tool: "oha".into(),
        mode: rate.map_or("max".into(), |r| format!("{r}/s")),
        rps,
        p50_ms: p("p50"),
        p90_ms: p("p90"),
        p99_ms: p("p99"),
        p999_ms: Some(p("p99.9")),
        max_ms: json_number(&text, "summary", "slowest").map_or(f64::NAN, |s| s * 1000.0),
        errors,
    })
}

fn print_table(rows: &[Row]) {
    println!(
        "| tool | rate | achieved req/s | CPU µs/req | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.3} | {:.3} | {:.3} | {} | {:.3} | {} |",
            r.tool,
            r.mode,
            r.rps,
            r.cpu_us_per_req,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.p999_ms.map_or("-".into(), |v| format!("{v:.3}")),
            r.max_ms,
            r.errors
        );
    }
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    // The load command needs no eBPF object: build without it so the bench runs anywhere.
    println!("== building smp-agent (release)");
    let target_dir = crate::build::target_dir();
    crate::util::run_cmd(
        cargo()
            .env("AYA_BUILD_SKIP", "1")
            .env("CARGO_TARGET_DIR", &target_dir)
            .args(["build", "--release", "-p", "smp-agent"]),
    )?;
    let agent = target_dir.join("release/smp-agent");
    which("wrk").context("wrk is required (apt-get install wrk)")?;
    let oha = find_oha()?;

    let dir = std::env::temp_dir().join(format!("smp-bench-loadgen-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let _nginx = start_nginx(&dir, port)?;
    let url = format!("http://127.0.0.1:{port}/");
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpu_model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "== target nginx (1 worker) at {url}; {} connections, {} s per run; {cpus} CPUs ({cpu_model}), \
         kernel {}, load average at start {}",
        o.connections,
        o.seconds,
        kernel.trim(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );

    // Throughput: interleave the tools so background load hits all of them alike.
    let mut best: Vec<Row> = Vec::new();
    for round in 1..=o.rounds.max(1) {
        println!("== throughput round {round}/{}", o.rounds.max(1));
        for row in [
            run_ours(&agent, &url, o, None)?,
            run_wrk(&url, o)?,
            run_oha(&oha, &url, o, None)?,
        ] {
            println!(
                "   {:<16} {:>10.0} req/s {:>8.2} CPU µs/req",
                row.tool, row.rps, row.cpu_us_per_req
            );
            match best.iter_mut().find(|b| b.tool == row.tool) {
                Some(b) if b.rps >= row.rps => {}
                Some(b) => *b = row,
                None => best.push(row),
            }
        }
    }
    println!("== fixed rate {} req/s", o.rate);
    let fixed = [
        run_ours(&agent, &url, o, Some(o.rate))?,
        run_oha(&oha, &url, o, Some(o.rate))?,
    ];

    println!(
        "\n### Max throughput (closed loop, best of {} rounds)\n",
        o.rounds.max(1)
    );
    print_table(&best);
    let rps = |t: &str| best.iter().find(|r| r.tool.starts_with(t)).map(|r| r.rps);
    if let (Some(ours), Some(wrk), Some(oha)) = (rps("smp-agent"), rps("wrk"), rps("oha")) {
        println!(
            "\nthroughput ratio: smp-agent / wrk = {:.2}, smp-agent / oha = {:.2}",
            ours / wrk,
            ours / oha
        );
    }
    let cpu = |t: &str| {
        best.iter()
            .find(|r| r.tool.starts_with(t))
            .map(|r| r.cpu_us_per_req)
    };
    if let (Some(ours), Some(wrk), Some(oha)) = (cpu("smp-agent"), cpu("wrk"), cpu("oha")) {
        println!(
            "CPU per request ratio: smp-agent / wrk = {:.2}, smp-agent / oha = {:.2} (lower is better)",
            ours / wrk,
            ours / oha
        );
    }
    println!("\n### Latency at {} req/s (open loop)\n", o.rate);
    print_table(&fixed);
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers() {
        let j = r#"{"summary": {"total": 2.0, "requestsPerSec": 1234.5}, "latencyPercentiles": {"p50": 0.0001, "p99.9": 0.002}}"#;
        assert_eq!(json_number(j, "summary", "requestsPerSec"), Some(1234.5));
        assert_eq!(json_number(j, "latencyPercentiles", "p50"), Some(0.0001));
        assert_eq!(json_number(j, "latencyPercentiles", "p99.9"), Some(0.002));
        assert_eq!(wrk_duration_ms("123.00us"), Some(0.123));
        assert_eq!(wrk_duration_ms("1.50ms"), Some(1.5));
        assert_eq!(wrk_duration_ms("2.00s"), Some(2000.0));
    }
}
