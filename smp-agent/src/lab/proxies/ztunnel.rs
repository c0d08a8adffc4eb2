//! ztunnel (Istio's ambient-mode node proxy, Rust and tokio) in a pod slot, in dedicated mode:
//! one ztunnel per pod, as Istio runs it beside a single workload. It needs no Kubernetes and
//! no istiod: the workloads come from a local file (the client and server pods, both speaking
//! HBONE), and certificates from ztunnel's built-in test CA (`FAKE_CA`, the same root in
//! every ztunnel, so two of them trust each other). The client pod's redirect sends the app's
//! connections to its outbound capture port (15001); it carries each as an HTTP/2 CONNECT
//! stream over mTLS (HBONE) to the server pod's port 15008, where the server pod's ztunnel
//! opens a plain connection to the app. ztunnel is an L4 proxy: it adds no header and keeps
//! no request count.
//!
//! In shared mode ([`shared_plan`]) one ztunnel runs in the lab's node namespace for both
//! pods, as Istio deploys it: the lab's stand-in for the CNI node agent (`lab::zds`) hands it
//! each pod's network namespace and it opens the same listeners inside each. Its sockets then
//! live in the pods while its threads, and its admin and metrics ports, stay on the node.
//!
//! Its ports are fixed (15001 outbound, 15006 plaintext inbound, 15008 HBONE, 15000 admin on
//! loopback, 15020 metrics, 15021 readiness): the lab's ports must be those (`validate`).

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

use super::{Launch, SlotPlan};
use crate::lab::{config::Side, LabError};

/// The HBONE port: mTLS, HTTP/2 CONNECT.
pub const HBONE_PORT: u16 = 15008;
/// Outbound capture port (the lab's `ports.outbound` must be it).
pub const OUTBOUND_PORT: u16 = 15001;
/// Plaintext inbound capture port (the lab's `ports.inbound` must be it).
pub const INBOUND_PORT: u16 = 15006;
/// Admin port, on loopback (the lab's `ports.admin` must be it).
pub const ADMIN_PORT: u16 = 15000;
/// Readiness port (`GET /healthz/ready`).
pub const READINESS_PORT: u16 = 15021;
/// Prometheus metrics port (`GET /metrics`).
pub const METRICS_PORT: u16 = 15020;

/// Which end of a connection a ztunnel reports in its metrics: `source` (the client pod's
/// ztunnel) or `destination` (the server pod's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// The ztunnel of the connecting pod.
    Source,
    /// The ztunnel of the pod connected to.
    Destination,
}

/// The connections a ztunnel opened with mutual TLS as `reporter`, from its `/metrics` body
/// (`istio_tcp_connections_opened_total`, summed over its series): ztunnel counts connections,
/// not requests. `None` when the body has no such series.
pub fn mtls_connections(metrics: &str, reporter: Reporter) -> Option<u64> {
    let reporter = match reporter {
        Reporter::Source => "reporter=\"source\"",
        Reporter::Destination => "reporter=\"destination\"",
    };
    let mut found = None;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("istio_tcp_connections_opened_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        if labels.contains(reporter) && labels.contains("connection_security_policy=\"mutual_tls\"")
        {
            let v: u64 = value.trim().parse().ok()?;
            found = Some(found.unwrap_or(0) + v);
        }
    }
    found
}

