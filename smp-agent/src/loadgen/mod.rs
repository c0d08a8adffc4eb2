//! The built-in HTTP load generator (`smp-agent load`; `profile` reuses it).
//!
//! - **Open loop** ([`Rate::Fixed`]): requests follow a fixed schedule ([`schedule`])
//!   independent of responses, and latency is measured from each request's *intended* send
//!   time, so coordinated omission is corrected (wrk2's model).
//! - **Closed loop** ([`Rate::Max`]): every connection sends its next request as soon as the
//!   previous response is complete (wrk's model), for maximum throughput.
//!
//! Transports: HTTP/1.1 keep-alive ([`http1`], a hand-rolled fast path) and HTTP/2 ([`http2`],
//! the `h2` crate), both in cleartext or over TLS with ALPN ([`tls`], rustls with `ring`), and
//! unary gRPC on the HTTP/2 transport ([`grpc`]: statuses counted by code).
//! Each of the `connections` workers is one task that owns its connections (one per distinct
//! target authority) and its own [`Recorder`]: nothing is shared or locked per request except
//! two relaxed atomic counters for the progress display.
//!
//! ```no_run
//! # async fn demo() -> Result<(), smp_agent::loadgen::LoadError> {
//! use smp_agent::loadgen::{run, Control, LoadSpec, Rate};
//! let spec = LoadSpec {
//!     rate: Rate::Fixed(1000.0),
//!     ..LoadSpec::new(vec!["http://127.0.0.1:8080/".into()])
//! };
//! let results = run(&spec, Control::new()).await?;
//! println!("{}", results.render_text());
//! # Ok(()) }
//! ```

use std::{
    fmt,
    path::PathBuf,
    str::FromStr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

pub mod grpc;
pub mod http1;
pub mod http2;
pub mod results;
pub mod schedule;
pub mod smp;
mod target;
pub mod tls;

pub use results::{ErrorCounts, ErrorKind, LatencySummary, Recorder, Results};
pub use target::{Endpoint, Target};

use schedule::{Pacer, Schedule};

/// Errors that stop a run before or instead of producing results. Failures of individual
/// requests are not errors: they are counted in [`Results::errors`].
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No endpoint URL was given.
    #[error("no endpoint URL given")]
    NoUrls,
    /// An endpoint URL could not be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The rate is not a positive number or `max`.
    #[error("invalid rate {0:?}: expected a number of requests per second > 0, or `max`")]
    InvalidRate(String),
    /// Zero connections.
    #[error("connections must be at least 1")]
    NoConnections,
    /// A zero measurement duration.
    #[error("duration must be greater than zero")]
    ZeroDuration,
    /// The timeout is zero.
    #[error("timeouts must be greater than zero")]
    ZeroTimeout,
    /// A header that is not `Name: value` or contains invalid characters.
    #[error("invalid header {header:?}: {reason}")]
    InvalidHeader {
        /// The header as given.
        header: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP method is not a valid token.
    #[error("invalid HTTP method {0:?}")]
    InvalidMethod(String),
    /// A host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// host:port.
        host: String,
        /// The resolver's error.
        #[source]
        source: std::io::Error,
    },
    /// The first connection to an endpoint failed (checked before the run starts).
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The endpoint URL.
        url: String,
        /// Why (refused, timed out, TLS handshake failure, ALPN mismatch).
        reason: String,
    },
    /// The CA file could not be read or holds no certificate.
    #[error("cannot use CA file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// TLS configuration failed.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// A histogram could not be encoded, decoded or merged.
    #[error("{0}")]
    Histogram(String),
    /// [`Results::merge`] got no results.
    #[error("no results to merge")]
    NothingToMerge,
    /// The load threads could not be started.
    #[error("cannot start the load threads: {0}")]
    Runtime(String),
    /// A test configuration asks for something the load generator does not do.
    #[error("unsupported load: {0}")]
    Unsupported(String),
}

/// Requests per second, or as fast as the target answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Open loop: this many requests per second over all connections (finite, > 0).
    Fixed(f64),
    /// Closed loop: one request in flight per connection, next one on response.
    Max,
}

impl Rate {
    /// Parses `max` or a positive number of requests per second.
    pub fn parse(s: &str) -> Result<Self, LoadError> {
        s.parse()
    }
}

impl FromStr for Rate {
    type Err = LoadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match t.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::Fixed(r)),
            _ => Err(LoadError::InvalidRate(s.to_string())),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Fixed(r) => write!(f, "{r}"),
            Rate::Max => f.write_str("max"),
        }
    }
}

