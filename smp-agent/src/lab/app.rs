//! The lab's server app (`smp-agent lab app`): HTTP/1.1 keep-alive, a fixed-size response body
//! (or the request body echoed back), and an optional service time per request (fixed
//! `--service-us`, or the request header `x-smp-service-us`), so the app's own time is known.
//! It listens on several ports at once: the meshed port and the baseline port. A connection
//! that opens with the HTTP/2 preface is served as h2c (prior knowledge) instead, and on it a
//! request with a gRPC content type is a call of the unary method `/smp.Lab/Echo`
//! ([`crate::loadgen::grpc`]): it answers the request's message (or the fixed body) with
//! `grpc-status` 0, or the status the request header `x-smp-grpc-status` asks for.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
};

use super::{
    ends::{monotonic_ns, EndRecord, APP_RECORDS_PATH, MAX_RECORDS},
    http1, LabError,
};
use crate::loadgen::grpc;

/// The app's record of every HTTP/1.1 request that carried a request id (`x-smp-req-id`): the
/// app's end of the proxy-independent exchange check (`lab::ends`). Served at
/// [`APP_RECORDS_PATH`] on the app's ports; bounded by [`MAX_RECORDS`], more are counted.
#[derive(Debug, Default)]
pub struct Recorder {
    records: Mutex<Vec<EndRecord>>,
    dropped: AtomicU64,
}

