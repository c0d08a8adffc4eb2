//! The metrics HTTP server (hyper 1, HTTP/1.1, on tokio):
//!
//! * `GET /metrics`: the node's metrics, OpenMetrics 1.0 when `Accept` asks for
//!   `application/openmetrics-text`, else Prometheus text 0.0.4 ([`Format::negotiate`]);
//! * `GET /healthz`: 200 while the server runs;
//! * `GET /readyz`: 200 once [`MetricsServer::set_ready`] was called with `true`, 503 before;
//! * anything else: 404 (405 for methods other than GET and HEAD).
//!
//! [`MetricsServer::bind`] binds before returning, so a taken port or a foreign address is an
//! error at startup that names the address, not a log line later.

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

use super::{Format, NodeMetrics};

/// At most this many connections are served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request head within this time.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
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

impl MetricsServer {
    /// Binds `addr` (port 0 picks a free port) and serves `metrics` on a tokio task. Not ready
    /// until [`MetricsServer::set_ready`].
    pub async fn bind(addr: SocketAddr, metrics: Arc<NodeMetrics>) -> Result<Self, ServerError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| ServerError::from_bind(addr, e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| ServerError::from_bind(addr, e))?;
        let ready = Readiness::default();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, metrics, ready.clone(), stopped));
        tracing::info!(addr = %local_addr, "serving /metrics, /healthz, /readyz");
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

async fn accept_loop(
    listener: TcpListener,
    metrics: Arc<NodeMetrics>,
    ready: Readiness,
    mut stopped: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            _ = stop_requested(&mut stopped) => break,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = stop_requested(&mut stopped) => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "metrics server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = Arc::clone(&metrics);
        let ready = ready.clone();
        let service = service_fn(move |req| {
            let response = respond(&req, &metrics, &ready);
            async move { Ok::<_, Infallible>(response) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "metrics server: connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("metrics server: connections still open after the grace period");
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

/// The response to one request (pure apart from reading the metrics and the flag).
fn respond(
    req: &Request<Incoming>,
    metrics: &NodeMetrics,
    ready: &Readiness,
) -> Response<Full<Bytes>> {
    route(
        req.method(),
        req.uri().path(),
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
        metrics,
        ready,
    )
}

fn route(
    method: &Method,
    path: &str,
    accept: Option<&str>,
    metrics: &NodeMetrics,
    ready: &Readiness,
) -> Response<Full<Bytes>> {
    let known = matches!(path, "/metrics" | "/healthz" | "/readyz");
    if !known {
        return text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n",
        );
    }
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let mut r = match path {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" if ready.get() => text(StatusCode::OK, "ready\n"),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
        _ => {
            let format = Format::negotiate(accept);
            let mut r = Response::new(Full::new(Bytes::from(metrics.encode(format))));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(format.content_type()),
            );
            r.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept"));
            r
        }
    };
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;
    use crate::metrics::{synthetic::SyntheticNode, MetricsOptions};

    /// One HTTP/1.1 request over a fresh connection; returns (status, headers, body).
    fn get(
        addr: SocketAddr,
        method: &str,
        path: &str,
        accept: Option<&str>,
    ) -> (u16, String, String) {
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let accept = accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default();
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read response");
        let (head, body) = raw.split_once("\r\n\r\n").expect("head");
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        tokio::task::spawn_blocking(f).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_metrics_health_and_readiness() {
        let metrics = Arc::new(NodeMetrics::new(MetricsOptions::default()));
        let mut node = SyntheticNode::new();
        metrics.update(&node.tick(Duration::from_millis(100)));
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics))
            .await
            .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let (status, _, body) = blocking(move || get(addr, "GET", "/healthz", None)).await;
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        let (status, _, _) = blocking(move || get(addr, "GET", "/readyz", None)).await;
        assert_eq!(status, 503);
        server.set_ready(true);
        let (status, _, _) = blocking(move || get(addr, "GET", "/readyz", None)).await;
        assert_eq!(status, 200);

        let (status, head, body) = blocking(move || get(addr, "GET", "/metrics", None)).await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(body.contains("# TYPE smp_proxy_cpu_seconds_total counter"));
        assert!(!body.contains("# EOF"));

        let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let (status, head, body) =
            blocking(move || get(addr, "GET", "/metrics", Some(prometheus_accept))).await;
        assert_eq!(status, 200);
        assert!(
            head.contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{head}"
        );
        assert!(body.ends_with("# EOF\n"));
        assert!(body.contains("# TYPE smp_proxy_cpu_seconds counter"));

        // Updates show up in the next scrape.
        metrics.update(&node.tick(Duration::from_millis(200)));
        let (_, _, body) = blocking(move || get(addr, "GET", "/metrics", None)).await;
        assert!(body.contains("smp_agent_updates_total 2"), "{body}");

        let (status, _, _) = blocking(move || get(addr, "GET", "/", None)).await;
        assert_eq!(status, 404);
        let (status, _, _) = blocking(move || get(addr, "GET", "/metricsx", None)).await;
        assert_eq!(status, 404);
        let (status, head, _) = blocking(move || get(addr, "POST", "/metrics", None)).await;
        assert_eq!(status, 405);
        assert!(head.contains("allow: get, head"));
        let (status, _, body) = blocking(move || get(addr, "HEAD", "/metrics", None)).await;
        assert_eq!((status, body.as_str()), (200, ""));

        server.shutdown().await;
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "still listening"
        );
    }

    #[tokio::test]
    async fn port_in_use_names_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let metrics = Arc::new(NodeMetrics::new(MetricsOptions::default()));
        let err = MetricsServer::bind(addr, metrics).await.unwrap_err();
        assert!(matches!(err, ServerError::AddrInUse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains(&addr.to_string()) && msg.contains("already in use"),
            "{msg}"
        );
    }

    #[tokio::test]
    async fn foreign_address_is_a_clear_error() {
        // TEST-NET-1 (RFC 5737): never assigned to this host.
        let addr: SocketAddr = "192.0.2.1:9477".parse().unwrap();
        let metrics = Arc::new(NodeMetrics::new(MetricsOptions::default()));
        let err = match MetricsServer::bind(addr, metrics).await {
            Err(e) => e,
            Ok(_) => {
                eprintln!("skipping: this host allows non-local binds (ip_nonlocal_bind)");
                return;
            }
        };
        assert!(
            matches!(err, ServerError::AddrNotAvailable { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("192.0.2.1:9477"), "{err}");
    }
}
