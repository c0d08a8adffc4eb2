//! The mesh lab: a real two-pod sidecar topology in network namespaces on one machine.
//!
//! ```text
//!  netns <name>-client                              netns <name>-server
//!  client ──► 10.77.0.2:8080                        ┌──► inbound sidecar :15006 ──► app 127.0.0.1:8080
//!    │ nft output redirect (not uid 1337)           │ nft prerouting redirect (iif veth, dport 8080)
//!    └─► outbound sidecar :15001 ── veth ──► 10.77.0.2:8080
//!  client ──► 10.77.0.2:8081 (baseline) ─ veth ──────────────────────────────► app :8081
//! ```
//!
//! [`Lab::up`] records every step in `/run/smp-agent/lab/<name>/state.json` before taking it;
//! [`Lab::down`] undoes whatever that file (and the naming convention) says exists, so it also
//! cleans up a crashed or half-finished `up` and is idempotent. See docs/lab.md.
//!
//! Longer than our usual file: `up` and `down` are one transaction over the same recorded
//! steps (namespaces, addresses, redirects, processes), kept together so that every step
//! `up` takes has its undo beside it. Per-kind configuration lives in `proxies/`.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

pub mod app;
pub mod config;
pub mod ends;
pub mod gtproxy;
pub mod http1;
pub mod linkdelay;
pub mod netns;
pub mod program;
pub mod proxies;
pub mod redirect;
pub mod state;
pub mod tls;
pub mod truth;
pub mod zds;

pub use config::{LabConfig, ProxyKind, Side};
use state::{LabState, Phase, ProcRecord};

/// Errors of the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A config field is invalid.
    #[error("invalid lab config: {field}: {reason}")]
    Config {
        /// Dotted field name, e.g. `outbound.workers`.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The YAML did not parse (serde names the field and line).
    #[error("invalid lab config: {reason}")]
    ConfigParse {
        /// serde_yaml's message.
        reason: String,
    },
    /// An external command failed.
    #[error("command `{cmd}` failed: {reason}")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status and stderr, or the spawn error.
        reason: String,
    },
    /// An I/O operation failed.
    #[error("failed to {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A program the lab needs is missing.
    #[error("{program} not found: {hint}")]
    MissingProgram {
        /// Program.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// Generating or loading TLS material failed.
    #[error("TLS: {what}: {reason}")]
    Tls {
        /// Which item.
        what: String,
        /// Why.
        reason: String,
    },
    /// The state file is unreadable.
    #[error("lab state {path}: {reason}")]
    State {
        /// State file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A lab with this name exists already.
    #[error("lab {0:?} already exists (run `smp-agent lab down --name {0}` first)")]
    Exists(String),
    /// No such lab.
    #[error("no lab named {0:?}")]
    NotFound(String),
    /// Not root.
    #[error("the lab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN to create namespaces and rules)")]
    NotRoot,
    /// A lab process exited during start-up or did not listen in time.
    #[error("{role} ({kind}) {problem}; last lines of {log}:\n{tail}")]
    Startup {
        /// Role (`app`, `inbound`, `outbound`).
        role: String,
        /// Program.
        kind: String,
        /// What went wrong.
        problem: String,
        /// Log file.
        log: String,
        /// Its last lines.
        tail: String,
    },
    /// Talking to a sidecar's admin endpoint failed.
    #[error("stats of the {side} sidecar ({kind}) at {addr}: {reason}")]
    Stats {
        /// Slot.
        side: Side,
        /// Kind.
        kind: ProxyKind,
        /// Admin address.
        addr: SocketAddr,
        /// Why.
        reason: String,
    },
}

impl LabError {
    /// An I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            context: context.into(),
            source,
        }
    }
}

/// One sidecar of a running lab.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SidecarInfo {
    /// Slot.
    pub side: Side,
    /// Proxy kind.
    pub kind: ProxyKind,
    /// Pid of the proxy (nginx: the master).
    pub pid: u32,
    /// Namespace it runs in.
    pub netns: String,
    /// Listener port inside its pod.
    pub port: u16,
    /// Admin/stats address inside its pod.
    pub admin: SocketAddr,
    /// Its log file.
    pub log: PathBuf,
    /// Its request log, if it writes one to a file (Envoy with `request_log`).
    #[serde(default)]
    pub request_log: Option<PathBuf>,
}