impl Recorder {
    fn push(&self, r: EndRecord) {
        let mut v = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < MAX_RECORDS {
            v.push(r);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The records as text: a `# dropped N` line, then one [`EndRecord::line`] per request.
    pub fn text(&self) -> String {
        let v = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = format!("# dropped {}\n", self.dropped.load(Ordering::Relaxed));
        for r in v.iter() {
            out.push_str(&r.line());
            out.push('\n');
        }
        out
    }
}

/// Options of the hidden `lab app` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct AppOptions {
    /// Required: address(es) to listen on (repeat the flag). Example: --listen 0.0.0.0:8080
    #[arg(long, required = true)]
    pub listen: Vec<SocketAddr>,
    /// Size of the fixed response body in bytes.
    #[arg(long, default_value_t = 64)]
    pub body_bytes: u64,
    /// Service time per request in microseconds (`x-smp-service-us` overrides).
    #[arg(long, default_value_t = 0)]
    pub service_us: u64,
    /// Worker threads: 1 = current-thread runtime, N = multi-thread runtime.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
}

/// Largest request body echoed back; larger bodies are read and a fixed body is sent.
const MAX_ECHO: usize = 1 << 20;

/// Runs the app until killed.
pub fn run(opts: AppOptions) -> Result<(), LabError> {
    let rt = super::runtime(opts.workers)?;
    rt.block_on(async move {
        let body = bytes::Bytes::from(vec![b'x'; usize::try_from(opts.body_bytes).unwrap_or(0)]);
        let recorder = Arc::new(Recorder::default());
        let mut tasks = Vec::new();
        for addr in &opts.listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|e| LabError::io(format!("listen on {addr}"), e))?;
            let body = body.clone();
            let service = opts.service_us;
            let port = addr.port();
            let recorder = Arc::clone(&recorder);
            tasks.push(tokio::spawn(async move {
                loop {
                    let Ok((s, _)) = l.accept().await else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    let _ = s.set_nodelay(true);
                    let body = body.clone();
                    let recorder = Arc::clone(&recorder);
                    tokio::spawn(async move {
                        let mut preface = [0u8; 3];
                        let h2 = matches!(s.peek(&mut preface).await, Ok(3)) && &preface == b"PRI";
                        if h2 {
                            let _ = h2_conn(s, body, service, port).await;
                        } else {
                            let _ = conn(s, &body, service, port, &recorder).await;
                        }
                    });
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        Ok(())
    })
}

async fn conn(
    s: TcpStream,
    body: &[u8],
    service_us: u64,
    port: u16,
    recorder: &Recorder,
) -> std::io::Result<()> {
    let (local, remote) = (s.local_addr()?, s.peer_addr()?);
    let (r, mut w) = s.into_split();
    let mut r = BufReader::with_capacity(16 * 1024, r);
    let mut head = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(512);
    loop {
        if !http1::read_head(&mut r, &mut head).await? {
            return Ok(());
        }
        let t0_ns = monotonic_ns();
        let req = http1::parse_request(&head)?;
        if req.path == APP_RECORDS_PATH {
            http1::read_body(&mut r, req.body, 0).await?;
            let text = recorder.text();
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
                text.len()
            );
            w.write_all(resp.as_bytes()).await?;
            if !req.keep_alive {
                let _ = w.shutdown().await;
                return Ok(());
            }
            continue;
        }
        if req.expect_continue {
            w.write_all(http1::CONTINUE).await?;
        }
        let echo = http1::read_body(&mut r, req.body, MAX_ECHO).await?;
        let service = req.service_us.unwrap_or(service_us);
        if service > 0 {
            http1::precise_sleep(Duration::from_micros(service)).await?;
        }
        let payload: &[u8] = if echo.is_empty() { body } else { &echo };
        out.clear();
        out.extend_from_slice(
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nx-smp-app-port: {port}\r\n{}\r\n",
                payload.len(),
                if req.keep_alive { "" } else { "connection: close\r\n" }
            )
            .as_bytes(),
        );
        if !req.method.eq_ignore_ascii_case("HEAD") {
            out.extend_from_slice(payload);
        }
        w.write_all(&out).await?;
        if let Some(id) = req.req_id {
            recorder.push(EndRecord {
                id,
                local,
                remote,
                t0_ns,
                t1_ns: monotonic_ns(),
            });
        }
        if !req.keep_alive {
            let _ = w.shutdown().await;
            return Ok(());
        }
    }
}

/// Serves one h2c connection (prior knowledge): same responses as HTTP/1.1.
async fn h2_conn(
    s: TcpStream,
    body: bytes::Bytes,
    service_us: u64,
    port: u16,
) -> Result<(), h2::Error> {
    let mut conn = h2::server::handshake(s).await?;
    while let Some(next) = conn.accept().await {
        let (req, mut respond) = next?;
        let body = body.clone();
        tokio::spawn(async move {
            let grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(grpc::CONTENT_TYPE.as_bytes()));
            let service = req
                .headers()
                .get("x-smp-service-us")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(service_us);
            let (parts, mut recv) = req.into_parts();
            let mut echo = Vec::new();
            while let Some(chunk) = recv.data().await {
                let Ok(chunk) = chunk else { return };
                let _ = recv.flow_control().release_capacity(chunk.len());
                if echo.len() + chunk.len() <= MAX_ECHO {
                    echo.extend_from_slice(&chunk);
                }
            }
            if service > 0 {
                let _ = http1::precise_sleep(Duration::from_micros(service)).await;
            }
            if grpc {
                grpc_answer(respond, &parts, &echo, body, port);
                return;
            }
            let payload = if echo.is_empty() {
                body
            } else {
                bytes::Bytes::from(echo)
            };
            let Ok(resp) = http::Response::builder()
                .status(200)
                .header("content-type", "application/octet-stream")
                .header("content-length", payload.len())
                .header("x-smp-app-port", port)
                .body(())
            else {
                return;
            };
            let end = payload.is_empty();
            if let Ok(mut send) = respond.send_response(resp, end) {
                if !end {
                    let _ = send.send_data(payload, true);
                }
            }
        });
    }
    Ok(())
}

/// Answers one gRPC call (the request body read whole, `echo`): `/smp.Lab/Echo` replies
/// with the request's first message, or `body` when it is empty; other paths get
/// `UNIMPLEMENTED`, a malformed body `INTERNAL`.
fn grpc_answer(
    mut respond: h2::server::SendResponse<bytes::Bytes>,
    req: &http::request::Parts,
    echo: &[u8],
    body: bytes::Bytes,
    port: u16,
) {
    let asked = req
        .headers
        .get(grpc::STATUS_HEADER)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u32>().ok())
        .filter(|c| *c <= grpc::MAX_CODE);
    let (code, reply) = if req.uri.path() != grpc::LAB_METHOD {
        (12, None)
    } else {
        match grpc::messages(echo) {
            Err(_) => (13, None),
            Ok(msgs) => {
                let reply = match msgs.first() {
                    Some(m) if !m.is_empty() => grpc::frame(m),
                    _ => grpc::frame(&body),
                };
                (asked.unwrap_or(0), Some(reply))
            }
        }
    };
    let Ok(resp) = http::Response::builder()
        .status(200)
        .header("content-type", grpc::CONTENT_TYPE)
        .header("x-smp-app-port", port)
        .body(())
    else {
        return;
    };
    let Ok(mut send) = respond.send_response(resp, false) else {
        return;
    };
    if let Some(reply) = reply.filter(|_| code == 0) {
        let _ = send.send_data(reply, false);
    }
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from(code));
    if code != 0 {
        trailers.insert(
            "grpc-message",
            http::HeaderValue::from_static(grpc::code_name(code)),
        );
    }
    let _ = send.send_trailers(trailers);
}

/// Answers every request on `s` with `text(path)` as of that request (keep-alive): the
/// admin endpoint of our proxy.
pub async fn serve_text<S: AsyncRead + AsyncWrite + Unpin>(
    s: S,
    text: impl Fn(&str) -> String,
) -> std::io::Result<()> {
    let (r, mut w) = tokio::io::split(s);
    let mut r = BufReader::new(r);
    let mut head = Vec::new();
    while http1::read_head(&mut r, &mut head).await? {
        let req = http1::parse_request(&head)?;
        http1::read_body(&mut r, req.body, 0).await?;
        let text = text(req.path.as_str());
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
        w.write_all(resp.as_bytes()).await?;
        if !req.keep_alive {
            break;
        }
    }
    Ok(())
}
