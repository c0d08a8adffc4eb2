//! perf_event_open counters per proxy process: what Linux gives portably.
//!
//! * software events, available everywhere: `task-clock` (ns on CPU) and `context-switches`;
//! * hardware events, only where the PMU is exposed (bare metal, VMs with vPMU): `cycles` and
//!   `instructions`. Where they cannot be opened they are reported absent with the reason
//!   (`Absent { reason }`), never as 0.
//!
//! One counter per event per existing thread, opened with `inherit` + `inherit_thread`
//! (Linux ≥ 5.13): threads the proxy creates later are counted in their creator's counter,
//! but forked child *processes* are not (nginx workers are tracked as processes of their own by
//! discovery, so they would otherwise be counted twice). Counters include kernel time when
//! permitted (root / CAP_PERFMON / `perf_event_paranoid` ≤ 1) and fall back to user-only.
//! Hardware counts are scaled by `time_enabled / time_running` when the PMU multiplexes.
//! A thread created between listing `/proc/<pid>/task` and opening the counters is missed.

use std::{collections::BTreeMap, fmt, io};

use perf_event::{
    events::{Event, Hardware, Software},
    Builder, Counter,
};
use serde::Serialize;

use super::{procfs::ProcFs, ProcError};

/// The events counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PerfEvent {
    TaskClock,
    ContextSwitches,
    Cycles,
    Instructions,
}

impl PerfEvent {
    pub const ALL: [PerfEvent; 4] = [
        Self::TaskClock,
        Self::ContextSwitches,
        Self::Cycles,
        Self::Instructions,
    ];

    fn event(self) -> Event {
        match self {
            Self::TaskClock => Software::TASK_CLOCK.into(),
            Self::ContextSwitches => Software::CONTEXT_SWITCHES.into(),
            Self::Cycles => Hardware::CPU_CYCLES.into(),
            Self::Instructions => Hardware::INSTRUCTIONS.into(),
        }
    }

    pub fn is_hardware(self) -> bool {
        matches!(self, Self::Cycles | Self::Instructions)
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::TaskClock => "task-clock",
            Self::ContextSwitches => "context-switches",
            Self::Cycles => "cycles",
            Self::Instructions => "instructions",
        }
    }
}

impl fmt::Display for PerfEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A counter value, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PerfValue {
    Value(u64),
    Absent { reason: String },
}

impl PerfValue {
    pub fn value(&self) -> Option<u64> {
        match self {
            Self::Value(v) => Some(*v),
            Self::Absent { .. } => None,
        }
    }
}

/// Readings of all events of one process or proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PerfReading {
    /// Nanoseconds on CPU (task-clock).
    pub task_clock_ns: PerfValue,
    pub context_switches: PerfValue,
    pub cycles: PerfValue,
    pub instructions: PerfValue,
    /// Threads with counters.
    pub threads: usize,
    /// True when counters could only count user space (kernel excluded).
    pub user_only: bool,
}

impl PerfReading {
    pub fn get(&self, e: PerfEvent) -> &PerfValue {
        match e {
            PerfEvent::TaskClock => &self.task_clock_ns,
            PerfEvent::ContextSwitches => &self.context_switches,
            PerfEvent::Cycles => &self.cycles,
            PerfEvent::Instructions => &self.instructions,
        }
    }

    /// Instructions per cycle when both hardware counters are present.
    pub fn ipc(&self) -> Option<f64> {
        let c = self.cycles.value().filter(|c| *c > 0)?;
        Some(self.instructions.value()? as f64 / c as f64)
    }

    /// Adds `other` into `self` (absent stays absent).
    fn merge(&mut self, other: &PerfReading) {
        for (mine, theirs) in [
            (&mut self.task_clock_ns, &other.task_clock_ns),
            (&mut self.context_switches, &other.context_switches),
            (&mut self.cycles, &other.cycles),
            (&mut self.instructions, &other.instructions),
        ] {
            *mine = match (&*mine, theirs) {
                (PerfValue::Value(a), PerfValue::Value(b)) => PerfValue::Value(a + b),
                (PerfValue::Absent { .. }, _) => mine.clone(),
                (_, absent) => absent.clone(),
            };
        }
        self.threads += other.threads;
        self.user_only |= other.user_only;
    }

    fn empty() -> Self {
        Self {
            task_clock_ns: PerfValue::Value(0),
            context_switches: PerfValue::Value(0),
            cycles: PerfValue::Value(0),
            instructions: PerfValue::Value(0),
            threads: 0,
            user_only: false,
        }
    }
}