/// Finds the ztunnel binary: the lab config's `ztunnel_bin` (`--ztunnel-bin`), `$SMP_ZTUNNEL`,
/// the copy `cargo xtask setup` leaves in the project (`<repo>/.cache/ztunnel/ztunnel`,
/// searched upwards from the executable and the working directory), then `ztunnel` on PATH.
pub fn find_binary(configured: Option<&Path>) -> Result<PathBuf, LabError> {
    if let Some(p) = configured {
        return super::named_program(p, "ztunnel_bin (--ztunnel-bin)");
    }
    if let Some(found) = super::program_from_env("SMP_ZTUNNEL") {
        return found;
    }
    if let Some(bin) = super::in_project_cache("ztunnel/ztunnel") {
        return Ok(bin);
    }
    super::find_on_path("ztunnel").ok_or_else(|| LabError::MissingProgram {
        program: "ztunnel".into(),
        hint: "ztunnel is on no package registry: build it from istio/ztunnel's source \
               (`SMP_ZTUNNEL_SRC=<tarball or tree> cargo xtask setup`, docs/lab.md), then \
               pass --ztunnel-bin or set SMP_ZTUNNEL"
            .into(),
    })
}

/// The workload name of a pod slot in the local config.
fn workload(side: Side) -> &'static str {
    match side {
        Side::Outbound => "client",
        Side::Inbound => "server",
    }
}

/// ztunnel's local configuration (its XDS state, from a file): the two pods as HBONE workloads.
pub fn local_config(client: IpAddr, server: IpAddr) -> String {
    let mut out = String::from("workloads:\n");
    for (name, addr) in [("client", client), ("server", server)] {
        out.push_str(&format!(
            "- uid: {uid}\n  name: {name}\n  namespace: default\n  \
             serviceAccount: {name}\n  workloadIps: [\"{addr}\"]\n  protocol: HBONE\n  \
             node: {NODE}\n  network: \"\"\n  services: {{}}\n",
            uid = crate::lab::zds::pod_uid(name),
        ));
    }
    out
}

/// The node name of the lab's workloads (ztunnel's `NODE_NAME`).
const NODE: &str = "lab";

/// `env <settings common to both modes> <mode's settings> ztunnel proxy` (`env` execs
/// ztunnel: the pid is ztunnel's).
fn command(
    cfg: &crate::lab::LabConfig,
    ztunnel: &Path,
    config: &Path,
    workers: u32,
    mode: &[String],
) -> Vec<String> {
    let mut args = vec![
        "FAKE_CA=true".to_string(),
        "XDS_ADDRESS=".into(),
        format!("LOCAL_XDS_PATH={}", config.display()),
        format!("NODE_NAME={NODE}"),
        // The lab's pods have no route back to a spoofed source: connections to the app come
        // from the server pod's own address.
        "ENABLE_ORIG_SRC=false".into(),
        format!("ZTUNNEL_WORKER_THREADS={workers}"),
        format!("IPV6_ENABLED={}", cfg.network.is_ipv6()),
        "RUST_LOG=warn".into(),
    ];
    args.extend_from_slice(mode);
    args.push(ztunnel.display().to_string());
    args.push("proxy".into());
    args
}

/// Launch recipe of a pod's own ztunnel (dedicated mode).
pub fn plan(plan: &SlotPlan<'_>) -> Result<Launch, LabError> {
    let ztunnel = crate::lab::program::reachable_by(
        &find_binary(plan.cfg.ztunnel_bin.as_deref())?,
        plan.cfg.sidecar_uid,
        &crate::lab::program::copies_dir(),
    )?;
    let env = super::require("env", "coreutils")?;
    let net = &plan.cfg.network;
    let config = plan.dir.join("workloads.yaml");
    let mode = [
        "PROXY_MODE=dedicated".to_string(),
        format!("PROXY_WORKLOAD_INFO=default/{0}/{0}", workload(plan.side)),
    ];
    let args = command(plan.cfg, &ztunnel, &config, plan.workers(), &mode);
    let lo = net.loopback();
    let ready = match plan.side {
        Side::Outbound => vec![plan.ready, SocketAddr::new(lo, READINESS_PORT)],
        Side::Inbound => vec![
            SocketAddr::new(net.server_addr, HBONE_PORT),
            SocketAddr::new(lo, READINESS_PORT),
        ],
    };
    Ok(Launch {
        files: vec![(config, local_config(net.client_addr, net.server_addr))],
        program: env,
        args,
        ready,
    })
}

