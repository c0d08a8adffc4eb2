//! Per-hop pairing of HTTP/1.x messages through a proxy, in the kernel.
//!
//! Message boundaries: on one socket HTTP/1.x alternates directions, so a data syscall in the
//! other direction than the socket's last one starts a new message. A message's inbound start
//! is the exit of its first read; its outbound start is the entry of its first write
//! (docs/design.md). TLS handshake records do not start messages.
//!
//! Pairing: a response read on an upstream socket is queued on the reading thread; the next
//! response write on a downstream socket by that thread forwards the oldest still-current one
//! (the proxy relays a response in the same event/poll that read it). That single binding
//! (downstream D ↔ upstream U) closes the exchange *and* pairs its request retroactively: D's
//! last inbound message is the request, U's last outbound message is its forward. Request
//! pairing thus does not depend on which thread forwarded the request (task migration, delays).
//! A write its own thread cannot pair takes the one response, of the last ones its process
//! read on any thread (`PROC_FWD`), that fits it; with more than one fitting it stays unpaired
//! and is counted (`ambiguous`): a work-stealing runtime reads and writes on different threads.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::RawTracePointContext,
};
use smp_common::{
    config::KernelOffsets,
    counters::Counter,
    event::EventKind,
    h2::{self, Cursor, FrameHeader, H2Walk, IOV_WALK},
    hop::{
        mux_in_trusted, mux_trusted, ExchangeRecord, FwdSlot, HopCounts, SendDone, SockState,
        TcpRtt, ThreadLast, DIR_IN, DIR_NONE, DIR_OUT, PAIRED_BY_ADJACENCY, PAIRED_BY_CAUSAL,
        PAIRED_BY_HINT, PAIRED_BY_SHIFT, PAIRED_BY_SOLE, ROLE_DOWNSTREAM, ROLE_UNKNOWN,
        ROLE_UPSTREAM, SOCK_H2, SOCK_MUX, SOCK_SK, SOCK_STREAM, SOCK_TLS, SOCK_TUPLE,
    },
    maps::{H2_ANSWERS_SLOT, TLS_HELLO_SLOT},
    pairing::{self, Class, MuxClaim, ReqFit, SockStates, Sole},
    sock::{
        PendingSyscall, SyscallKind, AT_EXIT_ANSWER_MORE, AT_EXIT_SEND_DONE, AT_EXIT_SENT,
        PENDING_IDLE,
    },
    tls::{self, Hello, HelloWalk},
};

use crate::{
    kernel::{read, read_user, read_user_buf, sock_net, sock_tuple, ProbeError, SocketRef},
    maps::{
        add_sock_stats, count, count_by, created, emit, emit_filled, header_at, offsets,
        sk_filter_add, sk_maybe_followed, zeroed, Wake, H2_ANSWERED, H2_TAIL, HOP_COUNTS,
        IOV_SCRATCH, PASSIVE_SK, PROC_FWD, SK_INO, SOCK_STATE, THREADS, THREAD_CPU, TLS_HELLO,
    },
};

/// A syscall's buffers as a frame walk reads them ([`walk_buffers`]).
type Iovecs = [u64; 2 * IOV_WALK];

/// `SOCK_STATE` as the pairing rules read it.
struct SockStateMap;

