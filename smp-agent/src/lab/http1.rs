//! Minimal HTTP/1.1 message framing for the ground-truth proxy and the server app: read a head,
//! classify the body (none, Content-Length, chunked, until close), copy a body through.
//! Heads are forwarded byte for byte; bodies are streamed, never buffered whole.

use std::{io, os::fd::AsRawFd as _, time::Duration};

use tokio::io::{
    unix::AsyncFd, AsyncBufRead, AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _,
};

/// Largest accepted message head.
pub const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 96;

/// How a message body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Response without length: the body ends when the connection closes.
    UntilClose,
}

/// The parts of a request head the lab needs.
#[derive(Debug, Clone)]
pub struct RequestHead {
    /// Request method.
    pub method: String,
    /// Request target.
    pub path: String,
    /// Body framing.
    pub body: Body,
    /// Whether the connection stays open after this exchange.
    pub keep_alive: bool,
    /// `x-smp-delay-us`, if present and numeric.
    pub delay_us: Option<u64>,
    /// `x-smp-service-us`, if present and numeric.
    pub service_us: Option<u64>,
    /// `x-smp-req-id` (the lab client's request id), if present and numeric.
    pub req_id: Option<u64>,
    /// `Expect: 100-continue`: the client waits for an interim response before the body.
    pub expect_continue: bool,
}

/// The parts of a response head the lab needs.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Body framing.
    pub body: Body,
    /// Whether the connection stays open after this exchange.
    pub keep_alive: bool,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Reads one message head (through the blank line) into `buf` (cleared first).
/// Returns `Ok(false)` on a clean EOF before the first byte.
pub async fn read_head<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<bool> {
    buf.clear();
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            if buf.is_empty() {
                return Ok(false);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let start = buf.len().saturating_sub(3);
        let old = buf.len();
        buf.extend_from_slice(avail);
        if let Some(pos) = buf[start..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = start + pos + 4;
            let used = end - old;
            buf.truncate(end);
            r.consume(used);
            return Ok(true);
        }
        let n = avail.len();
        r.consume(n);
        if buf.len() > MAX_HEAD {
            return Err(invalid("message head larger than 64 KiB"));
        }
    }
}

fn header_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

fn has_token(v: &[u8], token: &str) -> bool {
    std::str::from_utf8(v)
        .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        .unwrap_or(false)
}

struct Common {
    length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive_token: bool,
}

fn common(headers: &[httparse::Header<'_>]) -> Result<Common, io::Error> {
    let mut c = Common {
        length: None,
        chunked: false,
        close: false,
        keep_alive_token: false,
    };
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            c.length = Some(header_u64(h.value).ok_or_else(|| invalid("bad Content-Length"))?);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            c.chunked = has_token(h.value, "chunked");
        } else if h.name.eq_ignore_ascii_case("connection") {
            c.close |= has_token(h.value, "close");
            c.keep_alive_token |= has_token(h.value, "keep-alive");
        }
    }
    Ok(c)
}

/// Parses a request head read by [`read_head`].
pub fn parse_request(head: &[u8]) -> io::Result<RequestHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(invalid("incomplete request head")),
        Err(e) => return Err(invalid(format!("bad request head: {e}"))),
    }
    let c = common(req.headers)?;
    let find = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| header_u64(h.value))
    };
    let http10 = req.version == Some(0);
    Ok(RequestHead {
        method: req.method.unwrap_or("GET").to_string(),
        path: req.path.unwrap_or("/").to_string(),
        body: if c.chunked {
            Body::Chunked
        } else {
            match c.length {
                Some(0) | None => Body::None,
                Some(n) => Body::Length(n),
            }
        },
        keep_alive: !c.close && (!http10 || c.keep_alive_token),
        delay_us: find("x-smp-delay-us"),
        service_us: find("x-smp-service-us"),
        req_id: find(crate::lab::ends::REQUEST_ID_HEADER),
        expect_continue: req
            .headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case("expect") && has_token(h.value, "100-continue")),
    })
}

/// Parses a response head; `method` is the request's (HEAD responses have no body).
pub fn parse_response(head: &[u8], method: &str) -> io::Result<ResponseHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(invalid("incomplete response head")),
        Err(e) => return Err(invalid(format!("bad response head: {e}"))),
    }
    let c = common(resp.headers)?;
    let status = resp.code.unwrap_or(0);
    let http10 = resp.version == Some(0);
    let mut keep_alive = !c.close && (!http10 || c.keep_alive_token);
    let body = if method.eq_ignore_ascii_case("HEAD")
        || (100..200).contains(&status)
        || status == 204
        || status == 304
    {
        Body::None
    } else if c.chunked {
        Body::Chunked
    } else if let Some(n) = c.length {
        if n == 0 {
            Body::None
        } else {
            Body::Length(n)
        }
    } else {
        keep_alive = false;
        Body::UntilClose
    };
    Ok(ResponseHead {
        status,
        body,
        keep_alive,
    })
}

