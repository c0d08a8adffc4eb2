//! Load, configure and attach the eBPF programs; track processes; read the maps.

use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf},
    programs::{BtfTracePoint, FEntry, KProbe, RawTracePoint, TracePoint},
    Ebpf, EbpfLoader,
};
use serde::Serialize;
use smp_common::{
    config::{tracked_bit, KernelOffsets, OFFSETS_GLOBAL, PID_LIMIT},
    counters::Counter,
    cpu::{Running, ThreadCpu},
    event::EVENTS_POLL_MS,
    hop::{HopCounts, SockState},
    maps,
    sock::{SockIo, SockKey, SockStats, SyscallKind},
};
use tokio::io::unix::AsyncFd;

use super::{
    btf::Btf,
    catalog::{self, Hook, HookKind, SendStart, SocketHooks},
    events::{decode_or_count, ProbeEvent},
    offsets::{self, OffsetsError},
    EBPF_OBJECT,
};
use crate::{
    aggregate::{
        LossCounters, ProbeSnapshot, RunningSample, SocketSample, ThreadBase, ThreadCpuSample,
    },
    host::{self, monotonic_ns},
};

/// Why the probes could not be loaded or read.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("this smp-agent was built without its eBPF programs (AYA_BUILD_SKIP=1): rebuild it without AYA_BUILD_SKIP")]
    NoObject,
    #[error("cannot find kernel offsets")]
    Offsets(#[from] OffsetsError),
    #[error("failed to load the eBPF object: {hint}")]
    Load {
        hint: String,
        /// Boxed: aya's error is large, and every `Result` of this module carries it.
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("failed to attach {program} ({target}): {hint}")]
    Attach {
        program: &'static str,
        target: String,
        hint: String,
    },
    #[error("{0}")]
    SocketHooks(String),
    #[error("map {map} is missing from the eBPF object")]
    MissingMap { map: &'static str },
    #[error("program {program} is missing from the eBPF object")]
    MissingProgram { program: &'static str },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("failed to watch the event ring buffer")]
    RingBuf(#[source] io::Error),
    #[error("process {tgid} runs a 32-bit (ia32) program: its syscall numbers are not the ones the probes dispatch on, so it cannot be tracked")]
    Compat32 { tgid: u32 },
}

/// Outcome of one hook.
#[derive(Debug, Clone, Serialize)]
pub struct HookStatus {
    #[serde(flatten)]
    pub hook: Hook,
    /// `attached`, `failed` or `not_tried`.
    pub status: &'static str,
    /// Why it failed (missing capability or kernel feature named).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Instructions the verifier processed to accept the program (its limit is 1 000 000;
    /// kernels before 5.16 do not say). Only [`Probes::check`] reads it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified_insns: Option<u32>,
}

/// Instructions the verifier processed for `program` (loaded), if the kernel says.
fn verified_insns(ebpf: &Ebpf, program: &str) -> Option<u32> {
    ebpf.program(program)?
        .info()
        .ok()?
        .verified_instruction_count()
}

/// Loaded and attached programs. Dropping it detaches everything (links are owned by this
/// process: nothing stays attached after exit, even after SIGKILL).
pub struct Probes {
    ebpf: Ebpf,
    status: Vec<HookStatus>,
    /// The threads of each tracked process when its tracking began, with their CPU time then
    /// ([`ProbeSnapshot::charge_from_tracking_start`]).
    bases: std::collections::HashMap<u32, ThreadBase>,
}

/// A thread's `sum_exec_runtime` as the scheduler reports it (`/proc/<tgid>/task/<tid>/
/// schedstat`, its first field, ns); `None` when the thread is gone.
fn thread_exec_ns(tgid: u32, tid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/schedstat")).ok()?;
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// Explains an aya error: a permission error names the missing capabilities.
fn hint(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    let mut denied = text.contains("Operation not permitted") || text.contains("Permission denied");
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                denied = true;
            }
        }
        text = format!("{text}: {e}");
        cur = e.source();
    }
    if text.len() > 1200 {
        // Verifier logs can be huge: the start says what failed, the end why.
        let mut head = 300;
        while !text.is_char_boundary(head) {
            head -= 1;
        }
        let mut tail = text.len() - 900;
        while !text.is_char_boundary(tail) {
            tail += 1;
        }
        text = format!("{} … {}", &text[..head], &text[tail..]);
    }
    if denied {
        let missing = host::missing_probe_caps(host::effective_caps());
        if missing.is_empty() {
            format!("permission denied ({text}); capabilities look sufficient, so a security module (lockdown, SELinux, seccomp) may forbid it")
        } else {
            let names: Vec<_> = missing.iter().map(|c| c.name()).collect();
            format!(
                "permission denied: missing {} (run as root, or grant CAP_BPF and CAP_PERFMON)",
                names.join(", ")
            )
        }
    } else {
        text
    }
}

/// Lets the kernel charge map memory: needed before 5.11 (memcg accounting came later).
fn raise_memlock() {
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer; failure is harmless on >= 5.11.
    let _ = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

fn open(offsets: &KernelOffsets) -> Result<Ebpf, ProbeError> {
    if EBPF_OBJECT.is_empty() {
        return Err(ProbeError::NoObject);
    }
    raise_memlock();
    let mut ebpf = EbpfLoader::new()
        .override_global(OFFSETS_GLOBAL, offsets, true)
        .load(EBPF_OBJECT)
        .map_err(|source| ProbeError::Load {
            hint: hint(&source),
            source: Box::new(source),
        })?;
    fill_syscall_ops(&mut ebpf)?;
    Ok(ebpf)
}

/// Tells the syscall programs which syscall numbers to act on (before they are attached).
fn fill_syscall_ops(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    let err = |source| ProbeError::Map {
        map: maps::NR_OPS,
        source,
    };
    let map = ebpf
        .map_mut(maps::NR_OPS)
        .ok_or(ProbeError::MissingMap { map: maps::NR_OPS })?;
    let mut ops: Array<&mut MapData, u8> = Array::try_from(map).map_err(err)?;
    for (_, nr, op) in catalog::traced_syscalls() {
        ops.set(nr, op, 0).map_err(err)?;
    }
    Ok(())
}

fn attach(ebpf: &mut Ebpf, hook: &Hook) -> Result<(), String> {
    let prog = ebpf
        .program_mut(hook.program)
        .ok_or_else(|| format!("program {} missing from the eBPF object", hook.program))?;
    let result: Result<(), aya::programs::ProgramError> = (|| {
        match hook.kind {
            HookKind::Tracepoint => {
                let p: &mut TracePoint = prog.try_into()?;
                p.load()?;
                let (category, name) = hook.target.split_once('/').unwrap_or(("", &hook.target));
                p.attach(category, name)?;
            }
            HookKind::RawTracepoint => {
                let p: &mut RawTracePoint = prog.try_into()?;
                p.load()?;
                p.attach(&hook.target)?;
            }
            HookKind::BtfTracepoint => {
                let btf = aya::Btf::from_sys_fs()?;
                let p: &mut BtfTracePoint = prog.try_into()?;
                p.load(&hook.target, &btf)?;
                p.attach()?;
            }
            HookKind::Kprobe => {
                let p: &mut KProbe = prog.try_into()?;
                p.load()?;
                p.attach(&hook.target, 0)?;
            }
            HookKind::Fentry => {
                let btf = aya::Btf::from_sys_fs()?;
                let p: &mut FEntry = prog.try_into()?;
                p.load(&hook.target, &btf)?;
                p.attach()?;
            }
            HookKind::TailCall => {
                let p: &mut RawTracePoint = prog.try_into()?;
                p.load()?;
            }
        }
        Ok(())
    })();
    let result = result.map_err(|e| hint(&e));
    let result = match (result, hook.kind) {
        (Ok(()), HookKind::TailCall) => set_tail_call(ebpf, hook.program, tail_slot(hook.program)),
        (r, _) => r,
    };
    result.map_err(|h| match hook.kind {
        HookKind::Kprobe
            if !std::path::Path::new("/sys/bus/event_source/devices/kprobe").exists() =>
        {
            format!("kprobes unavailable: this kernel has no kprobe PMU (CONFIG_KPROBES off): {h}")
        }
        HookKind::Fentry => {
            format!("fentry unavailable (needs BTF and function-level ftrace): {h}")
        }
        _ => h,
    })
}

/// `H2_TAIL`'s slot of tail-called program `program`.
fn tail_slot(program: &str) -> u32 {
    if program == "smp_tls_hello" {
        maps::TLS_HELLO_SLOT
    } else {
        maps::H2_ANSWERS_SLOT
    }
}

/// Puts loaded program `program` in `H2_TAIL`'s `slot`, for the programs that tail-call it.
fn set_tail_call(ebpf: &mut Ebpf, program: &str, slot: u32) -> Result<(), String> {
    let fd = ebpf
        .program(program)
        .ok_or_else(|| format!("program {program} missing from the eBPF object"))?
        .fd()
        .and_then(|fd| fd.try_clone().map_err(Into::into))
        .map_err(|e| hint(&e))?;
    let map = ebpf
        .map_mut(maps::H2_TAIL)
        .ok_or_else(|| format!("map {} missing from the eBPF object", maps::H2_TAIL))?;
    let mut slots: ProgramArray<&mut MapData> =
        ProgramArray::try_from(map).map_err(|e| format!("map {}: {e}", maps::H2_TAIL))?;
    slots
        .set(slot, &fd, 0)
        .map_err(|e| format!("map {} slot {slot}: {e}", maps::H2_TAIL))
}

impl Probes {
    /// Loads and attaches every required program, with the socket hooks
    /// [`SocketHooks::choose`] picks. Optional ones are left alone.
    pub fn load() -> Result<Probes, ProbeError> {
        Self::load_with(SocketHooks::choose().map_err(ProbeError::SocketHooks)?)
    }

    /// [`Probes::load`] with the given socket hooks.
    pub fn load_with(socket: SocketHooks) -> Result<Probes, ProbeError> {
        let btf = Btf::from_sys_fs().map_err(OffsetsError::from)?;
        let offsets = offsets::read(&btf)?;
        let send_start = SendStart::choose().map_err(ProbeError::SocketHooks)?;
        let mut ebpf = open(&offsets)?;
        let mut status = Vec::new();
        for hook in catalog::hooks_for(socket, send_start) {
            if !hook.required {
                status.push(HookStatus {
                    hook,
                    status: "not_tried",
                    reason: None,
                    verified_insns: None,
                });
                continue;
            }
            if let Err(reason) = attach(&mut ebpf, &hook) {
                let hint = if hook.socket_hooks == Some(SocketHooks::Sock) {
                    format!(
                        "{reason} (SMP_SOCKET_HOOKS=syscalls uses the raw syscall hooks instead)"
                    )
                } else {
                    reason
                };
                return Err(ProbeError::Attach {
                    program: hook.program,
                    target: hook.target.clone(),
                    hint,
                });
            }
            tracing::debug!(program = hook.program, target = %hook.target, "attached");
            status.push(HookStatus {
                hook,
                status: "attached",
                reason: None,
                verified_insns: None,
            });
        }
        Ok(Probes {
            ebpf,
            status,
            bases: std::collections::HashMap::new(),
        })
    }

    /// Tries every hook, optional ones included, and reports each; never fails as a whole.
    /// The returned probes (if the object loaded at all) keep the hooks attached until dropped.
    pub fn check() -> (Vec<HookStatus>, Option<String>) {
        let fail_all = |reason: String| -> (Vec<HookStatus>, Option<String>) {
            let statuses = catalog::hooks()
                .into_iter()
                .map(|hook| HookStatus {
                    hook,
                    status: "failed",
                    reason: Some(reason.clone()),
                    verified_insns: None,
                })
                .collect();
            (statuses, Some(reason))
        };
        let btf = match Btf::from_sys_fs() {
            Ok(b) => b,
            Err(e) => return fail_all(format!("{e:#}")),
        };
        let offsets = match offsets::read(&btf) {
            Ok(o) => o,
            Err(e) => return fail_all(e.to_string()),
        };
        let socket = match SocketHooks::choose() {
            Ok(s) => s,
            Err(e) => return fail_all(e),
        };
        let send_start = match SendStart::choose() {
            Ok(s) => s,
            Err(e) => return fail_all(e),
        };
        let mut ebpf = match open(&offsets) {
            Ok(e) => e,
            Err(e) => return fail_all(e.to_string()),
        };
        let statuses = catalog::hooks_for(socket, send_start)
            .into_iter()
            .map(|hook| match attach(&mut ebpf, &hook) {
                Ok(()) => HookStatus {
                    verified_insns: verified_insns(&ebpf, hook.program),
                    hook,
                    status: "attached",
                    reason: None,
                },
                Err(reason) => HookStatus {
                    hook,
                    status: "failed",
                    reason: Some(reason),
                    verified_insns: None,
                },
            })
            .collect();
        (statuses, None)
    }

    /// What was attached.
    pub fn status(&self) -> &[HookStatus] {
        &self.status
    }

    fn targets(&mut self) -> Result<HashMap<&mut MapData, u32, u64>, ProbeError> {
        let map = self
            .ebpf
            .map_mut(maps::TARGETS)
            .ok_or(ProbeError::MissingMap { map: maps::TARGETS })?;
        HashMap::try_from(map).map_err(|source| ProbeError::Map {
            map: maps::TARGETS,
            source,
        })
    }

    /// The `u64` array map `name`, for writing.
    fn u64_array(&mut self, name: &'static str) -> Result<Array<&mut MapData, u64>, ProbeError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(ProbeError::MissingMap { map: name })?;
        Array::try_from(map).map_err(|source| ProbeError::Map { map: name, source })
    }

    /// Sets or clears `tgid`'s bit in the `TRACKED` bitmap (the programs' first check).
    fn set_tracked_bit(&mut self, tgid: u32, on: bool) -> Result<(), ProbeError> {
        let err = |source| ProbeError::Map {
            map: maps::TRACKED,
            source,
        };
        let mut bits = self.u64_array(maps::TRACKED)?;
        let (word, bit) = tracked_bit(tgid);
        // Only this process writes the bitmap, and `&mut self` serialises the writes.
        let old = bits.get(&word, 0).map_err(err)?;
        let new = if on { old | bit } else { old & !bit };
        bits.set(word, new, 0).map_err(err)
    }

    /// Voids every `FD_CACHE` entry (see `smp_common::sock`).
    fn renew_fd_epoch(&mut self, now: u64) -> Result<(), ProbeError> {
        self.u64_array(maps::FD_EPOCH)?
            .set(0, now, 0)
            .map_err(|source| ProbeError::Map {
                map: maps::FD_EPOCH,
                source,
            })
    }

    /// Starts tracing process `tgid` (takes effect at once, no reload).
    pub fn track(&mut self, tgid: u32) -> Result<(), ProbeError> {
        if tgid >= PID_LIMIT {
            return Err(ProbeError::Map {
                map: maps::TRACKED,
                source: aya::maps::MapError::OutOfBounds {
                    index: tgid,
                    max_entries: PID_LIMIT,
                },
            });
        }
        if runs_32bit_program(tgid) {
            return Err(ProbeError::Compat32 { tgid });
        }
        let now = monotonic_ns();
        // Fd-cache entries made before (while closes went unseen) are void from now on.
        self.renew_fd_epoch(now)?;
        self.targets()?
            .insert(tgid, now, 0)
            .map_err(|source| ProbeError::Map {
                map: maps::TARGETS,
                source,
            })?;
        self.set_tracked_bit(tgid, true)?;
        // The CPU time of its threads now: those on a CPU are charged from here, not from
        // their next switch-in (a thread is gone: nothing to charge).
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{tgid}/task")) {
            for tid in tasks
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
            {
                if let Some(exec_ns) = thread_exec_ns(tgid, tid) {
                    self.bases.insert(tid, ThreadBase { tgid, exec_ns });
                }
            }
        }
        Ok(())
    }

    /// Stops tracing process `tgid`.
    pub fn untrack(&mut self, tgid: u32) -> Result<(), ProbeError> {
        if tgid >= PID_LIMIT {
            return Ok(());
        }
        self.set_tracked_bit(tgid, false)?;
        self.bases.retain(|_, b| b.tgid != tgid);
        match self.targets()?.remove(&tgid) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(source) => Err(ProbeError::Map {
                map: maps::TARGETS,
                source,
            }),
        }
    }

    /// Reads every map into a plain snapshot.
    pub fn snapshot(&self) -> Result<ProbeSnapshot, ProbeError> {
        let map = |name: &'static str| {
            self.ebpf
                .map(name)
                .ok_or(ProbeError::MissingMap { map: name })
        };
        let err = |map: &'static str| move |source| ProbeError::Map { map, source };
        let mut snap = ProbeSnapshot {
            now_ns: monotonic_ns(),
            ..Default::default()
        };

        let threads: HashMap<_, u32, ThreadCpu> =
            HashMap::try_from(map(maps::THREAD_CPU)?).map_err(err(maps::THREAD_CPU))?;
        for entry in threads.iter() {
            let (tid, t) = entry.map_err(err(maps::THREAD_CPU))?;
            snap.threads.push(ThreadCpuSample {
                tid,
                tgid: t.tgid,
                on_cpu_ns: t.on_cpu_ns,
                switches: u64::from(t.switches),
                last_exec: t.last_exec,
            });
        }

        let running: PerCpuArray<_, Running> =
            PerCpuArray::try_from(map(maps::RUNNING)?).map_err(err(maps::RUNNING))?;
        for r in running.get(&0, 0).map_err(err(maps::RUNNING))?.iter() {
            if r.tid != 0 {
                snap.running.push(RunningSample {
                    tid: r.tid,
                    tgid: r.tgid,
                    since_ns: r.since_ns,
                });
            }
        }
        snap.charge_from_tracking_start(&self.bases, thread_exec_ns);

        // A socket's calls are counted in `SOCK_STATE` (`SockState::io`: the first caller of
        // each direction) and in `SOCK_STATS` (the others, and those of sockets whose state
        // has ended): added up per key. Each map is read into a map by its own key first: a
        // walk whose current key the kernel deletes starts again from the first (entries
        // seen twice are kept once).
        type Key = (u32, u32, u64, u32);
        let mut shared: BTreeMap<Key, SockStats> = BTreeMap::new();
        let socks: PerCpuHashMap<_, SockKey, SockStats> =
            PerCpuHashMap::try_from(map(maps::SOCK_STATS)?).map_err(err(maps::SOCK_STATS))?;
        for entry in socks.iter() {
            let (key, per_cpu) = entry.map_err(err(maps::SOCK_STATS))?;
            let mut sum = SockStats::default();
            for v in per_cpu.iter() {
                sum.add(v);
            }
            shared.insert((key.tgid, key.fd, key.ino, key.kind), sum);
        }
        let mut owned: BTreeMap<u64, [SockIo; 2]> = BTreeMap::new();
        let states: HashMap<_, u64, SockState> =
            HashMap::try_from(map(maps::SOCK_STATE)?).map_err(err(maps::SOCK_STATE))?;
        for entry in states.iter() {
            let (ino, state) = entry.map_err(err(maps::SOCK_STATE))?;
            if state.io.iter().any(|io| io.kind != 0) {
                owned.insert(ino, state.io);
            }
        }
        let mut by_key = shared;
        for (ino, ios) in &owned {
            for io in ios {
                if let Some(key) = io.key(*ino) {
                    by_key
                        .entry((key.tgid, key.fd, key.ino, key.kind))
                        .or_default()
                        .add(&io.stats);
                }
            }
        }
        for ((tgid, fd, ino, kind), v) in by_key {
            let Some(kind) = SyscallKind::from_u32(kind) else {
                continue;
            };
            snap.sockets.push(SocketSample {
                tgid,
                fd,
                ino,
                kind,
                calls: v.calls,
                bytes: v.bytes,
                errors: v.errors,
                ns: v.ns,
            });
        }

        let hop_counts: PerCpuHashMap<_, u32, HopCounts> =
            PerCpuHashMap::try_from(map(maps::HOP_COUNTS)?).map_err(err(maps::HOP_COUNTS))?;
        for entry in hop_counts.iter() {
            let (tgid, per_cpu) = entry.map_err(err(maps::HOP_COUNTS))?;
            let c = HopCounts::sum(per_cpu.iter());
            snap.pairing.insert(tgid, c);
        }

        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(map(maps::COUNTERS)?).map_err(err(maps::COUNTERS))?;
        for c in Counter::ALL {
            let total: u64 = counters
                .get(&(c as u32), 0)
                .map_err(err(maps::COUNTERS))?
                .iter()
                .sum();
            match c {
                Counter::RingbufDropped => snap.loss.ringbuf_dropped = total,
                Counter::MapInsertFailed => snap.loss.map_insert_failed = total,
                Counter::KernelReadFailed => snap.loss.kernel_read_failed = total,
                Counter::SwitchInMissed => snap.loss.switch_in_missed = total,
                Counter::StateEvicted => snap.loss.state_evicted = total,
                Counter::H2WalkLost => snap.loss.h2_walk_lost = total,
                Counter::H2AnswersLost => snap.loss.h2_answers_lost = total,
                Counter::TlsHelloLost => snap.loss.tls_hello_lost = total,
            }
        }
        snap.loss.program_skipped = self.skipped_runs().unwrap_or(0);
        let _: &LossCounters = &snap.loss;
        Ok(snap)
    }

    /// Runs of the loaded programs the kernel skipped (a program already running on the CPU:
    /// `prog_info`), summed; `None` where the kernel does not count them (before 5.12).
    pub fn skipped_runs(&self) -> Option<u64> {
        let mut sum = None;
        for (_, p) in self.ebpf.programs() {
            let Ok(fd) = p.fd() else { continue };
            if let Some(n) = super::prog_info::recursion_misses(fd.as_fd()) {
                sum = Some(sum.unwrap_or(0) + n);
            }
        }
        sum
    }

    /// Takes the event ring buffer (once) for asynchronous reading.
    pub fn events(&mut self) -> Result<EventReader, ProbeError> {
        let map = self
            .ebpf
            .take_map(maps::EVENTS)
            .ok_or(ProbeError::MissingMap { map: maps::EVENTS })?;
        let ring = RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            map: maps::EVENTS,
            source,
        })?;
        // SAFETY: the ring buffer owns its map fd, which stays open and unchanged for as long
        // as the AsyncFd owns the ring buffer.
        let fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| ProbeError::RingBuf(e.into_parts().1))?;
        Ok(EventReader { fd, undecodable: 0 })
    }
}

