//! Events sent through the `EVENTS` ring buffer. Every event starts with [`EventHeader`].
//!
//! Kinds have fixed numeric ranges per domain; retired ids stay as holes, never reused:
//! process 1–19, hop records 20–39 (reserved), agent-side 1000+.

/// The first bytes of every ring-buffer record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] wire value.
    pub kind: u32,
    /// [`crate::ABI_VERSION`] of the program that wrote it.
    pub abi: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the event.
    pub ts_ns: u64,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 16);

/// Event kinds. The discriminant is the wire value.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A tracked process's main thread exited ([`ProcessExit`]).
    ProcessExit = 1,
    /// Some process called execve ([`ProcessExec`]); every process, tracked or not, so
    /// discovery sees proxies start.
    ProcessExec = 2,
    /// A tracked process forked a new process, not a thread ([`ProcessFork`]).
    ProcessFork = 3,
    /// A paired exchange through a proxy ([`crate::hop::ExchangeRecord`]).
    Exchange = 20,
    /// The write forwarding an exchange's response returned ([`crate::hop::SendDone`]).
    SendDone = 21,
}

impl EventKind {
    pub const fn from_u32(v: u32) -> Option<EventKind> {
        match v {
            1 => Some(EventKind::ProcessExit),
            2 => Some(EventKind::ProcessExec),
            3 => Some(EventKind::ProcessFork),
            20 => Some(EventKind::Exchange),
            21 => Some(EventKind::SendDone),
            _ => None,
        }
    }
}

/// A tracked process exited (`sched_process_exit` of its thread-group leader).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessExit {
    pub header: EventHeader,
    pub tgid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ProcessExit>() == 24);

/// A process called execve (`sched_process_exec`): `tgid` now runs a new program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessExec {
    pub header: EventHeader,
    pub tgid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ProcessExec>() == 24);

/// A tracked process forked a new process (`sched_process_fork`, child not a thread).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcessFork {
    pub header: EventHeader,
    pub parent_tgid: u32,
    pub child_tgid: u32,
}
const _: () = assert!(core::mem::size_of::<ProcessFork>() == 24);

/// Byte size of the `EVENTS` ring buffer.
pub const EVENTS_BYTES: u32 = 4 * 1024 * 1024;

/// Exchange records are submitted without waking the reader (a wake-up is an inter-processor
/// interrupt, a VM exit on virtual machines: it cost more than everything else the probes do
/// per request) until this many bytes wait unread; the reader also drains the ring every
/// [`EVENTS_POLL_MS`]. Process exits always wake it.
pub const EVENTS_WAKEUP_BYTES: u64 = EVENTS_BYTES as u64 / 4;

/// How often the agent drains the `EVENTS` ring buffer without being woken.
pub const EVENTS_POLL_MS: u64 = 100;

#[cfg(feature = "user")]
crate::user_pod!(EventHeader, ProcessExit, ProcessExec, ProcessFork);