/// HTTP version to speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive (ALPN `http/1.1` over TLS).
    #[default]
    Http1,
    /// HTTP/2: prior knowledge (h2c) over cleartext, ALPN `h2` over TLS.
    Http2,
    /// Unary gRPC on HTTP/2 (as [`Protocol::Http2`]): `POST` of one framed message, the
    /// outcome is the `grpc-status`.
    Grpc,
}

impl Protocol {
    /// True for the protocols on the HTTP/2 transport.
    pub fn is_h2(self) -> bool {
        self != Protocol::Http1
    }
}

/// What to send, how fast, for how long. Plain data: the CLI and the SMP test-config reader
/// both build one.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Endpoint URLs (`http://` or `https://`); requests go to them round-robin.
    pub urls: Vec<String>,
    /// Requests per second, or max.
    pub rate: Rate,
    /// Concurrent connections (per distinct target authority).
    pub connections: u32,
    /// Length of the measured part of the run.
    pub duration: Duration,
    /// Load before measurement starts (sent, not recorded).
    pub warmup: Duration,
    /// HTTP method.
    pub method: String,
    /// Extra request headers, `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// Cookies (`name=value`), sent as one `cookie` header.
    pub cookies: Vec<String>,
    /// Request body (sent with a content-length).
    pub body: Vec<u8>,
    /// `content-type` of the body.
    pub content_type: Option<String>,
    /// HTTP version.
    pub protocol: Protocol,
    /// Time allowed for TCP connect + TLS handshake.
    pub connect_timeout: Duration,
    /// Time allowed for a whole request (connect included) before it counts as a timeout.
    pub timeout: Duration,
    /// PEM file of CA certificates to trust for `https://` (default: the webpki roots).
    pub ca_file: Option<PathBuf>,
    /// PEM text of CA certificates to trust (SMP `ssl_certificate` given inline); added to
    /// `ca_file`'s.
    pub ca_pem: Option<String>,
    /// Skip TLS certificate verification.
    pub insecure: bool,
    /// Load threads, each with its own single-threaded runtime (default: one per CPU, at
    /// most one per connection).
    pub threads: Option<usize>,
}

impl LoadSpec {
    /// Defaults: closed loop, 10 connections, 10 s, no warm-up, GET, HTTP/1.1, 5 s connect
    /// timeout, 10 s request timeout.
    pub fn new(urls: Vec<String>) -> Self {
        Self {
            urls,
            rate: Rate::Max,
            connections: 10,
            duration: Duration::from_secs(10),
            warmup: Duration::ZERO,
            method: "GET".into(),
            headers: Vec::new(),
            cookies: Vec::new(),
            body: Vec::new(),
            content_type: None,
            protocol: Protocol::Http1,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            ca_file: None,
            ca_pem: None,
            insecure: false,
            threads: None,
        }
    }

    /// Checks everything that can be checked without the network.
    pub fn validate(&self) -> Result<(), LoadError> {
        if self.urls.is_empty() {
            return Err(LoadError::NoUrls);
        }
        if let Rate::Fixed(r) = self.rate {
            if !(r.is_finite() && r > 0.0) {
                return Err(LoadError::InvalidRate(r.to_string()));
            }
        }
        if self.connections == 0 {
            return Err(LoadError::NoConnections);
        }
        if self.duration.is_zero() {
            return Err(LoadError::ZeroDuration);
        }
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(LoadError::ZeroTimeout);
        }
        self.prepare().map(|_| ())
    }

    /// Builds the requests and endpoints of the run (pure: no network).
    fn prepare(&self) -> Result<(Vec<Target>, Vec<Endpoint>), LoadError> {
        match self.protocol {
            Protocol::Grpc => grpc::prepare(self),
            Protocol::Http1 | Protocol::Http2 => target::prepare(self),
        }
    }
}

/// Shared between a run and its caller: stop early, watch progress. One per run: [`run`]
/// marks it stopped when it returns (or is dropped), which also ends a progress display.
#[derive(Debug)]
pub struct Control {
    stop_tx: watch::Sender<bool>,
    /// Measured requests finished (response or error).
    pub completed: AtomicU64,
    /// Measured requests that failed.
    pub failed: AtomicU64,
}

impl Control {
    /// A fresh control handle.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            stop_tx: watch::Sender::new(false),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// Asks the run to stop now; it returns what it measured so far.
    pub fn stop(&self) {
        self.stop_tx.send_replace(true);
    }

    /// True once [`Control::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *self.stop_tx.borrow()
    }

    fn subscribe(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }
}

