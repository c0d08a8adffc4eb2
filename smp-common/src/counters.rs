//! Self-accounting counters of the kernel programs (loss is data, docs/design.md, rule 5).
//!
//! Kept in the per-CPU array `COUNTERS`, indexed by [`Counter`]; userspace sums over CPUs.

/// Index into the `COUNTERS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// A ring-buffer reservation failed: an event was dropped.
    RingbufDropped = 0,
    /// A map insert failed (map full): a sample was not recorded.
    MapInsertFailed = 1,
    /// A kernel read (`bpf_probe_read_kernel`) failed: a syscall could not be resolved.
    KernelReadFailed = 2,
    /// A tracked thread left a CPU whose switch-in the probe did not see. Not a loss: the
    /// stint is still charged from the scheduler's own `sum_exec_runtime`.
    SwitchInMissed = 3,
    /// Data on a socket whose pairing state the LRU `SOCK_STATE` had evicted (still
    /// registered in `SK_INO`): more live connections than it holds. Its message in flight
    /// is not paired; pairing starts again from its next message.
    StateEvicted = 4,
    /// A read or write of a plain HTTP/2 connection whose frames the walk could not all
    /// follow (`h2`): the streams that started in the rest of that data are not seen. The
    /// walk takes its place again at the next data that starts on a frame.
    H2WalkLost = 5,
    /// Responses a write on a plain HTTP/2 downstream answered that the kernel could not
    /// pair: more than `h2::ANSWERS_PER_WRITE` in one write, or the tail call to the program
    /// that pairs a write's further responses failed. Unpaired (`http2`) and named here.
    H2AnswersLost = 6,
    /// A TLS ClientHello a write sent that was not walked for its ALPN offer (the tail call
    /// to the program that walks it failed): if it offered HTTP/2 alone, its connection is
    /// paired by record alternation.
    TlsHelloLost = 7,
}

/// Number of entries of the `COUNTERS` array. Keep in step with [`Counter`].
pub const COUNTER_SLOTS: u32 = 8;

impl Counter {
    /// Every counter, in index order.
    pub const ALL: [Counter; COUNTER_SLOTS as usize] = [
        Counter::RingbufDropped,
        Counter::MapInsertFailed,
        Counter::KernelReadFailed,
        Counter::SwitchInMissed,
        Counter::StateEvicted,
        Counter::H2WalkLost,
        Counter::H2AnswersLost,
        Counter::TlsHelloLost,
    ];

    /// A stable snake_case name, used in outputs.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::RingbufDropped => "ringbuf_dropped",
            Counter::MapInsertFailed => "map_insert_failed",
            Counter::KernelReadFailed => "kernel_read_failed",
            Counter::SwitchInMissed => "switch_in_missed",
            Counter::StateEvicted => "state_evicted",
            Counter::H2WalkLost => "h2_walk_lost",
            Counter::H2AnswersLost => "h2_answers_lost",
            Counter::TlsHelloLost => "tls_hello_lost",
        }
    }
}
