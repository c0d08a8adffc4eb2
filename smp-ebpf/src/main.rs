//! Kernel programs of smp-agent. Entry points only; the bodies live in `probes/`.
//!
//! Every entry point is a thin wrapper that calls its body and counts the body's error
//! ([`counted`]): a probe never fails the traced task, it counts what it could not record
//! (`maps::COUNTERS`).
#![no_std]
#![no_main]
// BPF's atomic add (`maps::sk_filter_add`): inline assembly on this target is unstable.
#![feature(asm_experimental_arch)]

mod kernel;
mod maps;
mod probes;

use aya_ebpf::{
    macros::{btf_tracepoint, fentry, kprobe, raw_tracepoint, tracepoint},
    programs::{
        BtfTracePointContext, FEntryContext, ProbeContext, RawTracePointContext, TracePointContext,
    },
};

/// Counts a body's failure in its loss counter (the body stopped early; nothing else to do).
#[inline(always)]
fn counted(r: Result<(), kernel::ProbeError>) {
    if let Err(e) = r {
        maps::count(e.counter());
    }
}

/// sched_switch (BTF tracepoint: `TP_PROTO(bool preempt, struct task_struct *prev,
/// struct task_struct *next, ...)`, stable since 4.17; `prev_state` was appended in 5.18): its
/// tasks are typed, so `next`'s ids are plain loads, not a helper call, on every switch of
/// the host.
#[btf_tracepoint(function = "sched_switch")]
pub fn smp_sched_switch(ctx: BtfTracePointContext) -> i32 {
    counted(probes::sched::on_switch(
        ctx.arg::<u64>(0) & 1 != 0,
        ctx.arg(1),
        ctx.arg(2),
    ));
    0
}

/// sched_process_exit: tells userspace a tracked process is gone.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn smp_sched_exit(ctx: TracePointContext) -> u32 {
    counted(probes::sched::on_exit(&ctx));
    0
}

/// sched_process_exec: any process starting a new program (discovery of proxies).
#[tracepoint(category = "sched", name = "sched_process_exec")]
pub fn smp_sched_exec(ctx: TracePointContext) -> u32 {
    counted(probes::sched::on_exec(&ctx));
    0
}

/// sched_process_fork (raw: `TP_PROTO(struct task_struct *parent, struct task_struct *child)`):
/// a tracked process forking a worker process.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn smp_sched_fork(ctx: RawTracePointContext) -> i32 {
    counted(probes::sched::on_fork(&ctx));
    0
}

/// Every syscall entry of every task (`raw_syscalls/sys_enter`: `TP_PROTO(struct pt_regs
/// *regs, long id)`); acts only on the traced socket syscalls of tracked processes.
#[raw_tracepoint(tracepoint = "sys_enter")]
// Inlined into the program the macro wraps it in: left a BPF function of its own (as LLVM
// chose once the write path grew), its frame and its callee's passed 512 bytes together.
#[inline(always)]
pub fn smp_sys_enter(ctx: RawTracePointContext) -> i32 {
    counted(probes::sock::on_sys_enter(&ctx));
    0
}

/// Every syscall exit of every task (`raw_syscalls/sys_exit`: `TP_PROTO(struct pt_regs *regs,
/// long ret)`); acts only on the calls `smp_sys_enter` parked.
#[raw_tracepoint(tracepoint = "sys_exit")]
// Inlined as `smp_sys_enter` is (outlined once the read path tail-called the hello walk).
#[inline(always)]
pub fn smp_sys_exit(ctx: RawTracePointContext) -> i32 {
    counted(probes::sock::on_sys_exit(&ctx));
    0
}

/// A socket send completed (`sock:sock_send_length`, 6.4+: `TP_PROTO(struct sock *sk, int
/// ret, int flags)`): replaces `smp_sys_enter`/`smp_sys_exit` where it exists, so that no
/// other syscall of any task pays a hook.
#[raw_tracepoint(tracepoint = "sock_send_length")]
// Inlined as `smp_sys_enter` is (LLVM left the write programs' bodies outlined once
// their pairing grew).
#[inline(always)]
pub fn smp_sock_send(ctx: RawTracePointContext) -> i32 {
    counted(probes::sock::on_sock_io(&ctx, false));
    0
}

/// A socket receive completed (`sock:sock_recv_length`, 6.4+, same arguments).
#[raw_tracepoint(tracepoint = "sock_recv_length")]
// Inlined as `smp_sys_enter` is (LLVM left the write programs' bodies outlined once
// their pairing grew).
#[inline(always)]
pub fn smp_sock_recv(ctx: RawTracePointContext) -> i32 {
    counted(probes::sock::on_sock_io(&ctx, true));
    0
}

