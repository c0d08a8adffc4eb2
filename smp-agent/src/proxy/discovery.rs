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
//!
//! Longer than our usual file: classification, identity and the follow-restarts state are one
//! decision over the same process snapshot; its tests are in `discovery/tests.rs`.

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
    /// Inode of its network namespace when that is not the host's (pid 1's); `None` in the
    /// host's or when unknown. Tells apart two proxies with one command line and one cgroup in
    /// two namespaces (pods made without a container runtime: `ip netns exec`).
    pub netns: Option<u64>,
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

impl ProxyId {
    /// The identity of a proxy in a network namespace of its own (`netns`, not the host's):
    /// with a host cgroup for scope, the namespace is part of the fingerprint, so the same
    /// binary and arguments in two such namespaces are two proxies (Istio's ztunnel in
    /// dedicated mode, one per pod, takes no arguments). A pod's or a container's scope tells
    /// them apart already, and a restart in the same namespace keeps the identity.
    pub fn in_netns(mut self, netns: Option<u64>) -> Self {
        if let (ProxyScope::Cgroup(_), Some(ns)) = (&self.scope, netns) {
            let mut bytes = self.fingerprint.to_le_bytes().to_vec();
            bytes.extend_from_slice(&ns.to_le_bytes());
            self.fingerprint = fnv1a(&bytes);
        }
        self
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
    let identity =
        ProxyId::for_leader(kind.clone(), &attribution, &snap.cmdline).in_netns(snap.netns);
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
mod tests;