/// Which hooks [`FloorProbes`] attaches its empty programs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloorHooks {
    /// `raw_syscalls/sys_enter` and `sys_exit` (raw tracepoints): the agent before 6.4.
    Raw,
    /// The 19 classic `syscalls/sys_{enter,exit}_*` tracepoints the agent used before.
    Classic,
    /// The socket tracepoints (raw) the agent uses on 6.4+ (`tcp_sendmsg_locked` where the
    /// kernel has it).
    Sock,
    /// The socket tracepoints and `tcp_probe`, each running the least body a per-connection
    /// message timer needs: a clock read and an update of the socket's hash entry.
    SockMin,
}

impl FloorHooks {
    /// The program and its attach targets.
    fn targets(self) -> (&'static str, Vec<String>) {
        match self {
            FloorHooks::Raw => ("smp_floor_raw", vec!["sys_enter".into(), "sys_exit".into()]),
            FloorHooks::Classic => {
                let mut t: Vec<String> = SyscallKind::ALL
                    .iter()
                    .flat_map(|k| ["enter", "exit"].map(|d| format!("sys_{d}_{}", k.name())))
                    .collect();
                t.extend(
                    ["sys_exit_accept4", "sys_exit_accept", "sys_enter_connect"].map(String::from),
                );
                ("smp_floor_tp", t)
            }
            FloorHooks::Sock => ("smp_floor_raw", sock_floor_targets(&[])),
            FloorHooks::SockMin => ("smp_floor_min", sock_floor_targets(&["tcp_probe"])),
        }
    }
}

