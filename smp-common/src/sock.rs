//! Socket-path syscall accounting: per process, per socket, per syscall.

/// The syscalls traced on sockets. The discriminant is the wire value.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyscallKind {
    Read = 0,
    Readv = 1,
    Recvfrom = 2,
    Recvmsg = 3,
    Write = 4,
    Writev = 5,
    Sendto = 6,
    Sendmsg = 7,
}

impl SyscallKind {
    /// Every kind, in wire order.
    pub const ALL: [SyscallKind; 8] = [
        SyscallKind::Read,
        SyscallKind::Readv,
        SyscallKind::Recvfrom,
        SyscallKind::Recvmsg,
        SyscallKind::Write,
        SyscallKind::Writev,
        SyscallKind::Sendto,
        SyscallKind::Sendmsg,
    ];

    /// The syscall's name, as in `syscalls/sys_enter_<name>`.
    pub const fn name(self) -> &'static str {
        match self {
            SyscallKind::Read => "read",
            SyscallKind::Readv => "readv",
            SyscallKind::Recvfrom => "recvfrom",
            SyscallKind::Recvmsg => "recvmsg",
            SyscallKind::Write => "write",
            SyscallKind::Writev => "writev",
            SyscallKind::Sendto => "sendto",
            SyscallKind::Sendmsg => "sendmsg",
        }
    }

    /// True for the receiving syscalls (data flows from the socket into the process).
    pub const fn is_ingress(self) -> bool {
        (self as u32) < 4
    }

    /// Decodes a wire value.
    pub const fn from_u32(v: u32) -> Option<SyscallKind> {
        if v < 8 {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }
}

/// What the kernel programs do with a syscall number: the value of `NR_OPS[nr]` (an array
/// the agent fills at load time from the host's syscall numbers; 0 = not traced).
pub mod op {
    use super::SyscallKind;

    /// Not a traced syscall.
    pub const NONE: u8 = 0;
    /// `accept`/`accept4`: the returned fd is a downstream socket.
    pub const ACCEPT: u8 = 1;
    /// `connect`: the fd is an upstream socket.
    pub const CONNECT: u8 = 2;
    /// `close`: the fd in the first argument leaves the fd table (`FD_CACHE` entry dropped).
    pub const CLOSE_ARG0: u8 = 3;
    /// `dup2`/`dup3`: the fd in the second argument is replaced (`FD_CACHE` entry dropped).
    pub const CLOSE_ARG1: u8 = 4;
    /// `close_range`, `execve`, `execveat`: many fds may go at once; the `FD_EPOCH` is
    /// renewed (every `FD_CACHE` entry becomes void).
    pub const FD_RESET: u8 = 5;
    /// A data syscall: `DATA | kind` (the [`SyscallKind`] in the low 3 bits, so the kernel
    /// recovers it with a mask, no arithmetic the 5.10 verifier would reject as a negative
    /// offset into the kind table).
    pub const DATA: u8 = 0x80;

    /// The op of a data syscall of `kind`.
    pub const fn data(kind: SyscallKind) -> u8 {
        DATA | kind as u8
    }
}

/// Size of the `NR_OPS` array: every syscall number below this can be traced.
pub const MAX_SYSCALL_NR: u32 = 512;

/// `PendingSyscall::kind` of an `accept`/`accept4` in flight (not a [`SyscallKind`]).
pub const PENDING_ACCEPT: u32 = 0x100;
/// `PendingSyscall::kind` of a `close`/`dup2`/`dup3` in flight: `fd` leaves the fd table.
pub const PENDING_FD_CLOSE: u32 = 0x101;
/// `PendingSyscall::kind` of a `close_range`/`execve`/`execveat` in flight.
pub const PENDING_FD_RESET: u32 = 0x102;
/// `PendingSyscall::kind` of a thread's slot with no syscall in flight (already charged).
pub const PENDING_IDLE: u32 = u32::MAX;