/// Stops the load threads if [`run`]'s future is dropped before they finish.
struct StopOnDrop(Arc<Control>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Resolves when the run is asked to stop.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which cannot happen while the run holds `Control`;
    // either way there is nothing left to wait for.
    let _ = rx.wait_for(|s| *s).await;
}

/// Everything a worker needs, shared read-only.
pub(crate) struct Ctx {
    pub targets: Vec<Target>,
    pub endpoints: Vec<Endpoint>,
    pub spec: LoadSpec,
    pub tls: Option<tokio_rustls::TlsConnector>,
    pub schedule: Option<Schedule>,
    pub measure_start: Instant,
    pub end: Instant,
    /// Open loop: backlog still unsent at this time is reported as missed.
    pub hard_stop: Instant,
    pub control: Arc<Control>,
}

/// A worker's progress counts, published to [`Control`] in batches so the workers do not
/// bounce a shared cache line on every request.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    done: u64,
    failed: u64,
}

impl Tally {
    const BATCH: u64 = 64;

    /// Counts a finished measured request.
    #[inline]
    pub fn bump(&mut self, ctx: &Ctx, failed: bool) {
        self.done += 1;
        self.failed += u64::from(failed);
        if self.done >= Self::BATCH {
            self.flush(ctx);
        }
    }

    /// Publishes what is counted so far.
    pub fn flush(&mut self, ctx: &Ctx) {
        ctx.control
            .completed
            .fetch_add(self.done, Ordering::Relaxed);
        if self.failed > 0 {
            ctx.control.failed.fetch_add(self.failed, Ordering::Relaxed);
        }
        *self = Self::default();
    }
}

/// What a worker hands back.
pub(crate) struct WorkerOut {
    pub rec: Recorder,
    /// When its last measured response arrived.
    pub last_response: Option<Instant>,
}

/// Where the next request goes and when its latency clock starts.
pub(crate) struct Next {
    pub seq: u64,
    pub clock_start: Instant,
    pub measured: bool,
}

/// A worker's position in the run: open loop walks the schedule, closed loop counts.
pub(crate) enum Walk {
    Open(Pacer),
    Closed { conn: u64, conns: u64, k: u64 },
}

impl Walk {
    pub fn new(ctx: &Ctx, conn: u64) -> Self {
        let conns = u64::from(ctx.spec.connections);
        match ctx.schedule {
            Some(s) => Walk::Open(Pacer::new(s, conn, conns)),
            None => Walk::Closed { conn, conns, k: 0 },
        }
    }

    /// Waits for the next request; `None` when the run is over for this worker. Unsent
    /// scheduled requests (hard stop or early stop) are added to `rec.missed`.
    pub async fn next(
        &mut self,
        ctx: &Ctx,
        stop: &mut watch::Receiver<bool>,
        rec: &mut Recorder,
    ) -> Option<Next> {
        if *stop.borrow() {
            if let Walk::Open(p) = self {
                rec.missed += p.remaining();
            }
            return None;
        }
        match self {
            Walk::Open(p) => {
                if Instant::now() >= ctx.hard_stop {
                    rec.missed += p.remaining();
                    return None;
                }
                let slot = tokio::select! {
                    biased;
                    slot = p.wait() => slot?,
                    () = stopped(stop) => {
                        rec.missed += p.remaining();
                        return None;
                    }
                };
                Some(Next {
                    seq: slot.seq,
                    clock_start: slot.clock_start,
                    measured: slot.intended >= ctx.measure_start,
                })
            }
            Walk::Closed { conn, conns, k } => {
                let now = Instant::now();
                if now >= ctx.end {
                    return None;
                }
                let seq = *k * *conns + *conn;
                *k += 1;
                Some(Next {
                    seq,
                    clock_start: now,
                    measured: now >= ctx.measure_start,
                })
            }
        }
    }
}

