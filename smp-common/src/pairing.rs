//! The pure decisions of per-hop pairing (docs/hops.md): what a syscall's first bytes are,
//! which socket role they reveal, whether a queued response can be what a response write
//! forwards, which response of a thread's queue a write takes, the request FIFO of a thread,
//! the one response of the process's recent ones a write can forward across threads.
//!
//! The kernel program (`smp-ebpf/src/probes/hop.rs`) fetches map values and calls these;
//! nothing here touches a map: socket states are read through [`SockStates`]. So the rules
//! run in host unit tests exactly as in the kernel. Every function is `#[inline(always)]`: a
//! BPF-to-BPF call would change what the verifier walks, and its frame counts against the
//! 512-byte stack on kernels before 6.8 (`smp-agent`'s stack test).

use crate::hop::{
    FwdQueue, FwdSlot, HeldResponse, MuxLog, MuxRead, RespPool, SockState, ThreadLast, DIR_IN,
    DIR_OUT, FWD_SLOTS, HELD_RESPONSES, MUX_LOG_SCAN, MUX_LOG_SLOTS, MUX_WRITES,
    PAIRED_BY_ADJACENCY, PAIRED_BY_BATCH, PAIRED_BY_HINT, PAIRED_BY_OLDEST, POOL_SLOTS, REQ_SLOTS,
    ROLE_DOWNSTREAM, ROLE_UNKNOWN, ROLE_UPSTREAM, SOCK_AGED, SOCK_H2, SOCK_MUX, SOCK_STREAM,
    SOCK_TLS,
};

/// What the first bytes of a syscall's data look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// TLS handshake/CCS/alert record; `true` for a ClientHello.
    TlsControl(bool),
    /// A TLS application data record's header: what a connection opened before the probes
    /// shows of its TLS.
    TlsData,
    HttpRequest,
    HttpResponse,
    H2Preface,
    Other,
}

/// Classifies the first (up to 8) bytes `b` of a syscall that moved `len` bytes.
#[inline(always)]
pub fn classify(b: &[u8; 8], len: u64) -> Class {
    // A 5-byte read is a record header alone (OpenSSL and BoringSSL read the header first):
    // a handshake record then is taken for a ClientHello (only the client's first flight
    // reaches a socket whose role is still unknown).
    if len >= 5 && b[1] == 0x03 && (b[0] == 0x16 || b[0] == 0x14 || b[0] == 0x15) {
        return Class::TlsControl(b[0] == 0x16 && (len == 5 || b[5] == 0x01));
    }
    if len >= 5 && b[0] == 0x17 && b[1] == 0x03 {
        return Class::TlsData;
    }
    if len < 4 {
        return Class::Other;
    }
    match [b[0], b[1], b[2], b[3]] {
        [b'H', b'T', b'T', b'P'] => Class::HttpResponse,
        [b'P', b'R', b'I', b' '] => Class::H2Preface,
        [b'G', b'E', b'T', b' ']
        | [b'P', b'O', b'S', b'T']
        | [b'P', b'U', b'T', b' ']
        | [b'H', b'E', b'A', b'D']
        | [b'D', b'E', b'L', b'E']
        | [b'P', b'A', b'T', b'C']
        | [b'O', b'P', b'T', b'I'] => Class::HttpRequest,
        _ => Class::Other,
    }
}

/// The role a socket of unknown role takes from a TLS record: a ClientHello read makes it a
/// downstream, one written an upstream; any other record says nothing.
#[inline(always)]
pub fn role_from_tls(client_hello: bool, ingress: bool) -> u8 {
    match (client_hello, ingress) {
        (true, true) => ROLE_DOWNSTREAM,
        (true, false) => ROLE_UPSTREAM,
        (false, _) => ROLE_UNKNOWN,
    }
}

/// The flags socket `s`, not known as TLS, takes from a read (`ingress`; the probes do not
/// classify writes) of bytes of class `class` (`new_msg`: they start a message): its first
/// read's bytes naming nothing (a record of TLS application data, or a record's body read
/// after its header) say its handshake, if any, came before the probes saw it (opened
/// before they attached, or before its process was tracked: its role may be known from its
/// accept): [`SOCK_AGED`]; a message of an aged socket that starts with a record of
/// application data says it is TLS ([`SOCK_TLS`]), which its records alone tell. Only a
/// message's start: an aged plaintext connection's body bytes (one read in 65 536 of a
/// binary body starts `0x17 0x03`) never do, as its messages start with a method, `HTTP` or
/// an HTTP/2 frame of a few KB. A socket whose first read was HTTP in the clear, or
/// HTTP/2's preface, is never taken for TLS.
#[inline(always)]
pub fn unseen_handshake_flags(s: &SockState, class: Class, ingress: bool, new_msg: bool) -> u8 {
    if !ingress || s.flags & (SOCK_TLS | SOCK_H2) != 0 {
        return 0;
    }
    let first_names_nothing = s.in_start == 0 && matches!(class, Class::TlsData | Class::Other);
    if s.flags & SOCK_AGED == 0 && !first_names_nothing {
        0
    } else if class == Class::TlsData && new_msg {
        SOCK_AGED | SOCK_TLS
    } else {
        SOCK_AGED
    }
}

/// The role a socket of unknown role takes from the first bytes of a new message: the side
/// that reads requests (or writes responses) is a downstream; the h2 client sends the preface.
#[inline(always)]
pub fn role_from_http(class: Class, ingress: bool) -> u8 {
    match (class, ingress) {
        (Class::HttpRequest | Class::H2Preface, true) | (Class::HttpResponse, false) => {
            ROLE_DOWNSTREAM
        }
        (Class::HttpRequest | Class::H2Preface, false) | (Class::HttpResponse, true) => {
            ROLE_UPSTREAM
        }
        _ => ROLE_UNKNOWN,
    }
}

/// The role of a socket first seen mid-connection (opened before the probes attached: no
/// `accept` or `connect` was seen) whose bytes name no side (TLS application data), from its
/// ports: when exactly one end's port lies in the host's ephemeral range (`first..=last`,
/// where `connect` picks a client's port), that end is the client's. A socket whose local
/// port is ephemeral connected (an upstream); one whose peer's is, was accepted (a
/// downstream). Both or neither in the range, or the range unknown (0): unknown, as before.
#[inline(always)]
pub fn role_from_ports(local: u16, remote: u16, first: u16, last: u16) -> u8 {
    let ephemeral = |p: u16| first != 0 && first <= p && p <= last;
    match (ephemeral(local), ephemeral(remote)) {
        (true, false) => ROLE_UPSTREAM,
        (false, true) => ROLE_DOWNSTREAM,
        _ => ROLE_UNKNOWN,
    }
}

/// Socket states by inode, as the kernel's `SOCK_STATE` (LRU: an entry may be gone).
pub trait SockStates {
    fn get(&self, ino: u64) -> Option<&SockState>;
}

