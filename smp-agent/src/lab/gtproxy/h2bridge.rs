//! HTTP/2 on the sidecar-to-sidecar leg for the ground-truth proxy. Upstream HTTP/2
//! connections are shared by every downstream connection ([`H2Pool`], one per worker, as
//! Envoy keeps one per worker): many clients' requests are multiplexed on few connections, as
//! between a mesh's sidecars. The outbound side turns each HTTP/1.1 request into a stream on
//! them; the inbound side serves HTTP/2 and forwards each stream as HTTP/1.1 on a small
//! keep-alive pool per downstream connection (HTTP/1.1 carries one request at a time). When
//! the app speaks HTTP/2 too (h2c or gRPC), both sides relay HTTP/2 stream for stream
//! ([`serve_h2`]), trailers included. The delay is added per request exactly as on the
//! HTTP/1.1 path: held until D after the read that brought the request's head. Every request
//! is logged with the proxy's own clock at the syscalls that carried it ([`super::frames`]
//! stamps the HTTP/2 side per stream). Bodies are small in the lab: they are read whole before
//! being forwarded on this path.

use std::{
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Instant,
};

use bytes::Bytes;
use tokio::io::{AsyncWriteExt as _, BufReader, ReadHalf, WriteHalf};

use super::{
    connect,
    frames::{FrameTap, StreamClock, Tapped},
    hold, http1, BoxIo, Bracket, Ctx, Stamps,
};

/// A connection's (local, remote) addresses.
type Addrs = (SocketAddr, SocketAddr);

/// Hop-by-hop headers that HTTP/2 forbids (RFC 9113 §8.2.2), plus `host` (→ `:authority`).
fn hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "host",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// The proxy's HTTP/2 upstream connections, shared by all its downstream connections and
/// taken in turn; one that closed is reopened when its turn comes.
pub(super) struct H2Pool {
    slots: Vec<tokio::sync::Mutex<Option<H2Upstream>>>,
    next: AtomicUsize,
}

#[derive(Clone)]
struct H2Upstream {
    sender: ::h2::client::SendRequest<Bytes>,
    /// Each stream's request write ([`FrameTap`] on the connection's writes).
    clock: Arc<StreamClock>,
    addrs: Addrs,
    closed: Arc<AtomicBool>,
}

