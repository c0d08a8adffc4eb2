//! HTTP/2 framing as the kernel walks it (RFC 9113 §4.1), on connections whose frames it can
//! read in the clear (h2c: the client's preface was seen).
//!
//! A read's data is a run of frames, each a 9-byte header (24-bit length, type, flags, 31-bit
//! stream id) and its payload; a frame can begin in one read and end in a later one. The walk
//! reads headers only (never a payload byte), at most [`MAX_FRAMES`] per syscall, and carries
//! what is left of the current frame to the socket's next read ([`H2Walk::skip`]). A header
//! split across two reads is carried too: the first read's last 8 bytes hold its start
//! ([`H2Walk::tail`]), the next read's first bytes its end ([`Cursor::joined`]); a reader that
//! fills a buffer of fixed size splits one every few thousand bytes. What it cannot follow
//! (more frames than it reads, a header split across two buffers of one `readv` or beyond the
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
/// (RFC 9113 §5.1.1 allows skipping ids; no client we know does): a `writev`/`sendmsg` is
/// walked without its total length, so bytes past it (stale frames of earlier writes, an
/// iovec entry past its count) may be read as frames; theirs are older streams, and a header
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

/// Responses one write on a plain HTTP/2 downstream pairs at most ([`Answered`]): a
/// connection's writer (Envoy's, tokio's h2) coalesces the HEADERS of responses that became
/// ready together into one write. The first is paired where the write is seen; each other
/// by a program of its own the write's program tail-calls, once per response, so that the
/// verifier walks one pairing per program. More in one write are answered unpaired
/// (`h2_answers_lost`).
pub const ANSWERS_PER_WRITE: usize = 8;

/// Responses one write on an HTTP/2-inside-TLS downstream pairs by the causal rule in one
/// chain of tail calls (one per run of the tail-called program; the kernel stops a chain at
/// 33: the write's program, then this many). A write that pairs this many has its exit, a
/// program of its own with a chain of its own, pair this many more
/// ([`Answered::resumed`]): a proxy catching up after a stall forwards dozens of responses
/// in one write. Those left then are not taken by the socket's next write (read before it,
/// they were this one's, [`Answered::after`]; its search drops them from the queue): they
/// stay unforwarded, counted as such (`unforwarded`) when their connection's request after
/// next gives them up.
pub const MUX_IN_ROUNDS: u16 = 31;

const MUX_IN: u16 = 1;
const MUX_IN_NEW: u16 = 2;

/// The waiting streams (their [`stream_key`]s) one downstream write answers, in the order of
/// its frames, each once (a response's trailers in the same write are not a second answer),
/// and how far their pairing has gone. Kept per CPU between a write's program and the
/// program it tail-calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Answered {
    keys: [u64; ANSWERS_PER_WRITE],
    /// Streams in `keys`.
    n: u32,
    /// The next stream to pair (those before it are done).
    next: u32,
    /// Streams the write answered beyond [`ANSWERS_PER_WRITE`].
    pub over: u32,
    /// A write on an HTTP/2-inside-TLS downstream ([`Answered::mux_in`]): `MUX_IN`, with
    /// `MUX_IN_NEW` when it starts the socket's next outbound message; 0: a plain HTTP/2
    /// write's streams.
    mode: u16,
    /// Responses the causal rule paired for that write so far.
    pub paired: u16,
    /// That write's downstream's previous write's entry: a response read before it was that
    /// write's to forward, or not the rule's.
    pub after: u64,
    /// The write's entry: the responses' forward.
    pub t_out: u64,
    /// The writing thread (`bpf_get_current_pid_tgid`): a tail call runs on its time.
    pub pid_tgid: u64,
    /// A write's exit pairing what its entry left ([`Answered::resumed`]): when the write
    /// returned (0: the entry's chain).
    pub sent: u64,
    /// 1 when the write forwarded a response the rule paired: the chain that ends the
    /// write's pairing sends its `SendDone` (a resumed chain; the entry's leaves it to the
    /// exit).
    pub emitted: u64,
}

impl Answered {
    /// A write by `pid_tgid` entered at `t_out` that has answered nothing yet.
    #[inline(always)]
    pub fn new(t_out: u64, pid_tgid: u64) -> Answered {
        Answered {
            t_out,
            pid_tgid,
            ..Answered::default()
        }
    }

    /// A write by `pid_tgid` entered at `t_out` on HTTP/2-inside-TLS downstream `d_ino`
    /// (`new_msg`: the first since the socket's last read; `after`: the socket's write before
    /// it): the responses it forwards are
    /// those the causal rule finds for it, one per run of the tail-called program, at most
    /// [`MUX_IN_ROUNDS`] ([`Answered::mux_in_write`]).
    #[inline(always)]
    pub fn mux_in(t_out: u64, pid_tgid: u64, d_ino: u64, new_msg: bool, after: u64) -> Answered {
        let mut a = Answered::new(t_out, pid_tgid);
        a.after = after;
        a.keys[0] = d_ino;
        a.n = 1;
        a.mode = MUX_IN | if new_msg { MUX_IN_NEW } else { 0 };
        a
    }

