//! Per-hop pairing: per-socket message state, per-thread forward queues, and the record sent
//! to userspace for every paired exchange (a request hop and the response hop that closes it).

use crate::{
    h2::H2Walk,
    sock::{PendingSyscall, SockIo},
};

/// Socket role in a proxy: who spoke first on the connection.
pub const ROLE_UNKNOWN: u8 = 0;
/// Accepted (server side): the proxy's downstream; requests arrive here.
pub const ROLE_DOWNSTREAM: u8 = 1;
/// Connected (client side): the proxy's upstream; requests leave here.
pub const ROLE_UPSTREAM: u8 = 2;

/// Direction of the last data syscall on a socket.
pub const DIR_NONE: u8 = 0;
pub const DIR_IN: u8 = 1;
pub const DIR_OUT: u8 = 2;

/// `SockState::flags` bits.
pub const SOCK_TLS: u8 = 1;
pub const SOCK_H2: u8 = 2;
pub const SOCK_TUPLE: u8 = 4;
/// The socket's `struct sock *` is registered in `SK_INO` (arrival times are recorded).
pub const SOCK_SK: u8 = 8;
/// The state is an HTTP/2 stream's ([`crate::h2::stream_key`]): one request on a plain
/// HTTP/2 downstream, or one request forward on a plain HTTP/2 upstream, paired as a
/// connection of its own.
pub const SOCK_STREAM: u8 = 16;
/// The socket's first read seen named nothing (TLS application data, or bytes of no
/// protocol the probes read; writes are not classified): its TLS handshake, if any, came
/// before (opened before the probes attached or before its process was tracked), and its
/// records alone tell it TLS ([`crate::pairing::unseen_handshake_flags`]).
pub const SOCK_AGED: u8 = 32;
/// A TLS client whose ClientHello offered HTTP/2 and no HTTP/1.x by ALPN
/// ([`crate::tls::HelloWalk`]), or a TLS connection seen carrying requests at once
/// ([`crate::pairing::overlap_shows_mux`], [`crate::pairing::up_overlap_shows_mux`]): HTTP/2
/// inside TLS, its streams interleaved on the connection.
/// Its writes forward the requests its thread read before them, and a response forwarded
/// from it is taken from its last read before the response's write (the causal rule,
/// docs/hops.md).
pub const SOCK_MUX: u8 = 64;

/// A connection's endpoints as the proxy sees them (addresses in network byte order, ports in
/// host order). IPv4 addresses sit in the first 4 bytes; `family` is AF_INET or AF_INET6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub family: u16,
    pub local_port: u16,
    pub remote_port: u16,
    pub _pad: u16,
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<Tuple>() == 40);