/// When a message read at `now` reached its socket: `arrived` (`tcp_probe`'s stamp), unless
/// unknown (0) or later than the read (a stamp of the next message, raced in).
#[inline(always)]
pub fn arrival(arrived: u64, now: u64) -> u64 {
    if arrived != 0 && arrived <= now {
        arrived
    } else {
        now
    }
}

/// Whether a response read at `t_in`, its request forwarded at `req_out`, can be what a
/// response write at `t_out` forwards to a downstream whose current request was read at
/// `d_in` (0: none yet). HTTP/1.1 orders one exchange: request read (`d_in`) ≤ its forward
/// (`req_out`) ≤ the response read (`t_in`) ≤ its forward (`t_out`). A response whose request
/// was forwarded before this downstream's request was read belongs to another downstream (or
/// to this one's previous request); taken, it would leave its own without it. A downstream
/// that has read no request yet (a TLS 1.3 server writing session tickets) forwards nothing.
#[inline(always)]
pub fn can_forward(req_out: u64, t_in: u64, d_in: u64, t_out: u64) -> bool {
    d_in != 0 && req_out >= d_in && t_in >= req_out && t_in <= t_out
}

/// What an exchange takes from its upstream's side: the response and its request's forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTimes {
    pub req_out: u64,
    /// When its request's forward returned (0: unknown).
    pub req_sent: u64,
    pub resp_in: u64,
    pub resp_arrival: u64,
    pub resp_bytes: u64,
    /// A write of the upstream other than `req_out` that may have forwarded the request: its
    /// last before the run `req_out` started, or `req_out` itself when that run had a second
    /// (0: none known; [`SockState::run_before`]).
    pub run_before: u64,
}

/// Whether upstream `u`'s response read at `t_in` can still be forwarded, and as what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waits<'a> {
    No,
    /// The socket's last data read, not forwarded yet, no request forwarded since.
    Current,
    /// Overtaken by a later request ([`SockState::held`]).
    Held(&'a HeldResponse),
}

/// [`Waits`] of upstream `u`'s response read at `t_in`.
#[inline(always)]
pub fn waits_as(u: &SockState, t_in: u64) -> Waits<'_> {
    if t_in == 0 {
        Waits::No
    } else if u.in_start == t_in && u.last_dir == DIR_IN && u.fwd_in != t_in {
        Waits::Current
    } else {
        match u.held.iter().find(|h| h.in_start == t_in) {
            Some(h) => Waits::Held(h),
            None => Waits::No,
        }
    }
}

/// Upstream `u`'s response read at `t_in` if a write can still forward it: its current one
/// (the socket's last data read, not forwarded yet) or the one it holds
/// ([`SockState::held`]).
#[inline(always)]
pub fn waiting_response(u: &SockState, t_in: u64) -> Option<UpstreamTimes> {
    let h = match waits_as(u, t_in) {
        Waits::No => return None,
        Waits::Held(h) => h,
        Waits::Current => {
            return Some(UpstreamTimes {
                req_out: u.out_start,
                req_sent: if u.out_sent >= u.out_start {
                    u.out_sent
                } else {
                    0
                },
                resp_in: t_in,
                resp_arrival: u.in_arrival.min(t_in),
                resp_bytes: u.in_bytes,
                run_before: u.run_before,
            })
        }
    };
    Some(UpstreamTimes {
        req_out: h.out_start,
        req_sent: if h.sent_after == 0 {
            0
        } else {
            h.out_start + u64::from(h.sent_after)
        },
        resp_in: t_in,
        resp_arrival: t_in - u64::from(h.in_wait).min(t_in),
        resp_bytes: u64::from(h.in_bytes),
        run_before: match h.run_lead {
            0 => 0,
            lead => h.out_start.saturating_sub(u64::from(lead - 1)),
        },
    })
}

/// Whether an exchange whose request was read at `req_in` knows the write that forwarded it
/// (`r.req_out`, by record alternation: the first of the upstream's last run of writes
/// before the response). Not when another write after that read could have carried it
/// (`r.run_before`, kept for HTTP/2-inside-TLS upstreams only: the last write of an earlier
/// run, or the run's own first when the run has more writes): with streams in flight at
/// once any of them may be the request's, and timing it from the run's first would add the
/// time between to its hop (a runtime that moves the forward to another thread than the
/// read's, a request held while later ones go out: docs/hops.md, Known limits). Such an
/// exchange is dropped and counted (`stream_unknown`).
#[inline(always)]
pub fn forward_known(r: &UpstreamTimes, req_in: u64) -> bool {
    r.run_before < req_in
}

/// Upstream `u`, HTTP/2 inside TLS ([`crate::hop::SOCK_MUX`]), starts a run of writes (its
/// newest [`SockState::mux_writes`] entry): the write before it is the last of the run before
/// ([`SockState::run_before`]).
#[inline(always)]
pub fn mux_run_starts(u: &mut SockState) {
    let before = (u.mux_seq.wrapping_sub(2) as usize) % MUX_WRITES;
    u.run_before = match u.mux_writes.get(before) {
        Some(at) if u.mux_seq >= 2 => *at,
        _ => 0,
    };
}

/// What downstream `d`'s response write takes from `u`, the HTTP/2-inside-TLS upstream
/// ([`crate::hop::SOCK_MUX`]) whose write forwarded `d`'s request (`d.mux_peer`): by the causal rule, the
/// response arrived in `u`'s last read before this write (its records say nothing finer), if
/// that read came after the forward. The request's forward is that write's entry, sent when
/// it returned if `u` still remembers it ([`SockState::mux_writes`]).
#[inline(always)]
pub fn mux_response(u: &SockState, d: &SockState) -> Option<UpstreamTimes> {
    if d.mux_out == 0 || u.mux_in < d.mux_out {
        return None;
    }
    let mut req_sent = 0;
    for (at, after) in u.mux_writes.iter().zip(u.mux_sent_after) {
        if *at == d.mux_out && after != 0 {
            req_sent = d.mux_out + u64::from(after);
        }
    }
    Some(UpstreamTimes {
        req_out: d.mux_out,
        req_sent,
        resp_in: u.mux_in,
        resp_arrival: u.mux_arrival.min(u.mux_in),
        resp_bytes: u.in_bytes,
        // The causal rule names the forward itself.
        run_before: 0,
    })
}

/// HTTP/2-inside-TLS upstream `u` ([`crate::hop::SOCK_MUX`]) has a write entered at `t_out`:
/// remembered in place of its oldest ([`SockState::mux_writes`]).
#[inline(always)]
pub fn mux_write(u: &mut SockState, t_out: u64) {
    if u.last_dir == DIR_OUT {
        // A second write in the run: the run's first is not the only one that may forward.
        u.run_before = u.out_start;
    }
    remember_write(u, t_out);
}

