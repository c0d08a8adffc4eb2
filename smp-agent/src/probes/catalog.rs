//! Every program the agent can attach: where, what it feeds, whether the agent needs it.
//! One table, so `check`, the loader and docs/architecture.md agree.

use serde::Serialize;
use smp_common::sock::{op, SyscallKind};

/// How a program attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookKind {
    /// Classic tracepoint (`category/name`), every kernel the agent supports.
    Tracepoint,
    /// Raw tracepoint (`name`): typed `TP_PROTO` arguments, no BTF needed (≥ 4.17).
    RawTracepoint,
    /// kprobe on a kernel function (needs CONFIG_KPROBES).
    Kprobe,
    /// fentry on a kernel function (needs BTF and function-level ftrace).
    Fentry,
}

/// One program and where it attaches.
#[derive(Debug, Clone, Serialize)]
pub struct Hook {
    /// Program name in the eBPF object.
    pub program: &'static str,
    pub kind: HookKind,
    /// `category/name` for tracepoints, the function for kprobe/fentry.
    pub target: String,
    /// The agent does not work without it.
    pub required: bool,
    /// What the hook feeds.
    pub feeds: &'static str,
    /// Why this variant was chosen on this kernel.
    pub variant: &'static str,
}

/// Every syscall the `sys_enter`/`sys_exit` programs act on, with its number on this
/// architecture and what they do with it (`smp_common::sock::op`). The agent writes these into
/// the `NR_OPS` array before attaching; every other syscall costs the programs one array read.
pub fn traced_syscalls() -> Vec<(&'static str, u32, u8)> {
    let data = op::data;
    vec![
        ("read", libc::SYS_read as u32, data(SyscallKind::Read)),
        ("readv", libc::SYS_readv as u32, data(SyscallKind::Readv)),
        (
            "recvfrom",
            libc::SYS_recvfrom as u32,
            data(SyscallKind::Recvfrom),
        ),
        (
            "recvmsg",
            libc::SYS_recvmsg as u32,
            data(SyscallKind::Recvmsg),
        ),
        ("write", libc::SYS_write as u32, data(SyscallKind::Write)),
        ("writev", libc::SYS_writev as u32, data(SyscallKind::Writev)),
        ("sendto", libc::SYS_sendto as u32, data(SyscallKind::Sendto)),
        (
            "sendmsg",
            libc::SYS_sendmsg as u32,
            data(SyscallKind::Sendmsg),
        ),
        ("accept", libc::SYS_accept as u32, op::ACCEPT),
        ("accept4", libc::SYS_accept4 as u32, op::ACCEPT),
        ("connect", libc::SYS_connect as u32, op::CONNECT),
        // Keep FD_CACHE true: fds that leave the table, and wholesale changes.
        ("close", libc::SYS_close as u32, op::CLOSE_ARG0),
        #[cfg(target_arch = "x86_64")]
        ("dup2", libc::SYS_dup2 as u32, op::CLOSE_ARG1),
        ("dup3", libc::SYS_dup3 as u32, op::CLOSE_ARG1),
        ("close_range", libc::SYS_close_range as u32, op::FD_RESET),
        ("execve", libc::SYS_execve as u32, op::FD_RESET),
        ("execveat", libc::SYS_execveat as u32, op::FD_RESET),
    ]
}

/// Function the optional kprobe/fentry probes attach to (exists on every supported kernel).
pub const OPTIONAL_PROBE_FUNCTION: &str = "tcp_sendmsg";

