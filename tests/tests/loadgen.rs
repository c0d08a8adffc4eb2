//! The load generator against servers written here, on 127.0.0.1 ephemeral ports. No root.
//!
//! Proofs from issue 4: request count = rate × duration; a 500 ms server stall shows its full
//! effect on open-loop percentiles (and, for contrast, only one slow sample per connection in
//! the closed loop); status and error counts exact; HTTP/2 (h2c and TLS + ALPN), TLS with a CA
//! file; SMP test-config input; bad input gives clear errors.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use bytes::Bytes;
use clap::Parser as _;
use smp_agent::{
    cli::{load, Cli, Command},
    loadgen::{run, Control, LoadSpec, Protocol, Rate, Results},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpListener,
    time::Instant,
};

/// What the test servers count and how they misbehave.
#[derive(Default)]
struct State {
    requests: AtomicU64,
    /// Responses wait until this instant (a stall).
    stall_until: Mutex<Option<Instant>>,
}

impl State {
    async fn maybe_stall(&self) {
        let until = *self.stall_until.lock().unwrap();
        if let Some(t) = until {
            tokio::time::sleep_until(t).await;
        }
    }
}

/// Serves HTTP/1.1 keep-alive. The path picks the behaviour: `/fail` → 500, `/close` → close
/// without answering, `/hang` → never answer, `/garbage` → not HTTP, `/chunked` → a chunked
/// 200, anything else → 200 with a 5-byte body.
async fn serve_h1<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, state: Arc<State>) {
    let mut buf = Vec::with_capacity(4096);
    let mut tmp = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        let body_len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + body_len {
            match s.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        buf.drain(..head_end + body_len);
        if !(head.starts_with("get ") || head.starts_with("post ")) {
            // E.g. the HTTP/2 preface sent to this HTTP/1-only server: not a request.
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
                .await;
            return;
        }
        state.requests.fetch_add(1, Ordering::Relaxed);
        state.maybe_stall().await;
        let resp: &[u8] = match path.as_str() {
            "/close" => return,
            "/hang" => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            "/garbage" => b"NOT HTTP AT ALL\r\n\r\n",
            "/fail" => b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\n\r\nfail",
            "/chunked" => {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            }
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
        };
        if s.write_all(resp).await.is_err() {
            return;
        }
    }
}

/// Serves HTTP/2: every request gets 200 "hello".
async fn serve_h2<S: AsyncRead + AsyncWrite + Unpin>(s: S, state: Arc<State>) {
    let Ok(mut conn) = h2::server::handshake(s).await else {
        return;
    };
    while let Some(Ok((req, mut respond))) = conn.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let mut body = req.into_body();
            while let Some(Ok(chunk)) = body.data().await {
                let _ = body.flow_control().release_capacity(chunk.len());
            }
            state.requests.fetch_add(1, Ordering::Relaxed);
            state.maybe_stall().await;
            let resp = http::Response::builder().status(200).body(()).unwrap();
            if let Ok(mut send) = respond.send_response(resp, false) {
                let _ = send.send_data(Bytes::from_static(b"hello"), true);
            }
        });
    }
}

#[derive(Clone, Copy)]
enum Kind {
    H1,
    H2c,
    /// TLS; HTTP/2 or HTTP/1.1 by ALPN.
    Tls,
}

struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    /// PEM of the certificate (for `Kind::Tls`), trusted as a CA file by the client.
    ca_pem: Option<String>,
}

impl Server {
    fn url(&self, path: &str) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        let host = if self.ca_pem.is_some() {
            format!("localhost:{}", self.addr.port())
        } else {
            self.addr.to_string()
        };
        format!("{scheme}://{host}{path}")
    }

    fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }
}

fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    (
        tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        ck.cert.pem(),
    )
}

async fn server(kind: Kind) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = Arc::new(State::default());
    let (acceptor, ca_pem) = match kind {
        Kind::Tls => {
            let (a, pem) = tls_acceptor();
            (Some(a), Some(pem))
        }
        _ => (None, None),
    };
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let _ = tcp.set_nodelay(true);
            let st = st.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match kind {
                    Kind::H1 => serve_h1(tcp, st).await,
                    Kind::H2c => serve_h2(tcp, st).await,
                    Kind::Tls => {
                        let Ok(tls) = acceptor.unwrap().accept(tcp).await else {
                            return;
                        };
                        if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                            serve_h2(tls, st).await;
                        } else {
                            serve_h1(tls, st).await;
                        }
                    }
                }
            });
        }
    });
    Server {
        addr,
        state,
        ca_pem,
    }
}