/// Why an event could not be opened, in words an operator can act on.
pub fn open_error_reason(event: PerfEvent, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::EOPNOTSUPP | libc::ENODEV) if event.is_hardware() => format!(
            "{event}: no hardware PMU exposed to this machine (perf_event_open: {e}); \
             typical of VMs without a virtual PMU"
        ),
        Some(libc::EACCES | libc::EPERM) => format!(
            "{event}: not permitted (perf_event_open: {e}); needs CAP_PERFMON or \
             kernel.perf_event_paranoid <= 1"
        ),
        Some(libc::ESRCH) => format!("{event}: process gone"),
        Some(libc::EMFILE | libc::ENFILE) => format!("{event}: out of file descriptors ({e})"),
        _ => format!("{event}: perf_event_open failed: {e}"),
    }
}

fn open_one(event: PerfEvent, tid: u32, kernel: bool, inherit_thread: bool) -> io::Result<Counter> {
    let pid = i32::try_from(tid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    let mut b = Builder::new()
        .kind(event.event())
        .observe_pid(pid)
        .any_cpu();
    b.inherit(true);
    b.inherit_thread(inherit_thread);
    b.exclude_kernel(!kernel);
    let mut c = b.build()?;
    c.enable()?;
    Ok(c)
}

/// Counters of one process.
#[derive(Debug)]
pub struct ProcessPerf {
    pub tgid: u32,
    counters: BTreeMap<PerfEvent, Result<Vec<Counter>, String>>,
    threads: usize,
    user_only: bool,
}

impl ProcessPerf {
    /// Opens every event on every current thread of `tgid`. Fails only if the process cannot be
    /// read at all; events that cannot be opened are recorded as absent.
    pub fn open(procfs: &ProcFs, tgid: u32) -> Result<Self, ProcError> {
        let tids = procfs.threads(tgid)?;
        let mut counters = BTreeMap::new();
        let mut kernel = true;
        let mut inherit_thread = true;
        let mut user_only = false;
        for event in PerfEvent::ALL {
            let mut opened = Vec::with_capacity(tids.len());
            let mut failure: Option<String> = None;
            for &tid in &tids {
                let mut attempt = open_one(event, tid, kernel, inherit_thread);
                if let Err(e) = &attempt {
                    match e.raw_os_error() {
                        // Unprivileged: count user space only.
                        Some(libc::EACCES | libc::EPERM) if kernel => {
                            kernel = false;
                            user_only = true;
                            attempt = open_one(event, tid, kernel, inherit_thread);
                        }
                        // Kernel < 5.13 has no inherit_thread.
                        Some(libc::EINVAL | libc::E2BIG) if inherit_thread => {
                            inherit_thread = false;
                            attempt = open_one(event, tid, kernel, inherit_thread);
                        }
                        _ => {}
                    }
                }
                match attempt {
                    Ok(c) => opened.push(c),
                    // A thread that exited since the listing: skip it.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => {
                        failure = Some(open_error_reason(event, &e));
                        break;
                    }
                }
            }
            if opened.is_empty() && failure.is_none() {
                return Err(ProcError::Gone { pid: tgid });
            }
            counters.insert(
                event,
                match failure {
                    Some(reason) => Err(reason),
                    None => Ok(opened),
                },
            );
        }
        Ok(Self {
            tgid,
            counters,
            threads: tids.len(),
            user_only,
        })
    }

    /// Current cumulative values since `open`. Counters of exited threads keep their final
    /// value, so readings never go backwards.
    pub fn read(&mut self) -> PerfReading {
        let mut r = PerfReading::empty();
        r.threads = self.threads;
        r.user_only = self.user_only;
        for (event, counters) in &mut self.counters {
            let value = match counters {
                Err(reason) => PerfValue::Absent {
                    reason: reason.clone(),
                },
                Ok(cs) => {
                    let mut sum: u64 = 0;
                    let mut failed = None;
                    for c in cs.iter_mut() {
                        match c.read_count_and_time() {
                            Ok(ct) => sum += scaled(ct.count, ct.time_enabled, ct.time_running),
                            Err(e) => failed = Some(e),
                        }
                    }
                    match failed {
                        Some(e) if sum == 0 => PerfValue::Absent {
                            reason: format!("{event}: read failed: {e}"),
                        },
                        _ => PerfValue::Value(sum),
                    }
                }
            };
            match event {
                PerfEvent::TaskClock => r.task_clock_ns = value,
                PerfEvent::ContextSwitches => r.context_switches = value,
                PerfEvent::Cycles => r.cycles = value,
                PerfEvent::Instructions => r.instructions = value,
            }
        }
        r
    }
}

