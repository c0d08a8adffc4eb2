//! The ground-truth proxy's own clock per HTTP/2 stream. Many requests share one HTTP/2
//! connection, and the `h2` crate reads and writes it from its own task: no request's code runs
//! the syscall that carries it. [`FrameTap`] sits between `h2` and the connection (above TLS,
//! where the frames are plaintext), scans the frame headers of every read (server) or write
//! (client), and stamps each stream with the syscall that carried the HEADERS frame opening it:
//! when that read or write was issued and when it returned ([`StreamClock`]). TLS mostly does
//! its socket syscall inside the tapped call (tokio-rustls writes the records of a
//! `poll_write` before returning, unless the socket would block; a read returns what the
//! socket read in it, unless rustls kept plaintext from an earlier read), so the syscall
//! mostly lies between the two stamps; when it does not, the pairing check counts the
//! request's stamps as `outside` (`lab::truth`).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Instant,
};

use smp_common::h2::{FrameHeader, PREFACE_LEN, TYPE_HEADERS};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::Bracket;

/// Streams stamped and not yet taken, at most: a stream whose request failed is never taken;
/// past this the oldest stamps are forgotten (all of them: they are that old).
const CLOCK_CAP: usize = 65_536;

/// Per connection: stream id → the syscall that carried the HEADERS frame opening it.
#[derive(Default)]
pub(super) struct StreamClock {
    stamps: Mutex<HashMap<u32, Bracket>>,
}

impl StreamClock {
    fn record(&self, stream: u32, at: Bracket) {
        if let Ok(mut m) = self.stamps.lock() {
            if m.len() >= CLOCK_CAP {
                m.clear();
            }
            m.insert(stream, at);
        }
    }

    /// The stamp of `stream`, forgotten once taken.
    pub(super) fn take(&self, stream: u32) -> Option<Bracket> {
        self.stamps.lock().ok()?.remove(&stream)
    }
}

/// Follows the frame headers of one direction of an HTTP/2 connection, across calls that
/// cut frames anywhere: the client's preface first, then header, payload, header, …
struct FrameScan {
    /// Preface bytes still to pass.
    preface: usize,
    head: [u8; 9],
    have: usize,
    /// Payload bytes of the current frame still to pass.
    payload: usize,
    /// Highest stream opened so far: a HEADERS frame on a higher odd stream opens one
    /// (trailers and responses do not).
    max_stream: u32,
}

impl FrameScan {
    fn new() -> FrameScan {
        FrameScan {
            preface: PREFACE_LEN as usize,
            head: [0; 9],
            have: 0,
            payload: 0,
            max_stream: 0,
        }
    }

    /// Passes `b`; calls `opened` with each stream a HEADERS frame whose header ends in `b`
    /// opens.
    fn feed(&mut self, mut b: &[u8], mut opened: impl FnMut(u32)) {
        while !b.is_empty() {
            let pass = if self.preface > 0 {
                &mut self.preface
            } else if self.payload > 0 {
                &mut self.payload
            } else {
                let n = (9 - self.have).min(b.len());
                self.head[self.have..self.have + n].copy_from_slice(&b[..n]);
                self.have += n;
                b = &b[n..];
                if self.have == 9 {
                    self.have = 0;
                    let h = FrameHeader::parse(&self.head);
                    self.payload = h.len as usize;
                    if h.kind == TYPE_HEADERS && h.stream & 1 == 1 && h.stream > self.max_stream {
                        self.max_stream = h.stream;
                        opened(h.stream);
                    }
                }
                continue;
            };
            let n = (*pass).min(b.len());
            *pass -= n;
            b = &b[n..];
        }
    }
}

/// Which direction a [`FrameTap`] stamps: the requests a server reads, or those a client
/// writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Tapped {
    Reads,
    Writes,
}

/// An HTTP/2 connection's I/O that stamps, in its [`StreamClock`], each stream opened in the
/// tapped direction.
pub(super) struct FrameTap<T> {
    inner: T,
    tapped: Tapped,
    scan: FrameScan,
    clock: Arc<StreamClock>,
}

impl<T> FrameTap<T> {
    pub(super) fn new(inner: T, tapped: Tapped, clock: Arc<StreamClock>) -> FrameTap<T> {
        FrameTap {
            inner,
            tapped,
            scan: FrameScan::new(),
            clock,
        }
    }

    fn stamp(&mut self, bytes: &[u8], at: Bracket) {
        let clock = &self.clock;
        self.scan.feed(bytes, |stream| clock.record(stream, at));
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FrameTap<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let issued = Instant::now();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if self.tapped == Tapped::Reads && matches!(r, Poll::Ready(Ok(()))) {
            let returned = Instant::now();
            self.stamp(&buf.filled()[before..], (issued, returned));
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FrameTap<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let issued = Instant::now();
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let (Tapped::Writes, Poll::Ready(Ok(n))) = (self.tapped, &r) {
            let returned = Instant::now();
            let n = (*n).min(data.len());
            self.stamp(&data[..n], (issued, returned));
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: usize) -> Vec<u8> {
        let mut f = vec![
            (payload >> 16) as u8,
            (payload >> 8) as u8,
            payload as u8,
            kind,
            flags,
        ];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend(std::iter::repeat_n(0xAB, payload));
        f
    }

    /// A client's bytes: preface, SETTINGS, then per stream HEADERS + DATA, trailers on 3.
    fn client_bytes() -> Vec<u8> {
        let mut b = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        b.extend(frame(4, 0, 0, 12));
        for s in [1u32, 3, 5] {
            b.extend(frame(TYPE_HEADERS, 4, s, 30));
            b.extend(frame(0, 0, s, 100));
        }
        b.extend(frame(TYPE_HEADERS, 5, 3, 10));
        b.extend(frame(8, 0, 0, 4));
        b.extend(frame(TYPE_HEADERS, 4, 7, 1));
        b
    }

    #[test]
    fn every_stream_opened_is_found_once_wherever_the_bytes_are_cut() {
        let bytes = client_bytes();
        for cut in 1..=bytes.len() {
            let mut scan = FrameScan::new();
            let mut opened = Vec::new();
            for chunk in bytes.chunks(cut) {
                scan.feed(chunk, |s| opened.push(s));
            }
            assert_eq!(opened, [1, 3, 5, 7], "chunks of {cut}");
        }
    }

    #[test]
    fn a_stream_is_stamped_with_the_call_its_header_ends_in() {
        let bytes = client_bytes();
        // Stream 3's HEADERS header starts at this offset; cut inside it.
        let at3 = 24 + (9 + 12) + (9 + 30) + (9 + 100);
        let clock = Arc::new(StreamClock::default());
        let mut tap = FrameTap::new((), Tapped::Writes, clock.clone());
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_micros(10);
        tap.stamp(&bytes[..at3 + 4], (t0, t0));
        tap.stamp(&bytes[at3 + 4..], (t1, t1));
        assert_eq!(clock.take(1), Some((t0, t0)));
        assert_eq!(clock.take(3), Some((t1, t1)));
        assert_eq!(clock.take(3), None, "taken once");
        assert_eq!(clock.take(5), Some((t1, t1)));
        assert_eq!(clock.take(9), None);
    }
}
