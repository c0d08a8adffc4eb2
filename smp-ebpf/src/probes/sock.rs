//! Socket-path syscall probes: count, bytes and time inside each socket syscall of the targets.
//!
//! Two raw tracepoints see every syscall of every task: `sys_enter` looks the syscall number
//! up in `NR_OPS` (one array read: everything but the traced socket syscalls stops there),
//! then checks the tgid. For a tracked data syscall it resolves the fd to a socket inode
//! (`FD_CACHE`: the fd table is walked once per fd; non-sockets are ignored at once) and
//! parks the call in its thread's slot (`THREADS`); `sys_exit` charges the parked call to
//! its socket's counters (`SockState::io`, or `SOCK_STATS`).
//! `accept`/`connect` give sockets their roles for hop pairing; `close`, `dup2`, `dup3`,
//! `close_range` and `execve(at)` keep `FD_CACHE` true.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns, bpf_task_pt_regs,
    },
    programs::RawTracePointContext,
};
use smp_common::{
    config::KernelOffsets,
    counters::Counter,
    hop::{ROLE_DOWNSTREAM, ROLE_UPSTREAM},
    sock::{
        op, FdSocket, IoSlot, PendingSyscall, SockIo, SockKey, SockStats, SyscallKind,
        PENDING_ACCEPT, PENDING_FD_CLOSE, PENDING_FD_RESET, PENDING_IDLE,
    },
};

use super::hop;
use crate::{
    kernel::{btf_u64, current_fd, read, FdKind, ProbeError, SocketRef},
    maps::{
        add_sock_stats, atomic_add, count, created, is_target, offsets, sk_maybe_followed,
        syscall_op, FD_CACHE, FD_EPOCH, PASSIVE_SK, SOCK_STATE, THREADS,
    },
};