/// A TCP send starts queueing data (`tcp:tcp_sendmsg_locked`, after 6.12: `TP_PROTO(const struct
/// sock *sk, const struct msghdr *msg, const struct sk_buff *skb, int size_goal)`): with the
/// socket tracepoints, where a write starts (its outbound message boundary).
#[raw_tracepoint(tracepoint = "tcp_sendmsg_locked")]
// Inlined as `smp_sys_enter` is (LLVM left the write programs' bodies outlined once
// their pairing grew).
#[inline(always)]
pub fn smp_tcp_send(ctx: RawTracePointContext) -> i32 {
    counted(probes::sock::on_tcp_send_start(&ctx));
    0
}

/// A packet is queued to a device (`net:net_dev_queue`, every kernel: `TP_PROTO(struct sk_buff
/// *skb)`): where `tcp_sendmsg_locked` is missing (6.4–6.12), the first packet of a traced write
/// is where it starts (its outbound message boundary).
#[raw_tracepoint(tracepoint = "net_dev_queue")]
// Inlined as `smp_sys_enter` is (LLVM left the write programs' bodies outlined once
// their pairing grew).
#[inline(always)]
pub fn smp_xmit_start(ctx: RawTracePointContext) -> i32 {
    counted(probes::sock::on_xmit_start(&ctx));
    0
}

/// A TCP socket changed state (`sock:inet_sock_set_state`, ≥ 4.16: `TP_PROTO(const struct
/// sock *sk, const int oldstate, const int newstate)`): with the socket tracepoints, tells
/// which sockets a proxy connected (its upstreams).
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn smp_sock_state(ctx: RawTracePointContext) -> i32 {
    counted(probes::sock::on_sock_state(&ctx));
    0
}

/// Never attached: tail-called (`maps::H2_TAIL`) by a write's program once its call is
/// parked, when the write, on a plain HTTP/2 downstream, forwarded more responses than the
/// one it paired; pairs the next and tail-calls itself for the one after. A program of its
/// own, so that the verifier walks one pairing per program.
#[raw_tracepoint]
// Inlined as the socket programs are (outlined, LLVM passed a register it never set).
#[inline(always)]
pub fn smp_h2_answers(ctx: RawTracePointContext) -> i32 {
    probes::hop::answer_next(&ctx);
    0
}

/// Never attached: tail-called (`maps::H2_TAIL`) by a write's program once its call is
/// parked, when the write sent a TLS ClientHello: walks it for its ALPN offer (an HTTP/2-only
/// one marks the connection HTTP/2 inside TLS). A program of its own, so that the verifier
/// walks the hello's bounded loop once, not once per way through the write's pairing.
#[raw_tracepoint]
pub fn smp_tls_hello(_ctx: RawTracePointContext) -> i32 {
    probes::hop::walk_hello();
    0
}

/// Benchmark floor: an empty program for the raw syscall tracepoints (`smp-agent probe-floor
/// --hooks raw`): what attaching to `sys_enter`/`sys_exit` costs before any body runs.
#[raw_tracepoint]
pub fn smp_floor_raw(_ctx: RawTracePointContext) -> i32 {
    0
}

/// Benchmark floor: an empty classic tracepoint program (`smp-agent probe-floor --hooks
/// classic`, attached to the 19 `syscalls/sys_{enter,exit}_*` the agent used before).
#[tracepoint]
pub fn smp_floor_tp(_ctx: TracePointContext) -> u32 {
    0
}

/// Benchmark floor with the least body a per-connection message timer needs (`smp-agent
/// probe-floor --hooks sock-min`, on the socket tracepoints and `tcp_probe`): one clock read
/// and one update of the socket's entry in an LRU hash keyed by `struct sock *` (`SK_INO` of
/// the floor's own load, the map type and size of the agent's per-socket state). No target
/// filter, no per-thread state, no counters: what any design that times messages per
/// connection pays at least, above the empty floor.
#[raw_tracepoint]
pub fn smp_floor_min(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    // SAFETY: a helper with no arguments.
    let now = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
    match maps::SK_INO.get_ptr_mut(&sk) {
        // SAFETY: a plain u64 of the map value.
        Some(v) => unsafe { *v = now },
        None => {
            // The floor counts nothing by design (its cost is the point).
            let _ = maps::SK_INO.insert(&sk, &now, 0);
        }
    }
    0
}

/// tcp_probe: when data reaches a proxy's socket, before the proxy reads it.
#[raw_tracepoint(tracepoint = "tcp_probe")]
pub fn smp_tcp_probe(ctx: RawTracePointContext) -> i32 {
    counted(probes::hop::on_tcp_probe(&ctx));
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
