//! Every map and global of the kernel programs, named as userspace takes them (each static
//! bears its name in `smp_common::maps`).

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, ProgramArray, RingBuf},
};
use smp_common::{
    config::{tracked_bit, KernelOffsets, MAX_TARGETS, TRACKED_WORDS},
    counters::{Counter, COUNTER_SLOTS},
    cpu::{Running, ThreadCpu, MAX_THREADS},
    event::EVENTS_BYTES,
    h2::IOV_WALK,
    hop::{
        sk_slot, HopCounts, RespPool, SockState, ThreadState, MAX_PASSIVE_SK, MAX_SOCK_STATE,
        MAX_THREADS_STATE, SK_FILTER_SLOTS,
    },
    sock::{FdSocket, SockKey, SockStats, MAX_FD_CACHE, MAX_SOCK_STATS, MAX_SYSCALL_NR},
};

/// Kernel offsets, set by the agent at load time (`.rodata`, frozen after load).
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets::zeroed();

/// The offsets. The pointer goes through a volatile read, so the compiler cannot fold the
/// fields to the zero initialiser, and only the fields a program uses are loaded (the
/// verifier knows their values: `.rodata` is frozen).
#[inline(always)]
pub fn offsets() -> &'static KernelOffsets {
    let p: *const KernelOffsets = &OFFSETS;
    // SAFETY: `p` points to a static; the volatile read only hides that from the optimiser.
    unsafe { &*core::ptr::read_volatile(&p) }
}

/// What to do with each syscall number (`smp_common::sock::op`), filled by the agent at load.
#[map]
pub static NR_OPS: Array<u8> = Array::with_max_entries(MAX_SYSCALL_NR, 0);

/// The `op` of syscall `nr` (`op::NONE` for every syscall not traced).
#[inline(always)]
pub fn syscall_op(nr: u64) -> u8 {
    if nr >= MAX_SYSCALL_NR as u64 {
        return 0;
    }
    NR_OPS.get(nr as u32).copied().unwrap_or(0)
}

/// One bit per tgid, set while `TARGETS` has it (written by the agent only).
#[map]
pub static TRACKED: Array<u64> = Array::with_max_entries(TRACKED_WORDS, 0);

/// Processes to trace (key: tgid). Changed at runtime by the agent.
#[map]
pub static TARGETS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_TARGETS, 0);

/// What each fd of the tracked processes is (key: `tgid << 32 | fd`), see [`FdSocket`].
#[map]
pub static FD_CACHE: LruHashMap<u64, FdSocket> = LruHashMap::with_max_entries(MAX_FD_CACHE, 0);

/// The generation of every `FD_CACHE` entry (one entry; see `smp_common::sock`).
#[map]
pub static FD_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// On-CPU time per thread of the targets (key: tid).
#[map]
pub static THREAD_CPU: LruHashMap<u32, ThreadCpu> = LruHashMap::with_max_entries(MAX_THREADS, 0);

/// The tracked thread currently on each CPU.
#[map]
pub static RUNNING: PerCpuArray<Running> = PerCpuArray::with_max_entries(1, 0);

/// Socket syscall accounting per process, socket and syscall kind.
#[map]
pub static SOCK_STATS: LruPerCpuHashMap<SockKey, SockStats> =
    LruPerCpuHashMap::with_max_entries(MAX_SOCK_STATS, 0);

/// Adds `add` to `SOCK_STATS` under `key`.
#[inline(always)]
pub fn add_sock_stats(key: &SockKey, add: &SockStats) {
    match SOCK_STATS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, only this CPU writes it while this program runs.
        Some(s) => unsafe { (*s).add(add) },
        None => {
            if SOCK_STATS.insert(key, add, 0).is_err() {
                count(Counter::MapInsertFailed);
            }
        }
    }
}

/// Message state per socket (key: socket inode), for hop pairing.
#[map]
pub static SOCK_STATE: LruHashMap<u64, SockState> = LruHashMap::with_max_entries(MAX_SOCK_STATE, 0);

/// `struct sock *` → socket inode of the sockets hop pairing follows, so that `tcp_probe`
/// (softirq, no process context) can find their state.
#[map]
pub static SK_INO: LruHashMap<u64, u64> = LruHashMap::with_max_entries(MAX_SOCK_STATE, 0);

/// A counting filter over `SK_INO`'s keys: per slot (`smp_common::hop::sk_slot`), at least
/// how many followed sockets hash there (a socket the LRU forgot stays counted: a wasted
/// lookup, never a socket missed). `tcp_probe`, which runs for every TCP segment of the host,
/// looks its socket up in `SK_INO` only when its slot counts one: the other sockets of the
/// node pay one array read, not a hash lookup.
#[map]
pub static SK_FILTER: Array<u64> = Array::with_max_entries(SK_FILTER_SLOTS, 0);

/// Whether hop pairing may follow socket `sk` (false: it surely does not).
#[inline(always)]
pub fn sk_maybe_followed(sk: u64) -> bool {
    SK_FILTER.get(sk_slot(sk)).is_some_and(|n| *n != 0)
}

