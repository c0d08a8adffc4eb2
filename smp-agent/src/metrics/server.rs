//! The metrics HTTP server (hyper 1, HTTP/1.1, on tokio; optionally over TLS):
//!
//! * `GET /metrics`: the node's metrics, OpenMetrics 1.0 when `Accept` asks for
//!   `application/openmetrics-text`, else Prometheus text 0.0.4 ([`Format::negotiate`]); with a
//!   token file configured, only for `Authorization: Bearer <token>` (else 401);
//! * `GET /healthz`: 200 while the server runs (never behind the token: the kubelet probes it);
//! * `GET /readyz`: 200 once [`MetricsServer::set_ready`] was called with `true`, 503 before;
//! * anything else: 404 (405 for methods other than GET and HEAD).
//!
//! [`MetricsServer::bind`] binds before returning, so a taken port or a foreign address is an
//! error at startup that names the address, not a log line later.
//!
//! # Limits
//! A client cannot starve the kubelet's probes or the daemon:
//! * at most [`MAX_PER_CLIENT`] open connections per client address (more are closed at once);
//! * [`GENERAL_SLOTS`] connections for any request, and [`PROBE_SLOTS`] more reserved for
//!   `/healthz` and `/readyz` (a `/metrics` request on a reserved slot gets 503);
//! * a request head must arrive within [`HEADER_READ_TIMEOUT`], a connection idle (nothing to
//!   read) for [`IDLE_TIMEOUT`] is closed, and so is one whose reader does not take the
//!   response for [`WRITE_TIMEOUT`] (a slow reader); the TLS handshake has [`TLS_HANDSHAKE_TIMEOUT`];
//! * at most [`ENCODE_SLOTS`] expositions are encoded at once, off the async workers, from a
//!   copy of the metrics (the daemon's update never waits for a scrape's encoding).

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use rustls::pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use subtle::ConstantTimeEq as _;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpListener,
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
    time::Sleep,
};

use super::{Format, NodeMetrics};

/// Connections served for any request.
pub const GENERAL_SLOTS: usize = 256;
/// Connections beyond [`GENERAL_SLOTS`], for `/healthz` and `/readyz` only.
pub const PROBE_SLOTS: usize = 32;
/// Open connections one client address may hold; more are closed at once.
pub const MAX_PER_CLIENT: usize = 16;
/// A client must send its request head within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection with nothing to read for this long is closed (keep-alive included).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A response the client does not read for this long ends the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The TLS handshake must be done within this time.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Expositions encoded at once (each takes a CPU for a moment).
pub const ENCODE_SLOTS: usize = 4;
/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;
/// Largest certificate or key file read.
const MAX_PEM_FILE: u64 = 1 << 20;
/// On shutdown, open connections get this long to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Something else listens there already.
    #[error("cannot listen on {addr}: address already in use (another smp-agent or exporter on this port?); choose another with --listen or SMP_AGENT_LISTEN")]
    AddrInUse {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The address is not one of this host's (or this pod's) addresses.
    #[error("cannot listen on {addr}: the address is not assigned to this host (use 127.0.0.1, 0.0.0.0 or the pod IP)")]
    AddrNotAvailable {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// A port below 1024 without CAP_NET_BIND_SERVICE, or similar.
    #[error(
        "cannot listen on {addr}: permission denied (ports below 1024 need CAP_NET_BIND_SERVICE)"
    )]
    PermissionDenied {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Any other bind error.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The TLS certificate or key cannot be used (the message names the file, never its
    /// contents).
    #[error("metrics TLS: {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
    /// The token file cannot be used (never echoes its contents).
    #[error("metrics token file {path}: {reason}")]
    Token { path: PathBuf, reason: String },
}

impl ServerError {
    fn from_bind(addr: SocketAddr, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::AddrInUse => Self::AddrInUse { addr, source },
            io::ErrorKind::AddrNotAvailable => Self::AddrNotAvailable { addr, source },
            io::ErrorKind::PermissionDenied => Self::PermissionDenied { addr, source },
            _ => Self::Bind { addr, source },
        }
    }
}