impl SockStates for SockStateMap {
    #[inline(always)]
    fn get(&self, ino: u64) -> Option<&SockState> {
        // SAFETY: read-only reference to a map value, used before this program returns.
        unsafe { SOCK_STATE.get(&ino) }
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

/// The buffers of a syscall's data, for a frame walk: up to [`IOV_WALK`] (address, length)
/// pairs in this CPU's `IOV_SCRATCH` (a single buffer: its address and a `write`'s or
/// `sendto`'s length, a read's bound by the bytes it returned; an iovec array's first
/// entries, read whole: entries past a `readv`'s count are not known apart, but a read's
/// length never reaches them).
#[inline(always)]
fn walk_buffers(p: &PendingSyscall, kind: SyscallKind, o: &KernelOffsets) -> Option<*mut Iovecs> {
    let t = IOV_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch slot, used by this program only until it returns.
    let t = unsafe { &mut *t };
    let iov = match kind {
        SyscallKind::Read | SyscallKind::Write | SyscallKind::Recvfrom | SyscallKind::Sendto => {
            *t = [0; 2 * IOV_WALK];
            t[0] = p.buf;
            // Its byte count: a write's bytes after it in the buffer are older data, whose
            // frames are not its own (a read's walk ends at the bytes it returned, fewer).
            t[1] = u64::from(p.len);
            return Some(t);
        }
        SyscallKind::Readv | SyscallKind::Writev => p.buf,
        SyscallKind::Recvmsg | SyscallKind::Sendmsg => {
            read_user::<u64>(p.buf + o.msghdr_iov as u64).ok()?
        }
    };
    // SAFETY: the slot is IOV_WALK pairs of u64, viewed as bytes for the copy.
    let bytes =
        unsafe { core::slice::from_raw_parts_mut(t.as_mut_ptr().cast::<u8>(), 16 * IOV_WALK) };
    if read_user_buf(iov, bytes).is_err() {
        // The array ends before IOV_WALK entries, at the end of a page: its first alone.
        let first: [u64; 2] = read_user(iov).ok()?;
        *t = [0; 2 * IOV_WALK];
        t[0] = first[0];
        t[1] = first[1];
    }
    Some(t)
}

/// This CPU's pairing counters of process `tgid`, created if absent: looked up once by a
/// body that bumps them more than once ([`add`]).
type Counts = Option<*mut HopCounts>;

#[inline(always)]
fn counts(tgid: u32) -> Counts {
    created(&HOP_COUNTS, &tgid)
}

/// Bumps counters `c` ([`counts`]).
#[inline(always)]
fn add(c: Counts, f: impl FnOnce(&mut HopCounts)) {
    if let Some(c) = c {
        // SAFETY: per-CPU value, only this CPU writes it while this program runs.
        f(unsafe { &mut *c });
    }
}

/// 1 when the process whose counters are `c` has earned trust in its hints, else 0, with no
/// branch but the counters' test ([`smp_common::hop::hints_trusted`],
/// [`smp_common::hop::Trust::trusted_bit`]).
#[inline(always)]
fn trusted_bit(c: Counts) -> u64 {
    // SAFETY: this CPU's counters of the process, read before this program returns.
    c.map_or(0, |c| unsafe { (*c).hint_trust.trusted_bit() })
}

/// Bumps process `tgid`'s counters (one lookup).
#[inline(always)]
fn bump(tgid: u32, f: impl FnOnce(&mut HopCounts)) {
    add(counts(tgid), f);
}

/// Thread `tid`'s [`ThreadLast`], created if absent.
#[inline(always)]
fn thread_last(tid: u32) -> Option<*mut ThreadLast> {
    // SAFETY: a field of the calling thread's own entry.
    created(&THREADS, &tid).map(|t| unsafe { core::ptr::addr_of_mut!((*t).last) })
}

/// A request forward by thread `tid` at `t_out` on upstream `u`: the oldest request this
/// thread read in `u`'s namespace that is still waiting for its response and no forward
/// claimed yet, claimed now: `u.hint` (its downstream inode; 0: none) and whether that was a
/// guess (`u.hint_guessed`, [`ThreadLast::claim`]). Claimed by a forward on an upstream
/// that is not HTTP/2 inside TLS (`mux` false), it is not the causal rule's
/// ([`mux_forward_of`]).
#[inline(always)]
fn claim_request(tid: u32, t_out: u64, u: &mut SockState, mux: bool) {
    u.hint = 0;
    u.hint_guessed = 0;
    let Some(t) = THREADS.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: the calling thread's own entry: only this thread writes it.
    let l = unsafe { &mut (*t).last };
    let net = u.net;
    let (hint, guessed) = l.claim(|d| {
        let Some(ds) = SOCK_STATE.get_ptr_mut(&d) else {
            return ReqFit::Dead;
        };
        // SAFETY: map value; a request is claimed by the thread that read it.
        let ds = unsafe { &mut *ds };
        if !pairing::claimable(ds, t_out) {
            ReqFit::Dead
        } else if !pairing::same_netns(ds.net, net) {
            ReqFit::Elsewhere
        } else {
            ds.claimed = ds.in_start;
            if !mux {
                ds.mux_reader = 0;
            }
            ReqFit::Take
        }
    });
    u.hint = hint;
    u.hint_guessed = u8::from(guessed);
}

/// A response write entered at `t_out` on HTTP/1.x downstream `d`: by the causal rule, its
/// request went out in the reading thread's first write on an HTTP/2-inside-TLS upstream
/// in its namespace after the read ([`pairing::forward_of`]): marked with that upstream and
/// that write (`mux_peer`, `mux_out`) for the pairing
/// ([`pairing::mux_response`]). Looked up once per request.
#[inline(always)]
fn mux_forward_of(d: &mut SockState, t_out: u64, tid: u32) {
    let reader = core::mem::take(&mut d.mux_reader);
    // SAFETY: plain reads of map values before this program returns.
    let writer = unsafe { THREADS.get(&tid) };
    // The upstream this (writing) thread last read.
    let answering = writer.map_or(0, |t| t.last.up);
    // Most often the reader writes the response too: one lookup.
    let t = if reader == tid {
        writer
    } else {
        // SAFETY: as above.
        unsafe { THREADS.get(&reader) }
    };
    let Some(t) = t else {
        return;
    };
    let log = &t.mux_log;
    if let Some((u_ino, at)) =
        pairing::forward_of(log, d.mux_reader_seq, d.in_start, t_out, d.net, answering)
    {
        d.mux_peer = u_ino;
        d.mux_out = at;
    }
}

/// The blocks of thread `tid` so far ([`smp_common::cpu::ThreadCpu::blocks`]; 0 before its
/// first switch).
#[inline(always)]
fn blocks(tid: u32) -> u32 {
    // SAFETY: plain copy out of a map value.
    unsafe { THREAD_CPU.get(&tid) }.map_or(0, |t| t.blocks)
}

/// Thread `tid` read HTTP/2-inside-TLS downstream `d_ino` (state `d`) at `now`, `len` bytes
/// ([`ThreadLast::mux_read`]; the read and its turn kept on `d`, a TLS record's header read
/// alone aside: [`pairing::note_mux_read`]).
#[inline(always)]
fn mux_read(tid: u32, d_ino: u64, d: &mut SockState, now: u64, len: u64) {
    let b = blocks(tid);
    if let Some(l) = thread_last(tid) {
        // SAFETY: the calling thread's own entry: only this thread writes it.
        unsafe { (*l).mux_read(d_ino, now, b) };
    }
    if len != tls::RECORD_HEADER {
        pairing::note_mux_read(d, now, pairing::turn(tid, b));
    }
}

/// A request forward on HTTP/1.x upstream `u` entered at `t_out` by thread `tid`: by the
/// causal rule, if in the same turn as the thread's last read of an HTTP/2-inside-TLS
/// downstream, it carries a request of that read (`u.mux_peer`, `u.mux_in`,
/// `u.mux_arrival`; [`ThreadLast::mux_claim`]). Judged and counted (`mux_in_checks`,
/// `mux_in_agrees`); trusted or not where its response is written ([`mux_in_answer`]).
#[inline(always)]
fn mux_claim(tgid: u32, tid: u32, u: &mut SockState, t_out: u64) {
    // The connection's first forward carries the request its connect claimed, if any
    // ([`connect_claim`]), unless it claims one itself.
    let connect_claim = if u.out_start == 0 { u.mux_peer } else { 0 };
    u.mux_peer = connect_claim;
    let connect_turn = u.fwd_turn;
    u.fwd_turn = 0;
    // SAFETY: plain reads of the calling thread's own entry.
    let Some(t) = (unsafe { THREADS.get(&tid) }) else {
        return;
    };
    let l = &t.last;
    if l.mux_down == 0 {
        return;
    }
    let b = blocks(tid);
    // For a pairing by alternation of its response's write ([`in_turn`]).
    u.fwd_turn = pairing::forward_turn(u, connect_turn, pairing::turn(tid, b));
    let d = SockStateMap.get(l.mux_down);
    match l.mux_claim(d, b, t_out, u) {
        MuxClaim::NotJudged => {}
        MuxClaim::Disagrees => {
            u.mux_peer = 0;
            bump(tgid, |c| {
                c.mux_in_checks += 1;
                c.mux_in_trust.judge(0);
            });
        }
        MuxClaim::Agrees(d_ino) => {
            bump(tgid, |c| {
                c.mux_in_checks += 1;
                c.mux_in_agrees += 1;
                c.mux_in_trust.judge(1);
            });
            if let Some(d) = d {
                u.mux_peer = d_ino;
                u.mux_in = d.mux_in;
                u.mux_arrival = d.mux_arrival;
            }
        }
    }
}

/// The downstream thread `tid` last read a new request from ([`ThreadLast::last_req`]; 0:
/// none).
#[inline(always)]
fn last_request(tid: u32) -> u64 {
    // SAFETY: plain read of the calling thread's own entry.
    unsafe { THREADS.get(&tid) }.map_or(0, |t| t.last.last_req)
}

/// A request forward by thread `tid` at `t_out` (upstream in namespace `net`) that found no
/// request to claim: if the downstream the thread last read a request from is TLS and its
/// request in flight is claimed already, it carries requests at once, HTTP/2 inside:
/// marked [`SOCK_MUX`] and counted (`mux_by_overlap`; [`pairing::overlap_shows_mux`]).
#[inline(always)]
fn overlap(tgid: u32, tid: u32, t_out: u64, net: u64) {
    let d_ino = last_request(tid);
    if d_ino == 0 {
        return;
    }
    let Some(d) = SOCK_STATE.get_ptr_mut(&d_ino) else {
        return;
    };
    // SAFETY: map value; one bit set.
    let d = unsafe { &mut *d };
    if pairing::overlap_shows_mux(d, t_out, net) {
        d.flags |= SOCK_MUX;
        bump(tgid, |c| c.mux_by_overlap += 1);
    }
}

/// A write entered at `t_out` by thread `tid` on TLS upstream `u` that follows its last
/// write: if it forwards another downstream's waiting request than `u`'s request in flight,
/// `u` carries requests at once, HTTP/2 inside: marked [`SOCK_MUX`] (this write is its
/// first as such) and counted (`mux_by_overlap`; [`pairing::up_overlap_shows_mux`]).
#[inline(always)]
fn up_overlap(tgid: u32, tid: u32, u: &mut SockState, t_out: u64) {
    // Of the test below, what spares a downstream's continuation writes (a response in
    // several writes) the two lookups.
    if u.role != ROLE_UPSTREAM || u.hint == 0 {
        return;
    }
    let d_ino = last_request(tid);
    let Some(d) = SockStateMap.get(d_ino) else {
        return;
    };
    if pairing::up_overlap_shows_mux(u, d_ino, d, t_out) {
        u.flags |= SOCK_MUX;
        bump(tgid, |c| c.mux_by_overlap += 1);
    }
}

/// A syscall moving a TLS ClientHello (the record's first 8 bytes `head`; `skip`: 5 for a
/// body read after its header, whose record starts 5 bytes before the buffer; `moved`: the
/// bytes a read returned): its socket and first buffer are left in this CPU's `TLS_HELLO`
/// for `smp_tls_hello` ([`answer_pending`], [`hello_pending`]). Returns whether they are.
#[inline(always)]
fn hello_seen(
    p: &PendingSyscall,
    kind: SyscallKind,
    o: &KernelOffsets,
    head: [u8; 8],
    skip: u64,
    moved: u64,
) -> bool {
    let Some(bufs) = walk_buffers(p, kind, o) else {
        return false;
    };
    let Some(h) = TLS_HELLO.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slots, used by this program and the one it tail-calls.
    unsafe {
        *h = Hello {
            ino: p.ino,
            base: (*bufs)[0].wrapping_sub(skip),
            len: (*bufs)[1].min(moved) + skip,
            head,
        };
    }
    true
}

/// What [`on_data`] returns for a read that left a ClientHello to walk ([`hello_pending`]).
pub const READ_HELLO: u32 = 1;

/// `smp_tls_hello`: walks the ClientHello in this CPU's `TLS_HELLO` ([`HelloWalk`], within
/// the write's first buffer: a hello is written whole, from one); one offering HTTP/2 and no
/// HTTP/1.x marks its socket HTTP/2 inside TLS ([`SOCK_MUX`]).
#[inline(always)]
pub fn walk_hello() {
    let Some(h) = TLS_HELLO.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot, filled by the program that tail-called this one.
    let h = unsafe { core::mem::take(&mut *h) };
    let mut w = HelloWalk::new(&h.head, h.len);
    for _ in 0..tls::HELLO_STEPS {
        let Some(at) = w.next() else {
            break;
        };
        match read_user::<[u8; 4]>(h.base + at) {
            Ok(b) => w.feed(b, true),
            Err(_) => w.feed([0; 4], false),
        }
    }
    if w.h2_only() {
        if let Some(s) = SOCK_STATE.get_ptr_mut(&h.ino) {
            // SAFETY: map value; one bit set.
            unsafe { (*s).flags |= SOCK_MUX };
        }
    }
}

/// The state of socket `ino` (its `struct sock *` is `sk`), created (role unknown) if absent.
/// A socket still registered in `SK_INO` whose state is absent lost it to the LRU (a proxy
/// with more live connections than `SOCK_STATE` holds): counted, its pairing starts again.
#[inline(always)]
fn state(ino: u64, sk: u64) -> Option<*mut SockState> {
    if let Some(s) = SOCK_STATE.get_ptr_mut(&ino) {
        return Some(s);
    }
    // SAFETY: plain copy out of the map value.
    if sk != 0 && unsafe { SK_INO.get(&sk) }.is_some_and(|i| *i == ino) {
        count(Counter::StateEvicted);
    }
    created(&SOCK_STATE, &ino)
}

/// Forgets a socket's message state (end of stream), and its `SK_INO` entry (`sk`), so that
/// data after it is not taken for state lost to the LRU. Removing an absent entry is no loss.
/// The syscalls it counted (`SockState::io`) move to `SOCK_STATS`.
#[inline(always)]
pub fn forget(ino: u64, sk: u64) {
    if let Some(s) = SOCK_STATE.get_ptr_mut(&ino) {
        // SAFETY: a map value, read before it is removed below.
        for io in unsafe { &(*s).io } {
            if let Some(key) = io.key(ino) {
                add_sock_stats(&key, &io.stats);
            }
        }
    }
    if SOCK_STATE.remove(&ino).is_ok() && sk != 0 {
        unfollow(sk);
    }
}

/// Stops following socket `sk` in `tcp_probe` (its end of stream, or it closed): its
/// `SK_INO` entry goes, and its count in `SK_FILTER` with it (if it had one).
#[inline(always)]
pub fn unfollow(sk: u64) {
    if SK_INO.remove(&sk).is_ok() {
        sk_filter_add(sk, u64::MAX);
    }
}

/// Marks a fresh socket's role (accept: downstream; connect: upstream).
#[inline(always)]
pub fn set_role(sock: SocketRef, role: u8, o: &KernelOffsets) {
    // A fresh socket: whatever state its inode had belonged to an earlier one.
    if !zeroed::<SockState>().is_some_and(|z| SOCK_STATE.insert(&sock.ino, z, 0).is_ok()) {
        count(Counter::MapInsertFailed);
        return;
    }
    let Some(s) = SOCK_STATE.get_ptr_mut(&sock.ino) else {
        return;
    };
    // SAFETY: map value just created for the calling thread's fresh socket.
    let s = unsafe { &mut *s };
    s.role = role;
    if let Ok(true) = sock_tuple(sock.sk, o, &mut s.tuple) {
        s.flags |= SOCK_TUPLE;
    }
    s.net = sock_net(sock.sk, o);
    if role == ROLE_UPSTREAM {
        // The connecting thread's turn: its first forward waits for the connection to open
        // ([`pairing::forward_turn`]).
        let tid = bpf_get_current_pid_tgid() as u32;
        let b = blocks(tid);
        s.fwd_turn = pairing::turn(tid, b);
        connect_claim(tid, b, s);
    }
}

/// Upstream `u`, just connected by thread `tid` (blocked `blocks` times so far): by the
/// causal rule, a connect in the same turn as the thread's last read of an HTTP/2-inside-TLS
/// downstream is for a request of that read, which its first forward carries once the
/// connection opens, a turn or more later (`mux_peer`, `mux_in`, `mux_arrival`, kept by
/// [`mux_claim`] for the first forward of a plain upstream; an HTTP/2 or HTTP/2-inside-TLS
/// one drops it at its first [`on_new_outbound`]). An event loop opens connections so when
/// its pool has none free (an Envoy worker catching up after a stall opens dozens): without
/// the claim, their responses were left to record alternation.
#[inline(always)]
fn connect_claim(tid: u32, blocks: u32, u: &mut SockState) {
    // SAFETY: plain reads of the calling thread's own entry.
    let Some(t) = (unsafe { THREADS.get(&tid) }) else {
        return;
    };
    let l = &t.last;
    if l.mux_down == 0 {
        return;
    }
    let d = SockStateMap.get(l.mux_down);
    // (A fresh socket: no alternation hint, no forward yet.)
    if let (MuxClaim::Agrees(d_ino), Some(d)) = (l.mux_claim(d, blocks, u64::MAX, u), d) {
        u.mux_peer = d_ino;
        u.mux_in = d.mux_in;
        u.mux_arrival = d.mux_arrival;
    }
}

/// A write that [`on_data`] marked at its entry (`p.at_exit`) returned at `now`: the
/// outbound message it started is sent; the responses its entry's chain left are paired
/// ([`AT_EXIT_ANSWER_MORE`]: `smp_h2_answers` resumed, which then sends the `SendDone`); the
/// response it forwarded is sent (`SendDone`).
#[inline(always)]
pub fn on_write_exit(ctx: &RawTracePointContext, p: &PendingSyscall, now: u64, pid_tgid: u64) {
    if p.at_exit & AT_EXIT_SENT != 0 {
        if let Some(s) = SOCK_STATE.get_ptr_mut(&p.ino) {
            // SAFETY: map value; only this thread writes this socket's outbound side now.
            let s = unsafe { &mut *s };
            if s.flags & SOCK_MUX != 0 {
                pairing::mux_write_returned(s, p.since_ns, now);
            }
            if s.out_start == p.since_ns {
                s.out_sent = now;
                // A plain HTTP/2 upstream's write forwarded requests on the streams it
                // opened: each stream's state is its forward's.
                let (first, last) = (s.h2_out_first, s.h2_out_stream);
                for i in 0..h2::SENT_STREAMS {
                    let Some(id) = h2::sent_stream(first, last, i) else {
                        break;
                    };
                    if let Some(v) = SOCK_STATE.get_ptr_mut(&h2::stream_key(p.ino, id)) {
                        // SAFETY: map value of a stream this write forwarded.
                        unsafe {
                            if (*v).out_start == p.since_ns {
                                (*v).out_sent = now;
                            }
                        }
                    }
                }
            }
        }
    }
    if p.at_exit & AT_EXIT_ANSWER_MORE != 0 {
        if let Some(a) = H2_ANSWERED.get_ptr_mut(0) {
            let emitted = u64::from(p.at_exit & AT_EXIT_SEND_DONE != 0);
            // SAFETY: this CPU's slot, used by this program and the one it tail-calls.
            unsafe {
                *a = h2::Answered::resumed(p.since_ns, pid_tgid, p.ino, p.mux_after, now, emitted)
            };
            // Returns only if the tail call failed (counted): the `SendDone` is sent here.
            answer_rest(ctx);
        }
    }
    if p.at_exit & AT_EXIT_SEND_DONE != 0 {
        send_done(pid_tgid, p.since_ns, now);
    }
}

/// Thread `pid_tgid`'s write entered at `out_ns`, which forwarded responses, returned at
/// `sent_ns`.
#[inline(always)]
fn send_done(pid_tgid: u64, out_ns: u64, sent_ns: u64) {
    emit(
        SendDone {
            header: header_at(EventKind::SendDone, sent_ns),
            tgid: (pid_tgid >> 32) as u32,
            tid: pid_tgid as u32,
            out_ns,
            sent_ns,
        },
        Wake::Lazy,
    );
}

/// A data syscall on a socket of a tracked process: a read that returned `len > 0` bytes
/// (called at exit), or a write being entered (`len` 0: outbound sizes are not tracked).
/// Returns, for a write, what its exit must do (`AT_EXIT_*` bits; 0 for reads).
///
/// Steps: the socket's state ([`state`]) and what is known of it ([`register`]); the class
/// of the first bytes; TLS control records ([`on_tls_control`]: no message); the role from
/// a new message's first bytes; the upstream this thread last read response data from; then
/// a new inbound ([`on_new_inbound`]) or outbound ([`on_new_outbound`]) message.
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
    let Some(sp) = state(p.ino, p.sk) else {
        return 0;
    };
    // SAFETY: a map value; concurrent updates of one socket are racy but bounded (a proxy
    // reads and writes one connection from one thread at a time).
    let s = unsafe { &mut *sp };
    register(s, p, o);
    // Data that reached the socket before this read (set by `on_tcp_probe`) is consumed now.
    let arrived = if ingress {
        core::mem::take(&mut s.arrival)
    } else {
        0
    };
    // A ClientHello is walked for its ALPN offer by `smp_tls_hello` ([`walk_hello`]): a
    // client's as it writes it, a server's as it reads it (whole, or its body after a read of
    // its 5-byte header alone).
    let mut hello = false;
    let (class, preface_out) = match first_bytes(p, kind, o) {
        // Writes are not classified (their length is not known here); an h2c client's
        // preface is told by its 8 bytes, a TLS client's ClientHello by its first 6.
        Some(b) => {
            let hello_body = if ingress {
                core::mem::take(&mut s.hello_body)
            } else {
                0
            };
            if hello_body != 0 && b[0] == 0x01 {
                let head = tls::body_head(hello_body as u16, &b);
                hello = hello_seen(p, kind, o, head, 5, len);
                on_tls_control(s, true, true, now);
                return if hello { READ_HELLO } else { 0 };
            }
            if b[0] == 0x16 && b[1] == 0x03 && (b[5] == 0x01 || ingress && len == 5) {
                if !ingress {
                    hello_seen(p, kind, o, b, 0, u64::MAX);
                } else if s.role == ROLE_UPSTREAM {
                    // A server's records: no hello.
                } else if len == 5 {
                    s.hello_body = u32::from(tls::record_len(&b));
                } else {
                    hello = hello_seen(p, kind, o, b, 0, len);
                }
            }
            (pairing::classify(&b, len), !ingress && b == *b"PRI * HT")
        }
        None => (Class::Other, false),
    };
    if preface_out {
        s.flags |= SOCK_H2;
    }
    let new_msg = if ingress {
        s.last_dir != DIR_IN
    } else {
        s.last_dir != DIR_OUT
    };

    if let Class::TlsControl(client_hello) = class {
        on_tls_control(s, client_hello, ingress, now);
        return if hello { READ_HELLO } else { 0 };
    }
    if class == Class::H2Preface {
        s.flags |= SOCK_H2;
        // A server reading the client's preface: its frames follow it.
        s.h2_in = H2Walk::starting(true);
    }
    if s.role == ROLE_UNKNOWN && new_msg {
        s.role = pairing::role_from_http(class, ingress);
        // Opened before the probes, and its bytes name no side (TLS application data of a
        // long-lived connection): its ports may.
        if s.role == ROLE_UNKNOWN && s.flags & SOCK_TUPLE != 0 {
            s.role = pairing::role_from_ports(
                s.tuple.local_port,
                s.tuple.remote_port,
                o.ephemeral_first,
                o.ephemeral_last,
            );
        }
    }
    // A connection whose handshake came before the probes saw it (opened before they
    // attached, or before its process was tracked, its accept seen or not): its TLS shows in
    // its records only.
    s.flags |= pairing::unseen_handshake_flags(s, class, ingress, new_msg);
    // The response write to forward from: the socket's own state, or on a plain HTTP/2
    // downstream the state of the stream the write answers.
    let (out_ino, out_state) = if s.flags & (SOCK_H2 | SOCK_TLS) == SOCK_H2 {
        let Some(header) = walk_buffers(p, kind, o) else {
            return 0;
        };
        let ino = p.ino;
        match (ingress, s.role) {
            (true, ROLE_DOWNSTREAM) => {
                h2_requests_read(s, ino, len, now, arrived, header, tgid, tid);
                return 0;
            }
            (true, ROLE_UPSTREAM) => {
                h2_responses_read(s, ino, len, now, arrived, header, tgid, tid);
                return 0;
            }
            (false, ROLE_UPSTREAM | ROLE_DOWNSTREAM) => {
                let Some(a) = H2_ANSWERED.get_ptr_mut(0) else {
                    return 0;
                };
                // SAFETY: this CPU's slot, used by this program and the one it tail-calls.
                let a = unsafe { &mut *a };
                *a = h2::Answered::new(p.since_ns, pid_tgid);
                h2_written(s, ino, p, preface_out, header, tid, a);
                if s.h2_out_first != 0 {
                    // A request forward: its exit marks the streams it opened sent.
                    return AT_EXIT_SENT;
                }
                // The first response it forwards is paired here, the rest by
                // `smp_h2_answers` once the call is parked ([`answer_pending`]).
                let Some(key) = a.take() else {
                    return 0;
                };
                match SOCK_STATE.get_ptr_mut(&key) {
                    Some(v) => (key, v),
                    None => return 0,
                }
            }
            _ => return 0,
        }
    } else {
        if !new_msg && !ingress && s.flags & (SOCK_TLS | SOCK_MUX) == SOCK_TLS {
            up_overlap(tgid, tid, s, p.since_ns);
        }
        if s.flags & SOCK_MUX != 0 {
            // HTTP/2 inside TLS: each read may bring any stream's message (on an upstream,
            // the last one before a response's write is taken as its response; on a
            // downstream, a request forward in the same turn as a read carries a request
            // of it: [`mux_claim`]), each write on an upstream any request this thread read
            // before it ([`mux_forward_of`]). Its records are still paired by alternation
            // below, for the messages the rule does not pair.
            if ingress {
                s.mux_in = now;
                // A read that found no new segment (a TLS reader's second read of a record,
                // its header read first) reads data that arrived before its last read did.
                if arrived != 0 || s.mux_arrival == 0 {
                    s.mux_arrival = pairing::arrival(arrived, now);
                }
                if s.role == ROLE_DOWNSTREAM {
                    mux_read(tid, p.ino, s, now, len);
                } else {
                    // For the judgement of the claims its response writes answer
                    // ([`judge_causal`]).
                    pairing::note_mux_read(s, now, pairing::turn(tid, blocks(tid)));
                }
            } else if s.role == ROLE_UPSTREAM {
                if let Some(t) = THREADS.get_ptr_mut(&tid) {
                    // SAFETY: the calling thread's own entry: only this thread writes it.
                    unsafe { (*t).mux_log.push(p.ino, p.since_ns, s.net) };
                }
                pairing::mux_write(s, p.since_ns);
            } else if s.role == ROLE_DOWNSTREAM {
                // Any write may forward responses: found by `smp_h2_answers` once the call
                // is parked ([`mux_in_answer`]), so that the causal rule's search, and the
                // pairing by alternation it falls back to, are walked there.
                if let Some(a) = H2_ANSWERED.get_ptr_mut(0) {
                    let t_out = p.since_ns;
                    // SAFETY: this CPU's slot, used by this program and the one it
                    // tail-calls.
                    unsafe {
                        *a = h2::Answered::mux_in(t_out, pid_tgid, p.ino, new_msg, s.mux_out)
                    };
                    // A multiplexed downstream's last write ([`h2::Answered::after`]).
                    s.mux_out = t_out;
                }
                // Remembered with its return: a response its chain of pairings leaves is
                // paired by the next write as this one's ([`pairing::causal_search`]).
                pairing::remember_write(s, p.since_ns);
                return AT_EXIT_SENT;
            }
        }
        if ingress && s.role == ROLE_UPSTREAM {
            // Response data, first or continuation: the response this thread forwards next
            // if it relays in the same turn (a TLS client's first "response" is its session
            // tickets; the real one then arrives as a continuation, maybe on another thread).
            if let Some(l) = thread_last(tid) {
                // SAFETY: the calling thread's own entry: only this thread writes it.
                unsafe { (*l).up = p.ino };
            }
        }
        if !new_msg {
            if ingress {
                s.in_bytes += len;
            }
            // A write of an HTTP/2-inside-TLS upstream: its exit is remembered.
            return if s.flags & SOCK_MUX != 0 {
                AT_EXIT_SENT
            } else {
                0
            };
        }
        if s.role == ROLE_UNKNOWN && s.flags & SOCK_H2 == 0 {
            bump(tgid, |c| c.unknown_role += 1);
        }
        if ingress {
            on_new_inbound(s, p.ino, len, now, arrived, tgid, tid);
            return 0;
        }
        (p.ino, sp)
    };
    // SAFETY: a map value: this socket's (above), or its stream's, written by this thread.
    let at_exit = on_new_outbound(
        unsafe { &mut *out_state },
        out_ino,
        p.since_ns,
        pid_tgid,
        false,
    );
    if out_ino != p.ino {
        // The stream is answered: its state has done its work (its trailers find none). Its
        // write's exit sends the response's `SendDone` only (the socket is not the stream).
        let _ = SOCK_STATE.remove(&out_ino);
        return at_exit & AT_EXIT_SEND_DONE;
    }
    at_exit
}

/// After a tracked write's pairing, its call parked: if it forwarded, on a plain HTTP/2
/// downstream, more responses than the one [`on_data`] paired (`H2_ANSWERED`), the rest are
/// paired by `smp_h2_answers`, one per run, each tail-calling the next ([`answer_next`]).
/// Looks at no value of the pairing (the verifier need not walk this once per way through
/// it: those that depended on one took `smp_sys_enter` past its million instructions).
#[inline(always)]
pub fn answer_pending(ctx: &RawTracePointContext) {
    // SAFETY: plain reads of this CPU's slot.
    if TLS_HELLO
        .get_ptr(0)
        .is_some_and(|h| unsafe { (*h).ino != 0 })
    {
        hello_pending(ctx);
        return;
    }
    // SAFETY: plain reads of this CPU's slot.
    if H2_ANSWERED
        .get_ptr(0)
        .is_some_and(|a| unsafe { (*a).pending() })
    {
        answer_rest(ctx);
    }
}

/// Tail-calls `smp_tls_hello` for the ClientHello a syscall left in `TLS_HELLO` (a read's:
/// [`READ_HELLO`]). Returns only if the tail call failed: not walked, the connection stays
/// paired by alternation (counted).
#[inline(always)]
pub fn hello_pending(ctx: &RawTracePointContext) {
    // SAFETY: the slot holds `smp_tls_hello`, a raw tracepoint program like every caller.
    unsafe { H2_TAIL.tail_call(ctx, TLS_HELLO_SLOT) };
    if let Some(h) = TLS_HELLO.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        unsafe { (*h).ino = 0 };
    }
    count(Counter::TlsHelloLost);
}