/// The full catalog: required hooks first, then the optional ones `check` probes for.
pub fn hooks() -> Vec<Hook> {
    let mut out = vec![Hook {
        program: "smp_sched_switch",
        kind: HookKind::RawTracepoint,
        target: "sched_switch".into(),
        required: true,
        feeds: "on-CPU time per thread",
        variant: "raw tracepoint: exact prev and next task (tgid of both), no BTF needed to attach",
    }];
    out.push(Hook {
        program: "smp_sched_exit",
        kind: HookKind::Tracepoint,
        target: "sched/sched_process_exit".into(),
        required: true,
        feeds: "process exit events",
        variant: "classic tracepoint",
    });
    out.push(Hook {
        program: "smp_sched_exec",
        kind: HookKind::Tracepoint,
        target: "sched/sched_process_exec".into(),
        required: true,
        feeds: "process exec events (sidecar discovery)",
        variant: "classic tracepoint",
    });
    out.push(Hook {
        program: "smp_sched_fork",
        kind: HookKind::RawTracepoint,
        target: "sched_process_fork".into(),
        required: true,
        feeds: "worker processes forked by a tracked proxy",
        variant: "raw tracepoint: the child's tgid tells a process from a thread",
    });
    for (program, target, feeds) in [
        (
            "smp_sys_enter",
            "sys_enter",
            "socket syscalls: fd → socket, start time, write-side message boundaries, roles (connect)",
        ),
        (
            "smp_sys_exit",
            "sys_exit",
            "socket syscalls: count, bytes, time, read-side message boundaries, roles (accept)",
        ),
    ] {
        out.push(Hook {
            program,
            kind: HookKind::RawTracepoint,
            target: target.into(),
            required: true,
            feeds,
            variant: "raw syscall tracepoint, one program per direction dispatching on the syscall \
                      number: per traced call about half the cost of the 19 classic syscall \
                      tracepoints, and 2 programs to verify instead of 19 (every other syscall \
                      pays the two raw hooks too)",
        });
    }
    out.push(Hook {
        program: "smp_tcp_probe",
        kind: HookKind::RawTracepoint,
        target: "tcp_probe".into(),
        required: true,
        feeds: "when data reaches a proxy's socket (how long it waits before the proxy reads it)",
        variant: "raw tracepoint: the sock and skb pointers on every kernel (the classic format has `skaddr` only since 6.10)",
    });
    out.push(Hook {
        program: "smp_probe_kprobe",
        kind: HookKind::Kprobe,
        target: OPTIONAL_PROBE_FUNCTION.into(),
        required: false,
        feeds: "nothing yet (capability probe)",
        variant: "optional: only probed",
    });
    out.push(Hook {
        program: "smp_probe_fentry",
        kind: HookKind::Fentry,
        target: OPTIONAL_PROBE_FUNCTION.into(),
        required: false,
        feeds: "nothing yet (capability probe)",
        variant: "optional: only probed",
    });
    out
}

#[cfg(test)]
mod tests {
    use smp_common::sock::MAX_SYSCALL_NR;

    use super::*;

    #[test]
    fn catalog_is_consistent() {
        let hooks = hooks();
        let names: std::collections::BTreeSet<_> = hooks.iter().map(|h| h.program).collect();
        assert_eq!(names.len(), hooks.len(), "program names are unique");
        assert_eq!(hooks.iter().filter(|h| h.required).count(), 4 + 2 + 1);
        assert!(hooks.iter().all(|h| h.program.len() <= 16 + 4));
    }

    #[test]
    fn traced_syscalls_cover_every_kind_once() {
        let t = traced_syscalls();
        let nrs: std::collections::BTreeSet<_> = t.iter().map(|&(_, nr, _)| nr).collect();
        assert_eq!(nrs.len(), t.len(), "syscall numbers are unique");
        assert!(t
            .iter()
            .all(|&(_, nr, o)| nr < MAX_SYSCALL_NR && o != op::NONE));
        for kind in SyscallKind::ALL {
            let ops: Vec<_> = t
                .iter()
                .filter(|&&(name, _, _)| name == kind.name())
                .collect();
            assert_eq!(ops.len(), 1, "{kind:?}");
            assert_eq!(ops[0].2, op::data(kind), "{kind:?}");
        }
    }
}
