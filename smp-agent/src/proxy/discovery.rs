//! Sidecar discovery: which processes are proxies, which proxy each belongs to, and following
//! them live as they start, restart and exit.
//!
//! * [`classify`] is pure: one [`ProcessSnapshot`] + a [`DiscoveryConfig`] → `Option<ProxyMatch>`.
//! * [`Discovery`] is the state machine. It is fed [`ProcEvent`]s (exec/exit/fork from the probe
//!   layer) and periodic [`Discovery::rescan`]s (the procfs safety net), reads processes through
//!   a [`ProcSource`] (procfs in production, a fake in tests) and emits [`ProxyChange`]s.
//!
//! # What a proxy is
//! A *proxy* is one logical sidecar: a leader process plus the processes it forked that match
//! the same kind (nginx master + workers, haproxy master-worker). Envoy and linkerd2-proxy are one
//! process each. A matched process whose parent is a tracked process of the same kind joins the
//! parent's proxy as a [`ProcessRole::Worker`]; otherwise it leads a proxy of its own.
//!
//! # Identity
//! [`ProxyId`] = (kind, scope, fingerprint), computed from the *leader* only:
//! * scope: the pod UID when the cgroup path names a pod (a restarted container gets a new
//!   container ID but keeps the pod), else the container ID, else the cgroup path;
//! * fingerprint: FNV-1a 64 of the leader's arguments after argv\[0\], whitespace-normalised, with
//!   nginx's process-title prefix and restart-varying flags (envoy `--restart-epoch N`, haproxy
//!   `-sf/-st <pids>`) removed.
//!
//! So a proxy killed and restarted with the same command line in the same pod/container/cgroup
//! gets the same `ProxyId` and its counters continue; the pid is *not* part of the identity.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Serialize;
use tokio::sync::mpsc;

use super::{
    cgroup::{attribute_proc_cgroup, CgroupAttribution},
    ProcError,
};

/// Proxy kinds and the default names (matched against the executable's basename and the comm)
/// live in one place, `proxy::kind`.
pub use super::kind::{ProxyKind, DEFAULT_PROXY_NAMES};
/// Default exclusions: processes that sit in sidecar containers but do not proxy traffic.
pub const DEFAULT_EXCLUDED_NAMES: &[&str] = &["pilot-agent"];

/// How many times [`Discovery::retry_pending`] retries a process whose command line is empty.
pub const MAX_SETTLE_RETRIES: u32 = 20;

/// Interpreters: a script named `envoy` runs as `python3` with comm `envoy`; it is a wrapper,
/// not the proxy, so a comm match is ignored when the executable is one of these.
const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "python", "python3", "node", "perl", "ruby", "env",
];

/// Everything discovery needs to know about one process (plain data, filled by [`ProcSource`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessSnapshot {
    pub pid: u32,
    pub ppid: u32,
    /// `/proc/<pid>/comm` (at most 15 bytes).
    pub comm: String,
    /// `/proc/<pid>/exe` target (`None` for kernel threads, zombies, or without permission).
    pub exe: Option<PathBuf>,
    /// `/proc/<pid>/cmdline`, split on NUL (empty for kernel threads).
    pub cmdline: Vec<String>,
    /// Raw text of `/proc/<pid>/cgroup` (empty when unknown).
    pub cgroup: String,
    /// Start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`); tells a reused pid
    /// from the process we tracked.
    pub start_time: u64,
}

impl ProcessSnapshot {
    /// Basename of the executable, with a trailing ` (deleted)` (binary replaced on disk) removed.
    pub fn exe_name(&self) -> Option<&str> {
        let exe = self.exe.as_deref()?.to_str()?;
        let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
        Path::new(exe).file_name()?.to_str()
    }
}

/// Which processes are proxies. Selectors are a union: a process is tracked if it matches any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveryConfig {
    /// Proxy names, matched against the executable basename or the comm.
    pub names: Vec<String>,
    /// Names never tracked by name/container/cgroup selection (explicit pids still are).
    pub exclude: Vec<String>,
    /// Explicit pids (`--pid`): tracked whatever their name.
    pub pids: Vec<u32>,
    /// Container ID prefixes (at least 12 hex characters are advisable): every non-excluded
    /// process in these containers is tracked.
    pub containers: Vec<String>,
    /// Pod UIDs (dashed or underscored form): every non-excluded process in these pods.
    pub pods: Vec<String>,
    /// Cgroup path prefixes: every non-excluded process under them.
    pub cgroups: Vec<String>,
    /// Absolute executable paths: a non-excluded process whose `/proc/<pid>/exe` is one of
    /// them (a comm cannot fake this; the kind is the file's name).
    pub exe_paths: Vec<PathBuf>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            names: DEFAULT_PROXY_NAMES.iter().map(|s| s.to_string()).collect(),
            exclude: DEFAULT_EXCLUDED_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            pids: Vec::new(),
            containers: Vec::new(),
            pods: Vec::new(),
            cgroups: Vec::new(),
            exe_paths: Vec::new(),
        }
    }
}

impl DiscoveryConfig {
    /// True when cgroup contents must be read to decide (container/pod/cgroup selectors).
    fn needs_cgroup(&self) -> bool {
        !(self.containers.is_empty() && self.pods.is_empty() && self.cgroups.is_empty())
    }

    /// Cheap pre-filter on pid/comm/exe only: could `classify` match this process?
    pub fn might_match(&self, snap: &ProcessSnapshot) -> bool {
        self.needs_cgroup()
            || self.pids.contains(&snap.pid)
            || exe_match(snap, self).is_some()
            || name_match(snap, self).is_some()
    }
}

/// Why a process was selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchReason {
    Name,
    Exe,
    Pid,
    Container,
    Pod,
    Cgroup,
}

/// Leader of a proxy, or a worker forked by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessRole {
    Leader,
    Worker,
}

/// The result of [`classify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyMatch {
    pub kind: ProxyKind,
    pub reason: MatchReason,
    /// What the process looks like on its own (an nginx `worker process` title says `Worker`);
    /// [`Discovery`] decides the final role from the parent.
    pub role_hint: ProcessRole,
    pub attribution: CgroupAttribution,
    /// The identity this process would have as a leader.
    pub identity: ProxyId,
}

/// Where a proxy lives, the stable part of its identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyScope {
    /// Kubernetes pod UID.
    Pod(String),
    /// Container ID outside Kubernetes.
    Container(String),
    /// Host cgroup path (`/system.slice/nginx.service`).
    Cgroup(String),
}

