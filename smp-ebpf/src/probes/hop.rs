//! Per-hop pairing of HTTP/1.x messages through a proxy, in the kernel.
//!
//! Message boundaries: on one socket HTTP/1.x alternates directions, so a data syscall in the
//! other direction than the socket's last one starts a new message. A message's inbound start
//! is the exit of its first read; its outbound start is the entry of its first write
//! (DESIGN.md §2). TLS handshake records do not start messages.
//!
//! Pairing: a response read on an upstream socket is queued on the reading thread; the next
//! response write on a downstream socket by that thread forwards the oldest still-current one
//! (the proxy relays a response in the same event/poll that read it). That single binding
//! (downstream D ↔ upstream U) closes the exchange *and* pairs its request retroactively: D's
//! last inbound message is the request, U's last outbound message is its forward. Request
//! pairing thus does not depend on which thread forwarded the request (task migration, delays).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use smp_common::{
    config::KernelOffsets,
    counters::Counter,
    event::EventKind,
    hop::{
        hints_trusted, ExchangeRecord, FwdQueue, FwdSlot, HopCounts, SendDone, SockState,
        ThreadLast, DIR_IN, DIR_NONE, DIR_OUT, FWD_SLOTS, PAIRED_BY_ADJACENCY, PAIRED_BY_BATCH,
        PAIRED_BY_HINT, PAIRED_BY_OLDEST, PAIRED_BY_SHIFT, REQ_SLOTS, ROLE_DOWNSTREAM,
        ROLE_UNKNOWN, ROLE_UPSTREAM, SOCK_H2, SOCK_SK, SOCK_TLS, SOCK_TUPLE,
    },
    sock::{PendingSyscall, SyscallKind, AT_EXIT_SEND_DONE, AT_EXIT_SENT},
};

use crate::{
    kernel::{read, read_user, sock_tuple, SocketRef},
    maps::{
        count, emit, header, offsets, Wake, HOP_COUNTS, PASSIVE_SK, SK_INO, SOCK_STATE, THREAD_FWD,
        THREAD_LAST, ZERO_FWD,
    },
};

/// What the first bytes of a syscall's data look like.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// TLS handshake/CCS/alert record; `true` for a ClientHello.
    TlsControl(bool),
    HttpRequest,
    HttpResponse,
    H2Preface,
    Other,
}

