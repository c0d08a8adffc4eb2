//! HTTP/2 framing as the kernel walks it (RFC 9113 §4.1), on connections whose frames it can
//! read in the clear (h2c: the client's preface was seen).
//!
//! A read's data is a run of frames, each a 9-byte header (24-bit length, type, flags, 31-bit
//! stream id) and its payload; a frame can begin in one read and end in a later one. The walk
//! reads headers only (never a payload byte), at most [`MAX_FRAMES`] per syscall, and carries
//! what is left of the current frame to the socket's next read ([`H2Walk::skip`]). What it
//! cannot follow (more frames than it reads, a header split across two reads or beyond the
//! buffer it may read) loses its place ([`WALK_LOST`]; the kernel counts it): the rest of that
//! data is not seen. It takes its place again at the next data whose first bytes are a
//! plausible frame header ([`plausible`]): a peer writes whole frames, so data read after a
//! drained socket starts on a frame boundary. A write is walked from its first byte, which
//! must look like a frame header too (a write resumed after a partial one does not).
//!
//! A request starts with a HEADERS frame on a client stream not seen before (ids only grow,
//! RFC 9113 §5.1.1); a second HEADERS frame on the same stream is its trailers.

/// Bytes of a frame header.
pub const FRAME_HEADER_LEN: u64 = 9;
/// Bytes of the client's connection preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`), before its
/// first frame.
pub const PREFACE_LEN: u32 = 24;
/// Frame type HEADERS.
pub const TYPE_HEADERS: u8 = 1;
/// Frame headers one syscall's walk reads at most (a bounded loop for the verifier).
pub const MAX_FRAMES: u32 = 16;
/// Buffers of a `readv`/`writev`/`recvmsg`/`sendmsg` a walk reads frame headers from (the
/// first ones; a frame header split across two buffers, or beyond these, stops it).
pub const IOV_WALK: usize = 4;
/// How far past the highest stream seen a new one may be. Clients open streams in order
/// (RFC 9113 §5.1.1 allows skipping ids; no client we know does): a write is walked without
/// its length (not known where it is walked), so the bytes after it in its buffer, stale
/// frames of earlier writes, may be read as frames; theirs are older streams, and a header
/// of garbage naming a far stream would otherwise stop every later stream from opening.
pub const MAX_STREAM_STEP: u32 = 2 * MAX_FRAMES;
/// Largest frame payload a walk that takes its place again believes: the protocol's initial
/// `SETTINGS_MAX_FRAME_SIZE` (peers may raise it; a larger frame then waits for the next).
pub const RESYNC_MAX_LEN: u32 = 1 << 14;
/// [`H2Walk::skip`] of a socket whose walk lost its place.
pub const WALK_LOST: u32 = u32::MAX;
/// Streams a request-forwarding write's exit marks sent, from the first it opened
/// ([`sent_stream`]): a write that opens more leaves the send time of the rest unknown.
pub const SENT_STREAMS: u32 = 4;

/// The `i`-th stream (from 0) a write that opened streams `first` to `last` forwarded, if
/// any: client streams are opened in order, every other id ([`MAX_STREAM_STEP`]).
#[inline(always)]
pub fn sent_stream(first: u32, last: u32, i: u32) -> Option<u32> {
    let id = first.checked_add(i.checked_mul(2)?)?;
    (first != 0 && i < SENT_STREAMS && id <= last).then_some(id)
}

/// One frame's header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload bytes (24 bits).
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    /// Stream id (31 bits; 0: the connection).
    pub stream: u32,
}

impl FrameHeader {
    /// Decodes the 9 bytes of a frame header.
    #[inline(always)]
    pub fn parse(b: &[u8; 9]) -> FrameHeader {
        FrameHeader {
            len: u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }
}

/// Where one direction's frame walk stands on a socket (part of its `SockState`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct H2Walk {
    /// Bytes of the current frame (or of the preface) the next data still carries before the
    /// next frame header; [`WALK_LOST`] once the walk could not follow.
    pub skip: u32,
    /// The highest client stream id a HEADERS frame in this direction opened.
    pub max_stream: u32,
}
const _: () = assert!(core::mem::size_of::<H2Walk>() == 8);

/// How one syscall's walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    /// Every frame header in the data was read; the walk continues with the next data.
    Done,
    /// The walk had lost its place and the data does not start with a plausible frame
    /// header: still lost (counted when it was lost).
    StillLost,
    /// Lost now: more frames than one walk reads, a header split across reads, one it could
    /// not read, or a write that does not start with a frame.
    Lost,
}

impl H2Walk {
    /// A walk that starts after the client's preface (`preface`: the preface is still to come
    /// in this direction's data).
    #[inline(always)]
    pub fn starting(preface: bool) -> H2Walk {
        H2Walk {
            skip: if preface { PREFACE_LEN } else { 0 },
            max_stream: 0,
        }
    }

    pub fn lost(&self) -> bool {
        self.skip == WALK_LOST
    }
}