impl fmt::Display for ProxyScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pod(uid) => write!(f, "pod:{uid}"),
            Self::Container(id) => write!(f, "container:{}", &id[..id.len().min(12)]),
            Self::Cgroup(p) => write!(f, "cgroup:{p}"),
        }
    }
}

/// Stable identity of a proxy across restarts (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ProxyId {
    pub kind: ProxyKind,
    pub scope: ProxyScope,
    /// FNV-1a 64 of the normalised arguments.
    pub fingerprint: u64,
}

impl ProxyId {
    /// Builds the identity a leader process would have.
    pub fn for_leader(
        kind: ProxyKind,
        attribution: &CgroupAttribution,
        cmdline: &[String],
    ) -> Self {
        let scope = if let Some(uid) = &attribution.pod_uid {
            ProxyScope::Pod(uid.clone())
        } else if let Some(id) = &attribution.container_id {
            ProxyScope::Container(id.clone())
        } else {
            ProxyScope::Cgroup(attribution.path.clone())
        };
        let fingerprint = fnv1a(normalised_args(&kind, cmdline).as_bytes());
        Self {
            kind,
            scope,
            fingerprint,
        }
    }
}

impl fmt::Display for ProxyId {
    /// `nginx@pod:<uid>#1a2b3c4d`: short, stable, usable as a label value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}@{}#{:08x}",
            self.kind,
            self.scope,
            self.fingerprint >> 32
        )
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Arguments after argv\[0\], one space between tokens, restart-varying parts removed.
fn normalised_args(kind: &ProxyKind, cmdline: &[String]) -> String {
    let joined = cmdline.join(" ");
    let mut s = joined.as_str();
    // nginx rewrites its argv into one title string: "nginx: master process /usr/sbin/nginx -c …".
    if let Some(rest) = s.strip_prefix("nginx: master process ") {
        s = rest;
    }
    let mut tokens = s.split_whitespace();
    let _argv0 = tokens.next();
    let mut out: Vec<&str> = Vec::new();
    let mut tokens = tokens.peekable();
    while let Some(t) = tokens.next() {
        match (kind, t) {
            // nginx: only the prefix and config file name the instance. The rest of its
            // command line is unreliable while the master rewrites it into its process title.
            (ProxyKind::Nginx, "-c" | "-p") => {
                out.push(t);
                out.extend(tokens.next());
            }
            (ProxyKind::Nginx, _) => {}
            (ProxyKind::Envoy, "--restart-epoch") => {
                tokens.next();
            }
            (ProxyKind::Envoy, t) if t.starts_with("--restart-epoch=") => {}
            (ProxyKind::Haproxy, "-sf" | "-st") => {
                while tokens
                    .peek()
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
                {
                    tokens.next();
                }
            }
            _ => out.push(t),
        }
    }
    out.join(" ")
}

/// The configured executable path this process runs, if any (a binary replaced on disk, shown
/// as `path (deleted)`, still matches).
fn exe_match<'c>(snap: &ProcessSnapshot, cfg: &'c DiscoveryConfig) -> Option<&'c Path> {
    if cfg.exe_paths.is_empty() {
        return None;
    }
    let exe = snap.exe.as_deref()?.to_str()?;
    let exe = Path::new(exe.strip_suffix(" (deleted)").unwrap_or(exe));
    cfg.exe_paths
        .iter()
        .find(|p| p.as_path() == exe)
        .map(PathBuf::as_path)
}

/// The configured name this process matches, if any.
fn name_match<'c>(snap: &ProcessSnapshot, names_of: &'c DiscoveryConfig) -> Option<&'c str> {
    matching_name(snap, &names_of.names)
}

fn matching_name<'n>(snap: &ProcessSnapshot, names: &'n [String]) -> Option<&'n str> {
    let exe = snap.exe_name();
    let interpreter = exe.is_some_and(|e| {
        INTERPRETERS.contains(&e)
            || (e.starts_with("python") && e[6..].bytes().all(|b| b.is_ascii_digit() || b == b'.'))
    });
    names
        .iter()
        .find(|n| exe == Some(n.as_str()) || (!interpreter && comm_matches(&snap.comm, n)))
        .map(String::as_str)
}

/// comm is the first 15 bytes of the name.
fn comm_matches(comm: &str, name: &str) -> bool {
    !comm.is_empty() && (comm == name || (comm.len() == 15 && name.starts_with(comm)))
}

fn role_hint(kind: &ProxyKind, snap: &ProcessSnapshot) -> ProcessRole {
    let title = snap.cmdline.first().map(String::as_str).unwrap_or("");
    match kind {
        ProxyKind::Nginx
            if title.starts_with("nginx: worker process")
                || title.starts_with("nginx: cache manager process")
                || title.starts_with("nginx: cache loader process") =>
        {
            ProcessRole::Worker
        }
        _ => ProcessRole::Leader,
    }
}

/// Decides whether one process is a proxy (pure).
///
/// Kernel threads (no exe and no cmdline) are never matched except by explicit pid.
pub fn classify(snap: &ProcessSnapshot, cfg: &DiscoveryConfig) -> Option<ProxyMatch> {
    let explicit = cfg.pids.contains(&snap.pid);
    let kernel_thread = snap.exe.is_none() && snap.cmdline.is_empty();
    if kernel_thread && !explicit {
        return None;
    }
    if !explicit && matching_name(snap, &cfg.exclude).is_some() {
        return None;
    }
    let by_name = name_match(snap, cfg);
    if by_name.is_some_and(|n| is_control_invocation(n, &snap.cmdline)) {
        return None;
    }
    let by_exe = exe_match(snap, cfg);
    let attribution = attribute_proc_cgroup(&snap.cgroup);
    let reason = if explicit {
        MatchReason::Pid
    } else if by_exe.is_some() {
        MatchReason::Exe
    } else if by_name.is_some() {
        MatchReason::Name
    } else if cfg.containers.iter().any(|c| {
        !c.is_empty()
            && attribution
                .container_id
                .as_deref()
                .is_some_and(|id| id.starts_with(&c.to_ascii_lowercase()))
    }) {
        MatchReason::Container
    } else if cfg.pods.iter().any(|p| {
        attribution
            .pod_uid
            .as_deref()
            .is_some_and(|uid| uid == p.to_ascii_lowercase().replace('_', "-"))
    }) {
        MatchReason::Pod
    } else if cfg
        .cgroups
        .iter()
        .any(|prefix| !prefix.is_empty() && cgroup_under(&snap.cgroup, prefix))
    {
        MatchReason::Cgroup
    } else {
        return None;
    };
    let exe_name = by_exe.and_then(|p| p.file_name()?.to_str());
    let kind = match by_name.or(exe_name) {
        Some(n) => ProxyKind::from_name(n),
        None => ProxyKind::Other(if snap.comm.is_empty() {
            format!("pid{}", snap.pid)
        } else {
            snap.comm.clone()
        }),
    };
    let identity = ProxyId::for_leader(kind.clone(), &attribution, &snap.cmdline);
    Some(ProxyMatch {
        role_hint: role_hint(&kind, snap),
        kind,
        reason,
        attribution,
        identity,
    })
}

