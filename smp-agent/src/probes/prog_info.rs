//! What the kernel says of a loaded program that aya does not read: how many of its runs it
//! skipped (`bpf_prog_info.recursion_misses`, kernels 5.12+). A program is not run again on
//! a CPU where it is already running; where hooks run preemptible (syscall tracepoints may
//! fault since 6.13, and a preemptible kernel can switch tasks inside a program), a task
//! switched in there and hitting the same hook loses that run. Loss is data: counted.

use std::os::fd::{AsRawFd as _, BorrowedFd};

/// `BPF_OBJ_GET_INFO_BY_FD` (`include/uapi/linux/bpf.h`).
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Offset of `recursion_misses` in `struct bpf_prog_info` (uapi: stable), and the length
/// the kernel fills up to it.
const RECURSION_MISSES_AT: usize = 208;
const INFO_LEN: usize = RECURSION_MISSES_AT + 8;

/// `bpf_attr.info` (`include/uapi/linux/bpf.h`).
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// Runs of program `fd` the kernel skipped; `None` when the kernel does not say (before
/// 5.12: the info it fills stops short of the field) or the call fails.
pub fn recursion_misses(fd: BorrowedFd<'_>) -> Option<u64> {
    let mut info = [0u64; INFO_LEN / 8];
    let mut attr = InfoAttr {
        bpf_fd: u32::try_from(fd.as_raw_fd()).ok()?,
        info_len: INFO_LEN as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: `attr` is a valid BPF_OBJ_GET_INFO_BY_FD attribute naming a buffer of
    // `info_len` bytes that lives across the call; the kernel writes at most that many.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>(),
        )
    };
    if r != 0 || (attr.info_len as usize) < INFO_LEN {
        return None;
    }
    Some(info[RECURSION_MISSES_AT / 8])
}
