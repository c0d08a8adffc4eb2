//! Names of the kernel programs' maps, as the eBPF object exports them (each map's static in
//! `smp-ebpf/src/maps.rs` bears its name: aya takes a map's name from its symbol) and as the
//! loader looks them up. The agent's tests check that the built object exports every name.

pub const NR_OPS: &str = "NR_OPS";
pub const TRACKED: &str = "TRACKED";
pub const TARGETS: &str = "TARGETS";
pub const FD_CACHE: &str = "FD_CACHE";
pub const FD_EPOCH: &str = "FD_EPOCH";
pub const THREAD_CPU: &str = "THREAD_CPU";
pub const RUNNING: &str = "RUNNING";
pub const SOCK_STATS: &str = "SOCK_STATS";
pub const SOCK_STATE: &str = "SOCK_STATE";
pub const SK_INO: &str = "SK_INO";
pub const SK_FILTER: &str = "SK_FILTER";
pub const PASSIVE_SK: &str = "PASSIVE_SK";
pub const THREADS: &str = "THREADS";
pub const ZEROS: &str = "ZEROS";
pub const IOV_SCRATCH: &str = "IOV_SCRATCH";
pub const H2_ANSWERED: &str = "H2_ANSWERED";
pub const H2_TAIL: &str = "H2_TAIL";
pub const TLS_HELLO: &str = "TLS_HELLO";
pub const PROC_FWD: &str = "PROC_FWD";
pub const HOP_COUNTS: &str = "HOP_COUNTS";
pub const EVENTS: &str = "EVENTS";
pub const COUNTERS: &str = "COUNTERS";

/// Every map of the object.
pub const ALL: [&str; 22] = [
    NR_OPS,
    TRACKED,
    TARGETS,
    FD_CACHE,
    FD_EPOCH,
    THREAD_CPU,
    RUNNING,
    SOCK_STATS,
    SOCK_STATE,
    SK_INO,
    SK_FILTER,
    PASSIVE_SK,
    THREADS,
    ZEROS,
    IOV_SCRATCH,
    H2_ANSWERED,
    H2_TAIL,
    TLS_HELLO,
    PROC_FWD,
    HOP_COUNTS,
    EVENTS,
    COUNTERS,
];

/// `H2_TAIL`'s slot of the program that pairs a plain HTTP/2 write's further responses
/// (`smp_h2_answers`), which the write's program tail-calls.
pub const H2_ANSWERS_SLOT: u32 = 0;

/// `H2_TAIL`'s slot of the program that walks a ClientHello a write sent for its ALPN offer
/// (`smp_tls_hello`), which the write's program tail-calls.
pub const TLS_HELLO_SLOT: u32 = 1;