/// Message state of one socket (`SOCK_STATE`, key: socket inode). LRU-bounded.
///
/// The fields every HTTP/1.x message touches come first, within 88 bytes: a probe run that
/// finds the map entry cold (the usual case between requests at a few hundred requests per
/// second) then reads two or three cache lines of it, where they spread over four or five;
/// the endpoints and the HTTP/2 walk, read rarely, come last.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockState {
    pub role: u8,
    pub last_dir: u8,
    /// `SOCK_*` bits.
    pub flags: u8,
    /// Upstreams: 1 when the claim that set `hint` chose among requests its thread was
    /// waiting to forward ([`ThreadLast::claim`]): a guess.
    pub hint_guessed: u8,
    /// Exchanges paired on this socket (as downstream).
    pub exchanges: u32,
    /// Start of the current (or last) inbound message: exit of its first read.
    pub in_start: u64,
    /// Start of the current (or last) outbound message: entry of its first write.
    pub out_start: u64,
    /// Exit of the write that started the current outbound message (0: not yet returned).
    pub out_sent: u64,
    /// Data arrived for the next inbound message and was not read yet (0: none).
    pub arrival: u64,
    /// When the current inbound message's first bytes reached the socket (`tcp_probe`);
    /// `in_start` when unknown. `in_start − in_arrival` is how long it waited for the proxy.
    pub in_arrival: u64,
    /// Bytes of the current inbound message so far (outbound sizes are not needed: the
    /// exchange record carries the bytes read, and counting writes cost a lookup per write).
    pub in_bytes: u64,
    /// Upstreams: the downstream whose request this thread's forward of the current request
    /// claimed (the oldest it read and had not forwarded: exact for event loops, a hint
    /// otherwise).
    pub hint: u64,
    /// Upstreams: the `in_start` of the last response forwarded (taken by a response write).
    /// A queued slot of a response already forwarded is dead, whichever thread's queue holds
    /// it.
    pub fwd_in: u64,
    /// Downstreams: the `in_start` of the request a request forward last claimed (its hint),
    /// so that one request is the hint of one forward only.
    pub claimed: u64,
    /// The socket's network namespace (its `struct net *`; 0: unknown): a request forward
    /// claims only a request read in the same namespace ([`crate::pairing::same_netns`]).
    pub net: u64,
    /// Downstreams: the last read of TLS handshake records. The client's last flight and its
    /// first request can arrive in one read, classified as handshake: the request then hides
    /// in it, and a response forwarded before any request was seen answers that read.
    pub hs_read: u64,
    /// Upstreams: TCP's estimate of the connection's round trip when the current response
    /// arrived (`tcp_probe`); zero: unknown.
    pub rtt: TcpRtt,
    /// Upstreams: the responses later requests overtook before any write forwarded them,
    /// newest first ([`crate::pairing::hold_response`]).
    pub held: [HeldResponse; HELD_RESPONSES],
    pub tuple: Tuple,
    /// Plain HTTP/2 sockets (`SOCK_H2` without `SOCK_TLS`): the frame walk of what they
    /// read ([`crate::h2`]).
    pub h2_in: H2Walk,
    /// Plain HTTP/2 upstreams: the highest stream a request forward opened.
    pub h2_out_stream: u32,
    /// Plain HTTP/2 upstreams: the first stream the socket's last request-forwarding write
    /// opened (0: none); its exit marks that stream and those after it sent
    /// ([`crate::h2::SENT_STREAMS`]).
    pub h2_out_first: u32,
    /// The other side of the current exchange when one side is HTTP/2 inside TLS
    /// ([`SOCK_MUX`]), by the causal rule (0: none; docs/hops.md): on an HTTP/1.x downstream,
    /// the upstream whose write forwarded its request, and when that write was entered
    /// (`mux_out`); on an HTTP/1.x upstream, the downstream whose read carried its request
    /// (that read in `mux_in`, `mux_arrival`). On a [`SOCK_MUX`] downstream, `mux_out` is the
    /// entry of its last write.
    pub mux_peer: u64,
    pub mux_out: u64,
    /// [`SOCK_MUX`] sockets: the exit of the socket's last read (any read), and when its
    /// data reached the socket. HTTP/1.x upstreams with a `mux_peer`: those of the peer's
    /// read that carried the current request.
    pub mux_in: u64,
    pub mux_arrival: u64,
    /// [`SOCK_MUX`] upstreams: the entries of its last [`MUX_WRITES`] writes (slot
    /// `mux_seq % MUX_WRITES` is the next), and how long after its entry each returned (0:
    /// not yet): a request forwarded by one of them is sent when it returns.
    pub mux_writes: [u64; MUX_WRITES],
    pub mux_sent_after: [u32; MUX_WRITES],
    pub mux_seq: u32,
    /// Downstreams: the length of a ClientHello record whose 5-byte header a read took alone
    /// (OpenSSL and BoringSSL read a record's header first); its body is read next (0: none).
    pub hello_body: u32,
    /// The socket's data syscalls, receives then sends ([`SockIo`]).
    pub io: [SockIo; 2],
    /// [`SOCK_MUX`] sockets: its last read (on a downstream, a TLS record's header read alone
    /// aside) and the reading thread's turn then ([`crate::pairing::turn`]). A request
    /// forward in that turn carries a request of a downstream's
    /// ([`crate::pairing::read_in_turn`]); a response write in that turn may forward an
    /// upstream's ([`crate::pairing::causal_agrees`]).
    pub turn_read: MuxRead,
    /// HTTP/1.x upstreams: the turn of the thread that entered the current request's
    /// forward, if that thread had read an HTTP/2-inside-TLS downstream (0: none); the
    /// connection's first forward takes its connect's turn
    /// ([`crate::pairing::forward_turn`]), kept here from the connect to that forward.
    pub fwd_turn: u64,
    /// HTTP/1.x downstreams: the thread that read the current request (0: none, or looked up
    /// already) and its [`MuxLog::seq`] then: the causal rule's forward of the request, if a
    /// write on an HTTP/2-inside-TLS upstream forwarded it ([`crate::pairing::forward_of`]).
    pub mux_reader: u32,
    pub mux_reader_seq: u32,
    /// [`SOCK_MUX`] upstreams: a write other than the current run's first that may have
    /// forwarded a request read before it: the last write before the run, or the run's first
    /// itself once the run has a second (0: none). Record alternation times the request from
    /// the run's first; a request read before this had more than one write that could have
    /// carried it ([`crate::pairing::forward_known`]).
    pub run_before: u64,
}
const _: () = assert!(core::mem::size_of::<SockState>() == 408 + 48 * HELD_RESPONSES);

/// A read of an HTTP/2-inside-TLS downstream ([`SockState::turn_read`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MuxRead {
    /// The read's exit (0: none).
    pub exit: u64,
    /// The reading thread's turn then ([`crate::pairing::turn`]).
    pub turn: u64,
}

/// Writes of an HTTP/2-inside-TLS upstream whose return is remembered ([`SockState::mux_writes`]):
/// a request's response comes back before its connection has carried many more writes.
pub const MUX_WRITES: usize = 4;

/// TCP's own estimate of a connection's round trip, as `tcp_info` reports it (µs; 0: unknown).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpRtt {
    /// Smoothed RTT (`srtt_us >> 3`).
    pub srtt_us: u32,
    /// Its mean deviation (`mdev_us >> 2`, `tcp_info`'s `rttvar`).
    pub rttvar_us: u32,
    /// The least RTT of the connection's recent samples (`rtt_min`, a windowed minimum).
    pub min_rtt_us: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<TcpRtt>() == 16);

/// Responses an upstream holds at once ([`SockState::held`]): a held response is given up
/// when one more request than this has overtaken it. Holding two was measured against one
/// (2026-12-07, Envoy's inbound under a CPU limit, 3 runs each: 99.54-99.72 % paired against
/// 99.46-99.55 %, within the runs' spread) and cost the write programs' verifier a third
/// more (`smp_h2_answers` 795 000 instructions against 604 000) and `SOCK_STATE` 6 MiB.
pub const HELD_RESPONSES: usize = 1;