/// Counts socket `sk` into `SK_FILTER` (`SK_INO` gained it: `delta` 1) or out (it lost it:
/// `u64::MAX`, i.e. −1), atomically (CPUs add to a slot at once; the BPF target's atomics
/// are 64-bit).
#[inline(always)]
pub fn sk_filter_add(sk: u64, delta: u64) {
    if let Some(n) = SK_FILTER.get_ptr_mut(sk_slot(sk)) {
        // SAFETY: a u64 of an array map value; only atomic adds write it.
        unsafe { atomic_add(n, delta) };
    }
}

/// Adds `delta` to `*n` atomically. (Rust's atomics offer no read-modify-write on this
/// target: BPF's own atomic add, whose result is not read, which every kernel takes.)
///
/// # Safety
/// `n` points to an aligned u64 of a map value.
#[inline(always)]
pub unsafe fn atomic_add(n: *mut u64, delta: u64) {
    // SAFETY: as the caller promises.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({n} + 0) += {d}",
            n = in(reg) n,
            d = in(reg) delta,
            options(nostack)
        );
    }
}

/// TCP sockets born from a listener (`struct sock *` → 1), marked when they enter
/// `SYN_RECV` (in softirq, whoever runs): with the socket tracepoints, what tells an accepted
/// socket (a downstream) at its first data, as `accept` does for the syscall hooks.
#[map]
pub static PASSIVE_SK: LruHashMap<u64, u8> = LruHashMap::with_max_entries(MAX_PASSIVE_SK, 0);

/// Per thread of the tracked processes (key: tid): the socket syscall in flight (one slot,
/// rewritten in place), what it read, the responses it read and has not forwarded.
#[map]
pub static THREADS: LruHashMap<u32, ThreadState> =
    LruHashMap::with_max_entries(MAX_THREADS_STATE, 0);

/// Words of [`ZEROS`]: as many as the largest value it creates.
const ZERO_WORDS: usize = {
    let sizes = [
        core::mem::size_of::<ThreadState>(),
        core::mem::size_of::<SockState>(),
        core::mem::size_of::<HopCounts>(),
        core::mem::size_of::<RespPool>(),
    ];
    let mut max = 0;
    let mut i = 0;
    while i < sizes.len() {
        if sizes[i] > max {
            max = sizes[i];
        }
        i += 1;
    }
    max.div_ceil(8)
};

/// One all-zero block (never written), the source of new entries of the pairing maps. A
/// zeroed value built on the BPF stack costs its size there, and its `memset` is a call:
/// kernels before 6.8 count a call's frame as 32 bytes and a program's own rounded up to 32,
/// so a program deeper than 480 bytes that calls one fails to load (6.1: "combined stack
/// size of 2 calls is 544").
#[map]
pub static ZEROS: PerCpuArray<[u64; ZERO_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// The buffers of the syscall whose HTTP/2 frames are being walked (`probes::hop`): up to
/// `IOV_WALK` (address, length) pairs, copied from its iovec array here rather than onto the
/// BPF stack.
#[map]
pub static IOV_SCRATCH: PerCpuArray<[u64; 2 * IOV_WALK]> = PerCpuArray::with_max_entries(1, 0);

/// The streams a write on a plain HTTP/2 downstream answers beyond its first
/// (`probes::hop`), handed per CPU from the write's program to the one it tail-calls.
#[map]
pub static H2_ANSWERED: PerCpuArray<smp_common::h2::Answered> = PerCpuArray::with_max_entries(1, 0);

/// Slot `H2_ANSWERS_SLOT`: `smp_h2_answers`, which pairs one more response of such a write
/// per run and tail-calls itself for the next (set by the agent before it attaches).
/// Slot `TLS_HELLO_SLOT`: `smp_tls_hello`, which walks a ClientHello a write sent.
#[map]
pub static H2_TAIL: ProgramArray = ProgramArray::with_max_entries(2, 0);

/// A ClientHello a write sent (`probes::hop`), handed per CPU from the write's program to
/// `smp_tls_hello`, which it tail-calls.
#[map]
pub static TLS_HELLO: PerCpuArray<smp_common::tls::Hello> = PerCpuArray::with_max_entries(1, 0);

/// An all-zero `T` in a map value (for a map insert), if the per-CPU block is there.
#[inline(always)]
pub fn zeroed<T>() -> Option<&'static T> {
    const { assert!(core::mem::size_of::<T>() <= ZERO_WORDS * 8) };
    const { assert!(core::mem::align_of::<T>() <= 8) };
    // SAFETY: the block is ZERO_WORDS u64 of zeros (8-aligned, never written), at least as
    // large as T, and T is plain old data for which all zeros is its Default.
    ZEROS
        .get(0)
        .map(|z| unsafe { &*(z as *const [u64; ZERO_WORDS]).cast::<T>() })
}

/// The hash maps whose entries [`created`] makes.
pub trait Entries<K, V> {
    fn entry(&self, key: &K) -> Option<*mut V>;
    fn put(&self, key: &K, value: &V) -> bool;
}