/// What a running lab offers: how to reach it, and whom to profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabInfo {
    /// Lab name.
    pub name: String,
    /// The client pod's namespace: run clients with `ip netns exec <client_netns> …`.
    pub client_netns: String,
    /// The server pod's namespace.
    pub server_netns: String,
    /// Prefix that runs a command in the client pod.
    pub client_exec: String,
    /// Client pod address.
    pub client_addr: IpAddr,
    /// Server pod address.
    pub server_addr: IpAddr,
    /// URL through both sidecars (call it from the client namespace).
    pub meshed_url: String,
    /// URL that bypasses both sidecars (same app, same network).
    pub baseline_url: String,
    /// The client pod's sidecar.
    pub outbound: SidecarInfo,
    /// The server pod's sidecar.
    pub inbound: SidecarInfo,
    /// Pid of the server app.
    pub app_pid: u32,
    /// mTLS on the sidecar-to-sidecar leg.
    pub mtls: bool,
    /// HTTP/2 on the sidecar-to-sidecar leg.
    pub h2: bool,
    /// What the client and the app speak.
    #[serde(default)]
    pub app_protocol: config::AppProtocol,
    /// State directory (configs, logs, certificates).
    pub state_dir: PathBuf,
}

impl LabInfo {
    /// The sidecar of a slot.
    pub fn sidecar(&self, side: Side) -> &SidecarInfo {
        match side {
            Side::Outbound => &self.outbound,
            Side::Inbound => &self.inbound,
        }
    }

    /// The app's meshed port (from `meshed_url`).
    pub fn app_port(&self) -> u16 {
        self.meshed_url
            .trim_start_matches("http://")
            .split('/')
            .next()
            .and_then(|hp| hp.parse::<SocketAddr>().ok())
            .map_or(LabConfig::default().ports.app, |a| a.port())
    }
}

/// One process of a lab and whether it still runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcStatus {
    /// Role (`app`, `inbound`, `outbound`).
    pub role: String,
    /// Program.
    pub kind: String,
    /// Pid.
    pub pid: u32,
    /// Still running (same pid and start time).
    pub alive: bool,
}

/// `lab status` of one lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabStatus {
    /// Lab name.
    pub name: String,
    /// Phase in the state file.
    pub phase: Phase,
    /// True when up, every process alive and both namespaces present.
    pub healthy: bool,
    /// Namespaces and whether they exist.
    pub netns: Vec<(String, bool)>,
    /// Processes.
    pub processes: Vec<ProcStatus>,
    /// The slow link, when the lab has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkStatus>,
    /// URLs and pids (when `up` finished).
    pub info: Option<LabInfo>,
}

/// The lab's slow link (`link_delay_us`) in `lab status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkStatus {
    /// One-way delay of each segment, in microseconds.
    pub delay_us: u64,
    /// The kernel's figures of its queue; `None` when no process serves it (its segments are
    /// then dropped).
    pub queue: Option<linkdelay::QueueStats>,
}

/// What `down` removed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DownReport {
    /// Lab name.
    pub name: String,
    /// Processes stopped.
    pub killed: Vec<u32>,
    /// Namespaces deleted.
    pub netns_deleted: Vec<String>,
    /// Whether a state directory was removed.
    pub state_removed: bool,
}

/// Builds a tokio runtime: current-thread for 1 worker, multi-thread for N.
pub fn runtime(workers: u32) -> Result<tokio::runtime::Runtime, LabError> {
    let mut b = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers as usize);
        b
    };
    b.enable_all()
        .build()
        .map_err(|e| LabError::io("build the tokio runtime", e))
}

/// Namespace names of a lab.
pub fn netns_names(name: &str) -> (String, String) {
    (format!("{name}-client"), format!("{name}-server"))
}

/// Interface names of a lab's veth pair (client end, server end).
pub fn veth_names(name: &str) -> (String, String) {
    (format!("{name}-c"), format!("{name}-s"))
}

// SAFETY (for the two calls below): geteuid has no preconditions.
fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// The lab's entry points.
pub struct Lab;

impl Lab {
    /// Brings a lab up and returns how to reach it. On any failure, everything created so far
    /// is removed again before the error is returned.
    pub fn up(cfg: &LabConfig) -> Result<LabInfo, LabError> {
        cfg.validate()?;
        if !is_root() {
            return Err(LabError::NotRoot);
        }
        let (cns, sns) = netns_names(&cfg.name);
        if LabState::path(&cfg.name).exists() || netns::exists(&cns) || netns::exists(&sns) {
            return Err(LabError::Exists(cfg.name.clone()));
        }
        // Resolve programs before creating anything.
        for side in [Side::Outbound, Side::Inbound] {
            proxies::find_program(cfg.kind(side), cfg)?;
        }
        proxies::require("nft", "nftables")?;
        if cfg.link_delay_us > 0 {
            proxies::require(
                linkdelay::restore_program(cfg.network.client_addr),
                "iptables",
            )?;
        }
        let dir = state::dir(&cfg.name);
        mkdir(&dir, None)?;
        let mut st = LabState {
            name: cfg.name.clone(),
            phase: Phase::Starting,
            config: cfg.clone(),
            netns: Vec::new(),
            processes: Vec::new(),
            info: None,
        };
        st.save()?;
        match up_steps(cfg, &dir, &mut st) {
            Ok(info) => Ok(info),
            Err(e) => {
                tracing::warn!(lab = %cfg.name, error = %e, "lab up failed; removing what it created");
                let _ = Lab::down(&cfg.name);
                Err(e)
            }
        }
    }

