//! What a TLS client's first flight says of the protocol inside: the ALPN offer of its
//! ClientHello, found by walking the hello's length fields four bytes at a time (a bounded
//! loop the verifier can follow; no byte of it leaves the kernel).
//!
//! A client that offers `h2` and no HTTP/1.x speaks HTTP/2 inside the connection (Envoy's
//! HTTP/2 upstreams, ztunnel's HBONE, Istio's sidecars as `istio-h2`): its streams interleave,
//! and the connection's records say nothing of where one request or response ends
//! ([`crate::hop::SOCK_MUX`]). A client offering both lets the server choose, in TLS 1.3 out
//! of sight: nothing is concluded; nor from no ALPN at all (Linkerd's proxies between them).
//! Such connections are told by their behaviour instead ([`crate::pairing::overlap_shows_mux`]).

/// Steps a walk takes at most: the four fixed fields before the extensions, then one per
/// extension (a ClientHello carries 10–20) and one per protocol its ALPN offer names.
pub const HELLO_STEPS: usize = 40;

/// Bytes of the record header (5) and the handshake header (4), the version (2) and the
/// random (32): the session id's length byte follows.
const SESSION_ID_AT: u32 = 43;
/// The ALPN extension's type (RFC 7301).
const EXT_ALPN: u16 = 16;

const SESSION_ID: u8 = 0;
const CIPHERS: u8 = 1;
const COMPRESSION: u8 = 2;
const EXTENSIONS: u8 = 3;
const EXTENSION: u8 = 4;
const PROTOCOL: u8 = 5;
const DONE: u8 = 6;

/// A walk over a ClientHello record (its first byte at offset 0 of the data): ask
/// [`HelloWalk::next`] where the next four bytes lie, give them to [`HelloWalk::feed`], until
/// `next` says the walk is over; then [`HelloWalk::h2_only`] says what the offer was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloWalk {
    /// Offset of the field read next.
    at: u32,
    /// Where the data walked ends: the record, then its extensions, then the ALPN extension.
    end: u32,
    step: u8,
    h2: u8,
    http1: u8,
}

impl HelloWalk {
    /// A walk over a handshake record whose header's 5 bytes are `head` (`0x16 0x03 ..`; its
    /// length in the last two), the data being `len` bytes (a walk ends at the shorter).
    pub fn new(head: &[u8; 8], len: u64) -> HelloWalk {
        let record = 5 + u32::from(u16::from_be_bytes([head[3], head[4]]));
        let hello = head[0] == 0x16 && head[1] == 0x03 && head[5] == 0x01;
        HelloWalk {
            at: SESSION_ID_AT,
            end: record.min(len.min(u64::from(u32::MAX)) as u32),
            step: if hello { SESSION_ID } else { DONE },
            h2: 0,
            http1: 0,
        }
    }

    /// The offset of the four bytes the walk reads next; `None`: it is over. A protocol name
    /// is read from the byte before its length, so that `h2` ending the data still fits.
    pub fn next(&self) -> Option<u64> {
        if self.step == DONE {
            return None;
        }
        let at = if self.step == PROTOCOL {
            self.at - 1
        } else {
            self.at
        };
        (at.checked_add(4)? <= self.end || self.step == PROTOCOL && self.at + 3 <= self.end)
            .then_some(u64::from(at))
    }

    /// Takes the four bytes at [`HelloWalk::next`] (`read`: whether they could be read; a walk
    /// that could not read them is over, concluding nothing).
    pub fn feed(&mut self, b: [u8; 4], read: bool) {
        if !read {
            self.step = DONE;
            return;
        }
        let be16 = |i: usize| u32::from(u16::from_be_bytes([b[i], b[i + 1]]));
        match self.step {
            SESSION_ID => {
                self.at += 1 + u32::from(b[0]);
                self.step = CIPHERS;
            }
            CIPHERS => {
                self.at += 2 + be16(0);
                self.step = COMPRESSION;
            }
            COMPRESSION => {
                self.at += 1 + u32::from(b[0]);
                self.step = EXTENSIONS;
            }
            EXTENSIONS => {
                self.end = self.end.min(self.at + 2 + be16(0));
                self.at += 2;
                self.step = EXTENSION;
            }
            EXTENSION => {
                let (kind, len) = (be16(0), be16(2));
                if kind == u32::from(EXT_ALPN) {
                    // Its list's two length bytes, then the names (a length byte each).
                    self.end = self.end.min(self.at + 4 + len);
                    self.at += 6;
                    self.step = PROTOCOL;
                } else {
                    self.at += 4 + len;
                }
            }
            PROTOCOL => {
                let n = b[1];
                let (c0, c1) = (b[2], b[3]);
                if (n == 2 && c0 == b'h' && c1 == b'2') || (n == 8 && c0 == b'i' && c1 == b's') {
                    // `h2`, or Istio's `istio-h2` (its sidecars offer the protocol under
                    // their own name, `h2` itself beside it or not).
                    self.h2 = 1;
                } else if (n >= 4 && c0 == b'h' && c1 == b't')
                    || (n == 14 && c0 == b'i' && c1 == b's')
                {
                    // `http/1.1`, `http/1.0`, Istio's `istio-http/1.1` and `istio-http/1.0`
                    // (no registered name starts `ht` or `is`; Istio's other names, `istio`
                    // and `istio-peer-exchange`, are 5 and 19 bytes).
                    self.http1 = 1;
                }
                self.at += 1 + u32::from(n);
            }
            _ => {}
        }
        if self.at >= self.end {
            self.step = DONE;
        }
    }

    /// Whether the hello offered HTTP/2 and no HTTP/1.x (what it offered up to where the walk
    /// ended).
    pub fn h2_only(&self) -> bool {
        self.h2 != 0 && self.http1 == 0
    }
}

/// The first 8 bytes of a ClientHello record whose 5-byte header was read alone (its record
/// length `record_len`) and whose body starts with `body`: what [`HelloWalk::new`] takes, the
/// body's offsets being 5 less than the record's.
pub fn body_head(record_len: u16, body: &[u8; 8]) -> [u8; 8] {
    let [hi, lo] = record_len.to_be_bytes();
    [0x16, 0x03, 0x01, hi, lo, body[0], body[1], body[2]]
}

/// Bytes of a TLS record's header: what a read of it alone returns (OpenSSL and BoringSSL read
/// a record's header, then its body).
pub const RECORD_HEADER: u64 = 5;

/// The record length in a 5-byte TLS record header `head`.
pub fn record_len(head: &[u8; 8]) -> u16 {
    u16::from_be_bytes([head[3], head[4]])
}

/// A ClientHello a write sent or a read took, handed per CPU from the syscall's program to the
/// one that walks it (`TLS_HELLO`): the socket, where the record's offset 0 lies in its first
/// buffer (5 bytes before a body read alone), how far the data goes, the record's first 8
/// bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hello {
    /// The socket's inode (0: no hello waiting).
    pub ino: u64,
    pub base: u64,
    pub len: u64,
    pub head: [u8; 8],
}
const _: () = assert!(core::mem::size_of::<Hello>() == 32);

#[cfg(feature = "user")]
crate::user_pod!(Hello);

#[cfg(test)]
mod tests;