/// A write of HTTP/2-inside-TLS socket `s` ([`crate::hop::SOCK_MUX`]) entered at `t_out`:
/// remembered in place of its oldest ([`SockState::mux_writes`]), its return not yet known.
#[inline(always)]
pub fn remember_write(s: &mut SockState, t_out: u64) {
    let i = s.mux_seq as usize % MUX_WRITES;
    if let (Some(at), Some(after)) = (s.mux_writes.get_mut(i), s.mux_sent_after.get_mut(i)) {
        *at = t_out;
        *after = 0;
    }
    s.mux_seq = s.mux_seq.wrapping_add(1);
}

/// A write on HTTP/2-inside-TLS downstream `d` whose write before entered at `after`, as
/// the causal rule searches for the responses it forwards: those read since `from`. When
/// `d` remembers that write's return and the write before it ([`SockState::mux_writes`]),
/// `from` is the entry of the one before, and a response read in `[from, after)` is the
/// write before's to forward (entered at `after`, returned at `late_sent`), left to this
/// write because that one paired all it could ([`crate::h2::MUX_IN_ROUNDS`] per chain,
/// twice): an Envoy worker catching up after a stall forwards a hundred responses and more
/// in one write. Otherwise `from` is `after` and nothing is late.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CausalSearch {
    pub from: u64,
    pub late_sent: u64,
}

/// [`CausalSearch`] of a write on HTTP/2-inside-TLS downstream `d` whose write before
/// entered at `after` (0: none).
#[inline(always)]
pub fn causal_search(d: &SockState, after: u64) -> CausalSearch {
    let mut late_sent = 0;
    let mut from = 0;
    for (at, sent_after) in d.mux_writes.iter().zip(d.mux_sent_after) {
        if *at == after && sent_after != 0 {
            late_sent = after + u64::from(sent_after);
        } else if *at < after && *at > from {
            from = *at;
        }
    }
    if after == 0 || late_sent == 0 || from == 0 {
        return CausalSearch {
            from: after,
            late_sent: 0,
        };
    }
    CausalSearch { from, late_sent }
}

/// The write of `u` entered at `t_out` returned at `now`, if `u` still remembers it.
#[inline(always)]
pub fn mux_write_returned(u: &mut SockState, t_out: u64, now: u64) {
    for (at, after) in u.mux_writes.iter().zip(u.mux_sent_after.iter_mut()) {
        if *at == t_out && now >= t_out {
            *after = u32::try_from(now - t_out).unwrap_or(u32::MAX).max(1);
        }
    }
}

/// What the causal rule makes of a request forward on an HTTP/1.x upstream by a thread that
/// has read an HTTP/2-inside-TLS downstream ([`ThreadLast::mux_down`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MuxClaim {
    /// Not the rule's to judge: no such read, that downstream is gone or elsewhere, or the
    /// forward's alternation hint names another downstream (a request read in the clear).
    NotJudged,
    /// The forward did not follow the read in the same turn (the thread blocked since, read
    /// another such downstream in that turn, or another thread read the downstream since):
    /// which request it carries is not known. (Not judged so when it is its connection's
    /// first: that forward waits for the connection to open.)
    Disagrees,
    /// The same turn: it forwards a request that read brought (the downstream's inode).
    Agrees(u64),
}

impl ThreadLast {
    /// The thread read HTTP/2-inside-TLS downstream `d_ino` at `now`, having blocked
    /// `blocks` times so far ([`crate::cpu::ThreadCpu::blocks`]): a read of another such
    /// downstream in the same turn makes the turn's forwards ambiguous.
    #[inline(always)]
    pub fn mux_read(&mut self, d_ino: u64, now: u64, blocks: u32) {
        let same_turn = self.mux_down != 0 && self.mux_down_blocks == blocks;
        self.mux_down_mixed =
            u32::from(same_turn && (self.mux_down != d_ino || self.mux_down_mixed != 0));
        self.mux_down = d_ino;
        self.mux_down_in = now;
        self.mux_down_blocks = blocks;
    }

    /// A request forward entered at `t_out` on HTTP/1.x upstream `u`, its alternation hint
    /// `u.hint`, by this thread having blocked `blocks` times: [`MuxClaim`]. `d` is the state
    /// of the downstream it last read ([`Self::mux_down`]).
    #[inline(always)]
    pub fn mux_claim(
        &self,
        d: Option<&SockState>,
        blocks: u32,
        t_out: u64,
        u: &SockState,
    ) -> MuxClaim {
        let (u_net, hint) = (u.net, u.hint);
        let Some(d) = d.filter(|_| self.mux_down != 0) else {
            return MuxClaim::NotJudged;
        };
        if d.flags & SOCK_MUX == 0
            || d.role != ROLE_DOWNSTREAM
            || !same_netns(d.net, u_net)
            || d.mux_in == 0
            || d.mux_in > t_out
            || (hint != 0 && hint != self.mux_down)
        {
            return MuxClaim::NotJudged;
        }
        if self.mux_down_mixed == 0
            && self.mux_down_blocks == blocks
            && d.mux_in == self.mux_down_in
        {
            MuxClaim::Agrees(self.mux_down)
        } else if u.out_start == 0 {
            MuxClaim::NotJudged
        } else {
            MuxClaim::Disagrees
        }
    }
}

/// A thread's turn: its id and how many times it had blocked
/// ([`crate::cpu::ThreadCpu::blocks`]). Two syscalls of one thread with no block between them
/// share it (an event loop's reads and the forwards it runs after them, before it waits again).
#[inline(always)]
pub const fn turn(tid: u32, blocks: u32) -> u64 {
    ((tid as u64) << 32) | blocks as u64
}

/// The turn of a request forward on HTTP/1.x upstream `u` entered in turn `now`
/// ([`SockState::fwd_turn`]): the connection's first forward waits for it to open (an event
/// loop reads a request, connects, and writes the request once the connect completes, a
/// turn or more later), so its request was read in the turn of its connect, `connect` (0:
/// the connect not seen, opened before the probes); any later forward's, in `now`.
#[inline(always)]
pub const fn forward_turn(u: &SockState, connect: u64, now: u64) -> u64 {
    if u.out_start == 0 && connect != 0 {
        connect
    } else {
        now
    }
}

/// The judgement of a causal claim on an HTTP/2-inside-TLS upstream, at the response write
/// of the downstream whose request it forwarded (`peer`, [`SockState::mux_peer`]): the
/// claim agrees when the writing thread last read response data from that upstream
/// (`last_up`, [`ThreadLast::up`]), or read it in this very turn (`turns` gives the
/// upstream's [`SockState::turn_read`] turn and the writer's; asked only when the last read
/// does not tell, as each is a map lookup in the write's program). An event loop reads the
/// upstreams that are ready, then writes the responses they brought (haproxy's one thread,
/// one TLS connection per client connection: the last upstream read is often another's);
/// a runtime that moves a response to another thread, or holds it, writes in another turn.
#[inline(always)]
pub fn causal_agrees(last_up: u64, peer: u64, turns: impl FnOnce() -> (u64, u64)) -> bool {
    if last_up == peer {
        return true;
    }
    let (peer_turn, now) = turns();
    peer_turn != 0 && peer_turn == now
}