    /// The pairing by the causal rule of write `t_out` by `pid_tgid` on HTTP/2-inside-TLS
    /// downstream `d_ino` (its write before it entered at `after`) resumed at its exit,
    /// `sent`, after its entry's chain paired [`MUX_IN_ROUNDS`] (`emitted`: 1 when any of
    /// them was emitted): the same search, the chain's end sends the write's `SendDone`.
    #[inline(always)]
    pub fn resumed(
        t_out: u64,
        pid_tgid: u64,
        d_ino: u64,
        after: u64,
        sent: u64,
        emitted: u64,
    ) -> Answered {
        let mut a = Answered::mux_in(t_out, pid_tgid, d_ino, false, after);
        a.sent = sent;
        a.emitted = emitted;
        a
    }

    /// For a write [`Answered::mux_in`] made: its downstream, and whether it starts a new
    /// outbound message.
    #[inline(always)]
    pub fn mux_in_write(&self) -> Option<(u64, bool)> {
        (self.mode & MUX_IN != 0 && self.pending())
            .then(|| (self.keys[0], self.mode & MUX_IN_NEW != 0))
    }

    /// Nothing left to pair.
    #[inline(always)]
    pub fn finish(&mut self) {
        self.next = self.n;
    }

    /// A write [`Answered::mux_in`] made has more to pair.
    #[inline(always)]
    pub fn unfinish(&mut self) {
        self.next = 0;
    }

    /// Adds stream `key` unless already there. Returns false when the write answers more
    /// streams than [`ANSWERS_PER_WRITE`]: `key` is not kept (counted in `over`).
    #[inline(always)]
    pub fn push(&mut self, key: u64) -> bool {
        let n = self.n as usize;
        for i in 0..ANSWERS_PER_WRITE {
            if i < n && self.keys.get(i) == Some(&key) {
                return true;
            }
        }
        match self.keys.get_mut(n) {
            Some(slot) => {
                *slot = key;
                self.n += 1;
                true
            }
            None => {
                self.over += 1;
                false
            }
        }
    }

    /// The next stream to pair, taken (`None`: all are).
    #[inline(always)]
    pub fn take(&mut self) -> Option<u64> {
        let i = self.next as usize;
        if i >= self.n as usize {
            return None;
        }
        let key = self.keys.get(i).copied()?;
        self.next += 1;
        Some(key)
    }

    /// Whether streams are left to pair.
    #[inline(always)]
    pub fn pending(&self) -> bool {
        self.next < self.n
    }

    /// Streams left to pair.
    #[inline(always)]
    pub fn left(&self) -> u32 {
        self.n.saturating_sub(self.next)
    }
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
    /// Bytes of a frame header the last data ended inside (1–8; 0: none): its start is the
    /// end of [`Self::tail`], the rest begins the next data.
    pub split: u32,
    pub _pad: u32,
    /// The last 8 bytes of the last data, when it ended inside a frame header.
    pub tail: [u8; 8],
}
const _: () = assert!(core::mem::size_of::<H2Walk>() == 24);

/// How one syscall's walk ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    /// Every frame header in the data was read; the walk continues with the next data.
    Done,
    /// The walk had lost its place and the data does not start with a plausible frame
    /// header: still lost (counted when it was lost).
    StillLost,
    /// Lost now: more frames than one walk reads, a header it could not read, or a write
    /// that does not start with a frame.
    Lost,
    /// The data ended inside a frame header, [`Cursor::have`] bytes of it: the next data
    /// carries the rest ([`H2Walk::carry`]).
    Split,
}

impl H2Walk {
    /// A walk that starts after the client's preface (`preface`: the preface is still to come
    /// in this direction's data).
    #[inline(always)]
    pub fn starting(preface: bool) -> H2Walk {
        H2Walk {
            skip: if preface { PREFACE_LEN } else { 0 },
            ..H2Walk::default()
        }
    }

    pub fn lost(&self) -> bool {
        self.skip == WALK_LOST
    }

    /// Takes a walk's end over `len` bytes (`c`, [`Cursor::end`]); `tail`: the data's last 8
    /// bytes, read where the walk ended [`WalkEnd::Split`] ([`Cursor::tail_at`]; `tail_read`:
    /// whether they could be read). Returns whether the walk lost its place now (a loss to
    /// count). (Arrays with a flag, not `Option`s of them: in the kernel programs LLVM left
    /// the payload of a `None` in a register the verifier found never written.)
    #[inline(always)]
    pub fn carry(&mut self, c: &Cursor, tail: [u8; 8], tail_read: bool) -> bool {
        let (skip, end) = c.end();
        self.skip = skip;
        self.split = 0;
        match end {
            WalkEnd::Split if tail_read => {
                self.split = c.have();
                self.tail = tail;
                false
            }
            WalkEnd::Split => {
                self.skip = WALK_LOST;
                true
            }
            end => end == WalkEnd::Lost,
        }
    }
}

