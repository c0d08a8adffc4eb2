//! Every program the agent can attach: where, what it feeds, whether the agent needs it.
//! One table, so `check`, the loader and docs/architecture.md agree.

use serde::Serialize;
use smp_common::sock::SyscallKind;

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

/// Program name of a syscall's enter/exit program.
pub fn syscall_program(kind: SyscallKind, enter: bool) -> &'static str {
    match (kind, enter) {
        (SyscallKind::Read, true) => "smp_enter_read",
        (SyscallKind::Read, false) => "smp_exit_read",
        (SyscallKind::Readv, true) => "smp_enter_readv",
        (SyscallKind::Readv, false) => "smp_exit_readv",
        (SyscallKind::Recvfrom, true) => "smp_enter_recvfrom",
        (SyscallKind::Recvfrom, false) => "smp_exit_recvfrom",
        (SyscallKind::Recvmsg, true) => "smp_enter_recvmsg",
        (SyscallKind::Recvmsg, false) => "smp_exit_recvmsg",
        (SyscallKind::Write, true) => "smp_enter_write",
        (SyscallKind::Write, false) => "smp_exit_write",
        (SyscallKind::Writev, true) => "smp_enter_writev",
        (SyscallKind::Writev, false) => "smp_exit_writev",
        (SyscallKind::Sendto, true) => "smp_enter_sendto",
        (SyscallKind::Sendto, false) => "smp_exit_sendto",
        (SyscallKind::Sendmsg, true) => "smp_enter_sendmsg",
        (SyscallKind::Sendmsg, false) => "smp_exit_sendmsg",
    }
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
    for kind in SyscallKind::ALL {
        for enter in [true, false] {
            out.push(Hook {
                program: syscall_program(kind, enter),
                kind: HookKind::Tracepoint,
                target: format!(
                    "syscalls/sys_{}_{}",
                    if enter { "enter" } else { "exit" },
                    kind.name()
                ),
                required: true,
                feeds: "socket syscall count, bytes, time",
                variant: "classic syscall tracepoint: offsets from tracefs, works without kprobes",
            });
        }
    }
    for (program, target) in [
        ("smp_exit_accept4", "syscalls/sys_exit_accept4"),
        ("smp_exit_accept", "syscalls/sys_exit_accept"),
        ("smp_enter_connect", "syscalls/sys_enter_connect"),
    ] {
        out.push(Hook {
            program,
            kind: HookKind::Tracepoint,
            target: target.into(),
            required: true,
            feeds: "socket roles (downstream/upstream) for hop pairing",
            variant: "classic syscall tracepoint",
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
    use super::*;

    #[test]
    fn catalog_is_consistent() {
        let hooks = hooks();
        let names: std::collections::BTreeSet<_> = hooks.iter().map(|h| h.program).collect();
        assert_eq!(names.len(), hooks.len(), "program names are unique");
        assert_eq!(hooks.iter().filter(|h| h.required).count(), 4 + 16 + 3 + 1);
        assert!(hooks.iter().all(|h| h.program.len() <= 16 + 4));
    }
}
