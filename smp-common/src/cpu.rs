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
    /// Total on-CPU time, nanoseconds.
    pub on_cpu_ns: u64,
}
const _: () = assert!(core::mem::size_of::<ThreadCpu>() == 16);

/// Value of the per-CPU array `RUNNING`: the tracked thread now on this CPU, if any.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Running {
    /// Thread id; 0 when the thread on this CPU is not tracked.
    pub tid: u32,
    pub tgid: u32,
    /// `bpf_ktime_get_ns()` when it was switched in.
    pub since_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Running>() == 16);

/// Capacity of `THREAD_CPU` (an LRU map: the oldest exited threads go first).
pub const MAX_THREADS: u32 = 65536;

#[cfg(feature = "user")]
crate::user_pod!(ThreadCpu, Running);