/// `nginx -s reload`, `nginx -t`, `envoy --version`, `haproxy -c`: short-lived control or check
/// runs of a proxy binary, not proxies (nginx's identity only looks at `-c`, so `nginx -t -c
/// same.conf` would otherwise join the running proxy).
fn is_control_invocation(name: &str, cmdline: &[String]) -> bool {
    // A process title ("nginx: master process …") is one string: split it too.
    let tokens = || cmdline.iter().flat_map(|a| a.split_whitespace()).skip(1);
    match name {
        "nginx" if cmdline.first().is_some_and(|a| a.starts_with("nginx: ")) => false,
        _ => ProxyKind::from_name(name)
            .known()
            .is_some_and(|k| tokens().any(|t| k.control_args.contains(&t))),
    }
}

/// Is any of the process's cgroup paths equal to or below `prefix`?
fn cgroup_under(contents: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    contents
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .any(|p| {
            p == prefix
                || (p.starts_with(prefix) && p[prefix.len()..].starts_with('/'))
                || prefix.is_empty()
        })
}

/// A process event from the probe layer (sched_process_exec / sched_process_exit /
/// sched_process_fork tracepoints). Send process-level events only (pid == tgid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// A process called execve: `pid` now runs a new program.
    Exec { pid: u32 },
    /// A process exited.
    Exit { pid: u32 },
    /// Optional: a new process (not thread) was forked. Lets nginx/haproxy workers join their
    /// proxy at once; without it they are found by the next rescan.
    Fork { parent: u32, pid: u32 },
}

/// A change in the set of tracked processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "change")]
pub enum ProxyChange {
    /// Start tracking `tgid` (add it to the probe's TARGETS map) as part of `proxy`.
    Added {
        proxy: ProxyId,
        tgid: u32,
        role: ProcessRole,
        /// True when this leader replaces earlier processes of the same proxy (a restart).
        restart: bool,
    },
    /// Stop tracking `tgid` (remove it from TARGETS). The proxy's counters stay.
    Removed { proxy: ProxyId, tgid: u32 },
}

/// Reads processes (procfs in production, see [`super::procfs::ProcFs`]).
pub trait ProcSource {
    /// Pids of all processes (not threads).
    fn pids(&mut self) -> Result<Vec<u32>, ProcError>;
    /// One process. With `full == false` only pid, ppid, comm, exe and start_time are filled
    /// (cmdline and cgroup left empty): enough for [`DiscoveryConfig::might_match`].
    fn snapshot(&mut self, pid: u32, full: bool) -> Result<ProcessSnapshot, ProcError>;
}

/// A proxy as discovery knows it: identity, attribution and its live processes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrackedProxy {
    pub id: ProxyId,
    pub kind: ProxyKind,
    pub attribution: CgroupAttribution,
    pub reason: MatchReason,
    /// Leader pid while one is alive.
    pub leader: Option<u32>,
    /// Live tgids (leader and workers).
    pub tgids: BTreeSet<u32>,
    /// Number of times a new leader took over after the old processes were gone.
    pub restarts: u32,
}

#[derive(Debug, Clone)]
struct TrackedProcess {
    proxy: ProxyId,
    start_time: u64,
    role: ProcessRole,
}

/// Counters about discovery itself (skips are normal: processes come and go).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiscoveryStats {
    pub rescans: u64,
    pub events: u64,
    /// Processes that vanished between listing and reading.
    pub skipped_gone: u64,
    /// Processes we were not allowed to read.
    pub skipped_permission: u64,
    /// Other read errors.
    pub skipped_error: u64,
    /// Rescans that could not list processes at all.
    pub failed_rescans: u64,
    /// Exec'd processes whose classification was retried because their command line was
    /// still empty.
    pub deferred: u64,
}

/// The live discovery state machine (see the module docs).
#[derive(Debug)]
pub struct Discovery<S> {
    cfg: DiscoveryConfig,
    source: S,
    procs: HashMap<u32, TrackedProcess>,
    proxies: BTreeMap<ProxyId, TrackedProxy>,
    /// Every tgid ever attributed to a proxy (for CPU attribution after exit).
    history: HashMap<u32, ProxyId>,
    /// Exec'd processes whose command line was not readable yet (the exec still finishing),
    /// with the number of retries so far.
    pending: BTreeMap<u32, u32>,
    stats: DiscoveryStats,
}

impl<S: ProcSource> Discovery<S> {
    pub fn new(cfg: DiscoveryConfig, source: S) -> Self {
        Self {
            cfg,
            source,
            procs: HashMap::new(),
            proxies: BTreeMap::new(),
            history: HashMap::new(),
            pending: BTreeMap::new(),
            stats: DiscoveryStats::default(),
        }
    }

    pub fn config(&self) -> &DiscoveryConfig {
        &self.cfg
    }

    pub fn stats(&self) -> DiscoveryStats {
        self.stats
    }

    /// All proxies ever seen, including those with no live process (kept so a restart
    /// continues under the same identity).
    pub fn proxies(&self) -> impl Iterator<Item = &TrackedProxy> {
        self.proxies.values()
    }

    pub fn proxy(&self, id: &ProxyId) -> Option<&TrackedProxy> {
        self.proxies.get(id)
    }

    /// The proxy a live tgid belongs to.
    pub fn proxy_of(&self, tgid: u32) -> Option<&ProxyId> {
        self.procs.get(&tgid).map(|p| &p.proxy)
    }

    /// Every tgid ever attributed, live or not, to its proxy: the mapping [`super::cpu`] needs.
    pub fn tgid_owners(&self) -> &HashMap<u32, ProxyId> {
        &self.history
    }

    /// Drops dead tgids from [`Discovery::tgid_owners`] (call after their CPU was reported,
    /// so the history does not grow without bound).
    pub fn forget_dead_tgids(&mut self) {
        let live = &self.procs;
        self.history.retain(|tgid, _| live.contains_key(tgid));
    }

