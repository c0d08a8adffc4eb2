//! A real Prometheus for tests: start it on loopback in a temporary directory with a scrape
//! configuration pointing at our targets, wait for scrapes, query its HTTP API. Used by
//! tests/tests/prometheus.rs against the synthetic feeder, and meant for the real daemon on the
//! mesh lab as well: nothing here knows what it scrapes.
//!
//! The `prometheus` and `promtool` binaries come from Debian's `prometheus` package
//! (`cargo xtask setup` installs it). [`crate::require_tool`] finds them, skipping outside CI
//! and failing under `CI=true`.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::free_port;

/// One scrape job.
#[derive(Debug, Clone)]
pub struct ScrapeTarget {
    /// `job` label.
    pub job: String,
    /// `host:port` scraped at `/metrics`.
    pub addr: SocketAddr,
    /// Keep the target's own `pod`/`namespace` labels on conflicts (as the DaemonSet's
    /// ServiceMonitor does).
    pub honor_labels: bool,
}

impl ScrapeTarget {
    /// A job with `honor_labels: true`.
    pub fn new(job: &str, addr: SocketAddr) -> Self {
        Self {
            job: job.to_string(),
            addr,
            honor_labels: true,
        }
    }
}

/// One element of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorSample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A running Prometheus, killed (and its directory removed) on drop.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    /// Its HTTP address (loopback).
    pub addr: SocketAddr,
    dir: PathBuf,
}

/// The scrape configuration for `targets`.
pub fn scrape_config(targets: &[ScrapeTarget], scrape_interval: Duration) -> String {
    let secs = scrape_interval.as_secs_f64();
    let mut y = format!(
        "global:\n  scrape_interval: {secs}s\n  scrape_timeout: {secs}s\n  evaluation_interval: {secs}s\nscrape_configs:\n"
    );
    for t in targets {
        y.push_str(&format!(
            "  - job_name: {job:?}\n    honor_labels: {honor}\n    metrics_path: /metrics\n    static_configs:\n      - targets: [\"{addr}\"]\n",
            job = t.job,
            honor = t.honor_labels,
            addr = t.addr,
        ));
    }
    y
}

impl Prometheus {
    /// Starts `prometheus` (the binary at `bin`) scraping `targets` every `scrape_interval`,
    /// listening on a free loopback port, and waits until it is ready.
    pub fn start(bin: &Path, targets: &[ScrapeTarget], scrape_interval: Duration) -> Prometheus {
        Self::start_with_config(bin, &scrape_config(targets, scrape_interval))
    }

    /// Starts `prometheus` with a complete configuration file's text.
    pub fn start_with_config(bin: &Path, config: &str) -> Prometheus {
        let mut failures = String::new();
        for _ in 0..3 {
            let dir = std::env::temp_dir().join(format!(
                "smp-prometheus-{}-{}",
                std::process::id(),
                free_port()
            ));
            std::fs::create_dir_all(dir.join("data")).expect("create prometheus dir");
            let config_file = dir.join("prometheus.yml");
            std::fs::write(&config_file, config).expect("write prometheus.yml");
            let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
            let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
            let child = Command::new(bin)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.retention.time=1h")
                .arg("--log.level=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("failed to start {}: {e}", bin.display()));
            let mut p = Prometheus { child, addr, dir };
            match p.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return p,
                // A port taken between free_port() and the bind: try another one. Dropping `p`
                // kills it and removes its directory.
                Err(e) => failures.push_str(&format!("{e}\n{}\n", p.log())),
            }
        }
        panic!("prometheus did not start:\n{failures}");
    }

    /// Waits for `/-/ready` to answer 200.
    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("prometheus exited: {status}"));
            }
            if let Ok((200, _)) = http_get(self.addr, "/-/ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Prometheus' own log so far (for assertion messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Evaluates `expr` now. A vector comes back as its samples, a scalar as one sample
    /// without labels; an error (bad PromQL) as `Err` with Prometheus' message.
    pub fn query(&self, expr: &str) -> Result<Vec<VectorSample>, String> {
        self.query_path(&format!("/api/v1/query?query={}", url_encode(expr)))
    }

    /// [`Prometheus::query`] evaluated at `time` instead of now (each series' latest sample at
    /// or before `time`, within the 5 min lookback).
    pub fn query_at(
        &self,
        expr: &str,
        time: std::time::SystemTime,
    ) -> Result<Vec<VectorSample>, String> {
        let t = time
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|e| e.to_string())?
            .as_secs_f64();
        self.query_path(&format!(
            "/api/v1/query?query={}&time={t:.3}",
            url_encode(expr)
        ))
    }

    fn query_path(&self, path: &str) -> Result<Vec<VectorSample>, String> {
        let (status, body) = http_get(self.addr, path).map_err(|e| e.to_string())?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|e| format!("HTTP {status}, not JSON ({e}): {body}"))?;
        if v["status"] != "success" {
            return Err(format!(
                "{}: {}",
                v["errorType"].as_str().unwrap_or("error"),
                v["error"].as_str().unwrap_or(&body)
            ));
        }
        let data = &v["data"];
        let value = |pair: &serde_json::Value| -> f64 {
            match pair[1].as_str().unwrap_or("NaN") {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                s => s.parse().unwrap_or(f64::NAN),
            }
        };
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| VectorSample {
                    labels: r["metric"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect(),
                    value: value(&r["value"]),
                })
                .collect()),
            Some("scalar") => Ok(vec![VectorSample {
                labels: BTreeMap::new(),
                value: value(&data["result"]),
            }]),
            other => Err(format!("unexpected result type {other:?}: {body}")),
        }
    }

    /// The value of an expression that yields exactly one sample.
    pub fn query_one(&self, expr: &str) -> f64 {
        let r = self
            .query(expr)
            .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        assert_eq!(r.len(), 1, "query {expr}: expected one sample, got {r:?}");
        r[0].value
    }

    /// Polls `expr` until `done` accepts its result, or panics after `timeout` with the last
    /// result and Prometheus' log.
    pub fn wait_for(
        &self,
        expr: &str,
        timeout: Duration,
        done: impl Fn(&[VectorSample]) -> bool,
    ) -> Vec<VectorSample> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(expr);
            if let Ok(v) = &r {
                if done(v) {
                    return v.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "waited {timeout:?} for {expr}: last result {r:?}\nprometheus log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Health of every scrape target: (job, `up` value, last error).
    pub fn targets(&self) -> Vec<(String, String, String)> {
        let (_, body) = http_get(self.addr, "/api/v1/targets").expect("targets");
        let v: serde_json::Value = serde_json::from_str(&body).expect("targets JSON");
        v["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["labels"]["job"].as_str().unwrap_or("").to_string(),
                    t["health"].as_str().unwrap_or("").to_string(),
                    t["lastError"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a query-string value.
pub fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET (the server closes after the body: no chunking); returns (status,
/// body).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_get_with(addr, path, &[]).map(|(s, _, b)| (s, b))
}

/// [`http_get`] with extra request headers; returns (status, lower-cased head, body).
pub fn http_get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}\r\n")?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, head.to_ascii_lowercase(), body.to_string()))
}

/// Runs `promtool check metrics` on an exposition (Prometheus text format); returns its
/// combined output on failure.
pub fn promtool_check_metrics(promtool: &Path, exposition: &str) -> Result<(), String> {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}", promtool.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics: {}\n{text}", out.status))
    }
}