/// The socket tracepoints the agent uses on 6.4+ that this kernel has, and `more`.
fn sock_floor_targets(more: &[&str]) -> Vec<String> {
    [
        "sock_send_length",
        "sock_recv_length",
        "inet_sock_set_state",
        "tcp_sendmsg_locked",
    ]
    .iter()
    .chain(more)
    .filter(|t| catalog::has_tracepoint(t))
    .map(|t| t.to_string())
    .collect()
}

/// Empty programs on the syscall hooks, for benchmarks: the cost of the hook mechanism alone
/// (the floor under any probe body). Detached when dropped.
pub struct FloorProbes {
    _ebpf: Ebpf,
    /// Attachments made.
    pub attached: usize,
}

impl FloorProbes {
    /// Loads the empty program of `hooks` and attaches it to each of its targets.
    pub fn load(hooks: FloorHooks) -> Result<FloorProbes, ProbeError> {
        let mut ebpf = open(&KernelOffsets::zeroed())?;
        let (program, targets) = hooks.targets();
        let attach_err = |target: &str, e: aya::programs::ProgramError| ProbeError::Attach {
            program,
            target: target.to_string(),
            hint: hint(&e),
        };
        let prog = ebpf
            .program_mut(program)
            .ok_or(ProbeError::MissingProgram { program })?;
        match hooks {
            FloorHooks::Raw | FloorHooks::Sock | FloorHooks::SockMin => {
                let p: &mut RawTracePoint = prog.try_into().map_err(|e| attach_err("", e))?;
                p.load().map_err(|e| attach_err("", e))?;
                for t in &targets {
                    p.attach(t).map_err(|e| attach_err(t, e))?;
                }
            }
            FloorHooks::Classic => {
                let p: &mut TracePoint = prog.try_into().map_err(|e| attach_err("", e))?;
                p.load().map_err(|e| attach_err("", e))?;
                for t in &targets {
                    p.attach("syscalls", t).map_err(|e| attach_err(t, e))?;
                }
            }
        }
        Ok(FloorProbes {
            _ebpf: ebpf,
            attached: targets.len(),
        })
    }
}