/// Launch recipe of the node's ztunnel (shared mode), which `lab::zds` on `socket` tells of
/// the pods. It runs as root, as Istio runs it with the capabilities to enter a pod's network
/// namespace and mark its sockets. Ready once its readiness port answers in the node
/// namespace; its listeners in the pods come after the pods are handed over
/// ([`pod_listeners`]).
pub fn shared_plan(
    cfg: &crate::lab::LabConfig,
    dir: &Path,
    socket: &Path,
) -> Result<Launch, LabError> {
    let ztunnel = find_binary(cfg.ztunnel_bin.as_deref())?;
    let env = super::require("env", "coreutils")?;
    let net = &cfg.network;
    let config = dir.join("workloads.yaml");
    let mode = [
        "PROXY_MODE=shared".to_string(),
        format!("INPOD_UDS={}", socket.display()),
    ];
    let args = command(cfg, &ztunnel, &config, cfg.outbound.workers, &mode);
    Ok(Launch {
        files: vec![(config, local_config(net.client_addr, net.server_addr))],
        program: env,
        args,
        ready: vec![SocketAddr::new(net.loopback(), READINESS_PORT)],
    })
}

/// Where a shared ztunnel listens once it serves the pods, in each pod's namespace: its
/// outbound capture port on the client pod's loopback, HBONE on the server pod's address.
pub fn pod_listeners(net: &crate::lab::config::NetworkConfig) -> [(Side, SocketAddr); 2] {
    [
        (
            Side::Outbound,
            SocketAddr::new(net.loopback(), OUTBOUND_PORT),
        ),
        (Side::Inbound, SocketAddr::new(net.server_addr, HBONE_PORT)),
    ]
}

/// The mark a shared ztunnel puts on the sockets it opens in a pod (Istio's 1337): the pod's
/// redirect lets them pass.
pub const PACKET_MARK: u32 = 0x539;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_mutual_tls_connections_a_ztunnel_reports() {
        let body = "# TYPE istio_tcp_connections_opened_total counter\n\
            istio_tcp_connections_opened_total{reporter=\"source\",source_principal=\"spiffe:///ns/default/sa/client\",connection_security_policy=\"mutual_tls\"} 3\n\
            istio_tcp_connections_opened_total{reporter=\"source\",connection_security_policy=\"mutual_tls\",destination_workload=\"b\"} 2\n\
            istio_tcp_connections_opened_total{reporter=\"source\",connection_security_policy=\"unknown\"} 7\n\
            istio_tcp_connections_closed_total{reporter=\"source\",connection_security_policy=\"mutual_tls\"} 3\n";
        assert_eq!(mtls_connections(body, Reporter::Source), Some(5));
        assert_eq!(mtls_connections(body, Reporter::Destination), None);
        assert_eq!(mtls_connections("", Reporter::Source), None);
        let bad = "istio_tcp_connections_opened_total{reporter=\"source\",connection_security_policy=\"mutual_tls\"} x\n";
        assert_eq!(mtls_connections(bad, Reporter::Source), None);
    }

    #[test]
    fn both_pods_are_hbone_workloads_of_the_local_config() {
        let c = local_config("10.77.0.1".parse().unwrap(), "10.77.0.2".parse().unwrap());
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&c).unwrap();
        let w = v["workloads"].as_sequence().unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[0]["name"].as_str(), Some("client"));
        assert_eq!(w[0]["workloadIps"][0].as_str(), Some("10.77.0.1"));
        assert_eq!(w[1]["workloadIps"][0].as_str(), Some("10.77.0.2"));
        assert!(w.iter().all(|w| w["protocol"].as_str() == Some("HBONE")));
        let v6 = local_config("fd77::1".parse().unwrap(), "fd77::2".parse().unwrap());
        assert!(v6.contains("[\"fd77::2\"]"));
    }
}