/// Tail-calls `smp_h2_answers` for the responses left in `H2_ANSWERED`. Returns only if the
/// tail call failed: those responses are answered unpaired, counted.
#[inline(always)]
fn answer_rest(ctx: &RawTracePointContext) {
    // SAFETY: the slot holds `smp_h2_answers`, a raw tracepoint program like every caller.
    unsafe { H2_TAIL.tail_call(ctx, H2_ANSWERS_SLOT) };
    if let Some(a) = H2_ANSWERED.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, used by this program until it returns.
        give_up(unsafe { &mut *a });
    }
}

/// The responses left in `a` are answered unpaired: counted, their states dropped.
#[inline(always)]
fn give_up(a: &mut h2::Answered) {
    count_by(Counter::H2AnswersLost, u64::from(a.left()));
    for _ in 0..h2::ANSWERS_PER_WRITE {
        let Some(key) = a.take() else {
            break;
        };
        // SAFETY: plain read of a map value.
        if SOCK_STATE
            .get_ptr(&key)
            .is_some_and(|v| unsafe { (*v).flags & SOCK_STREAM != 0 })
        {
            // Answered, not paired: no later write's stale bytes may pair it.
            let _ = SOCK_STATE.remove(&key);
        }
    }
}

/// `smp_h2_answers`: pairs the next response a plain HTTP/2 downstream write forwards
/// (`H2_ANSWERED`, filled by the write's [`on_data`]) as an exchange of its own, with the
/// write's entry as its forward, then tail-calls itself for the one after. The write's exit
/// sends one `SendDone` for every exchange it forwarded (the agent counts them per write).
///
/// A chain resumed at the write's exit ([`h2::Answered::resumed`]) ends here, where it pairs
/// no more: the write's `SendDone` is sent then, after its exchanges.
#[inline(always)]
pub fn answer_next(ctx: &RawTracePointContext) {
    let Some(a) = H2_ANSWERED.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot, filled by the program that tail-called this one.
    let a = unsafe { &mut *a };
    answer_one(ctx, a);
    if a.sent != 0 {
        if a.emitted != 0 {
            send_done(a.pid_tgid, a.t_out, a.sent);
        }
        a.sent = 0;
    }
}

