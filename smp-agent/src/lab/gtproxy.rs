//! The ground-truth sidecar (`smp-agent lab proxy`): a small HTTP/1.1 proxy that adds a known
//! delay to every request before forwarding it, so the profiler's per-hop figures can be checked
//! against a known answer.
//!
//! Per downstream connection it opens one upstream connection (lazily, reused for every request
//! on that connection: keep-alive both ways), reads a request head, waits the delay (fixed
//! `--delay-us`, or the request header `x-smp-delay-us`), forwards head and body (Content-Length
//! or chunked, streamed), then forwards the response, adding `x-smp-via: <role>`. It logs nothing
//! per request; counters are served on the admin port (`GET /stats`).
//! `--workers 1` runs a current-thread runtime (one event loop, like an Envoy worker); `N` runs a
//! multi-thread runtime with N workers (like tokio-based proxies).

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
};

use super::{
    http1, tls,
    truth::{Around, TruthRequest},
    LabError,
};

mod frames;
mod h2bridge;

/// Options of the hidden `lab proxy` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ProxyOptions {
    /// Required: address to listen on. Example: --listen 0.0.0.0:15001
    #[arg(long)]
    pub listen: SocketAddr,
    /// Required: upstream address every connection is forwarded to. Example: --upstream 10.77.0.2:8080
    #[arg(long)]
    pub upstream: SocketAddr,
    /// Value of the `x-smp-via` response header this proxy adds. Example: --role outbound-ours
    #[arg(long, default_value = "ours")]
    pub role: String,
    /// Fixed delay added to every request, in microseconds.
    #[arg(long, default_value_t = 0)]
    pub delay_us: u64,
    /// Let the request header `x-smp-delay-us` override --delay-us.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub header_delay: bool,
    /// Worker threads: 1 = current-thread runtime, N = multi-thread runtime.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Optional: admin address serving counters at any path. Example: --admin 127.0.0.1:15000
    #[arg(long)]
    pub admin: Option<SocketAddr>,
    /// Optional: terminate TLS downstream with this certificate (PEM); needs --tls-key, --tls-ca.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// Optional: key of --tls-cert (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Optional: CA that client certificates must chain to (downstream mTLS).
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// Optional: originate TLS upstream with this client certificate (PEM); needs
    /// --upstream-tls-key, --upstream-tls-ca, --upstream-server-name.
    #[arg(long)]
    pub upstream_tls_cert: Option<PathBuf>,
    /// Optional: key of --upstream-tls-cert.
    #[arg(long)]
    pub upstream_tls_key: Option<PathBuf>,
    /// Optional: CA the upstream server certificate must chain to.
    #[arg(long)]
    pub upstream_tls_ca: Option<PathBuf>,
    /// Optional: name the upstream certificate must carry (also sent as SNI).
    #[arg(long)]
    pub upstream_server_name: Option<String>,
    /// Speak HTTP/2 to the upstream (with --downstream-h2: stream for stream, trailers
    /// included; else requests arrive as HTTP/1.1).
    #[arg(long)]
    pub upstream_h2: bool,
    /// Accept HTTP/2 downstream (with --upstream-h2: forwarded as HTTP/2; else as HTTP/1.1).
    #[arg(long)]
    pub downstream_h2: bool,
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxIo = Box<dyn Io>;

/// A syscall on the proxy's clock: when it was issued and when it returned.
type Bracket = (std::time::Instant, std::time::Instant);

/// Holds a request until its delay (`--delay-us`, or the `x-smp-delay-us` header's, `header`)
/// after `head_read`, when the read that brought its head returned: the proxy's own time
/// (parsing, timers) is inside the delay, not added to it.
async fn hold(
    ctx: &Ctx,
    header: Option<u64>,
    head_read: std::time::Instant,
) -> std::io::Result<()> {
    let d = match (ctx.opts.header_delay, header) {
        (true, Some(d)) => d,
        _ => ctx.opts.delay_us,
    };
    if d > 0 {
        http1::hold_until(head_read, Duration::from_micros(d)).await?;
        ctx.stats.delay_us_total.fetch_add(d, Ordering::Relaxed);
    }
    Ok(())
}