/// An upstream's response that a later request overtook before a write forwarded it, with
/// what its exchange needs ([`SockState::held`]). A Go `http.Transport` puts a connection back
/// in its pool once it has read the response's body, before the handler writes the response
/// on: another request can be written on the connection in between. The held response can
/// still be forwarded until more than [`HELD_RESPONSES`] requests have gone out after it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldResponse {
    /// Its `in_start` (0: none held).
    pub in_start: u64,
    /// Its request's forward (`out_start` then).
    pub out_start: u64,
    /// `in_start − in_arrival` (saturated).
    pub in_wait: u32,
    /// `out_sent − out_start` (0: the forward had not returned).
    pub sent_after: u32,
    /// Its bytes read (saturated).
    pub in_bytes: u32,
    /// The causal rule's claim on its request ([`crate::pairing::mux_request`]), kept from
    /// the socket's (which the next request's claim replaces): the HTTP/2-inside-TLS
    /// downstream whose read carried it (0: none), `out_start − mux_in` and
    /// `mux_in − mux_arrival` (saturated; a claim whose read lies further back is not kept).
    /// An event loop that gives a freed connection to a request waiting for one before it
    /// writes the response it read (Envoy's pool, when its connections are all busy) holds
    /// the claimed response.
    pub mux_lead: u32,
    pub mux_peer: u64,
    pub mux_wait: u32,
    /// `out_start − run_before + 1` then (0: none known; `u32::MAX` when it lies further
    /// back, taken as that far): see [`SockState::run_before`].
    pub run_lead: u32,
}
const _: () = assert!(core::mem::size_of::<HeldResponse>() == 48);

/// Requests a thread's [`ThreadLast`] remembers (a power of two).
pub const REQ_SLOTS: usize = 4;

/// What a thread read ([`ThreadState::last`]): the requests it read and did not forward yet
/// (for the hint of its next request forwards) and the upstream it last read response data
/// from (for pairing by adjacency).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadLast {
    /// Downstream inodes of the last [`REQ_SLOTS`] requests this thread read (new messages),
    /// a FIFO from `req_head` to `req_tail` (indices only grow, mod `REQ_SLOTS`): an event
    /// loop reads the requests of one turn, then runs their forwards in order.
    pub reqs: [u64; REQ_SLOTS],
    pub req_head: u32,
    pub req_tail: u32,
    /// Inode of the upstream it last read response data from (any read, continuation reads
    /// included): a proxy that forwards a response in the same turn that read it (a
    /// connection's task, an event loop without deferred writes) writes that one next.
    pub up: u64,
    /// Inode of the downstream it last read a new request from (kept when a forward claims
    /// it): a second request forward finding that request claimed, with no response written
    /// to it since, shows the downstream carries requests at once
    /// ([`crate::pairing::overlap_shows_mux`]).
    pub last_req: u64,
    /// The HTTP/2-inside-TLS downstream ([`SOCK_MUX`]) it last read from (0: none), that
    /// read's exit, and the thread's [`crate::cpu::ThreadCpu::blocks`] then: a request
    /// forward with no block since is of the same turn, and by the causal rule carries a
    /// request of that read ([`crate::pairing::mux_request`]).
    pub mux_down: u64,
    pub mux_down_in: u64,
    pub mux_down_blocks: u32,
    /// 1 when the thread read another such downstream in the same turn: which one a forward
    /// serves is not known (no claim).
    pub mux_down_mixed: u32,
    /// 1 when the thread's last claim left a request read after the claimed one on its
    /// list: the claims until the list is next empty choose among requests
    /// ([`ThreadLast::claim`]).
    pub guessing: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ThreadLast>() == 8 * REQ_SLOTS + 56);

/// Slots of a thread's forward queue (a power of two). An event-loop proxy may read this
/// many responses in one batch before it flushes the writes that forward them.
pub const FWD_SLOTS: usize = 64;

/// A response read on an upstream socket, waiting for the write that forwards it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FwdSlot {
    /// Upstream socket inode; 0 = empty.
    pub ino: u64,
    /// Its message start (must still equal the socket's `in_start` to be valid).
    pub t_in: u64,
    /// The upstream's `hint` when the response was read: the downstream it likely goes to,
    /// [`HINT_GUESSED`] set when no hinted search may take it. Read it with
    /// [`FwdSlot::hinted_to`].
    pub hint: u64,
}

/// [`FwdSlot::hint`]'s top bit: the claim behind the hint was a guess and the process's
/// hints are not trusted, so no hinted search takes it (`FwdQueue::find`), as no key has the
/// bit: socket inodes fit in 32 bits and a stream's key holds a 31-bit stream id above them
/// ([`crate::h2::stream_key`]). Of two requests held at once and forwarded out of their
/// order, the claims name each other's downstream; their responses, read in one batch, are
/// written in the order read, and the batch's oldest is right.
pub const HINT_GUESSED: u64 = 1 << 63;

impl FwdSlot {
    /// The slot of a response read on upstream `ino` (state `u`) at `t_in`, by a process
    /// whose hints are trusted (`trusted` 1, [`Trust::trusted_bit`]) or not (0).
    #[inline(always)]
    pub fn read(ino: u64, t_in: u64, u: &SockState, trusted: u64) -> Self {
        let guessed = (u64::from(u.hint_guessed) & !trusted & 1) << 63;
        FwdSlot {
            ino,
            t_in,
            hint: u.hint | guessed,
        }
    }