#[inline(always)]
fn classify(b: &[u8; 8], len: u64) -> Class {
    // A 5-byte read is a record header alone (OpenSSL and BoringSSL read the header first):
    // a handshake record then is taken for a ClientHello (only the client's first flight
    // reaches a socket whose role is still unknown).
    if len >= 5 && b[1] == 0x03 && (b[0] == 0x16 || b[0] == 0x14 || b[0] == 0x15) {
        return Class::TlsControl(b[0] == 0x16 && (len == 5 || b[5] == 0x01));
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

/// The first 8 bytes of the data a syscall moved (reads: after the fact).
#[inline(always)]
fn first_bytes(p: &PendingSyscall, kind: SyscallKind, o: &KernelOffsets) -> Option<[u8; 8]> {
    let base = match kind {
        SyscallKind::Read | SyscallKind::Write | SyscallKind::Recvfrom | SyscallKind::Sendto => {
            p.buf
        }
        // iovec { void *iov_base; size_t iov_len; }: the first buffer.
        SyscallKind::Readv | SyscallKind::Writev => read_user::<u64>(p.buf).ok()?,
        SyscallKind::Recvmsg | SyscallKind::Sendmsg => {
            let iov: u64 = read_user(p.buf + o.msghdr_iov as u64).ok()?;
            read_user::<u64>(iov).ok()?
        }
    };
    if base == 0 {
        return None;
    }
    read_user::<[u8; 8]>(base).ok()
}

#[inline(always)]
fn bump(tgid: u32, f: impl FnOnce(&mut HopCounts)) {
    if let Some(c) = HOP_COUNTS.get_ptr_mut(&tgid) {
        // SAFETY: per-CPU value, only this CPU writes it while this program runs.
        f(unsafe { &mut *c });
        return;
    }
    let mut c = HopCounts::default();
    f(&mut c);
    if HOP_COUNTS.insert(&tgid, &c, 0).is_err() {
        count(Counter::MapInsertFailed);
    }
}

/// Thread `tid`'s [`ThreadLast`], created if absent.
#[inline(always)]
fn thread_last(tid: u32) -> Option<*mut ThreadLast> {
    if let Some(l) = THREAD_LAST.get_ptr_mut(&tid) {
        return Some(l);
    }
    let _ = THREAD_LAST.insert(&tid, &ThreadLast::default(), 0);
    THREAD_LAST.get_ptr_mut(&tid)
}

/// A request forward by thread `tid` at `t_out`: the oldest request this thread read that is
/// still waiting for its response and no forward claimed yet, claimed now (its downstream
/// inode; 0: none). An event loop runs the forwards of one turn's reads in order.
#[inline(always)]
fn claim_request(tid: u32, t_out: u64) -> u64 {
    let Some(l) = THREAD_LAST.get_ptr_mut(&tid) else {
        return 0;
    };
    // SAFETY: the calling thread's own entry: only this thread writes it.
    let l = unsafe { &mut *l };
    for _ in 0..REQ_SLOTS {
        if l.req_head == l.req_tail {
            break;
        }
        let d = l
            .reqs
            .get(l.req_head as usize & (REQ_SLOTS - 1))
            .copied()
            .unwrap_or(0);
        l.req_head = l.req_head.wrapping_add(1);
        let Some(ds) = SOCK_STATE.get_ptr_mut(&d) else {
            continue;
        };
        // SAFETY: map value; a request is claimed by the thread that read it.
        let ds = unsafe { &mut *ds };
        if ds.last_dir == DIR_IN && ds.in_start <= t_out && ds.claimed != ds.in_start {
            ds.claimed = ds.in_start;
            return d;
        }
    }
    0
}

/// The state of socket `ino`, created (role unknown) if absent.
#[inline(always)]
fn state(ino: u64) -> Option<*mut SockState> {
    if let Some(s) = SOCK_STATE.get_ptr_mut(&ino) {
        return Some(s);
    }
    if SOCK_STATE.insert(&ino, &SockState::default(), 0).is_err() {
        count(Counter::MapInsertFailed);
        return None;
    }
    SOCK_STATE.get_ptr_mut(&ino)
}

/// Forgets a socket's message state (end of stream).
#[inline(always)]
pub fn forget(ino: u64) {
    let _ = SOCK_STATE.remove(&ino);
}

/// Marks a fresh socket's role (accept: downstream; connect: upstream).
#[inline(always)]
pub fn set_role(sock: SocketRef, role: u8, o: &KernelOffsets) {
    let mut fresh = SockState {
        role,
        ..SockState::default()
    };
    if let Ok(Some(t)) = sock_tuple(sock.sk, o) {
        fresh.tuple = t;
        fresh.flags |= SOCK_TUPLE;
    }
    if SOCK_STATE.insert(&sock.ino, &fresh, 0).is_err() {
        count(Counter::MapInsertFailed);
    }
}

/// A write that [`on_data`] marked at its entry (`p.at_exit`) returned at `now`: the
/// outbound message it started is sent; the response it forwarded is sent (`SendDone`).
#[inline(always)]
pub fn on_write_exit(p: &PendingSyscall, now: u64, pid_tgid: u64) {
    if p.at_exit & AT_EXIT_SENT != 0 {
        if let Some(s) = SOCK_STATE.get_ptr_mut(&p.ino) {
            // SAFETY: map value; only this thread writes this socket's outbound side now.
            unsafe {
                if (*s).out_start == p.since_ns {
                    (*s).out_sent = now;
                }
            }
        }
    }
    if p.at_exit & AT_EXIT_SEND_DONE != 0 {
        emit(
            SendDone {
                header: header(EventKind::SendDone),
                tgid: (pid_tgid >> 32) as u32,
                tid: pid_tgid as u32,
                out_ns: p.since_ns,
                sent_ns: now,
            },
            Wake::Lazy,
        );
    }
}

/// A data syscall on a socket of a tracked process: a read that returned `len > 0` bytes
/// (called at exit), or a write being entered (`len` 0: outbound sizes are not tracked).
/// Returns, for a write, what its exit must do (`AT_EXIT_*` bits; 0 for reads).
#[inline(always)]
pub fn on_data(
    p: &PendingSyscall,
    kind: SyscallKind,
    len: u64,
    now: u64,
    pid_tgid: u64,
    o: &KernelOffsets,
) -> u32 {
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    let ingress = kind.is_ingress();
    let Some(sp) = state(p.ino) else {
        return 0;
    };
    // SAFETY: a map value; concurrent updates of one socket are racy but bounded (a proxy
    // reads and writes one connection from one thread at a time).
    let s = unsafe { &mut *sp };
    if s.flags & SOCK_TUPLE == 0 {
        if let Ok(Some(t)) = sock_tuple(p.sk, o) {
            s.tuple = t;
            s.flags |= SOCK_TUPLE;
        }
        // An accepted socket seen for the first time (socket tracepoints: no `accept` hook).
        // SAFETY: plain copy out of the map value.
        if s.role == ROLE_UNKNOWN && unsafe { PASSIVE_SK.get(&p.sk) }.is_some() {
            s.role = ROLE_DOWNSTREAM;
            let _ = PASSIVE_SK.remove(&p.sk);
        }
    }
    if s.flags & SOCK_SK == 0 && p.sk != 0 {
        if SK_INO.insert(&p.sk, &p.ino, 0).is_err() {
            count(Counter::MapInsertFailed);
        }
        s.flags |= SOCK_SK;
    }
    // Data that reached the socket before this read (set by `on_tcp_probe`) is consumed now.
    let arrived = if ingress {
        core::mem::take(&mut s.arrival)
    } else {
        0
    };
    let class = first_bytes(p, kind, o)
        .map(|b| classify(&b, len))
        .unwrap_or(Class::Other);
    let new_msg = if ingress {
        s.last_dir != DIR_IN
    } else {
        s.last_dir != DIR_OUT
    };

    if let Class::TlsControl(client_hello) = class {
        s.flags |= SOCK_TLS;
        if client_hello && s.role == ROLE_UNKNOWN {
            s.role = if ingress {
                ROLE_DOWNSTREAM
            } else {
                ROLE_UPSTREAM
            };
        }
        if ingress && s.role == ROLE_DOWNSTREAM {
            s.hs_read = now;
        }
        s.last_dir = DIR_NONE;
        return 0;
    }
    if class == Class::H2Preface {
        s.flags |= SOCK_H2;
    }
    if s.role == ROLE_UNKNOWN && new_msg {
        s.role = match (class, ingress) {
            // The h2 client sends the preface.
            (Class::HttpRequest | Class::H2Preface, true) | (Class::HttpResponse, false) => {
                ROLE_DOWNSTREAM
            }
            (Class::HttpRequest | Class::H2Preface, false) | (Class::HttpResponse, true) => {
                ROLE_UPSTREAM
            }
            _ => ROLE_UNKNOWN,
        };
    }
    if ingress && s.role == ROLE_UPSTREAM && s.flags & SOCK_H2 == 0 {
        // Response data, first or continuation: the response this thread forwards next if it
        // relays in the same turn (a TLS client's first "response" is its session tickets;
        // the real one then arrives as a continuation, maybe on another thread).
        if let Some(l) = thread_last(tid) {
            // SAFETY: the calling thread's own entry: only this thread writes it.
            unsafe { (*l).up = p.ino };
        }
    }
    if !new_msg {
        if ingress {
            s.in_bytes += len;
        }
        return 0;
    }
    if s.flags & SOCK_H2 != 0 {
        bump(tgid, |c| c.h2_messages += 1);
    } else if s.role == ROLE_UNKNOWN {
        bump(tgid, |c| c.unknown_role += 1);
    }
    if ingress {
        // t_in: the read of the message's first bytes returned.
        s.in_start = now;
        s.in_arrival = if arrived != 0 && arrived <= now {
            arrived
        } else {
            now
        };
        s.in_bytes = len;
        s.last_dir = DIR_IN;
        if s.flags & SOCK_H2 == 0 {
            if s.role == ROLE_DOWNSTREAM {
                bump(tgid, |c| c.requests += 1);
                if let Some(l) = thread_last(tid) {
                    // SAFETY: the calling thread's own entry: only this thread writes it.
                    let l = unsafe { &mut *l };
                    if let Some(slot) = l.reqs.get_mut(l.req_tail as usize & (REQ_SLOTS - 1)) {
                        *slot = p.ino;
                    }
                    l.req_tail = l.req_tail.wrapping_add(1);
                    if l.req_tail.wrapping_sub(l.req_head) as usize > REQ_SLOTS {
                        l.req_head = l.req_tail.wrapping_sub(REQ_SLOTS as u32);
                    }
                }
            } else if s.role == ROLE_UPSTREAM {
                bump(tgid, |c| c.responses += 1);
                queue_response(tgid, tid, p.ino, now, s.hint);
            }
        }
    } else {
        // t_out: the write carrying the message's first bytes was entered.
        let mut at_exit = AT_EXIT_SENT;
        if s.role == ROLE_DOWNSTREAM && s.flags & SOCK_H2 == 0 {
            match forward_response(tgid, tid, p.ino, s, p.since_ns) {
                Forward::Emitted => at_exit |= AT_EXIT_SEND_DONE,
                Forward::Dropped => {}
                // Nothing answered on a downstream that has read no request (a TLS 1.3
                // server's session tickets): no message. Marked, it would make the real
                // response's write a continuation, leaving that response to linger.
                Forward::Nothing if s.in_start == 0 => return 0,
                Forward::Nothing => {}
            }
        } else if s.role == ROLE_UPSTREAM {
            // A request forward: which downstream's request it likely is.
            s.hint = claim_request(tid, p.since_ns);
        }
        s.out_start = p.since_ns;
        s.out_sent = 0;
        s.last_dir = DIR_OUT;
        return at_exit;
    }
    0
}

/// Queues a response read on upstream `ino` on thread `tid`.
#[inline(always)]
fn queue_response(tgid: u32, tid: u32, ino: u64, t_in: u64, hint: u64) {
    let q = match THREAD_FWD.get_ptr_mut(&tid) {
        Some(q) => q,
        None => {
            // A zeroed queue is larger than the BPF stack: copy it from a map.
            let Some(zero) = ZERO_FWD.get(0) else {
                return;
            };
            if THREAD_FWD.insert(&tid, zero, 0).is_err() {
                count(Counter::MapInsertFailed);
                return;
            }
            match THREAD_FWD.get_ptr_mut(&tid) {
                Some(q) => q,
                None => return,
            }
        }
    };
    // SAFETY: only thread `tid` (running here) touches its queue.
    let q = unsafe { &mut *q };
    if q.wrote != 0 {
        // The first response read since this thread last wrote one: a new batch.
        q.batch = q.tail;
        q.wrote = 0;
    }
    if q.tail.wrapping_sub(q.head) as usize >= FWD_SLOTS {
        // Full: the oldest slot goes. Only a response still waiting for its forward is lost;
        // slots already taken (ino 0) or superseded ones are not.
        let lost = q
            .slots
            .get(q.head as usize & (FWD_SLOTS - 1))
            .is_some_and(|s| s.ino != 0 && fit(s, 0, 0) != Fit::Dead);
        q.head = q.head.wrapping_add(1);
        if lost {
            bump(tgid, |c| c.queue_overflow += 1);
        }
    }
    if let Some(slot) = q.slots.get_mut(q.tail as usize & (FWD_SLOTS - 1)) {
        *slot = FwdSlot { ino, t_in, hint };
    }
    q.tail = q.tail.wrapping_add(1);
}

/// What a queued response is to a downstream about to write a response.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// No longer its upstream's current, unforwarded message: drop it.
    Dead,
    /// Current, but this write cannot forward it: leave it for its own downstream.
    Other,
    /// Current, and this write can forward it.
    Yes,
}

/// Whether upstream `u`'s current response (read at `t_in`) can be what a response write at
/// `t_out` forwards to a downstream whose current request was read at `d_in` (0: none yet).
/// HTTP/1.1 orders one exchange: request read (`d_in`) ≤ its forward on the upstream
/// (`u.out_start`) ≤ the response read (`t_in`) ≤ its forward (`t_out`). A response whose
/// request was forwarded before this downstream's request was read belongs to another
/// downstream (or to this one's previous request); taken, it would leave its own without it.
/// A downstream that has read no request yet (a TLS 1.3 server writing session tickets)
/// forwards nothing.
#[inline(always)]
fn can_forward(u: &SockState, t_in: u64, d_in: u64, t_out: u64) -> bool {
    d_in != 0 && u.out_start >= d_in && t_in >= u.out_start && t_in <= t_out
}

/// How `slot` fits a response write at `t_out` on a downstream whose request was read at
/// `d_in` (0: none read yet).
#[inline(always)]
fn fit(slot: &FwdSlot, d_in: u64, t_out: u64) -> Fit {
    // SAFETY: read-only copy of a map value.
    let Some(u) = (unsafe { SOCK_STATE.get(&slot.ino) }) else {
        return Fit::Dead;
    };
    if u.in_start != slot.t_in || u.last_dir != DIR_IN || u.fwd_in == slot.t_in {
        return Fit::Dead;
    }
    if can_forward(u, slot.t_in, d_in, t_out) {
        Fit::Yes
    } else {
        Fit::Other
    }
}

/// How many slots each search looks at from its start (the verifier's budget: the socket
/// programs are near its million-instruction limit; a fourth search, or one scan of all 64
/// slots keeping two picks, exceeded it): the hinted search from the queue's head (its pick
/// serves the batch when it lies in the batch), the batch's oldest, the queue's oldest.
const BATCH_WINDOW: u32 = 4;
const HINT_WINDOW: u32 = 16;
const OLDEST_WINDOW: u32 = 16;

/// Index of the first slot of `q` from `start` (at most `window` slots) that fits a response
/// write on `d_ino` (only those hinted to `d_ino` when `hinted_only`), `u32::MAX` if none;
/// dead slots met on the way are cleared.
#[inline(always)]
fn find(
    q: &mut FwdQueue,
    start: u32,
    window: u32,
    d_ino: u64,
    d_in: u64,
    t_out: u64,
    hinted_only: bool,
) -> u32 {
    let mut i = start;
    for _ in 0..window {
        if i == q.tail {
            break;
        }
        if let Some(slot) = q.slots.get_mut(i as usize & (FWD_SLOTS - 1)) {
            if slot.ino != 0 && slot.ino != d_ino && (!hinted_only || slot.hint == d_ino) {
                match fit(slot, d_in, t_out) {
                    Fit::Dead => slot.ino = 0,
                    Fit::Other => {}
                    Fit::Yes => return i,
                }
            }
        }
        i = i.wrapping_add(1);
    }
    u32::MAX
}

/// The upstream thread `tid` last read response data from, as a queue slot, if that response
/// is current, not yet forwarded, and a response write on `d_ino` (request read at `d_in`,
/// writing at `t_out`) can forward it.
#[inline(always)]
fn adjacent(tid: u32, d_ino: u64, d_in: u64, t_out: u64) -> Option<FwdSlot> {
    // SAFETY: plain copies out of map values.
    let up = unsafe { THREAD_LAST.get(&tid) }?.up;
    if up == 0 || up == d_ino {
        return None;
    }
    let u = unsafe { SOCK_STATE.get(&up) }?;
    let t_in = u.in_start;
    if u.last_dir != DIR_IN || u.fwd_in == t_in || !can_forward(u, t_in, d_in, t_out) {
        return None;
    }
    Some(FwdSlot {
        ino: up,
        t_in,
        hint: u.hint,
    })
}

/// A new response message is being written to downstream `d_ino` by thread `tid` at `t_out`:
/// find the response it forwards and emit the exchange.
///
/// The thread's *batch* is the responses it read since it last wrote one. An event loop
/// (Envoy) reads the responses of one turn, then runs the writes they scheduled, in order;
/// a connection's task (tokio) or an event loop that writes at once reads one response and
/// forwards it before anything else runs on the thread. So, first choice that fits:
///
/// 1. in the batch (its [`BATCH_WINDOW`] oldest), the response hinted to `d_ino` (its
///    request was forwarded right after this thread read a request from `d_ino`), else the
///    batch's oldest;
/// 2. **adjacency**: the response this thread last read data of, when the batch has none:
///    its first bytes were read on another thread (a task resumed elsewhere; a TLS client's
///    first "response" is its session tickets, the real one a continuation);
/// 3. on the queue, the hinted response (among its [`HINT_WINDOW`] oldest), else the oldest
///    (among its [`OLDEST_WINDOW`] oldest): responses left from before the thread's last
///    write.
///
/// A process whose hints have named the downstream that took their response on ≥ 31 in 32
/// exchanges ([`hints_trusted`], counted on every exchange whatever way paired it) gets its
/// hinted response first wherever it is on the queue: an event loop's (Envoy) are right
/// even when the batch and adjacency are not (a response read in an earlier turn, written
/// later); a tokio proxy's with delays are mostly another connection's, and there the
/// batch and adjacency come first.
///
/// Every way requires the exchange's order ([`can_forward`]). A response once forwarded is
/// marked on its upstream (`fwd_in`), so copies of it queued on other threads are dead.
/// Responses that do not fit stay queued for their own downstream. Taken blindly, one stray
/// response (a TLS 1.3 server's session tickets, a response whose write was a continuation
/// of them) shifted every later pairing on the thread by one, indefinitely: the shifted-out
/// response stays current until its upstream's next request (found with the ground-truth
/// proxy's request log, `lab::truth`). With delays between a request's read and its
/// forward, a tokio proxy's hints are mostly another connection's: taken before the batch
/// and adjacency, they paired up to 3 % of its mTLS exchanges to the wrong connections.
#[inline(always)]
fn forward_response(tgid: u32, tid: u32, d_ino: u64, d: &mut SockState, t_out: u64) -> Forward {
    // When this downstream's request was read. A TLS connection's first request may hide in
    // a handshake read: its response then answers that read (the exchange is dropped as the
    // connection's first, but its response is taken, not left to linger for others).
    let d_in = if d.in_start != 0 {
        d.in_start
    } else if d.flags & SOCK_TLS != 0 && d.exchanges == 0 {
        d.hs_read
    } else {
        0
    };
    // SAFETY: read-only copy of this CPU's counters of the process.
    let trust_hints = unsafe { HOP_COUNTS.get(&tgid) }.is_some_and(hints_trusted);
    let (found, by) = match THREAD_FWD.get_ptr_mut(&tid) {
        // No response was ever read on this thread: only adjacency can find one.
        None => (adjacent(tid, d_ino, d_in, t_out), PAIRED_BY_ADJACENCY),
        // SAFETY: only thread `tid` (running here) touches its queue.
        Some(qp) => pick(unsafe { &mut *qp }, tid, d_ino, d_in, t_out, trust_hints),
    };
    let Some(slot) = found else {
        bump(tgid, |c| c.unmatched_writes += 1);
        return Forward::Nothing;
    };
    exchange(tgid, tid, d_ino, d, d_in, slot, t_out, by)
}

/// Slots of dead or taken responses dropped from a queue's head per response write (the
/// rest go at the next writes).
const DROP_WINDOW: u32 = 16;

/// The response a write on `d_ino` forwards, from thread `tid`'s queue `q` or by adjacency,
/// and how it was found (`PAIRED_BY_*`); see [`forward_response`].
#[inline(always)]
fn pick(
    q: &mut FwdQueue,
    tid: u32,
    d_ino: u64,
    d_in: u64,
    t_out: u64,
    trust_hints: bool,
) -> (Option<FwdSlot>, u32) {
    q.wrote = 1;
    // The batch: from its start, or none if the queue has dropped past it.
    let batch = if q.batch.wrapping_sub(q.head) < q.tail.wrapping_sub(q.head) {
        q.batch
    } else {
        q.tail
    };
    let head = q.head;
    // One hinted search serves both the batch's hint and the whole queue's.
    let hinted = find(q, head, HINT_WINDOW, d_ino, d_in, t_out, true);
    let in_batch = |i: u32| i.wrapping_sub(batch) < q.tail.wrapping_sub(batch);
    let (take, by) = if hinted != u32::MAX && (trust_hints || in_batch(hinted)) {
        (hinted, PAIRED_BY_HINT)
    } else {
        match find(q, batch, BATCH_WINDOW, d_ino, d_in, t_out, false) {
            i if i != u32::MAX => (i, PAIRED_BY_BATCH),
            // A process whose hints have proved right writes what its hints and batches
            // name: under load the other guesses were wrong 3 times in 4 for Envoy
            // (docs/hops.md), so such a write stays unpaired instead.
            _ if trust_hints => (u32::MAX, PAIRED_BY_OLDEST),
            _ => {
                if let Some(slot) = adjacent(tid, d_ino, d_in, t_out) {
                    return (Some(slot), PAIRED_BY_ADJACENCY);
                }
                if hinted != u32::MAX {
                    (hinted, PAIRED_BY_HINT)
                } else {
                    let i = find(q, head, OLDEST_WINDOW, d_ino, d_in, t_out, false);
                    (i, PAIRED_BY_OLDEST)
                }
            }
        }
    };
    let found = match q.slots.get_mut(take as usize & (FWD_SLOTS - 1)) {
        Some(slot) if take != u32::MAX => {
            let found = *slot;
            slot.ino = 0;
            Some(found)
        }
        _ => None,
    };
    // Drop taken and dead slots at the head.
    for _ in 0..DROP_WINDOW {
        if q.head == q.tail {
            break;
        }
        match q.slots.get(q.head as usize & (FWD_SLOTS - 1)) {
            Some(slot) if slot.ino == 0 => q.head = q.head.wrapping_add(1),
            _ => break,
        }
    }
    (found, by)
}

/// What a response write on a downstream did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Forward {
    /// Found the response it forwards and emitted the exchange.
    Emitted,
    /// Found it, but dropped the exchange (a TLS connection's first, or out of order).
    Dropped,
    /// Found no response to forward.
    Nothing,
}