/// The interim response a server sends to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Returns `head` with `name: value` added before the blank line.
pub fn with_header(head: &[u8], name: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(head.len() + name.len() + value.len() + 4);
    out.extend_from_slice(&head[..head.len() - 2]);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

async fn copy_exact<R, W>(r: &mut R, w: &mut W, mut n: u64) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while n > 0 {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let take = avail.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        w.write_all(&avail[..take]).await?;
        r.consume(take);
        n -= take as u64;
    }
    Ok(())
}

async fn copy_line<R, W>(r: &mut R, w: &mut W, line: &mut Vec<u8>) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    line.clear();
    let n = r.read_until(b'\n', line).await?;
    if n == 0 || !line.ends_with(b"\n") {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if line.len() > 8192 {
        return Err(invalid("chunk line too long"));
    }
    w.write_all(line).await
}

/// Copies one body framed as `body` from `r` to `w` (framing bytes included, so the receiver
/// sees exactly what was sent).
pub async fn copy_body<R, W>(r: &mut R, w: &mut W, body: Body) -> io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match body {
        Body::None => Ok(()),
        Body::Length(n) => copy_exact(r, w, n).await,
        Body::UntilClose => loop {
            let avail = r.fill_buf().await?;
            if avail.is_empty() {
                return Ok(());
            }
            w.write_all(avail).await?;
            let n = avail.len();
            r.consume(n);
        },
        Body::Chunked => {
            let mut line = Vec::with_capacity(64);
            loop {
                copy_line(r, w, &mut line).await?;
                let text = std::str::from_utf8(&line).map_err(|_| invalid("bad chunk size"))?;
                let hex = text.split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(hex, 16).map_err(|_| invalid("bad chunk size"))?;
                if size == 0 {
                    // Trailers until the blank line.
                    loop {
                        copy_line(r, w, &mut line).await?;
                        if line == b"\r\n" || line == b"\n" {
                            return Ok(());
                        }
                    }
                }
                copy_exact(r, w, size).await?;
                copy_line(r, w, &mut line).await?;
            }
        }
    }
}