    /// The downstream the upstream's request forward claimed (0: none).
    #[inline(always)]
    pub fn hinted_to(&self) -> u64 {
        self.hint & !HINT_GUESSED
    }

    /// Whether no hinted search takes it ([`HINT_GUESSED`]).
    #[inline(always)]
    pub fn guessed(&self) -> bool {
        self.hint & HINT_GUESSED != 0
    }
}

/// Per-thread FIFO of responses read and not yet forwarded ([`ThreadState::fwd`]).
/// `head` is the oldest entry, `tail` the next free one; both only grow (indices mod
/// `FWD_SLOTS`); when full, the oldest entry is overwritten (and counted). The *batch* is
/// the entries from `batch` to `tail`: the responses read since the thread's last response
/// write (an event loop's reads of one turn, whose writes follow).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwdQueue {
    pub head: u32,
    pub tail: u32,
    /// First entry of the current batch.
    pub batch: u32,
    /// 1 when the thread wrote a response since `batch` was set: the next read starts a new
    /// batch.
    pub wrote: u32,
    pub slots: [FwdSlot; FWD_SLOTS],
}
const _: () = assert!(core::mem::size_of::<FwdQueue>() == 24 * FWD_SLOTS + 16);

impl Default for FwdQueue {
    fn default() -> Self {
        FwdQueue {
            head: 0,
            tail: 0,
            batch: 0,
            wrote: 0,
            slots: [FwdSlot::default(); FWD_SLOTS],
        }
    }
}

/// One paired exchange through a proxy: request hop downstream→upstream, response hop
/// upstream→downstream. Sent through `EVENTS` with kind [`crate::event::EventKind::Exchange`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeRecord {
    pub header: crate::event::EventHeader,
    pub tgid: u32,
    /// Thread that forwarded the response.
    pub tid: u32,
    /// Request hop: read of its first bytes on the downstream returned / write of its first
    /// bytes on the upstream entered.
    pub req_in_ns: u64,
    pub req_out_ns: u64,
    /// Response hop: read on the upstream returned / write on the downstream entered.
    pub resp_in_ns: u64,
    pub resp_out_ns: u64,
    /// When the request's first bytes reached the downstream socket, and the response's the
    /// upstream socket (`tcp_probe`; equal to `req_in_ns` / `resp_in_ns` when unknown).
    pub req_arrival_ns: u64,
    pub resp_arrival_ns: u64,
    /// Exit of the write that forwarded the request's first bytes upstream (0: unknown). The
    /// response's is sent apart ([`SendDone`]): that write is still running when this record
    /// is emitted.
    pub req_sent_ns: u64,
    /// Request bytes read on the downstream; response bytes read on the upstream (so far).
    pub req_bytes: u64,
    pub resp_bytes: u64,
    pub downstream: Tuple,
    pub upstream: Tuple,
    /// `SOCK_*` flags of the downstream (low byte) and upstream (next byte); how the response
    /// was found in bits 16–18 (`PAIRED_BY_*`).
    pub flags: u32,
    /// The upstream connection's RTT as TCP estimated it when the response arrived (an
    /// HTTP/2 stream's: unknown), µs; see [`TcpRtt`].
    pub up_srtt_us: u32,
    pub up_rttvar_us: u32,
    pub up_min_rtt_us: u32,
}
const _: () = assert!(core::mem::size_of::<ExchangeRecord>() == 192);

/// `(ExchangeRecord::flags >> PAIRED_BY_SHIFT) & PAIRED_BY_MASK`: the response was found
/// through the request-forward hint, by adjacency (the response the writing thread had just
/// read), as the oldest that fits of the thread's batch, or of its whole queue.
pub const PAIRED_BY_SHIFT: u32 = 16;
pub const PAIRED_BY_MASK: u32 = 7;
pub const PAIRED_BY_HINT: u32 = 1;
pub const PAIRED_BY_ADJACENCY: u32 = 2;
pub const PAIRED_BY_OLDEST: u32 = 3;
pub const PAIRED_BY_BATCH: u32 = 4;
/// The only response, among the process's recent ones ([`RespPool`]), that the write can
/// forward: found across threads (a work-stealing runtime writes a response from another
/// thread than the one that read it).
pub const PAIRED_BY_SOLE: u32 = 5;
/// By the causal rule of HTTP/2 inside TLS ([`SOCK_MUX`]): the upstream's last read before
/// the response's write, the upstream being the one whose write forwarded the request.
pub const PAIRED_BY_CAUSAL: u32 = 6;

/// Slots of a process's [`RespPool`] (a power of two).
pub const POOL_SLOTS: usize = 16;

/// The responses a process read last, on any of its threads (`PROC_FWD`, key: tgid), a ring
/// that overwrites its oldest: where a response write that its own thread cannot pair looks
/// for the one response it can forward ([`crate::pairing::sole`]). Its threads write it
/// without a lock: a torn slot names a response that is no longer current, and fits nothing.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RespPool {
    pub slots: [FwdSlot; POOL_SLOTS],
    pub tail: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<RespPool>() == 24 * POOL_SLOTS + 8);