/// The proxy's clock around its socket syscalls, as the probe sees them (a clock taken
/// around parsing and task scheduling would differ from the probe's by however long the
/// thread was preempted there): when the last read that returned data was issued and when it
/// returned, and when the first write since [`Stamps::arm`] was issued and when it returned.
/// A syscall lies between its two stamps whatever the scheduler did.
#[derive(Default)]
struct Stamps {
    last_read: std::sync::Mutex<Option<Bracket>>,
    first_write: std::sync::Mutex<Option<std::time::Instant>>,
    first_write_returned: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Stamps {
    /// (issued, returned) of the last read that returned data.
    fn last_read(&self) -> Option<Bracket> {
        self.last_read.lock().ok().and_then(|g| *g)
    }
    /// Forgets the last write's times: the next write sets them.
    fn arm(&self) {
        for m in [&self.first_write, &self.first_write_returned] {
            if let Ok(mut g) = m.lock() {
                *g = None;
            }
        }
    }
    /// (issued, returned) of the first write since [`Stamps::arm`].
    fn first_write(&self) -> Option<Bracket> {
        let issued = self.first_write.lock().ok().and_then(|g| *g)?;
        let returned = self.first_write_returned.lock().ok().and_then(|g| *g)?;
        Some((issued, returned))
    }
}

/// A TCP stream that records [`Stamps`] (wraps the socket, below TLS).
struct Stamped<T> {
    inner: T,
    stamps: std::sync::Arc<Stamps>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Stamped<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let issued = std::time::Instant::now();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if let Ok(mut g) = self.stamps.last_read.lock() {
                *g = Some((issued, std::time::Instant::now()));
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stamped<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Ok(mut g) = self.stamps.first_write.lock() {
            g.get_or_insert_with(std::time::Instant::now);
        }
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if r.is_ready() {
            if let Ok(mut g) = self.stamps.first_write_returned.lock() {
                g.get_or_insert_with(std::time::Instant::now);
            }
        }
        r
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

struct Stats {
    requests: AtomicU64,
    connections: AtomicU64,
    upstream_connections: AtomicU64,
    errors: AtomicU64,
    delay_us_total: AtomicU64,
    /// The proxy's own clock of each request's time inside it: from the request head read to
    /// the forwarding write, nanoseconds. The ground truth the probes are checked against.
    hop_ns: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
    /// Every request forwarded, with its connections and own clock (`GET /requests`): what
    /// the probes' pairing is checked against ([`super::truth`]). The newest
    /// [`REQUEST_LOG_CAP`] are kept.
    log: std::sync::Mutex<std::collections::VecDeque<TruthRequest>>,
}

/// Requests kept in the log (≈ 150 B each).
const REQUEST_LOG_CAP: usize = 100_000;

impl Stats {
    /// One request forwarded: the read that brought its head and the write that forwarded
    /// it, each (issued, returned) on the proxy's clock. The hop on the own clock runs from
    /// the read's return to the write's issue; the log keeps both brackets.
    fn forwarded(
        &self,
        down: (SocketAddr, SocketAddr),
        up: (SocketAddr, SocketAddr),
        read: Bracket,
        write: Bracket,
    ) {
        let in_proxy = write.0.saturating_duration_since(read.1).as_nanos() as u64;
        if let Ok(mut h) = self.hop_ns.lock() {
            h.saturating_record(in_proxy);
        }
        if let Ok(mut log) = self.log.lock() {
            if log.len() >= REQUEST_LOG_CAP {
                log.pop_front();
            }
            log.push_back(TruthRequest {
                down_local: down.0,
                down_remote: down.1,
                up_local: up.0,
                up_remote: up.1,
                in_ns: monotonic_ns(read.1),
                out_ns: monotonic_ns(write.0),
                around: Some(Around {
                    read_issued_ns: monotonic_ns(read.0),
                    write_returned_ns: monotonic_ns(write.1),
                }),
            });
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            requests: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            upstream_connections: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            delay_us_total: AtomicU64::new(0),
            hop_ns: std::sync::Mutex::new(crate::aggregate::hops::new_histogram()),
            log: std::sync::Mutex::new(std::collections::VecDeque::new()),
        }
    }
}

struct Ctx {
    opts: ProxyOptions,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    connector: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    stats: Stats,
    /// The HTTP/2 upstream connections every downstream connection's requests share.
    h2_pool: h2bridge::H2Pool,
}

fn need<'a, T>(v: &'a Option<T>, flag: &str) -> Result<&'a T, LabError> {
    v.as_ref().ok_or_else(|| LabError::Config {
        field: flag.to_string(),
        reason: "required with the other TLS flags".into(),
    })
}

/// Runs the proxy until killed. Builds its own runtime (current-thread for `--workers 1`).
pub fn run(opts: ProxyOptions) -> Result<(), LabError> {
    // The delay is the known answer: a normal thread's 50 µs of timer slack would let the
    // kernel fire each delay timer up to 50 µs late. One nanosecond of slack, inherited by
    // the runtime's worker threads created below.
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    let acceptor = match &opts.tls_cert {
        None => None,
        Some(cert) => {
            let cfg = tls::server_config(
                cert,
                need(&opts.tls_key, "--tls-key")?,
                need(&opts.tls_ca, "--tls-ca")?,
                opts.downstream_h2,
            )?;
            Some(tokio_rustls::TlsAcceptor::from(cfg))
        }
    };
    let connector = match &opts.upstream_tls_cert {
        None => None,
        Some(cert) => {
            let cfg = tls::client_config(
                cert,
                need(&opts.upstream_tls_key, "--upstream-tls-key")?,
                need(&opts.upstream_tls_ca, "--upstream-tls-ca")?,
                opts.upstream_h2,
            )?;
            let name =
                tls::rustls_name(need(&opts.upstream_server_name, "--upstream-server-name")?)?;
            Some((tokio_rustls::TlsConnector::from(cfg), name))
        }
    };
    let rt = super::runtime(opts.workers)?;
    let ctx = Arc::new(Ctx {
        h2_pool: h2bridge::H2Pool::new(opts.workers),
        opts,
        acceptor,
        connector,
        stats: Stats::default(),
    });
    rt.block_on(serve(ctx))
}

async fn serve(ctx: Arc<Ctx>) -> Result<(), LabError> {
    let listener = TcpListener::bind(ctx.opts.listen)
        .await
        .map_err(|e| LabError::io(format!("listen on {}", ctx.opts.listen), e))?;
    if let Some(admin) = ctx.opts.admin {
        let l = TcpListener::bind(admin)
            .await
            .map_err(|e| LabError::io(format!("listen on {admin} (admin)"), e))?;
        let c = ctx.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let c = c.clone();
                tokio::spawn(async move {
                    let _ = super::app::serve_text(s, |path| match path {
                        "/requests" => requests_text(&c.stats),
                        _ => stats_text(&c.stats),
                    })
                    .await;
                });
            }
        });
    }
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
        let addrs = match (sock.local_addr(), sock.peer_addr()) {
            (Ok(l), Ok(r)) => (l, r),
            _ => continue,
        };
        let c = ctx.clone();
        tokio::spawn(async move {
            let stamps = std::sync::Arc::new(Stamps::default());
            let sock = Stamped {
                inner: sock,
                stamps: stamps.clone(),
            };
            let down: BoxIo = match &c.acceptor {
                None => Box::new(sock),
                Some(a) => match a.accept(sock).await {
                    Ok(t) => Box::new(t),
                    Err(_) => {
                        c.stats.errors.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                },
            };
            let res = if c.opts.downstream_h2 {
                h2bridge::serve_h2(c.clone(), down, addrs).await
            } else if c.opts.upstream_h2 {
                h2bridge::h1_to_h2(&c, down, addrs, &stamps).await
            } else {
                conn(&c, down, addrs, &stamps).await
            };
            if res.is_err() {
                c.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

/// The request log, one [`TruthRequest::line`] per request, oldest first.
fn requests_text(s: &Stats) -> String {
    let Ok(log) = s.log.lock() else {
        return String::new();
    };
    let mut text = String::with_capacity(log.len() * 100);
    for r in log.iter() {
        text.push_str(&r.line());
        text.push('\n');
    }
    text
}

/// CLOCK_MONOTONIC nanoseconds of `t` (the probes' clock; Rust's `Instant` reads the same
/// clock on Linux). The base pair is read once, as the narrowest of a few tries, so that a
/// preemption between its two reads does not shift every stamp of the process.
fn monotonic_ns(t: std::time::Instant) -> u64 {
    static BASE: std::sync::OnceLock<(std::time::Instant, u64)> = std::sync::OnceLock::new();
    let &(base, base_ns) = BASE.get_or_init(|| {
        (0..64)
            .map(|_| {
                let before = crate::host::monotonic_ns();
                let at = std::time::Instant::now();
                let after = crate::host::monotonic_ns();
                (after.saturating_sub(before), at, before / 2 + after / 2)
            })
            .min_by_key(|&(width, _, _)| width)
            .map(|(_, at, ns)| (at, ns))
            .unwrap_or_else(|| (std::time::Instant::now(), crate::host::monotonic_ns()))
    });
    match t.checked_duration_since(base) {
        Some(d) => base_ns + d.as_nanos() as u64,
        None => base_ns.saturating_sub(base.duration_since(t).as_nanos() as u64),
    }
}

fn stats_text(s: &Stats) -> String {
    let mut text = format!(
        "requests_total {}\nconnections_total {}\nupstream_connections_total {}\nerrors_total {}\ndelay_us_total {}\n",
        s.requests.load(Ordering::Relaxed),
        s.connections.load(Ordering::Relaxed),
        s.upstream_connections.load(Ordering::Relaxed),
        s.errors.load(Ordering::Relaxed),
        s.delay_us_total.load(Ordering::Relaxed),
    );
    for (name, hist) in [("request_hop", &s.hop_ns)] {
        if let Ok(h) = hist.lock() {
            for q in [0.1, 0.5, 0.9, 0.99] {
                text.push_str(&format!(
                    "{name}_us{{quantile=\"{q}\"}} {:.1}\n",
                    h.value_at_quantile(q) as f64 / 1e3
                ));
            }
            text.push_str(&format!("{name}_count {}\n", h.len()));
        }
    }
    text
}

/// An upstream connection, and its (local, remote) addresses.
async fn connect(
    ctx: &Ctx,
    stamps: std::sync::Arc<Stamps>,
) -> std::io::Result<(BoxIo, (SocketAddr, SocketAddr))> {
    let s = TcpStream::connect(ctx.opts.upstream).await?;
    let _ = s.set_nodelay(true);
    let addrs = (s.local_addr()?, s.peer_addr()?);
    let s = Stamped { inner: s, stamps };
    ctx.stats
        .upstream_connections
        .fetch_add(1, Ordering::Relaxed);
    let io: BoxIo = match &ctx.connector {
        None => Box::new(s),
        Some((c, name)) => Box::new(c.connect(name.clone(), s).await?),
    };
    Ok((io, addrs))
}

/// Serves one downstream connection; `down_addrs` are its (local, remote) addresses.
async fn conn(
    ctx: &Ctx,
    down: BoxIo,
    down_addrs: (SocketAddr, SocketAddr),
    down_stamps: &Stamps,
) -> std::io::Result<()> {
    let (dr, mut dw) = tokio::io::split(down);
    let mut dr = BufReader::with_capacity(16 * 1024, dr);
    let mut upstream: Option<(
        BufReader<tokio::io::ReadHalf<BoxIo>>,
        tokio::io::WriteHalf<BoxIo>,
    )> = None;
    let mut head = Vec::with_capacity(1024);
    let mut rhead = Vec::with_capacity(1024);
    let mut up_stamps = std::sync::Arc::new(Stamps::default());
    let mut up_addrs = down_addrs;
    let via = ctx.opts.role.as_str();
    loop {
        if !http1::read_head(&mut dr, &mut head).await? {
            return Ok(());
        }
        // The own clock starts when the read that brought the head returned.
        let now = std::time::Instant::now();
        let (read_issued, head_read) = down_stamps.last_read().unwrap_or((now, now));
        let req = http1::parse_request(&head)?;
        if let Some((ur, _)) = upstream.as_mut() {
            // A kept-alive upstream connection the peer closed while idle (or that has stray
            // bytes) is replaced before the request is written, as real proxies do. Checked
            // before the hold, so no syscall sits between the hold's end and the forward.
            let stale = std::future::poll_fn(|cx| {
                std::task::Poll::Ready(std::pin::Pin::new(&mut *ur).poll_fill_buf(cx).is_ready())
            })
            .await;
            if stale {
                upstream = None;
            }
        }
        hold(ctx, req.delay_us, head_read).await?;
        if upstream.is_none() {
            let st = std::sync::Arc::new(Stamps::default());
            let (io, addrs) = connect(ctx, st.clone()).await?;
            let (ur, uw) = tokio::io::split(io);
            upstream = Some((BufReader::with_capacity(16 * 1024, ur), uw));
            up_stamps = st;
            up_addrs = addrs;
        }
        let Some((ur, uw)) = upstream.as_mut() else {
            unreachable!("upstream connected above")
        };
        // The clock stops right before the forwarding write's syscall (taken by the stamped
        // socket); it is recorded after the write, so that waiting for the shared histogram's
        // lock is not time the request spends here.
        up_stamps.arm();
        uw.write_all(&head).await?;
        let now = std::time::Instant::now();
        let write = up_stamps.first_write().unwrap_or((now, now));
        ctx.stats
            .forwarded(down_addrs, up_addrs, (read_issued, head_read), write);
        if req.expect_continue {
            // Answer the client's `Expect: 100-continue` ourselves so the body flows at once;
            // the upstream's own 100 is swallowed below.
            dw.write_all(http1::CONTINUE).await?;
            dw.flush().await?;
        }
        http1::copy_body(&mut dr, uw, req.body).await?;
        uw.flush().await?;
        let resp = loop {
            if !http1::read_head(ur, &mut rhead).await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let resp = http1::parse_response(&rhead, &req.method)?;
            if !(100..200).contains(&resp.status) || resp.status == 101 {
                break resp;
            }
            if !(req.expect_continue && resp.status == 100) {
                dw.write_all(&rhead).await?;
            }
        };
        dw.write_all(&http1::with_header(&rhead, "x-smp-via", via))
            .await?;
        http1::copy_body(ur, &mut dw, resp.body).await?;
        dw.flush().await?;
        ctx.stats.requests.fetch_add(1, Ordering::Relaxed);
        if !resp.keep_alive {
            upstream = None;
        }
        if !req.keep_alive || !resp.keep_alive {
            let _ = dw.shutdown().await;
            return Ok(());
        }
    }
}
