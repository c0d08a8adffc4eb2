//! Socket-path syscall probes: count, bytes and time inside each socket syscall of the targets.
//!
//! `sys_enter_*` resolves the fd to a socket inode (non-sockets are ignored at once) and parks
//! the call in `PENDING`; `sys_exit_*` charges the call to `SOCK_STATS`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::TracePointContext,
};
use smp_common::{
    counters::Counter,
    sock::{PendingSyscall, SockKey, SockStats, SyscallKind},
};

use super::hop;
use crate::{
    kernel::current_socket,
    maps::{count, is_target, offsets, PENDING, SOCK_STATS},
};

/// match-proto:v5.10:include/trace/events/syscalls.h:sys_enter_<name>(..., fd, ...)
#[inline(always)]
pub fn on_enter(ctx: &TracePointContext, kind: SyscallKind) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !is_target((pid_tgid >> 32) as u32) {
        return Ok(());
    }
    let o = offsets();
    if o.valid == 0 {
        return Ok(());
    }
    // SAFETY: the offset comes from this tracepoint's tracefs format file.
    let fd: u64 = unsafe { ctx.read_at(o.sys_enter_fd as usize) }?;
    let fd = fd as u32;
    let sock = match current_socket(fd, &o) {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(()),
        Err(e) => {
            count(Counter::KernelReadFailed);
            return Err(e);
        }
    };
    // SAFETY: the offset comes from this tracepoint's tracefs format file.
    let buf: u64 = unsafe { ctx.read_at(o.sys_enter_buf as usize) }.unwrap_or(0);
    let pending = PendingSyscall {
        since_ns: unsafe { bpf_ktime_get_ns() },
        buf,
        ino: sock.ino,
        sk: sock.sk,
        fd,
        kind: kind as u32,
    };
    if PENDING.insert(&pid_tgid, &pending, 0).is_err() {
        count(Counter::MapInsertFailed);
    }
    if !kind.is_ingress() {
        // Write-side message boundaries are taken here, at entry: the data cannot reach the
        // peer (and its answer come back) before the write is entered, whereas the exit
        // probe may run late if the thread is preempted on its way out.
        hop::on_data(&pending, kind, 0, pending.since_ns, pid_tgid, &o);
    }
    Ok(())
}

/// match-proto:v5.10:include/trace/events/syscalls.h:sys_exit_<name>(long ret)
#[inline(always)]
pub fn on_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_target(tgid) {
        return Ok(());
    }
    // SAFETY: plain copy out of the map value.
    let pending = match unsafe { PENDING.get(&pid_tgid) } {
        Some(p) => *p,
        None => return Ok(()),
    };
    let _ = PENDING.remove(&pid_tgid);
    let o = offsets();
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the offset comes from this tracepoint's tracefs format file.
    let ret: i64 = unsafe { ctx.read_at(o.sys_exit_ret as usize) }?;
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
    if SyscallKind::from_u32(pending.kind).is_some_and(|k| !k.is_ingress()) {
        hop::on_write_exit(&pending, now, pid_tgid);
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

/// The offsets, if the current task is a tracked process and the offsets are filled.
#[inline(always)]
fn tracked_offsets() -> Option<smp_common::config::KernelOffsets> {
    let o = offsets();
    (o.valid != 0 && is_target((bpf_get_current_pid_tgid() >> 32) as u32)).then_some(o)
}

/// match-proto:v5.10:include/trace/events/syscalls.h:sys_exit_accept4(long ret)
#[inline(always)]
pub fn on_accept_exit(ctx: &TracePointContext) -> Result<(), i32> {
    let Some(o) = tracked_offsets() else {
        return Ok(());
    };
    // SAFETY: the offset comes from this tracepoint's tracefs format file.
    let ret: i64 = unsafe { ctx.read_at(o.sys_exit_ret as usize) }?;
    if ret >= 0 {
        hop::set_role(ret as u32, smp_common::hop::ROLE_DOWNSTREAM, &o);
    }
    Ok(())
}

/// match-proto:v5.10:include/trace/events/syscalls.h:sys_enter_connect(int fd, ...)
#[inline(always)]
pub fn on_connect_enter(ctx: &TracePointContext) -> Result<(), i32> {
    let Some(o) = tracked_offsets() else {
        return Ok(());
    };
    // SAFETY: the offset comes from this tracepoint's tracefs format file.
    let fd: u64 = unsafe { ctx.read_at(o.sys_enter_fd as usize) }?;
    hop::set_role(fd as u32, smp_common::hop::ROLE_UPSTREAM, &o);
    Ok(())
}