/// The write that forwarded an exchange's response returned (`EventKind::SendDone`): joins
/// the [`ExchangeRecord`] of thread `tid` whose `resp_out_ns` equals `out_ns`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendDone {
    pub header: crate::event::EventHeader,
    pub tgid: u32,
    pub tid: u32,
    /// Entry of the write (the exchange's `resp_out_ns`).
    pub out_ns: u64,
    /// Its exit.
    pub sent_ns: u64,
}
const _: () = assert!(core::mem::size_of::<SendDone>() == 40);

/// Per-process pairing counters (`HOP_COUNTS`, per-CPU, key: tgid): the only definition of
/// them, in the kernel and in userspace (summed over CPUs, over a proxy's processes, or the
/// difference of two readings: [`HopCounts::add`], [`HopCounts::delta`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize))]
pub struct HopCounts {
    /// New inbound messages on downstream sockets (requests seen).
    pub requests: u64,
    /// New inbound messages on upstream sockets (responses seen).
    pub responses: u64,
    /// Exchanges paired and sent.
    pub paired: u64,
    /// Response writes that found no response to forward, on their thread's queue or (one
    /// alone) among the process's recent ones.
    pub unmatched_writes: u64,
    /// Exchanges dropped: first exchange of a TLS connection (handshake blurs its timing).
    pub tls_first_dropped: u64,
    /// Exchanges dropped: timestamps out of order (not one request/response alternation).
    pub inconsistent: u64,
    /// Messages on sockets whose role is unknown (opened before the probes attached).
    pub unknown_role: u64,
    /// Requests read on plain HTTP/2 downstreams, one per stream (HEADERS frames opening a
    /// client stream, [`crate::h2`]): counted in [`Self::requests`]; those not paired are the
    /// unpaired reason `http2`.
    pub h2_streams: u64,
    /// Responses dropped from a full forward queue.
    pub queue_overflow: u64,
    /// Exchanges paired through the request-forward hint.
    pub hinted: u64,
    /// Exchanges paired by adjacency: the response the writing thread had just read (the
    /// rest: oldest-first, in the thread's batch or its whole queue, or [`Self::sole`]).
    pub adjacent: u64,
    /// Exchanges paired across threads: the writing thread found nothing, and one response
    /// only, of those the process read last, could be the one it forwards.
    pub sole: u64,
    /// Response writes that found nothing on their thread and more than one response the
    /// process read last that they could forward: left unpaired rather than guessed (counted
    /// in [`Self::unmatched_writes`] too).
    pub ambiguous: u64,
    /// Exchanges whose response carried a hint, and those whose hint named the downstream
    /// that took it: how far this process's hints can be trusted (an event loop's almost
    /// always, a tokio proxy's with delays almost never). Per CPU, as the kernel reads it.
    pub hint_checks: u64,
    pub hint_agrees: u64,
    /// Responses read on an upstream that nothing forwarded before the upstream's next
    /// response arrived (a held one: before the request after next went out,
    /// [`SockState::held`]): a response write (or the read of its request) the probes did not
    /// see as a new message. Without it such a request would vanish from every count (its
    /// request and its response write go unseen together). May overlap
    /// [`Self::queue_overflow`] (a response dropped from a full queue is not forwarded either).
    pub unforwarded: u64,
    /// Exchanges paired whose request was an HTTP/2 stream (of [`Self::h2_streams`]).
    pub h2_paired: u64,
    /// Exchanges paired by the causal rule of HTTP/2 inside TLS ([`PAIRED_BY_CAUSAL`]).
    pub causal: u64,
    /// Response writes on a downstream whose request a write on an HTTP/2-inside-TLS
    /// upstream forwarded by the causal rule, and those whose thread had last read from that
    /// same upstream: how far this process's causal claims can be trusted ([`mux_trusted`]).
    /// An event loop's, relaying in one turn, agree; a proxy that holds a request while its
    /// thread forwards others (a delay, an asynchronous filter) claims it for another's write.
    pub mux_checks: u64,
    pub mux_agrees: u64,
    /// Request forwards on an HTTP/1.x upstream after a read of an HTTP/2-inside-TLS
    /// downstream on the same thread, and those made in the same turn as that read (no block
    /// of the thread in between, no other such downstream read in it): how far the causal
    /// rule on this process's multiplexed downstreams can be trusted
    /// ([`mux_in_trusted`]). An event loop forwards what a read brought before it waits
    /// again; a proxy that holds a request (a delay, an asynchronous filter) waits first.
    pub mux_in_checks: u64,
    pub mux_in_agrees: u64,
    /// TLS connections found multiplexed by their behaviour, not their ClientHello (it
    /// offered HTTP/1.1 too, or no protocol, as Linkerd's proxies do, or came before the
    /// probes): on a downstream, a request forward found the request its thread last read
    /// from it already claimed by another forward, no response having been written to it
    /// since; on an upstream, a write with no read since its last forwarded another
    /// downstream's waiting request than its request in flight's. The causal
    /// rule is judged on it from then on ([`SOCK_MUX`]). A Go runtime shows the same now and
    /// then on HTTP/1.1 (a thread forwarding another's request): there the rule is not
    /// trusted and the connection stays paired by record alternation (docs/hops.md).
    pub mux_by_overlap: u64,
    /// Exchanges dropped: paired by record alternation across an HTTP/2-inside-TLS upstream
    /// that wrote more than once since the request was read (in more than one run, a read
    /// between them, or more than once in the last run). Alternation times the forward at the
    /// last run's first write; with streams in flight at once any of them may have carried it (a runtime that forwards on another thread than the
    /// read's, a request held while later ones go out), and a hop timed from another
    /// stream's write would read long. Dropped, not guessed
    /// ([`crate::pairing::forward_known`]).
    pub stream_unknown: u64,
    /// What trusts the process's hints, its causal claims upstream and downstream, on this
    /// CPU ([`hints_trusted`], [`mux_trusted`], [`mux_in_trusted`]): judgments over a recent
    /// window, not counters (not summed, not exported; their totals are the `*_checks` and
    /// `*_agrees` counters above).
    #[cfg_attr(feature = "user", serde(skip))]
    pub hint_trust: Trust,
    #[cfg_attr(feature = "user", serde(skip))]
    pub mux_trust: Trust,
    #[cfg_attr(feature = "user", serde(skip))]
    pub mux_in_trust: Trust,
}
const _: () = assert!(core::mem::size_of::<HopCounts>() == 192 + 3 * 16);

