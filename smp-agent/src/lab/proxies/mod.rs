//! Sidecar launchers: one module per proxy kind turns a [`SlotPlan`] into files to write and a
//! command to run, and knows its program, its request counter and its readiness. Everything
//! the rest of the lab asks of a kind goes through the functions here. To add a proxy kind:
//! a variant of the lab's `ProxyKind` (`config.rs`), a module here like the others, and its
//! arms in the matches below (see docs/architecture.md, "How to add").

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use super::{
    config::{LabConfig, ProxyKind, Side},
    tls::TlsFiles,
    LabError,
};

pub mod envoy;
pub mod haproxy;
pub mod nginx;
pub mod ours;
pub mod traefik;
pub mod ztunnel;

/// Everything a launcher needs to know about one sidecar slot.
#[derive(Debug, Clone)]
pub struct SlotPlan<'a> {
    /// Which slot.
    pub side: Side,
    /// Proxy kind.
    pub kind: ProxyKind,
    /// Whole lab config.
    pub cfg: &'a LabConfig,
    /// Where the sidecar listens: every address of its pod's family (`0.0.0.0` or `::`).
    pub listen: SocketAddr,
    /// Where its listener is probed for readiness: the pod's loopback, same port.
    pub ready: SocketAddr,
    /// Where it forwards.
    pub upstream: SocketAddr,
    /// Admin/stats address (loopback of its pod).
    pub admin: SocketAddr,
    /// mTLS material when the sidecar-to-sidecar leg is mTLS.
    pub tls: Option<&'a TlsFiles>,
    /// HTTP/2 on the sidecar-to-sidecar leg.
    pub h2: bool,
    /// Directory for this sidecar's files (owned by the sidecar uid).
    pub dir: &'a Path,
    /// Value of the `x-smp-via` response header.
    pub via: String,
}

/// Whether a slot receives HTTP/2 from downstream: the outbound sidecar from the client (the
/// app protocol), the inbound one from the outbound sidecar (the sidecar leg).
pub fn downstream_h2(plan: &SlotPlan<'_>) -> bool {
    match plan.side {
        Side::Outbound => plan.cfg.app_protocol.is_h2(),
        Side::Inbound => plan.h2,
    }
}

/// Whether a slot speaks HTTP/2 to its upstream: the outbound sidecar to the inbound one (the
/// sidecar leg), the inbound one to the app (the app protocol).
pub fn upstream_h2(plan: &SlotPlan<'_>) -> bool {
    match plan.side {
        Side::Outbound => plan.h2,
        Side::Inbound => plan.cfg.app_protocol.is_h2(),
    }
}

impl SlotPlan<'_> {
    /// Worker threads of this slot.
    pub fn workers(&self) -> u32 {
        self.cfg.sidecar(self.side).workers
    }
}

/// A launch recipe: files to write, then `program args`.
#[derive(Debug, Clone)]
pub struct Launch {
    /// (path, content) pairs to write first.
    pub files: Vec<(PathBuf, String)>,
    /// Program.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Addresses (inside the pod) that must accept connections before the sidecar is ready.
    pub ready: Vec<SocketAddr>,
}

/// Builds the launch recipe of a slot.
pub fn launch(plan: &SlotPlan<'_>) -> Result<Launch, LabError> {
    match plan.kind {
        ProxyKind::Envoy => envoy::plan(plan),
        ProxyKind::Haproxy => haproxy::plan(plan),
        ProxyKind::Nginx => nginx::plan(plan),
        ProxyKind::Ours => ours::plan(plan),
        ProxyKind::Traefik => traefik::plan(plan),
        ProxyKind::Ztunnel => ztunnel::plan(plan),
    }
}

/// Finds the program a slot of `kind` runs, before anything is created (a clear error naming
/// the package when it is missing).
pub fn find_program(kind: ProxyKind, cfg: &LabConfig) -> Result<(), LabError> {
    match kind {
        ProxyKind::Envoy => envoy::find_binary(cfg.envoy_bin.as_deref()).map(drop),
        ProxyKind::Haproxy => require("haproxy", "haproxy").map(drop),
        ProxyKind::Nginx => require("nginx", "nginx-light").map(drop),
        ProxyKind::Traefik => traefik::find_binary().map(drop),
        ProxyKind::Ztunnel => ztunnel::find_binary(cfg.ztunnel_bin.as_deref()).map(drop),
        ProxyKind::Ours => Ok(()),
    }
}

/// Reads a sidecar's request count from its admin page's body.
pub type RequestCount = fn(&str) -> Option<u64>;

/// Where a sidecar of `kind` counts the requests it took (an admin path) and how to read the
/// count from the body; `None`: the kind has no such counter (nginx's stub status is not on).
pub fn request_counter(kind: ProxyKind) -> Option<(&'static str, RequestCount)> {
    match kind {
        ProxyKind::Envoy => Some((
            "/stats?filter=http.sidecar.downstream_rq_total",
            envoy::parse_requests,
        )),
        ProxyKind::Haproxy => Some(("/stats;csv", haproxy::parse_requests)),
        ProxyKind::Ours => Some(("/stats", ours::parse_requests)),
        ProxyKind::Traefik => Some(("/metrics", traefik::parse_requests)),
        // nginx's stub status is not on; ztunnel is L4: it counts connections, not requests.
        ProxyKind::Nginx | ProxyKind::Ztunnel => None,
    }
}

/// The number on the first line of a stats page that starts with `prefix`.
pub fn stat_line(body: &str, prefix: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Once a sidecar of kind `kind` (its name) listens: waits until it also routes, for kinds
/// that listen first (Traefik: its router appears later); `admin` is its last ready address.
pub fn wait_routing(
    kind: &str,
    ns: &str,
    admin: SocketAddr,
    timeout: std::time::Duration,
) -> Result<(), String> {
    if kind == ProxyKind::Traefik.as_str() {
        return traefik::wait_router(ns, admin, timeout);
    }
    Ok(())
}

/// A program named by a setting (a config field or an environment variable, `what` in the
/// error): the file itself, or an error naming it when it is not there.
pub fn named_program(p: &Path, what: &str) -> Result<PathBuf, LabError> {
    if p.is_file() {
        Ok(p.to_path_buf())
    } else {
        Err(LabError::MissingProgram {
            program: p.display().to_string(),
            hint: format!("{what} names a file that does not exist"),
        })
    }
}

/// `$var` as a program path, if set and not empty ([`named_program`]).
pub fn program_from_env(var: &str) -> Option<Result<PathBuf, LabError>> {
    let p = std::env::var_os(var).filter(|p| !p.is_empty())?;
    Some(named_program(Path::new(&p), var))
}

/// The first `<dir>/.cache/<rel>` that is a file, for `dir` the ancestors of this executable
/// and of the working directory (the project's venvs, made by `cargo xtask setup`).
pub fn in_project_cache(rel: &str) -> Option<PathBuf> {
    let starts = [std::env::current_exe().ok(), std::env::current_dir().ok()];
    starts
        .iter()
        .flatten()
        .flat_map(|s| s.ancestors())
        .map(|d| d.join(".cache").join(rel))
        .find(|p| p.is_file())
}

/// Finds a program on PATH (plus the sbin directories root has).
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            [
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
                "/usr/local/sbin",
                "/usr/local/bin",
            ]
            .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Like [`find_on_path`], with an error naming the Debian package.
pub fn require(name: &str, package: &str) -> Result<PathBuf, LabError> {
    find_on_path(name).ok_or_else(|| LabError::MissingProgram {
        program: name.to_string(),
        hint: format!("install the Debian package {package} (`cargo xtask setup` does)"),
    })
}