/// Downstream `d`'s response write at `t_out` forwards the response of `slot` (its request
/// read at `d_in`): closes the exchange (and its request, retroactively) and emits it.
#[inline(always)]
fn exchange(
    tgid: u32,
    tid: u32,
    d_ino: u64,
    d: &mut SockState,
    d_in: u64,
    slot: FwdSlot,
    t_out: u64,
    by: u32,
) -> Forward {
    let u_ino = slot.ino;
    let Some(up) = SOCK_STATE.get_ptr_mut(&u_ino) else {
        return Forward::Nothing;
    };
    // SAFETY: map value of the upstream socket; this thread is forwarding its response.
    let u = unsafe { &mut *up };
    u.fwd_in = slot.t_in;
    match by {
        PAIRED_BY_HINT => bump(tgid, |c| c.hinted += 1),
        PAIRED_BY_ADJACENCY => bump(tgid, |c| c.adjacent += 1),
        _ => {}
    }
    if slot.hint != 0 {
        // Did the hint name the downstream that took its response? (Judged on every way of
        // pairing: the ways this process gets right tell whether its hints are.)
        let agrees = u64::from(slot.hint == d_ino);
        bump(tgid, |c| {
            c.hint_checks += 1;
            c.hint_agrees += agrees;
        });
    }
    let (req_in, req_out, resp_in) = (d_in, u.out_start, u.in_start);
    if req_in == 0 || req_out < req_in || resp_in < req_out || t_out < resp_in {
        bump(tgid, |c| c.inconsistent += 1);
        return Forward::Dropped;
    }
    let first_tls = (d.flags & SOCK_TLS != 0 && d.exchanges == 0)
        || (u.flags & SOCK_TLS != 0 && u.exchanges == 0);
    d.exchanges += 1;
    u.exchanges += 1;
    if first_tls {
        bump(tgid, |c| c.tls_first_dropped += 1);
        return Forward::Dropped;
    }
    if emit(
        ExchangeRecord {
            header: header(EventKind::Exchange),
            tgid,
            tid,
            req_in_ns: req_in,
            req_out_ns: req_out,
            resp_in_ns: resp_in,
            resp_out_ns: t_out,
            req_arrival_ns: d.in_arrival.min(req_in),
            resp_arrival_ns: u.in_arrival.min(resp_in),
            req_sent_ns: if u.out_sent >= req_out { u.out_sent } else { 0 },
            req_bytes: d.in_bytes,
            resp_bytes: u.in_bytes,
            downstream: d.tuple,
            upstream: u.tuple,
            flags: u32::from(d.flags) | (u32::from(u.flags) << 8) | (by << PAIRED_BY_SHIFT),
            _pad: 0,
        },
        Wake::Lazy,
    ) {
        bump(tgid, |c| c.paired += 1);
        return Forward::Emitted;
    }
    Forward::Dropped
}