/// HTTP/2-inside-TLS socket `d` was read at `exit` in turn `turn`
/// ([`SockState::turn_read`]).
#[inline(always)]
pub fn note_mux_read(d: &mut SockState, exit: u64, turn: u64) {
    d.turn_read = MuxRead { exit, turn };
}

/// The read of HTTP/2-inside-TLS downstream `d` that carried the request of upstream `u`'s
/// response read at `t_in`, when the causal rule could not name the downstream (its thread
/// read several such downstreams in the turn) and record alternation paired the response's
/// write with it: `d`'s last read, if it was in the turn of the request's forward
/// ([`SockState::fwd_turn`]) and before it. An event loop (haproxy) reads, then forwards in the
/// same turn; alternation alone takes the first read since the downstream's last write, which
/// on HTTP/2 may be a flow-control record (WINDOW_UPDATE after a response) that came long
/// before the request. 0 (none) when `d`'s last read is of another turn (a proxy that holds
/// requests, or hands them to another thread, or a read of `d` since), or the response is not
/// `u`'s current one (a held response: `fwd_turn` is of the request that overtook it):
/// alternation's read stands.
///
/// `d` is such a downstream (`SOCK_MUX`: the caller's test). An unset turn is 0 on both
/// sides, whose read is 0: none.
#[inline(always)]
pub fn read_in_turn(d: &SockState, u: &SockState, t_in: u64) -> u64 {
    let r = d.turn_read;
    // Zero when the read is of the forward's turn and the response `u`'s current one, no
    // request forward since (that forward holds it). One test of the three, not three
    // branches: this runs inside the write programs, whose verifier walks multiply by them.
    let differs = (r.turn ^ u.fwd_turn) | (u.in_start ^ t_in) | u64::from(u.last_dir ^ DIR_IN);
    if differs == 0 && r.exit <= u.out_start {
        r.exit
    } else {
        0
    }
}

/// The request of an exchange the causal rule claimed from an HTTP/2-inside-TLS downstream
/// ([`SockState::mux_peer`]): that downstream, its read before the forward (a lower bound of
/// the request's time inside) and when that read's data reached it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MuxRequest {
    pub peer: u64,
    pub read: u64,
    pub arrival: u64,
}

/// The request of upstream `u`'s response read at `t_in`, if that response still waits for
/// its forward ([`waits_as`]) and the causal rule claimed its request: the upstream's current
/// claim ([`SockState::mux_peer`]; set with `mux_in`), or the one kept with the response it
/// holds ([`HeldResponse::mux_peer`]).
#[inline(always)]
pub fn mux_request(u: &SockState, t_in: u64) -> Option<MuxRequest> {
    let (peer, read, wait) = match waits_as(u, t_in) {
        Waits::No => return None,
        Waits::Current => (
            u.mux_peer,
            u.mux_in,
            u.mux_in - arrival(u.mux_arrival, u.mux_in),
        ),
        Waits::Held(h) => {
            let read = h.out_start.saturating_sub(u64::from(h.mux_lead));
            (h.mux_peer, read, u64::from(h.mux_wait).min(read))
        }
    };
    if peer == 0 {
        return None;
    }
    Some(MuxRequest {
        peer,
        read,
        arrival: read - wait,
    })
}

impl FwdQueue {
    /// For a write on HTTP/2-inside-TLS downstream `d_ino` entered at `t_out` that searches
    /// the responses read since `after` ([`CausalSearch::from`]): the first of the queue's
    /// [`HINT_WINDOW`] oldest slots whose upstream's current request the causal rule claimed
    /// from `d_ino` and whose response, read since `after`, waits in order for this write
    /// (dead slots met on the way are cleared). Not taken. A response read before `after`
    /// was an earlier write's to forward: dropped (a write the rule did not pair, its
    /// process not trusted then, took it or not; which is not known).
    #[inline(always)]
    pub fn find_causal(
        &mut self,
        d_ino: u64,
        after: u64,
        t_out: u64,
        states: &impl SockStates,
    ) -> Option<u32> {
        let mut i = self.head;
        for _ in 0..HINT_WINDOW {
            if i == self.tail {
                break;
            }
            if let Some(slot) = self.slots.get_mut(i as usize & (FWD_SLOTS - 1)) {
                if slot.ino != 0 {
                    match causal_fit(slot, d_ino, after, t_out, states) {
                        Fit::Dead => slot.ino = 0,
                        Fit::Yes => return Some(i),
                        Fit::Other => {}
                    }
                }
            }
            i = i.wrapping_add(1);
        }
        None
    }
}

/// Whether the response of `slot` (a live slot) is one a write on HTTP/2-inside-TLS
/// downstream `d_ino` entered at `t_out`, searching the responses read since `after`
/// ([`CausalSearch::from`]), pairs by the causal rule ([`FwdQueue::find_causal`],
/// [`find_causal_across`]): its upstream's current request was claimed from `d_ino`, and its
/// response, read since `after`, waits in order for this write (`Yes`); `Dead`: no longer
/// forwardable by anyone.
#[inline(always)]
fn causal_fit(slot: &FwdSlot, d_ino: u64, after: u64, t_out: u64, states: &impl SockStates) -> Fit {
    // One test of which response it is ([`waits_as`]), not one per fact: this runs in
    // loops of the write programs, whose verifier walks multiply by its branches.
    let Some(u) = states.get(slot.ino) else {
        return Fit::Dead;
    };
    let (req_out, peer) = match waits_as(u, slot.t_in) {
        Waits::No => return Fit::Dead,
        Waits::Current => (u.out_start, u.mux_peer),
        Waits::Held(h) => (h.out_start, h.mux_peer),
    };
    // (A claimed request was read before its forward: the claim's own test.)
    let t_in = slot.t_in;
    if peer != d_ino {
        Fit::Other
    } else if t_in < after {
        // Read before the writes this one may pair for ([`CausalSearch`]): an earlier
        // write's, which could not pair it. No write of this downstream takes it now, and no
        // other's may: dropped from the queue, where it would keep the search from the
        // responses behind it (counted as `unforwarded` when its connection gives it up).
        Fit::Dead
    } else if t_in >= req_out && t_in <= t_out {
        Fit::Yes
    } else {
        Fit::Other
    }
}