    /// Removes everything a lab created: processes, namespaces (with their veth and rules),
    /// state. Idempotent: a lab that does not exist is not an error.
    pub fn down(name: &str) -> Result<DownReport, LabError> {
        config::validate_name(name)?;
        if !is_root() {
            return Err(LabError::NotRoot);
        }
        let mut report = DownReport {
            name: name.to_string(),
            ..DownReport::default()
        };
        let mut st = LabState::load(name).unwrap_or(None);
        let (cns, sns) = netns_names(name);
        let mut nss = vec![cns, sns, node_netns(name)];
        if let Some(st) = st.as_mut() {
            st.phase = Phase::Stopping;
            let _ = st.save();
            for p in &st.processes {
                if netns::alive(p.pid) && netns::start_time(p.pid) == p.start_time {
                    netns::kill(p.pid, Duration::from_secs(3));
                    report.killed.push(p.pid);
                }
            }
            for ns in &st.netns {
                if !nss.contains(ns) {
                    nss.push(ns.clone());
                }
            }
        }
        for ns in &nss {
            if !netns::exists(ns) {
                continue;
            }
            // Anything still running in the namespace (children, or a process started after
            // the last state write) goes too.
            for pid in netns::pids(ns) {
                if pid > 1 {
                    netns::kill(pid as u32, Duration::from_secs(2));
                    report.killed.push(pid as u32);
                }
            }
            netns::run("ip", &["netns", "del", ns])?;
            report.netns_deleted.push(ns.clone());
        }
        // A recorded process that exited by itself before `down` is a zombie if this process
        // started it (the in-process API): reap it, or it lingers until we exit.
        for p in st.iter().flat_map(|st| &st.processes) {
            netns::reap(p.pid);
        }
        let dir = state::dir(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| LabError::io(format!("remove {}", dir.display()), e))?;
            report.state_removed = true;
        }
        Ok(report)
    }

    /// Kills one sidecar (SIGTERM, then SIGKILL after 3 s) and starts it again with the same
    /// command, user and namespace, as a crashed sidecar container is restarted in a pod.
    /// Returns the new pid; the lab's state and `info` follow it.
    pub fn restart_sidecar(name: &str, side: Side) -> Result<u32, LabError> {
        config::validate_name(name)?;
        if !is_root() {
            return Err(LabError::NotRoot);
        }
        let mut st = LabState::load(name)?.ok_or_else(|| LabError::NotFound(name.to_string()))?;
        // A shared ztunnel is both pods' proxy: restarting either side restarts it.
        let Some(i) = st
            .processes
            .iter()
            .position(|p| p.role == side.as_str() || p.role == NODE_PROXY_ROLE)
        else {
            return Err(LabError::NotFound(format!("{name}: {side} sidecar")));
        };
        let old = st.processes.remove(i);
        let Some(launch) = old.launch.clone() else {
            return Err(LabError::NotFound(format!(
                "{name}: how the {side} sidecar was started (lab made by an older version)"
            )));
        };
        if netns::alive(old.pid) && netns::start_time(old.pid) == old.start_time {
            netns::kill(old.pid, Duration::from_secs(3));
        }
        // Workers of a multi-process proxy (nginx) leave after their master: wait until no
        // one listens, so readiness below is the new process's.
        for addr in &launch.ready {
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            while std::time::Instant::now() < deadline
                && netns::in_netns(&old.netns, {
                    let addr = *addr;
                    move || {
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100))
                            .is_ok()
                    }
                })
                .unwrap_or(false)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let timeout = Duration::from_secs(st.config.ready_timeout_s);
        let pid = start(
            &mut st,
            &old.netns,
            &old.role,
            &old.kind,
            launch.uid,
            &launch.program,
            &launch.args,
            &old.log,
            &launch.ready,
            timeout,
        )?;
        if old.role == NODE_PROXY_ROLE {
            wait_pod_listeners(&st.config, pid, &old.log, timeout)?;
        }
        if let Some(info) = st.info.as_mut() {
            for s in [&mut info.inbound, &mut info.outbound] {
                if s.side == side || old.role == NODE_PROXY_ROLE {
                    s.pid = pid;
                }
            }
        }
        st.save()?;
        Ok(pid)
    }

    /// Status of one lab.
    pub fn status(name: &str) -> Result<LabStatus, LabError> {
        config::validate_name(name)?;
        let st = LabState::load(name)?.ok_or_else(|| LabError::NotFound(name.to_string()))?;
        let netns: Vec<(String, bool)> = st
            .netns
            .iter()
            .map(|n| (n.clone(), netns::exists(n)))
            .collect();
        let processes: Vec<ProcStatus> = st
            .processes
            .iter()
            .map(|p| ProcStatus {
                role: p.role.clone(),
                kind: p.kind.clone(),
                pid: p.pid,
                alive: netns::alive(p.pid) && netns::start_time(p.pid) == p.start_time,
            })
            .collect();
        let link = (st.config.link_delay_us > 0).then(|| LinkStatus {
            delay_us: st.config.link_delay_us,
            queue: linkdelay::queue_stats(&netns_names(&st.name).0)
                .ok()
                .flatten(),
        });
        let healthy = st.phase == Phase::Up
            && netns.iter().all(|(_, e)| *e)
            && processes.iter().all(|p| p.alive)
            && link.as_ref().is_none_or(|l| l.queue.is_some());
        Ok(LabStatus {
            name: st.name,
            phase: st.phase,
            healthy,
            netns,
            processes,
            link,
            info: st.info,
        })
    }

    /// Names of labs that have state on disk.
    pub fn list() -> Vec<String> {
        state::names()
    }

    /// Requests the sidecar has served, from its own counters (Envoy admin
    /// `http.sidecar.downstream_rq_total`, haproxy stats `req_tot` of the frontend, our proxy's
    /// `requests_total`). `Ok(None)` for nginx: its stub_status counts every request on every
    /// server, the stats requests included, so it cannot tell.
    /// The raw stats text of a ground-truth sidecar (`ours`): counters and its own clock of
    /// each request's time inside it (`request_hop_us{quantile=..}`). `None` for other kinds.
    pub fn ground_truth_stats(info: &LabInfo, side: Side) -> Result<Option<String>, LabError> {
        let sc = info.sidecar(side);
        if sc.kind != ProxyKind::Ours {
            return Ok(None);
        }
        http_get(&sc.netns, sc.admin, "/stats")
            .map(Some)
            .map_err(|reason| LabError::Stats {
                side,
                kind: sc.kind,
                addr: sc.admin,
                reason,
            })
    }

    /// A sidecar's request log ([`truth`]): ours always keeps one (admin `GET /requests`),
    /// Envoy writes one with `request_log`; `None` otherwise.
    pub fn ground_truth_requests(
        info: &LabInfo,
        side: Side,
    ) -> Result<Option<Vec<truth::TruthRequest>>, LabError> {
        let sc = info.sidecar(side);
        let err = |reason: String| LabError::Stats {
            side,
            kind: sc.kind,
            addr: sc.admin,
            reason,
        };
        if let Some(path) = &sc.request_log {
            let text = std::fs::read_to_string(path)
                .map_err(|e| LabError::io(format!("read {}", path.display()), e))?;
            return truth::parse_envoy_log(&text, truth::realtime_minus_monotonic_ns())
                .map(Some)
                .map_err(|e| err(format!("{}: {e}", path.display())));
        }
        if sc.kind != ProxyKind::Ours {
            return Ok(None);
        }
        let text = http_get(&sc.netns, sc.admin, "/requests").map_err(err)?;
        truth::parse_log(&text).map(Some).map_err(err)
    }

    /// The app's records of the requests that carried a request id (`lab::ends`), asked on
    /// the server pod's loopback (no sidecar in the way). The `# dropped N` line's N is
    /// returned too: records the app did not keep.
    pub fn app_records(info: &LabInfo) -> Result<(Vec<ends::EndRecord>, u64), LabError> {
        let addr = SocketAddr::from(([127, 0, 0, 1], info.app_port()));
        let err = |reason: String| LabError::Command {
            cmd: format!("GET {} from the app at {addr}", ends::APP_RECORDS_PATH),
            reason,
        };
        let text = http_get(&info.server_netns, addr, ends::APP_RECORDS_PATH).map_err(err)?;
        let dropped = text
            .lines()
            .find_map(|l| l.strip_prefix("# dropped "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        Ok((ends::parse_records(&text).map_err(err)?, dropped))
    }

    pub fn sidecar_requests(info: &LabInfo, side: Side) -> Result<Option<u64>, LabError> {
        let sc = info.sidecar(side);
        let Some((path, parse)) = proxies::request_counter(sc.kind) else {
            return Ok(None);
        };
        let err = |reason: String| LabError::Stats {
            side,
            kind: sc.kind,
            addr: sc.admin,
            reason,
        };
        let body = http_get(&sc.netns, sc.admin, path).map_err(err)?;
        parse(&body).map(Some).ok_or_else(|| {
            err(format!(
                "no request counter in: {}",
                body.chars().take(300).collect::<String>()
            ))
        })
    }
}

/// A one-shot HTTP/1.1 GET inside a namespace (for admin endpoints); returns the body.
pub fn http_get(ns: &str, addr: SocketAddr, path: &str) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let path = path.to_string();
    netns::in_netns(ns, move || -> Result<String, String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| format!("write: {e}"))?;
        // Until the end of a Content-Length body, or the close (a server may keep the
        // connection open whatever we ask).
        let mut buf = Vec::new();
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let n = s.read(&mut chunk).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if len.is_some_and(|len| buf.len() >= end + 4 + len) {
                break;
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            return Err(format!(
                "unexpected response: {}",
                head.lines().next().unwrap_or("")
            ));
        }
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            return Ok(dechunk(body));
        }
        Ok(body.to_string())
    })
    .map_err(|e| e.to_string())?
}