/// match-proto:v5.10:include/trace/events/tcp.h:TP_PROTO(struct sock *sk, struct sk_buff *skb)
///
/// `tcp_probe` fires in `tcp_rcv_established` as each segment is processed for an established
/// socket (softirq, or when the socket's owner releases it). For a socket hop pairing follows,
/// the first data segment after the socket's last write marks when the next inbound message
/// arrived: the proxy reads it later (`in_start`), the difference is how long it waited.
#[inline(always)]
pub fn on_tcp_probe(ctx: &aya_ebpf::programs::RawTracePointContext) -> Result<(), i32> {
    let sk: u64 = ctx.arg(0);
    // Cheapest test first: this fires for every TCP segment on the host.
    // SAFETY: plain copy out of the map value.
    let Some(ino) = (unsafe { SK_INO.get(&sk) }).copied() else {
        return Ok(());
    };
    let o = offsets();
    if o.valid == 0 {
        return Ok(());
    }
    let skb: u64 = ctx.arg(1);
    // Payload = skb->len − TCP header length (skb->data is the TCP header here).
    let len: u32 = read(skb, o.skb_len)?;
    let th: u64 = read(skb, o.skb_data)?;
    let doff: u8 = read(th, 12)?;
    if len <= u32::from(doff >> 4) * 4 {
        return Ok(());
    }
    let Some(sp) = SOCK_STATE.get_ptr_mut(&ino) else {
        return Ok(());
    };
    // SAFETY: map value; a racing read only makes this arrival be taken or not.
    let s = unsafe { &mut *sp };
    if s.last_dir != DIR_IN && s.arrival == 0 {
        s.arrival = unsafe { bpf_ktime_get_ns() };
    }
    Ok(())
}