/// [`answer_next`]'s pairing of the next response of write `a`; returns where the chain
/// ends.
#[inline(always)]
fn answer_one(ctx: &RawTracePointContext, a: &mut h2::Answered) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if a.pid_tgid != pid_tgid {
        // Not the writing thread's (a program between the write's and this one reused the
        // slot): what is left cannot be paired here.
        give_up(a);
        return;
    }
    let key = match a.mux_in_write() {
        Some((d_ino, new_msg)) => match mux_in_answer(ctx, a, d_ino, new_msg) {
            Some(d_ino) => d_ino,
            None => return,
        },
        None => match a.take() {
            Some(key) => key,
            None => return,
        },
    };
    let t_out = a.t_out;
    let tid = pid_tgid as u32;
    if let Some(v) = SOCK_STATE.get_ptr_mut(&key) {
        // SAFETY: the state of a stream this thread's write answers.
        let v = unsafe { &mut *v };
        let stream = v.flags & SOCK_STREAM != 0;
        // A stream's state waiting for its response, or a downstream whose response write
        // its program left to this one (its request went out on an HTTP/2-inside-TLS
        // upstream: [`on_new_outbound`]).
        if !stream || v.last_dir == DIR_IN {
            let at_exit = on_new_outbound(v, key, t_out, pid_tgid, true);
            if at_exit & AT_EXIT_SEND_DONE != 0 {
                mark_send_done(tid, t_out);
            }
        }
        if stream {
            // Answered: its state has done its work (its trailers find none).
            let _ = SOCK_STATE.remove(&key);
        }
    }
    if a.pending() {
        answer_rest(ctx);
    }
}