/// Decodes a complete chunked body.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
    }
    out
}

fn mkdir(dir: &Path, owner: Option<u32>) -> Result<(), LabError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(dir)
        .map_err(|e| LabError::io(format!("create {}", dir.display()), e))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| LabError::io(format!("chmod {}", dir.display()), e))?;
    if let Some(uid) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(uid))
            .map_err(|e| LabError::io(format!("chown {}", dir.display()), e))?;
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<(), LabError> {
    netns::run("ip", args).map(|_| ())
}

/// The link-layer address of `dev` in namespace `ns` (`ip -o link show`'s `link/ether`).
fn link_address(ns: &str, dev: &str) -> Result<String, LabError> {
    let out = netns::run("ip", &["-n", ns, "-o", "link", "show", "dev", dev])?;
    ether_address(&out).ok_or_else(|| LabError::Command {
        cmd: format!("ip -n {ns} -o link show dev {dev}"),
        reason: "no link/ether address in its output".into(),
    })
}

/// The `link/ether` address in one line of `ip -o link show`.
fn ether_address(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    words.find(|w| *w == "link/ether")?;
    words
        .next()
        .filter(|mac| mac.len() == 17 && mac.split(':').all(|b| u8::from_str_radix(b, 16).is_ok()))
        .map(str::to_owned)
}