/// Reads [`ProbeEvent`]s from the ring buffer as they arrive.
pub struct EventReader {
    fd: AsyncFd<RingBuf<aya::maps::MapData>>,
    /// Records that could not be decoded (counted, never fatal).
    pub undecodable: u64,
}

impl EventReader {
    /// Waits for the next batch of events. Exchange records do not wake the reader (see
    /// `smp_common::event::EVENTS_WAKEUP_BYTES`): the ring is also drained every
    /// `EVENTS_POLL_MS`.
    pub async fn next_batch(&mut self) -> Result<Vec<ProbeEvent>, ProbeError> {
        let poll = std::time::Duration::from_millis(EVENTS_POLL_MS);
        loop {
            let out = match tokio::time::timeout(poll, self.fd.readable_mut()).await {
                Ok(guard) => {
                    let mut guard = guard.map_err(ProbeError::RingBuf)?;
                    let out = drain(guard.get_inner_mut(), &mut self.undecodable);
                    guard.clear_ready();
                    out
                }
                Err(_) => drain(self.fd.get_mut(), &mut self.undecodable),
            };
            if !out.is_empty() {
                return Ok(out);
            }
        }
    }

    /// The ring buffer's file descriptor (for diagnostics).
    pub fn raw_fd(&self) -> i32 {
        self.fd.get_ref().as_raw_fd()
    }
}

