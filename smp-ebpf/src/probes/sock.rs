//! Socket-path syscall probes: count, bytes and time inside each socket syscall of the targets.
//!
//! Two raw tracepoints see every syscall of every task: `sys_enter` looks the syscall number
//! up in `NR_OPS` (one array read: everything but the traced socket syscalls stops there),
//! then checks the tgid. For a tracked data syscall it resolves the fd to a socket inode
//! (non-sockets are ignored at once) and parks the call in `PENDING`; `sys_exit` charges the
//! parked call to `SOCK_STATS`. `accept`/`connect` give sockets their roles for hop pairing.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::RawTracePointContext,
};
use smp_common::{
    config::KernelOffsets,
    counters::Counter,
    hop::{ROLE_DOWNSTREAM, ROLE_UPSTREAM},
    sock::{op, PendingSyscall, SockKey, SockStats, SyscallKind, PENDING_ACCEPT, PENDING_IDLE},
};

use super::hop;
use crate::{
    kernel::{current_socket, read},
    maps::{count, is_target, offsets, syscall_op, PENDING, SOCK_STATS},
};

/// match-proto:v4.17:include/trace/events/syscalls.h:sys_enter(struct pt_regs *regs, long id)
#[inline(always)]
pub fn on_sys_enter(ctx: &RawTracePointContext) -> Result<(), i32> {
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
            hop::set_role(fd as u32, ROLE_UPSTREAM, &o);
            Ok(())
        }
        _ => match SyscallKind::from_u32(u32::from(op - op::DATA)) {
            Some(kind) => on_data_enter(regs, kind, pid_tgid, &o),
            None => Ok(()),
        },
    }
}

/// Parks a syscall in the calling thread's `PENDING` slot: rewritten in place when the
/// thread has one (a lookup), inserted only on its first traced call.
#[inline(always)]
fn park(pid_tgid: u64, pending: &PendingSyscall) {
    if let Some(slot) = PENDING.get_ptr_mut(&pid_tgid) {
        // SAFETY: the calling thread's own slot: only this thread writes it.
        unsafe { *slot = *pending };
        return;
    }
    if PENDING.insert(&pid_tgid, pending, 0).is_err() {
        count(Counter::MapInsertFailed);
    }
}

/// A tracked data syscall is entered: park it if its fd is a socket.
#[inline(always)]
fn on_data_enter(
    regs: u64,
    kind: SyscallKind,
    pid_tgid: u64,
    o: &KernelOffsets,
) -> Result<(), i32> {
    let fd: u64 = read(regs, o.regs_arg0)?;
    let fd = fd as u32;
    let sock = match current_socket(fd, &o) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(()),
        Err(e) => {
            count(Counter::KernelReadFailed);
            return Err(e);
        }
    };
    let buf: u64 = read(regs, o.regs_arg1).unwrap_or(0);
    let pending = PendingSyscall {
        since_ns: unsafe { bpf_ktime_get_ns() },
        buf,
        ino: sock.ino,
        sk: sock.sk,
        fd,
        kind: kind as u32,
    };
    park(pid_tgid, &pending);
    if !kind.is_ingress() {
        // Write-side message boundaries are taken here, at entry: the data cannot reach the
        // peer (and its answer come back) before the write is entered, whereas the exit
        // probe may run late if the thread is preempted on its way out.
        hop::on_data(&pending, kind, 0, pending.since_ns, pid_tgid, o);
    }
    Ok(())
}

/// match-proto:v4.17:include/trace/events/syscalls.h:sys_exit(struct pt_regs *regs, long ret)
#[inline(always)]
pub fn on_sys_exit(ctx: &RawTracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return Ok(());
    }
    let Some(slot) = PENDING.get_ptr_mut(&pid_tgid) else {
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
    if pending.kind == PENDING_ACCEPT {
        // accept/accept4 returned a downstream socket: its role is known from birth.
        if ret >= 0 {
            hop::set_role(ret as u32, ROLE_DOWNSTREAM, &o);
        }
        return Ok(());
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let key = SockKey {
        tgid,
        fd: pending.fd,
        ino: pending.ino,
        kind: pending.kind,
        _pad: 0,
    };
    let ns = now.saturating_sub(pending.since_ns);
    match SOCK_STATS.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, only this CPU writes it while this program runs.
        Some(s) => unsafe {
            (*s).calls += 1;
            (*s).ns += ns;
            if ret >= 0 {
                (*s).bytes += ret as u64;
            } else {
                (*s).errors += 1;
            }
        },
        None => {
            let fresh = SockStats {
                calls: 1,
                bytes: if ret >= 0 { ret as u64 } else { 0 },
                errors: if ret < 0 { 1 } else { 0 },
                ns,
            };
            if SOCK_STATS.insert(&key, &fresh, 0).is_err() {
                count(Counter::MapInsertFailed);
            }
        }
    }
    if ret > 0 {
        match SyscallKind::from_u32(pending.kind) {
            Some(kind) if kind.is_ingress() => {
                hop::on_data(&pending, kind, ret as u64, now, pid_tgid, &o)
            }
            Some(_) => hop::add_out_bytes(pending.ino, ret as u64),
            None => {}
        }
    } else if ret == 0 && SyscallKind::from_u32(pending.kind).is_some_and(|k| k.is_ingress()) {
        // End of stream: the connection is closing; forget its message state.
        hop::forget(pending.ino);
    }
    Ok(())
}
