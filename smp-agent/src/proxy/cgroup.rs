//! Kubernetes attribution from a process's cgroup path, without an API server.
//!
//! The kubelet names cgroups after the pod UID and the container runtime names them after the
//! container ID, so `/proc/<pid>/cgroup` alone says which pod and container a process runs in.
//! Shapes handled (see docs/discovery.md for the full table):
//!
//! | driver   | example                                                                                   |
//! |----------|-------------------------------------------------------------------------------------------|
//! | systemd  | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope` |
//! | systemd  | `/kubepods.slice/kubepods-pod<uid_>.slice/crio-<id>.scope` (guaranteed QoS: no QoS level)  |
//! | systemd  | `.../docker-<id>.scope` (dockershim), `/system.slice/docker-<id>.scope` (plain docker)     |
//! | cgroupfs | `/kubepods/besteffort/pod<uid>/<id>`, `/kubepods/pod<uid>/crio-<id>`, `/docker/<id>`       |
//!
//! Under the systemd driver the pod UID's `-` become `_` (systemd reserves `-` as the slice
//! hierarchy separator); we turn them back. Matching is not anchored at the root, so nested
//! hierarchies (kind: `/system.slice/docker-<node>.scope/kubelet.slice/kubelet-kubepods.slice/…`)
//! work; the innermost pod and container win. Anything unrecognised gives an "unknown"
//! attribution, never an error.

use std::fmt;

use serde::Serialize;

/// Which cgroup driver named the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupDriver {
    /// `*.slice` / `*.scope` units.
    Systemd,
    /// Plain directories (`/kubepods/burstable/pod<uid>/<id>`).
    Cgroupfs,
}

/// The container runtime that named the container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerRuntime {
    Containerd,
    CriO,
    Docker,
    Podman,
    /// A container ID was recognised but not the runtime (e.g. cgroupfs `/kubepods/…/<64hex>`,
    /// which containerd and docker both produce), or no container at all.
    Unknown,
}

/// Kubernetes pod QoS class, from the kubelet's cgroup hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QosClass {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl fmt::Display for QosClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Guaranteed => "guaranteed",
            Self::Burstable => "burstable",
            Self::BestEffort => "besteffort",
        })
    }
}

/// What a cgroup path says about a process. All fields `None` / `Unknown` is the "unknown"
/// attribution (a host process, a cgroup namespace root, or a runtime we do not know).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CgroupAttribution {
    /// The cgroup path the attribution was derived from (`/` when none was usable).
    pub path: String,
    pub driver: Option<CgroupDriver>,
    pub runtime: ContainerRuntime,
    /// Full container ID as the runtime names it (lower-case hex).
    pub container_id: Option<String>,
    /// Pod UID in canonical form (`8-4-4-4-12` with dashes), or the 32-hex hash of a static pod.
    pub pod_uid: Option<String>,
    pub qos: Option<QosClass>,
}

impl CgroupAttribution {
    /// The "unknown" attribution for `path`.
    pub fn unknown(path: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            driver: None,
            runtime: ContainerRuntime::Unknown,
            container_id: None,
            pod_uid: None,
            qos: None,
        }
    }

    /// True when neither a pod nor a container was recognised.
    pub fn is_unknown(&self) -> bool {
        self.pod_uid.is_none() && self.container_id.is_none()
    }

    /// Short container ID (first 12 characters, as `docker ps` / `crictl ps` show it).
    pub fn short_container_id(&self) -> Option<&str> {
        self.container_id
            .as_deref()
            .map(|id| &id[..id.len().min(12)])
    }
}

/// Attributes a single cgroup path (one line's path of `/proc/<pid>/cgroup`).
pub fn attribute_path(path: &str) -> CgroupAttribution {
    let mut out = CgroupAttribution::unknown(path);
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if let Some((uid, qos_hint, driver)) = parse_pod_component(component) {
            out.pod_uid = Some(uid);
            out.driver = Some(driver);
            out.qos = Some(qos_hint.unwrap_or(QosClass::Guaranteed));
            // A container seen before this pod belonged to an outer layer (e.g. the kind node's
            // own docker container): it is not this pod's container.
            out.container_id = None;
            out.runtime = ContainerRuntime::Unknown;
            continue;
        }
        if let Some((id, runtime, driver)) = parse_container_component(component) {
            out.container_id = Some(id);
            out.runtime = runtime;
            if out.driver.is_none() || out.pod_uid.is_none() {
                out.driver = Some(driver);
            }
        }
    }
    // cgroupfs QoS comes from the parent directory, not the pod component itself.
    if out.pod_uid.is_some() && out.driver == Some(CgroupDriver::Cgroupfs) {
        out.qos = Some(cgroupfs_qos(path));
    }
    refine_runtime(&mut out);
    out
}