/// True when `tgid` runs a 32-bit ELF program (`/proc/<tgid>/exe`). Unreadable (gone, a
/// kernel thread): false.
fn runs_32bit_program(tgid: u32) -> bool {
    use std::io::Read as _;
    let mut ident = [0u8; 5];
    std::fs::File::open(format!("/proc/{tgid}/exe"))
        .and_then(|mut f| f.read_exact(&mut ident))
        .is_ok_and(|()| is_elf32(&ident))
}

/// `e_ident` says ELF, class `ELFCLASS32`.
fn is_elf32(ident: &[u8; 5]) -> bool {
    &ident[..4] == b"\x7fELF" && ident[4] == 1
}

/// Decodes every record waiting in the ring buffer.
fn drain(ring: &mut RingBuf<aya::maps::MapData>, undecodable: &mut u64) -> Vec<ProbeEvent> {
    let mut out = Vec::new();
    while let Some(item) = ring.next() {
        out.extend(decode_or_count(&item, undecodable));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_class_is_read_from_the_ident() {
        assert!(is_elf32(b"\x7fELF\x01"));
        assert!(!is_elf32(b"\x7fELF\x02"));
        assert!(!is_elf32(b"#!/bi"));
        // This test binary is 64-bit.
        assert!(!runs_32bit_program(std::process::id()));
    }
}
