//! `cargo xtask bench soak`: `smp-agent daemon` tracking the Envoy lab's two sidecars for a long
//! steady load, to catch what short tests cannot: memory that grows with time or traffic, loss
//! that starts after a while, a loop that falls behind.
//!
//! The daemon (release build) follows the lab's two sidecars by pid (so other Envoys on a shared
//! machine do not change the figures) with the default 1 s interval, while `smp-agent load`
//! drives `--rate` through the meshed path for `--minutes`. Every 10 s its RSS (VmRSS) and CPU
//! time (utime + stime) are read from procfs and `/metrics` is scraped (which also exercises
//! the server). Reported: RSS after the warm-up (the first minute) and at the end, the growth,
//! the peak (VmHWM), the daemon's CPU in % of a core after the warm-up, lost events by reason
//! (`smp_events_lost_total`), the requests each sidecar was seen to receive against the
//! requests sent, and how long SIGTERM took. docs/benchmarks.md records runs.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::{
    bench_agent::{cpu_seconds, status_mib},
    build,
    lab::Lab,
};

#[derive(Debug, clap::Args)]
pub struct Options {
    /// Minutes of load (the first one is the warm-up).
    #[arg(long, default_value_t = 10)]
    pub minutes: u64,
    /// Requests per second through the meshed path.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,
}

/// Seconds between two samples.
const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// The warm-up: RSS growth is measured from the first sample after it.
const WARMUP: Duration = Duration::from_secs(60);

/// One sample of the daemon.
struct Sample {
    at: Duration,
    rss_mib: f64,
    cpu_s: f64,
}

/// The daemon; SIGKILLed on drop if still running.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.0 GET on loopback: (status, body).
fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, body.to_string()))
}