/// Attributes a process from the text of `/proc/<pid>/cgroup` (v1, v2 or hybrid).
///
/// Every line is tried; the first line that yields a pod or container wins, the unified (v2)
/// line first. If none does, the result is unknown with the most specific path seen.
pub fn attribute_proc_cgroup(contents: &str) -> CgroupAttribution {
    let mut paths: Vec<(bool, &str)> = contents
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hier = parts.next()?;
            let _controllers = parts.next()?;
            let path = parts.next()?.trim();
            Some((hier == "0", path))
        })
        .collect();
    // v2 first, then v1 lines in file order.
    paths.sort_by_key(|(v2, _)| !*v2);
    let mut fallback: Option<&str> = None;
    for (_, path) in &paths {
        let attr = attribute_path(path);
        if !attr.is_unknown() {
            return attr;
        }
        if *path != "/" && fallback.is_none_or(|f| path.len() > f.len()) {
            fallback = Some(path);
        }
    }
    CgroupAttribution::unknown(fallback.unwrap_or("/"))
}

/// The unified-hierarchy (v2) path from `/proc/<pid>/cgroup`, if the process has one.
pub fn unified_path(contents: &str) -> Option<&str> {
    contents
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
}

fn cgroupfs_qos(path: &str) -> QosClass {
    let comps: Vec<&str> = path.split('/').collect();
    // Find the innermost pod component and look at its parent.
    let Some(pod_idx) = comps.iter().rposition(|c| {
        c.strip_prefix("pod")
            .and_then(|u| normalise_uid(u, '-'))
            .is_some()
    }) else {
        return QosClass::Guaranteed;
    };
    match pod_idx.checked_sub(1).map(|i| comps[i]) {
        Some("burstable") => QosClass::Burstable,
        Some("besteffort") => QosClass::BestEffort,
        _ => QosClass::Guaranteed,
    }
}

/// `kubepods-burstable-pod<uid_>.slice` (systemd) or `pod<uid>` (cgroupfs).
fn parse_pod_component(c: &str) -> Option<(String, Option<QosClass>, CgroupDriver)> {
    if let Some(unit) = c.strip_suffix(".slice") {
        // kubepods-pod<uid>, kubepods-burstable-pod<uid>, kubelet-kubepods-besteffort-pod<uid>
        let idx = unit.rfind("-pod")?;
        let prefix = &unit[..idx];
        if !prefix.ends_with("kubepods")
            && !prefix.ends_with("kubepods-burstable")
            && !prefix.ends_with("kubepods-besteffort")
        {
            return None;
        }
        let uid = normalise_uid(&unit[idx + 4..], '_')?;
        let qos = if prefix.ends_with("-burstable") {
            Some(QosClass::Burstable)
        } else if prefix.ends_with("-besteffort") {
            Some(QosClass::BestEffort)
        } else {
            None
        };
        return Some((uid, qos, CgroupDriver::Systemd));
    }
    let uid = normalise_uid(c.strip_prefix("pod")?, '-')?;
    Some((uid, None, CgroupDriver::Cgroupfs))
}

/// Accepts a UUID with `sep` as separator (8-4-4-4-12 hex) or a 32-hex static-pod hash;
/// returns the canonical dashed lower-case form.
fn normalise_uid(raw: &str, sep: char) -> Option<String> {
    let raw = raw.to_ascii_lowercase();
    if raw.len() == 32 && is_hex(&raw) {
        return Some(raw);
    }
    let groups: Vec<&str> = raw.split(sep).collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    if lens == [8, 4, 4, 4, 12] && groups.iter().all(|g| is_hex(g)) {
        return Some(groups.join("-"));
    }
    None
}

/// Container components: runtime-prefixed scopes/dirs, or a bare 64-hex directory.
fn parse_container_component(c: &str) -> Option<(String, ContainerRuntime, CgroupDriver)> {
    let (stem, driver) = match c.strip_suffix(".scope") {
        Some(s) => (s, CgroupDriver::Systemd),
        None => (c, CgroupDriver::Cgroupfs),
    };
    // Monitors (conmon) live beside the container but are not in it.
    if stem.starts_with("crio-conmon-") || stem.starts_with("libpod-conmon-") {
        return None;
    }
    const PREFIXES: &[(&str, ContainerRuntime)] = &[
        ("cri-containerd-", ContainerRuntime::Containerd),
        ("crio-", ContainerRuntime::CriO),
        ("docker-", ContainerRuntime::Docker),
        ("libpod-", ContainerRuntime::Podman),
    ];
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = stem.strip_prefix(prefix) {
            return is_container_id(id).then(|| (id.to_ascii_lowercase(), *runtime, driver));
        }
    }
    if driver == CgroupDriver::Cgroupfs && stem.len() == 64 && is_hex(stem) {
        return Some((stem.to_ascii_lowercase(), ContainerRuntime::Unknown, driver));
    }
    None
}

