//! Unit tests of `server` (kept apart so the module reads as what it does).

use std::io::{Read as _, Write as _};

use super::*;
use crate::metrics::{synthetic::SyntheticNode, MetricsOptions};

/// One HTTP/1.1 request over a fresh connection; returns (status, headers, body).
fn get(addr: SocketAddr, method: &str, path: &str, accept: Option<&str>) -> (u16, String, String) {
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

/// A connection from `source` (any 127/8 address is this host's) to `addr`.
async fn connect_from(source: &str, addr: SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{source}:0").parse().unwrap()).unwrap();
    sock.connect(addr).await.unwrap()
}

/// One request over `s`; returns (status, lower-case head, body).
async fn exchange<S>(mut s: S, request: &str) -> (u16, String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return (0, raw, String::new());
    };
    let status = head.split(' ').nth(1).unwrap_or("0").parse().unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn request(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: agent\r\n{extra}Connection: close\r\n\r\n")
}

/// Issue 17 item 6: 500 idle connections and a slow reader must not starve the probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_while_idle_clients_and_a_slow_reader_hold_connections() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let metrics = Arc::new(NodeMetrics::new(MetricsOptions::default()));
    let mut node = SyntheticNode::new();
    metrics.update(&node.tick(Duration::from_millis(100)));
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), Arc::clone(&metrics))
        .await
        .unwrap();
    let addr = server.local_addr();

    // 500 idle connections from one client: it keeps MAX_PER_CLIENT, the rest are closed.
    let mut idle = Vec::new();
    for _ in 0..500 {
        idle.push(connect_from("127.0.0.2", addr).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed = 0;
    for s in &mut idle {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(20), s.read(&mut b)).await
        {
            closed += 1;
        }
    }
    assert_eq!(
        closed,
        500 - MAX_PER_CLIENT,
        "idle connections closed at once"
    );

    // A slow reader: asks for the metrics over and over and never reads.
    const PIPELINED: usize = 3000;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind("127.0.0.3:0".parse().unwrap()).unwrap();
    let mut slow = sock.connect(addr).await.unwrap();
    let one = "GET /metrics HTTP/1.1\r\nHost: agent\r\n\r\n".repeat(PIPELINED);
    let (mut slow_read, mut slow_write) = slow.split();
    let _ =
        tokio::time::timeout(Duration::from_secs(2), slow_write.write_all(one.as_bytes())).await;
    let slow_since = std::time::Instant::now();

    // Probes answer within 1 s, and scrapes go on, while all that is open.
    for i in 0..5 {
        let t = std::time::Instant::now();
        let (status, _, body) = exchange(
            connect_from("127.0.0.1", addr).await,
            &request("/healthz", ""),
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "ok\n"), "probe {i}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "probe {i} took {:?}",
            t.elapsed()
        );
        let (status, _, body) = exchange(
            connect_from("127.0.0.4", addr).await,
            &request("/metrics", ""),
        )
        .await;
        assert_eq!(status, 200, "scrape {i}");
        assert!(body.contains("smp_agent_updates_total"), "scrape {i}");
        metrics.update(&node.tick(Duration::from_millis(100)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The slow reader is cut off after WRITE_TIMEOUT: draining its socket ends (EOF or
    // reset) well before every pipelined request was answered.
    let wait = (WRITE_TIMEOUT + Duration::from_secs(1)).saturating_sub(slow_since.elapsed());
    tokio::time::sleep(wait).await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(3), slow_read.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let answered = String::from_utf8_lossy(&got)
        .matches("HTTP/1.1 200")
        .count();
    assert!(
        ended,
        "the slow reader's connection is still open ({answered} answers read)"
    );
    assert!(answered < PIPELINED, "{answered}");
    drop(idle);
    server.shutdown().await;
}

/// With every general slot taken (by well-behaved clients), probes still get a reserved one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_have_reserved_slots() {
    let metrics = Arc::new(NodeMetrics::new(MetricsOptions::default()));
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap(), metrics)
        .await
        .unwrap();
    let addr = server.local_addr();
    let mut held = Vec::new();
    for client in 0..GENERAL_SLOTS / MAX_PER_CLIENT {
        for _ in 0..MAX_PER_CLIENT {
            held.push(connect_from(&format!("127.0.1.{}", client + 1), addr).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = std::time::Instant::now();
    let (status, _, _) = exchange(
        connect_from("127.0.0.1", addr).await,
        &request("/healthz", ""),
    )
    .await;
    assert_eq!(status, 200);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let (status, _, _) = exchange(
        connect_from("127.0.0.1", addr).await,
        &request("/readyz", ""),
    )
    .await;
    assert_eq!(status, 503, "not ready yet, but answered");
    let (status, _, body) = exchange(
        connect_from("127.0.0.1", addr).await,
        &request("/metrics", ""),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("busy"), "{body}");
    // A general slot frees up: scrapes work again.
    held.pop();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _, _) = exchange(
        connect_from("127.0.0.1", addr).await,
        &request("/metrics", ""),
    )
    .await;
    assert_eq!(status, 200);
    drop(held);
    server.shutdown().await;
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("smp-server-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Issue 17 item 7: TLS and a bearer token on /metrics; /healthz stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_bearer_token() {
    const TOKEN: &str = "s3cret-token-value";
    let dir = TempDir::new("tls");
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert, key, token) = (
        dir.0.join("tls.crt"),
        dir.0.join("tls.key"),
        dir.0.join("token"),
    );
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let options = ServerOptions {
        tls: Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        token_file: Some(token.clone()),
    };
    let metrics = Arc::new(NodeMetrics::new(MetricsOptions::default()));
    let server = MetricsServer::bind_with("127.0.0.1:0".parse().unwrap(), metrics, &options)
        .await
        .unwrap();
    let addr = server.local_addr();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let https = |req: String| {
        let connector = connector.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let tls = connector.connect(name, tcp).await.unwrap();
            exchange(tls, &req).await
        }
    };
    let auth = |t: &str| format!("Authorization: Bearer {t}\r\n");

    let (status, _, body) = https(request("/metrics", &auth(TOKEN))).await;
    assert_eq!(status, 200);
    assert!(body.contains("smp_agent_updates_total"), "{body}");
    let (status, head, body) = https(request("/metrics", "")).await;
    assert_eq!(status, 401);
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert!(!body.contains(TOKEN));
    for wrong in [
        "s3cret-token-valuf",
        "s3cret-token-value-and-more",
        "s3cret",
        "",
    ] {
        let (status, _, _) = https(request("/metrics", &auth(wrong))).await;
        assert_eq!(status, 401, "{wrong:?}");
    }
    let (status, _, _) = https(request(
        "/metrics",
        &format!("Authorization: Basic {TOKEN}\r\n"),
    ))
    .await;
    assert_eq!(status, 401);
    // The kubelet's probes need no token.
    let (status, _, body) = https(request("/healthz", "")).await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _, _) = https(request("/readyz", "")).await;
    assert_eq!(status, 503);
    // A rotated token takes effect at the next scrape.
    std::fs::write(&token, "rotated\n").unwrap();
    assert_eq!(https(request("/metrics", &auth(TOKEN))).await.0, 401);
    assert_eq!(https(request("/metrics", &auth("rotated"))).await.0, 200);
    // Plain HTTP to the TLS port gets no HTTP answer.
    let (status, _, _) = exchange(
        tokio::net::TcpStream::connect(addr).await.unwrap(),
        &request("/healthz", ""),
    )
    .await;
    assert_eq!(status, 0);
    server.shutdown().await;

    // Unusable files are errors at startup that name the file, never its contents.
    let missing = ServerOptions {
        tls: None,
        token_file: Some(dir.0.join("absent")),
    };
    let m = Arc::new(NodeMetrics::new(MetricsOptions::default()));
    let e = MetricsServer::bind_with("127.0.0.1:0".parse().unwrap(), Arc::clone(&m), &missing)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("absent"), "{e}");
    std::fs::write(&token, " \n").unwrap();
    let empty = ServerOptions {
        tls: None,
        token_file: Some(token.clone()),
    };
    let e = MetricsServer::bind_with("127.0.0.1:0".parse().unwrap(), Arc::clone(&m), &empty)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");
    std::fs::write(&key, "-----BEGIN c2VjcmV0\nc2VjcmV0\n").unwrap();
    let bad_key = ServerOptions {
        tls: Some(TlsFiles { cert, key }),
        token_file: None,
    };
    let e = MetricsServer::bind_with("127.0.0.1:0".parse().unwrap(), m, &bad_key)
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("tls.key") && !msg.contains("c2VjcmV0"),
        "{msg}"
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