macro_rules! entries {
    ($($map:ident),*) => {$(
        impl<K, V> Entries<K, V> for $map<K, V> {
            #[inline(always)]
            fn entry(&self, key: &K) -> Option<*mut V> {
                self.get_ptr_mut(key)
            }
            #[inline(always)]
            fn put(&self, key: &K, value: &V) -> bool {
                self.insert(key, value, 0).is_ok()
            }
        }
    )*};
}
entries!(LruHashMap, LruPerCpuHashMap);

/// The entry of `key` in `map`, created all-zero ([`zeroed`]: not on the stack) if absent;
/// a failed insert is counted.
#[inline(always)]
pub fn created<K, V: 'static>(map: &impl Entries<K, V>, key: &K) -> Option<*mut V> {
    if let Some(v) = map.entry(key) {
        return Some(v);
    }
    if !zeroed::<V>().is_some_and(|z| map.put(key, z)) {
        count(Counter::MapInsertFailed);
        return None;
    }
    map.entry(key)
}

/// The responses each process read last, on any thread (key: tgid): where a response write
/// its own thread cannot pair looks across threads.
#[map]
pub static PROC_FWD: LruHashMap<u32, RespPool> = LruHashMap::with_max_entries(4096, 0);

/// Pairing counters per process (key: tgid).
#[map]
pub static HOP_COUNTS: LruPerCpuHashMap<u32, HopCounts> =
    LruPerCpuHashMap::with_max_entries(4096, 0);

/// Events to userspace (process exits; hop records later).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Self-accounting: drops and failures, indexed by [`Counter`].
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Adds one to a self-accounting counter.
#[inline(always)]
pub fn count(counter: Counter) {
    count_by(counter, 1);
}

/// Adds `n` to loss counter `counter`.
#[inline(always)]
pub fn count_by(counter: Counter, n: u64) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, only this CPU writes it while this program runs.
        unsafe { *slot += n };
    }
}

/// When tracking of `tgid` started (CLOCK_MONOTONIC ns), if it is tracked (the hash lookup
/// happens only for tgids whose `TRACKED` bit is set).
#[inline(always)]
pub fn tracked_since(tgid: u32) -> Option<u64> {
    if !is_target(tgid) {
        return None;
    }
    // SAFETY: read-only lookup of a plain value.
    unsafe { TARGETS.get(&tgid).copied() }
}

/// True when `tgid` is a tracked process: one bit of `TRACKED` (an inlined array read, no
/// hash lookup), the first thing every program checks.
#[inline(always)]
pub fn is_target(tgid: u32) -> bool {
    let (word, bit) = tracked_bit(tgid);
    TRACKED.get(word).is_some_and(|w| *w & bit != 0)
}

/// The header of an event of `kind` happening now.
#[inline(always)]
pub fn header(kind: smp_common::event::EventKind) -> smp_common::event::EventHeader {
    // SAFETY: a helper without arguments.
    header_at(kind, unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() })
}

/// The header of an event of `kind` that happened at `ts_ns` (a clock reading the body
/// already took: no second one per record).
#[inline(always)]
pub fn header_at(kind: smp_common::event::EventKind, ts_ns: u64) -> smp_common::event::EventHeader {
    smp_common::event::EventHeader {
        kind: kind as u32,
        abi: smp_common::ABI_VERSION,
        ts_ns,
    }
}

/// When the agent should hear of an event.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Frequent (one per proxied request): no wake-up, the agent drains the ring every
    /// 100 ms, unless much is waiting unread. A wake-up is a self-IPI, a VM exit on a guest:
    /// per record it was the largest cost per proxied request, in the proxy and in the agent.
    Lazy,
    /// Rare and awaited (a process starts or leaves): wake the agent now.
    Now,
}

/// Like [`emit`], with the record filled in place in the ring: `fill` writes every field of
/// the reserved, uninitialised `T` through the pointer (a large record built on the BPF
/// stack first costs its size there).
#[inline(always)]
pub fn emit_filled<T: 'static>(fill: impl FnOnce(*mut T), wake: Wake) -> bool {
    use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
    match EVENTS.reserve::<T>(0) {
        Some(mut entry) => {
            fill(entry.as_mut_ptr());
            let flags = if wake == Wake::Now
                || EVENTS.query(u64::from(BPF_RB_AVAIL_DATA))
                    >= smp_common::event::EVENTS_WAKEUP_BYTES
            {
                BPF_RB_FORCE_WAKEUP
            } else {
                BPF_RB_NO_WAKEUP
            };
            entry.submit(u64::from(flags));
            true
        }
        None => {
            count(Counter::RingbufDropped);
            false
        }
    }
}

/// Sends one event to userspace through `EVENTS`; a full ring buffer is counted, not an error.
/// Returns whether it was sent.
#[inline(always)]
pub fn emit<T: 'static>(event: T, wake: Wake) -> bool {
    // SAFETY: `x` is the reserved, aligned record: written whole.
    emit_filled(|x: *mut T| unsafe { x.write(event) }, wake)
}