/// [`FwdQueue::find_causal`] over the responses the process read last on any of its threads
/// (`pool`, [`RespPool`]), for a write whose own thread's queue holds none: a runtime whose
/// connection task writes what its stream tasks read on other threads (ztunnel's HBONE
/// server). The first that fits; not taken (the exchange marks it forwarded, which kills its
/// copies everywhere); `ino` 0: none (a plain value: see [`sole`]).
#[inline(always)]
pub fn find_causal_across(
    pool: &RespPool,
    d_ino: u64,
    after: u64,
    t_out: u64,
    states: &impl SockStates,
) -> FwdSlot {
    for slot in &pool.slots {
        // (A response read before `after` is never claimed: no state lookup for it.)
        if slot.ino != 0
            && slot.t_in >= after
            && causal_fit(slot, d_ino, after, t_out, states) == Fit::Yes
        {
            return *slot;
        }
    }
    FwdSlot::default()
}

/// Marks upstream `u`'s response read at `t_in` forwarded (taken by a response write): its
/// queued copies on any thread are dead from now on.
#[inline(always)]
pub fn mark_forwarded(u: &mut SockState, t_in: u64) {
    for h in &mut u.held {
        if h.in_start == t_in {
            *h = HeldResponse::default();
        }
    }
    if u.in_start == t_in {
        u.fwd_in = t_in;
    }
}

/// Upstream `u` starts forwarding its next request: a current response no write has forwarded
/// yet is held ([`SockState::held`]); the held ones age by one request, and one overtaken by
/// more than [`HELD_RESPONSES`] requests now is given up. Returns whether one was given up
/// (never forwarded: counted as `unforwarded`).
///
/// A TLS upstream before its first exchange holds nothing: what it read before its first
/// request went out is a TLS 1.3 server's session tickets, not a response. Held, any
/// downstream whose request was read before the handshake could take them (measured: 3–5 of
/// 6 400 of our proxy's mTLS exchanges then paired the connection's first request, not
/// dropped, with the handshake's last write as its forward).
#[inline(always)]
pub fn hold_response(u: &mut SockState) -> bool {
    let given_up = u.held[HELD_RESPONSES - 1].in_start != 0;
    for k in (1..HELD_RESPONSES).rev() {
        u.held[k] = u.held[k - 1];
    }
    let before_first_tls = u.flags & SOCK_TLS != 0 && u.exchanges == 0;
    let waiting = u.last_dir == DIR_IN && u.in_start != 0 && u.fwd_in != u.in_start;
    u.held[0] = if waiting && !before_first_tls {
        let sat = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        // The causal rule's claim on it, before the next request's replaces it.
        let (mux_peer, mux_lead, mux_wait) = match mux_request(u, u.in_start) {
            Some(c) if c.read <= u.out_start && u.out_start - c.read <= u64::from(u32::MAX) => (
                c.peer,
                (u.out_start - c.read) as u32,
                sat(c.read - c.arrival),
            ),
            _ => (0, 0, 0),
        };
        HeldResponse {
            in_start: u.in_start,
            out_start: u.out_start,
            in_wait: sat(u.in_start.saturating_sub(u.in_arrival)),
            sent_after: if u.out_sent >= u.out_start {
                sat(u.out_sent - u.out_start)
            } else {
                0
            },
            in_bytes: sat(u.in_bytes),
            mux_lead,
            mux_peer,
            mux_wait,
            run_lead: match u.out_start.checked_sub(u.run_before) {
                // Further back than a u32 holds: as far back as it holds (a request read
                // before that is still not known to have gone out in this run).
                Some(lead) if u.run_before != 0 => u32::try_from(lead + 1).unwrap_or(u32::MAX),
                _ => 0,
            },
        }
    } else {
        HeldResponse::default()
    };
    given_up
}

/// What a queued response is to a downstream about to write a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// No longer its upstream's current, unforwarded message: drop it.
    Dead,
    /// Current, but this write cannot forward it: leave it for its own downstream.
    Other,
    /// Current, and this write can forward it.
    Yes,
}

/// How `slot` fits a response write at `t_out` on a downstream whose request was read at
/// `d_in` (0: none read yet); `u` is the state of the slot's upstream (`None`: gone).
#[inline(always)]
pub fn fit(slot: &FwdSlot, u: Option<&SockState>, d_in: u64, t_out: u64) -> Fit {
    let Some(r) = u.and_then(|u| waiting_response(u, slot.t_in)) else {
        return Fit::Dead;
    };
    if can_forward(r.req_out, r.resp_in, d_in, t_out) {
        Fit::Yes
    } else {
        Fit::Other
    }
}

/// Whether a slot still holds a response waiting for its forward (what a full queue loses
/// when it overwrites its oldest slot): taken slots (ino 0) and superseded ones are not.
#[inline(always)]
pub fn waiting(slot: &FwdSlot, u: Option<&SockState>) -> bool {
    slot.ino != 0 && fit(slot, u, 0, 0) != Fit::Dead
}

/// The upstream `up` a thread last read response data from (state `u`), as a queue slot,
/// if that response is current, not yet forwarded, and a response write on `d_ino` (request
/// read at `d_in`, writing at `t_out`, in namespace `d_net`) can forward it (pairing by
/// adjacency).
#[inline(always)]
pub fn adjacent(
    up: u64,
    u: Option<&SockState>,
    d_ino: u64,
    d_in: u64,
    t_out: u64,
    d_net: u64,
) -> Option<FwdSlot> {
    if up == 0 || up == d_ino {
        return None;
    }
    let u = u?;
    if !same_netns(u.net, d_net) {
        return None;
    }
    // Its current response, else one it holds (the thread read it; the connection went back
    // to a pool and carries a later request).
    let held = u.held.iter().map(|h| (h.in_start, 0));
    for (t_in, hint) in core::iter::once((u.in_start, u.hint)).chain(held) {
        if let Some(r) = waiting_response(u, t_in) {
            if can_forward(r.req_out, t_in, d_in, t_out) {
                return Some(FwdSlot {
                    ino: up,
                    t_in,
                    hint,
                });
            }
        }
    }
    None
}

/// Whether upstream `u`'s current response, about to be followed by the next one, was never
/// forwarded (no response write took it: [`SockState::fwd_in`]) and is not held for a late
/// forward ([`hold_response`]).
#[inline(always)]
pub fn unforwarded(u: &SockState) -> bool {
    u.in_start != 0 && u.fwd_in != u.in_start && u.held.iter().all(|h| h.in_start != u.in_start)
}

/// When downstream `d`'s current request was read, for a response write on it (0: none).
/// A TLS connection's first request may hide in a handshake read (the client's last flight
/// and its request in one read): its response then answers that read (the exchange is
/// dropped as the connection's first, but its response is taken, not left to linger).
#[inline(always)]
pub fn request_read_at(d: &SockState) -> u64 {
    if d.in_start != 0 {
        d.in_start
    } else if d.flags & SOCK_TLS != 0 && d.exchanges == 0 {
        d.hs_read
    } else {
        0
    }
}