/// Spawns a process, records it, waits until it listens on `ready`.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site per role; a struct would only rename them"
)]
fn start(
    st: &mut LabState,
    ns: &str,
    role: &str,
    kind: &str,
    uid: Option<u32>,
    program: &Path,
    args: &[String],
    log: &Path,
    ready: &[SocketAddr],
    timeout: Duration,
) -> Result<u32, LabError> {
    // A sidecar's uid may not reach a program under a home directory: it runs a copy.
    let program = &match uid {
        Some(u) => program::reachable_by(program, u, &program::copies_dir())?,
        None => program.to_path_buf(),
    };
    let pid = netns::spawn(ns, uid, program, args, log)?;
    st.processes.push(ProcRecord {
        role: role.to_string(),
        kind: kind.to_string(),
        pid,
        start_time: netns::start_time(pid),
        netns: ns.to_string(),
        log: log.to_path_buf(),
        launch: Some(state::Launch {
            program: program.to_path_buf(),
            args: args.to_vec(),
            uid,
            ready: ready.to_vec(),
        }),
    });
    st.save()?;
    for addr in ready {
        let problem = match netns::wait_listening(ns, *addr, pid, timeout) {
            Ok(()) => continue,
            Err(netns::WaitError::Died) => "exited during start-up".to_string(),
            Err(netns::WaitError::Timeout) => {
                format!("did not listen on {addr} within {} s", timeout.as_secs())
            }
        };
        return Err(LabError::Startup {
            role: role.into(),
            kind: kind.into(),
            problem,
            log: log.display().to_string(),
            tail: netns::log_tail(log, 15),
        });
    }
    // Some kinds listen before they route (Traefik): the kind's own readiness check.
    if let Some(admin) = ready.last() {
        proxies::wait_routing(kind, ns, *admin, timeout).map_err(|problem| LabError::Startup {
            role: role.into(),
            kind: kind.into(),
            problem,
            log: log.display().to_string(),
            tail: netns::log_tail(log, 15),
        })?;
    }
    Ok(pid)
}

