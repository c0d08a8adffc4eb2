//! HTTP/1.1 keep-alive: a hand-rolled client fast path on the raw stream.
//!
//! Why not hyper's client: a load generator must outrun the system it measures, and wrk (the
//! reference) spends per request one `write` of pre-built bytes and one or two `read`s parsed
//! in place. This module does exactly that: the request bytes are built once per target
//! ([`super::Target::h1_request`]); the response head is parsed in place with `httparse` from
//! a buffer reused for the whole connection; bodies (content-length, chunked, or
//! until-close) are skipped without copying. No allocation happens per request. hyper's
//! client would add, per request, a hop through a channel to its connection task and a
//! `HeaderMap` per response, and it hides *why* a request failed (we need connect / reset /
//! protocol / timeout counts). With this path we measure at parity with wrk's CPU per request
//! and at or above its throughput (docs/benchmarks.md, "Load generator"); a hyper-based client
//! was not benchmarked separately. Pipelining is not used (wrk does not either), so latency
//! stays per request.

use std::{io, sync::Arc};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    time::Instant,
};

use super::{
    results::{ErrorKind, Recorder},
    stopped,
    target::Stream,
    Ctx, Tally, Walk, WorkerOut,
};

/// Response heads larger than this are a protocol error.
const MAX_HEAD: usize = 64 * 1024;
/// Initial read buffer per connection.
const BUF: usize = 16 * 1024;
/// Closed loop: pause after a failed connect so a dead target does not spin a core.
const CONNECT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(10);

/// One keep-alive connection and its read buffer.
pub(crate) struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    /// Unconsumed data is `buf[start..end]`.
    start: usize,
    end: usize,
    /// HTTP bytes read since the last [`Conn::take_received`].
    received: u64,
}

/// A parsed response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    pub status: u16,
    pub body: BodyLen,
    /// The connection cannot be reused after this response.
    pub close: bool,
}

/// How the body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyLen {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

fn io_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::InvalidData => ErrorKind::Protocol,
        io::ErrorKind::TimedOut => ErrorKind::Timeout,
        _ => ErrorKind::Reset,
    }
}

/// Parses a response head at the start of `buf`: `Ok(None)` if incomplete, else the head and
/// its length.
pub(crate) fn parse_head(buf: &[u8], head_request: bool) -> Result<Option<(Head, usize)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = resp.code.ok_or(())?;
    let http10 = resp.version == Some(0);
    let mut close = http10;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| ())?;
            let v: u64 = v.trim().parse().map_err(|_| ())?;
            if length.is_some_and(|l| l != v) {
                return Err(());
            }
            length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The final coding decides; anything else ending in chunked is chunked.
            chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in h.value.split(|b| *b == b',') {
                let t = token.trim_ascii();
                if t.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") && http10 {
                    close = false;
                }
            }
        }
    }
    let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        BodyLen::None
    } else if chunked {
        BodyLen::Chunked
    } else if let Some(l) = length {
        BodyLen::Length(l)
    } else {
        close = true;
        BodyLen::UntilClose
    };
    Ok(Some((
        Head {
            status,
            body,
            close,
        },
        n,
    )))
}

impl Conn {
    pub(crate) fn new(stream: Stream) -> Self {
        Self {
            stream,
            buf: vec![0; BUF],
            start: 0,
            end: 0,
            received: 0,
        }
    }

    fn take_received(&mut self) -> u64 {
        std::mem::take(&mut self.received)
    }