/// Sum of the samples of `name` per value of `label` (all samples under "" without it).
fn metric_by(text: &str, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (n, labels) = series.split_once('{').unwrap_or((series, ""));
        if n != name {
            continue;
        }
        let key = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix(&format!("{label}=\"")))
            .map(|v| v.trim_end_matches('}').trim_end_matches('"').to_string())
            .unwrap_or_default();
        *out.entry(key).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    out
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn run(o: &Options) -> anyhow::Result<()> {
    if o.minutes < 2 {
        bail!("--minutes: at least 2 (the first minute is the warm-up)");
    }
    crate::setup::run()?;
    let agent = build::run(&build::Options { release: true })?;
    let lab = Lab::up(&agent, "smpsoak", "envoy")?;
    let url = lab.str("meshed_url")?.to_string();
    let pids = [lab.sidecar_pid("outbound")?, lab.sidecar_pid("inbound")?];

    let dir = std::env::temp_dir().join(format!("smp-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("daemon.yaml");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
    std::fs::write(
        &config,
        format!(
            "listen: {addr}\nproxy_names: []\npids: [{}, {}]\ninterval: 1s\nkube: off\n",
            pids[0], pids[1]
        ),
    )?;
    let log_path = dir.join("daemon.log");
    let daemon = Daemon(
        Command::new(&agent)
            .args(["daemon", "--config"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?)
            .spawn()
            .context("spawn smp-agent daemon")?,
    );
    let pid = daemon.0.id();
    let ready_by = Instant::now() + Duration::from_secs(90);
    while !matches!(http_get(addr, "/readyz"), Ok((200, _))) {
        if Instant::now() > ready_by {
            bail!(
                "daemon not ready after 90 s: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "soak: daemon pid {pid} on {addr} tracking sidecars {pids:?}; {} rps for {} min",
        o.rate, o.minutes
    );

    let seconds = o.minutes * 60;
    let load = {
        let mut cmd = lab.load_command(&url, &o.rate.to_string(), seconds, "0s")?;
        std::thread::spawn(move || -> anyhow::Result<Value> {
            let out = cmd.output().context("run smp-agent load")?;
            if !out.status.success() {
                bail!("load failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            serde_json::from_slice(&out.stdout).context("load: not JSON")
        })
    };
    let start = Instant::now();
    let cpu0 = cpu_seconds(pid)?;
    let mut samples = Vec::new();
    let mut scrape_failures = 0;
    let mut next = start;
    while !load.is_finished() {
        if Instant::now() >= next {
            samples.push(Sample {
                at: start.elapsed(),
                rss_mib: status_mib(pid, "VmRSS:")?,
                cpu_s: cpu_seconds(pid)? - cpu0,
            });
            if !matches!(http_get(addr, "/metrics"), Ok((200, _))) {
                scrape_failures += 1;
            }
            let s = samples.last().expect("just pushed");
            eprintln!(
                "  {:>5.0} s  RSS {:>6.1} MiB  CPU {:>6.2} s",
                s.at.as_secs_f64(),
                s.rss_mib,
                s.cpu_s
            );
            next += SAMPLE_EVERY;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let wall = start.elapsed();
    let load = load.join().map_err(|_| anyhow::anyhow!("load thread"))??;
    // Let the last interval reach the metrics.
    std::thread::sleep(Duration::from_secs(2));
    let end = Sample {
        at: start.elapsed(),
        rss_mib: status_mib(pid, "VmRSS:")?,
        cpu_s: cpu_seconds(pid)? - cpu0,
    };
    let hwm = status_mib(pid, "VmHWM:")?;
    let (_, text) = http_get(addr, "/metrics")?;
    let lost = metric_by(&text, "smp_events_lost_total", "reason");
    let counted = metric_by(&text, "smp_proxy_requests_total", "proxy_id");
    let dropped = metric_by(&text, "smp_hop_observations_dropped_total", "");
    let agent_rss = metric_by(&text, "smp_agent_resident_memory_bytes", "");

    let t0 = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let mut daemon = daemon;
    let status = daemon.0.wait()?;
    let shutdown = t0.elapsed();

    let warm = samples
        .iter()
        .find(|s| s.at >= WARMUP)
        .context("no sample after the warm-up")?;
    let growth = 100.0 * (end.rss_mib - warm.rss_mib) / warm.rss_mib;
    let cpu_pct = 100.0 * (end.cpu_s - warm.cpu_s) / (end.at - warm.at).as_secs_f64();
    let achieved = load["achieved_rate"].as_f64().unwrap_or(f64::NAN);
    let sent = load["requests"].as_u64().unwrap_or(0);
    let errors = load["errors"].to_string();

    println!("\nRSS per minute (MiB):");
    println!("| minute | RSS MiB | CPU % of a core over the minute |");
    println!("|---|---|---|");
    let mut prev: Option<&Sample> = None;
    for s in samples.iter().filter(|s| s.at.as_secs() % 60 < 10) {
        let pct = prev.map_or(f64::NAN, |p| {
            100.0 * (s.cpu_s - p.cpu_s) / (s.at - p.at).as_secs_f64()
        });
        println!(
            "| {:.0} | {:.1} | {pct:.2} |",
            s.at.as_secs_f64() / 60.0,
            s.rss_mib
        );
        prev = Some(s);
    }
    println!(
        "\n| minutes | target rps | achieved rps | RSS after warm-up MiB | RSS at end MiB | growth | peak RSS MiB | daemon CPU % of a core | events lost | requests sent / counted per sidecar | hops dropped | failed scrapes | SIGTERM exit |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let lost_text = lost
        .iter()
        .map(|(r, v)| format!("{r} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let counted_text = counted
        .values()
        .map(|v| format!("{v}"))
        .collect::<Vec<_>>()
        .join(" / ");
    println!(
        "| {} | {} | {achieved:.1} | {:.1} | {:.1} | {growth:+.2} % | {hwm:.1} | {cpu_pct:.2} | {lost_text} | {sent} / {counted_text} | {} | {scrape_failures} | {:.2} s ({status}) |",
        o.minutes,
        o.rate,
        warm.rss_mib,
        end.rss_mib,
        dropped.values().sum::<f64>(),
        shutdown.as_secs_f64(),
    );
    println!(
        "\nload: {sent} requests in {:.0} s, errors {errors}; agent RSS by its own metric {:.1} MiB; daemon log {}",
        wall.as_secs_f64(),
        agent_rss.values().sum::<f64>() / (1024.0 * 1024.0),
        log_path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_by_sums_per_label() {
        let text = "# TYPE x counter\nsmp_events_lost_total{reason=\"ringbuf_full\"} 3\nsmp_events_lost_total{reason=\"map_full\"} 0\nsmp_proxy_requests_total{proxy=\"envoy\",proxy_id=\"a#1\",pod=\"\"} 10\nsmp_hop_observations_dropped_total 4\n";
        let lost = metric_by(text, "smp_events_lost_total", "reason");
        assert_eq!(lost["ringbuf_full"], 3.0);
        assert_eq!(lost["map_full"], 0.0);
        assert_eq!(
            metric_by(text, "smp_proxy_requests_total", "proxy_id")["a#1"],
            10.0
        );
        assert_eq!(
            metric_by(text, "smp_hop_observations_dropped_total", "")[""],
            4.0
        );
    }
}
