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
    /// BTF tracepoint (`tp_btf`, `name`): the raw tracepoint's arguments with their kernel
    /// types, so the program may load their fields directly (needs BTF, ≥ 5.5).
    BtfTracepoint,
    /// kprobe on a kernel function (needs CONFIG_KPROBES).
    Kprobe,
    /// fentry on a kernel function (needs BTF and function-level ftrace).
    Fentry,
    /// Attached nowhere: loaded into slot `target` of a program array that other programs
    /// tail-call (a raw tracepoint program, as its callers are).
    TailCall,
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
    /// Which of the two ways of seeing socket I/O the hook belongs to (`None`: both need it).
    pub socket_hooks: Option<SocketHooks>,
}

/// The two ways the programs see the proxies' socket I/O. Only one is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketHooks {
    /// `sock:sock_send_length`/`sock_recv_length` (6.4+): fire only when a socket sends or
    /// receives, with its `struct sock *`. A write is seen when it completes.
    Sock,
    /// `raw_syscalls/sys_enter`/`sys_exit` (every kernel): every syscall of every task on the
    /// host pays both hooks; writes are seen at entry and timed apart.
    Syscalls,
}

/// Environment variable that picks [`SocketHooks`] instead of the kernel (`sock`, `syscalls`).
pub const SOCKET_HOOKS_ENV: &str = "SMP_SOCKET_HOOKS";

impl SocketHooks {
    /// `SMP_SOCKET_HOOKS` if set, else `Sock` where the running kernel has the socket
    /// tracepoints, else `Syscalls`.
    pub fn choose() -> Result<SocketHooks, String> {
        match std::env::var(SOCKET_HOOKS_ENV) {
            Ok(v) => v.parse(),
            Err(_) => Ok(Self::detect()),
        }
    }

    /// `Sock` if the kernel has the `sock_send_length` and `sock_recv_length` tracepoints
    /// (Linux 6.4+), else `Syscalls`.
    pub fn detect() -> SocketHooks {
        if has_tracepoint("sock_send_length") && has_tracepoint("sock_recv_length") {
            SocketHooks::Sock
        } else {
            SocketHooks::Syscalls
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SocketHooks::Sock => "sock",
            SocketHooks::Syscalls => "syscalls",
        }
    }
}

/// Environment variable that picks the hook where a TCP write starts (`tcp_sendmsg_locked`,
/// `net_dev_queue`) instead of the kernel.
pub const SEND_START_ENV: &str = "SMP_SEND_START";

/// Where the socket tracepoints see a TCP write start (its outbound message boundary, the
/// start of its timing). Only one is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SendStart {
    /// `tcp:tcp_sendmsg_locked` (kernels newer than 6.12): the send holds the socket lock and
    /// starts queueing data.
    TcpSendmsgLocked,
    /// `net:net_dev_queue` (every kernel): the write's first packet goes to the device; the
    /// copy from the user comes before it, the delivery to the peer after.
    NetDevQueue,
}

impl SendStart {
    /// `SMP_SEND_START` if set, else `tcp_sendmsg_locked` where the kernel has it, else
    /// `net_dev_queue`.
    pub fn choose() -> Result<SendStart, String> {
        match std::env::var(SEND_START_ENV) {
            Ok(v) => v.parse(),
            Err(_) => Ok(Self::detect()),
        }
    }

    pub fn detect() -> SendStart {
        if has_tracepoint("tcp_sendmsg_locked") {
            SendStart::TcpSendmsgLocked
        } else {
            SendStart::NetDevQueue
        }
    }

    /// The tracepoint.
    pub fn target(self) -> &'static str {
        match self {
            SendStart::TcpSendmsgLocked => "tcp_sendmsg_locked",
            SendStart::NetDevQueue => "net_dev_queue",
        }
    }
}

impl std::str::FromStr for SendStart {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcp_sendmsg_locked" => Ok(SendStart::TcpSendmsgLocked),
            "net_dev_queue" => Ok(SendStart::NetDevQueue),
            other => Err(format!(
                "{SEND_START_ENV}={other:?}: expected \"tcp_sendmsg_locked\" (Linux newer than \
                 6.12) or \"net_dev_queue\""
            )),
        }
    }
}

/// Whether the running kernel has tracepoint `name`: its BTF then has a `btf_trace_<name>`
/// typedef. The names are read once per process (the parsed BTF is not kept); a kernel
/// without readable BTF has none.
pub fn has_tracepoint(name: &str) -> bool {
    static NAMES: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    NAMES
        .get_or_init(|| match super::btf::Btf::from_sys_fs() {
            Ok(btf) => btf
                .typedefs_with_prefix("btf_trace_")
                .map(str::to_owned)
                .collect(),
            Err(_) => Default::default(),
        })
        .contains(name)
}

