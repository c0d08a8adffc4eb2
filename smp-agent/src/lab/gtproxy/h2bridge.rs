//! HTTP/2 on the sidecar-to-sidecar leg for the ground-truth proxy: the outbound side turns
//! each HTTP/1.1 request into a stream on one HTTP/2 connection per downstream connection; the
//! inbound side serves HTTP/2 and forwards each stream as HTTP/1.1 on a small keep-alive pool
//! (HTTP/1.1 carries one request at a time). The delay is added per request, before forwarding,
//! on both sides, exactly as on the HTTP/1.1 path. When the app speaks HTTP/2 too (h2c or
//! gRPC), both sides relay HTTP/2 stream for stream ([`h2_to_h2`]), trailers included. Bodies
//! are small in the lab: they are read whole before being forwarded on this path.

use std::{
    io,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use tokio::io::{AsyncWriteExt as _, BufReader, ReadHalf, WriteHalf};

use super::{connect, http1, BoxIo, Ctx};

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

async fn delay(ctx: &Ctx, header: Option<u64>) -> io::Result<()> {
    let d = match (ctx.opts.header_delay, header) {
        (true, Some(d)) => d,
        _ => ctx.opts.delay_us,
    };
    if d > 0 {
        http1::precise_sleep(Duration::from_micros(d)).await?;
        ctx.stats.delay_us_total.fetch_add(d, Ordering::Relaxed);
    }
    Ok(())
}

/// Outbound: HTTP/1.1 downstream, HTTP/2 upstream (one h2 connection per downstream one).
pub(super) async fn h1_to_h2(ctx: &Ctx, down: BoxIo) -> io::Result<()> {
    let (dr, mut dw) = tokio::io::split(down);
    let mut dr = BufReader::with_capacity(16 * 1024, dr);
    let mut head = Vec::with_capacity(1024);
    let mut sender: Option<::h2::client::SendRequest<Bytes>> = None;
    let scheme = if ctx.connector.is_some() {
        "https"
    } else {
        "http"
    };
    loop {
        if !http1::read_head(&mut dr, &mut head).await? {
            return Ok(());
        }
        let req = http1::parse_request(&head)?;
        if req.expect_continue {
            dw.write_all(http1::CONTINUE).await?;
            dw.flush().await?;
        }
        let body = http1::read_body(&mut dr, req.body, usize::MAX).await?;
        delay(ctx, req.delay_us).await?;
        let h2req = to_h2_request(&head, scheme)?;
        if sender.is_none() {
            let (io, _) = connect(ctx, Default::default()).await?;
            let (s, conn) = ::h2::client::handshake(io).await.map_err(other)?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            sender = Some(s);
        }
        let Some(s) = sender.as_mut() else {
            unreachable!("connected above")
        };
        let mut ready = s.clone().ready().await.map_err(other)?;
        let (resp, mut send) = ready.send_request(h2req, body.is_empty()).map_err(other)?;
        if !body.is_empty() {
            send.send_data(Bytes::from(body), true).map_err(other)?;
        }
        let resp = resp.await.map_err(other)?;
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

type Upstream = (BufReader<ReadHalf<BoxIo>>, WriteHalf<BoxIo>);

/// Inbound: HTTP/2 downstream, HTTP/1.1 upstream from a keep-alive pool.
pub(super) async fn h2_to_h1(ctx: Arc<Ctx>, down: BoxIo) -> io::Result<()> {
    let mut conn = ::h2::server::handshake(down).await.map_err(other)?;
    let pool: Arc<Mutex<Vec<Upstream>>> = Arc::default();
    while let Some(next) = conn.accept().await {
        let (req, respond) = next.map_err(other)?;
        let (ctx, pool) = (ctx.clone(), pool.clone());
        tokio::spawn(async move {
            if stream(&ctx, &pool, req, respond).await.is_err() {
                ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    Ok(())
}

/// Reads a request stream's whole body, then holds it for the configured delay (or the one
/// its `x-smp-delay-us` header asks for): what both ways of forwarding do first.
async fn read_and_hold(
    ctx: &Ctx,
    req: http::Request<::h2::RecvStream>,
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
    delay(ctx, header_delay).await?;
    Ok((parts, body))
}

async fn stream(
    ctx: &Ctx,
    pool: &Mutex<Vec<Upstream>>,
    req: http::Request<::h2::RecvStream>,
    mut respond: ::h2::server::SendResponse<Bytes>,
) -> io::Result<()> {
    let (parts, body) = read_and_hold(ctx, req).await?;
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
    let (mut ur, mut uw) = match pooled {
        Some(u) => u,
        None => {
            let (r, w) = tokio::io::split(connect(ctx, Default::default()).await?.0);
            (BufReader::with_capacity(16 * 1024, r), w)
        }
    };
    uw.write_all(&head).await?;
    uw.write_all(&body).await?;
    uw.flush().await?;
    let mut rhead = Vec::with_capacity(1024);
    let resp = loop {
        if !http1::read_head(&mut ur, &mut rhead).await? {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let r = http1::parse_response(&rhead, parts.method.as_str())?;
        if !(100..200).contains(&r.status) {
            break r;
        }
    };
    let rbody = http1::read_body(&mut ur, resp.body, usize::MAX).await?;
    if resp.keep_alive {
        pool.lock().map_err(other)?.push((ur, uw));
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

/// Both sides HTTP/2 (h2c or gRPC apps): each downstream stream becomes a stream on one
/// upstream HTTP/2 connection per downstream connection (opened at the first stream), with
/// `te: trailers` kept and the response's trailers (gRPC's status) forwarded.
pub(super) async fn h2_to_h2(ctx: Arc<Ctx>, down: BoxIo) -> io::Result<()> {
    let mut conn = ::h2::server::handshake(down).await.map_err(other)?;
    let upstream: Arc<tokio::sync::Mutex<Option<::h2::client::SendRequest<Bytes>>>> =
        Arc::default();
    while let Some(next) = conn.accept().await {
        let (req, respond) = next.map_err(other)?;
        let (ctx, upstream) = (ctx.clone(), upstream.clone());
        tokio::spawn(async move {
            if relay(&ctx, &upstream, req, respond).await.is_err() {
                ctx.stats.errors.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    Ok(())
}

/// Headers an HTTP/2 hop forwards: no connection-specific ones, `te` only as `trailers`.
fn forwarded(name: &http::HeaderName, value: &http::HeaderValue) -> bool {
    if name == http::header::TE {
        return value.as_bytes().eq_ignore_ascii_case(b"trailers");
    }
    !hop_by_hop(name.as_str())
}

async fn relay(
    ctx: &Ctx,
    upstream: &tokio::sync::Mutex<Option<::h2::client::SendRequest<Bytes>>>,
    req: http::Request<::h2::RecvStream>,
    mut respond: ::h2::server::SendResponse<Bytes>,
) -> io::Result<()> {
    let (parts, body) = read_and_hold(ctx, req).await?;
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
        if forwarded(k, v) {
            b = b.header(k, v);
        }
    }
    let up_req = b.body(()).map_err(other)?;
    let sender = {
        let mut guard = upstream.lock().await;
        match guard.as_ref() {
            Some(s) => s.clone(),
            None => {
                let (io, _) = connect(ctx, Default::default()).await?;
                let (s, conn) = ::h2::client::handshake(io).await.map_err(other)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                *guard = Some(s.clone());
                s
            }
        }
    };
    let mut ready = sender.ready().await.map_err(other)?;
    let (resp, mut send) = ready.send_request(up_req, body.is_empty()).map_err(other)?;
    if !body.is_empty() {
        send.send_data(Bytes::from(body), true).map_err(other)?;
    }
    let resp = resp.await.map_err(other)?;
    let (rparts, mut rrecv) = resp.into_parts();
    let mut rb = http::Response::builder().status(rparts.status);
    for (k, v) in &rparts.headers {
        if forwarded(k, v) {
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