fn is_container_id(id: &str) -> bool {
    id.len() >= 12 && id.len() <= 128 && is_hex(id)
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where a bare-hex cgroupfs container sits under `/docker/…` we know it is docker.
fn refine_runtime(attr: &mut CgroupAttribution) {
    if attr.runtime == ContainerRuntime::Unknown
        && attr.container_id.is_some()
        && attr.pod_uid.is_none()
        && attr.path.split('/').any(|c| c == "docker")
    {
        attr.runtime = ContainerRuntime::Docker;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1c2a3b4d-5e6f-4a1b-9c8d-0123456789ab";
    const UID_: &str = "1c2a3b4d_5e6f_4a1b_9c8d_0123456789ab";
    const CID: &str = "4f0a6e0d7c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a3928170f6e5d4c3b2a";

    struct Case {
        name: &'static str,
        path: String,
        pod: Option<&'static str>,
        container: Option<&'static str>,
        runtime: ContainerRuntime,
        driver: Option<CgroupDriver>,
        qos: Option<QosClass>,
    }

    fn cases() -> Vec<Case> {
        use CgroupDriver::*;
        use ContainerRuntime::*;
        use QosClass::*;
        vec![
            Case {
                name: "systemd containerd burstable",
                path: format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope"),
                pod: Some(UID), container: Some(CID), runtime: Containerd, driver: Some(Systemd), qos: Some(Burstable),
            },
            Case {
                name: "systemd containerd besteffort",
                path: format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope"),
                pod: Some(UID), container: Some(CID), runtime: Containerd, driver: Some(Systemd), qos: Some(BestEffort),
            },
            Case {
                name: "systemd containerd guaranteed",
                path: format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope"),
                pod: Some(UID), container: Some(CID), runtime: Containerd, driver: Some(Systemd), qos: Some(Guaranteed),
            },
            Case {
                name: "systemd cri-o burstable",
                path: format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-{CID}.scope"),
                pod: Some(UID), container: Some(CID), runtime: CriO, driver: Some(Systemd), qos: Some(Burstable),
            },
            Case {
                name: "systemd cri-o conmon is the pod, not the container",
                path: format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/crio-conmon-{CID}.scope"),
                pod: Some(UID), container: None, runtime: Unknown, driver: Some(Systemd), qos: Some(Burstable),
            },
            Case {
                name: "systemd dockershim besteffort",
                path: format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{CID}.scope"),
                pod: Some(UID), container: Some(CID), runtime: Docker, driver: Some(Systemd), qos: Some(BestEffort),
            },
            Case {
                name: "cgroupfs burstable (containerd/docker bare id)",
                path: format!("/kubepods/burstable/pod{UID}/{CID}"),
                pod: Some(UID), container: Some(CID), runtime: Unknown, driver: Some(Cgroupfs), qos: Some(Burstable),
            },
            Case {
                name: "cgroupfs besteffort",
                path: format!("/kubepods/besteffort/pod{UID}/{CID}"),
                pod: Some(UID), container: Some(CID), runtime: Unknown, driver: Some(Cgroupfs), qos: Some(BestEffort),
            },
            Case {
                name: "cgroupfs guaranteed",
                path: format!("/kubepods/pod{UID}/{CID}"),
                pod: Some(UID), container: Some(CID), runtime: Unknown, driver: Some(Cgroupfs), qos: Some(Guaranteed),
            },
            Case {
                name: "cgroupfs cri-o",
                path: format!("/kubepods/burstable/pod{UID}/crio-{CID}"),
                pod: Some(UID), container: Some(CID), runtime: CriO, driver: Some(Cgroupfs), qos: Some(Burstable),
            },
            Case {
                name: "cgroupfs pod-level process (pause, no container dir)",
                path: format!("/kubepods/besteffort/pod{UID}"),
                pod: Some(UID), container: None, runtime: Unknown, driver: Some(Cgroupfs), qos: Some(BestEffort),
            },
            Case {
                name: "kind node: kubelet.slice nested in the node's docker scope",
                path: format!("/system.slice/docker-{}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{CID}.scope", "ab".repeat(32)),
                pod: Some(UID), container: Some(CID), runtime: Containerd, driver: Some(Systemd), qos: Some(BestEffort),
            },
            Case {
                name: "k3s cgroupfs with static-pod hash uid",
                path: format!("/kubepods/burstable/pod0f5c3b0e2c9e6c8b7a2a1f1e0d3c4b5a/{CID}"),
                pod: Some("0f5c3b0e2c9e6c8b7a2a1f1e0d3c4b5a"), container: Some(CID), runtime: Unknown, driver: Some(Cgroupfs), qos: Some(Burstable),
            },
            Case {
                name: "systemd static pod hash uid",
                path: format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f5c3b0e2c9e6c8b7a2a1f1e0d3c4b5a.slice/cri-containerd-{CID}.scope"),
                pod: Some("0f5c3b0e2c9e6c8b7a2a1f1e0d3c4b5a"), container: Some(CID), runtime: Containerd, driver: Some(Systemd), qos: Some(Burstable),
            },
            Case {
                name: "plain docker, systemd",
                path: format!("/system.slice/docker-{CID}.scope"),
                pod: None, container: Some(CID), runtime: Docker, driver: Some(Systemd), qos: None,
            },
            Case {
                name: "plain docker, cgroupfs",
                path: format!("/docker/{CID}"),
                pod: None, container: Some(CID), runtime: Docker, driver: Some(Cgroupfs), qos: None,
            },
            Case {
                name: "podman",
                path: format!("/machine.slice/libpod-{CID}.scope"),
                pod: None, container: Some(CID), runtime: Podman, driver: Some(Systemd), qos: None,
            },
            Case {
                name: "container with systemd inside (init.scope below the container)",
                path: format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{CID}.scope/init.scope"),
                pod: Some(UID), container: Some(CID), runtime: Containerd, driver: Some(Systemd), qos: Some(Guaranteed),
            },
            Case {
                name: "host service",
                path: "/system.slice/nginx.service".into(),
                pod: None, container: None, runtime: Unknown, driver: None, qos: None,
            },
            Case {
                name: "user session",
                path: "/user.slice/user-1000.slice/session-3.scope".into(),
                pod: None, container: None, runtime: Unknown, driver: None, qos: None,
            },
            Case {
                name: "cgroup namespace root",
                path: "/".into(),
                pod: None, container: None, runtime: Unknown, driver: None, qos: None,
            },
            Case {
                name: "unknown runtime prefix",
                path: format!("/kubepods.slice/kubepods-pod{UID_}.slice/garden-{CID}.scope"),
                pod: Some(UID), container: None, runtime: Unknown, driver: Some(Systemd), qos: Some(Guaranteed),
            },
            Case {
                name: "malformed pod uid is not a pod",
                path: format!("/kubepods/burstable/podnot-a-uid/{CID}"),
                pod: None, container: Some(CID), runtime: Unknown, driver: Some(Cgroupfs), qos: None,
            },
            Case {
                name: "garbage",
                path: "::/../\u{0}weird/pod/.slice/.scope".into(),
                pod: None, container: None, runtime: Unknown, driver: None, qos: None,
            },
        ]
    }

    #[test]
    fn path_table() {
        for c in cases() {
            let a = attribute_path(&c.path);
            assert_eq!(a.pod_uid.as_deref(), c.pod, "{}: pod", c.name);
            assert_eq!(
                a.container_id.as_deref(),
                c.container,
                "{}: container",
                c.name
            );
            assert_eq!(a.runtime, c.runtime, "{}: runtime", c.name);
            assert_eq!(a.driver, c.driver, "{}: driver", c.name);
            assert_eq!(a.qos, c.qos, "{}: qos", c.name);
            assert_eq!(a.path, c.path, "{}: path kept", c.name);
        }
    }

    #[test]
    fn proc_cgroup_v1_hybrid() {
        let path = format!("/kubepods/burstable/pod{UID}/{CID}");
        let text = format!(
            "12:pids:{path}\n11:memory:{path}\n4:cpu,cpuacct:{path}\n1:name=systemd:{path}\n0::/\n"
        );
        let a = attribute_proc_cgroup(&text);
        assert_eq!(a.pod_uid.as_deref(), Some(UID));
        assert_eq!(a.container_id.as_deref(), Some(CID));
        assert_eq!(a.qos, Some(QosClass::Burstable));
    }

    #[test]
    fn proc_cgroup_v2_only() {
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CID}.scope\n"
        );
        let a = attribute_proc_cgroup(&text);
        assert_eq!(a.pod_uid.as_deref(), Some(UID));
        assert_eq!(a.runtime, ContainerRuntime::CriO);
        assert_eq!(a.short_container_id(), Some(&CID[..12]));
        assert_eq!(
            unified_path(&text),
            Some(a.path.as_str()),
            "the v2 path is the one used"
        );
    }

    #[test]
    fn proc_cgroup_unknown_keeps_most_specific_path() {
        let text =
            "9:name=systemd:/\n4:memory:/process_api/fe09f2d32f23faf2261bd295723b3da7\n0::/\n";
        let a = attribute_proc_cgroup(text);
        assert!(a.is_unknown());
        assert_eq!(a.path, "/process_api/fe09f2d32f23faf2261bd295723b3da7");
        let empty = attribute_proc_cgroup("");
        assert!(empty.is_unknown());
        assert_eq!(empty.path, "/");
        let junk = attribute_proc_cgroup("no colons here\n:\n");
        assert!(junk.is_unknown());
    }
}