/// Runs the load described by `spec` and returns what it measured.
///
/// Fails before sending load if the spec is invalid, a host does not resolve, or the first
/// connection to an endpoint fails; failures during the run are counted, not returned.
pub async fn run(spec: &LoadSpec, control: Arc<Control>) -> Result<Results, LoadError> {
    spec.validate()?;
    let (targets, mut endpoints) = spec.prepare()?;
    let tls = if endpoints.iter().any(|e| e.tls) {
        Some(tls::connector(spec)?)
    } else {
        None
    };
    for ep in &mut endpoints {
        ep.resolve().await?;
    }
    for ep in &endpoints {
        ep.preflight(spec, tls.as_ref()).await?;
        if spec.protocol.is_h2() {
            http2::preflight(ep, spec, tls.as_ref()).await?;
        }
    }

    let start = Instant::now();
    let measure_start = start + spec.warmup;
    let end = measure_start + spec.duration;
    let schedule = match spec.rate {
        Rate::Fixed(r) => Some(Schedule::new(start, r, end)),
        Rate::Max => None,
    };
    let ctx = Arc::new(Ctx {
        targets,
        endpoints,
        spec: spec.clone(),
        tls,
        schedule,
        measure_start,
        end,
        hard_stop: end + spec.timeout,
        control,
    });

    // Like wrk: one OS thread per CPU, each with a single-threaded runtime that owns its share
    // of the connections. No work stealing, no cross-thread wake-ups, one epoll per thread.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = spec
        .threads
        .unwrap_or(cpus)
        .clamp(1, spec.connections as usize);
    let _stop_on_drop = StopOnDrop(ctx.control.clone());
    let mut receivers = Vec::with_capacity(threads);
    for t in 0..threads {
        let ctx = ctx.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let conns: Vec<u64> = (0..u64::from(spec.connections))
            .filter(|c| *c % threads as u64 == t as u64)
            .collect();
        std::thread::Builder::new()
            .name(format!("smp-load-{t}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let outs = rt.block_on(async move {
                    let mut set = tokio::task::JoinSet::new();
                    for c in conns {
                        match ctx.spec.protocol {
                            Protocol::Http1 => set.spawn(http1::worker(ctx.clone(), c)),
                            Protocol::Http2 | Protocol::Grpc => {
                                set.spawn(http2::worker(ctx.clone(), c))
                            }
                        };
                    }
                    let mut outs = Vec::new();
                    while let Some(res) = set.join_next().await {
                        match res {
                            Ok(out) => outs.push(out),
                            // Only a panic (a bug) gets here; keep the other workers' data.
                            Err(e) => tracing::error!(error = %e, "load worker failed"),
                        }
                    }
                    outs
                });
                let _ = tx.send(Ok(outs));
            })
            .map_err(|e| LoadError::Runtime(e.to_string()))?;
        receivers.push(rx);
    }
    let mut total = Recorder::new();
    let mut last: Option<Instant> = None;
    for rx in receivers {
        match rx.await {
            Ok(Ok(outs)) => {
                for out in outs {
                    total.merge(&out.rec);
                    last = last.max(out.last_response);
                }
            }
            Ok(Err(e)) => return Err(LoadError::Runtime(e)),
            Err(_) => tracing::error!("a load thread ended without results"),
        }
    }
    let now = Instant::now();
    let elapsed = if ctx.control.is_stopped() {
        now.saturating_duration_since(measure_start)
    } else {
        // Normally the duration; longer when the target made the run drain a backlog.
        let drained = last
            .map(|t| t.saturating_duration_since(measure_start))
            .unwrap_or_default();
        spec.duration.max(drained)
    };
    Ok(total.finish(results::RunMeta {
        requested_rate: match spec.rate {
            Rate::Fixed(r) => Some(r),
            Rate::Max => None,
        },
        elapsed,
        connections: u64::from(spec.connections),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_parsing() {
        assert_eq!(Rate::parse("max").unwrap(), Rate::Max);
        assert_eq!(Rate::parse("MAX").unwrap(), Rate::Max);
        assert_eq!(Rate::parse("250").unwrap(), Rate::Fixed(250.0));
        assert_eq!(Rate::parse("0.5").unwrap(), Rate::Fixed(0.5));
        for bad in ["0", "-5", "abc", "", "inf", "NaN", "1e999"] {
            let e = Rate::parse(bad).unwrap_err();
            assert!(e.to_string().contains("invalid rate"), "{bad}: {e}");
        }
    }

    #[test]
    fn validation() {
        let ok = LoadSpec::new(vec!["http://127.0.0.1:1/".into()]);
        ok.validate().unwrap();
        let mut s = ok.clone();
        s.urls.clear();
        assert!(matches!(s.validate(), Err(LoadError::NoUrls)));
        let mut s = ok.clone();
        s.connections = 0;
        assert!(matches!(s.validate(), Err(LoadError::NoConnections)));
        let mut s = ok.clone();
        s.duration = Duration::ZERO;
        assert!(matches!(s.validate(), Err(LoadError::ZeroDuration)));
        let mut s = ok.clone();
        s.rate = Rate::Fixed(-1.0);
        assert!(matches!(s.validate(), Err(LoadError::InvalidRate(_))));
        let mut s = ok;
        s.timeout = Duration::ZERO;
        assert!(matches!(s.validate(), Err(LoadError::ZeroTimeout)));
    }
}