/// Reads (and discards) one body; returns its payload when small (for echo), else empty.
pub async fn read_body<R>(r: &mut R, body: Body, keep: usize) -> io::Result<Vec<u8>>
where
    R: AsyncBufRead + Unpin,
{
    let mut raw = Vec::new();
    copy_body(r, &mut raw, body).await?;
    if body == Body::Chunked {
        // Decode: payload is what the chunks carry.
        let mut out = Vec::new();
        let mut rest = &raw[..];
        while let Some(pos) = rest.windows(2).position(|w| w == b"\r\n") {
            let size = std::str::from_utf8(&rest[..pos])
                .ok()
                .and_then(|s| usize::from_str_radix(s.split(';').next()?.trim(), 16).ok())
                .unwrap_or(0);
            rest = &rest[pos + 2..];
            if size == 0 || rest.len() < size {
                break;
            }
            out.extend_from_slice(&rest[..size]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
        raw = out;
    }
    if raw.len() > keep {
        raw.clear();
    }
    Ok(raw)
}

/// Sleeps precisely (microseconds, via a timerfd) without burning CPU: tokio's own timer
/// rounds up to whole milliseconds, which would blur the ground truth.
pub async fn precise_sleep(d: Duration) -> io::Result<()> {
    if d.is_zero() {
        return Ok(());
    }
    // SAFETY: plain syscall; the fd is owned below.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor that nothing else owns.
    let owned = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: d.as_secs() as libc::time_t,
            tv_nsec: libc::c_long::from(d.subsec_nanos() as i32),
        },
    };
    // SAFETY: valid fd and pointers to live stack values.
    if unsafe { libc::timerfd_settime(owned.as_raw_fd(), 0, &spec, std::ptr::null_mut()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `owned` is a valid open fd owned by the AsyncFd for its whole life.
    let afd = unsafe { AsyncFd::register(owned) }?;
    loop {
        let mut guard = afd.readable().await?;
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer from a valid fd.
        let n = unsafe { libc::read(afd.as_raw_fd(), buf.as_mut_ptr().cast(), 8) };
        if n == 8 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() == io::ErrorKind::WouldBlock {
            guard.clear_ready();
            continue;
        }
        return Err(err);
    }
}

/// How long before a [`hold_until`] deadline the timer hands over to a spin: more than this
/// VM's timer wake-up latency (timer, epoll, the runtime, the timerfd read: a hold without
/// the spin ended 35–55 µs after its deadline at p50 on the development VM, and with 4
/// workers on 2 vCPUs an 80 µs spin still left p10 of the holds 60–76 µs late).
const HOLD_SPIN: Duration = Duration::from_micros(200);

/// Holds until `start + d`: a [`precise_sleep`] for all but the last [`HOLD_SPIN`], then a
/// yielding spin to the deadline, so the hold ends at the deadline instead of one timer wake-up
/// after it. The spin keeps the runtime thread for at most [`HOLD_SPIN`] per call.
pub async fn hold_until(start: std::time::Instant, d: Duration) -> io::Result<()> {
    let deadline = start + d;
    let remaining = deadline.saturating_duration_since(std::time::Instant::now());
    if remaining > HOLD_SPIN {
        precise_sleep(remaining - HOLD_SPIN).await?;
    }
    while std::time::Instant::now() < deadline {
        // Yield, not spin in place: with more workers than CPUs, another worker whose
        // deadline came first may be waiting for this CPU.
        std::thread::yield_now();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::io::BufReader;

    use super::*;

    #[tokio::test]
    async fn reads_heads_and_chunked_bodies() {
        let wire = b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.1\r\nConnection: close\r\n\r\n";
        let mut r = BufReader::with_capacity(7, &wire[..]);
        let mut head = Vec::new();
        assert!(read_head(&mut r, &mut head).await.unwrap());
        let req = parse_request(&head).unwrap();
        assert_eq!(req.body, Body::Chunked);
        assert!(req.keep_alive);
        let mut out = Vec::new();
        copy_body(&mut r, &mut out, req.body).await.unwrap();
        assert_eq!(out, b"3\r\nabc\r\n2;e=1\r\nde\r\n0\r\nT: 1\r\n\r\n");
        assert!(read_head(&mut r, &mut head).await.unwrap());
        let req = parse_request(&head).unwrap();
        assert!(!req.keep_alive);
        assert_eq!(req.body, Body::None);
        assert!(!read_head(&mut r, &mut head).await.unwrap());
    }

    #[tokio::test]
    async fn decodes_chunked_for_echo() {
        let wire = b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let mut r = BufReader::new(&wire[..]);
        assert_eq!(
            read_body(&mut r, Body::Chunked, 100).await.unwrap(),
            b"abcde"
        );
    }

    #[test]
    fn response_framing() {
        let h = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Smp-Delay-Us: 3\r\n\r\n";
        let r = parse_response(h, "GET").unwrap();
        assert_eq!(r.body, Body::Length(5));
        assert!(r.keep_alive);
        assert_eq!(parse_response(h, "HEAD").unwrap().body, Body::None);
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", "GET").unwrap();
        assert_eq!(r.body, Body::UntilClose);
        assert!(!r.keep_alive);
        let req = parse_request(b"GET / HTTP/1.1\r\nx-smp-delay-us: 250\r\n\r\n").unwrap();
        assert_eq!(req.delay_us, Some(250));
        assert!(!req.expect_continue);
        let req = parse_request(b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").unwrap();
        assert!(req.expect_continue);
        assert_eq!(parse_response(CONTINUE, "POST").unwrap().status, 100);
        assert_eq!(
            with_header(b"HTTP/1.1 200 OK\r\n\r\n", "x-a", "b"),
            b"HTTP/1.1 200 OK\r\nx-a: b\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn hold_ends_at_its_deadline_not_before() {
        let t = std::time::Instant::now();
        hold_until(t, Duration::from_micros(300)).await.unwrap();
        let e = t.elapsed();
        assert!(e >= Duration::from_micros(300), "{e:?}");
        // A start already past the deadline returns at once.
        let late = std::time::Instant::now();
        hold_until(t, Duration::from_micros(1)).await.unwrap();
        assert!(late.elapsed() < Duration::from_millis(5));
    }

    #[tokio::test]
    async fn precise_sleep_is_precise() {
        let t = std::time::Instant::now();
        precise_sleep(Duration::from_micros(1500)).await.unwrap();
        let e = t.elapsed();
        assert!(e >= Duration::from_micros(1500), "{e:?}");
    }
}