/// Whether an exchange's four times are one request/response alternation: request read ≤
/// its forward ≤ response read ≤ its forward, with a request read at all.
#[inline(always)]
pub fn in_order(req_in: u64, req_out: u64, resp_in: u64, resp_out: u64) -> bool {
    req_in != 0 && req_out >= req_in && resp_in >= req_out && resp_out >= resp_in
}

/// Whether the exchange is the first on a TLS connection, on either side (its handshake
/// blurs its timing: dropped).
#[inline(always)]
pub fn first_tls_exchange(d: &SockState, u: &SockState) -> bool {
    (d.flags & SOCK_TLS != 0 && d.exchanges == 0) || (u.flags & SOCK_TLS != 0 && u.exchanges == 0)
}

/// Whether downstream `d`'s request can be claimed by a request forward at `t_out`: it is
/// still waiting for its response (the socket's last data was read) and no forward claimed
/// it yet.
#[inline(always)]
pub fn claimable(d: &SockState, t_out: u64) -> bool {
    d.last_dir == DIR_IN && d.in_start <= t_out && d.claimed != d.in_start
}

/// Whether sockets of namespaces `a` and `b` (`SockState::net`; 0: unknown) can be the two
/// sides of one hop. A proxy's sockets share its namespace, except a node proxy's: Istio's
/// ztunnel serves each pod from sockets inside the pod's namespace, and a request it reads
/// in one pod is forwarded from the same pod, never from another's.
#[inline(always)]
pub fn same_netns(a: u64, b: u64) -> bool {
    a == 0 || b == 0 || a == b
}

/// Whether TLS downstream `d` shows HTTP/2 inside by its behaviour, at a request forward
/// entered at `t_out` (on an upstream in namespace `net`) that found nothing to claim while
/// `d` is the downstream its thread last read a new request from: `d`'s current request was
/// claimed by another forward and no response was written to `d` since. HTTP/1.x carries
/// one request at a time on a connection (no proxy pipelines), so a second forward of one
/// request in flight is a second request inside it. A retried or mirrored request looks the
/// same: its connection is then paired by the causal rule, which holds for HTTP/1.x too
/// where the process's claims agree.
#[inline(always)]
pub fn overlap_shows_mux(d: &SockState, t_out: u64, net: u64) -> bool {
    d.role == ROLE_DOWNSTREAM
        && d.flags & SOCK_TLS != 0
        && d.flags & (SOCK_MUX | SOCK_H2 | SOCK_STREAM) == 0
        && d.last_dir == DIR_IN
        && d.in_start != 0
        && d.in_start <= t_out
        && d.claimed == d.in_start
        && same_netns(d.net, net)
}

/// Whether TLS upstream `u` shows HTTP/2 inside by its behaviour, at a write entered at
/// `t_out` that follows its last write with no read between (record alternation takes it
/// for more of the request in flight): the writing thread's last request, read on
/// downstream `d_ino` (state `d`), is another downstream's than the one `u`'s request in
/// flight came from (`u.hint`) and still waits for its forward. HTTP/1.x sends one request
/// at a time on a connection, so this write is a second request inside it.
#[inline(always)]
pub fn up_overlap_shows_mux(u: &SockState, d_ino: u64, d: &SockState, t_out: u64) -> bool {
    u.role == ROLE_UPSTREAM
        && u.flags & (SOCK_TLS | SOCK_MUX | SOCK_H2 | SOCK_STREAM) == SOCK_TLS
        && u.last_dir == DIR_OUT
        && u.hint != 0
        && d_ino != 0
        && d_ino != u.hint
        && d.role == ROLE_DOWNSTREAM
        && d.flags & (SOCK_H2 | SOCK_STREAM) == 0
        && claimable(d, t_out)
        && same_netns(d.net, u.net)
}

/// What a request forward makes of one request its thread read ([`ThreadLast::claim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReqFit {
    /// Already answered or claimed, or its state is gone: it leaves the thread's list.
    Dead,
    /// Waiting, but for a forward elsewhere (another network namespace): it stays.
    Elsewhere,
    /// Claimed by this forward.
    Take,
}

impl ThreadLast {
    /// For a request forward: the oldest request this thread read that `fit` takes (its
    /// downstream inode; 0: none), and whether that was a guess. Dead requests it passes
    /// leave the list; those waiting for a forward elsewhere stay, in order, for their own
    /// forwards. An event loop runs the forwards of one turn's reads in order.
    ///
    /// A guess: another request read after it is still on the list, or an earlier claim
    /// was a guess and the list has not been empty since. A proxy that holds requests (a
    /// delay, a slow filter) forwards them in whatever order they become ready, and of two
    /// requests waiting the oldest claim names the other's downstream; the claim after it
    /// inherits the swap. With one request waiting at a time there is nothing to swap.
    #[inline(always)]
    pub fn claim(&mut self, mut fit: impl FnMut(u64) -> ReqFit) -> (u64, bool) {
        let mut taken = 0;
        // Requests read after the taken one (those of another namespace too).
        let mut after = false;
        for k in 0..REQ_SLOTS as u32 {
            let i = self.req_head.wrapping_add(k);
            if i == self.req_tail {
                break;
            }
            let Some(slot) = self.reqs.get_mut(i as usize & (REQ_SLOTS - 1)) else {
                break;
            };
            let d = *slot;
            if d == 0 {
                continue;
            }
            match fit(d) {
                ReqFit::Dead => *slot = 0,
                ReqFit::Elsewhere => {}
                ReqFit::Take => {
                    *slot = 0;
                    taken = d;
                    after = i.wrapping_add(1) != self.req_tail;
                    break;
                }
            }
        }
        let guessed = taken != 0 && (after || self.guessing != 0);
        self.guessing = u32::from(after);
        // The list starts at its oldest request still waiting.
        for _ in 0..REQ_SLOTS {
            if self.req_head == self.req_tail
                || self
                    .reqs
                    .get(self.req_head as usize & (REQ_SLOTS - 1))
                    .is_some_and(|d| *d != 0)
            {
                break;
            }
            self.req_head = self.req_head.wrapping_add(1);
        }
        (taken, guessed)
    }

    /// Remembers a request read on downstream `ino`; the oldest goes when full.
    #[inline(always)]
    pub fn push_request(&mut self, ino: u64) {
        self.last_req = ino;
        if let Some(slot) = self.reqs.get_mut(self.req_tail as usize & (REQ_SLOTS - 1)) {
            *slot = ino;
        }
        self.req_tail = self.req_tail.wrapping_add(1);
        if self.req_tail.wrapping_sub(self.req_head) as usize > REQ_SLOTS {
            self.req_head = self.req_tail.wrapping_sub(REQ_SLOTS as u32);
        }
    }
}