/// Calls `$m!` with every [`HopCounts`] field, so that field-by-field arithmetic is written
/// once.
#[cfg(feature = "user")]
macro_rules! hop_count_fields {
    ($m:ident) => {
        $m!(
            requests,
            responses,
            paired,
            unmatched_writes,
            tls_first_dropped,
            inconsistent,
            unknown_role,
            h2_streams,
            queue_overflow,
            hinted,
            adjacent,
            sole,
            ambiguous,
            hint_checks,
            hint_agrees,
            unforwarded,
            h2_paired,
            causal,
            mux_checks,
            mux_agrees,
            mux_in_checks,
            mux_in_agrees,
            mux_by_overlap,
            stream_unknown
        )
    };
}

/// A `reason` label value and the [`HopCounts`] counter it reads.
#[cfg(feature = "user")]
pub type UnpairedReason = (&'static str, fn(&HopCounts) -> u64);

#[cfg(feature = "user")]
impl HopCounts {
    /// Why a request seen did not become an exported exchange: the `reason` label value of
    /// `smp_unpaired_messages_total` and the counter it reads. The one table every output
    /// (metrics, top, reports) derives its reasons from.
    pub const UNPAIRED_REASONS: [UnpairedReason; 8] = [
        ("unmatched_write", |c| c.unmatched_writes),
        ("response_not_forwarded", |c| c.unforwarded),
        ("tls_first_exchange", |c| c.tls_first_dropped),
        ("inconsistent", |c| c.inconsistent),
        ("unknown_role", |c| c.unknown_role),
        ("queue_overflow", |c| c.queue_overflow),
        ("http2", |c| c.h2_streams.saturating_sub(c.h2_paired)),
        ("stream_unknown", |c| c.stream_unknown),
    ];

    /// Adds another reading (another CPU's, another process of the same proxy).
    pub fn add(&mut self, o: &HopCounts) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f += o.$f; )* };
        }
        hop_count_fields!(add);
    }

    /// What grew from `before` to `self`, field by field (0 where a counter went down: the
    /// process's entry was evicted and created again).
    pub fn delta(&self, before: &HopCounts) -> HopCounts {
        let mut out = HopCounts::default();
        macro_rules! delta {
            ($($f:ident),*) => { $( out.$f = self.$f.saturating_sub(before.$f); )* };
        }
        hop_count_fields!(delta);
        out
    }

    /// The sum of per-CPU readings.
    pub fn sum<'a>(readings: impl IntoIterator<Item = &'a HopCounts>) -> HopCounts {
        let mut out = HopCounts::default();
        for r in readings {
            out.add(r);
        }
        out
    }

    /// Requests seen that did not become a paired exchange.
    pub fn unpaired(&self) -> u64 {
        self.requests.saturating_sub(self.paired)
    }

    /// Share of requests paired, 0..=1 (1 when none were seen).
    pub fn paired_ratio(&self) -> f64 {
        if self.requests == 0 {
            1.0
        } else {
            self.paired as f64 / self.requests as f64
        }
    }
}

/// Exchanges (on one CPU) a process must have before its hints are judged ([`HopCounts`]).
pub const HINT_JUDGED_AFTER: u64 = 32;

/// How far one kind of a process's claims has proved right lately, on one CPU
/// ([`HopCounts::hint_trust`], [`HopCounts::mux_trust`], [`HopCounts::mux_in_trust`]): its
/// judgments and the agreeing ones, both halved each time [`TRUST_WINDOW`] is reached, so
/// that a claim weighs less the more judgments came after it. Trusted from
/// [`HINT_JUDGED_AFTER`] judgments on while ≥ 31 in 32 agree. [`CLEAN_RUN`] agreeing
/// judgments in a row forgive the disagreements before them beyond that bar: a burst is
/// over. (A running total since the start kept a burst of wrong claims for as long as the
/// run before it had lasted: haproxy's causal claims, right on 98 % of 3 905 checks over a
/// run, lost one CPU's trust to a burst and did not win it back before the run ended, which
/// paired 52 % of its outbound exchanges instead of 91–98 %. Without the forgiving run, a
/// burst at the start cost 32 judgments per disagreement: haproxy's claims disagree 8–17
/// times in each CPU's first 64 judgments, while it opens its upstream connections, though
/// they are right, and seldom after; its outbound paired 73–87 %.)
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trust {
    pub checks: u32,
    pub agrees: u32,
    /// Agreeing judgments since the last disagreement.
    pub run: u32,
    pub _pad: u32,
}