/// Scales a multiplexed count to the full enabled time.
pub fn scaled(count: u64, enabled: u64, running: u64) -> u64 {
    if running == 0 || running >= enabled {
        return count;
    }
    u64::try_from(u128::from(count) * u128::from(enabled) / u128::from(running)).unwrap_or(u64::MAX)
}

/// Counters of one proxy: the sum over its processes. Exited processes stay until
/// [`ProxyPerf::forget`], so the sum never goes backwards.
#[derive(Debug, Default)]
pub struct ProxyPerf {
    procs: BTreeMap<u32, ProcessPerf>,
}

impl ProxyPerf {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts counting `tgid` (no-op if already counted).
    pub fn add_process(&mut self, procfs: &ProcFs, tgid: u32) -> Result<(), ProcError> {
        if let std::collections::btree_map::Entry::Vacant(slot) = self.procs.entry(tgid) {
            slot.insert(ProcessPerf::open(procfs, tgid)?);
        }
        Ok(())
    }

    /// Closes the counters of `tgid` (its counts leave the sum).
    pub fn forget(&mut self, tgid: u32) {
        self.procs.remove(&tgid);
    }

    pub fn read(&mut self) -> PerfReading {
        let mut total = PerfReading::empty();
        for p in self.procs.values_mut() {
            total.merge(&p.read());
        }
        total
    }
}

/// What this machine offers: each event opened on the calling thread, `Ok` or the reason.
pub fn probe_support() -> BTreeMap<PerfEvent, Result<(), String>> {
    PerfEvent::ALL
        .into_iter()
        .map(|e| {
            let r = open_one(e, 0, true, true)
                .or_else(|_| open_one(e, 0, false, false))
                .map(|_| ())
                .map_err(|err| open_error_reason(e, &err));
            (e, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling() {
        assert_eq!(scaled(100, 10, 10), 100);
        assert_eq!(scaled(100, 10, 5), 200);
        assert_eq!(scaled(100, 10, 0), 100);
        assert_eq!(scaled(u64::MAX, 10, 1), u64::MAX);
    }

    #[test]
    fn merge_keeps_absence() {
        let mut a = PerfReading::empty();
        let mut b = PerfReading::empty();
        b.task_clock_ns = PerfValue::Value(5);
        b.cycles = PerfValue::Absent {
            reason: "no pmu".into(),
        };
        b.threads = 3;
        a.merge(&b);
        a.merge(&b);
        assert_eq!(a.task_clock_ns, PerfValue::Value(10));
        assert_eq!(a.cycles.value(), None);
        assert_eq!(a.threads, 6);
        assert_eq!(a.ipc(), None);
    }

    #[test]
    fn reasons_are_actionable() {
        let r = open_error_reason(
            PerfEvent::Cycles,
            &io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert!(r.contains("no hardware PMU"), "{r}");
        let r = open_error_reason(
            PerfEvent::TaskClock,
            &io::Error::from_raw_os_error(libc::EACCES),
        );
        assert!(r.contains("CAP_PERFMON"), "{r}");
    }

    /// Opens counters on this test process; software events must work wherever
    /// perf_event_open is allowed (skips when it is not).
    #[test]
    fn counts_self() {
        let support = probe_support();
        if support[&PerfEvent::TaskClock].is_err() {
            eprintln!("skipping: {:?}", support[&PerfEvent::TaskClock]);
            return;
        }
        let procfs = ProcFs::default();
        let mut p = ProxyPerf::new();
        p.add_process(&procfs, std::process::id()).unwrap();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let r = p.read();
        assert!(r.task_clock_ns.value().unwrap() >= 10_000_000, "{r:?}");
        assert!(r.context_switches.value().is_some());
        for e in [PerfEvent::Cycles, PerfEvent::Instructions] {
            match (&support[&e], r.get(e)) {
                (Ok(()), v) => assert!(v.value().is_some(), "{e}: {v:?}"),
                (Err(_), v) => assert!(matches!(v, PerfValue::Absent { .. }), "{e}: {v:?}"),
            }
        }
    }
}