/// Optional protection of `/metrics`; both off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerOptions {
    /// Serve HTTPS with this PEM certificate chain and PEM private key.
    pub tls: Option<TlsFiles>,
    /// Require `Authorization: Bearer <token>` on `/metrics`, the token being this file's
    /// contents (trimmed; read again on every scrape, so a rotated Secret takes effect).
    pub token_file: Option<PathBuf>,
}

/// The files of the server's TLS identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The readiness flag `/readyz` reports; cheap to clone and set from anywhere.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Sets the flag.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Reads the flag.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A running metrics server. Dropping it stops accepting; [`MetricsServer::shutdown`] also
/// waits for open connections.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    ready: Readiness,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

/// What every connection shares.
struct Shared {
    metrics: Arc<NodeMetrics>,
    ready: Readiness,
    token_file: Option<PathBuf>,
    encode_slots: Arc<Semaphore>,
}

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves `metrics` over plain HTTP without
    /// authentication on a tokio task. Not ready until [`MetricsServer::set_ready`].
    pub async fn bind(addr: SocketAddr, metrics: Arc<NodeMetrics>) -> Result<Self, ServerError> {
        Self::bind_with(addr, metrics, &ServerOptions::default()).await
    }

    /// [`MetricsServer::bind`] with TLS and/or a bearer token as `options` say. The files are
    /// read now: an unusable certificate, key or token file is an error before serving.
    pub async fn bind_with(
        addr: SocketAddr,
        metrics: Arc<NodeMetrics>,
        options: &ServerOptions,
    ) -> Result<Self, ServerError> {
        let tls = options.tls.as_ref().map(tls_acceptor).transpose()?;
        if let Some(path) = &options.token_file {
            read_token(path).map_err(|reason| ServerError::Token {
                path: path.clone(),
                reason,
            })?;
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| ServerError::from_bind(addr, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServerError::from_bind(addr, e))?;
        let ready = Readiness::default();
        let (stop, stopped) = watch::channel(false);
        let shared = Arc::new(Shared {
            metrics,
            ready: ready.clone(),
            token_file: options.token_file.clone(),
            encode_slots: Arc::new(Semaphore::new(ENCODE_SLOTS)),
        });
        let task = tokio::spawn(accept_loop(listener, shared, tls, stopped));
        tracing::info!(
            addr = %local_addr,
            tls = options.tls.is_some(),
            token = options.token_file.is_some(),
            "serving /metrics, /healthz, /readyz"
        );
        Ok(Self {
            local_addr,
            ready,
            stop,
            task: Some(task),
        })
    }

    /// The address it listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sets what `/readyz` answers.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(ready);
    }

    /// A handle on the readiness flag.
    pub fn readiness(&self) -> Readiness {
        self.ready.clone()
    }

    /// Stops accepting, lets open connections finish (at most 5 s), and returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// The TLS acceptor for `files` (ring provider, TLS 1.2 and 1.3, HTTP/1.1 by ALPN).
