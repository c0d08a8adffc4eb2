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
        syscall: String,
        field: &'static str,
        found: u32,
        expected: u32,
    },
}

/// Reads every offset the programs need from the running kernel.
pub fn read(btf: &Btf) -> Result<KernelOffsets, OffsetsError> {
    let (sys_enter_fd, sys_exit_ret, sys_enter_buf) = syscall_offsets()?;
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
        sys_enter_buf,
        file_private: btf.member_offset("file", "private_data")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        skc_family: btf.member_offset("sock_common", "skc_family")?,
        skc_daddr: btf.member_offset("sock_common", "skc_daddr")?,
        skc_rcv_saddr: btf.member_offset("sock_common", "skc_rcv_saddr")?,
        skc_dport: btf.member_offset("sock_common", "skc_dport")?,
        skc_num: btf.member_offset("sock_common", "skc_num")?,
        skc_v6_daddr: btf.member_offset("sock_common", "skc_v6_daddr")?,
        skc_v6_rcv_saddr: btf.member_offset("sock_common", "skc_v6_rcv_saddr")?,
        msghdr_iov: btf.member_offset("user_msghdr", "msg_iov")?,
        task_sum_exec: btf.member_offset("task_struct", "se")?
            + btf.member_offset("sched_entity", "sum_exec_runtime")?,
        task_start_time: btf.member_offset("task_struct", "start_time")?,
        skb_len: btf.member_offset("sk_buff", "len")?,
        skb_data: btf.member_offset("sk_buff", "data")?,
        _pad: 0,
    })
}

/// Name of a syscall's second argument (the data buffer, iovec or msghdr) in its format file.
fn buf_field(kind: SyscallKind) -> &'static str {
    match kind {
        SyscallKind::Read | SyscallKind::Write => "buf",
        SyscallKind::Recvfrom => "ubuf",
        SyscallKind::Sendto => "buff",
        SyscallKind::Readv | SyscallKind::Writev => "vec",
        SyscallKind::Recvmsg | SyscallKind::Sendmsg => "msg",
    }
}

/// The `fd` and buffer offsets of every traced `sys_enter_*` and the `ret` offset of every
/// `sys_exit_*` (accept/accept4/connect included); they must agree across syscalls (the
/// programs use one value each).
fn syscall_offsets() -> Result<(u32, u32, u32), OffsetsError> {
    let mut fd_off = None;
    let mut ret_off = None;
    let mut buf_off = None;
    let data = SyscallKind::ALL
        .iter()
        .map(|k| (k.name(), Some(buf_field(*k))));
    let roles = [("accept4", None), ("accept", None), ("connect", None)];
    for (name, buf) in data.chain(roles) {
        let enter = format!("sys_enter_{name}");
        let (enter_path, enter_fields) = tracefs::read_format("syscalls", &enter)?;
        let fd = tracefs::field(&enter_fields, "fd", &enter_path)?.offset;
        let ret = tracefs::field_offset("syscalls", &format!("sys_exit_{name}"), "ret")?;
        let buf = match buf {
            Some(field) => Some(tracefs::field(&enter_fields, field, &enter_path)?.offset),
            None => None,
        };
        for (dir, field, found, slot) in [
            ("enter", "fd", Some(fd), &mut fd_off),
            ("exit", "ret", Some(ret), &mut ret_off),
            ("enter", "buf", buf, &mut buf_off),
        ] {
            let Some(found) = found else { continue };
            match *slot {
                None => *slot = Some(found),
                Some(expected) if expected != found => {
                    return Err(OffsetsError::Inconsistent {
                        dir,
                        syscall: name.to_string(),
                        field,
                        found,
                        expected,
                    })
                }
                Some(_) => {}
            }
        }
    }
    Ok((
        fd_off.unwrap_or(0),
        ret_off.unwrap_or(0),
        buf_off.unwrap_or(0),
    ))
}