fn spec(urls: Vec<String>, rate: Rate, connections: u32, duration_ms: u64) -> LoadSpec {
    LoadSpec {
        rate,
        connections,
        duration: Duration::from_millis(duration_ms),
        timeout: Duration::from_secs(5),
        ..LoadSpec::new(urls)
    }
}

async fn go(spec: &LoadSpec) -> Results {
    run(spec, Control::new()).await.expect("run failed")
}

fn count_at_least(r: &Results, ms: u64) -> u64 {
    let h = r.histogram();
    h.count_between(ms * 1000, h.high())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_count_is_rate_times_duration() {
    let srv = server(Kind::H1).await;
    let r = go(&spec(vec![srv.url("/")], Rate::Fixed(400.0), 4, 2000)).await;
    let expect = 800.0;
    assert!(
        (r.requests as f64 - expect).abs() <= expect * 0.01,
        "{} requests, expected {expect} ± 1 %",
        r.requests
    );
    assert_eq!(r.errors.total(), 0, "{:?}", r.errors);
    assert_eq!(r.missed, 0);
    assert_eq!(srv.requests(), r.requests, "server and client disagree");
    assert_eq!(r.status_codes.get(&200), Some(&r.requests));
    assert!(
        (r.achieved_rate - 400.0).abs() < 400.0 * 0.05,
        "{}",
        r.achieved_rate
    );
    assert_eq!(r.requested_rate, Some(400.0));
    // 5 body bytes + headers per response, the pre-built request per request.
    assert!(r.bytes.received >= r.requests * 40, "{:?}", r.bytes);
    assert_eq!(r.bytes.sent % r.requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warmup_is_sent_but_not_measured() {
    let srv = server(Kind::H1).await;
    let mut s = spec(vec![srv.url("/")], Rate::Fixed(200.0), 2, 1000);
    s.warmup = Duration::from_millis(500);
    let r = go(&s).await;
    assert!((r.requests as f64 - 200.0).abs() <= 2.0, "{}", r.requests);
    assert!(
        (srv.requests() as f64 - 300.0).abs() <= 3.0,
        "server saw {}",
        srv.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_shows_its_full_effect_in_the_open_loop_only() {
    // Open loop, 1000 rps for 3 s; the server stalls every response for 500 ms at t ≈ 1 s.
    let srv = server(Kind::H1).await;
    let state = srv.state.clone();
    let stall = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        *state.stall_until.lock().unwrap() = Some(Instant::now() + Duration::from_millis(500));
    });
    let r = go(&spec(vec![srv.url("/")], Rate::Fixed(1000.0), 10, 3000)).await;
    stall.await.unwrap();
    assert!((r.requests as f64 - 3000.0).abs() <= 30.0, "{}", r.requests);
    // ≈ 500 requests were due during the stall, each delayed by what was left of it: about
    // 400 of them by ≥ 100 ms. A tool with coordinated omission sees ~10 (one per connection).
    let slow = count_at_least(&r, 100);
    assert!(
        slow >= 300,
        "only {slow} requests ≥ 100 ms; {:?}",
        r.latency
    );
    assert!(r.latency.p99_ms >= 250.0, "{:?}", r.latency);
    assert!(
        r.latency.max_ms >= 450.0 && r.latency.max_ms < 2000.0,
        "{:?}",
        r.latency
    );

    // Closed loop against the same stall: only the requests in flight are slow.
    let srv = server(Kind::H1).await;
    let state = srv.state.clone();
    let stall = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        *state.stall_until.lock().unwrap() = Some(Instant::now() + Duration::from_millis(500));
    });
    let r = go(&spec(vec![srv.url("/")], Rate::Max, 10, 2000)).await;
    stall.await.unwrap();
    let slow = count_at_least(&r, 250);
    assert!(
        (5..=20).contains(&slow),
        "closed loop: {slow} requests ≥ 250 ms out of {}",
        r.requests
    );
    assert_eq!(srv.requests(), r.requests);
    assert!(r.requested_rate.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_error_counts_are_exact() {
    let srv = server(Kind::H1).await;
    // 300 requests round-robin over three URLs: 100 each.
    let urls = vec![srv.url("/"), srv.url("/fail"), srv.url("/close")];
    let r = go(&spec(urls, Rate::Fixed(300.0), 2, 1000)).await;
    assert_eq!(r.status_codes.get(&200), Some(&100), "{:?}", r.status_codes);
    assert_eq!(r.status_codes.get(&500), Some(&100), "{:?}", r.status_codes);
    assert_eq!(r.status_codes.len(), 2);
    assert_eq!(r.requests, 200);
    assert_eq!(r.errors.reset, 100, "{:?}", r.errors);
    assert_eq!(r.errors.total(), 100, "{:?}", r.errors);
    assert_eq!(r.missed, 0);
    assert_eq!(srv.requests(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_protocol_errors_and_chunked_bodies() {
    let srv = server(Kind::H1).await;
    let mut s = spec(
        vec![srv.url("/hang"), srv.url("/garbage"), srv.url("/chunked")],
        Rate::Fixed(60.0),
        3,
        1000,
    );
    s.timeout = Duration::from_millis(200);
    let r = go(&s).await;
    assert_eq!(r.errors.protocol, 20, "{:?}", r.errors);
    assert_eq!(r.status_codes.get(&200), Some(&20));
    // The connection that always hits /hang can send one request per 200 ms timeout: 6 by the
    // hard stop (end + timeout); the rest of its 20 are reported as missed, never dropped.
    assert_eq!(
        r.errors.timeout + r.missed,
        20,
        "{:?} missed {}",
        r.errors,
        r.missed
    );
    assert!(r.errors.timeout >= 4, "{:?}", r.errors);
    assert_eq!(r.errors.total(), 20 + r.errors.timeout, "{:?}", r.errors);

    // One request per connection: every one times out, exactly.
    let mut s = spec(vec![srv.url("/hang")], Rate::Fixed(10.0), 10, 1000);
    s.timeout = Duration::from_millis(200);
    let r = go(&s).await;
    assert_eq!(r.errors.timeout, 10, "{:?}", r.errors);
    assert_eq!(r.missed, 0);
    assert_eq!(r.requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_counted() {
    // The listener accepts the pre-flight connection, then goes away: every later connect is
    // refused. The warm-up absorbs connections that raced the close.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _first = listener.accept().await;
        drop(listener);
    });
    let mut s = spec(vec![format!("http://{addr}/")], Rate::Fixed(50.0), 2, 1000);
    s.warmup = Duration::from_millis(300);
    let r = go(&s).await;
    assert_eq!(r.errors.connect, 50, "{:?}", r.errors);
    assert_eq!(r.requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_cleartext_prior_knowledge() {
    let srv = server(Kind::H2c).await;
    let mut s = spec(vec![srv.url("/")], Rate::Fixed(200.0), 2, 1000);
    s.protocol = Protocol::Http2;
    s.method = "POST".into();
    s.body = b"{\"x\":1}".to_vec();
    let r = go(&s).await;
    assert_eq!(r.status_codes.get(&200), Some(&200), "{r:?}");
    assert_eq!(r.errors.total(), 0);
    assert_eq!(srv.requests(), 200);
    assert_eq!(r.bytes.received, 200 * 5);
    assert_eq!(r.bytes.sent, 200 * 7);
    // An HTTP/1-only server asked for h2c: a clear error before any load.
    let h1 = server(Kind::H1).await;
    let mut s1 = spec(vec![h1.url("/")], Rate::Fixed(100.0), 1, 500);
    s1.protocol = Protocol::Http2;
    let e = run(&s1, Control::new()).await.unwrap_err().to_string();
    assert!(e.contains("does not speak HTTP/2"), "{e}");
    assert_eq!(h1.requests(), 0);
    // Closed loop over HTTP/2 too.
    s.rate = Rate::Max;
    s.duration = Duration::from_millis(500);
    let before = srv.requests();
    let r = go(&s).await;
    assert!(r.requests > 0);
    assert_eq!(srv.requests() - before, r.requests);
}

fn write_temp(name: &str, text: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("smp-loadgen-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_ca_file_http1_and_http2_by_alpn() {
    let srv = server(Kind::Tls).await;
    let ca = write_temp("ca.pem", srv.ca_pem.as_ref().unwrap());
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let before = srv.requests();
        let mut s = spec(vec![srv.url("/")], Rate::Fixed(100.0), 2, 1000);
        s.protocol = protocol;
        s.ca_file = Some(ca.clone());
        let r = go(&s).await;
        assert_eq!(r.status_codes.get(&200), Some(&100), "{protocol:?}: {r:?}");
        assert_eq!(srv.requests() - before, 100);
    }
    // Without the CA the certificate is not trusted: a clear error before the run.
    let s = spec(vec![srv.url("/")], Rate::Fixed(100.0), 1, 500);
    let e = run(&s, Control::new()).await.unwrap_err().to_string();
    assert!(e.contains("cannot connect") && e.contains("TLS"), "{e}");
    let _ = std::fs::remove_file(ca);
}

fn cli_spec(argv: &[&str]) -> anyhow::Result<LoadSpec> {
    let mut full = vec!["smp-agent", "load"];
    full.extend_from_slice(argv);
    let cli = Cli::try_parse_from(full)?;
    let Command::Load(args) = cli.command else {
        panic!("not the load command")
    };
    load::spec_from_args(&args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smp_test_config_drives_the_load() {
    let srv = server(Kind::H1).await;
    let cfg = format!(
        "test:\n  name: t\n  clients:\n    - protocol: 1\n      connections: 2\n      rps: 100\n      \
         headers: {{x-a: b}}\n      cookies: {{}}\n      body: ''\n      content_type: ''\n      \
         endpoint_urls: ['{}']\n  duration: 1s\nmesh:\n  type: 3\n",
        srv.url("/")
    );
    let path = write_temp("smp.yaml", &cfg);
    let s = cli_spec(&["--config", path.to_str().unwrap()]).unwrap();
    assert_eq!(s.rate, Rate::Fixed(100.0));
    assert_eq!(s.connections, 2);
    let r = go(&s).await;
    assert_eq!(r.status_codes.get(&200), Some(&100));
    // A flag overrides the file.
    let s = cli_spec(&[
        "--config",
        path.to_str().unwrap(),
        "--rate",
        "50",
        "-d",
        "500ms",
    ])
    .unwrap();
    assert_eq!(s.rate, Rate::Fixed(50.0));
    assert_eq!(s.duration, Duration::from_millis(500));
    let _ = std::fs::remove_file(path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gives_clear_errors() {
    let err = |argv: &[&str]| format!("{:#}", cli_spec(argv).unwrap_err());
    let e = err(&["--rate", "1", "http//127.0.0.1:1/"]);
    assert!(e.contains("invalid URL"), "{e}");
    let e = err(&["--rate", "1", "ftp://127.0.0.1/"]);
    assert!(e.contains("scheme must be http or https"), "{e}");
    for rate in ["0", "-10"] {
        let e = err(&["--rate", rate, "http://127.0.0.1:1/"]);
        assert!(e.contains("invalid rate"), "{rate}: {e}");
    }
    let e = err(&["--rate", "1", "-d", "abc", "http://127.0.0.1:1/"]);
    assert!(e.contains("invalid duration \"abc\""), "{e}");
    let s = cli_spec(&["--rate", "1", "-d", "1m30s", "http://127.0.0.1:1/"]).unwrap();
    assert_eq!(s.duration, Duration::from_secs(90));
    let s = cli_spec(&["--rate", "max", "-d", "500ms", "http://127.0.0.1:1/"]).unwrap();
    assert_eq!(s.duration, Duration::from_millis(500));
    assert_eq!(s.rate, Rate::Max);

    // Unreachable: nothing listens on this port.
    let port = smp_tests::free_port();
    let s = cli_spec(&[
        "--rate",
        "10",
        "-d",
        "1s",
        &format!("http://127.0.0.1:{port}/"),
    ])
    .unwrap();
    let started = std::time::Instant::now();
    let e = run(&s, Control::new()).await.unwrap_err().to_string();
    assert!(e.contains("cannot connect to http://127.0.0.1:"), "{e}");
    assert!(e.to_lowercase().contains("refused"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(5), "failed fast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_of_two_runs_merge_losslessly() {
    let srv = server(Kind::H1).await;
    let a = go(&spec(vec![srv.url("/")], Rate::Fixed(100.0), 1, 500)).await;
    let b = go(&spec(vec![srv.url("/fail")], Rate::Fixed(100.0), 1, 500)).await;
    let a: Results = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    let b: Results = serde_yaml_ng::from_str(&serde_yaml_ng::to_string(&b).unwrap()).unwrap();
    let m = Results::merge(&[a.clone(), b.clone()]).unwrap();
    assert_eq!(m.requests, a.requests + b.requests);
    assert_eq!(m.histogram().len(), 100);
    assert_eq!(m.status_codes.get(&200), Some(&50));
    assert_eq!(m.status_codes.get(&500), Some(&50));
    assert_eq!(m.latency.max_ms, a.latency.max_ms.max(b.latency.max_ms));
    assert_eq!(m.requested_rate, Some(200.0));
}