fn tls_acceptor(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ServerError> {
    let err = |path: &Path, reason: String| ServerError::Tls {
        path: path.to_path_buf(),
        reason,
    };
    let cert_pem = read_capped(&files.cert, MAX_PEM_FILE).map_err(|r| err(&files.cert, r))?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            err(
                &files.cert,
                format!("not a PEM certificate chain ({})", pem_reason(&e)),
            )
        })?;
    if certs.is_empty() {
        return Err(err(&files.cert, "no certificate in the file".into()));
    }
    let key_pem = read_capped(&files.key, MAX_PEM_FILE).map_err(|r| err(&files.key, r))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        err(
            &files.key,
            format!("no usable PEM private key ({})", pem_reason(&e)),
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&files.cert, e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(&files.key, format!("does not fit the certificate: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// What is wrong with a PEM file, without quoting it (some of the parser's messages would).
fn pem_reason(e: &rustls::pki_types::pem::Error) -> &'static str {
    use rustls::pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { .. } => "a section has no END line",
        E::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        E::Base64Decode(_) => "bad base64",
        E::NoItemsFound => "nothing of the expected type",
        E::SectionTooLarge => "a section is too large",
        _ => "unreadable",
    }
}

/// The file's bytes, at most `cap` of them (a larger file is an error, not an allocation).
fn read_capped(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut raw = Vec::new();
    file.take(cap + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read: {e}"))?;
    if raw.len() as u64 > cap {
        return Err(format!("larger than {cap} bytes"));
    }
    Ok(raw)
}

/// The token in `path`: trimmed, non-empty, at most [`MAX_TOKEN_FILE`] bytes. Errors never
/// contain the file's contents.
fn read_token(path: &Path) -> Result<Vec<u8>, String> {
    let raw = read_capped(path, MAX_TOKEN_FILE)?;
    let token = raw.trim_ascii();
    if token.is_empty() {
        return Err("empty".into());
    }
    Ok(token.to_vec())
}

/// Open connections per client address; a [`ClientGuard`] gives its place back.
#[derive(Default)]
struct Clients(Mutex<HashMap<IpAddr, usize>>);

struct ClientGuard {
    clients: Arc<Clients>,
    ip: IpAddr,
}

impl Clients {
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<ClientGuard> {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientGuard {
            clients: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for ClientGuard {
    fn drop(&mut self) {
        let mut m = self.clients.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// What a connection may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    General,
    ProbesOnly,
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let general = Arc::new(Semaphore::new(GENERAL_SLOTS));
    let probes = Arc::new(Semaphore::new(PROBE_SLOTS));
    let clients = Arc::new(Clients::default());
    let mut refused_logged = false;
    loop {
        // Always accept (a full listen backlog would starve the probes too), then decide.
        let (stream, peer) = tokio::select! {
            _ = stop_requested(&mut stopped) => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Some(client) = clients.admit(peer.ip()) else {
            if !refused_logged {
                tracing::warn!(client = %peer.ip(), "metrics server: a client holds {MAX_PER_CLIENT} connections; closing its further ones (logged once)");
                refused_logged = true;
            }
            continue;
        };
        let (permit, slot): (OwnedSemaphorePermit, Slot) =
            if let Ok(p) = Arc::clone(&general).try_acquire_owned() {
                (p, Slot::General)
            } else if let Ok(p) = Arc::clone(&probes).try_acquire_owned() {
                (p, Slot::ProbesOnly)
            } else {
                continue;
            };
        let io = Deadlines::new(stream);
        let shared = Arc::clone(&shared);
        match &tls {
            None => {
                let conn = graceful.watch(serve(io, shared, slot));
                tokio::spawn(async move {
                    log_end(conn.await);
                    drop((permit, client));
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watch = graceful.watcher();
                tokio::spawn(async move {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                        Ok(Ok(tls)) => log_end(watch.watch(serve(tls, shared, slot)).await),
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "metrics server: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!("metrics server: TLS handshake timed out"),
                    }
                    drop((permit, client));
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("metrics server: connections still open after the grace period");
    }
}

/// One HTTP/1.1 connection (a future hyper's graceful shutdown can watch).
#[allow(
    clippy::type_complexity,
    reason = "the connection type graceful shutdown needs; its service is an unnameable impl type"
)]
fn serve<I>(
    io: I,
    shared: Arc<Shared>,
    slot: Slot,
) -> hyper::server::conn::http1::Connection<
    TokioIo<I>,
    impl hyper::service::Service<
            Request<Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
            Future = impl Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send,
        > + Send,
>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(respond(req, &shared, slot).await) }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service)
}

fn log_end(r: Result<(), hyper::Error>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "metrics server: connection ended with an error");
    }
}

/// Resolves once `true` was sent (or the sender is gone).
async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// What a request gets, before any metrics are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Ready,
    Metrics,
    Respond(StatusCode, &'static str),
}

/// Routing, method and authorization (pure).
fn route(
    method: &Method,
    path: &str,
    slot: Slot,
    authorized: impl FnOnce() -> Result<bool, ()>,
) -> Route {
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return Route::Respond(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        return Route::Respond(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match path {
        "/healthz" => Route::Health,
        "/readyz" => Route::Ready,
        _ if slot == Slot::ProbesOnly => Route::Respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy: every connection slot for /metrics is taken\n",
        ),
        _ => match authorized() {
            Ok(true) => Route::Metrics,
            Ok(false) => Route::Respond(StatusCode::UNAUTHORIZED, "unauthorized\n"),
            Err(()) => Route::Respond(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the token file cannot be read (see the agent's log)\n",
            ),
        },
    }
}

/// Whether `headers` carry the bearer token in `token_file` (constant-time comparison; the
/// token is never logged). `Err` when the file cannot be read now.
fn check_token(headers: &HeaderMap, token_file: &Path) -> Result<bool, ()> {
    let expected = read_token(token_file).map_err(|reason| {
        tracing::warn!(path = %token_file.display(), %reason, "metrics server: token file unusable; answering /metrics with 500");
    })?;
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    else {
        return Ok(false);
    };
    Ok(bool::from(given.trim_ascii().ct_eq(&expected)))
}

/// The response to one request.
async fn respond(req: Request<Incoming>, shared: &Shared, slot: Slot) -> Response<Full<Bytes>> {
    let r = route(req.method(), req.uri().path(), slot, || {
        match &shared.token_file {
            None => Ok(true),
            Some(path) => check_token(req.headers(), path),
        }
    });
    let mut r = match r {
        Route::Health => text(StatusCode::OK, "ok\n"),
        Route::Ready if shared.ready.get() => text(StatusCode::OK, "ready\n"),
        Route::Ready => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        Route::Respond(status, body) => {
            let mut r = text(status, body);
            if status == StatusCode::METHOD_NOT_ALLOWED {
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            } else if status == StatusCode::UNAUTHORIZED {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"smp-agent\""),
                );
            }
            r
        }
        Route::Metrics => {
            let format = Format::negotiate(
                req.headers()
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
            // Encoding takes a CPU for a moment: a few at a time, off the async workers.
            let body = match Arc::clone(&shared.encode_slots).acquire_owned().await {
                Ok(permit) => {
                    let metrics = Arc::clone(&shared.metrics);
                    tokio::task::spawn_blocking(move || {
                        let _permit = permit;
                        metrics.encode(format)
                    })
                    .await
                    .ok()
                }
                Err(_) => None,
            };
            match body {
                Some(body) => {
                    let mut r = Response::new(Full::new(Bytes::from(body)));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(format.content_type()),
                    );
                    r.headers_mut()
                        .insert(header::VARY, HeaderValue::from_static("Accept"));
                    r
                }
                None => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
            }
        }
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A stream whose reads fail after [`IDLE_TIMEOUT`] without data and whose writes fail after
/// [`WRITE_TIMEOUT`] without progress (hyper has no write timeout of its own).
struct Deadlines<T> {
    io: T,
    read: Option<Pin<Box<Sleep>>>,
    write: Option<Pin<Box<Sleep>>>,
}

impl<T> Deadlines<T> {
    fn new(io: T) -> Self {
        Self {
            io,
            read: None,
            write: None,
        }
    }
}

/// Polls `deadline` (armed with `after` when not yet): `Ready` when it passed.
fn expired(deadline: &mut Option<Pin<Box<Sleep>>>, after: Duration, cx: &mut Context<'_>) -> bool {
    deadline
        .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)))
        .as_mut()
        .poll(cx)
        .is_ready()
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadlines<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => {
                this.read = None;
                Poll::Ready(r)
            }
            Poll::Pending if expired(&mut this.read, IDLE_TIMEOUT, cx) => {
                Poll::Ready(Err(timed_out("idle connection")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> Deadlines<T> {
    fn write_progress<R>(
        &mut self,
        r: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match r {
            Poll::Ready(r) => {
                self.write = None;
                Poll::Ready(r)
            }
            Poll::Pending if expired(&mut self.write, WRITE_TIMEOUT, cx) => {
                Poll::Ready(Err(timed_out("write to a slow reader")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadlines<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.write_progress(r, cx)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.write_progress(r, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.write_progress(r, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.write_progress(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests;