/// The namespace of a lab's node (where a shared ztunnel runs).
pub fn node_netns(name: &str) -> String {
    format!("{name}-node")
}

/// Role of the shared ztunnel among a lab's processes (it serves both sides).
pub const NODE_PROXY_ROLE: &str = "node-proxy";

/// Starts the lab's stand-in for the CNI node agent and the node's shared ztunnel, waits
/// until ztunnel listens inside both pods, and returns the two slots' infos (inbound, then
/// outbound), both naming the one ztunnel.
fn start_node_ztunnel(
    cfg: &LabConfig,
    dir: &Path,
    st: &mut LabState,
    admin: SocketAddr,
    timeout: Duration,
) -> Result<Vec<SidecarInfo>, LabError> {
    let ns = node_netns(&cfg.name);
    let (cns, sns) = netns_names(&cfg.name);
    ip(&["-n", &ns, "link", "set", "lo", "up"])?;
    let socket = dir.join("zds.sock");
    let mut zds_args = vec![
        "lab".to_string(),
        "zds".into(),
        "--socket".into(),
        socket.display().to_string(),
    ];
    for (name, pod_ns) in [("client", &cns), ("server", &sns)] {
        zds_args.push("--pod".into());
        zds_args.push(format!("{name}=/run/netns/{pod_ns}"));
    }
    start(
        st,
        &ns,
        "zds",
        "zds",
        None,
        &cfg.agent_exe()?,
        &zds_args,
        &dir.join("zds.log"),
        &[],
        timeout,
    )?;
    let sdir = dir.join("node-ztunnel");
    mkdir(&sdir, None)?;
    let launch = proxies::ztunnel::shared_plan(cfg, &sdir, &socket)?;
    for (path, text) in &launch.files {
        std::fs::write(path, text)
            .map_err(|e| LabError::io(format!("write {}", path.display()), e))?;
    }
    let log = dir.join(format!("{NODE_PROXY_ROLE}.log"));
    let kind = ProxyKind::Ztunnel.as_str();
    let pid = start(
        st,
        &ns,
        NODE_PROXY_ROLE,
        kind,
        None,
        &launch.program,
        &launch.args,
        &log,
        &launch.ready,
        timeout,
    )?;
    wait_pod_listeners(cfg, pid, &log, timeout)?;
    Ok([Side::Inbound, Side::Outbound]
        .into_iter()
        .map(|side| SidecarInfo {
            side,
            kind: ProxyKind::Ztunnel,
            pid,
            netns: ns.clone(),
            port: match side {
                Side::Outbound => cfg.ports.outbound,
                Side::Inbound => cfg.ports.inbound,
            },
            admin,
            log: log.clone(),
            request_log: None,
        })
        .collect())
}

/// Waits until the node's ztunnel `pid` listens inside both pods (after the node agent handed
/// them over).
fn wait_pod_listeners(
    cfg: &LabConfig,
    pid: u32,
    log: &Path,
    timeout: Duration,
) -> Result<(), LabError> {
    let (cns, sns) = netns_names(&cfg.name);
    for (side, addr) in proxies::ztunnel::pod_listeners(&cfg.network) {
        let pod_ns = match side {
            Side::Outbound => &cns,
            Side::Inbound => &sns,
        };
        let problem = match netns::wait_listening(pod_ns, addr, pid, timeout) {
            Ok(()) => continue,
            Err(netns::WaitError::Died) => "exited during start-up".to_string(),
            Err(netns::WaitError::Timeout) => format!(
                "did not listen on {addr} in {pod_ns} within {} s",
                timeout.as_secs()
            ),
        };
        return Err(LabError::Startup {
            role: NODE_PROXY_ROLE.into(),
            kind: ProxyKind::Ztunnel.as_str().into(),
            problem,
            log: log.display().to_string(),
            tail: netns::log_tail(log, 15),
        });
    }
    Ok(())
}

