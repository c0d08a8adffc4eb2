//! Load-time configuration of the kernel programs: kernel offsets read from tracefs and BTF.
//!
//! Aya's Rust eBPF emits no CO-RE relocations, so the agent reads every offset of the running
//! kernel at load time and passes them in as the `.rodata` global [`OFFSETS_GLOBAL`].

/// Name of the global that holds [`KernelOffsets`] in the eBPF object.
pub const OFFSETS_GLOBAL: &str = "OFFSETS";

/// Offsets the programs need, all in bytes. Zero in `valid` means "not filled": the programs
/// then do nothing rather than read at a wrong place.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// Set to [`crate::ABI_VERSION`] by the agent once every field below is filled.
    pub valid: u32,
    /// `struct pt_regs`: the registers of a syscall's first, second and third arguments
    /// (x86_64: `di`, `si`, `dx`), as the `raw_syscalls/sys_enter` raw tracepoint sees them.
    pub regs_arg0: u32,
    pub regs_arg1: u32,
    pub regs_arg2: u32,
    /// `struct task_struct`: `pid` (thread id) and `tgid` (process id).
    pub task_pid: u32,
    pub task_tgid: u32,
    /// `struct task_struct`: `files` (pointer to `struct files_struct`).
    pub task_files: u32,
    /// `struct files_struct`: `fdt` (pointer to `struct fdtable`).
    pub files_fdt: u32,
    /// `struct fdtable`: `max_fds` (u32) and `fd` (pointer to the `struct file *` array).
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    /// `struct file`: `f_inode` (pointer to `struct inode`).
    pub file_inode: u32,
    /// `struct inode`: `i_mode` (u16) and `i_ino` (unsigned long).
    pub inode_mode: u32,
    pub inode_ino: u32,
    /// `struct file`: `private_data` (the `struct socket *` of a socket file).
    pub file_private: u32,
    /// `struct socket`: `sk`.
    pub socket_sk: u32,
    /// `struct sock_common`: family, IPv4 addresses, ports, IPv6 addresses.
    pub skc_family: u32,
    pub skc_daddr: u32,
    pub skc_rcv_saddr: u32,
    pub skc_dport: u32,
    pub skc_num: u32,
    pub skc_v6_daddr: u32,
    pub skc_v6_rcv_saddr: u32,
    /// `struct user_msghdr`: `msg_iov`.
    pub msghdr_iov: u32,
    /// `struct task_struct`: `se.sum_exec_runtime` (offset of `se` plus the member's).
    pub task_sum_exec: u32,
    /// `struct task_struct`: `start_time` (CLOCK_MONOTONIC ns at fork).
    pub task_start_time: u32,
    /// `struct task_struct`: `__state` (5.14+; before, `state`, a long whose low 32 bits are
    /// read): 0 while the task is runnable, so a switch away with another value is a wait.
    pub task_state: u32,
    /// `struct sk_buff`: `len` (u32) and `data` (pointer; the TCP header in
    /// `tcp_rcv_established`, where `tcp_probe` fires).
    pub skb_len: u32,
    pub skb_data: u32,
    /// `struct pt_regs`: the syscall number (x86_64: `orig_ax`), for the socket tracepoints
    /// that fire inside a syscall and learn which one from the task's user registers.
    pub regs_nr: u32,
    /// `struct sock`: `sk_socket` (the `struct socket *` owning it).
    pub sock_socket: u32,
    /// `struct socket_alloc`: `vfs_inode` (the socket's inode follows its `struct socket`).
    pub socket_alloc_inode: u32,
    /// `struct sk_buff`: `sk` (the sending socket, at `net_dev_queue`).
    pub skb_sk: u32,
    /// `struct pt_regs`: the syscall's return value (x86_64: `ax`, `-ENOSYS` until the
    /// syscall returns), telling a thread inside a syscall from one in user mode.
    pub regs_ret: u32,
    /// `struct tcp_sock`: `srtt_us` (smoothed RTT << 3, µs), `mdev_us` (its mean deviation
    /// << 2, µs) and `rtt_min`'s current minimum (`s[0].v`, µs).
    pub tcp_srtt: u32,
    pub tcp_mdev: u32,
    pub tcp_min_rtt: u32,
    /// `struct sock_common`: `skc_net` (its first word is the `struct net *` of the socket's
    /// network namespace).
    pub skc_net: u32,
    /// The host's ephemeral port range (`net.ipv4.ip_local_port_range`, first and last):
    /// the ports `connect` gives a client's end, for the role of a socket opened before the
    /// probes ([`crate::pairing::role_from_ports`]). 0, 0: unknown.
    pub ephemeral_first: u16,
    pub ephemeral_last: u16,
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 152);

impl KernelOffsets {
    /// All zero: "not filled" (`valid == 0`).
    pub const fn zeroed() -> Self {
        KernelOffsets {
            valid: 0,
            regs_arg0: 0,
            regs_arg1: 0,
            regs_arg2: 0,
            task_pid: 0,
            task_tgid: 0,
            task_files: 0,
            files_fdt: 0,
            fdtable_max_fds: 0,
            fdtable_fd: 0,
            file_inode: 0,
            inode_mode: 0,
            inode_ino: 0,
            file_private: 0,
            socket_sk: 0,
            skc_family: 0,
            skc_daddr: 0,
            skc_rcv_saddr: 0,
            skc_dport: 0,
            skc_num: 0,
            skc_v6_daddr: 0,
            skc_v6_rcv_saddr: 0,
            msghdr_iov: 0,
            task_sum_exec: 0,
            task_start_time: 0,
            task_state: 0,
            skb_len: 0,
            skb_data: 0,
            regs_nr: 0,
            sock_socket: 0,
            socket_alloc_inode: 0,
            skb_sk: 0,
            regs_ret: 0,
            tcp_srtt: 0,
            tcp_mdev: 0,
            tcp_min_rtt: 0,
            skc_net: 0,
            ephemeral_first: 0,
            ephemeral_last: 0,
        }
    }
}

// The `TARGETS` map: key tgid, value the CLOCK_MONOTONIC ns when tracking started (threads
// that started later are charged from their first nanosecond).

/// Capacity of the `TARGETS` map (processes tracked at once).
pub const MAX_TARGETS: u32 = 4096;

/// Highest possible tgid + 1 (`PID_MAX_LIMIT` on 64-bit kernels, `include/linux/threads.h`).
pub const PID_LIMIT: u32 = 4 * 1024 * 1024;

/// Entries of the `TRACKED` bitmap (`u64` words, one bit per tgid, 512 KiB): the programs'
/// first check, an array read the verifier inlines, so untracked tasks cost almost nothing.
/// `TARGETS` stays the record of what is tracked (and since when); the bitmap mirrors its keys.
pub const TRACKED_WORDS: u32 = PID_LIMIT / 64;

/// The `TRACKED` word and bit of `tgid`.
pub const fn tracked_bit(tgid: u32) -> (u32, u64) {
    (tgid / 64, 1u64 << (tgid % 64))
}

#[cfg(feature = "user")]
crate::user_pod!(KernelOffsets);
