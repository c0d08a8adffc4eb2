//! The lab's stand-in for Istio's CNI node agent (`smp-agent lab zds`, spawned by `up` for a
//! shared ztunnel): it tells the node's ztunnel which pods it serves, over ztunnel's
//! workload discovery protocol (ZDS). ztunnel connects to a `SOCK_SEQPACKET` unix socket
//! (`INPOD_UDS`) and says hello; the agent then sends each pod as one `AddWorkload` message
//! with the pod's network namespace attached as a file descriptor (`SCM_RIGHTS`), waits for
//! ztunnel's ack of each, and ends the snapshot with `SnapshotSent`. ztunnel then opens its
//! listeners (15001, 15006, 15008) inside each pod's namespace and proxies for it from the
//! node's. The connection stays open while ztunnel runs; a ztunnel that reconnects (after a
//! restart) is sent the snapshot again.
//!
//! The messages are ztunnel's `zds.proto` (package `istio.workload.zds`), declared here with
//! `prost`'s derive: one protobuf message per packet.

use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use nix::sys::socket::{
    self as sock, AddressFamily, Backlog, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use prost::Message as _;

use super::LabError;

/// `istio.workload.zds.ZdsHello`, the first message ztunnel sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ZdsHello {
    /// `Version`: 1 is V1.
    #[prost(int32, tag = "1")]
    pub version: i32,
}

/// `istio.workload.zds.WorkloadInfo`: who the pod is.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
    #[prost(string, tag = "3")]
    pub service_account: String,
}

/// `istio.workload.zds.AddWorkload` (the pod's netns travels beside it as `SCM_RIGHTS`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AddWorkload {
    #[prost(string, tag = "1")]
    pub uid: String,
    #[prost(message, optional, tag = "2")]
    pub workload_info: Option<WorkloadInfo>,
}

/// `istio.workload.zds.SnapshotSent`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SnapshotSent {}

/// `istio.workload.zds.WorkloadRequest`: what the node agent sends.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadRequest {
    #[prost(oneof = "Payload", tags = "1, 3")]
    pub payload: Option<Payload>,
}

/// `WorkloadRequest.payload` (the two kinds the lab sends).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Payload {
    #[prost(message, tag = "1")]
    Add(AddWorkload),
    #[prost(message, tag = "3")]
    SnapshotSent(SnapshotSent),
}

/// `istio.workload.zds.Ack`: empty `error` is success.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ack {
    #[prost(string, tag = "1")]
    pub error: String,
}

/// `istio.workload.zds.WorkloadResponse`: what ztunnel answers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WorkloadResponse {
    #[prost(message, optional, tag = "1")]
    pub ack: Option<Ack>,
}

/// The uid a lab pod has in ztunnel's local config and in ZDS.
pub fn pod_uid(name: &str) -> String {
    format!("lab//v1/Pod/default/{name}")
}

/// One pod a shared ztunnel serves: `--pod <name>=<netns file>` (the workload's name and
/// service account are the pod's name, its namespace `default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    pub netns: PathBuf,
}

impl std::str::FromStr for Pod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, netns) = s
            .split_once('=')
            .ok_or_else(|| format!("expected <name>=<netns file>, got {s:?}"))?;
        if name.is_empty() || netns.is_empty() {
            return Err(format!("expected <name>=<netns file>, got {s:?}"));
        }
        Ok(Pod {
            name: name.to_string(),
            netns: PathBuf::from(netns),
        })
    }
}

/// Options of `smp-agent lab zds`.
#[derive(Debug, Clone, clap::Args)]
pub struct ZdsOptions {
    /// Required: the unix socket to listen on (ztunnel's INPOD_UDS).
    #[arg(long)]
    pub socket: PathBuf,
    /// Required: a pod ztunnel serves, `<name>=<netns file>` (repeat the flag).
    #[arg(long = "pod", required = true)]
    pub pods: Vec<Pod>,
}

/// Largest message ztunnel sends (a hello or an ack with an error text); longer is truncated.
const MAX_MESSAGE: usize = 4096;

fn io(context: impl Into<String>, e: nix::errno::Errno) -> LabError {
    LabError::io(context, std::io::Error::from(e))
}

/// Listens on `opts.socket` and serves every ztunnel that connects, one after the other,
/// until killed.
pub fn run(opts: ZdsOptions) -> Result<(), LabError> {
    // Each namespace is opened once: the fd is what ztunnel enters, whatever the name later
    // points at.
    let mut pods = Vec::new();
    for p in &opts.pods {
        let f = std::fs::File::open(&p.netns)
            .map_err(|e| LabError::io(format!("open {}", p.netns.display()), e))?;
        pods.push((p.name.clone(), OwnedFd::from(f)));
    }
    let listener = listen(&opts.socket)?;
    loop {
        let fd = sock::accept(listener.as_raw_fd())
            .map_err(|e| io(format!("accept on {}", opts.socket.display()), e))?;
        // SAFETY: accept returned a new descriptor that nothing else owns.
        let conn = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        match serve(&conn, &pods) {
            Ok(()) => tracing::info!("ztunnel disconnected"),
            Err(e) => tracing::warn!(error = %e, "ztunnel session ended"),
        }
    }
}