/// match-proto:v4.17:include/trace/events/syscalls.h:sys_enter(struct pt_regs *regs, long id)
#[inline(always)]
pub fn on_sys_enter(ctx: &RawTracePointContext) -> Result<(), ProbeError> {
    let nr: u64 = ctx.arg(1);
    let op = syscall_op(nr);
    if op == op::NONE {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let o = offsets();
    if o.valid == 0 {
        return Ok(());
    }
    let regs: u64 = ctx.arg(0);
    match op {
        op::ACCEPT => {
            // The socket exists only at exit: park the call so sys_exit knows what returned.
            let pending = PendingSyscall {
                kind: PENDING_ACCEPT,
                ..PendingSyscall::default()
            };
            park(pid_tgid, &pending);
            Ok(())
        }
        op::CONNECT => {
            let fd: u64 = read(regs, o.regs_arg0)?;
            if let Some(sock) = refresh(pid_tgid, fd as u32, o)? {
                hop::set_role(sock, ROLE_UPSTREAM, o);
            }
            Ok(())
        }
        op::CLOSE_ARG0 | op::CLOSE_ARG1 => {
            // The fd leaves the table inside the call: drop its cache entry at exit.
            let off = if op == op::CLOSE_ARG0 {
                o.regs_arg0
            } else {
                o.regs_arg1
            };
            let fd: u64 = read(regs, off)?;
            let pending = PendingSyscall {
                kind: PENDING_FD_CLOSE,
                fd: fd as u32,
                ..PendingSyscall::default()
            };
            park(pid_tgid, &pending);
            Ok(())
        }
        op::FD_RESET => {
            // Renewed now and again at exit: entries made in between are void too.
            renew_fd_epoch();
            let pending = PendingSyscall {
                kind: PENDING_FD_RESET,
                ..PendingSyscall::default()
            };
            park(pid_tgid, &pending);
            Ok(())
        }
        _ if op & op::DATA != 0 => match SyscallKind::from_u32(u32::from(op & 7)) {
            Some(kind) => {
                let r = on_data_enter(regs, kind, pid_tgid, o);
                hop::answer_pending(ctx);
                r
            }
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

/// The calling thread's slot for the socket syscall it is in (`None`: it has none yet).
#[inline(always)]
fn pending_slot(pid_tgid: u64) -> Option<*mut PendingSyscall> {
    THREADS
        .get_ptr_mut(&(pid_tgid as u32))
        // SAFETY: a field of the calling thread's own entry, written by this thread only.
        .map(|t| unsafe { core::ptr::addr_of_mut!((*t).pending) })
}

/// Parks a syscall in the calling thread's slot: rewritten in place (its entry is created
/// on its first traced call).
#[inline(always)]
fn park(pid_tgid: u64, pending: &PendingSyscall) {
    if let Some(t) = created(&THREADS, &(pid_tgid as u32)) {
        // SAFETY: the calling thread's own entry: only this thread writes it.
        unsafe { (*t).pending = *pending };
    }
}

/// `FD_CACHE` key of `fd` of the calling process.
#[inline(always)]
fn fd_key(pid_tgid: u64, fd: u32) -> u64 {
    (pid_tgid & 0xffff_ffff_0000_0000) | u64::from(fd)
}

/// Voids every `FD_CACHE` entry (a tracked process's fd table changed wholesale).
#[inline(always)]
fn renew_fd_epoch() {
    if let Some(e) = FD_EPOCH.get_ptr_mut(0) {
        // SAFETY: a plain u64; CLOCK_MONOTONIC only grows, so no earlier epoch comes back.
        unsafe { *e = bpf_ktime_get_ns() };
    }
}

/// The current `FD_EPOCH` (an inlined array read).
#[inline(always)]
fn fd_epoch() -> u64 {
    FD_EPOCH.get(0).copied().unwrap_or(0)
}

/// The socket behind `fd` of the calling (tracked) process, `None` if it is not one: from
/// `FD_CACHE` when it has a current entry (one lookup), else from a walk of the fd table,
/// remembered (open non-sockets too; closed fds are not remembered).
#[inline(always)]
fn resolve(pid_tgid: u64, fd: u32, o: &KernelOffsets) -> Result<Option<SocketRef>, ProbeError> {
    // Read before the walk: an entry made while the epoch changes is void at once.
    let epoch = fd_epoch();
    let key = fd_key(pid_tgid, fd);
    // SAFETY: read-only copy of a plain value.
    if let Some(e) = unsafe { FD_CACHE.get(&key) } {
        if e.epoch == epoch {
            return Ok((e.ino != 0).then_some(SocketRef {
                ino: e.ino,
                sk: e.sk,
            }));
        }
    }
    walk(key, epoch, fd, o)
}

/// Walks the fd table for `fd` and remembers what it found, whatever the cache held (a fresh
/// socket from `accept`/`connect`).
#[inline(always)]
fn refresh(pid_tgid: u64, fd: u32, o: &KernelOffsets) -> Result<Option<SocketRef>, ProbeError> {
    walk(fd_key(pid_tgid, fd), fd_epoch(), fd, o)
}

#[inline(always)]
fn walk(key: u64, epoch: u64, fd: u32, o: &KernelOffsets) -> Result<Option<SocketRef>, ProbeError> {
    let found = match current_fd(fd, o) {
        Ok(FdKind::Closed) => return Ok(None),
        Ok(FdKind::Other) => None,
        Ok(FdKind::Socket(s)) => Some(s),
        Err(e) => return Err(e),
    };
    let entry = FdSocket {
        epoch,
        ino: found.map_or(0, |s| s.ino),
        sk: found.map_or(0, |s| s.sk),
    };
    if FD_CACHE.insert(&key, &entry, 0).is_err() {
        count(Counter::MapInsertFailed);
    }
    Ok(found)
}

/// A data syscall's first three arguments (fd, buffer, and the third, its low 32 bits: a
/// `read`'s or `write`'s byte count; see `PendingSyscall::len`), in one kernel read when
/// their registers are adjacent (x86_64: `dx`, `si`, `di`). No branch on the syscall: a
/// value told apart by kind would be followed apart by the verifier through the pairing.
#[inline(always)]
fn args(regs: u64, o: &KernelOffsets) -> Result<(u64, u64, u32), ProbeError> {
    if o.regs_arg0 == o.regs_arg1 + 8 && o.regs_arg1 == o.regs_arg2 + 8 {
        let a: [u64; 3] = read(regs, o.regs_arg2)?;
        return Ok((a[2], a[1], a[0] as u32));
    }
    Ok((
        read(regs, o.regs_arg0)?,
        read(regs, o.regs_arg1).unwrap_or(0),
        read::<u64>(regs, o.regs_arg2).unwrap_or(0) as u32,
    ))
}

/// A tracked data syscall is entered: park it if its fd is a socket.
#[inline(always)]
fn on_data_enter(
    regs: u64,
    kind: SyscallKind,
    pid_tgid: u64,
    o: &KernelOffsets,
) -> Result<(), ProbeError> {
    let (fd, buf, len) = args(regs, o)?;
    let fd = fd as u32;
    let Some(sock) = resolve(pid_tgid, fd, o)? else {
        return Ok(());
    };
    let mut pending = PendingSyscall {
        since_ns: unsafe { bpf_ktime_get_ns() },
        buf,
        ino: sock.ino,
        sk: sock.sk,
        fd,
        kind: kind as u32,
        len,
        ..PendingSyscall::default()
    };
    if !kind.is_ingress() {
        // Write-side message boundaries are taken here, at entry: the data cannot reach the
        // peer (and its answer come back) before the write is entered, whereas the exit
        // probe may run late if the thread is preempted on its way out.
        pending.at_exit = hop::on_data(&pending, kind, 0, pending.since_ns, pid_tgid, o);
    }
    park(pid_tgid, &pending);
    Ok(())
}

/// match-proto:v4.17:include/trace/events/syscalls.h:sys_exit(struct pt_regs *regs, long ret)
#[inline(always)]
pub fn on_sys_exit(ctx: &RawTracePointContext) -> Result<(), ProbeError> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return Ok(());
    }
    let Some(slot) = pending_slot(pid_tgid) else {
        return Ok(());
    };
    // SAFETY: the calling thread's own slot: only this thread writes it.
    let pending = unsafe { *slot };
    if pending.kind == PENDING_IDLE {
        return Ok(());
    }
    // SAFETY: as above.
    unsafe { (*slot).kind = PENDING_IDLE };
    let o = offsets();
    let ret: i64 = ctx.arg(1);
    match pending.kind {
        PENDING_ACCEPT => {
            // accept/accept4 returned a downstream socket: its role is known from birth.
            if ret >= 0 {
                if let Some(sock) = refresh(pid_tgid, ret as u32, o)? {
                    hop::set_role(sock, ROLE_DOWNSTREAM, o);
                }
            }
            return Ok(());
        }
        PENDING_FD_CLOSE => {
            let _ = FD_CACHE.remove(&fd_key(pid_tgid, pending.fd));
            return Ok(());
        }
        PENDING_FD_RESET => {
            renew_fd_epoch();
            return Ok(());
        }
        _ => {}
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(kind) = SyscallKind::from_u32(pending.kind) else {
        return Ok(());
    };
    charge(tgid, &pending, ret, now.saturating_sub(pending.since_ns));
    if pending.at_exit != 0 {
        hop::on_write_exit(ctx, &pending, now, pid_tgid);
    }
    if kind.is_ingress() {
        on_read_done(ctx, &pending, kind, ret, now, pid_tgid, o);
    }
    Ok(())
}

/// Counts a data syscall that returned `ret` after `ns`: in its socket's message state when
/// its caller owns the socket's counters of that direction ([`SockIo`]; the pairing looks
/// that state up next, so the lookup is paid once), else in `SOCK_STATS`.
#[inline(always)]
fn charge(tgid: u32, p: &PendingSyscall, ret: i64, ns: u64) {
    let (bytes, errors) = if ret >= 0 { (ret as u64, 0) } else { (0, 1) };
    if let Some(s) = SOCK_STATE.get_ptr_mut(&p.ino) {
        // SAFETY: a map value; its counters are only added to atomically, and its owner
        // written once, by the first call (two first calls at once: the owner written last
        // takes both's counts; the totals stay exact).
        let io = unsafe { &mut (*s).io[SockIo::side(p.kind) & 1] };
        let slot = io.slot(tgid, p.fd, p.kind);
        if slot == IoSlot::Claim {
            (io.tgid, io.fd, io.kind) = (tgid, p.fd, p.kind + 1);
        }
        if slot != IoSlot::Shared {
            let st = &mut io.stats;
            // SAFETY: aligned u64s of the map value.
            unsafe {
                atomic_add(&mut st.calls, 1);
                if errors == 0 {
                    atomic_add(&mut st.bytes, bytes);
                } else {
                    atomic_add(&mut st.errors, 1);
                }
                if ns != 0 {
                    atomic_add(&mut st.ns, ns);
                }
            }
            return;
        }
    }
    let key = SockKey {
        tgid,
        fd: p.fd,
        ino: p.ino,
        kind: p.kind,
        _pad: 0,
    };
    add_sock_stats(
        &key,
        &SockStats {
            calls: 1,
            bytes,
            errors,
            ns,
        },
    );
}

/// A read returned `ret` at `now`: data starts or continues a message (a ClientHello it
/// brought is walked by the program it then tail-calls); end of stream forgets the
/// connection's message state (it is closing).
#[inline(always)]
fn on_read_done(
    ctx: &RawTracePointContext,
    p: &PendingSyscall,
    kind: SyscallKind,
    ret: i64,
    now: u64,
    pid_tgid: u64,
    o: &KernelOffsets,
) {
    if ret > 0 {
        if hop::on_data(p, kind, ret as u64, now, pid_tgid, o) & hop::READ_HELLO != 0 {
            hop::hello_pending(ctx);
        }
    } else if ret == 0 {
        hop::forget(p.ino, p.sk);
    }
}

/// `ENOSYS` (`include/uapi/asm-generic/errno.h`): a syscall's return value until it returns.
const ENOSYS: i64 = 38;

/// `MSG_PEEK` (`include/linux/socket.h`): a read that leaves the data queued.
const MSG_PEEK: u32 = 2;

/// The traced data syscall (`ingress`: a read) the current task is in, on socket `sk`, as a
/// call parked now (`clock`: its `since_ns` read; else 0, for a call that moved no data and
/// is only counted); `None` when the task is in no such syscall (io_uring, sendfile, a
/// kernel socket). The syscall, its fd and its buffer come from the task's user registers.
#[inline(always)]
fn current_call(
    sk: u64,
    ingress: bool,
    clock: bool,
    o: &KernelOffsets,
) -> Result<Option<(SyscallKind, PendingSyscall)>, ProbeError> {
    // SAFETY: helpers on the current task; its registers (typed: `struct pt_regs`) are read
    // with plain loads the verifier checks.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    let op = syscall_op(btf_u64(regs, o.regs_nr));
    if op & op::DATA == 0 {
        return Ok(None);
    }
    let Some(kind) = SyscallKind::from_u32(u32::from(op & 7)) else {
        return Ok(None);
    };
    if kind.is_ingress() != ingress {
        return Ok(None);
    }
    let (fd, buf, len) = (
        btf_u64(regs, o.regs_arg0),
        btf_u64(regs, o.regs_arg1),
        btf_u64(regs, o.regs_arg2) as u32,
    );
    let socket: u64 = read(sk, o.sock_socket)?;
    if socket == 0 {
        return Ok(None);
    }
    let call = PendingSyscall {
        since_ns: if clock {
            unsafe { bpf_ktime_get_ns() }
        } else {
            0
        },
        buf,
        ino: socket_ino(socket, o)?,
        sk,
        fd: fd as u32,
        kind: kind as u32,
        len,
        ..PendingSyscall::default()
    };
    Ok(Some((kind, call)))
}

/// The socket tracepoints (6.4+) fire inside `sock_sendmsg`/`sock_recvmsg` when a send or
/// receive completes, with the `struct sock *`: no fd lookup, and no hook on any other
/// syscall. A TCP send whose start [`on_tcp_send_start`] or [`on_xmit_start`] parked is
/// charged from that start; other sends (non-TCP sockets, a send that queued data but sent no
/// packet) are timed at completion: their hop's `t_out` includes the send, not timed apart.
///
/// match-proto:v6.4:include/trace/events/sock.h:sock_send_length(struct sock *sk, int ret, int flags)
/// match-proto:v6.4:include/trace/events/sock.h:sock_recv_length(struct sock *sk, int ret, int flags)
#[inline(always)]
pub fn on_sock_io(ctx: &RawTracePointContext, ingress: bool) -> Result<(), ProbeError> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return Ok(());
    }
    let o = offsets();
    if o.valid == 0 {
        return Ok(());
    }
    let sk: u64 = ctx.arg(0);
    let ret = i64::from(ctx.arg::<u64>(1) as i32);
    let flags = ctx.arg::<u64>(2) as u32;
    if ingress && flags & MSG_PEEK != 0 {
        return Ok(());
    }
    if !ingress {
        if let Some(slot) = pending_slot(pid_tgid) {
            // SAFETY: the calling thread's own slot: only this thread writes it.
            let started = unsafe { *slot };
            if started.kind != PENDING_IDLE && started.sk == sk {
                // SAFETY: as above.
                unsafe { (*slot).kind = PENDING_IDLE };
                let now = unsafe { bpf_ktime_get_ns() };
                charge(tgid, &started, ret, now.saturating_sub(started.since_ns));
                if started.at_exit != 0 {
                    hop::on_write_exit(ctx, &started, now, pid_tgid);
                }
                return Ok(());
            }
        }
    }
    // A call that moved no data (a read that would block: every event loop ends its reads
    // with one) is counted only: no clock.
    let Some((kind, call)) = current_call(sk, ingress, ret > 0, o)? else {
        return Ok(());
    };
    charge(tgid, &call, ret, 0);
    if ingress {
        on_read_done(ctx, &call, kind, ret, call.since_ns, pid_tgid, o);
    } else if ret > 0 {
        hop::on_data(&call, kind, 0, call.since_ns, pid_tgid, o);
        hop::answer_pending(ctx);
    }
    Ok(())
}

/// A TCP send is about to queue data (`tcp:tcp_sendmsg_locked`, after 6.12; it fires once per
/// segment-sized chunk): on the first chunk of a traced syscall, the outbound message
/// boundary is taken and the call parked, as `sys_enter` does, so that `t_out` is the send's
/// start and [`on_sock_io`] times the send apart.
///
/// match-proto:v6.18:include/trace/events/tcp.h:tcp_sendmsg_locked(const struct sock *sk, const struct msghdr *msg, const struct sk_buff *skb, int size_goal)
#[inline(always)]
pub fn on_tcp_send_start(ctx: &RawTracePointContext) -> Result<(), ProbeError> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let o = offsets();
    if o.valid == 0 {
        return Ok(());
    }
    let r = send_start(ctx.arg(0), pid_tgid, false, o);
    hop::answer_pending(ctx);
    r
}

