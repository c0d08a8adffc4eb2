//! Assembles [`KernelOffsets`] for the running kernel from tracefs formats and BTF.

use smp_common::{config::KernelOffsets, sock::SyscallKind, ABI_VERSION};

use super::{
    btf::{Btf, BtfError},
    tracefs::{self, FormatError},
};

/// Why the offsets could not be found.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("tracepoint syscalls/sys_{dir}_{syscall} has field {field:?} at offset {found}, but sys_{dir}_read has it at {expected}: the programs assume one offset for all")]
    Inconsistent {
        dir: &'static str,
        syscall: &'static str,
        field: &'static str,
        found: u32,
        expected: u32,
    },
}

/// Reads every offset the programs need from the running kernel.
pub fn read(btf: &Btf) -> Result<KernelOffsets, OffsetsError> {
    let (sys_enter_fd, sys_exit_ret) = syscall_offsets()?;
    Ok(KernelOffsets {
        valid: ABI_VERSION,
        sys_enter_fd,
        sys_exit_ret,
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        file_inode: btf.member_offset("file", "f_inode")?,
        inode_mode: btf.member_offset("inode", "i_mode")?,
        inode_ino: btf.member_offset("inode", "i_ino")?,
    })
}

/// The `fd` offset of every traced `sys_enter_*` and the `ret` offset of every `sys_exit_*`;
/// they must agree across syscalls (the programs use one value each).
fn syscall_offsets() -> Result<(u32, u32), OffsetsError> {
    let mut fd_off = None;
    let mut ret_off = None;
    for kind in SyscallKind::ALL {
        let name = kind.name();
        let fd = tracefs::field_offset("syscalls", &format!("sys_enter_{name}"), "fd")?;
        let ret = tracefs::field_offset("syscalls", &format!("sys_exit_{name}"), "ret")?;
        for (dir, field, found, slot) in [
            ("enter", "fd", fd, &mut fd_off),
            ("exit", "ret", ret, &mut ret_off),
        ] {
            match *slot {
                None => *slot = Some(found),
                Some(expected) if expected != found => {
                    return Err(OffsetsError::Inconsistent {
                        dir,
                        syscall: name,
                        field,
                        found,
                        expected,
                    })
                }
                Some(_) => {}
            }
        }
    }
    Ok((fd_off.unwrap_or(0), ret_off.unwrap_or(0)))
}