impl MuxLog {
    /// The thread wrote HTTP/2-inside-TLS upstream `ino` (in namespace `net`), the write
    /// entered at `t_out`.
    #[inline(always)]
    pub fn push(&mut self, ino: u64, t_out: u64, net: u64) {
        let i = self.seq as usize & (MUX_LOG_SLOTS - 1);
        if let Some(s) = self.ino.get_mut(i) {
            *s = ino as u32;
        }
        if let Some(s) = self.t_out.get_mut(i) {
            *s = t_out;
        }
        if let Some(s) = self.net.get_mut(i) {
            *s = net;
        }
        self.seq = self.seq.wrapping_add(1);
    }
}

/// By the causal rule, the write that forwarded a request the thread of `log` read at `read`
/// on a downstream in namespace `net`, its count of writes then `seq`
/// ([`SockState::mux_reader_seq`]), to be answered by a write entered at `now`: the thread's
/// first write on an HTTP/2-inside-TLS upstream in that namespace after the read (among its
/// next [`MUX_LOG_SCAN`]), if it came before `now` and the log still holds the writes since
/// the read (its upstream and entry); among those, one on `answering` (the upstream the
/// response's writer last read: the response comes back on its request's connection) is
/// taken first. An event loop that shares its upstream connections among its downstreams
/// (haproxy's `http-reuse`) writes the requests of one turn in its connections' order, not
/// its reads': the first write after a read is then often another connection's.
#[inline(always)]
pub fn forward_of(
    log: &MuxLog,
    seq: u32,
    read: u64,
    now: u64,
    net: u64,
    answering: u64,
) -> Option<(u64, u64)> {
    if log.seq.wrapping_sub(seq) as usize > MUX_LOG_SLOTS {
        return None;
    }
    // Two scans, each returning from inside its loop: one that carried the first write found
    // through the loop was left a loop by LLVM, whose back-edge 6.1's verifier refused (6.12
    // and 6.18 took it); these unroll.
    if answering != 0 {
        for k in 0..MUX_LOG_SCAN {
            let n = seq.wrapping_add(k);
            if n == log.seq {
                break;
            }
            let i = n as usize & (MUX_LOG_SLOTS - 1);
            if log.ino.get(i).is_some_and(|w| u64::from(*w) == answering)
                && log.net.get(i).is_some_and(|w| same_netns(*w, net))
            {
                let t_out = *log.t_out.get(i)?;
                if t_out >= read && t_out <= now {
                    return Some((answering, t_out));
                }
            }
        }
    }
    for k in 0..MUX_LOG_SCAN {
        let n = seq.wrapping_add(k);
        if n == log.seq {
            return None;
        }
        let i = n as usize & (MUX_LOG_SLOTS - 1);
        if log.net.get(i).is_some_and(|w| same_netns(*w, net)) {
            let (ino, t_out) = (u64::from(*log.ino.get(i)?), *log.t_out.get(i)?);
            return (ino != 0 && t_out >= read && t_out <= now).then_some((ino, t_out));
        }
    }
    None
}

/// How many slots each search looks at from its start (the verifier's budget: when zeroed
/// values were still built on the stack, a fourth search, or one scan of all 64 slots keeping
/// two picks, took the socket programs past its million-instruction limit; they now use
/// about a tenth of it, `smp-agent check` prints it): the hinted search from the queue's head (its pick
/// serves the batch when it lies in the batch), the batch's oldest, the queue's oldest.
pub const BATCH_WINDOW: u32 = 4;
pub const HINT_WINDOW: u32 = 16;
pub const OLDEST_WINDOW: u32 = 16;
/// Slots of dead or taken responses dropped from a queue's head per response write (the
/// rest go at the next writes).
pub const DROP_WINDOW: u32 = 16;

impl FwdQueue {
    /// Queues a response (`slot`) read by the thread. The first read since the thread last
    /// wrote a response starts a new batch. When full, the oldest slot goes; returns whether
    /// it held a response still waiting for its forward (a loss: `queue_overflow`).
    #[inline(always)]
    pub fn push(&mut self, slot: FwdSlot, states: &impl SockStates) -> bool {
        if self.wrote != 0 {
            self.batch = self.tail;
            self.wrote = 0;
        }
        let mut lost = false;
        if self.tail.wrapping_sub(self.head) as usize >= FWD_SLOTS {
            lost = self
                .slots
                .get(self.head as usize & (FWD_SLOTS - 1))
                .is_some_and(|s| waiting(s, states.get(s.ino)));
            self.head = self.head.wrapping_add(1);
        }
        if let Some(s) = self.slots.get_mut(self.tail as usize & (FWD_SLOTS - 1)) {
            *s = slot;
        }
        self.tail = self.tail.wrapping_add(1);
        lost
    }

    /// The first index of the current batch, or `tail` (an empty batch) if the queue has
    /// dropped past it.
    #[inline(always)]
    pub fn batch_start(&self) -> u32 {
        if self.batch.wrapping_sub(self.head) < self.tail.wrapping_sub(self.head) {
            self.batch
        } else {
            self.tail
        }
    }

    /// Whether index `i` lies in the batch that starts at `batch`.
    #[inline(always)]
    pub fn in_batch(&self, i: u32, batch: u32) -> bool {
        i.wrapping_sub(batch) < self.tail.wrapping_sub(batch)
    }

    /// Index of the first slot from `start` (at most `window` slots) that fits a response
    /// write on `d_ino` (request read at `d_in`, writing at `t_out`; only slots hinted to
    /// `d_ino` when `hinted_only`, never one [`crate::hop::HINT_GUESSED`] marks); dead
    /// slots met on the way are cleared. (An index, not a sentinel: every `u32` is one once
    /// the indices wrap.)
    #[inline(always)]
    #[allow(
        clippy::too_many_arguments,
        reason = "the kernel's call inlines: a struct of them would cost stack"
    )]
    pub fn find(
        &mut self,
        start: u32,
        window: u32,
        d_ino: u64,
        d_in: u64,
        t_out: u64,
        hinted_only: bool,
        states: &impl SockStates,
    ) -> Option<u32> {
        let mut i = start;
        for _ in 0..window {
            if i == self.tail {
                break;
            }
            if let Some(slot) = self.slots.get_mut(i as usize & (FWD_SLOTS - 1)) {
                if slot.ino != 0 && slot.ino != d_ino && (!hinted_only || slot.hint == d_ino) {
                    match fit(slot, states.get(slot.ino), d_in, t_out) {
                        Fit::Dead => slot.ino = 0,
                        Fit::Other => {}
                        Fit::Yes => return Some(i),
                    }
                }
            }
            i = i.wrapping_add(1);
        }
        None
    }

    /// Takes slot `i` (if any), then drops taken and dead slots at the head (at
    /// most [`DROP_WINDOW`]).
    #[inline(always)]
    pub fn take(&mut self, i: Option<u32>) -> Option<FwdSlot> {
        let found = match i.and_then(|i| self.slots.get_mut(i as usize & (FWD_SLOTS - 1))) {
            Some(slot) => {
                let found = *slot;
                slot.ino = 0;
                Some(found)
            }
            None => None,
        };
        self.drop_head();
        found
    }

    /// [`Self::take`] as a plain value, `ino` 0 for none: where the caller goes on to
    /// another search, an `Option` left LLVM moving its unset payload, which the verifier
    /// refuses.
    #[inline(always)]
    pub fn take_slot(&mut self, i: Option<u32>) -> FwdSlot {
        let mut found = FwdSlot::default();
        if let Some(slot) = i.and_then(|i| self.slots.get_mut(i as usize & (FWD_SLOTS - 1))) {
            found = *slot;
            slot.ino = 0;
        }
        self.drop_head();
        found
    }

    /// Drops taken and dead slots at the head (at most [`DROP_WINDOW`]).
    #[inline(always)]
    fn drop_head(&mut self) {
        for _ in 0..DROP_WINDOW {
            if self.head == self.tail {
                break;
            }
            match self.slots.get(self.head as usize & (FWD_SLOTS - 1)) {
                Some(slot) if slot.ino == 0 => self.head = self.head.wrapping_add(1),
                _ => break,
            }
        }
    }
}