/// A packet is queued to a device (`net:net_dev_queue`), used where `tcp_sendmsg_locked` is
/// missing (6.4–6.12): a traced write's first packet is where it starts, as
/// [`on_tcp_send_start`] does with its first chunk. The copy from the user and the segment's
/// build come before it; the loopback delivery to the peer (the slow part under emulation),
/// the ACKs and the socket's release come after, outside the hop.
///
/// match-proto:v3.11:include/trace/events/net.h:net_dev_queue(struct sk_buff *skb)
#[inline(always)]
pub fn on_xmit_start(ctx: &RawTracePointContext) -> Result<(), ProbeError> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let o = offsets();
    if o.valid == 0 {
        return Ok(());
    }
    let skb: u64 = ctx.arg(0);
    let sk: u64 = read(skb, o.skb_sk)?;
    if sk == 0 {
        return Ok(());
    }
    // Softirq work can send on this thread's time while it is in user mode, where its
    // registers still name its last syscall (a write on the same socket, maybe): only a
    // thread inside a syscall (x86_64 keeps `-ENOSYS` in `ax` until it returns) starts one.
    // SAFETY: helpers on the current task; the registers are only read via probe_read.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    let ret: i64 = read(regs, o.regs_ret)?;
    if ret != -ENOSYS {
        return Ok(());
    }
    let r = send_start(sk, pid_tgid, true, o);
    hop::answer_pending(ctx);
    r
}