/// A write on HTTP/2-inside-TLS downstream `d_ino` (`a`, [`h2::Answered::mux_in`]): while
/// the process's claims are trusted ([`mux_in_trusted`]), the next response in the writing
/// thread's queue whose request the causal rule claimed from this downstream
/// ([`smp_common::hop::FwdQueue::find_causal`]) is paired with this write as its forward,
/// then this program runs again for the one after (at most [`h2::MUX_IN_ROUNDS`]). When none
/// is left, a write that starts a new message and paired none by the rule is returned, to be
/// paired by alternation as before the rule ([`answer_next`]: one pairing by alternation in
/// the program).
#[inline(always)]
fn mux_in_answer(
    ctx: &RawTracePointContext,
    a: &mut h2::Answered,
    d_ino: u64,
    new_msg: bool,
) -> Option<u64> {
    let (t_out, pid_tgid) = (a.t_out, a.pid_tgid);
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    a.finish();
    let dp = SOCK_STATE.get_ptr_mut(&d_ino)?;
    // SAFETY: map value of the downstream this thread is writing.
    let d = unsafe { &mut *dp };
    let c = counts(tgid);
    // SAFETY: this CPU's counters of the process, read before this program returns.
    let trusted = c.is_some_and(|c| mux_in_trusted(unsafe { &*c }));
    if trusted && a.paired < h2::MUX_IN_ROUNDS {
        let w = pairing::causal_search(d, a.after);
        // SAFETY: only thread `tid` (running here) touches its queue.
        if let Some(q) = THREADS.get_ptr_mut(&tid).map(|t| unsafe { &mut (*t).fwd }) {
            let i = q.find_causal(d_ino, w.from, t_out, &SockStateMap);
            q.wrote = 1;
            let slot = q.take_slot(i);
            if slot.ino != 0 {
                mux_in_pair(ctx, a, c, d_ino, d, slot, w);
                return None;
            }
        }
        // Read on another thread: a runtime whose connection task writes what its stream
        // tasks read (ztunnel's HBONE server). Only what was read since the write before:
        // a read on another thread before that write's entry may have reached the writer
        // after the write began, so it is not known to be that write's.
        // SAFETY: read-only use of a map value before this program returns.
        if let Some(p) = unsafe { PROC_FWD.get(&tgid) } {
            let slot = pairing::find_causal_across(p, d_ino, a.after, t_out, &SockStateMap);
            if slot.ino != 0 {
                mux_in_pair(ctx, a, c, d_ino, d, slot, w);
                return None;
            }
        }
    }
    if trusted && a.paired >= h2::MUX_IN_ROUNDS && a.sent == 0 {
        // The entry's chain is spent: the exit pairs on.
        answer_more_at_exit(tid, t_out, a.after);
    }
    if !new_msg {
        return None;
    }
    if a.paired == 0 {
        return Some(d_ino);
    }
    d.out_start = t_out;
    d.out_sent = 0;
    d.last_dir = DIR_OUT;
    None
}

/// [`mux_in_answer`]'s write on downstream `d_ino` (search `w`) pairs the response of
/// `slot` by the causal rule: the exchange, forwarded by this write or, read before the
/// write before it, by that one ([`pairing::CausalSearch`]: its `SendDone` sent again, for
/// this exchange), and this program again for the next response.
#[inline(always)]
fn mux_in_pair(
    ctx: &RawTracePointContext,
    a: &mut h2::Answered,
    c: Counts,
    d_ino: u64,
    d: &mut SockState,
    slot: FwdSlot,
    w: pairing::CausalSearch,
) {
    let (t_out, pid_tgid) = (a.t_out, a.pid_tgid);
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    a.paired += 1;
    // This program runs again for the next.
    a.unfinish();
    let late = slot.t_in < a.after;
    let fwd = if late { a.after } else { t_out };
    // (The request's read: the upstream's claim, `exchange` reads it.)
    let f = exchange(tgid, tid, c, d_ino, d, 0, slot, fwd, PAIRED_BY_CAUSAL);
    if f == Forward::Emitted {
        if late {
            send_done(pid_tgid, fwd, w.late_sent);
        } else {
            mark_send_done(tid, t_out);
            a.emitted = 1;
        }
    }
    answer_rest(ctx);
}

/// The call thread `tid` parked for its write entered at `t_out` (on an HTTP/2-inside-TLS
/// downstream whose write before it entered at `after`) pairs more responses at its exit
/// ([`AT_EXIT_ANSWER_MORE`]).
#[inline(always)]
fn answer_more_at_exit(tid: u32, t_out: u64, after: u64) {
    if let Some(t) = THREADS.get_ptr_mut(&tid) {
        // SAFETY: the calling thread's own entry: only this thread writes it.
        let p = unsafe { &mut (*t).pending };
        if p.kind != PENDING_IDLE && p.since_ns == t_out {
            p.at_exit |= AT_EXIT_ANSWER_MORE;
            p.mux_after = after;
        }
    }
}

/// The call thread `tid` parked for its write entered at `t_out` sends a `SendDone` at exit.
#[inline(always)]
fn mark_send_done(tid: u32, t_out: u64) {
    if let Some(t) = THREADS.get_ptr_mut(&tid) {
        // SAFETY: the calling thread's own entry: only this thread writes it.
        let p = unsafe { &mut (*t).pending };
        if p.kind != PENDING_IDLE && p.since_ns == t_out {
            p.at_exit |= AT_EXIT_SEND_DONE;
        }
    }
}

/// The `N` bytes at offset `off` of the data in buffers `bufs` ([`walk_buffers`]), and
/// whether they could be read: not when they are split across two buffers or lie beyond
/// them (then zeros; see [`H2Walk::carry`] for why not an `Option`).
#[inline(always)]
fn bytes_at<const N: usize>(bufs: *mut Iovecs, off: u64) -> ([u8; N], bool) {
    // SAFETY: this CPU's scratch slot, filled by `walk_buffers` in this program run.
    let t = unsafe { &*bufs };
    let mut off = off;
    for i in 0..IOV_WALK {
        let (base, len) = (t[2 * i], t[2 * i + 1]);
        if off < len {
            if base == 0 || off + N as u64 > len {
                break;
            }
            return match read_user::<[u8; N]>(base + off) {
                Ok(b) => (b, true),
                Err(_) => ([0; N], false),
            };
        }
        off -= len;
    }
    ([0; N], false)
}

/// The next frame header of walk `c` over buffers `bufs`, stepped over; `None`: the walk
/// ends (the data's end, a header it cannot read or refuses). The first may be one joined
/// across two reads ([`Cursor::carried`]).
#[inline(always)]
fn next_frame(c: &mut Cursor, bufs: *mut Iovecs) -> Option<FrameHeader> {
    if let Some(h) = c.carried() {
        return Some(h);
    }
    let off = c.next()?;
    let (b, read) = bytes_at::<9>(bufs, off);
    if !read {
        c.unreadable();
        return None;
    }
    let h = FrameHeader::parse(&b);
    c.advance(&h).then_some(h)
}

/// A walk over a read of `len` bytes in buffers `bufs`, from where `w` stands (joining a
/// header the last read ended inside of).
#[inline(always)]
fn read_walk(w: &H2Walk, len: u64, bufs: *mut Iovecs) -> Cursor {
    if w.split != 0 {
        let (head, read) = bytes_at::<9>(bufs, 0);
        Cursor::joined(w, head, read, len)
    } else {
        Cursor::new(w.skip, len)
    }
}

/// Where read walk `c` leaves `w` (a header split at the data's end kept for the next
/// read); a walk lost now is counted.
#[inline(always)]
fn read_walk_end(w: &mut H2Walk, c: &Cursor, bufs: *mut Iovecs) {
    let (tail, read) = match c.tail_at() {
        Some(at) => bytes_at::<8>(bufs, at),
        None => ([0; 8], false),
    };
    if w.carry(c, tail, read) {
        count(Counter::H2WalkLost);
    }
}

/// A read of `len` bytes on a plain HTTP/2 downstream `ino` (its first buffer `header`)
/// returned at `now`: each HEADERS frame opening a stream is a request, with a state of its
/// own ([`h2::stream_key`], [`stream_state`]) remembered on the thread like an HTTP/1.x
/// request; one read opening several streams starts them all at `now`. Frames the walk
/// cannot follow are counted (`H2WalkLost`), their streams not seen ([`h2`]).
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "inlined into one program: a struct of them would cost BPF stack"
)]
fn h2_requests_read(
    s: &mut SockState,
    ino: u64,
    len: u64,
    now: u64,
    arrived: u64,
    header: *mut Iovecs,
    tgid: u32,
    tid: u32,
) {
    s.last_dir = DIR_IN;
    let arrival = pairing::arrival(arrived, now);
    let mut n = 0u64;
    let mut c = read_walk(&s.h2_in, len, header);
    for _ in 0..h2::MAX_FRAMES {
        let Some(h) = next_frame(&mut c, header) else {
            break;
        };
        if !h2::opens(&mut s.h2_in.max_stream, &h) {
            continue;
        }
        n += 1;
        let key = h2::stream_key(ino, h.stream);
        let Some(v) = stream_state(key, ROLE_DOWNSTREAM, s) else {
            continue;
        };
        // SAFETY: map value just created for this request.
        let v = unsafe { &mut *v };
        v.in_start = now;
        v.in_arrival = arrival;
        v.in_bytes = len;
        v.last_dir = DIR_IN;
        if let Some(l) = thread_last(tid) {
            // SAFETY: the calling thread's own entry: only this thread writes it.
            unsafe { (*l).push_request(key) };
        }
    }
    read_walk_end(&mut s.h2_in, &c, header);
    bump(tgid, |c| {
        c.requests += n;
        c.h2_streams += n;
    });
}

