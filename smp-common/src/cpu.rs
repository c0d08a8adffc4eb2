//! Scheduler accounting: on-CPU time per thread of the target processes.

/// Value of `THREAD_CPU` (key: thread id, `u32`). Written by `sched_switch` when the thread
/// leaves a CPU; only the CPU that ran the thread writes it, so no atomics are needed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadCpu {
    /// Process (thread group) of the thread.
    pub tgid: u32,
    /// Times the thread was switched out.
    pub switches: u32,
    /// Total on-CPU time, nanoseconds, as the scheduler accounts it (`se.sum_exec_runtime`
    /// increments over the stints seen since tracking started).
    pub on_cpu_ns: u64,
    /// `se.sum_exec_runtime` at the last switch-out: the next one is charged the increase,
    /// so a switch-in the probe missed loses nothing.
    pub last_exec: u64,
    /// Times it left a CPU of its own accord (to wait: `sched_switch` not a preemption). A
    /// thread that read one socket and wrote another with no block in between did both in
    /// one turn of its loop (the causal rule's check on a multiplexed downstream,
    /// [`crate::hop::ThreadLast::mux_down`]).
    pub blocks: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ThreadCpu>() == 32);

/// Value of the per-CPU array `RUNNING`: the tracked thread now on this CPU, if any.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Running {
    /// Thread id; 0 when the thread on this CPU is not tracked.
    pub tid: u32,
    pub tgid: u32,
    /// `bpf_ktime_get_ns()` when it was switched in.
    pub since_ns: u64,
    /// Its `se.sum_exec_runtime` when it was switched in: the stint is charged as the
    /// scheduler's own accounting of it (what /proc/stat and thread CPU clocks report).
    pub exec_at_in: u64,
}
const _: () = assert!(core::mem::size_of::<Running>() == 24);

/// Capacity of `THREAD_CPU` (an LRU map: the oldest exited threads go first).
pub const MAX_THREADS: u32 = 65536;

#[cfg(feature = "user")]
crate::user_pod!(ThreadCpu, Running);