fn up_steps(cfg: &LabConfig, dir: &Path, st: &mut LabState) -> Result<LabInfo, LabError> {
    let (cns, sns) = netns_names(&cfg.name);
    let (cveth, sveth) = veth_names(&cfg.name);
    let net = &cfg.network;
    let ports = &cfg.ports;
    let timeout = Duration::from_secs(cfg.ready_timeout_s);

    // Namespaces: record first, then create.
    st.netns = vec![cns.clone(), sns.clone()];
    if cfg.shared_ztunnel() {
        st.netns.push(node_netns(&cfg.name));
    }
    st.save()?;
    for ns in st.netns.clone() {
        ip(&["netns", "add", &ns])?;
    }
    // The veth pair is created directly inside the namespaces: nothing in the host namespace.
    ip(&[
        "link", "add", &cveth, "netns", &cns, "type", "veth", "peer", "name", &sveth, "netns", &sns,
    ])?;
    for (ns, dev, addr) in [
        (&cns, &cveth, net.client_addr),
        (&sns, &sveth, net.server_addr),
    ] {
        let cidr = format!("{addr}/{}", net.prefix_len);
        if net.is_ipv6() {
            // `nodad`: a tentative address (duplicate detection, ~1 s) refuses to be bound.
            ip(&["-n", ns, "addr", "add", &cidr, "dev", dev, "nodad"])?;
        } else {
            ip(&["-n", ns, "addr", "add", &cidr, "dev", dev])?;
        }
        ip(&["-n", ns, "link", "set", dev, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])?;
    }
    // Each pod knows the other's link address from the start. Left to neighbour discovery,
    // the first connections of an IPv6 lab waited 1 s (its retransmit timer) for the peer
    // that had just come up, and an Envoy sidecar meanwhile opened one upstream connection per
    // waiting request: a pool no longer in the order of its reads (docs/hops.md).
    let (cmac, smac) = (link_address(&cns, &cveth)?, link_address(&sns, &sveth)?);
    for (ns, dev, peer, mac) in [
        (&cns, &cveth, net.server_addr, &smac),
        (&sns, &sveth, net.client_addr, &cmac),
    ] {
        let peer = peer.to_string();
        ip(&[
            "-n",
            ns,
            "neigh",
            "replace",
            &peer,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
    }

    // Redirection rules.
    let rules = [
        (
            &cns,
            "nft-client.nft",
            redirect::client_rules(
                net.server_addr,
                ports.app,
                ports.outbound,
                cfg.sidecar_uid,
                cfg.shared_ztunnel()
                    .then_some(proxies::ztunnel::PACKET_MARK),
            ),
        ),
        (
            &sns,
            "nft-server.nft",
            redirect::server_rules(&sveth, ports.app, ports.inbound, net.is_ipv6()),
        ),
    ];
    for (ns, file, text) in rules {
        let path = dir.join(file);
        std::fs::write(&path, text)
            .map_err(|e| LabError::io(format!("write {}", path.display()), e))?;
        netns::run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "nft",
                "-f",
                &path.display().to_string(),
            ],
        )?;
    }

    // The slow link: its process serves the queue before the rules send segments to it.
    if cfg.link_delay_us > 0 {
        let log = dir.join("link-delay.log");
        let args: Vec<String> = vec![
            "lab".into(),
            "link-delay".into(),
            "--queue".into(),
            linkdelay::QUEUE.to_string(),
            "--delay-us".into(),
            cfg.link_delay_us.to_string(),
        ];
        let exe = cfg.agent_exe()?;
        let pid = start(
            st,
            &cns,
            "link-delay",
            "link-delay",
            None,
            &exe,
            &args,
            &log,
            &[],
            timeout,
        )?;
        linkdelay::wait_bound(&cns, pid, timeout, &log)?;
        let path = dir.join("link-delay.rules");
        std::fs::write(&path, linkdelay::rules(&cveth, ports.baseline))
            .map_err(|e| LabError::io(format!("write {}", path.display()), e))?;
        netns::run(
            "ip",
            &[
                "netns",
                "exec",
                &cns,
                linkdelay::restore_program(net.client_addr),
                &path.display().to_string(),
            ],
        )?;
    }

    // mTLS material.
    let tls_files = if cfg.mtls {
        let tdir = dir.join("tls");
        mkdir(&tdir, None)?;
        Some(tls::generate(
            &tdir,
            &cfg.name,
            net.server_addr,
            cfg.sidecar_uid,
        )?)
    } else {
        None
    };

    // Server app on the meshed and the baseline port.
    let exe = cfg.agent_exe()?;
    let app_args: Vec<String> = vec![
        "lab".into(),
        "app".into(),
        "--listen".into(),
        SocketAddr::new(net.any(), ports.app).to_string(),
        "--listen".into(),
        SocketAddr::new(net.any(), ports.baseline).to_string(),
        "--body-bytes".into(),
        cfg.app.body_bytes.to_string(),
        "--service-us".into(),
        cfg.app.service_time_us.to_string(),
        "--workers".into(),
        cfg.app.workers.to_string(),
    ];
    let app_pid = start(
        st,
        &sns,
        "app",
        "app",
        None,
        &exe,
        &app_args,
        &dir.join("app.log"),
        &[
            SocketAddr::new(net.loopback(), ports.app),
            SocketAddr::new(net.loopback(), ports.baseline),
        ],
        timeout,
    )?;

    // Sidecars: inbound first (the outbound one forwards to it).
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
    // A shared ztunnel is both slots' proxy; otherwise each slot starts its own.
    let (mut infos, slots) = if cfg.shared_ztunnel() {
        (
            start_node_ztunnel(cfg, dir, st, admin, timeout)?,
            Vec::new(),
        )
    } else {
        (Vec::new(), vec![Side::Inbound, Side::Outbound])
    };
    for side in slots {
        let kind = cfg.kind(side);
        let (ns, listen_port, upstream) = match side {
            Side::Inbound => (
                &sns,
                ports.inbound,
                SocketAddr::new(net.loopback(), ports.app),
            ),
            Side::Outbound => (
                &cns,
                ports.outbound,
                SocketAddr::from((net.server_addr, ports.app)),
            ),
        };
        let sdir = dir.join(format!("{side}-{kind}"));
        mkdir(&sdir, Some(cfg.sidecar_uid))?;
        let plan = proxies::SlotPlan {
            side,
            kind,
            cfg,
            listen: SocketAddr::new(net.any(), listen_port),
            ready: SocketAddr::new(net.loopback(), listen_port),
            upstream,
            admin,
            tls: tls_files.as_ref(),
            h2: cfg.sidecar_h2(),
            dir: &sdir,
            via: format!("{side}-{kind}"),
        };
        let launch = proxies::launch(&plan)?;
        for (path, text) in &launch.files {
            std::fs::write(path, text)
                .map_err(|e| LabError::io(format!("write {}", path.display()), e))?;
        }
        let log = dir.join(format!("{side}.log"));
        let pid = start(
            st,
            ns,
            side.as_str(),
            kind.as_str(),
            Some(cfg.sidecar_uid),
            &launch.program,
            &launch.args,
            &log,
            &launch.ready,
            timeout,
        )?;
        let request_log = (kind == ProxyKind::Envoy && cfg.sidecar(side).request_log)
            .then(|| proxies::envoy::request_log_path(&sdir));
        infos.push(SidecarInfo {
            side,
            kind,
            pid,
            netns: ns.clone(),
            port: listen_port,
            admin,
            log,
            request_log,
        });
    }
    let outbound = infos.pop().expect("two sidecars started");
    let inbound = infos.pop().expect("two sidecars started");
    let info = LabInfo {
        name: cfg.name.clone(),
        client_netns: cns.clone(),
        server_netns: sns,
        client_exec: format!("ip netns exec {cns}"),
        client_addr: net.client_addr,
        server_addr: net.server_addr,
        meshed_url: format!("http://{}/", SocketAddr::new(net.server_addr, ports.app)),
        baseline_url: format!(
            "http://{}/",
            SocketAddr::new(net.server_addr, ports.baseline)
        ),
        outbound,
        inbound,
        app_pid,
        mtls: cfg.sidecar_mtls(),
        h2: cfg.sidecar_h2(),
        app_protocol: cfg.app_protocol,
        state_dir: dir.to_path_buf(),
    };
    st.phase = Phase::Up;
    st.info = Some(info.clone());
    st.save()?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_ether_address_of_a_link() {
        let line =
            "2: v6x-c@if2: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP \
                    mode DEFAULT group default qlen 1000\\    link/ether 26:3f:a1:bb:c2:d2 brd \
                    ff:ff:ff:ff:ff:ff link-netns v6x-server";
        assert_eq!(ether_address(line).as_deref(), Some("26:3f:a1:bb:c2:d2"));
        assert_eq!(
            ether_address("1: lo: <LOOPBACK> link/loopback 00:00:00:00:00:00"),
            None
        );
        assert_eq!(ether_address("link/ether zz:3f:a1:bb:c2:d2"), None);
        assert_eq!(ether_address("link/ether"), None);
    }

    #[test]
    fn parses_counters() {
        assert_eq!(
            proxies::envoy::parse_requests(
                "http.sidecar.downstream_rq_time: P0(nan)\nhttp.sidecar.downstream_rq_total: 12\n"
            ),
            Some(12)
        );
        assert_eq!(
            proxies::ours::parse_requests("requests_total 3\nerrors_total 0\n"),
            Some(3)
        );
        let csv = "# pxname,svname,qcur,req_tot,x\nsidecar,FRONTEND,,7,\nupstream,BACKEND,,9,\n";
        assert_eq!(proxies::haproxy::parse_requests(csv), Some(7));
        assert_eq!(dechunk("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"), "abcde");
    }

    #[test]
    fn names_fit_ifnamsiz() {
        let (c, s) = veth_names("abcdefghij");
        assert!(c.len() < 16 && s.len() < 16);
    }
}