/// A response write on downstream `d_ino` (its request read at `d_in`, the write entered at
/// `t_out`): the response it forwards, from the writing thread's queue `q` or by adjacency
/// (`adjacent`, asked only when needed), and how it was found (`PAIRED_BY_*`). First choice
/// that fits (docs/hops.md, Pairing):
///
/// 1. the response hinted to `d_ino` among the queue's [`HINT_WINDOW`] oldest, when it lies
///    in the batch (the responses read since the thread's last response write) or the
///    process's hints are trusted (`trust_hints`); not a hint its claim guessed while they
///    were not ([`FwdSlot::read`]);
/// 2. the batch's oldest (among its [`BATCH_WINDOW`] first);
/// 3. a process whose hints are trusted stops here: unpaired;
/// 4. adjacency: the response the thread last read data of;
/// 5. the hinted response outside the batch;
/// 6. the queue's oldest (among its [`OLDEST_WINDOW`] first).
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "the kernel's call inlines: a struct of them would cost stack"
)]
pub fn pick(
    q: &mut FwdQueue,
    d_ino: u64,
    d_in: u64,
    t_out: u64,
    d_net: u64,
    trust_hints: bool,
    states: &impl SockStates,
    adjacent: impl FnOnce() -> Option<FwdSlot>,
) -> (Option<FwdSlot>, u32) {
    q.wrote = 1;
    let batch = q.batch_start();
    let head = q.head;
    // One hinted search serves both the batch's hint and the whole queue's.
    let hinted = q.find(head, HINT_WINDOW, d_ino, d_in, t_out, true, states);
    let (take, by) = match hinted {
        Some(h) if trust_hints || q.in_batch(h, batch) => (hinted, PAIRED_BY_HINT),
        _ => match q.find(batch, BATCH_WINDOW, d_ino, d_in, t_out, false, states) {
            Some(i) => (Some(i), PAIRED_BY_BATCH),
            // A process whose hints have proved right writes what its hints and batches
            // name: under load the other guesses were wrong 3 times in 4 for Envoy
            // (docs/hops.md), so such a write stays unpaired instead.
            None if trust_hints => (None, PAIRED_BY_OLDEST),
            None => {
                if let Some(slot) = adjacent() {
                    return (Some(slot), PAIRED_BY_ADJACENCY);
                }
                if hinted.is_some() {
                    (hinted, PAIRED_BY_HINT)
                } else {
                    let i = q.find(head, OLDEST_WINDOW, d_ino, d_in, t_out, false, states);
                    (i, PAIRED_BY_OLDEST)
                }
            }
        },
    };
    // A node proxy's queue holds every pod's responses: one read in another namespace than
    // the downstream's is that pod's, left for its own write (this one stays unpaired: the
    // searches above stop at their first fit, and one more that compared namespaces slot by
    // slot took the socket programs past the verifier's budget).
    let of_this_pod = |i: u32| {
        q.slots
            .get(i as usize & (FWD_SLOTS - 1))
            .and_then(|slot| states.get(slot.ino))
            .is_some_and(|u| same_netns(u.net, d_net))
    };
    let take = take.filter(|i| of_this_pod(*i));
    (q.take(take), by)
}

impl RespPool {
    /// Remembers a response read by one of the process's threads; the oldest goes.
    #[inline(always)]
    pub fn push(&mut self, slot: FwdSlot) {
        if let Some(s) = self.slots.get_mut(self.tail as usize & (POOL_SLOTS - 1)) {
            *s = slot;
        }
        self.tail = self.tail.wrapping_add(1);
    }
}

/// What the process's recent responses hold for a response write on `d_ino` (request read
/// at `d_in`, writing at `t_out`) that its own thread could not pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sole {
    /// Exactly one of them fits: the response this write forwards.
    One(FwdSlot),
    /// More than one fits: which is a guess, so none is taken.
    Ambiguous,
    /// None fits.
    None,
}

/// The one response in `pool` that a response write on `d_ino` can forward ([`fit`]: current,
/// not forwarded, in HTTP/1.1's order with the downstream's request), if there is exactly
/// one. Under a fixed load few responses wait between their read and their forward at any
/// moment, so one that fits is most often the only one. Not on an HTTP/2-inside-TLS upstream
/// ([`crate::hop::SOCK_MUX`]): its current message is its last read, any stream's, and the
/// response this write forwards may be one a later read replaced (our proxy under overlap:
/// 5 such pairings in 2 runs, every one another connection's response).
#[inline(always)]
pub fn sole(
    pool: &RespPool,
    d_ino: u64,
    d_in: u64,
    t_out: u64,
    d_net: u64,
    states: &impl SockStates,
) -> Sole {
    // The one found so far, a plain value (an enum carried through the loop left LLVM
    // spilling its unset payload, which the verifier refuses to read).
    let mut one = FwdSlot::default();
    for slot in &pool.slots {
        if slot.ino == 0 || slot.ino == d_ino {
            continue;
        }
        if fit(slot, states.get(slot.ino), d_in, t_out) != Fit::Yes {
            continue;
        }
        if one.ino == 0 {
            one = *slot;
        } else if one.ino != slot.ino || one.t_in != slot.t_in {
            // (The same response remembered twice, a torn write, is still one.)
            return Sole::Ambiguous;
        }
    }
    // Another pod's response (a node proxy's), or a multiplexed upstream's: not this write's.
    // (Tested once here, not per slot: a test in the loop cost the verifier a fifth more in
    // `smp_sys_enter`.)
    if one.ino == 0
        || !states
            .get(one.ino)
            .is_some_and(|u| same_netns(u.net, d_net) && u.flags & SOCK_MUX == 0)
    {
        return Sole::None;
    }
    Sole::One(one)
}

#[cfg(test)]
mod tests;