/// The calling thread starts sending on `sk`: the first time in this syscall, its outbound
/// message boundary is taken and the call parked. `own_fd_only`: the packet may be another
/// socket's (softirq work run on this thread's time: an ACK, a send an ACK released), so it
/// counts only if `sk` is the socket of the write's fd.
#[inline(always)]
fn send_start(
    sk: u64,
    pid_tgid: u64,
    own_fd_only: bool,
    o: &KernelOffsets,
) -> Result<(), ProbeError> {
    if let Some(slot) = pending_slot(pid_tgid) {
        // SAFETY: the calling thread's own slot: only this thread writes it.
        let parked = unsafe { &*slot };
        if parked.kind != PENDING_IDLE && parked.sk == sk {
            return Ok(()); // a later chunk of the same send
        }
    }
    let Some((kind, mut call)) = current_call(sk, false, true, o)? else {
        return Ok(());
    };
    if own_fd_only && !matches!(current_fd(call.fd, o), Ok(FdKind::Socket(s)) if s.sk == sk) {
        return Ok(());
    }
    // (Keeping the slot pointer across the pairing, to spare `park` its lookup, doubled the
    // verifier's states past its million-instruction limit when the programs were larger.)
    call.at_exit = hop::on_data(&call, kind, 0, call.since_ns, pid_tgid, o);
    park(pid_tgid, &call);
    Ok(())
}