    /// Live tgids (the probe's TARGETS set).
    pub fn live_tgids(&self) -> impl Iterator<Item = u32> + '_ {
        self.procs.keys().copied()
    }

    /// Applies one probe event.
    pub fn handle_event(&mut self, event: ProcEvent) -> Vec<ProxyChange> {
        self.stats.events += 1;
        let mut out = Vec::new();
        match event {
            ProcEvent::Exit { pid } => {
                self.pending.remove(&pid);
                self.remove(pid, &mut out);
            }
            ProcEvent::Exec { pid } | ProcEvent::Fork { pid, .. } => {
                self.pending.remove(&pid);
                self.reconsider(pid, 0, &mut out);
            }
        }
        out
    }

    /// Pids waiting for their command line to settle (see [`Discovery::retry_pending`]).
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Retries exec'd processes whose command line was still empty (call every ~50 ms while
    /// [`Discovery::has_pending`]; [`Discovery::run`] does). After
    /// [`MAX_SETTLE_RETRIES`] a process is classified as it is.
    pub fn retry_pending(&mut self) -> Vec<ProxyChange> {
        let mut out = Vec::new();
        let pending = std::mem::take(&mut self.pending);
        for (pid, tries) in pending {
            self.reconsider(pid, tries + 1, &mut out);
        }
        out
    }

    /// (Re)decides one process after exec/fork. An exec'd tracked process may have become
    /// something else; if it is still the same proxy, nothing changes.
    fn reconsider(&mut self, pid: u32, tries: u32, out: &mut Vec<ProxyChange>) {
        let Some(snap) = self.read(pid, true) else {
            self.remove(pid, out);
            return;
        };
        // Between the exec and the kernel setting up the new argv, cmdline reads empty.
        if snap.cmdline.is_empty() && snap.exe.is_some() && tries < MAX_SETTLE_RETRIES {
            self.stats.deferred += u64::from(tries == 0);
            self.pending.insert(pid, tries);
            return;
        }
        if let Some(t) = self.procs.get_mut(&pid) {
            let same = classify(&snap, &self.cfg).is_some_and(|m| {
                m.kind == t.proxy.kind && (t.role == ProcessRole::Worker || m.identity == t.proxy)
            });
            if same {
                t.start_time = snap.start_time;
                return;
            }
            self.remove(pid, out);
        }
        self.consider(&snap, out);
    }
    /// Full procfs pass: drops processes that are gone (or whose pid was reused) and adds
    /// matching processes the events missed.
    pub fn rescan(&mut self) -> Vec<ProxyChange> {
        self.stats.rescans += 1;
        let mut out = Vec::new();
        let pids = match self.source.pids() {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "discovery rescan: cannot list processes");
                self.stats.failed_rescans += 1;
                return out;
            }
        };
        let present: BTreeSet<u32> = pids.iter().copied().collect();
        let tracked: Vec<u32> = self.procs.keys().copied().collect();
        for pid in tracked {
            if !present.contains(&pid) {
                self.remove(pid, &mut out);
            }
        }
        // Read brief snapshots; keep full ones of the candidates.
        let mut candidates: BTreeMap<u32, ProcessSnapshot> = BTreeMap::new();
        for pid in pids {
            let Some(brief) = self.read(pid, false) else {
                if self.procs.contains_key(&pid) {
                    self.remove(pid, &mut out);
                }
                continue;
            };
            if let Some(t) = self.procs.get(&pid) {
                if t.start_time == brief.start_time {
                    continue;
                }
                // pid reused: the process we tracked is gone.
                self.remove(pid, &mut out);
            }
            if self.pending.contains_key(&pid) || !self.cfg.might_match(&brief) {
                continue;
            }
            if let Some(full) = self.read(pid, true) {
                candidates.insert(pid, full);
            }
        }
        // Parents before children, so workers find their leader.
        let by_pid: HashMap<u32, ProcessSnapshot> =
            candidates.iter().map(|(p, s)| (*p, s.clone())).collect();
        let mut order: Vec<u32> = candidates.keys().copied().collect();
        order.sort_by_key(|p| depth_within(*p, &by_pid));
        for pid in order {
            if let Some(snap) = candidates.get(&pid) {
                self.consider(snap, &mut out);
            }
        }
        out
    }

    /// Drives discovery: applies events as they arrive and rescans every `rescan_every`,
    /// sending changes to `changes`. Returns when `changes` is closed. When `events` closes,
    /// rescans go on alone.
    pub async fn run(
        &mut self,
        mut events: mpsc::Receiver<ProcEvent>,
        changes: mpsc::Sender<ProxyChange>,
        rescan_every: Duration,
    ) {
        let mut tick = tokio::time::interval(rescan_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut events_open = true;
        let mut settle = tokio::time::interval(Duration::from_millis(50));
        loop {
            let batch = tokio::select! {
                ev = events.recv(), if events_open => match ev {
                    Some(ev) => self.handle_event(ev),
                    None => { events_open = false; Vec::new() }
                },
                _ = tick.tick() => self.rescan(),
                _ = settle.tick(), if self.has_pending() => self.retry_pending(),
                () = changes.closed() => return,
            };
            for change in batch {
                if changes.send(change).await.is_err() {
                    return;
                }
            }
        }
    }

    fn read(&mut self, pid: u32, full: bool) -> Option<ProcessSnapshot> {
        match self.source.snapshot(pid, full) {
            Ok(s) => Some(s),
            Err(ProcError::Gone { .. }) => {
                self.stats.skipped_gone += 1;
                None
            }
            Err(ProcError::PermissionDenied { .. }) => {
                self.stats.skipped_permission += 1;
                None
            }
            Err(e) => {
                tracing::debug!(pid, error = %e, "discovery: skipping process");
                self.stats.skipped_error += 1;
                None
            }
        }
    }

    fn consider(&mut self, snap: &ProcessSnapshot, out: &mut Vec<ProxyChange>) {
        if self.procs.contains_key(&snap.pid) {
            return;
        }
        let Some(m) = classify(snap, &self.cfg) else {
            return;
        };
        // Join the parent's proxy if the parent is a tracked process of the same kind.
        let parent_proxy = self
            .procs
            .get(&snap.ppid)
            .map(|p| p.proxy.clone())
            .filter(|id| id.kind == m.kind);
        let (id, role) = match parent_proxy {
            Some(id) => (id, ProcessRole::Worker),
            // An orphaned worker (its master not tracked) leads a proxy of its own.
            None => (m.identity.clone(), ProcessRole::Leader),
        };
        let known = self.proxies.contains_key(&id);
        let entry = self
            .proxies
            .entry(id.clone())
            .or_insert_with(|| TrackedProxy {
                id: id.clone(),
                kind: m.kind.clone(),
                attribution: m.attribution.clone(),
                reason: m.reason,
                leader: None,
                tgids: BTreeSet::new(),
                restarts: 0,
            });
        let mut restart = false;
        if role == ProcessRole::Leader {
            // A known proxy with no live process had processes before: this is a restart.
            if known && entry.tgids.is_empty() {
                entry.restarts += 1;
                restart = true;
            }
            if entry.leader.is_none() {
                entry.leader = Some(snap.pid);
            }
            entry.attribution = m.attribution.clone();
        }
        entry.tgids.insert(snap.pid);
        self.procs.insert(
            snap.pid,
            TrackedProcess {
                proxy: id.clone(),
                start_time: snap.start_time,
                role,
            },
        );
        self.history.insert(snap.pid, id.clone());
        tracing::debug!(pid = snap.pid, proxy = %id, ?role, restart, "proxy process added");
        out.push(ProxyChange::Added {
            proxy: id,
            tgid: snap.pid,
            role,
            restart,
        });
    }

    fn remove(&mut self, pid: u32, out: &mut Vec<ProxyChange>) {
        let Some(t) = self.procs.remove(&pid) else {
            return;
        };
        if let Some(p) = self.proxies.get_mut(&t.proxy) {
            p.tgids.remove(&pid);
            if p.leader == Some(pid) {
                // A surviving worker does not become leader; the next leader is a new process.
                p.leader = None;
            }
        }
        tracing::debug!(pid, proxy = %t.proxy, role = ?t.role, "proxy process removed");
        out.push(ProxyChange::Removed {
            proxy: t.proxy,
            tgid: pid,
        });
    }
}

