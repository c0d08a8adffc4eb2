//! Reads of kernel and user memory at offsets the agent found in BTF and tracefs.

use aya_ebpf::helpers::{
    bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_buf, bpf_probe_read_user,
    bpf_probe_read_user_buf,
};
use smp_common::{config::KernelOffsets, counters::Counter, hop::Tuple};

/// `S_IFMT` and `S_IFSOCK` from `include/uapi/linux/stat.h`.
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Why a probe body stopped before recording what it saw. The body returns it; its entry
/// point counts it (`main.rs`, `counted`): loss is data, and no failure is dropped unseen.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum ProbeError {
    /// A read of kernel memory failed (`bpf_probe_read_kernel`).
    KernelRead,
    /// A map slot that always exists (a per-CPU array's) was not there.
    MapSlot,
}

/// A failed `bpf_probe_read_kernel` (its error code) as the body's error; converted only on
/// the error path (`?`), so the reads' results keep their layout.
impl From<i32> for ProbeError {
    #[inline(always)]
    fn from(_: i32) -> Self {
        ProbeError::KernelRead
    }
}

impl ProbeError {
    /// The loss counter this failure is counted in.
    #[inline(always)]
    pub const fn counter(self) -> Counter {
        match self {
            ProbeError::KernelRead => Counter::KernelReadFailed,
            ProbeError::MapSlot => Counter::MapInsertFailed,
        }
    }
}

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }
}

/// Copies `dst.len()` bytes at `addr` in the current task's user memory into `dst` (a map
/// value: nothing on the BPF stack).
#[inline(always)]
pub fn read_user_buf(addr: u64, dst: &mut [u8]) -> Result<(), i32> {
    // SAFETY: bpf_probe_read_user validates the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_user_buf(addr as *const u8, dst) }
}

/// Reads a `T` at `addr` in the current task's user memory (an error: not readable now, e.g.
/// paged out; callers treat the data as unclassified, which is not a loss).
#[inline(always)]
pub fn read_user<T>(addr: u64) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_user validates the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_user(addr as *const T) }
}

/// `task->pid` and `task->tgid` (one read when they are adjacent, as in every kernel so far).
#[inline(always)]
pub fn task_ids(task: u64, o: &KernelOffsets) -> Result<(u32, u32), ProbeError> {
    if o.task_tgid == o.task_pid + 4 {
        let ids: [u32; 2] = read(task, o.task_pid)?;
        return Ok((ids[0], ids[1]));
    }
    let pid: i32 = read(task, o.task_pid)?;
    let tgid: i32 = read(task, o.task_tgid)?;
    Ok((pid as u32, tgid as u32))
}

/// `task->pid` and `task->tgid` of a task a BTF tracepoint was handed (`task`: its typed
/// argument): two plain loads, which the verifier checks against the task's BTF at load (the
/// offsets are `.rodata`, known to it), where [`task_ids`] calls a helper.
#[inline(always)]
pub fn btf_task_ids(task: u64, o: &KernelOffsets) -> (u32, u32) {
    // SAFETY: `task` is the kernel's `struct task_struct *` of a BTF tracepoint and the offsets
    // are its `pid` and `tgid` fields (from BTF); the verifier refuses the program otherwise.
    unsafe {
        (
            core::ptr::read_volatile((task + u64::from(o.task_pid)) as *const u32),
            core::ptr::read_volatile((task + u64::from(o.task_tgid)) as *const u32),
        )
    }
}

/// A u64 field at offset `off` of a typed kernel pointer (a BTF tracepoint's task, the
/// registers `bpf_task_pt_regs` returns), as [`btf_task_ids`] loads a task's ids: a plain load,
/// not a helper call. The verifier checks it against the pointer's BTF type at load (and
/// makes it a load that cannot fault).
#[inline(always)]
pub fn btf_u64(ptr: u64, off: u32) -> u64 {
    // SAFETY: as in `btf_task_ids`: the verifier refuses a load outside the pointer's type.
    unsafe { core::ptr::read_volatile((ptr + u64::from(off)) as *const u64) }
}

