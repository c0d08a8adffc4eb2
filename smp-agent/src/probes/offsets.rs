//! Assembles [`KernelOffsets`] for the running kernel from BTF.

use smp_common::{config::KernelOffsets, ABI_VERSION};

use super::btf::{Btf, BtfError};

/// Why the offsets could not be found.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("the raw syscall probes know the argument registers of x86_64 only, not of {0}")]
    Arch(&'static str),
}

/// `struct pt_regs` members holding a syscall's first, second and third arguments, its number
/// and its return value.
fn arg_registers() -> Result<[&'static str; 5], OffsetsError> {
    if cfg!(target_arch = "x86_64") {
        Ok(["di", "si", "dx", "orig_ax", "ax"])
    } else {
        Err(OffsetsError::Arch(std::env::consts::ARCH))
    }
}

/// Where the kernel says which ports `connect` picks.
const EPHEMERAL_RANGE: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// The ephemeral port range from [`EPHEMERAL_RANGE`]'s text (`"32768\t60999\n"`); `(0, 0)`
/// (unknown) when it does not read as two ports, the first not above the second.
pub fn ephemeral_range(text: &str) -> (u16, u16) {
    let mut ports = text.split_whitespace().map(str::parse::<u16>);
    match (ports.next(), ports.next(), ports.next()) {
        (Some(Ok(first)), Some(Ok(last)), None) if first > 0 && first <= last => (first, last),
        _ => (0, 0),
    }
}

/// Reads every offset the programs need from the running kernel.
pub fn read(btf: &Btf) -> Result<KernelOffsets, OffsetsError> {
    let [arg0, arg1, arg2, nr, ret] = arg_registers()?;
    // The agent's namespace's range: a pod's is the same unless its sysctls change it.
    let ephemeral = std::fs::read_to_string(EPHEMERAL_RANGE)
        .map(|t| ephemeral_range(&t))
        .unwrap_or((0, 0));
    if ephemeral == (0, 0) {
        tracing::warn!(
            path = EPHEMERAL_RANGE,
            "no ephemeral port range: sockets opened before the probes keep an unknown role \
             unless their first bytes tell it"
        );
    }
    // The connection's RTT as TCP estimates it (`tcp_info`'s `rtt`, `rttvar`, `min_rtt`).
    let tcp_min_rtt = btf.member_offset("tcp_sock", "rtt_min")?
        + btf.member_offset("minmax", "s")?
        + btf.member_offset("minmax_sample", "v")?;
    Ok(KernelOffsets {
        valid: ABI_VERSION,
        regs_arg0: btf.member_offset("pt_regs", arg0)?,
        regs_arg1: btf.member_offset("pt_regs", arg1)?,
        regs_arg2: btf.member_offset("pt_regs", arg2)?,
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        file_inode: btf.member_offset("file", "f_inode")?,
        inode_mode: btf.member_offset("inode", "i_mode")?,
        inode_ino: btf.member_offset("inode", "i_ino")?,
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
        task_state: btf
            .member_offset("task_struct", "__state")
            .or_else(|_| btf.member_offset("task_struct", "state"))?,
        skb_len: btf.member_offset("sk_buff", "len")?,
        skb_data: btf.member_offset("sk_buff", "data")?,
        regs_nr: btf.member_offset("pt_regs", nr)?,
        sock_socket: btf.member_offset("sock", "sk_socket")?,
        socket_alloc_inode: btf.member_offset("socket_alloc", "vfs_inode")?,
        skb_sk: btf.member_offset("sk_buff", "sk")?,
        regs_ret: btf.member_offset("pt_regs", ret)?,
        tcp_srtt: btf.member_offset("tcp_sock", "srtt_us")?,
        tcp_mdev: btf.member_offset("tcp_sock", "mdev_us")?,
        tcp_min_rtt,
        skc_net: btf.member_offset("sock_common", "skc_net")?,
        ephemeral_first: ephemeral.0,
        ephemeral_last: ephemeral.1,
    })
}

#[cfg(test)]
mod tests {
    use super::ephemeral_range;

    #[test]
    fn reads_the_ephemeral_port_range() {
        assert_eq!(ephemeral_range("32768\t60999\n"), (32768, 60999));
        assert_eq!(ephemeral_range("1024 65535"), (1024, 65535));
        for bad in [
            "",
            "32768",
            "60999 32768",
            "0 100",
            "a b",
            "1 2 3",
            "70000 80000",
        ] {
            assert_eq!(ephemeral_range(bad), (0, 0), "{bad:?}");
        }
    }
}