/// A syscall entered on a socket and not yet returned (`crate::hop::ThreadState::pending`).
/// Each thread's slot is overwritten in place by the next call (no insert/delete per syscall);
/// `kind` is [`PENDING_IDLE`] once the exit has charged it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingSyscall {
    pub since_ns: u64,
    /// The syscall's second argument: the buffer (read/write/recvfrom/sendto), the iovec array
    /// (readv/writev) or the msghdr (recvmsg/sendmsg).
    pub buf: u64,
    /// Inode number of the socket.
    pub ino: u64,
    /// The `struct sock *` of the socket.
    pub sk: u64,
    pub fd: u32,
    /// A [`SyscallKind`] wire value, or one of the `PENDING_*` values.
    pub kind: u32,
    /// `AT_EXIT_*` bits: what the exit of a write must do (decided at its entry, so other
    /// writes' exits cost no lookup).
    pub at_exit: u32,
    /// The syscall's third argument, its low 32 bits: for `read`/`write`/`recvfrom`/`sendto`
    /// the byte count of `buf`, where the HTTP/2 frame walk of a write's buffer ends (the
    /// bytes after it are older data). Unused for the others (their iovecs' lengths bound
    /// the walk). A count of 4 GiB or more is taken modulo 2^32 (Linux moves less than 2 GiB
    /// per call; such a write's walk may end early).
    pub len: u32,
    /// With [`AT_EXIT_ANSWER_MORE`]: the write's downstream's write before it
    /// ([`crate::h2::Answered::after`]), for the responses its exit pairs.
    pub mux_after: u64,
}
const _: () = assert!(core::mem::size_of::<PendingSyscall>() == 56);

/// `PendingSyscall::at_exit`: the write starts its socket's current outbound message; its
/// exit marks the message sent (`SockState::out_sent`).
pub const AT_EXIT_SENT: u32 = 1;
/// `PendingSyscall::at_exit`: the write forwards the response of an exchange just emitted;
/// its exit sends a `SendDone`.
pub const AT_EXIT_SEND_DONE: u32 = 2;
/// `PendingSyscall::at_exit`: a write on an HTTP/2-inside-TLS downstream whose entry paired
/// [`crate::h2::MUX_IN_ROUNDS`] responses by the causal rule, the tail-call chain's limit:
/// its exit, a program of its own, pairs the responses it forwards beyond them
/// ([`crate::h2::Answered::resumed`]) and sends the `SendDone` once they are paired.
pub const AT_EXIT_ANSWER_MORE: u32 = 4;

/// Value of `FD_CACHE` (key: `tgid << 32 | fd`): what an fd of a tracked process is, so the
/// fd table is walked once per fd, not once per syscall. Dropped when the fd is closed or
/// replaced (`close`, `dup2`, `dup3`, at their exit); void when `epoch` is not the current
/// `FD_EPOCH`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdSocket {
    /// The `FD_EPOCH` it was made under.
    pub epoch: u64,
    /// Socket inode number; 0: the fd is open but not a socket.
    pub ino: u64,
    /// The `struct sock *` (0 when not a socket).
    pub sk: u64,
}
const _: () = assert!(core::mem::size_of::<FdSocket>() == 24);

/// Capacity of `FD_CACHE` (LRU: fds not used for a while are walked again).
pub const MAX_FD_CACHE: u32 = 65536;

// `FD_EPOCH` (a one-entry array, read inline by the programs): the generation of every
// `FD_CACHE` entry. Renewed (CLOCK_MONOTONIC ns, so no earlier value comes back) by the agent
// whenever it starts tracking a process (closes it did not see may have happened before) and
// by the kernel when a tracked process's fd table changes wholesale (`execve`, `execveat`,
// `close_range`; rare, so voiding every process's entries costs one walk per fd afterwards).

/// Key of `SOCK_STATS`: one socket of one process, one syscall kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockKey {
    pub tgid: u32,
    pub fd: u32,
    /// Inode number of the socket (`socket:[ino]` in `/proc/<pid>/fd`).
    pub ino: u64,
    /// A [`SyscallKind`] wire value.
    pub kind: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<SockKey>() == 24);

