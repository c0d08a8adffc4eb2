//! HTTP/2 (h2c prior knowledge, or TLS with ALPN `h2`) on the `h2` crate.
//!
//! Each worker holds one HTTP/2 connection per endpoint. In the open loop, requests are
//! multiplexed: each is sent at its scheduled time as a new stream and its response is awaited
//! in a task of its own, so a slow response does not delay the next send (the server's stream
//! limit does, and that wait is charged to the request from its intended time). In the closed
//! loop each worker keeps one stream in flight, like the HTTP/1.1 worker.
//!
//! Bytes: `sent` counts request bodies and `received` response DATA payloads (HPACK-compressed
//! headers are not counted).
//!
//! gRPC ([`super::grpc`]) runs on this transport: the response's trailers are awaited too and
//! its `grpc-status` recorded next to the HTTP status.

use std::{future::poll_fn, sync::Arc, time::Duration};

use bytes::Bytes;
use h2::client::{ResponseFuture, SendRequest};
use tokio::{task::JoinSet, time::Instant};

use super::{
    results::{ErrorKind, Recorder},
    stopped, Ctx, Tally, Target, Walk, WorkerOut,
};

/// Closed loop: pause after a failed connect so a dead target does not spin a core.
const CONNECT_BACKOFF: Duration = Duration::from_millis(10);

fn kind(e: &h2::Error) -> ErrorKind {
    if e.is_io() || e.is_go_away() {
        ErrorKind::Reset
    } else {
        ErrorKind::Protocol
    }
}

/// Whether the connection is unusable after this error.
fn fatal(e: &h2::Error) -> bool {
    e.is_io() || e.is_go_away() || !e.is_reset()
}

/// A finished request, handed from its task back to the worker.
struct Done {
    endpoint: usize,
    measured: bool,
    clock_start: Instant,
    sent: u64,
    result: Result<Answer, (ErrorKind, bool)>,
}

/// A complete response: HTTP status, body bytes, and the `grpc-status` of a gRPC run.
struct Answer {
    status: u16,
    received: u64,
    grpc: Option<u32>,
}

/// Opens one HTTP/2 connection (TCP, TLS, HTTP/2 handshake) and spawns its driver.
async fn connect(ctx: &Ctx, endpoint: usize) -> Result<SendRequest<Bytes>, ErrorKind> {
    let ep = &ctx.endpoints[endpoint];
    let stream = ep.connect(&ctx.spec, ctx.tls.as_ref()).await.map_err(|e| {
        tracing::debug!(endpoint = %ep.url, error = %e.0, "connect failed");
        ErrorKind::Connect
    })?;
    let handshake = h2::client::Builder::new()
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake::<_, Bytes>(stream);
    let (send, conn) = match tokio::time::timeout(ctx.spec.connect_timeout, handshake).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::debug!(endpoint = %ep.url, error = %e, "HTTP/2 handshake failed");
            return Err(ErrorKind::Connect);
        }
        Err(_) => return Err(ErrorKind::Connect),
    };
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "HTTP/2 connection ended");
        }
    });
    Ok(send)
}

/// Checks before the run that the endpoint speaks HTTP/2: handshake, then one PING answered
/// by a PONG (no request is sent, so servers count nothing). Catches an HTTP/1-only server
/// behind `http://` (no ALPN to tell) with a clear error instead of a run full of errors.
pub(crate) async fn preflight(
    ep: &super::Endpoint,
    spec: &super::LoadSpec,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Result<(), super::LoadError> {
    let fail = |reason: String| super::LoadError::Connect {
        url: ep.url.clone(),
        reason,
    };
    let probe = async {
        let stream = ep.connect(spec, tls).await.map_err(|e| e.0)?;
        let (_send, mut conn) = h2::client::Builder::new()
            .handshake::<_, Bytes>(stream)
            .await
            .map_err(|e| format!("HTTP/2 handshake failed: {e}"))?;
        let mut ping = conn
            .ping_pong()
            .ok_or_else(|| "HTTP/2 ping unavailable".to_string())?;
        let driver = tokio::spawn(conn);
        let pong = ping.ping(h2::Ping::opaque()).await;
        driver.abort();
        pong.map(|_| ())
            .map_err(|e| format!("the server does not speak HTTP/2 (prior knowledge): {e}"))
    };
    match tokio::time::timeout(spec.connect_timeout, probe).await {
        Ok(r) => r.map_err(fail),
        Err(_) => Err(fail("no HTTP/2 answer within the connect timeout".into())),
    }
}

/// Waits for stream capacity and sends one request (headers, then body if any).
async fn send(
    send: &mut SendRequest<Bytes>,
    target: &Target,
) -> Result<ResponseFuture, (ErrorKind, bool)> {
    poll_fn(|cx| send.poll_ready(cx))
        .await
        .map_err(|e| (kind(&e), true))?;
    let mut req = http::Request::new(());
    *req.method_mut() = target.method.clone();
    *req.uri_mut() = target.uri.clone();
    *req.headers_mut() = target.h2_headers.clone();
    let (resp, mut stream) = send
        .send_request(req, target.body.is_empty())
        .map_err(|e| (kind(&e), fatal(&e)))?;
    if !target.body.is_empty() {
        stream
            .send_data(target.body.clone(), true)
            .map_err(|e| (kind(&e), fatal(&e)))?;
    }
    Ok(resp)
}

/// Awaits the response and drains its body (and, for gRPC, its trailers).
async fn receive(resp: ResponseFuture, grpc: bool) -> Result<Answer, (ErrorKind, bool)> {
    let resp = resp.await.map_err(|e| (kind(&e), fatal(&e)))?;
    let status = resp.status().as_u16();
    let (parts, mut body) = resp.into_parts();
    let mut received = 0u64;
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| (kind(&e), fatal(&e)))?;
        received += chunk.len() as u64;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let grpc = if grpc {
        let trailers = body.trailers().await.map_err(|e| (kind(&e), fatal(&e)))?;
        // No grpc-status at all: not a gRPC answer (the stream stays usable).
        let code = super::grpc::status(&parts.headers, trailers.as_ref())
            .ok_or((ErrorKind::Protocol, false))?;
        Some(code)
    } else {
        None
    };
    Ok(Answer {
        status,
        received,
        grpc,
    })
}