fn listen(path: &Path) -> Result<OwnedFd, LabError> {
    if path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| LabError::io(format!("remove {}", path.display()), e))?;
    }
    let fd = sock::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| io("create a seqpacket socket", e))?;
    let addr = UnixAddr::new(path).map_err(|e| io(format!("address {}", path.display()), e))?;
    sock::bind(fd.as_raw_fd(), &addr).map_err(|e| io(format!("bind {}", path.display()), e))?;
    sock::listen(&fd, Backlog::new(4).map_err(|e| io("backlog", e))?)
        .map_err(|e| io(format!("listen on {}", path.display()), e))?;
    Ok(fd)
}

/// One ztunnel session: hello, the snapshot (each pod acked), then wait until it leaves.
fn serve(conn: &OwnedFd, pods: &[(String, OwnedFd)]) -> Result<(), LabError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = recv(conn, &mut buf)?;
    let hello = ZdsHello::decode(&buf[..n])
        .map_err(|e| LabError::io("read ztunnel's hello", std::io::Error::other(e)))?;
    tracing::info!(version = hello.version, "ztunnel connected");
    for (name, netns) in pods {
        let add = WorkloadRequest {
            payload: Some(Payload::Add(AddWorkload {
                uid: pod_uid(name),
                workload_info: Some(WorkloadInfo {
                    name: name.clone(),
                    namespace: "default".into(),
                    service_account: name.clone(),
                }),
            })),
        };
        send(conn, &add.encode_to_vec(), Some(netns))?;
        ack(conn, &mut buf, &format!("pod {name}"))?;
    }
    let done = WorkloadRequest {
        payload: Some(Payload::SnapshotSent(SnapshotSent {})),
    };
    send(conn, &done.encode_to_vec(), None)?;
    ack(conn, &mut buf, "the snapshot")?;
    // Nothing more to say: the session lasts as long as ztunnel keeps it open.
    while recv(conn, &mut buf)? > 0 {}
    Ok(())
}

fn send(conn: &OwnedFd, data: &[u8], netns: Option<&OwnedFd>) -> Result<(), LabError> {
    let iov = [IoSlice::new(data)];
    let fds = netns.map(|f| [f.as_raw_fd()]);
    let cmsgs: Vec<ControlMessage<'_>> = fds
        .as_ref()
        .map(|f| ControlMessage::ScmRights(f))
        .into_iter()
        .collect();
    sock::sendmsg::<()>(conn.as_raw_fd(), &iov, &cmsgs, MsgFlags::empty(), None)
        .map_err(|e| io("send to ztunnel", e))?;
    Ok(())
}

fn recv(conn: &OwnedFd, buf: &mut [u8]) -> Result<usize, LabError> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = sock::recvmsg::<()>(conn.as_raw_fd(), &mut iov, None, MsgFlags::empty())
        .map_err(|e| io("read from ztunnel", e))?;
    Ok(msg.bytes)
}

fn ack(conn: &OwnedFd, buf: &mut [u8], what: &str) -> Result<(), LabError> {
    let n = recv(conn, buf)?;
    if n == 0 {
        return Err(LabError::io(
            format!("ztunnel's ack of {what}"),
            std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
        ));
    }
    let resp = WorkloadResponse::decode(&buf[..n])
        .map_err(|e| LabError::io(format!("ztunnel's ack of {what}"), std::io::Error::other(e)))?;
    match resp.ack {
        Some(a) if a.error.is_empty() => Ok(()),
        Some(a) => Err(LabError::io(
            format!("ztunnel refused {what}"),
            std::io::Error::other(a.error),
        )),
        None => Err(LabError::io(
            format!("ztunnel's ack of {what}"),
            std::io::Error::other("a response without an ack"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_workload_encodes_as_ztunnel_reads_it() {
        // Field numbers and wire types of zds.proto: payload `add` is field 1 (length
        // delimited), its uid field 1, workload_info field 2 with name 1, namespace 2,
        // service_account 3.
        let r = WorkloadRequest {
            payload: Some(Payload::Add(AddWorkload {
                uid: "u".into(),
                workload_info: Some(WorkloadInfo {
                    name: "n".into(),
                    namespace: "d".into(),
                    service_account: "s".into(),
                }),
            })),
        };
        let bytes = r.encode_to_vec();
        assert_eq!(
            bytes,
            [0x0a, 14, 0x0a, 1, b'u', 0x12, 9, 0x0a, 1, b'n', 0x12, 1, b'd', 0x1a, 1, b's']
        );
        let snap = WorkloadRequest {
            payload: Some(Payload::SnapshotSent(SnapshotSent {})),
        };
        assert_eq!(snap.encode_to_vec(), [0x1a, 0]);
        assert_eq!(WorkloadRequest::decode(&bytes[..]).unwrap(), r);
    }

    #[test]
    fn reads_acks_and_hellos() {
        let nack = WorkloadResponse {
            ack: Some(Ack {
                error: "no such pod".into(),
            }),
        };
        let bytes = nack.encode_to_vec();
        assert_eq!(WorkloadResponse::decode(&bytes[..]).unwrap(), nack);
        assert_eq!(ZdsHello::decode(&[0x08, 1][..]).unwrap().version, 1);
    }

    #[test]
    fn a_pod_is_a_name_and_a_namespace_file() {
        let p: Pod = "client=/run/netns/lab-client".parse().unwrap();
        assert_eq!(p.name, "client");
        assert_eq!(p.netns, PathBuf::from("/run/netns/lab-client"));
        assert!("client".parse::<Pod>().is_err());
        assert!("=x".parse::<Pod>().is_err());
        assert!("x=".parse::<Pod>().is_err());
    }
}