    /// Reads more bytes; `Ok(false)` on EOF.
    async fn fill(&mut self) -> Result<bool, ErrorKind> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else if self.buf.len() < MAX_HEAD {
                self.buf.resize(self.buf.len() * 2, 0);
            } else {
                return Err(ErrorKind::Protocol);
            }
        }
        let n = self
            .stream
            .read(&mut self.buf[self.end..])
            .await
            .map_err(|e| io_kind(&e))?;
        self.end += n;
        self.received += n as u64;
        Ok(n > 0)
    }

    /// Discards `n` body bytes.
    async fn skip(&mut self, mut n: u64) -> Result<(), ErrorKind> {
        loop {
            let avail = (self.end - self.start) as u64;
            if avail >= n {
                self.start += n as usize;
                return Ok(());
            }
            n -= avail;
            self.start = self.end;
            if !self.fill().await? {
                return Err(ErrorKind::Reset);
            }
        }
    }

    /// Returns the next CRLF-terminated line's length (excluding CRLF), reading as needed.
    async fn line(&mut self) -> Result<usize, ErrorKind> {
        let mut searched = 0;
        loop {
            let data = &self.buf[self.start..self.end];
            if let Some(i) = data[searched..].windows(2).position(|w| w == b"\r\n") {
                return Ok(searched + i);
            }
            searched = data.len().saturating_sub(1);
            let before = self.start;
            if !self.fill().await? {
                return Err(ErrorKind::Reset);
            }
            // `fill` may have moved the data to the front of the buffer.
            if self.start != before {
                searched = 0;
            }
        }
    }

    async fn skip_chunked(&mut self) -> Result<(), ErrorKind> {
        loop {
            let len = self.line().await?;
            let line = &self.buf[self.start..self.start + len];
            let hex = line
                .split(|b| *b == b';')
                .next()
                .unwrap_or_default()
                .trim_ascii();
            let size = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| u64::from_str_radix(h, 16).ok())
                .ok_or(ErrorKind::Protocol)?;
            self.start += len + 2;
            if size == 0 {
                // Trailers, then an empty line.
                loop {
                    let len = self.line().await?;
                    self.start += len + 2;
                    if len == 0 {
                        return Ok(());
                    }
                }
            }
            self.skip(size).await?;
            let len = self.line().await?;
            if len != 0 {
                return Err(ErrorKind::Protocol);
            }
            self.start += 2;
        }
    }

    async fn read_until_close(&mut self) -> Result<(), ErrorKind> {
        loop {
            self.start = self.end;
            if !self.fill().await? {
                return Ok(());
            }
        }
    }

    /// Sends one request and reads its response. Returns the status and whether the
    /// connection must be closed afterwards.
    pub(crate) async fn exchange(
        &mut self,
        request: &[u8],
        head_request: bool,
    ) -> Result<(u16, bool), ErrorKind> {
        if let Err(e) = self.stream.write_all(request).await {
            return Err(io_kind(&e));
        }
        if let Stream::Tls(_) = self.stream {
            self.stream.flush().await.map_err(|e| io_kind(&e))?;
        }
        loop {
            let head = loop {
                match parse_head(&self.buf[self.start..self.end], head_request) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {
                        if !self.fill().await? {
                            return Err(ErrorKind::Reset);
                        }
                    }
                    Err(()) => return Err(ErrorKind::Protocol),
                }
            };
            let (head, n) = head;
            self.start += n;
            if (100..200).contains(&head.status) && head.status != 101 {
                continue; // 100 Continue and friends: the real response follows.
            }
            match head.body {
                BodyLen::None => {}
                BodyLen::Length(l) => self.skip(l).await?,
                BodyLen::Chunked => self.skip_chunked().await?,
                BodyLen::UntilClose => self.read_until_close().await?,
            }
            return Ok((head.status, head.close || head.status == 101));
        }
    }
}