/// A read of `len` bytes on a plain HTTP/2 upstream `ino` returned at `now`: a HEADERS frame
/// on a stream whose request forward waits for its response starts that response, queued on
/// the thread like an HTTP/1.x response (the stream's state stands for the upstream).
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "inlined into one program: a struct of them would cost BPF stack"
)]
fn h2_responses_read(
    s: &mut SockState,
    ino: u64,
    len: u64,
    now: u64,
    arrived: u64,
    header: *mut Iovecs,
    tgid: u32,
    tid: u32,
) {
    s.last_dir = DIR_IN;
    let arrival = pairing::arrival(arrived, now);
    // A plain lookup, its pointer not kept across the walk (the counters are bumped after
    // it): carried through the walk, the pointer made the verifier walk twice as much.
    // SAFETY: a plain read of this CPU's counters.
    let trust = unsafe { HOP_COUNTS.get(&tgid) }.map_or(0, |c| c.hint_trust.trusted_bit());
    let mut n = 0u64;
    let mut c = read_walk(&s.h2_in, len, header);
    for _ in 0..h2::MAX_FRAMES {
        let Some(h) = next_frame(&mut c, header) else {
            break;
        };
        if !h2::answers(&h) {
            continue;
        }
        let key = h2::stream_key(ino, h.stream);
        let Some(v) = SOCK_STATE.get_ptr_mut(&key) else {
            continue;
        };
        // SAFETY: map value of one stream's forward; its response arrives on this socket,
        // read by one thread at a time.
        let v = unsafe { &mut *v };
        if v.flags & SOCK_STREAM == 0 || v.last_dir != DIR_OUT {
            continue; // trailers, or not a stream's state
        }
        n += 1;
        v.in_start = now;
        v.in_arrival = arrival;
        v.in_bytes = len;
        v.last_dir = DIR_IN;
        queue_response(tgid, tid, FwdSlot::read(key, now, v, trust));
        if let Some(l) = thread_last(tid) {
            // SAFETY: the calling thread's own entry: only this thread writes it.
            unsafe { (*l).up = key };
        }
    }
    read_walk_end(&mut s.h2_in, &c, header);
    bump(tgid, |c| c.responses += n);
}

/// A write entered at `t_out` on plain HTTP/2 socket `ino` (its state `s`, its first buffer
/// `header`), walked from its first byte (the preface's end for an upstream's first): a
/// frame is written whole.
///
/// - On an upstream, each HEADERS frame opening a stream forwards a request, with a state
///   of its own claiming the request this thread read (its hint), as an HTTP/1.x request
///   forward does.
/// - On a downstream, each HEADERS frame that answers a request still waiting names a
///   stream whose response the write forwards (in `answered`, in frame order; beyond
///   [`h2::ANSWERS_PER_WRITE`] one is answered unpaired, its state gone, counted as
///   `h2_answers_lost`).
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "inlined into one program: a struct of them would cost BPF stack"
)]
fn h2_written(
    s: &mut SockState,
    ino: u64,
    p: &PendingSyscall,
    preface: bool,
    header: *mut Iovecs,
    tid: u32,
    answered: &mut h2::Answered,
) {
    s.last_dir = DIR_OUT;
    let upstream = s.role == ROLE_UPSTREAM;
    s.h2_out_first = 0;
    let t_out = p.since_ns;
    let mut c = Cursor::write(if preface { h2::PREFACE_LEN } else { 0 });
    for _ in 0..h2::MAX_FRAMES {
        let Some(h) = next_frame(&mut c, header) else {
            break;
        };
        let key = h2::stream_key(ino, h.stream);
        if !upstream {
            if !h2::answers(&h) {
                continue;
            }
            if let Some(v) = SOCK_STATE.get_ptr_mut(&key) {
                // SAFETY: plain reads of the map value.
                if unsafe { (*v).flags & SOCK_STREAM != 0 && (*v).last_dir == DIR_IN }
                    && !answered.push(key)
                {
                    // Answered, not paired: no later write's stale bytes may pair it.
                    let _ = SOCK_STATE.remove(&key);
                }
            }
        } else if h2::opens(&mut s.h2_out_stream, &h) {
            if s.h2_out_first == 0 {
                // The write's exit marks its streams sent ([`on_write_exit`]).
                s.h2_out_first = h.stream;
                s.out_start = t_out;
            }
            if let Some(v) = stream_state(key, ROLE_UPSTREAM, s) {
                // SAFETY: map value just created for this forward.
                let v = unsafe { &mut *v };
                v.out_start = t_out;
                v.last_dir = DIR_OUT;
                claim_request(tid, t_out, v, false);
            }
        }
    }
    // After a preface written alone, what follows it in the buffer is no frame: not a loss.
    if c.refused() && !preface {
        count(Counter::H2WalkLost);
    }
    if answered.over != 0 {
        count_by(Counter::H2AnswersLost, u64::from(answered.over));
    }
}

/// A fresh state for stream `key` of plain HTTP/2 socket `of`, with role `role`. `None`: the
/// map refused it (counted).
#[inline(always)]
fn stream_state(key: u64, role: u8, of: &SockState) -> Option<*mut SockState> {
    if !zeroed::<SockState>().is_some_and(|z| SOCK_STATE.insert(&key, z, 0).is_ok()) {
        count(Counter::MapInsertFailed);
        return None;
    }
    let v = SOCK_STATE.get_ptr_mut(&key)?;
    // SAFETY: map value just created.
    let r = unsafe { &mut *v };
    r.role = role;
    r.tuple = of.tuple;
    r.net = of.net;
    r.flags = (of.flags & SOCK_TUPLE) | SOCK_STREAM;
    Some(v)
}

/// What is known of a socket seen for the first time: its endpoints, whether it was
/// accepted (socket tracepoints: no `accept` hook), its `struct sock *` for `tcp_probe`.
#[inline(always)]
fn register(s: &mut SockState, p: &PendingSyscall, o: &KernelOffsets) {
    if s.flags & SOCK_TUPLE == 0 {
        if let Ok(true) = sock_tuple(p.sk, o, &mut s.tuple) {
            s.flags |= SOCK_TUPLE;
        }
        s.net = sock_net(p.sk, o);
        // SAFETY: plain copy out of the map value.
        if s.role == ROLE_UNKNOWN && unsafe { PASSIVE_SK.get(&p.sk) }.is_some() {
            s.role = ROLE_DOWNSTREAM;
            // Absent already: no loss (another CPU took it).
            let _ = PASSIVE_SK.remove(&p.sk);
        }
    }
    if s.flags & SOCK_SK == 0 && p.sk != 0 {
        if SK_INO.insert(&p.sk, &p.ino, 0).is_ok() {
            sk_filter_add(p.sk, 1);
        } else {
            count(Counter::MapInsertFailed);
        }
        s.flags |= SOCK_SK;
    }
}

/// A TLS handshake, CCS or alert record: no message; a ClientHello tells the role; a
/// downstream remembers its last handshake read (a first request may hide in it).
#[inline(always)]
fn on_tls_control(s: &mut SockState, client_hello: bool, ingress: bool, now: u64) {
    s.flags |= SOCK_TLS;
    if s.role == ROLE_UNKNOWN {
        s.role = pairing::role_from_tls(client_hello, ingress);
    }
    if ingress && s.role == ROLE_DOWNSTREAM {
        s.hs_read = now;
    }
    s.last_dir = DIR_NONE;
}

/// A new inbound message, its first read returned at `now` (`t_in`): a request on a
/// downstream (remembered on the thread for its forward's hint), a response on an upstream
/// (queued on the thread for its forward).
#[inline(always)]
fn on_new_inbound(
    s: &mut SockState,
    ino: u64,
    len: u64,
    now: u64,
    arrived: u64,
    tgid: u32,
    tid: u32,
) {
    if s.role == ROLE_UPSTREAM && s.flags & SOCK_H2 == 0 && pairing::unforwarded(s) {
        bump(tgid, |c| c.unforwarded += 1);
    }
    s.in_start = now;
    s.in_arrival = pairing::arrival(arrived, now);
    s.in_bytes = len;
    s.last_dir = DIR_IN;
    if s.flags & SOCK_H2 != 0 {
        return;
    }
    if s.role == ROLE_DOWNSTREAM {
        s.mux_peer = 0;
        bump(tgid, |c| c.requests += 1);
        if let Some(t) = created(&THREADS, &tid) {
            // SAFETY: the calling thread's own entry: only this thread writes it.
            let t = unsafe { &mut *t };
            t.last.push_request(ino);
            // For the causal rule's forward of it ([`mux_forward_of`]), by a thread that
            // writes HTTP/2-inside-TLS upstreams: a proxy that never does pays no lookup at
            // the response's write (a thread's requests before its first such write are left
            // to the pairing by alternation, as an untrusted rule's are).
            s.mux_reader = if t.mux_log.seq != 0 { tid } else { 0 };
            s.mux_reader_seq = t.mux_log.seq;
        }
    } else if s.role == ROLE_UPSTREAM {
        let c = counts(tgid);
        add(c, |c| c.responses += 1);
        queue_response(tgid, tid, FwdSlot::read(ino, now, s, trusted_bit(c)));
    }
}