/// The header split across two reads: its first `have` bytes (1–8) end `tail`, the rest
/// begins `head` (the next read's first 9 bytes, of which the first `9 − have` are its).
#[inline(always)]
pub fn join(tail: &[u8; 8], have: u32, head: &[u8; 9]) -> [u8; 9] {
    // Shifts of two registers, not indexing by `have`: the kernel's verifier refuses a
    // variable offset into the stack (where the arrays are).
    let have = have.clamp(1, 8);
    let t = u64::from_be_bytes(*tail);
    let h = u64::from_be_bytes([
        head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7],
    ]);
    let mut b = [0u8; 9];
    for (i, x) in (0u32..).zip(b.iter_mut()) {
        *x = if i < have {
            (t >> (8 * (have - 1 - i))) as u8
        } else {
            // Byte i − have of the head (at most the 8th: have ≥ 1).
            (h >> (8 * (7 - (i - have).min(7)))) as u8
        };
    }
    b
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
/// type with only the flags it defines, on the kind of stream it belongs to, a payload
/// within [`RESYNC_MAX_LEN`].
#[inline(always)]
pub fn plausible(h: &FrameHeader) -> bool {
    const SETTINGS: u8 = 4;
    const PING: u8 = 6;
    const GOAWAY: u8 = 7;
    const WINDOW_UPDATE: u8 = 8;
    if h.kind > 9 || h.len > RESYNC_MAX_LEN {
        return false;
    }
    // Flags a sender may set on each type (RFC 9113 §6: undefined ones "MUST be left
    // unset"). A match, not a table: a constant array goes to `.rodata`, which the kernel
    // programs read as a map whose bounds the verifier holds them to.
    let defined: u8 = match h.kind {
        0 => 0x09,     // DATA: END_STREAM, PADDED
        1 => 0x2d,     // HEADERS: END_STREAM, END_HEADERS, PADDED, PRIORITY
        4 | 6 => 0x01, // SETTINGS, PING: ACK
        5 => 0x0c,     // PUSH_PROMISE: END_HEADERS, PADDED
        9 => 0x04,     // CONTINUATION: END_HEADERS
        _ => 0,
    };
    if h.flags & !defined != 0 {
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
    /// A frame header joined from two reads ([`Cursor::joined`]), stepped over already: the
    /// walk's first frame when `has_carried`. (A flag, not an `Option`: a `None`'s payload
    /// is stack never written, which Linux 5.10's verifier refuses to see copied.)
    carried: FrameHeader,
    has_carried: bool,
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
            carried: FrameHeader::default(),
            has_carried: false,
            check_first: was_lost,
            was_lost,
            lost: false,
            refused: false,
        }
    }

    /// A walk over a write whose first frame header is `start` bytes in (checked: a write
    /// resumed after a partial one starts inside a frame). Its length is its buffers' (the
    /// kernel's walk ends where a header cannot be read from them): a bound here, a value
    /// the verifier would follow through every step of the walk, cost `smp_tcp_send` 660 k
    /// instructions instead of 284 k.
    #[inline(always)]
    pub fn write(start: u32) -> Cursor {
        Cursor {
            off: u64::from(start),
            len: u64::MAX,
            carried: FrameHeader::default(),
            has_carried: false,
            check_first: true,
            was_lost: false,
            lost: false,
            refused: false,
        }
    }

    /// A walk over `len` bytes that begin with the rest of a frame header `w` carries
    /// ([`H2Walk::split`]); `head`: the data's first 9 bytes (`head_read`: whether they could
    /// be read; if not, the walk is lost). The joined frame is the walk's first
    /// ([`Cursor::carried`]).
    #[inline(always)]
    pub fn joined(w: &H2Walk, head: [u8; 9], head_read: bool, len: u64) -> Cursor {
        let mut c = Cursor::new(0, len);
        let rest = FRAME_HEADER_LEN - u64::from(w.split.clamp(1, 8));
        if head_read && len >= rest {
            let h = FrameHeader::parse(&join(&w.tail, w.split, &head));
            c.off = rest + u64::from(h.len);
            c.carried = h;
            c.has_carried = true;
        } else {
            c.lost = true;
        }
        c
    }

    /// The frame joined across two reads, once, before the data's own ([`Cursor::joined`]).
    #[inline(always)]
    pub fn carried(&mut self) -> Option<FrameHeader> {
        core::mem::take(&mut self.has_carried).then_some(self.carried)
    }

    /// Bytes of the header the data ended inside of ([`WalkEnd::Split`]).
    #[inline(always)]
    pub fn have(&self) -> u32 {
        self.len.saturating_sub(self.off) as u32
    }

    /// Where the data's last 8 bytes start, when the walk ended inside a header and they
    /// hold its start ([`H2Walk::carry`]; data shorter than 8 bytes: `None`, lost).
    #[inline(always)]
    pub fn tail_at(&self) -> Option<u64> {
        (self.end().1 == WalkEnd::Split && self.len >= 8).then(|| self.len - 8)
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
        if !self.lost && !self.was_lost && self.off + FRAME_HEADER_LEN > self.len {
            // In place, and the data ends inside the next header.
            return (0, WalkEnd::Split);
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