impl H2Pool {
    /// A pool of `conns` connections (at least one), opened at first use.
    pub(super) fn new(conns: u32) -> H2Pool {
        H2Pool {
            slots: (0..conns.max(1)).map(|_| Default::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    async fn next(&self, ctx: &Ctx) -> io::Result<H2Upstream> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(u) = slot.as_ref().filter(|u| !u.closed.load(Ordering::Relaxed)) {
            return Ok(u.clone());
        }
        let (io, addrs) = connect(ctx, Default::default()).await?;
        let clock = Arc::<StreamClock>::default();
        let io = FrameTap::new(io, Tapped::Writes, clock.clone());
        let (sender, conn) = ::h2::client::handshake(io).await.map_err(other)?;
        let closed = Arc::<AtomicBool>::default();
        let done = closed.clone();
        tokio::spawn(async move {
            let _ = conn.await;
            done.store(true, Ordering::Relaxed);
        });
        let u = H2Upstream {
            sender,
            clock,
            addrs,
            closed,
        };
        *slot = Some(u.clone());
        Ok(u)
    }
}

/// Sends `req` with `body` (whole) on the pool's next connection. Returns the response, that
/// connection's addresses and the write that carried the request's HEADERS (taken once the
/// response is in: it was written by then).
async fn forward(
    ctx: &Ctx,
    req: http::Request<()>,
    body: Vec<u8>,
) -> io::Result<(http::Response<::h2::RecvStream>, Addrs, Option<Bracket>)> {
    let up = ctx.h2_pool.next(ctx).await?;
    let mut ready = up.sender.clone().ready().await.map_err(other)?;
    let (resp, mut send) = ready.send_request(req, body.is_empty()).map_err(other)?;
    let stream = u32::from(resp.stream_id());
    if !body.is_empty() {
        send.send_data(Bytes::from(body), true).map_err(other)?;
    }
    let resp = resp.await.map_err(other)?;
    Ok((resp, up.addrs, up.clock.take(stream)))
}

/// Outbound: HTTP/1.1 downstream (`down_addrs`, its reads stamped in `down_stamps`), HTTP/2
/// upstream from the pool.
pub(super) async fn h1_to_h2(
    ctx: &Ctx,
    down: BoxIo,
    down_addrs: Addrs,
    down_stamps: &Stamps,
) -> io::Result<()> {
    let (dr, mut dw) = tokio::io::split(down);
    let mut dr = BufReader::with_capacity(16 * 1024, dr);
    let mut head = Vec::with_capacity(1024);
    let scheme = if ctx.connector.is_some() {
        "https"
    } else {
        "http"
    };
    loop {
        if !http1::read_head(&mut dr, &mut head).await? {
            return Ok(());
        }
        let now = Instant::now();
        let read = down_stamps.last_read().unwrap_or((now, now));
        let req = http1::parse_request(&head)?;
        if req.expect_continue {
            dw.write_all(http1::CONTINUE).await?;
            dw.flush().await?;
        }
        let body = http1::read_body(&mut dr, req.body, usize::MAX).await?;
        hold(ctx, req.delay_us, read.1).await?;
        let h2req = to_h2_request(&head, scheme)?;
        let (resp, up_addrs, write) = forward(ctx, h2req, body).await?;
        if let Some(write) = write {
            ctx.stats.forwarded(down_addrs, up_addrs, read, write);
        }
        let (parts, mut recv) = resp.into_parts();
        let no_body = req.method.eq_ignore_ascii_case("HEAD")
            || parts.status.as_u16() == 204
            || parts.status.as_u16() == 304;
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            parts.status.as_u16(),
            parts.status.canonical_reason().unwrap_or("")
        )
        .into_bytes();
        let mut has_length = false;
        for (k, v) in &parts.headers {
            if hop_by_hop(k.as_str()) {
                continue;
            }
            has_length |= k == http::header::CONTENT_LENGTH;
            out.extend_from_slice(k.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(v.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let chunked = !no_body && !has_length;
        if chunked {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        out.extend_from_slice(format!("x-smp-via: {}\r\n\r\n", ctx.opts.role).as_bytes());
        dw.write_all(&out).await?;
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(other)?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            if no_body || chunk.is_empty() {
                continue;
            }
            if chunked {
                dw.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                dw.write_all(&chunk).await?;
                dw.write_all(b"\r\n").await?;
            } else {
                dw.write_all(&chunk).await?;
            }
        }
        if chunked {
            dw.write_all(b"0\r\n\r\n").await?;
        }
        dw.flush().await?;
        ctx.stats.requests.fetch_add(1, Ordering::Relaxed);
        if !req.keep_alive {
            let _ = dw.shutdown().await;
            return Ok(());
        }
    }
}

fn to_h2_request(head: &[u8], scheme: &str) -> io::Result<http::Request<()>> {
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).map_err(other)?;
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .unwrap_or("localhost");
    let uri = format!("{scheme}://{host}{}", req.path.unwrap_or("/"));
    let mut b = http::Request::builder()
        .method(req.method.unwrap_or("GET"))
        .uri(uri)
        .version(http::Version::HTTP_2);
    for h in req.headers.iter() {
        if !hop_by_hop(h.name) {
            b = b.header(h.name, h.value);
        }
    }
    b.body(()).map_err(other)
}

/// A keep-alive HTTP/1.1 upstream connection: its halves, the stamps of its syscalls and its
/// addresses.
struct H1Upstream {
    r: BufReader<ReadHalf<BoxIo>>,
    w: WriteHalf<BoxIo>,
    stamps: Arc<Stamps>,
    addrs: Addrs,
}

/// Serves an HTTP/2 downstream connection (`down_addrs`): each stream is forwarded as HTTP/1.1
/// on a keep-alive pool of this connection's ([`stream`]), or, when the upstream speaks
/// HTTP/2 too, relayed stream for stream on the shared [`H2Pool`] ([`relay`]).
pub(super) async fn serve_h2(ctx: Arc<Ctx>, down: BoxIo, down_addrs: Addrs) -> io::Result<()> {
    let clock = Arc::<StreamClock>::default();
    let down = FrameTap::new(down, Tapped::Reads, clock.clone());
    let mut conn = ::h2::server::handshake(down).await.map_err(other)?;
    let pool: Arc<Mutex<Vec<H1Upstream>>> = Arc::default();
    while let Some(next) = conn.accept().await {
        let (req, respond) = next.map_err(other)?;
        // The read that brought the stream's HEADERS is done: the request is parsed.
        let now = Instant::now();
        let read = clock.take(respond.stream_id().into()).unwrap_or((now, now));
        let (ctx, pool) = (ctx.clone(), pool.clone());
        tokio::spawn(async move {
            let req = Request {
                req,
                respond,
                down_addrs,
                read,
            };
            let res = if ctx.opts.upstream_h2 {
                relay(&ctx, req).await
            } else {
                stream(&ctx, &pool, req).await
            };
            if res.is_err() {
                ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    Ok(())
}

/// One request stream of an HTTP/2 downstream, and the read that brought its HEADERS.
struct Request {
    req: http::Request<::h2::RecvStream>,
    respond: ::h2::server::SendResponse<Bytes>,
    down_addrs: Addrs,
    read: Bracket,
}

/// Reads a request stream's whole body, then holds it for the configured delay (or the one
/// its `x-smp-delay-us` header asks for) after `head_read`: what both ways of forwarding do
/// first.
async fn read_and_hold(
    ctx: &Ctx,
    req: http::Request<::h2::RecvStream>,
    head_read: Instant,
) -> io::Result<(http::request::Parts, Vec<u8>)> {
    let (parts, mut recv) = req.into_parts();
    let mut body = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(other)?;
        let _ = recv.flow_control().release_capacity(chunk.len());
        body.extend_from_slice(&chunk);
    }
    let header_delay = parts
        .headers
        .get("x-smp-delay-us")
        .and_then(|v| v.to_str().ok()?.trim().parse().ok());
    hold(ctx, header_delay, head_read).await?;
    Ok((parts, body))
}

/// Forwards one stream as HTTP/1.1 on a pooled upstream connection.
async fn stream(ctx: &Ctx, pool: &Mutex<Vec<H1Upstream>>, r: Request) -> io::Result<()> {
    let (parts, body) = read_and_hold(ctx, r.req, r.read.1).await?;
    let mut respond = r.respond;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {}\r\n",
        parts.method,
        parts.uri.path_and_query().map_or("/", |p| p.as_str()),
        parts.uri.authority().map_or("localhost", |a| a.as_str())
    )
    .into_bytes();
    for (k, v) in &parts.headers {
        if hop_by_hop(k.as_str()) || k == http::header::CONTENT_LENGTH {
            continue;
        }
        head.extend_from_slice(k.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(v.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());

    let pooled = pool.lock().map_err(other)?.pop();
    let mut up = match pooled {
        Some(u) => u,
        None => {
            let stamps = Arc::<Stamps>::default();
            let (io, addrs) = connect(ctx, stamps.clone()).await?;
            let (r, w) = tokio::io::split(io);
            H1Upstream {
                r: BufReader::with_capacity(16 * 1024, r),
                w,
                stamps,
                addrs,
            }
        }
    };
    up.stamps.arm();
    up.w.write_all(&head).await?;
    let now = Instant::now();
    let write = up.stamps.first_write().unwrap_or((now, now));
    ctx.stats.forwarded(r.down_addrs, up.addrs, r.read, write);
    up.w.write_all(&body).await?;
    up.w.flush().await?;
    let ur = &mut up.r;
    let mut rhead = Vec::with_capacity(1024);
    let resp = loop {
        if !http1::read_head(ur, &mut rhead).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let r = http1::parse_response(&rhead, parts.method.as_str())?;
        if !(100..200).contains(&r.status) {
            break r;
        }
    };
    let rbody = http1::read_body(ur, resp.body, usize::MAX).await?;
    if resp.keep_alive {
        pool.lock().map_err(other)?.push(up);
    }
    let mut headers = [httparse::EMPTY_HEADER; 96];
    let mut parsed = httparse::Response::new(&mut headers);
    parsed.parse(&rhead).map_err(other)?;
    let mut b = http::Response::builder().status(resp.status);
    for h in parsed.headers.iter() {
        if !hop_by_hop(h.name) && !h.name.eq_ignore_ascii_case("content-length") {
            b = b.header(h.name, h.value);
        }
    }
    let no_body = parts.method == http::Method::HEAD || rbody.is_empty();
    if !no_body {
        b = b.header("content-length", rbody.len());
    }
    b = b.header("x-smp-via", ctx.opts.role.as_str());
    let r = b.body(()).map_err(other)?;
    let mut send = respond.send_response(r, no_body).map_err(other)?;
    if !no_body {
        send.send_data(Bytes::from(rbody), true).map_err(other)?;
    }
    ctx.stats.requests.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Headers an HTTP/2 hop forwards: no connection-specific ones, `te` only as `trailers`.
fn forwards(name: &http::HeaderName, value: &http::HeaderValue) -> bool {
    if name == http::header::TE {
        return value.as_bytes().eq_ignore_ascii_case(b"trailers");
    }
    !hop_by_hop(name.as_str())
}

/// Relays one stream on the shared HTTP/2 upstream (h2c or gRPC apps), `te: trailers` kept
/// and the response's trailers (gRPC's status) forwarded.
async fn relay(ctx: &Ctx, r: Request) -> io::Result<()> {
    let (parts, body) = read_and_hold(ctx, r.req, r.read.1).await?;
    let mut respond = r.respond;
    let scheme = if ctx.connector.is_some() {
        "https"
    } else {
        "http"
    };
    let uri = format!(
        "{scheme}://{}{}",
        parts.uri.authority().map_or("localhost", |a| a.as_str()),
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut b = http::Request::builder()
        .method(parts.method.clone())
        .uri(uri)
        .version(http::Version::HTTP_2);
    for (k, v) in &parts.headers {
        if forwards(k, v) {
            b = b.header(k, v);
        }
    }
    let up_req = b.body(()).map_err(other)?;
    let (resp, up_addrs, write) = forward(ctx, up_req, body).await?;
    if let Some(write) = write {
        ctx.stats.forwarded(r.down_addrs, up_addrs, r.read, write);
    }
    let (rparts, mut rrecv) = resp.into_parts();
    let mut rb = http::Response::builder().status(rparts.status);
    for (k, v) in &rparts.headers {
        if forwards(k, v) {
            rb = rb.header(k, v);
        }
    }
    rb = rb.header("x-smp-via", ctx.opts.role.as_str());
    let r = rb.body(()).map_err(other)?;
    // The body is read whole (small in the lab) and sent as one DATA frame, final unless
    // trailers follow: a run of small non-final DATA frames is what h2 peers treat as a
    // flood (GOAWAY `ENHANCE_YOUR_CALM`).
    let mut rbody = Vec::new();
    while let Some(chunk) = rrecv.data().await {
        let chunk = chunk.map_err(other)?;
        let _ = rrecv.flow_control().release_capacity(chunk.len());
        rbody.extend_from_slice(&chunk);
    }
    let trailers = rrecv.trailers().await.map_err(other)?;
    let end = rbody.is_empty() && trailers.is_none();
    let mut out = respond.send_response(r, end).map_err(other)?;
    if !rbody.is_empty() {
        out.send_data(Bytes::from(rbody), trailers.is_none())
            .map_err(other)?;
    }
    if let Some(t) = trailers {
        out.send_trailers(t).map_err(other)?;
    }
    ctx.stats.requests.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