/// Number of ancestors of `pid` inside `batch` (parents sort first).
fn depth_within(pid: u32, batch: &HashMap<u32, ProcessSnapshot>) -> usize {
    let mut depth = 0;
    let mut cur = pid;
    while let Some(s) = batch.get(&cur) {
        if s.ppid == cur || depth > batch.len() {
            break;
        }
        cur = s.ppid;
        depth += 1;
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID_: &str = "1c2a3b4d_5e6f_4a1b_9c8d_0123456789ab";
    const UID: &str = "1c2a3b4d-5e6f-4a1b-9c8d-0123456789ab";

    fn snap(pid: u32, ppid: u32, comm: &str, exe: &str, cmdline: &[&str]) -> ProcessSnapshot {
        ProcessSnapshot {
            pid,
            ppid,
            comm: comm.into(),
            exe: (!exe.is_empty()).then(|| PathBuf::from(exe)),
            cmdline: cmdline.iter().map(|s| s.to_string()).collect(),
            cgroup: "0::/system.slice/test.service\n".into(),
            start_time: u64::from(pid) * 10,
        }
    }

    fn in_pod(mut s: ProcessSnapshot, cid: &str) -> ProcessSnapshot {
        s.cgroup = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{cid}.scope\n"
        );
        s
    }

    /// Issue 17 item 8: with executable-path selectors (and no names), a process that calls
    /// itself `envoy` is not followed; the real binary is, also after it was replaced on disk.
    #[test]
    fn exe_path_selectors_cannot_be_spoofed_by_comm() {
        let cfg = DiscoveryConfig {
            names: Vec::new(),
            exe_paths: vec![PathBuf::from("/usr/local/bin/envoy")],
            ..DiscoveryConfig::default()
        };
        let real = snap(
            10,
            1,
            "envoy",
            "/usr/local/bin/envoy",
            &["envoy", "-c", "x"],
        );
        let m = classify(&real, &cfg).unwrap();
        assert_eq!((m.kind, m.reason), (ProxyKind::Envoy, MatchReason::Exe));
        assert!(cfg.might_match(&real));
        let upgraded = snap(11, 1, "envoy", "/usr/local/bin/envoy (deleted)", &["envoy"]);
        assert_eq!(classify(&upgraded, &cfg).unwrap().reason, MatchReason::Exe);
        // Any process can set its comm (prctl) or be a copy elsewhere named envoy.
        let spoof = snap(12, 1, "envoy", "/tmp/miner", &["miner"]);
        assert!(classify(&spoof, &cfg).is_none());
        assert!(!cfg.might_match(&spoof));
        let copy = snap(13, 1, "envoy", "/tmp/envoy", &["envoy"]);
        assert!(classify(&copy, &cfg).is_none());
        // With the default names the spoofer would have been taken.
        assert!(classify(&spoof, &DiscoveryConfig::default()).is_some());
        // Exclusions still apply; a custom binary's kind is its file name.
        let custom = DiscoveryConfig {
            names: Vec::new(),
            exe_paths: vec![PathBuf::from("/opt/edge/bin/edge-proxy")],
            exclude: vec!["edge-proxy".into()],
            ..DiscoveryConfig::default()
        };
        let edge = snap(
            14,
            1,
            "edge-proxy",
            "/opt/edge/bin/edge-proxy",
            &["edge-proxy"],
        );
        assert!(classify(&edge, &custom).is_none());
        let custom = DiscoveryConfig {
            exclude: Vec::new(),
            ..custom
        };
        assert_eq!(
            classify(&edge, &custom).unwrap().kind,
            ProxyKind::Other("edge-proxy".into())
        );
    }

    #[test]
    fn classify_by_name_exe_and_comm() {
        let cfg = DiscoveryConfig::default();
        let envoy = snap(
            10,
            1,
            "envoy",
            "/usr/local/bin/envoy",
            &["envoy", "-c", "/etc/envoy.yaml"],
        );
        assert_eq!(classify(&envoy, &cfg).unwrap().kind, ProxyKind::Envoy);
        // PyPI wheel layout.
        let wheel = snap(
            11,
            1,
            "envoy",
            "/venv/lib/python3.11/site-packages/envoy/_bin/envoy",
            &["envoy"],
        );
        assert_eq!(classify(&wheel, &cfg).unwrap().reason, MatchReason::Name);
        let l5d = snap(
            12,
            1,
            "linkerd2-proxy",
            "/usr/lib/linkerd/linkerd2-proxy",
            &["/usr/lib/linkerd/linkerd2-proxy"],
        );
        assert_eq!(classify(&l5d, &cfg).unwrap().kind, ProxyKind::Linkerd2Proxy);
        // Replaced binary.
        let deleted = snap(
            13,
            1,
            "haproxy",
            "/usr/sbin/haproxy (deleted)",
            &["haproxy", "-f", "x"],
        );
        assert_eq!(classify(&deleted, &cfg).unwrap().kind, ProxyKind::Haproxy);
        // Renamed binary but comm says nginx (prctl): matched by comm.
        let comm_only = snap(
            14,
            1,
            "nginx",
            "/opt/bin/openresty",
            &["nginx: master process openresty"],
        );
        assert_eq!(classify(&comm_only, &cfg).unwrap().kind, ProxyKind::Nginx);
        // exe unreadable (other user, no CAP_SYS_PTRACE): comm still works.
        let no_exe = snap(15, 1, "envoy", "", &["envoy"]);
        assert!(classify(&no_exe, &cfg).is_some());
    }

    #[test]
    fn classify_rejects() {
        let cfg = DiscoveryConfig::default();
        let pilot = snap(
            20,
            1,
            "pilot-agent",
            "/usr/local/bin/pilot-agent",
            &["pilot-agent", "proxy", "sidecar"],
        );
        assert!(classify(&pilot, &cfg).is_none(), "pilot-agent is excluded");
        let script = snap(
            21,
            1,
            "envoy",
            "/usr/bin/python3.11",
            &["/usr/bin/python3", "/venv/bin/envoy"],
        );
        assert!(
            classify(&script, &cfg).is_none(),
            "a python wrapper named envoy is not the proxy"
        );
        let kthread = snap(22, 2, "nginx", "", &[]);
        assert!(
            classify(&kthread, &cfg).is_none(),
            "kernel threads never match by name"
        );
        let other = snap(23, 1, "bash", "/usr/bin/bash", &["bash"]);
        assert!(classify(&other, &cfg).is_none());
        let prefix = snap(24, 1, "envoyx", "/usr/bin/envoyx", &["envoyx"]);
        assert!(
            classify(&prefix, &cfg).is_none(),
            "names match whole, not as prefixes"
        );
        let unknown_name = DiscoveryConfig {
            names: vec!["no-such-proxy".into()],
            ..DiscoveryConfig::default()
        };
        let envoy = snap(25, 1, "envoy", "/usr/bin/envoy", &["envoy"]);
        assert!(classify(&envoy, &unknown_name).is_none());
    }

    #[test]
    fn classify_explicit_pid_and_selectors() {
        let cid = "ab".repeat(32);
        let cfg = DiscoveryConfig {
            pids: vec![30, 32],
            ..DiscoveryConfig::default()
        };
        let app = snap(30, 1, "myproxy", "/usr/bin/myproxy", &["myproxy"]);
        let m = classify(&app, &cfg).unwrap();
        assert_eq!(
            (m.kind, m.reason),
            (ProxyKind::Other("myproxy".into()), MatchReason::Pid)
        );
        let pilot = snap(
            32,
            1,
            "pilot-agent",
            "/usr/bin/pilot-agent",
            &["pilot-agent"],
        );
        assert!(
            classify(&pilot, &cfg).is_some(),
            "an explicit pid overrides exclusion"
        );

        let by_container = DiscoveryConfig {
            names: vec![],
            containers: vec![cid[..12].to_uppercase()],
            ..DiscoveryConfig::default()
        };
        let p = in_pod(snap(40, 1, "proxy", "/bin/proxy", &["proxy"]), &cid);
        let m = classify(&p, &by_container).unwrap();
        assert_eq!(m.reason, MatchReason::Container);
        assert_eq!(m.attribution.pod_uid.as_deref(), Some(UID));
        let pilot_in = in_pod(
            snap(41, 1, "pilot-agent", "/bin/pilot-agent", &["pilot-agent"]),
            &cid,
        );
        assert!(
            classify(&pilot_in, &by_container).is_none(),
            "exclusion applies inside containers"
        );

        let by_pod = DiscoveryConfig {
            names: vec![],
            pods: vec![UID_.into()],
            ..DiscoveryConfig::default()
        };
        assert_eq!(classify(&p, &by_pod).unwrap().reason, MatchReason::Pod);

        let by_cgroup = DiscoveryConfig {
            names: vec![],
            cgroups: vec!["/system.slice/".into()],
            ..DiscoveryConfig::default()
        };
        let host = snap(42, 1, "x", "/bin/x", &["x"]);
        assert_eq!(
            classify(&host, &by_cgroup).unwrap().reason,
            MatchReason::Cgroup
        );
        let not_under = DiscoveryConfig {
            names: vec![],
            cgroups: vec!["/system.sl".into()],
            ..DiscoveryConfig::default()
        };
        assert!(
            classify(&host, &not_under).is_none(),
            "prefix is by path component"
        );
    }

    #[test]
    fn identity_is_stable_across_restarts_and_titles() {
        let cfg = DiscoveryConfig::default();
        let started = snap(
            50,
            1,
            "nginx",
            "/usr/sbin/nginx",
            &["/usr/sbin/nginx", "-c", "/tmp/n.conf", "-g", "daemon off;"],
        );
        let titled = snap(
            60,
            1,
            "nginx",
            "/usr/sbin/nginx",
            &["nginx: master process /usr/sbin/nginx -c /tmp/n.conf -g daemon off;"],
        );
        let a = classify(&started, &cfg).unwrap().identity;
        let b = classify(&titled, &cfg).unwrap().identity;
        assert_eq!(a, b, "nginx process title does not change identity");
        let other_conf = snap(
            70,
            1,
            "nginx",
            "/usr/sbin/nginx",
            &["/usr/sbin/nginx", "-c", "/tmp/other.conf"],
        );
        assert_ne!(a, classify(&other_conf, &cfg).unwrap().identity);

        let e1 = snap(
            80,
            1,
            "envoy",
            "/usr/bin/envoy",
            &["envoy", "-c", "e.yaml", "--restart-epoch", "0"],
        );
        let e2 = snap(
            81,
            1,
            "envoy",
            "/usr/bin/envoy",
            &["envoy", "-c", "e.yaml", "--restart-epoch=3"],
        );
        assert_eq!(
            classify(&e1, &cfg).unwrap().identity,
            classify(&e2, &cfg).unwrap().identity
        );

        let h1 = snap(
            90,
            1,
            "haproxy",
            "/usr/sbin/haproxy",
            &["haproxy", "-f", "h.cfg"],
        );
        let h2 = snap(
            91,
            1,
            "haproxy",
            "/usr/sbin/haproxy",
            &["haproxy", "-f", "h.cfg", "-sf", "90", "93"],
        );
        assert_eq!(
            classify(&h1, &cfg).unwrap().identity,
            classify(&h2, &cfg).unwrap().identity
        );

        // In a pod the scope is the pod: a restarted container (new id) keeps the identity.
        let c1 = in_pod(e1.clone(), &"ab".repeat(32));
        let c2 = in_pod(e2.clone(), &"cd".repeat(32));
        let id1 = classify(&c1, &cfg).unwrap().identity;
        assert_eq!(id1, classify(&c2, &cfg).unwrap().identity);
        assert_eq!(id1.scope, ProxyScope::Pod(UID.into()));
        assert!(
            id1.to_string().starts_with(&format!("envoy@pod:{UID}#")),
            "{id1}"
        );
    }

    /// A fake process table.
    #[derive(Default)]
    struct Fake {
        procs: BTreeMap<u32, ProcessSnapshot>,
        denied: BTreeSet<u32>,
        /// Listed but gone by the time they are read.
        vanishing: BTreeSet<u32>,
    }

    impl ProcSource for Fake {
        fn pids(&mut self) -> Result<Vec<u32>, ProcError> {
            Ok(self
                .procs
                .keys()
                .chain(self.vanishing.iter())
                .copied()
                .collect())
        }
        fn snapshot(&mut self, pid: u32, full: bool) -> Result<ProcessSnapshot, ProcError> {
            if self.denied.contains(&pid) {
                return Err(ProcError::PermissionDenied { pid });
            }
            let mut s = self
                .procs
                .get(&pid)
                .cloned()
                .ok_or(ProcError::Gone { pid })?;
            if !full {
                s.cmdline.clear();
                s.cgroup.clear();
            }
            Ok(s)
        }
    }

    fn nginx_master(pid: u32) -> ProcessSnapshot {
        snap(
            pid,
            1,
            "nginx",
            "/usr/sbin/nginx",
            &["nginx: master process /usr/sbin/nginx -c /tmp/n.conf"],
        )
    }
    fn nginx_worker(pid: u32, ppid: u32) -> ProcessSnapshot {
        snap(
            pid,
            ppid,
            "nginx",
            "/usr/sbin/nginx",
            &["nginx: worker process"],
        )
    }

    #[test]
    fn rescan_groups_master_and_workers_and_survives_restart() {
        let mut fake = Fake::default();
        // Worker pid lower than master (pid wrap) must still join the master.
        for s in [
            nginx_master(100),
            nginx_worker(101, 100),
            nginx_worker(5, 100),
        ] {
            fake.procs.insert(s.pid, s);
        }
        fake.procs
            .insert(200, snap(200, 1, "bash", "/usr/bin/bash", &["bash"]));
        fake.denied.insert(300);
        fake.procs
            .insert(300, snap(300, 1, "envoy", "/usr/bin/envoy", &["envoy"]));
        fake.vanishing.insert(400);
        let mut d = Discovery::new(DiscoveryConfig::default(), fake);
        let changes = d.rescan();
        assert_eq!(changes.len(), 3, "{changes:?}");
        let proxies: Vec<_> = d.proxies().collect();
        assert_eq!(proxies.len(), 1);
        let id = proxies[0].id.clone();
        assert_eq!(proxies[0].leader, Some(100));
        assert_eq!(proxies[0].tgids, BTreeSet::from([5, 100, 101]));
        assert!(changes.contains(&ProxyChange::Added {
            proxy: id.clone(),
            tgid: 5,
            role: ProcessRole::Worker,
            restart: false
        }));
        let st = d.stats();
        assert_eq!((st.skipped_permission, st.skipped_gone), (1, 1));

        // Idempotent.
        assert!(d.rescan().is_empty());

        // Kill: the master exits (event), workers vanish (rescan).
        d.source.procs.retain(|p, _| *p == 200);
        let ch = d.handle_event(ProcEvent::Exit { pid: 100 });
        assert_eq!(
            ch,
            vec![ProxyChange::Removed {
                proxy: id.clone(),
                tgid: 100
            }]
        );
        assert_eq!(d.rescan().len(), 2);
        assert!(
            d.proxy(&id).unwrap().tgids.is_empty(),
            "proxy kept with no process"
        );

        // Restart: new pids, same identity, restart flagged; workers via Fork events.
        d.source.procs.insert(700, nginx_master(700));
        let ch = d.handle_event(ProcEvent::Exec { pid: 700 });
        assert_eq!(
            ch,
            vec![ProxyChange::Added {
                proxy: id.clone(),
                tgid: 700,
                role: ProcessRole::Leader,
                restart: true
            }]
        );
        d.source.procs.insert(701, nginx_worker(701, 700));
        let ch = d.handle_event(ProcEvent::Fork {
            parent: 700,
            pid: 701,
        });
        assert_eq!(
            ch,
            vec![ProxyChange::Added {
                proxy: id.clone(),
                tgid: 701,
                role: ProcessRole::Worker,
                restart: false
            }]
        );
        let p = d.proxy(&id).unwrap();
        assert_eq!((p.restarts, p.leader), (1, Some(700)));
        assert_eq!(
            d.tgid_owners().get(&100),
            Some(&id),
            "history keeps dead tgids"
        );
        assert_eq!(d.tgid_owners().get(&701), Some(&id));
        assert_eq!(d.live_tgids().count(), 2);
        d.forget_dead_tgids();
        assert_eq!(d.tgid_owners().get(&100), None);
        assert_eq!(d.tgid_owners().len(), 2);
    }

    #[test]
    fn events_for_unknown_or_gone_pids_are_harmless() {
        let mut d = Discovery::new(DiscoveryConfig::default(), Fake::default());
        assert!(d.handle_event(ProcEvent::Exec { pid: 999 }).is_empty());
        assert!(d.handle_event(ProcEvent::Exit { pid: 999 }).is_empty());
        assert!(d
            .handle_event(ProcEvent::Fork {
                parent: 1,
                pid: 998
            })
            .is_empty());
        assert_eq!(d.stats().skipped_gone, 2);
    }

    #[test]
    fn pid_reuse_is_detected_by_start_time() {
        let mut fake = Fake::default();
        fake.procs
            .insert(10, snap(10, 1, "envoy", "/usr/bin/envoy", &["envoy"]));
        let mut d = Discovery::new(DiscoveryConfig::default(), fake);
        assert_eq!(d.rescan().len(), 1);
        // Exit event lost; pid 10 now runs bash.
        let mut bash = snap(10, 1, "bash", "/usr/bin/bash", &["bash"]);
        bash.start_time = 12345;
        d.source.procs.insert(10, bash);
        let ch = d.rescan();
        assert!(
            matches!(ch.as_slice(), [ProxyChange::Removed { tgid: 10, .. }]),
            "{ch:?}"
        );
    }

    #[test]
    fn exec_into_something_else_drops_the_process() {
        let mut fake = Fake::default();
        fake.procs
            .insert(10, snap(10, 1, "envoy", "/usr/bin/envoy", &["envoy"]));
        let mut d = Discovery::new(DiscoveryConfig::default(), fake);
        d.rescan();
        d.source
            .procs
            .insert(10, snap(10, 1, "sleep", "/usr/bin/sleep", &["sleep", "1"]));
        let ch = d.handle_event(ProcEvent::Exec { pid: 10 });
        assert!(matches!(
            ch.as_slice(),
            [ProxyChange::Removed { tgid: 10, .. }]
        ));
    }

    #[test]
    fn control_invocations_are_not_proxies() {
        let cfg = DiscoveryConfig::default();
        for (comm, args) in [
            ("nginx", &["nginx", "-s", "reload", "-c", "/tmp/n.conf"][..]),
            ("nginx", &["/usr/sbin/nginx", "-t", "-c", "/tmp/n.conf"][..]),
            ("envoy", &["envoy", "--version"][..]),
            (
                "envoy",
                &["envoy", "--mode", "validate", "-c", "e.yaml"][..],
            ),
            ("haproxy", &["haproxy", "-c", "-f", "h.cfg"][..]),
        ] {
            let s = snap(60, 1, comm, &format!("/usr/bin/{comm}"), args);
            assert!(classify(&s, &cfg).is_none(), "{args:?}");
        }
        // A master whose original command line had -g "daemon off;" is still a proxy.
        let titled = snap(
            61,
            1,
            "nginx",
            "/usr/sbin/nginx",
            &["nginx: master process nginx -g daemon off;"],
        );
        assert!(classify(&titled, &cfg).is_some());
        let worker = snap(
            62,
            61,
            "nginx",
            "/usr/sbin/nginx",
            &["nginx: worker process"],
        );
        assert!(classify(&worker, &cfg).is_some());
    }

    #[test]
    fn nginx_transient_titles_keep_identity() {
        let cfg = DiscoveryConfig::default();
        let clean = snap(
            50,
            1,
            "nginx",
            "/usr/sbin/nginx",
            &["nginx", "-c", "/tmp/n.conf", "-g", "daemon off;"],
        );
        // Seen while the master rewrites argv into its title (kernel reads into the env area).
        let mid = snap(
            50,
            1,
            "nginx",
            "/usr/sbin/nginx",
            &[
                "nginx",
                "-c",
                "/tmp/n.conf",
                "-g",
                "daemon off;",
                "n.conf -g daemon off;",
            ],
        );
        let titled = snap(
            50,
            1,
            "nginx",
            "/usr/sbin/nginx",
            &["nginx: master process nginx -c /tmp/n.conf -g daemon off;"],
        );
        let id = classify(&clean, &cfg).unwrap().identity;
        assert_eq!(id, classify(&mid, &cfg).unwrap().identity);
        assert_eq!(id, classify(&titled, &cfg).unwrap().identity);
    }

    #[test]
    fn exec_with_empty_cmdline_is_retried() {
        let mut fake = Fake::default();
        let mut early = snap(10, 1, "envoy", "/usr/bin/envoy", &[]);
        early.cmdline.clear();
        fake.procs.insert(10, early);
        let mut d = Discovery::new(DiscoveryConfig::default(), fake);
        assert!(d.handle_event(ProcEvent::Exec { pid: 10 }).is_empty());
        assert!(d.has_pending());
        assert!(
            d.rescan().is_empty(),
            "rescan leaves pending pids to retry_pending"
        );
        assert!(
            d.retry_pending().is_empty(),
            "still empty: retried again later"
        );
        d.source.procs.insert(
            10,
            snap(10, 1, "envoy", "/usr/bin/envoy", &["envoy", "-c", "e.yaml"]),
        );
        let ch = d.retry_pending();
        assert!(
            matches!(ch.as_slice(), [ProxyChange::Added { tgid: 10, .. }]),
            "{ch:?}"
        );
        assert!(!d.has_pending());
        assert_eq!(d.stats().deferred, 1);
        // Exec of a tracked process into the same proxy: no churn.
        assert!(d.handle_event(ProcEvent::Exec { pid: 10 }).is_empty());
        // A process whose cmdline stays empty is classified after the retries run out.
        let mut stuck = snap(11, 1, "envoy", "/usr/bin/envoy", &[]);
        stuck.cmdline.clear();
        d.source.procs.insert(11, stuck);
        d.handle_event(ProcEvent::Exec { pid: 11 });
        let mut added = Vec::new();
        for _ in 0..=MAX_SETTLE_RETRIES {
            added.extend(d.retry_pending());
        }
        assert!(
            matches!(added.as_slice(), [ProxyChange::Added { tgid: 11, .. }]),
            "{added:?}"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn run_applies_events_and_rescans() {
        let mut fake = Fake::default();
        fake.procs
            .insert(10, snap(10, 1, "envoy", "/usr/bin/envoy", &["envoy"]));
        let mut d = Discovery::new(DiscoveryConfig::default(), fake);
        let (ev_tx, ev_rx) = mpsc::channel(8);
        let (ch_tx, mut ch_rx) = mpsc::channel(8);
        let task = async move {
            d.run(ev_rx, ch_tx, Duration::from_millis(20)).await;
            d
        };
        let check = async move {
            // First tick rescans at once.
            let first = ch_rx.recv().await.unwrap();
            assert!(matches!(first, ProxyChange::Added { tgid: 10, .. }));
            ev_tx.send(ProcEvent::Exit { pid: 10 }).await.unwrap();
            let second = ch_rx.recv().await.unwrap();
            assert!(matches!(second, ProxyChange::Removed { tgid: 10, .. }));
            drop(ch_rx);
        };
        let (d, ()) = tokio::join!(task, check);
        assert!(d.stats().rescans >= 1);
    }
}
