//! Kernel programs of smp-agent. Entry points only; the bodies live in `probes/`.
//!
//! Every entry point is a thin wrapper that calls a `try_*` body and ignores its error: a probe
//! never fails the traced task, it counts what it could not record (see `maps::COUNTERS`).
#![no_std]
#![no_main]

mod kernel;
mod maps;
mod probes;

use aya_ebpf::{
    macros::{fentry, kprobe, raw_tracepoint, tracepoint},
    programs::{FEntryContext, ProbeContext, RawTracePointContext, TracePointContext},
};
use smp_common::sock::SyscallKind;

/// sched_switch (raw tracepoint: `TP_PROTO(bool preempt, struct task_struct *prev,
/// struct task_struct *next, ...)`, stable since 4.17; `prev_state` was appended in 5.18).
#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn smp_sched_switch(ctx: RawTracePointContext) -> i32 {
    let _ = probes::sched::on_switch(&ctx);
    0
}

/// sched_process_exit: tells userspace a tracked process is gone.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn smp_sched_exit(ctx: TracePointContext) -> u32 {
    let _ = probes::sched::on_exit(&ctx);
    0
}

/// sched_process_exec: any process starting a new program (discovery of proxies).
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn smp_sched_exec(ctx: TracePointContext) -> u32 {
    let _ = probes::sched::on_exec(&ctx);
    0
}

/// sched_process_fork (raw: `TP_PROTO(struct task_struct *parent, struct task_struct *child)`):
/// a tracked process forking a worker process.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn smp_sched_fork(ctx: RawTracePointContext) -> i32 {
    let _ = probes::sched::on_fork(&ctx);
    0
}

/// One `sys_enter_<name>` and one `sys_exit_<name>` program per traced socket syscall.
macro_rules! syscall_pair {
    ($enter:ident, $exit:ident, $kind:expr, $name:literal) => {
        #[tracepoint(category = "syscalls", name = $name)]
        pub fn $enter(ctx: TracePointContext) -> u32 {
            let _ = probes::sock::on_enter(&ctx, $kind);
            0
        }

        #[tracepoint]
        pub fn $exit(ctx: TracePointContext) -> u32 {
            let _ = probes::sock::on_exit(&ctx);
            0
        }
    };
}

syscall_pair!(
    smp_enter_read,
    smp_exit_read,
    SyscallKind::Read,
    "sys_enter_read"
);
syscall_pair!(
    smp_enter_readv,
    smp_exit_readv,
    SyscallKind::Readv,
    "sys_enter_readv"
);
syscall_pair!(
    smp_enter_recvfrom,
    smp_exit_recvfrom,
    SyscallKind::Recvfrom,
    "sys_enter_recvfrom"
);
syscall_pair!(
    smp_enter_recvmsg,
    smp_exit_recvmsg,
    SyscallKind::Recvmsg,
    "sys_enter_recvmsg"
);
syscall_pair!(
    smp_enter_write,
    smp_exit_write,
    SyscallKind::Write,
    "sys_enter_write"
);
syscall_pair!(
    smp_enter_writev,
    smp_exit_writev,
    SyscallKind::Writev,
    "sys_enter_writev"
);
syscall_pair!(
    smp_enter_sendto,
    smp_exit_sendto,
    SyscallKind::Sendto,
    "sys_enter_sendto"
);
syscall_pair!(
    smp_enter_sendmsg,
    smp_exit_sendmsg,
    SyscallKind::Sendmsg,
    "sys_enter_sendmsg"
);

/// accept/accept4 return the downstream socket of a proxy: its role is known from birth.
#[tracepoint]
pub fn smp_exit_accept4(ctx: TracePointContext) -> u32 {
    let _ = probes::sock::on_accept_exit(&ctx);
    0
}

#[tracepoint]
pub fn smp_exit_accept(ctx: TracePointContext) -> u32 {
    let _ = probes::sock::on_accept_exit(&ctx);
    0
}

/// connect: the socket is an upstream of the proxy.
#[tracepoint]
pub fn smp_enter_connect(ctx: TracePointContext) -> u32 {
    let _ = probes::sock::on_connect_enter(&ctx);
    0
}

/// tcp_probe: when data reaches a proxy's socket, before the proxy reads it.
#[raw_tracepoint(tracepoint = "tcp_probe")]
pub fn smp_tcp_probe(ctx: RawTracePointContext) -> i32 {
    let _ = probes::hop::on_tcp_probe(&ctx);
    0
}

/// Optional-hook probe: loaded only by `smp-agent check` to learn whether kprobes work here.
#[kprobe]
pub fn smp_probe_kprobe(_ctx: ProbeContext) -> u32 {
    0
}

/// Optional-hook probe: loaded only by `smp-agent check` to learn whether fentry works here.
#[fentry(function = "tcp_sendmsg")]
pub fn smp_probe_fentry(_ctx: FEntryContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