fn record(
    ctx: &Ctx,
    tally: &mut Tally,
    d: Done,
    rec: &mut Recorder,
    last: &mut Option<Instant>,
    conns: &mut [Option<SendRequest<Bytes>>],
) {
    let now = Instant::now();
    match d.result {
        Ok(a) => {
            if d.measured {
                rec.response(a.status, now - d.clock_start);
                if let Some(code) = a.grpc {
                    rec.grpc_status(code);
                }
                rec.bytes_sent += d.sent;
                rec.bytes_received += a.received;
                *last = Some(now);
                tally.bump(ctx, a.grpc.is_some_and(|c| c != 0));
            }
        }
        Err((kind, dead)) => {
            if dead {
                conns[d.endpoint] = None;
            }
            if d.measured {
                rec.error(kind);
                tally.bump(ctx, true);
            }
        }
    }
}

/// One load worker over HTTP/2.
pub(crate) async fn worker(ctx: Arc<Ctx>, conn_index: u64) -> WorkerOut {
    let mut rec = Recorder::new();
    let mut last_response = None;
    let mut tally = Tally::default();
    let mut conns: Vec<Option<SendRequest<Bytes>>> = ctx.endpoints.iter().map(|_| None).collect();
    let mut walk = Walk::new(&ctx, conn_index);
    let mut stop = ctx.control.subscribe();
    let closed_loop = ctx.schedule.is_none();
    let n_targets = ctx.targets.len() as u64;
    let mut inflight: JoinSet<Done> = JoinSet::new();
    let timeout = ctx.spec.timeout;
    let grpc = ctx.spec.protocol == super::Protocol::Grpc;
    loop {
        let next = tokio::select! {
            biased;
            Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                if let Ok(done) = done {
                    record(&ctx, &mut tally, done, &mut rec, &mut last_response, &mut conns);
                }
                continue;
            }
            next = walk.next(&ctx, &mut stop, &mut rec) => next,
        };
        let Some(next) = next else { break };
        let t = (next.seq % n_targets) as usize;
        let target = &ctx.targets[t];
        let endpoint = target.endpoint;
        let sent = target.body.len() as u64;
        // Connect if needed, wait for a stream, send: all within the request timeout.
        let start = async {
            if conns[endpoint].is_none() {
                conns[endpoint] = Some(connect(&ctx, endpoint).await.map_err(|k| (k, true))?);
            }
            let s = conns[endpoint].as_mut().expect("connected above");
            send(s, target).await
        };
        let started = tokio::select! {
            r = tokio::time::timeout(timeout, start) => r.unwrap_or(Err((ErrorKind::Timeout, true))),
            () = stopped(&mut stop) => break,
        };
        let resp = match started {
            Ok(resp) => resp,
            Err((kind, dead)) => {
                let done = Done {
                    endpoint,
                    measured: next.measured,
                    clock_start: next.clock_start,
                    sent,
                    result: Err((kind, dead)),
                };
                record(
                    &ctx,
                    &mut tally,
                    done,
                    &mut rec,
                    &mut last_response,
                    &mut conns,
                );
                if kind == ErrorKind::Connect && closed_loop {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
                continue;
            }
        };
        let finish = async move {
            let result = match tokio::time::timeout(timeout, receive(resp, grpc)).await {
                Ok(r) => r,
                // The stream is reset when `resp` is dropped; the connection stays usable.
                Err(_) => Err((ErrorKind::Timeout, false)),
            };
            Done {
                endpoint,
                measured: next.measured,
                clock_start: next.clock_start,
                sent,
                result,
            }
        };
        if closed_loop {
            let done = tokio::select! {
                d = finish => d,
                () = stopped(&mut stop) => break,
            };
            record(
                &ctx,
                &mut tally,
                done,
                &mut rec,
                &mut last_response,
                &mut conns,
            );
        } else {
            inflight.spawn(finish);
        }
    }
    // Collect what is still in flight (each bounded by the timeout) unless told to stop.
    while !ctx.control.is_stopped() {
        let done = tokio::select! {
            d = inflight.join_next() => d,
            () = stopped(&mut stop) => break,
        };
        match done {
            Some(Ok(done)) => record(
                &ctx,
                &mut tally,
                done,
                &mut rec,
                &mut last_response,
                &mut conns,
            ),
            Some(Err(_)) => {}
            None => break,
        }
    }
    tally.flush(&ctx);
    WorkerOut { rec, last_response }
}
