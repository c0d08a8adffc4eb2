//! Sidecar discovery, cgroup attribution, memory and perf counters against real processes.
//!
//! Run: `cargo test -p smp-tests --test discovery -- --test-threads=1` (root for the cgroup
//! tests). Every process and cgroup a test creates is removed by a guard, also on failure.

use std::{
    collections::BTreeSet,
    fs,
    net::TcpStream,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use smp_agent::proxy::{
    cgroup::{attribute_proc_cgroup, ContainerRuntime, QosClass},
    cpu,
    discovery::{ProcSource, ProcessRole},
    memory::MemorySampler,
    perf::{probe_support, PerfEvent, ProxyPerf},
    Discovery, DiscoveryConfig, ProcError, ProcEvent, ProcFs, ProxyChange, ProxyKind,
};
use smp_tests::{require_root, Workload};

fn unique_hex(len: usize) -> String {
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from_digit((x % 16) as u32, 16).unwrap()
        })
        .collect()
}

/// A pod UID (dashed) from random hex.
fn unique_uid() -> String {
    let h = unique_hex(32);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

// ---------------------------------------------------------------------------------------------
// Memory

#[test]
fn memhog_rss_within_5_percent() {
    const MIB: u64 = 128;
    let (mut w, ready) = Workload::spawn(env!("CARGO_BIN_EXE_memhog"), &[&MIB.to_string()]);
    assert_eq!(ready, "ready");
    let procfs = ProcFs::default();
    let before = procfs.memory(w.pid(), true).expect("read memhog memory");
    w.go();
    let done = w.line();
    assert!(done.starts_with("done "), "{done}");
    let after = procfs.memory(w.pid(), true).expect("read memhog memory");
    let expect = MIB * 1024 * 1024;
    let grown = after.rss_bytes - before.rss_bytes;
    let err = (grown as f64 - expect as f64).abs() / expect as f64;
    eprintln!(
        "memhog: rss before {} after {} grown {} expected {} (error {:.2} %), pss {:?}",
        before.rss_bytes,
        after.rss_bytes,
        grown,
        expect,
        err * 100.0,
        after.pss_bytes
    );
    assert!(err < 0.05, "RSS growth {grown} not within 5 % of {expect}");
    let abs_err = (after.rss_bytes as f64 - expect as f64).abs() / expect as f64;
    assert!(
        abs_err < 0.05,
        "RSS {} not within 5 % of {expect}",
        after.rss_bytes
    );
    if let Some(pss) = after.pss_bytes {
        // A private process: PSS ≈ RSS.
        assert!(pss as f64 > 0.95 * expect as f64, "PSS {pss}");
    }
    // The sampler path, summed over "processes" (one here).
    let mut sampler = smp_agent::proxy::memory::MemorySampler::new();
    let id = smp_agent::proxy::ProxyId {
        kind: ProxyKind::Other("memhog".into()),
        scope: smp_agent::proxy::discovery::ProxyScope::Cgroup("/".into()),
        fingerprint: 0,
    };
    for _ in 0..3 {
        sampler.record(&id, procfs.proxy_memory([w.pid()], true));
    }
    let s = sampler.summary(&id).unwrap();
    assert!((s.mem_mb - MIB as f64).abs() / (MIB as f64) < 0.05, "{s:?}");
    w.finish();
}

// ---------------------------------------------------------------------------------------------
// cgroup attribution

/// Creates nested cgroup directories, puts a process in the leaf, and removes everything it
/// created on drop (after killing the process).
struct CgroupGuard {
    created: Vec<PathBuf>,
    workload: Option<Workload>,
}

impl CgroupGuard {
    fn new(base: &Path, rel: &str) -> Self {
        let mut created = Vec::new();
        let mut dir = base.to_path_buf();
        for comp in rel.split('/').filter(|c| !c.is_empty()) {
            dir.push(comp);
            if !dir.exists() {
                fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
                created.push(dir.clone());
            }
        }
        let (w, ready) = Workload::spawn(env!("CARGO_BIN_EXE_memhog"), &["1"]);
        assert_eq!(ready, "ready");
        let g = Self {
            created,
            workload: Some(w),
        };
        fs::write(dir.join("cgroup.procs"), g.pid().to_string())
            .unwrap_or_else(|e| panic!("move into {}: {e}", dir.display()));
        g
    }

    fn pid(&self) -> u32 {
        self.workload.as_ref().unwrap().pid()
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(w) = self.workload.take() {
            w.finish();
        }
        for dir in self.created.iter().rev() {
            // The exited process leaves the cgroup asynchronously: retry briefly.
            for _ in 0..50 {
                if fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn cgroup_v2_systemd_containerd_pod_is_attributed() {
    if !require_root("cgroup_v2_systemd_containerd_pod_is_attributed") {
        return;
    }
    let base = Path::new("/sys/fs/cgroup/unified");
    if !base.join("cgroup.procs").exists() {
        eprintln!("skipping: no cgroup2 mount at {}", base.display());
        return;
    }
    let uid = unique_uid();
    let cid = unique_hex(64);
    let rel = format!(
        "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{cid}.scope",
        uid.replace('-', "_")
    );
    let g = CgroupGuard::new(base, &rel);
    let mut procfs = ProcFs::default();
    let snap = procfs.snapshot(g.pid(), true).expect("snapshot");
    let a = attribute_proc_cgroup(&snap.cgroup);
    assert_eq!(a.pod_uid.as_deref(), Some(uid.as_str()), "{a:?}");
    assert_eq!(a.container_id.as_deref(), Some(cid.as_str()));
    assert_eq!(a.runtime, ContainerRuntime::Containerd);
    assert_eq!(a.qos, Some(QosClass::Burstable));

    // Discovery by pod and by container selects it; the identity is scoped to the pod.
    for cfg in [
        DiscoveryConfig {
            names: vec![],
            pods: vec![uid.clone()],
            ..DiscoveryConfig::default()
        },
        DiscoveryConfig {
            names: vec![],
            containers: vec![cid[..12].to_string()],
            ..DiscoveryConfig::default()
        },
    ] {
        let mut d = Discovery::new(cfg, ProcFs::default());
        d.rescan();
        let found: Vec<_> = d.proxies().collect();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].tgids.contains(&g.pid()));
        assert_eq!(
            found[0].id.to_string().split('#').next().unwrap(),
            format!("memhog@pod:{uid}")
        );
    }
}

#[test]
fn cgroup_v1_cgroupfs_pod_is_attributed() {
    if !require_root("cgroup_v1_cgroupfs_pod_is_attributed") {
        return;
    }
    // Nest below our own memory cgroup so any limit on this session still applies.
    let own = fs::read_to_string("/proc/self/cgroup").unwrap();
    let Some(own_mem) = own
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
    else {
        eprintln!("skipping: no cgroup v1 memory hierarchy");
        return;
    };
    let base = Path::new("/sys/fs/cgroup/memory").join(own_mem.trim_start_matches('/'));
    let uid = unique_uid();
    let cid = unique_hex(64);
    let rel = format!("kubepods/besteffort/pod{uid}/{cid}");
    let g = CgroupGuard::new(&base, &rel);
    let text = fs::read_to_string(format!("/proc/{}/cgroup", g.pid())).unwrap();
    let a = attribute_proc_cgroup(&text);
    assert_eq!(a.pod_uid.as_deref(), Some(uid.as_str()), "{text}");
    assert_eq!(a.container_id.as_deref(), Some(cid.as_str()));
    assert_eq!(a.qos, Some(QosClass::BestEffort));
    assert!(a.path.ends_with(&rel), "{}", a.path);
}

// ---------------------------------------------------------------------------------------------
// nginx

/// nginx in its own process group; drop kills the whole group.
struct Nginx {
    child: Child,
}

impl Nginx {
    fn start(conf: &Path) -> Self {
        let child = Command::new("nginx")
            .args(["-c", conf.to_str().unwrap(), "-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn nginx");
        Self { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
        self.kill_group();
    }

    fn kill_group(&mut self) {
        // SAFETY: kill(2) on our own process group (nginx master is its leader).
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.kill_group();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop (also when the test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn nginx_conf(dir: &Path, port: u16) -> PathBuf {
    let conf = dir.join("nginx.conf");
    let d = dir.display();
    fs::write(
        &conf,
        format!(
            "worker_processes 2;
pid {d}/nginx.pid;
error_log stderr;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 \"ok\\n\"; }}
    }}
}}
"
        ),
    )
    .unwrap();
    conf
}

#[test]
fn nginx_found_by_name_and_keeps_identity_across_restart() {
    if which_nginx().is_none() {
        eprintln!("skipping: nginx not installed (apt-get install nginx-light)");
        return;
    }
    let dir = TempDir::new("smp-discovery-nginx");
    let dir = dir.path();
    let port = smp_tests::free_port();
    let conf = nginx_conf(dir, port);

    let nginx = Nginx::start(&conf);
    let master = nginx.pid();
    wait_until("nginx to listen", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let mut d = Discovery::new(DiscoveryConfig::default(), ProcFs::default());
    // The master is found by name, its two workers join it.
    wait_until("master + 2 workers", Duration::from_secs(10), || {
        d.rescan();
        d.proxy_of(master)
            .and_then(|id| d.proxy(id))
            .is_some_and(|p| p.tgids.len() == 3)
    });
    let id = d.proxy_of(master).unwrap().clone();
    let p = d.proxy(&id).unwrap();
    assert_eq!(p.kind, ProxyKind::Nginx);
    assert_eq!(p.leader, Some(master));
    let workers: BTreeSet<u32> = p.tgids.iter().copied().filter(|t| *t != master).collect();
    eprintln!("nginx proxy {id}: master {master}, workers {workers:?}");

    // Memory and CPU of the proxy: summed over master + workers.
    let procfs = ProcFs::default();
    let mut mem = MemorySampler::new();
    mem.sample_discovery(&procfs, &d, true);
    let sample = procfs.proxy_memory(p.tgids.iter().copied(), true);
    assert_eq!((sample.processes, sample.skipped), (3, 0));
    let summary = mem.summary(&id).expect("sampled");
    assert!(
        summary.rss_mean_mb > 1.0 && summary.mem_mb > 0.5,
        "{summary:?}"
    );
    let threads: Vec<_> = p
        .tgids
        .iter()
        .flat_map(|t| procfs.thread_cpu(*t).unwrap())
        .collect();
    let report = cpu::report(
        &cpu::tgid_deltas(&[], &threads),
        d.tgid_owners(),
        &cpu::Requests::default(),
        Duration::from_secs(1),
    );
    let ours = report.proxies.iter().find(|c| c.proxy == id).unwrap();
    assert!(ours.ns > 0, "nginx used some CPU starting: {ours:?}");
    eprintln!("nginx memory {summary:?}, cpu since start {} ns", ours.ns);

    // Kill: exit event for the master, rescan drops the workers.
    nginx.stop();
    let ch = d.handle_event(ProcEvent::Exit { pid: master });
    assert_eq!(
        ch,
        vec![ProxyChange::Removed {
            proxy: id.clone(),
            tgid: master
        }]
    );
    wait_until("workers dropped", Duration::from_secs(10), || {
        d.rescan();
        d.proxy(&id).is_some_and(|p| p.tgids.is_empty())
    });

    // Restart: found again through its exec event, new pid, same identity.
    let nginx2 = Nginx::start(&conf);
    let master2 = nginx2.pid();
    assert_ne!(master, master2);
    let mut ch = d.handle_event(ProcEvent::Exec { pid: master2 });
    // Right after spawn() the kernel may still be setting up nginx's argv: retried.
    for _ in 0..40 {
        if !d.has_pending() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        ch.extend(d.retry_pending());
    }
    assert_eq!(
        ch,
        vec![ProxyChange::Added {
            proxy: id.clone(),
            tgid: master2,
            role: ProcessRole::Leader,
            restart: true
        }]
    );
    wait_until("new workers", Duration::from_secs(10), || {
        d.rescan();
        d.proxy(&id).is_some_and(|p| p.tgids.len() == 3)
    });
    let p = d.proxy(&id).unwrap();
    assert_eq!((p.leader, p.restarts), (Some(master2), 1));
    assert!(
        p.tgids.is_disjoint(&workers),
        "new workers, not the old ones"
    );
    // Old and new tgids all map to the one proxy (CPU attribution continues).
    assert_eq!(d.tgid_owners().get(&master), Some(&id));
    assert_eq!(d.tgid_owners().get(&master2), Some(&id));
    nginx2.stop();
}

fn which_nginx() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

// ---------------------------------------------------------------------------------------------
// Envoy from the PyPI wheel

/// The `envoy` console script of the PyPI wheel (`$SMP_ENVOY`, else the lab's venv).
fn envoy_wrapper() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SMP_ENVOY") {
        return Some(PathBuf::from(p));
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/envoy-venv/bin/envoy");
    p.exists().then_some(p)
}

#[test]
fn envoy_wheel_is_found_through_its_python_wrapper() {
    let Some(wrapper) = envoy_wrapper() else {
        eprintln!("skipping: no envoy wheel (set SMP_ENVOY to its bin/envoy script)");
        return;
    };
    let dir = TempDir::new("smp-discovery-envoy");
    let conf = dir.path().join("envoy.yaml");
    fs::write(
        &conf,
        "admin:\n  address:\n    socket_address: { address: 127.0.0.1, port_value: 0 }\n",
    )
    .unwrap();
    // The wrapper is a Python script (comm "envoy", exe python3) that execv()s
    // .../envoy/_bin/envoy in the same pid.
    let mut child = Command::new(&wrapper)
        .args([
            "-c",
            conf.to_str().unwrap(),
            "--disable-hot-restart",
            "--concurrency",
            "1",
            "-l",
            "error",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn envoy wrapper");
    let pid = child.id();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let guard = Kill(&mut child);
    let mut d = Discovery::new(DiscoveryConfig::default(), ProcFs::default());
    // Whatever the exec event sees first (python wrapper or envoy), no wrong proxy appears.
    for c in d.handle_event(ProcEvent::Exec { pid }) {
        if let ProxyChange::Added { proxy, .. } = c {
            assert_eq!(proxy.kind, ProxyKind::Envoy);
        }
    }
    wait_until("envoy found", Duration::from_secs(20), || {
        std::thread::sleep(Duration::from_millis(100));
        d.retry_pending();
        d.rescan();
        d.proxy_of(pid).is_some()
    });
    let id = d.proxy_of(pid).unwrap().clone();
    let snap = ProcFs::default().snapshot(pid, true).unwrap();
    eprintln!("envoy proxy {id}: exe {:?}", snap.exe);
    assert_eq!(id.kind, ProxyKind::Envoy);
    assert!(snap.exe.unwrap().ends_with("envoy/_bin/envoy"));
    let p = d.proxy(&id).unwrap();
    assert_eq!(p.tgids, BTreeSet::from([pid]), "Envoy is one process");
    drop(guard);
}

// ---------------------------------------------------------------------------------------------
// Bad input

/// procfs, but the listed pid `doomed` is killed between listing and reading.
struct RacyProcFs {
    inner: ProcFs,
    doomed: Option<Child>,
}

impl ProcSource for RacyProcFs {
    fn pids(&mut self) -> Result<Vec<u32>, ProcError> {
        let pids = self.inner.pids()?;
        if let Some(mut c) = self.doomed.take() {
            assert!(pids.contains(&c.id()));
            c.kill().unwrap();
            c.wait().unwrap();
        }
        Ok(pids)
    }
    fn snapshot(
        &mut self,
        pid: u32,
        full: bool,
    ) -> Result<smp_agent::proxy::ProcessSnapshot, ProcError> {
        self.inner.snapshot(pid, full)
    }
}

#[test]
fn bad_inputs_give_clear_results_not_crashes() {
    // Unknown proxy name: nothing found, no error.
    let mut d = Discovery::new(
        DiscoveryConfig {
            names: vec!["no-such-proxy-xyz".into()],
            ..DiscoveryConfig::default()
        },
        ProcFs::default(),
    );
    assert!(d.rescan().is_empty());
    assert_eq!(d.proxies().count(), 0);

    // Nonexistent explicit pid: not found, counted as gone.
    let ghost = 4_194_304 + 11;
    let mut d = Discovery::new(
        DiscoveryConfig {
            pids: vec![ghost],
            ..DiscoveryConfig::default()
        },
        ProcFs::default(),
    );
    assert!(d.handle_event(ProcEvent::Exec { pid: ghost }).is_empty());
    assert!(d
        .rescan()
        .iter()
        .all(|c| !matches!(c, ProxyChange::Added { tgid, .. } if *tgid == ghost)));
    // ≥: other processes on the node may also exit mid-scan.
    assert!(d.stats().skipped_gone >= 1);
    assert!(matches!(
        ProcFs::default().snapshot(ghost, true),
        Err(ProcError::Gone { pid }) if pid == ghost
    ));
    assert!(ProcFs::default().memory(ghost, true).is_err());

    // A pid that disappears mid-scan (explicitly selected, so it would have been read).
    let child = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let doomed = child.id();
    let mut d = Discovery::new(
        DiscoveryConfig {
            pids: vec![doomed],
            ..DiscoveryConfig::default()
        },
        RacyProcFs {
            inner: ProcFs::default(),
            doomed: Some(child),
        },
    );
    let changes = d.rescan();
    assert!(changes
        .iter()
        .all(|c| !matches!(c, ProxyChange::Added { tgid, .. } if *tgid == doomed)));
    assert!(d.stats().skipped_gone >= 1, "{:?}", d.stats());

    // Perf counters on a gone pid: a clean error.
    let mut perf = ProxyPerf::new();
    assert!(matches!(
        perf.add_process(&ProcFs::default(), ghost),
        Err(ProcError::Gone { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// perf_event counters

#[test]
fn perf_counters_follow_threads_created_later() {
    let support = probe_support();
    for (e, r) in &support {
        eprintln!(
            "perf {e}: {}",
            match r {
                Ok(()) => "available".to_string(),
                Err(why) => why.clone(),
            }
        );
    }
    if support[&PerfEvent::TaskClock].is_err() {
        eprintln!("skipping: task-clock unavailable");
        return;
    }
    // 3 threads × 200 ms, all created after the counters are opened (inherit).
    let (mut w, ready) = Workload::spawn(env!("CARGO_BIN_EXE_burner"), &["3", "200"]);
    assert_eq!(ready, "ready");
    let mut perf = ProxyPerf::new();
    perf.add_process(&ProcFs::default(), w.pid())
        .expect("open counters");
    w.go();
    let done = w.line();
    let (burned, _) = smp_tests::burner_done(&done);
    let r = perf.read();
    let task_clock = r.task_clock_ns.value().unwrap();
    eprintln!("burned {burned} ns, task-clock {task_clock} ns, reading {r:?}");
    let err = (task_clock as f64 - burned as f64) / burned as f64;
    assert!(
        err > -0.03 && err < 0.10,
        "task-clock {task_clock} vs burned {burned}"
    );
    assert!(r.context_switches.value().is_some());
    w.finish();
}

/// Not a check: prints what discovery finds on this node and what a rescan costs.
/// `cargo test -p smp-tests --test discovery -- --ignored --nocapture node_scan`
#[test]
#[ignore = "diagnostic: prints the node's proxies"]
fn node_scan_report() {
    let mut d = Discovery::new(DiscoveryConfig::default(), ProcFs::default());
    let start = Instant::now();
    d.rescan();
    let first = start.elapsed();
    let start = Instant::now();
    let rounds = 20u32;
    for _ in 0..rounds {
        d.rescan();
    }
    let steady = start.elapsed() / rounds;
    let procs = ProcFs::default().pids().map(|p| p.len()).unwrap_or(0);
    eprintln!(
        "{procs} processes: first rescan {first:?}, steady rescan {steady:?}, stats {:?}",
        d.stats()
    );
    for p in d.proxies() {
        eprintln!(
            "{} leader {:?} tgids {:?} pod {:?} container {:?}",
            p.id,
            p.leader,
            p.tgids,
            p.attribution.pod_uid,
            p.attribution.short_container_id()
        );
    }
}