/// One load worker: walks its share of the schedule (or loops as fast as it can), keeping one
/// keep-alive connection per endpoint, and records into its own [`Recorder`].
pub(crate) async fn worker(ctx: Arc<Ctx>, conn_index: u64) -> WorkerOut {
    let mut rec = Recorder::new();
    let mut last_response = None;
    let mut tally = Tally::default();
    let mut conns: Vec<Option<Conn>> = ctx.endpoints.iter().map(|_| None).collect();
    let mut walk = Walk::new(&ctx, conn_index);
    let mut stop = ctx.control.subscribe();
    let closed_loop = ctx.schedule.is_none();
    let n_targets = ctx.targets.len() as u64;
    while let Some(next) = walk.next(&ctx, &mut stop, &mut rec).await {
        let target = &ctx.targets[(next.seq % n_targets) as usize];
        let slot = &mut conns[target.endpoint];
        let exchange = async {
            if slot.is_none() {
                let ep = &ctx.endpoints[target.endpoint];
                match ep.connect(&ctx.spec, ctx.tls.as_ref()).await {
                    Ok(s) => *slot = Some(Conn::new(s)),
                    Err(e) => {
                        tracing::debug!(endpoint = %ep.url, error = %e.0, "connect failed");
                        return Err(ErrorKind::Connect);
                    }
                }
            }
            let c = slot.as_mut().expect("connected above");
            c.exchange(&target.h1_request, target.head).await
        };
        let outcome = tokio::select! {
            biased;
            r = tokio::time::timeout(ctx.spec.timeout, exchange) => r,
            () = stopped(&mut stop) => break,
        };
        let received = slot.as_mut().map_or(0, Conn::take_received);
        let result = outcome.unwrap_or(Err(ErrorKind::Timeout));
        let done = Instant::now();
        match result {
            Ok((status, close)) => {
                if next.measured {
                    rec.response(status, done - next.clock_start);
                    rec.bytes_sent += target.h1_request.len() as u64;
                    rec.bytes_received += received;
                    last_response = Some(done);
                    tally.bump(&ctx, false);
                }
                if close {
                    *slot = None;
                }
            }
            Err(kind) => {
                // The connection state is unknown after any error: start a new one.
                *slot = None;
                if next.measured {
                    rec.error(kind);
                    rec.bytes_received += received;
                    tally.bump(&ctx, true);
                }
                if kind == ErrorKind::Connect && closed_loop {
                    tokio::time::sleep(CONNECT_BACKOFF).await;
                }
            }
        }
    }
    tally.flush(&ctx);
    WorkerOut { rec, last_response }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    #[test]
    fn heads() {
        let h = |s: &str| parse_head(s.as_bytes(), false);
        let (head, n) = h("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(n, 38);
        assert_eq!(
            head,
            Head {
                status: 200,
                body: BodyLen::Length(5),
                close: false
            }
        );
        let (head, _) =
            h("HTTP/1.1 500 x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(head.body, BodyLen::Chunked);
        assert!(head.close);
        let (head, _) = h("HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.body, BodyLen::UntilClose);
        assert!(head.close);
        let (head, _) = h("HTTP/1.1 204 No Content\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.body, BodyLen::None);
        assert!(!head.close);
        assert_eq!(h("HTTP/1.1 200 OK\r\nContent-Le"), Ok(None));
        assert_eq!(h("garbage\r\n\r\n"), Err(()));
        assert_eq!(h("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"), Err(()));
        assert_eq!(
            h("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            Err(())
        );
        let (head, _) = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(head.body, BodyLen::None);
    }

    /// Feeds `response` in small pieces to a client connection and returns what it read.
    async fn exchange_with(response: &'static [u8]) -> (Result<(u16, bool), ErrorKind>, Vec<u8>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0; 1024];
            let n = s.read(&mut req).await.unwrap();
            for chunk in response.chunks(3) {
                s.write_all(chunk).await.unwrap();
                s.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .unwrap();
            req.truncate(n);
            req
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut c = Conn::new(Stream::Plain(stream));
        let r = c
            .exchange(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", false)
            .await;
        // The connection is reusable only if the body was consumed exactly.
        if let Ok((_, false)) = r {
            assert_eq!(c.exchange(b"", false).await, Ok((204, false)));
        }
        (r, server.await.unwrap())
    }

    #[tokio::test]
    async fn reads_bodies_exactly() {
        let (r, req) =
            exchange_with(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world").await;
        assert_eq!(r, Ok((200, false)));
        assert_eq!(req, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        let (r, _) = exchange_with(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n",
        )
        .await;
        assert_eq!(r, Ok((503, false)));
    }

    #[tokio::test]
    async fn bad_chunk_is_a_protocol_error_and_eof_a_reset() {
        let (r, _) =
            exchange_with(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").await;
        assert_eq!(r, Err(ErrorKind::Protocol));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut b = [0; 64];
            let _ = s.read(&mut b).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort")
                .await;
        });
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut c = Conn::new(Stream::Plain(stream));
        assert_eq!(
            c.exchange(b"GET / HTTP/1.1\r\n\r\n", false).await,
            Err(ErrorKind::Reset)
        );
    }
}