impl std::str::FromStr for SocketHooks {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sock" => Ok(SocketHooks::Sock),
            "syscalls" => Ok(SocketHooks::Syscalls),
            other => Err(format!(
                "{SOCKET_HOOKS_ENV}={other:?}: expected \"sock\" (sock_send_length/sock_recv_length \
                 tracepoints, Linux 6.4+) or \"syscalls\" (raw sys_enter/sys_exit)"
            )),
        }
    }
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

/// The full catalog for this kernel (the socket hooks [`SocketHooks::choose`] picks; an
/// invalid `SMP_SOCKET_HOOKS` falls back to the kernel's choice here, the loader reports it).
pub fn hooks() -> Vec<Hook> {
    hooks_for(
        SocketHooks::choose().unwrap_or_else(|_| SocketHooks::detect()),
        SendStart::choose().unwrap_or_else(|_| SendStart::detect()),
    )
}

/// The full catalog: required hooks first (the socket hooks of `socket` among them; the other
/// way's are listed as not required), then the optional ones `check` probes for.
pub fn hooks_for(socket: SocketHooks, send_start: SendStart) -> Vec<Hook> {
    let mut out = vec![Hook {
        program: "smp_sched_switch",
        kind: HookKind::BtfTracepoint,
        target: "sched_switch".into(),
        required: true,
        feeds: "on-CPU time per thread",
        variant: "BTF tracepoint: exact prev and next task, next's ids read as plain loads (no helper call on the host's every switch)",
        socket_hooks: None,
    }];
    out.push(Hook {
        program: "smp_sched_exit",
        kind: HookKind::Tracepoint,
        target: "sched/sched_process_exit".into(),
        required: true,
        feeds: "process exit events",
        variant: "classic tracepoint",
        socket_hooks: None,
    });
    out.push(Hook {
        program: "smp_sched_exec",
        kind: HookKind::Tracepoint,
        target: "sched/sched_process_exec".into(),
        required: true,
        feeds: "process exec events (sidecar discovery)",
        variant: "classic tracepoint",
        socket_hooks: None,
    });
    out.push(Hook {
        program: "smp_sched_fork",
        kind: HookKind::RawTracepoint,
        target: "sched_process_fork".into(),
        required: true,
        feeds: "worker processes forked by a tracked proxy",
        variant: "raw tracepoint: the child's tgid tells a process from a thread",
        socket_hooks: None,
    });
    out.push(Hook {
        program: "smp_h2_answers",
        kind: HookKind::TailCall,
        target: format!(
            "{}[{}]",
            smp_common::maps::H2_TAIL,
            smp_common::maps::H2_ANSWERS_SLOT
        ),
        required: true,
        feeds: "hop pairing: the responses a plain HTTP/2 write forwards beyond its first, and \
                those a write on an HTTP/2-inside-TLS connection forwards by the causal rule, \
                one exchange each",
        variant: "tail-called by the write's program, once per response: the verifier walks \
                  one pairing per program",
        socket_hooks: None,
    });
    out.push(Hook {
        program: "smp_tls_hello",
        kind: HookKind::TailCall,
        target: format!(
            "{}[{}]",
            smp_common::maps::H2_TAIL,
            smp_common::maps::TLS_HELLO_SLOT
        ),
        required: true,
        feeds: "hop pairing: a TLS client's ALPN offer (HTTP/2 alone: HTTP/2 inside TLS, paired \
                by the causal rule)",
        variant: "tail-called by the write that sends a ClientHello or the read that takes it: \
                  the hello's bounded walk is verified once",
        socket_hooks: None,
    });
    for (program, target, feeds) in [
        (
            "smp_sock_send",
            "sock_send_length",
            "socket sends: count, bytes, write-side message boundaries (at completion)",
        ),
        (
            "smp_sock_recv",
            "sock_recv_length",
            "socket receives: count, bytes, read-side message boundaries",
        ),
        (
            "smp_sock_state",
            "inet_sock_set_state",
            "roles: the TCP sockets a proxy connects (SYN_SENT) are upstreams",
        ),
        (
            "smp_tcp_send",
            "tcp_sendmsg_locked",
            "TCP sends: where a write starts (write-side message boundaries; the send timed apart)",
        ),
        (
            "smp_xmit_start",
            "net_dev_queue",
            "TCP sends where tcp_sendmsg_locked is missing (6.4–6.12): a write's first packet \
             (write-side message boundaries; the send timed apart from there)",
        ),
    ] {
        let chosen = socket == SocketHooks::Sock;
        // One hook says where a write starts: tcp_sendmsg_locked (after 6.12), else the first
        // packet at net_dev_queue.
        let here = !matches!(target, "tcp_sendmsg_locked" | "net_dev_queue")
            || target == send_start.target();
        out.push(Hook {
            program,
            kind: HookKind::RawTracepoint,
            target: target.into(),
            required: chosen && here,
            feeds,
            variant: match (chosen, here) {
                (true, true) if target == "net_dev_queue" => {
                    "packet tracepoint (tcp_sendmsg_locked is newer than 6.12, or \
                     SMP_SEND_START=net_dev_queue): every packet sent pays it, a tracked \
                     thread's first packet of a write is where the write starts"
                }
                (true, true) => {
                    "socket tracepoint: fires only on socket I/O or TCP state changes, with the \
                     struct sock; the syscall, fd and buffer come from the task's user \
                     registers; no other syscall pays a hook"
                }
                (true, false) => {
                    "not used: the other hook says where a write starts (tcp_sendmsg_locked on \
                     kernels newer than 6.12, else net_dev_queue; SMP_SEND_START picks)"
                }
                (false, _) => {
                    "alternative to sys_enter/sys_exit, not used (SMP_SOCKET_HOOKS=syscalls, or \
                     the kernel is older than 6.4)"
                }
            },
            socket_hooks: Some(SocketHooks::Sock),
        });
    }
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
        let chosen = socket == SocketHooks::Syscalls;
        out.push(Hook {
            program,
            kind: HookKind::RawTracepoint,
            target: target.into(),
            required: chosen,
            feeds,
            variant: if chosen {
                "raw syscall tracepoint, one program per direction dispatching on the syscall \
                 number (kernels before 6.4, or SMP_SOCKET_HOOKS=syscalls): every other \
                 syscall of every task pays the two raw hooks too"
            } else {
                "alternative to the socket tracepoints, not used on this kernel \
                 (SMP_SOCKET_HOOKS=syscalls picks it)"
            },
            socket_hooks: Some(SocketHooks::Syscalls),
        });
    }
    out.push(Hook {
        program: "smp_tcp_probe",
        kind: HookKind::RawTracepoint,
        target: "tcp_probe".into(),
        required: true,
        feeds: "when data reaches a proxy's socket (how long it waits before the proxy reads it)",
        variant: "raw tracepoint: the sock and skb pointers on every kernel (the classic format has `skaddr` only since 6.10)",
        socket_hooks: None,
    });
    out.push(Hook {
        program: "smp_probe_kprobe",
        kind: HookKind::Kprobe,
        target: OPTIONAL_PROBE_FUNCTION.into(),
        required: false,
        feeds: "nothing yet (capability probe)",
        variant: "optional: only probed",
        socket_hooks: None,
    });
    out.push(Hook {
        program: "smp_probe_fentry",
        kind: HookKind::Fentry,
        target: OPTIONAL_PROBE_FUNCTION.into(),
        required: false,
        feeds: "nothing yet (capability probe)",
        variant: "optional: only probed",
        socket_hooks: None,
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
        let sockets = hooks
            .iter()
            .filter(|h| h.required && h.socket_hooks.is_some());
        // The four sched hooks, the socket ones, tcp_probe and the two tail-called programs.
        assert_eq!(
            hooks.iter().filter(|h| h.required).count(),
            4 + sockets.count() + 1 + 2
        );
        assert_eq!(
            hooks
                .iter()
                .filter(|h| h.kind == HookKind::TailCall && h.required)
                .count(),
            2
        );
        for socket in [SocketHooks::Sock, SocketHooks::Syscalls] {
            for send in [SendStart::TcpSendmsgLocked, SendStart::NetDevQueue] {
                let required: Vec<_> = hooks_for(socket, send)
                    .into_iter()
                    .filter(|h| h.socket_hooks.is_some() && h.required)
                    .collect();
                let want = match socket {
                    SocketHooks::Sock => 4,
                    SocketHooks::Syscalls => 2,
                };
                assert_eq!(required.len(), want, "{socket:?} {send:?}");
                assert!(required.iter().all(|h| h.socket_hooks == Some(socket)));
                if socket == SocketHooks::Sock {
                    assert!(required.iter().any(|h| h.target == send.target()));
                }
            }
        }
        assert!(hooks.iter().all(|h| h.program.len() <= 16 + 4));
    }

    #[test]
    fn socket_hooks_parse_or_say_what_is_expected() {
        assert_eq!("sock".parse::<SocketHooks>(), Ok(SocketHooks::Sock));
        assert_eq!("syscalls".parse::<SocketHooks>(), Ok(SocketHooks::Syscalls));
        let e = "kprobe".parse::<SocketHooks>().unwrap_err();
        assert!(
            e.contains("SMP_SOCKET_HOOKS=\"kprobe\"") && e.contains("\"sock\""),
            "{e}"
        );
    }

    #[test]
    fn send_start_parses_or_says_what_is_expected() {
        for s in [SendStart::TcpSendmsgLocked, SendStart::NetDevQueue] {
            assert_eq!(s.target().parse::<SendStart>(), Ok(s));
        }
        let e = "kprobe".parse::<SendStart>().unwrap_err();
        assert!(
            e.contains("SMP_SEND_START=\"kprobe\"") && e.contains("net_dev_queue"),
            "{e}"
        );
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