/// Judgments a [`Trust`] counts before it halves them (a power of two).
pub const TRUST_WINDOW: u32 = 1024;

/// Agreeing judgments in a row after which a [`Trust`] forgives the disagreements before
/// them beyond its bar. Claims that agree 90 % of the time at random make such a run once
/// in about 8 500 judgments, 93.75 % once in about 1 000 (each then trusted until the bar
/// fails again: after 0.15 % and 3.7 % of their judgments, unit-tested), 99.4 % once in
/// about 80.
pub const CLEAN_RUN: u32 = 64;

impl Trust {
    /// One more judgment, `agree` 1 or 0; no branch (the write programs' verifier budget).
    #[inline(always)]
    pub fn judge(&mut self, agree: u32) {
        let agree = agree & 1;
        let checks = self.checks.wrapping_add(1);
        let agrees = self.agrees.wrapping_add(agree);
        let run = self.run.wrapping_add(1) * agree;
        // 1 when this judgment completes a clean run (`run` == CLEAN_RUN).
        let clean = (run ^ CLEAN_RUN).wrapping_sub(1) >> 31;
        // The fewest agreeing judgments the bar takes: checks − ⌊checks / 32⌋.
        let least = checks - checks / 32;
        // least − agrees if positive, else 0 (the counts stay far below 2³¹).
        let short = least.wrapping_sub(agrees);
        let short = short & (short >> 31).wrapping_sub(1);
        let agrees = agrees + short * clean;
        // 1 at the window's end (the counts never pass it).
        let half = (checks / TRUST_WINDOW) & 1;
        self.checks = checks >> half;
        self.agrees = agrees >> half;
        self.run = run;
    }

    /// Whether the claims are trusted: 1 or 0, computed without a branch (the read path
    /// carries it into its queue work, where a branch would double the states the verifier
    /// walks). Each comparison is the sign of a difference.
    #[inline(always)]
    pub const fn trusted_bit(&self) -> u64 {
        let (checks, agrees) = (self.checks as u64, self.agrees as u64);
        // checks ≥ HINT_JUDGED_AFTER
        let judged = (HINT_JUDGED_AFTER - 1).wrapping_sub(checks) >> 63;
        // agrees · 32 ≥ checks · 31
        let agree = (checks * 31).wrapping_sub(agrees * 32).wrapping_sub(1) >> 63;
        judged & agree
    }

    /// [`Self::trusted_bit`] as a `bool`.
    #[inline(always)]
    pub const fn trusted(&self) -> bool {
        self.trusted_bit() != 0
    }
}

/// Whether a process's hints agree often enough ([`Trust`]) to come before adjacency.
/// Envoy's agree on 99.7–100 % of exchanges, ours with delays on 0.3–1.3 % on the host but
/// on 90 % in an emulated guest, where trusting them (at ≥ 3 in 4) paired 16 of 600 wrongly.
pub const fn hints_trusted(c: &HopCounts) -> bool {
    c.hint_trust.trusted()
}

/// Whether a process's causal claims ([`HopCounts::mux_checks`]) agree often enough
/// ([`Trust`]) for the causal rule to pair its exchanges; before, and when they do not, its
/// HTTP/2-inside-TLS upstreams are paired by record alternation.
pub const fn mux_trusted(c: &HopCounts) -> bool {
    c.mux_trust.trusted()
}

/// Whether a process's causal claims on its HTTP/2-inside-TLS downstreams
/// ([`HopCounts::mux_in_checks`]) agree often enough ([`Trust`]) for the causal rule to pair
/// their responses; before, and when they do not, record alternation pairs them.
pub const fn mux_in_trusted(c: &HopCounts) -> bool {
    c.mux_in_trust.trusted()
}

/// Capacity of `SOCK_STATE` (LRU: a proxy with more live connections loses the oldest idle
/// ones' state, never memory).
pub const MAX_SOCK_STATE: u32 = 131072;
/// Capacity of `PASSIVE_SK`: accepted TCP sockets not yet seen carrying data (LRU: a socket
/// nobody tracked reads is forgotten).
pub const MAX_PASSIVE_SK: u32 = 16384;
/// Slots of `SK_FILTER`, the counting filter in front of `SK_INO` (a power of two; 512 KiB).
pub const SK_FILTER_SLOTS: u32 = 65536;

/// The `SK_FILTER` slot of socket `sk` (its `struct sock *`): a multiplicative hash, since
/// socket objects sit at a fixed stride in their slab (their low bits alike).
#[inline(always)]
pub const fn sk_slot(sk: u64) -> u32 {
    const { assert!(SK_FILTER_SLOTS.is_power_of_two() && SK_FILTER_SLOTS <= 1 << 16) };
    (sk.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 48) as u32 & (SK_FILTER_SLOTS - 1)
}

/// Capacity of `THREADS`: the threads of the tracked proxies that use sockets (an Envoy
/// sidecar has its workers and a few more; a node runs at most a few hundred sidecars). Its
/// entries (4.2 KiB, most of it the queue and the [`MuxLog`]) are preallocated: 33 MiB.
pub const MAX_THREADS_STATE: u32 = 8192;