/// The inode number of a `struct socket` (its inode follows it in `struct socket_alloc`).
#[inline(always)]
fn socket_ino(socket: u64, o: &KernelOffsets) -> Result<u64, ProbeError> {
    Ok(read(socket, o.socket_alloc_inode + o.inode_ino)?)
}

/// `TCP_SYN_SENT`, `TCP_SYN_RECV` and `TCP_CLOSE` (`include/net/tcp_states.h`).
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;

/// A TCP socket changed state: one a tracked process is connecting is an upstream, one a
/// listener spawned will be a downstream (what `connect` and `accept` tell the raw syscall
/// hooks); one that closed is no longer followed by `tcp_probe`.
///
/// match-proto:v4.16:include/trace/events/sock.h:inet_sock_set_state(const struct sock *sk, const int oldstate, const int newstate)
#[inline(always)]
pub fn on_sock_state(ctx: &RawTracePointContext) -> Result<(), ProbeError> {
    let newstate = ctx.arg::<u64>(2) as i32;
    if newstate == TCP_CLOSE {
        // Gone (whoever closed it, read its end or not): `tcp_probe` stops following it, so
        // its `struct sock *`, reused by a new socket, is not taken for it. Its message
        // state stays until the LRU takes it (its inode is never reused).
        let sk: u64 = ctx.arg(0);
        if sk_maybe_followed(sk) {
            hop::unfollow(sk);
        }
        return Ok(());
    }
    if newstate == TCP_SYN_RECV {
        // A listener's child (`inet_csk_clone_lock`, in softirq: the process that will
        // accept it is not known yet). Marked whoever accepts it; looked at by the pairing
        // at its first data (`hop::on_data`).
        let sk: u64 = ctx.arg(0);
        if PASSIVE_SK.insert(&sk, &1, 0).is_err() {
            count(Counter::MapInsertFailed);
        }
        return Ok(());
    }
    if newstate != TCP_SYN_SENT {
        return Ok(());
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(tgid) {
        return Ok(());
    }
    let o = offsets();
    if o.valid == 0 {
        return Ok(());
    }
    let sk: u64 = ctx.arg(0);
    let socket: u64 = read(sk, o.sock_socket)?;
    if socket == 0 {
        return Ok(());
    }
    let ino = socket_ino(socket, o)?;
    hop::set_role(SocketRef { ino, sk }, ROLE_UPSTREAM, o);
    Ok(())
}
