//! Scheduler probes: on-CPU time of the target processes' threads.
//!
//! `sched_switch` runs on the CPU that switches: the thread that was running there (`prev`)
//! leaves, `next` arrives. The per-CPU `RUNNING` slot remembers which tracked thread arrived
//! and when, so the time charged to `prev` is exactly its stint on this CPU.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    programs::{RawTracePointContext, TracePointContext},
    EbpfContext as _,
};
use smp_common::{
    counters::Counter,
    cpu::{waits, Running, ThreadCpu},
    event::{EventKind, ProcessExec, ProcessExit, ProcessFork},
};

use crate::{
    kernel::{btf_task_ids, btf_u32, btf_u64, task_ids, ProbeError},
    maps::{count, emit, header, is_target, offsets, tracked_since, Wake, RUNNING, THREAD_CPU},
};

/// `prev` and `next` of a switch (BTF pointers: the verifier checks loads from them against
/// `struct task_struct`).
///
/// match-proto:v5.18:include/trace/events/sched.h:TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next, unsigned int prev_state)
#[inline(always)]
pub fn on_switch(preempt: bool, prev: u64, next: u64) -> Result<(), ProbeError> {
    let o = offsets();
    if o.valid == 0 {
        return Ok(());
    }
    let slot = RUNNING.get_ptr_mut(0).ok_or(ProbeError::MapSlot)?;
    // SAFETY: per-CPU slot, only this CPU touches it here.
    let running = unsafe { &mut *slot };

    // `prev` is still the current task here (the switch happens after the tracepoint): its
    // ids come from a helper, one kernel read fewer on every switch of the host.
    let pid_tgid = bpf_get_current_pid_tgid();
    let (prev_tid, prev_tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    let (next_tid, next_tgid) = btf_task_ids(next, o);
    let next_tracked = next_tid != 0 && is_target(next_tgid);
    if !next_tracked && !is_target(prev_tgid) {
        // Neither side is tracked (the common case): two bit tests, nothing else.
        running.tid = 0;
        return Ok(());
    }
    let seen_in = running.tid != 0 && running.tid == prev_tid;
    if is_target(prev_tgid) {
        if !seen_in {
            // A tracked thread leaves a CPU on which its arrival was not seen.
            count(Counter::SwitchInMissed);
        }
        // Charge what the scheduler charged (it updated `prev` before this tracepoint):
        // excludes IRQ and steal time, like /proc/<pid>/stat and thread CPU clocks.
        let exec = btf_u64(prev, o.task_sum_exec);
        let block = u32::from(waits(preempt, btf_u32(prev, o.task_state)));
        match THREAD_CPU.get_ptr_mut(&prev_tid) {
            // SAFETY: only the CPU that ran the thread updates its entry.
            Some(entry) => unsafe {
                (*entry).on_cpu_ns += exec.saturating_sub((*entry).last_exec);
                (*entry).last_exec = exec;
                (*entry).switches += 1;
                (*entry).blocks += block;
            },
            None => {
                // First sight: from its arrival if seen, from birth if born after tracking
                // started, else (it ran before) nothing of this stint. (When tracking started
                // is looked up on first sight only: one hash lookup fewer on every other
                // switch of a tracked thread.)
                let since = tracked_since(prev_tgid).unwrap_or(u64::MAX);
                let started = btf_u64(prev, o.task_start_time);
                let base = if seen_in {
                    running.exec_at_in
                } else if started >= since {
                    0
                } else {
                    exec
                };
                let fresh = ThreadCpu {
                    tgid: prev_tgid,
                    switches: 1,
                    on_cpu_ns: exec.saturating_sub(base),
                    last_exec: exec,
                    blocks: block,
                    _pad: 0,
                };
                if THREAD_CPU.insert(&prev_tid, &fresh, 0).is_err() {
                    count(Counter::MapInsertFailed);
                }
            }
        }
    }

    if next_tracked {
        *running = Running {
            tid: next_tid,
            tgid: next_tgid,
            since_ns: unsafe { bpf_ktime_get_ns() },
            exec_at_in: btf_u64(next, o.task_sum_exec),
        };
    } else {
        running.tid = 0;
    }
    Ok(())
}

/// match-proto:v5.10:include/trace/events/sched.h:TP_PROTO(struct task_struct *p)
#[inline(always)]
pub fn on_exit(ctx: &TracePointContext) -> Result<(), ProbeError> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let tid = pid_tgid as u32;
    if tid != tgid || !is_target(tgid) {
        return Ok(());
    }
    let _ = ctx.as_ptr();
    emit(
        ProcessExit {
            header: header(EventKind::ProcessExit),
            tgid,
            _pad: 0,
        },
        Wake::Now,
    );
    Ok(())
}

/// match-proto:v5.10:include/trace/events/sched.h:TP_PROTO(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
///
/// Every exec on the host, so that discovery sees proxies start (execs are rare next to
/// syscalls; the record is 24 bytes).
#[inline(always)]
pub fn on_exec(ctx: &TracePointContext) -> Result<(), ProbeError> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let _ = ctx.as_ptr();
    emit(
        ProcessExec {
            header: header(EventKind::ProcessExec),
            tgid,
            _pad: 0,
        },
        Wake::Now,
    );
    Ok(())
}

/// match-proto:v5.10:include/trace/events/sched.h:TP_PROTO(struct task_struct *parent, struct task_struct *child)
///
/// A tracked process forking a new process (nginx's master starting a worker): userspace
/// tracks the child at once instead of at the next rescan. Threads are not reported.
#[inline(always)]
pub fn on_fork(ctx: &RawTracePointContext) -> Result<(), ProbeError> {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_target(parent_tgid) {
        return Ok(());
    }
    let o = offsets();
    if o.valid == 0 {
        return Ok(());
    }
    let child: u64 = ctx.arg(1);
    let (child_tid, child_tgid) = task_ids(child, &o)?;
    if child_tid != child_tgid {
        return Ok(());
    }
    emit(
        ProcessFork {
            header: header(EventKind::ProcessFork),
            parent_tgid,
            child_tgid,
        },
        Wake::Now,
    );
    Ok(())
}