/// Writes a thread's [`MuxLog`] remembers (a power of two): a request's forward is looked up
/// when its response is written, so the log must outlast the writes of the requests in
/// flight meanwhile. 16 were written over before the responses of 0.05-0.2 % of an Envoy
/// worker's requests came, on a busy 2-core machine. While its peer sidecar stalls, each
/// request read goes out on a write of its own: 40 in a 20 ms stall at 2 000 rps, more
/// than 32 held (one run with the peer stopped beside a busy loop lost 6.5 % of the
/// outbound's requests so; not reproduced since, at 32 or 128).
pub const MUX_LOG_SLOTS: usize = 128;
/// Writes after a request's read [`crate::pairing::forward_of`] looks through for the first
/// in its namespace (a node proxy's thread serves several pods).
pub const MUX_LOG_SCAN: u32 = 4;

/// A thread's last writes on HTTP/2-inside-TLS upstreams ([`SOCK_MUX`]), numbered from its
/// first (`seq`: how many so far; slot `seq % MUX_LOG_SLOTS` is the next): by the causal
/// rule, such a write forwards every request the thread read before it that no such write
/// forwarded yet. A request read on an HTTP/1.x downstream notes the count
/// ([`SockState::mux_reader`]); the write of that number, the thread's first after the read,
/// is its forward, looked up when its response is written
/// ([`crate::pairing::forward_of`]): as many requests as a turn reads, where a list of them
/// marked at the write would hold a few (an Envoy worker catching up after a stall reads
/// dozens before its one write).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MuxLog {
    pub seq: u32,
    pub _pad: u32,
    /// Each write's upstream inode (a socket's inode number is 32 bits: `get_next_ino`),
    /// entry and network namespace.
    pub ino: [u32; MUX_LOG_SLOTS],
    pub t_out: [u64; MUX_LOG_SLOTS],
    pub net: [u64; MUX_LOG_SLOTS],
}
const _: () = assert!(core::mem::size_of::<MuxLog>() == 20 * MUX_LOG_SLOTS + 8);

impl Default for MuxLog {
    fn default() -> Self {
        MuxLog {
            seq: 0,
            _pad: 0,
            ino: [0; MUX_LOG_SLOTS],
            t_out: [0; MUX_LOG_SLOTS],
            net: [0; MUX_LOG_SLOTS],
        }
    }
}

/// What the probes keep per thread of the tracked processes (`THREADS`, key: tid): the socket
/// syscall it is in, what it read, the responses it read and has not forwarded. One map
/// entry, so that a probe run touches one per-thread entry, not three; the fields most runs
/// use (the call in flight, the read requests, the queue's indices) share its first 160
/// bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadState {
    pub pending: PendingSyscall,
    pub last: ThreadLast,
    pub fwd: FwdQueue,
    pub mux_log: MuxLog,
}
const _: () = assert!(
    core::mem::size_of::<ThreadState>()
        == core::mem::size_of::<PendingSyscall>()
            + core::mem::size_of::<ThreadLast>()
            + core::mem::size_of::<FwdQueue>()
            + core::mem::size_of::<MuxLog>()
);

#[cfg(feature = "user")]
crate::user_pod!(
    SendDone,
    Tuple,
    SockState,
    FwdSlot,
    FwdQueue,
    ThreadLast,
    ThreadState,
    ExchangeRecord,
    HopCounts
);

#[cfg(all(test, feature = "user"))]
mod tests {
    use super::*;

    #[test]
    fn sockets_of_one_slab_spread_over_the_filter() {
        // 4 096 sockets at the stride of a `tcp_sock` slab (2 304 bytes), from a kernel
        // address: few share a slot, so an untracked socket rarely meets a tracked one's.
        let base = 0xffff_8881_0a00_0000u64;
        let mut used = [false; SK_FILTER_SLOTS as usize];
        let mut distinct = 0;
        for i in 0..4096u64 {
            let slot = sk_slot(base + i * 2304);
            assert!(slot < SK_FILTER_SLOTS);
            distinct += usize::from(!core::mem::replace(&mut used[slot as usize], true));
        }
        // Uniform hashing would leave about 4 096 − 126 distinct slots.
        assert!(distinct > 3900, "{distinct} distinct slots");
    }

    #[test]
    fn add_and_delta_cover_every_field() {
        // Each field a distinct value: a field missing from the list would stay 0.
        let mut a = HopCounts::default();
        macro_rules! fill {
            ($($f:ident),*) => {{ let mut v = 1; $( a.$f = v; v += 1; )* let _ = v; }};
        }
        hop_count_fields!(fill);
        let mut twice = a;
        twice.add(&a);
        assert_eq!(twice.delta(&a), a);
        assert_eq!(HopCounts::sum([&a, &a]), twice);
        assert_eq!(
            a.delta(&twice),
            HopCounts::default(),
            "a counter that went down gains 0"
        );
        let fields = (core::mem::size_of::<HopCounts>() - 3 * core::mem::size_of::<Trust>()) / 8;
        let mut n = 0;
        macro_rules! count {
            ($($f:ident),*) => { $( let _ = a.$f; n += 1; )* };
        }
        hop_count_fields!(count);
        assert_eq!(n, fields, "hop_count_fields! lists every field");
    }

    #[test]
    fn unpaired_is_requests_minus_paired() {
        let c = HopCounts {
            requests: 100,
            paired: 97,
            ..Default::default()
        };
        assert_eq!(c.unpaired(), 3);
        assert!((c.paired_ratio() - 0.97).abs() < 1e-9);
        assert_eq!(HopCounts::default().paired_ratio(), 1.0);
    }
}
