//! Unit tests of `discovery` (kept apart so the module reads as what it does).

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
        netns: None,
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

/// Istio's ztunnel in dedicated mode, one per pod, takes no arguments: two of them in two
/// network namespaces under one host cgroup (pods made with `ip netns`) are two proxies, a
/// restart in the same namespace is the same one, and a pod's scope needs no namespace.
#[test]
fn one_command_line_in_two_network_namespaces_is_two_proxies() {
    let cfg = DiscoveryConfig::default();
    let zt = |pid, netns| ProcessSnapshot {
        netns,
        ..snap(
            pid,
            1,
            "ztunnel",
            "/usr/local/bin/ztunnel",
            &["ztunnel", "proxy"],
        )
    };
    let id = |s: &ProcessSnapshot| classify(s, &cfg).unwrap().identity;
    let (client, server) = (id(&zt(10, Some(4026532301))), id(&zt(11, Some(4026532377))));
    assert_eq!(client.kind, ProxyKind::Ztunnel);
    assert_ne!(client, server);
    assert_ne!(client.to_string(), server.to_string(), "labels differ too");
    assert_eq!(
        client,
        id(&zt(12, Some(4026532301))),
        "restarted in its namespace"
    );
    assert_ne!(
        client,
        id(&zt(13, None)),
        "the host's namespace is another place"
    );
    let (p1, p2) = (
        in_pod(zt(14, Some(4026532301)), "abc"),
        in_pod(zt(15, Some(4026532999)), "abc"),
    );
    assert_eq!(id(&p1), id(&p2), "a pod's scope is its identity");
}