/// Value of `SOCK_STATS` (a per-CPU LRU hash: userspace sums the CPUs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockStats {
    /// Completed calls, including failed ones.
    pub calls: u64,
    /// Bytes moved (sum of positive return values).
    pub bytes: u64,
    /// Calls that returned an error (`EAGAIN` included).
    pub errors: u64,
    /// Total time inside the syscall, nanoseconds (enter to exit).
    pub ns: u64,
}
const _: () = assert!(core::mem::size_of::<SockStats>() == 32);

/// Capacity of `SOCK_STATS` (LRU: closed sockets age out first).
pub const MAX_SOCK_STATS: u32 = 65536;

/// A socket's data syscalls of one direction, counted in its own message state
/// (`crate::hop::SockState::io`, which the pairing looks up anyway) rather than in
/// `SOCK_STATS`: for the first (process, fd, syscall kind) that moved data that way, its
/// owner. Calls of any other owner go to `SOCK_STATS`; userspace adds both under the same
/// [`SockKey`]. Added to atomically: two threads may use one socket at once.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockIo {
    pub stats: SockStats,
    pub tgid: u32,
    pub fd: u32,
    /// The owner's [`SyscallKind`] wire value plus one; 0: no owner yet.
    pub kind: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<SockIo>() == 48);

/// Where a data syscall's counts go ([`SockIo::slot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoSlot {
    /// The socket's own counters: the call's owner is theirs.
    Own,
    /// The socket's own counters, once the call's owner is written: they have none yet.
    Claim,
    /// `SOCK_STATS`: another owner has them.
    Shared,
}

impl SockIo {
    /// Which of a socket's two ([`crate::hop::SockState::io`]) counts a call of `kind` (a
    /// [`SyscallKind`] wire value): 0 for receives, 1 for sends.
    pub const fn side(kind: u32) -> usize {
        (kind >= SyscallKind::Write as u32) as usize
    }

    /// Where a call by `tgid` on `fd` of `kind` (a [`SyscallKind`] wire value) goes.
    pub const fn slot(&self, tgid: u32, fd: u32, kind: u32) -> IoSlot {
        if self.kind == 0 {
            IoSlot::Claim
        } else if self.kind == kind + 1 && self.tgid == tgid && self.fd == fd {
            IoSlot::Own
        } else {
            IoSlot::Shared
        }
    }

    /// The owner's key, with the socket's `ino`; `None` without an owner.
    pub fn key(&self, ino: u64) -> Option<SockKey> {
        (self.kind != 0).then(|| SockKey {
            tgid: self.tgid,
            fd: self.fd,
            ino,
            kind: self.kind - 1,
            _pad: 0,
        })
    }
}

impl SockStats {
    /// Adds `o`'s counts.
    pub fn add(&mut self, o: &SockStats) {
        self.calls += o.calls;
        self.bytes += o.bytes;
        self.errors += o.errors;
        self.ns += o.ns;
    }
}

#[cfg(feature = "user")]
crate::user_pod!(PendingSyscall, SockKey, SockStats, SockIo, FdSocket);

#[cfg(test)]
mod io_tests {
    use super::*;

    #[test]
    fn the_first_caller_owns_a_sockets_counters_and_the_others_share_the_map() {
        let mut io = SockIo::default();
        let (read, recv) = (SyscallKind::Read as u32, SyscallKind::Recvfrom as u32);
        assert_eq!(io.key(7), None, "no owner, nothing to report");
        assert_eq!(io.slot(10, 3, read), IoSlot::Claim);
        (io.tgid, io.fd, io.kind) = (10, 3, read + 1);
        assert_eq!(io.slot(10, 3, read), IoSlot::Own);
        // Another kind, fd or process on the same socket: counted apart, by its own key.
        assert_eq!(io.slot(10, 3, recv), IoSlot::Shared);
        assert_eq!(io.slot(10, 4, read), IoSlot::Shared);
        assert_eq!(io.slot(11, 3, read), IoSlot::Shared);
        // `Read` is kind 0: its owner is told from no owner by the offset of one.
        assert_eq!(
            io.key(7),
            Some(SockKey {
                tgid: 10,
                fd: 3,
                ino: 7,
                kind: read,
                _pad: 0
            })
        );
    }
}
