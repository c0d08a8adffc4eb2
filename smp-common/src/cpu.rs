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
    /// Times it left a CPU to wait ([`waits`]). A thread that read one socket and wrote
    /// another with no block in between did both in one turn of its loop (the causal rule's
    /// check on a multiplexed downstream, [`crate::hop::ThreadLast::mux_down`]).
    pub blocks: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ThreadCpu>() == 32);

/// A switch away from a thread is a wait (a block: the end of its loop's turn) when the
/// scheduler was not preempting it (`sched_switch`'s `preempt` false) and the thread was not
/// runnable (`state`, its `__state`, not `TASK_RUNNING`, 0). `preempt` alone does not tell:
/// a thread the tick or a wake-up marked for rescheduling while it ran in user mode is
/// switched out on its way back to user mode by a plain `schedule()` (`preempt` false, the
/// thread still runnable), which on a busy CPU happens inside most event-loop turns; and a
/// thread woken between deciding to sleep and calling `schedule()` switches out runnable too.
#[inline(always)]
pub const fn waits(preempt: bool, state: u32) -> bool {
    !preempt && state != 0
}

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

#[cfg(test)]
mod tests {
    use super::waits;

    /// `TASK_RUNNING`, `TASK_INTERRUPTIBLE`, `TASK_UNINTERRUPTIBLE`, `TASK_WAKING` (a waker
    /// on another CPU may set it while the switch runs).
    const RUNNING: u32 = 0;
    const INTERRUPTIBLE: u32 = 1;
    const UNINTERRUPTIBLE: u32 = 2;
    const WAKING: u32 = 0x200;

    #[test]
    fn a_thread_that_sleeps_waits() {
        for state in [INTERRUPTIBLE, UNINTERRUPTIBLE, WAKING] {
            assert!(waits(false, state), "{state:#x}");
        }
    }

    #[test]
    fn a_runnable_thread_switched_out_on_its_way_to_user_mode_does_not_wait() {
        assert!(!waits(false, RUNNING));
    }

    #[test]
    fn a_preempted_thread_does_not_wait_even_while_it_was_going_to_sleep() {
        for state in [RUNNING, INTERRUPTIBLE, UNINTERRUPTIBLE] {
            assert!(!waits(true, state), "{state:#x}");
        }
    }
}