/// Whether frame `h`, in the client-to-server direction, opens a request: a HEADERS frame on
/// a client (odd) stream above every one seen so far (`max_stream`, raised to it), by at most
/// [`MAX_STREAM_STEP`].
#[inline(always)]
pub fn opens(max_stream: &mut u32, h: &FrameHeader) -> bool {
    if h.kind == TYPE_HEADERS
        && h.stream & 1 == 1
        && h.stream > *max_stream
        && h.stream - *max_stream <= MAX_STREAM_STEP
    {
        *max_stream = h.stream;
        return true;
    }
    false
}

/// Whether frame `h`, in the server-to-client direction, may start a response: a HEADERS
/// frame on a client stream (the first on its stream does; the kernel knows which streams
/// still wait for theirs).
#[inline(always)]
pub fn answers(h: &FrameHeader) -> bool {
    h.kind == TYPE_HEADERS && h.stream & 1 == 1
}

/// Whether `h` can be a frame header where the walk must take its place again: a known
/// type on the kind of stream it belongs to, a payload within [`RESYNC_MAX_LEN`].
#[inline(always)]
pub fn plausible(h: &FrameHeader) -> bool {
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    const WINDOW_UPDATE: u8 = 8;
    if h.kind > 9 || h.len > RESYNC_MAX_LEN {
        return false;
    }
    match h.kind {
        SETTINGS | PING | GOAWAY => h.stream == 0,
        WINDOW_UPDATE => true,
        _ => h.stream != 0,
    }
}

/// A walk over one syscall's data: the caller reads the header at [`Cursor::next`], passes
/// it to [`Cursor::advance`] (which may refuse it), at most [`MAX_FRAMES`] times, then takes
/// [`Cursor::end`]. (A loop in the caller, not a function taking a closure: the kernel
/// programs' closures became BPF functions whose stack frames, added up, passed the 512-byte
/// limit.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor {
    off: u64,
    len: u64,
    /// The first header must be [`plausible`] (a resync, or a write's start).
    check_first: bool,
    was_lost: bool,
    lost: bool,
    refused: bool,
}

impl Cursor {
    /// A walk over `len` bytes whose first frame header is `skip` bytes in; from the data's
    /// start, checked, when the walk had lost its place (`skip` is [`WALK_LOST`]).
    #[inline(always)]
    pub fn new(skip: u32, len: u64) -> Cursor {
        let was_lost = skip == WALK_LOST;
        Cursor {
            off: if was_lost { 0 } else { u64::from(skip) },
            len,
            check_first: was_lost,
            was_lost,
            lost: false,
            refused: false,
        }
    }

    /// A walk over a write of unknown length whose first frame header is `start` bytes in
    /// (checked: a write resumed after a partial one starts inside a frame).
    #[inline(always)]
    pub fn write(start: u32) -> Cursor {
        Cursor {
            off: u64::from(start),
            len: u64::MAX,
            check_first: true,
            was_lost: false,
            lost: false,
            refused: false,
        }
    }

    /// The offset of the next frame header, if a whole one lies in the data.
    #[inline(always)]
    pub fn next(&self) -> Option<u64> {
        if self.lost || self.off + FRAME_HEADER_LEN > self.len {
            return None;
        }
        Some(self.off)
    }

    /// Steps over the frame whose header `h` was read at [`Cursor::next`]; `false` (the walk
    /// stops) when it had to be [`plausible`] and is not.
    #[inline(always)]
    pub fn advance(&mut self, h: &FrameHeader) -> bool {
        if core::mem::take(&mut self.check_first) {
            if !plausible(h) {
                self.lost = true;
                self.refused = true;
                return false;
            }
            self.was_lost = false; // back in place
        }
        self.off += FRAME_HEADER_LEN + u64::from(h.len);
        true
    }

    /// The header at [`Cursor::next`] could not be read (beyond the buffer the walk may read).
    #[inline(always)]
    pub fn unreadable(&mut self) {
        self.lost = true;
    }

    /// How the walk ended, and the skip of the direction's next data: what the last frame
    /// still has to come, or [`WALK_LOST`].
    #[inline(always)]
    pub fn end(&self) -> (u32, WalkEnd) {
        if !self.lost && self.off >= self.len && self.off - self.len < u64::from(WALK_LOST) {
            return ((self.off - self.len) as u32, WalkEnd::Done);
        }
        if self.was_lost {
            // Not back in place: the first header refused, or too little data for one.
            return (WALK_LOST, WalkEnd::StillLost);
        }
        (WALK_LOST, WalkEnd::Lost)
    }

    /// Whether the first header was refused ([`Cursor::write`]: the write does not start on
    /// a frame). A write's walk has no length: where its headers stop being readable may be
    /// its end, so only this is known lost.
    #[inline(always)]
    pub fn refused(&self) -> bool {
        self.refused
    }
}

/// The `SOCK_STATE` key of stream `stream` of socket `ino`: the state of one HTTP/2 request
/// (a downstream's) or of its forward (an upstream's), paired as a connection of its own.
/// Socket inode numbers fit in 32 bits (`get_next_ino`); a stream's key has its id above
/// them, so it is never a socket's.
#[inline(always)]
pub const fn stream_key(ino: u64, stream: u32) -> u64 {
    (stream as u64) << 32 | (ino & 0xffff_ffff)
}

#[cfg(test)]
mod tests;