/// A new outbound message, its first write entered at `t_out`: on a downstream, a response
/// forward (pairs the exchange); on an upstream, a request forward (claims its hint).
/// Returns what the write's exit must do.
#[inline(always)]
fn on_new_outbound(s: &mut SockState, ino: u64, t_out: u64, pid_tgid: u64, tail: bool) -> u32 {
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    let mut at_exit = AT_EXIT_SENT;
    if s.role == ROLE_DOWNSTREAM && s.flags & SOCK_H2 == 0 && s.mux_reader != 0 {
        mux_forward_of(s, t_out, tid);
    }
    if s.role == ROLE_DOWNSTREAM && s.flags & SOCK_H2 == 0 && !tail && s.mux_peer != 0 {
        // Its request went out on an HTTP/2-inside-TLS upstream: paired by `smp_h2_answers`
        // once the call is parked ([`answer_pending`]), so that the causal rule's test and
        // pairing are walked by the verifier there, not in every write's program.
        if let Some(a) = H2_ANSWERED.get_ptr_mut(0) {
            // SAFETY: this CPU's slot, used by this program and the one it tail-calls.
            let a = unsafe { &mut *a };
            *a = h2::Answered::new(t_out, pid_tgid);
            a.push(ino);
        }
    } else if s.role == ROLE_DOWNSTREAM && s.flags & SOCK_H2 == 0 {
        match forward_response(tgid, tid, ino, s, t_out, tail) {
            Forward::Emitted => at_exit |= AT_EXIT_SEND_DONE,
            Forward::Dropped => {}
            // Nothing answered on a downstream that has read no request (a TLS 1.3
            // server's session tickets): no message. Marked, it would make the real
            // response's write a continuation, leaving that response to linger.
            Forward::Nothing if s.in_start == 0 => return 0,
            Forward::Nothing => {}
        }
    } else if s.role == ROLE_UPSTREAM {
        // A request forward overtaking a response no write has forwarded yet holds that
        // response; one held since the request before is given up.
        if s.flags & SOCK_H2 == 0 && pairing::hold_response(s) {
            bump(tgid, |c| c.unforwarded += 1);
        }
        if s.flags & SOCK_MUX != 0 {
            pairing::mux_run_starts(s);
        }
        // Which downstream's request it likely is.
        let mux = s.flags & SOCK_MUX != 0;
        claim_request(tid, t_out, s, mux);
        if s.flags & (SOCK_H2 | SOCK_MUX) == 0 {
            // `tail`: the multiplexed downstream's write (`smp_h2_answers`) never gets here;
            // said so, the verifier does not walk this there.
            if s.hint == 0 && !tail {
                overlap(tgid, tid, t_out, s.net);
            }
            mux_claim(tgid, tid, s, t_out);
        } else if s.out_start == 0 {
            // Its connect's claim ([`connect_claim`]) is a plain upstream's only: no other
            // upstream's first forward takes it, nor its responses' search.
            s.mux_peer = 0;
        }
    }
    s.out_start = t_out;
    s.out_sent = 0;
    s.last_dir = DIR_OUT;
    at_exit
}

/// Queues a response read on upstream `ino` on thread `tid`.
#[inline(always)]
fn queue_response(tgid: u32, tid: u32, slot: FwdSlot) {
    let Some(t) = created(&THREADS, &tid) else {
        return;
    };
    // SAFETY: only thread `tid` (running here) touches its queue.
    let q = unsafe { &mut (*t).fwd };
    if q.push(slot, &SockStateMap) {
        bump(tgid, |c| c.queue_overflow += 1);
    }
    if let Some(p) = created(&PROC_FWD, &tgid) {
        // SAFETY: map value shared by the process's threads; a racing push tears at most a
        // slot, which then names no current response (`RespPool`).
        unsafe { (*p).push(slot) };
    }
}

/// The upstream thread `tid` last read response data from, as a queue slot, if a response
/// write on `d_ino` can forward its current response ([`pairing::adjacent`]).
#[inline(always)]
fn adjacent(tid: u32, d_ino: u64, d_in: u64, t_out: u64) -> Option<FwdSlot> {
    // SAFETY: plain copy out of a map value.
    let up = unsafe { THREADS.get(&tid) }?.last.up;
    if up == 0 || up == d_ino {
        return None;
    }
    // The downstream's namespace from its state, not a capture: this runs in a closure LLVM
    // keeps as a BPF function of its own, whose frame adds to the program's.
    let d_net = SockStateMap.get(d_ino).map_or(0, |d| d.net);
    pairing::adjacent(up, SockStateMap.get(up), d_ino, d_in, t_out, d_net)
}

/// A new response message is being written to downstream `d_ino` by thread `tid` at `t_out`:
/// find the response it forwards ([`pairing::pick`], docs/hops.md) and emit the exchange.
///
/// A process whose hints have named the downstream that took their response on ≥ 31 in 32
/// recent exchanges ([`smp_common::hop::hints_trusted`], judged on every exchange whatever
/// way paired it) gets its hinted response first wherever it is on the queue: an event
/// loop's (Envoy) are right
/// even when the batch and adjacency are not; a tokio proxy's with delays are mostly another
/// connection's, and there the batch and adjacency come first.
///
/// Every way requires the exchange's order ([`pairing::can_forward`]). A response once
/// forwarded is marked on its upstream (`fwd_in`), so copies of it queued on other threads
/// are dead. Responses that do not fit stay queued for their own downstream. Taken blindly,
/// one stray response (a TLS 1.3 server's session tickets, a response whose write was a
/// continuation of them) shifted every later pairing on the thread by one, indefinitely
/// (found with the ground-truth proxy's request log, `lab::truth`).
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "inlined into one program: a struct of them would cost BPF stack"
)]
fn forward_response(
    tgid: u32,
    tid: u32,
    d_ino: u64,
    d: &mut SockState,
    t_out: u64,
    tail: bool,
) -> Forward {
    let d_in = pairing::request_read_at(d);
    let d_net = d.net;
    if d_in == 0 {
        // No request read yet (an h2c server's SETTINGS written before it read the preface,
        // a server that speaks first): nothing to answer, so nothing unmatched.
        return Forward::Nothing;
    }
    let c = counts(tgid);
    let trust_hints = trusted_bit(c) != 0;
    // SAFETY: only thread `tid` (running here) touches its queue.
    let queue = THREADS
        .get_ptr_mut(&tid)
        .map(|t| unsafe { core::ptr::addr_of_mut!((*t).fwd) });
    // In `smp_h2_answers` only (`tail`): a write's own program leaves such a write to it.
    if tail && d.mux_peer != 0 {
        judge_causal(tid, c, d);
    }
    let (found, by) = match queue {
        // The response comes from that upstream ([`pairing::mux_response`]).
        _ if tail && d.mux_peer != 0 => (
            Some(FwdSlot {
                ino: d.mux_peer,
                t_in: 0,
                hint: 0,
            }),
            PAIRED_BY_CAUSAL,
        ),
        // No entry for this thread: only adjacency can find a response.
        None => (adjacent(tid, d_ino, d_in, t_out), PAIRED_BY_ADJACENCY),
        Some(qp) => {
            // SAFETY: only thread `tid` (running here) touches its queue.
            let q = unsafe { &mut *qp };
            // A thread that never queued a response (its entry came from its request reads)
            // is asked for adjacency whatever its process's hints: the pick's empty searches
            // end there when the hints are not trusted. (A branch of its own for it cost the
            // verifier a third more instructions in every socket program.)
            let trusted = trust_hints && q.tail != 0;
            pairing::pick(q, d_ino, d_in, t_out, d_net, trusted, &SockStateMap, || {
                adjacent(tid, d_ino, d_in, t_out)
            })
        }
    };
    let (found, by) = match found {
        Some(slot) => (slot, by),
        // Nothing on this thread: the one response the process read that this write can
        // forward, if there is just one (read on another thread: a work-stealing runtime).
        None => match across_threads(tgid, d_ino, d_in, t_out, d_net) {
            Sole::One(slot) => (slot, PAIRED_BY_SOLE),
            Sole::Ambiguous => {
                add(c, |c| {
                    c.unmatched_writes += 1;
                    c.ambiguous += 1;
                });
                return Forward::Nothing;
            }
            Sole::None => {
                add(c, |c| c.unmatched_writes += 1);
                return Forward::Nothing;
            }
        },
    };
    if d.flags & SOCK_MUX != 0 && by != PAIRED_BY_CAUSAL {
        in_turn(d, found);
    }
    // Read again: [`in_turn`] may have set it, in the state (a value carried out of the
    // branch above would have the verifier walk the exchange once per way it went).
    let d_in = pairing::request_read_at(d);
    exchange(tgid, tid, c, d_ino, d, d_in, found, t_out, by)
}

/// A response write on HTTP/2-inside-TLS downstream `d` that record alternation pairs with
/// the response of `slot`: if `d`'s last read was in the turn of the request's forward, that
/// read is the request's ([`pairing::read_in_turn`]), not the first read since `d`'s last
/// write (on HTTP/2, maybe a flow-control record long before it): the current message of `d`
/// restarts there, its bytes unknown.
#[inline(always)]
fn in_turn(d: &mut SockState, slot: FwdSlot) {
    let Some(u) = SockStateMap.get(slot.ino) else {
        return;
    };
    let t = pairing::read_in_turn(d, u, slot.t_in);
    // Alternation's read itself: its arrival and bytes stand.
    if t != 0 && t != d.in_start {
        d.in_start = t;
        d.in_arrival = t;
        d.in_bytes = 0;
    }
}

