//! Reads of kernel memory at offsets the agent found in BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use smp_common::config::KernelOffsets;

/// `S_IFMT` and `S_IFSOCK` from `include/uapi/linux/stat.h`.
const S_IFMT: u16 = 0o170000;
const S_IFSOCK: u16 = 0o140000;

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel validates the address; a bad one is an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }
}

/// `task->pid` and `task->tgid`.
#[inline(always)]
pub fn task_ids(task: u64, o: &KernelOffsets) -> Result<(u32, u32), i32> {
    let pid: i32 = read(task, o.task_pid)?;
    let tgid: i32 = read(task, o.task_tgid)?;
    Ok((pid as u32, tgid as u32))
}

/// The inode number of the socket behind `fd` of the current task, or `None` if `fd` is not
/// a socket (walks `task->files->fdt->fd[fd]->f_inode`).
#[inline(always)]
pub fn current_socket_ino(fd: u32, o: &KernelOffsets) -> Result<Option<u64>, i32> {
    // SAFETY: returns the current task pointer; it is only dereferenced via probe_read.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, o.task_files)?;
    let fdt: u64 = read(files, o.files_fdt)?;
    let max_fds: u32 = read(fdt, o.fdtable_max_fds)?;
    if fd >= max_fds {
        return Ok(None);
    }
    let fd_array: u64 = read(fdt, o.fdtable_fd)?;
    let file: u64 = read(fd_array, fd * 8)?;
    if file == 0 {
        return Ok(None);
    }
    let inode: u64 = read(file, o.file_inode)?;
    let mode: u16 = read(inode, o.inode_mode)?;
    if mode & S_IFMT != S_IFSOCK {
        return Ok(None);
    }
    let ino: u64 = read(inode, o.inode_ino)?;
    Ok(Some(ino))
}