/// A u32 field at offset `off` of a typed kernel pointer, as [`btf_u64`].
#[inline(always)]
pub fn btf_u32(ptr: u64, off: u32) -> u32 {
    // SAFETY: as in `btf_task_ids`: the verifier refuses a load outside the pointer's type.
    unsafe { core::ptr::read_volatile((ptr + u64::from(off)) as *const u32) }
}

/// A socket behind an fd of the current task.
#[derive(Clone, Copy)]
pub struct SocketRef {
    /// Inode number (`socket:[ino]`).
    pub ino: u64,
    /// `struct sock *`.
    pub sk: u64,
}

/// What an fd of the current task refers to.
#[derive(Clone, Copy)]
pub enum FdKind {
    /// No open file (beyond the table or an empty slot).
    Closed,
    /// An open file that is not a socket.
    Other,
    Socket(SocketRef),
}

/// What `fd` of the current task is (walks `task->files->fdt->fd[fd]`, checks
/// `f_inode->i_mode`, follows `private_data->sk` for sockets): 8–10 kernel reads.
#[inline(always)]
pub fn current_fd(fd: u32, o: &KernelOffsets) -> Result<FdKind, ProbeError> {
    // SAFETY: returns the current task pointer; it is only dereferenced via probe_read.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, o.task_files)?;
    let fdt: u64 = read(files, o.files_fdt)?;
    let max_fds: u32 = read(fdt, o.fdtable_max_fds)?;
    if fd >= max_fds {
        return Ok(FdKind::Closed);
    }
    let fd_array: u64 = read(fdt, o.fdtable_fd)?;
    let file: u64 = read(fd_array, fd * 8)?;
    if file == 0 {
        return Ok(FdKind::Closed);
    }
    let inode: u64 = read(file, o.file_inode)?;
    let mode: u16 = read(inode, o.inode_mode)?;
    if mode & S_IFMT != S_IFSOCK {
        return Ok(FdKind::Other);
    }
    let ino: u64 = read(inode, o.inode_ino)?;
    let socket: u64 = read(file, o.file_private)?;
    let sk: u64 = if socket == 0 {
        0
    } else {
        read(socket, o.socket_sk)?
    };
    Ok(FdKind::Socket(SocketRef { ino, sk }))
}

/// The `struct net *` of socket `sk`'s network namespace (0: unknown).
#[inline(always)]
pub fn sock_net(sk: u64, o: &KernelOffsets) -> u64 {
    if sk == 0 {
        return 0;
    }
    read(sk, o.skc_net).unwrap_or(0)
}

/// Writes the endpoints of a connected socket into `t` (a map value: written in place, not
/// built on the BPF stack, where the addresses' bytes took 64 bytes of spills); `false`
/// while it has no peer yet, `t` then untouched.
#[inline(always)]
pub fn sock_tuple(sk: u64, o: &KernelOffsets, t: &mut Tuple) -> Result<bool, ProbeError> {
    if sk == 0 {
        return Ok(false);
    }
    let family: u16 = read(sk, o.skc_family)?;
    let dport: u16 = read(sk, o.skc_dport)?;
    let num: u16 = read(sk, o.skc_num)?;
    if dport == 0 || num == 0 || family != AF_INET && family != AF_INET6 {
        return Ok(false);
    }
    let (daddr, saddr, n) = if family == AF_INET {
        (o.skc_daddr, o.skc_rcv_saddr, 4)
    } else {
        (o.skc_v6_daddr, o.skc_v6_rcv_saddr, 16)
    };
    t.remote_addr = [0; 16];
    t.local_addr = [0; 16];
    // SAFETY: bpf_probe_read_kernel validates the source; the destinations are `n` ≤ 16 bytes.
    unsafe {
        bpf_probe_read_kernel_buf(
            (sk + u64::from(daddr)) as *const u8,
            &mut t.remote_addr[..n],
        )?;
        bpf_probe_read_kernel_buf((sk + u64::from(saddr)) as *const u8, &mut t.local_addr[..n])?;
    }
    t.family = family;
    t.local_port = num;
    t.remote_port = u16::from_be(dport);
    Ok(true)
}