/// Downstream `d`'s request went out on an HTTP/2-inside-TLS upstream by the causal rule
/// (`d.mux_peer`): was that upstream the last one thread `tid` read from, or read in this turn
/// ([`pairing::causal_agrees`])? Counted (`c`) whatever pairs the response. Unless it was and
/// the process's claims have proved right
/// ([`mux_trusted`]), the claim is dropped and record alternation pairs it. (The decision is
/// left in the socket's state, not a value: one the pairing's searches carried doubled the
/// verifier's walk of them.)
#[inline(always)]
fn judge_causal(tid: u32, c: Counts, d: &mut SockState) {
    // SAFETY: plain copy out of a map value.
    let up = unsafe { THREADS.get(&tid) }.map_or(0, |t| t.last.up);
    let agree = u64::from(pairing::causal_agrees(up, d.mux_peer, || {
        let peer_turn = SockStateMap.get(d.mux_peer).map_or(0, |u| u.turn_read.turn);
        (peer_turn, pairing::turn(tid, blocks(tid)))
    }));
    let trusted = match c {
        Some(c) => {
            // SAFETY: this CPU's counters of the process, used before this program returns.
            let c = unsafe { &mut *c };
            c.mux_checks += 1;
            c.mux_agrees += agree;
            c.mux_trust.judge(agree as u32);
            mux_trusted(c)
        }
        None => false,
    };
    if agree == 0 || !trusted {
        d.mux_peer = 0;
    }
}

/// [`pairing::sole`] over the process's recent responses (`PROC_FWD`).
#[inline(always)]
fn across_threads(tgid: u32, d_ino: u64, d_in: u64, t_out: u64, d_net: u64) -> Sole {
    // SAFETY: read-only use of a map value before this program returns.
    match unsafe { PROC_FWD.get(&tgid) } {
        Some(p) => pairing::sole(p, d_ino, d_in, t_out, d_net, &SockStateMap),
        None => Sole::None,
    }
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
/// read at `d_in`; by the causal rule on a multiplexed downstream, the upstream's claim on
/// it, [`pairing::mux_request`]): closes the exchange (and its request, retroactively) and
/// emits it.
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "inlined into one program: a struct of them would cost BPF stack"
)]
fn exchange(
    tgid: u32,
    tid: u32,
    c: Counts,
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
    let causal = by == PAIRED_BY_CAUSAL;
    // The causal rule on the downstream's side: the request's read is the upstream's record
    // of it ([`pairing::mux_request`], read before the forward marks the response taken),
    // the response the upstream's own.
    let mux_in = causal && d.flags & SOCK_MUX != 0;
    let claim = if mux_in {
        pairing::mux_request(u, slot.t_in)
    } else {
        None
    };
    let d_in = claim.map_or(d_in, |c| c.read);
    // Another CPU's write took it since it was found: nothing left to forward. (By the causal
    // rule on the upstream's side: nothing read since the request's forward.)
    let r = if causal && !mux_in {
        pairing::mux_response(u, d)
    } else {
        pairing::waiting_response(u, slot.t_in)
    };
    let Some(r) = r else {
        add(c, |c| c.unmatched_writes += 1);
        return Forward::Nothing;
    };
    if causal && !mux_in {
        // One response per request; the upstream's current record-alternation message is
        // no other downstream's to take.
        d.mux_peer = 0;
        pairing::mark_forwarded(u, u.in_start);
    } else {
        pairing::mark_forwarded(u, slot.t_in);
    }
    match by {
        PAIRED_BY_HINT => add(c, |c| c.hinted += 1),
        PAIRED_BY_ADJACENCY => add(c, |c| c.adjacent += 1),
        PAIRED_BY_SOLE => add(c, |c| c.sole += 1),
        PAIRED_BY_CAUSAL => add(c, |c| c.causal += 1),
        _ => {}
    }
    let hinted = slot.hinted_to();
    if hinted != 0 {
        // Did the hint name the downstream that took its response? (Judged on every way of
        // pairing: the ways this process gets right tell whether its hints are.)
        let agrees = u64::from(hinted == d_ino);
        add(c, |c| {
            c.hint_checks += 1;
            c.hint_agrees += agrees;
            c.hint_trust.judge(agrees as u32);
        });
    }
    let (req_in, req_out, resp_in) = (d_in, r.req_out, r.resp_in);
    if !pairing::in_order(req_in, req_out, resp_in, t_out) {
        add(c, |c| c.inconsistent += 1);
        return Forward::Dropped;
    }
    let first_tls = pairing::first_tls_exchange(d, u);
    d.exchanges += 1;
    u.exchanges += 1;
    if first_tls {
        add(c, |c| c.tls_first_dropped += 1);
        return Forward::Dropped;
    }
    // Which run of an HTTP/2-inside-TLS upstream's writes carried the request, if
    // alternation paired it.
    if !pairing::forward_known(&r, req_in) {
        add(c, |c| c.stream_unknown += 1);
        return Forward::Dropped;
    }
    let (d_tuple, u_tuple) = (&d.tuple, &u.tuple);
    let flags = u32::from(d.flags) | (u32::from(u.flags) << 8) | (by << PAIRED_BY_SHIFT);
    // A multiplexed read's bytes are not one request's: unknown (0).
    let (req_arrival, req_bytes) = if let Some(c) = claim {
        (c.arrival, 0)
    } else if mux_in {
        (req_in, 0)
    } else {
        (d.in_arrival.min(req_in), d.in_bytes)
    };
    let rtt = &u.rtt;
    if emit_filled(
        |x: *mut ExchangeRecord| {
            // SAFETY: `x` is the reserved record: every field (plain integers, no drop) is
            // assigned before it is submitted.
            unsafe {
                // Its last moment: the response write's entry.
                (*x).header = header_at(EventKind::Exchange, t_out);
                (*x).tgid = tgid;
                (*x).tid = tid;
                (*x).req_in_ns = req_in;
                (*x).req_out_ns = req_out;
                (*x).resp_in_ns = resp_in;
                (*x).resp_out_ns = t_out;
                (*x).req_arrival_ns = req_arrival;
                (*x).resp_arrival_ns = r.resp_arrival;
                (*x).req_sent_ns = r.req_sent;
                (*x).req_bytes = req_bytes;
                (*x).resp_bytes = r.resp_bytes;
                (*x).downstream = *d_tuple;
                (*x).upstream = *u_tuple;
                (*x).flags = flags;
                (*x).up_srtt_us = rtt.srtt_us;
                (*x).up_rttvar_us = rtt.rttvar_us;
                (*x).up_min_rtt_us = rtt.min_rtt_us;
            }
        },
        Wake::Lazy,
    ) {
        let stream = u64::from(d.flags & SOCK_STREAM != 0);
        add(c, |c| {
            c.paired += 1;
            c.h2_paired += stream;
        });
        if u.flags & SOCK_STREAM != 0 {
            // A stream's forward, answered: its state has done its work.
            let _ = SOCK_STATE.remove(&u_ino);
        }
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
pub fn on_tcp_probe(ctx: &RawTracePointContext) -> Result<(), ProbeError> {
    let sk: u64 = ctx.arg(0);
    // Cheapest tests first: this fires for every TCP segment on the host.
    if !sk_maybe_followed(sk) {
        return Ok(());
    }
    let o = offsets();
    if o.valid == 0 {
        return Ok(());
    }
    // A segment without payload (an ACK) stops before the hash lookup: the skb is hot here.
    let skb: u64 = ctx.arg(1);
    // Payload = skb->len − TCP header length (skb->data is the TCP header here).
    let len: u32 = read(skb, o.skb_len)?;
    let th: u64 = read(skb, o.skb_data)?;
    let doff: u8 = read(th, 12)?;
    if len <= u32::from(doff >> 4) * 4 {
        return Ok(());
    }
    // SAFETY: plain copy out of the map value.
    let Some(ino) = (unsafe { SK_INO.get(&sk) }).copied() else {
        return Ok(());
    };
    let Some(sp) = SOCK_STATE.get_ptr_mut(&ino) else {
        return Ok(());
    };
    // SAFETY: map value; a racing read only makes this arrival be taken or not.
    let s = unsafe { &mut *sp };
    // An HTTP/2-inside-TLS upstream's response may come in after any read: the first segment
    // after each read is stamped ([`pairing::mux_response`]'s arrival).
    if (s.last_dir != DIR_IN || s.flags & SOCK_MUX != 0) && s.arrival == 0 {
        s.arrival = unsafe { bpf_ktime_get_ns() };
        if s.role == ROLE_UPSTREAM {
            // A response arrives: TCP's estimate of the connection's round trip now (the
            // network leg's estimate when the peer is on another node). Unknown stays 0.
            s.rtt = tcp_rtt(sk, o);
        }
    }
    Ok(())
}

/// TCP's round-trip estimate of socket `sk` (a `struct tcp_sock`), µs; zero where unknown.
#[inline(always)]
fn tcp_rtt(sk: u64, o: &KernelOffsets) -> TcpRtt {
    let mut r = TcpRtt::default();
    if let Ok(srtt) = read::<u32>(sk, o.tcp_srtt) {
        r.srtt_us = srtt >> 3;
    }
    if let Ok(mdev) = read::<u32>(sk, o.tcp_mdev) {
        r.rttvar_us = mdev >> 2;
    }
    if let Ok(min) = read::<u32>(sk, o.tcp_min_rtt) {
        // `~0U` until the first sample.
        r.min_rtt_us = if min == u32::MAX { 0 } else { min };
    }
    r
}
