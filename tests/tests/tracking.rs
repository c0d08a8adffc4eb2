//! Live tracking on the mesh lab: proxies found by name, followed across restarts, and their
//! CPU per request (the `Tracker` behind `top --name`, `profile` and `daemon`).

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use smp_agent::{
    lab::{
        config::{ProxyKind, Side},
        Lab, LabInfo,
    },
    proxy::DiscoveryConfig,
    tracker::{Tracker, TrackerConfig, TrackerView},
};
use smp_tests::{
    agent_bin, drive_in_netns, lab_config, meshed_addr, proc_cpu_ns, require_root, with_lab,
};

/// A tracker pumping on its own runtime thread until told to stop; returns its last view.
struct Live {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<TrackerView>,
}

impl Live {
    fn start(names: &[&str]) -> (Live, TrackerView) {
        let cfg = TrackerConfig {
            discovery: DiscoveryConfig {
                names: names.iter().map(|s| s.to_string()).collect(),
                ..DiscoveryConfig::default()
            },
            // Long enough that the test proves the events, not the safety net, found them.
            rescan_every: Duration::from_secs(30),
            ..TrackerConfig::default()
        };
        let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut t = Tracker::start(cfg).await.expect("tracker start");
                first_tx.send(t.view()).unwrap();
                loop {
                    let until = tokio::time::Instant::now() + Duration::from_millis(200);
                    tokio::select! {
                        r = t.pump_until(until) => r.expect("pump"),
                        _ = &mut stop_rx => break,
                    }
                }
                // Let the last records arrive.
                let until = tokio::time::Instant::now() + Duration::from_millis(300);
                t.pump_until(until).await.expect("pump");
                t.sample().expect("sample");
                t.view()
            })
        });
        let first = first_rx.recv().expect("tracker started");
        (Live { stop, thread }, first)
    }

    fn finish(self) -> TrackerView {
        let _ = self.stop.send(());
        self.thread.join().expect("tracker thread")
    }
}

fn drive(info: &LabInfo, rate: f64, secs: u64) -> u64 {
    let (ok, failed) = drive_in_netns(
        &info.client_netns,
        meshed_addr(info),
        8,
        rate,
        Duration::from_secs(secs),
        |_| None,
    );
    assert_eq!(failed, 0, "{failed} requests failed");
    ok.len() as u64
}

/// Issue 5: a proxy killed and restarted is re-found with its new pid (from the exec event,
/// well within a second) and its counters continue under the same identity.
#[test]
fn restarted_sidecar_keeps_its_identity_and_counters() {
    if !require_root("restarted_sidecar_keeps_its_identity_and_counters") {
        return;
    }
    let cfg = lab_config("trk1", ProxyKind::Envoy, false);
    with_lab(&cfg, |info| {
        let (live, first) = Live::start(&["envoy"]);
        // Only the lab's sidecars count (another Envoy may run on this machine).
        let lab = [info.outbound.pid, info.inbound.pid];
        let of_lab =
            |p: &&smp_agent::tracker::ProxyView| p.pids_seen.iter().any(|x| lab.contains(x));
        assert_eq!(
            first.proxies.iter().filter(of_lab).count(),
            2,
            "{:?}",
            first.proxies
        );
        let old_pid = info.outbound.pid;
        let before = drive(info, 200.0, 2);
        let new_pid = Lab::restart_sidecar(&info.name, Side::Outbound).expect("restart");
        assert_ne!(new_pid, old_pid);
        let after = drive(info, 200.0, 2);
        let view = live.finish();

        let out = view
            .proxies
            .iter()
            .find(|p| p.pids_seen.contains(&old_pid))
            .expect("the outbound sidecar");
        let new_of_lab = |p: &&smp_agent::tracker::ProxyView| {
            p.pids_seen.iter().any(|x| lab.contains(x) || *x == new_pid)
        };
        assert_eq!(
            view.proxies.iter().filter(new_of_lab).count(),
            2,
            "one identity per sidecar"
        );
        assert_eq!(out.pids_seen, vec![old_pid, new_pid]);
        assert_eq!(out.leader, Some(new_pid));
        assert_eq!(out.restarts, 1);
        // Every request of both incarnations, counted under one identity.
        assert_eq!(out.pairing.requests, before + after, "{:?}", out.pairing);
        assert_eq!(out.pairing.paired, before + after, "{:?}", out.pairing);
        let hop_count: u64 = view.hops_of(&out.proxy).map(|(_, _, h)| h.len()).sum();
        assert_eq!(hop_count, 2 * (before + after), "request + response hops");
        assert!(out.cpu_ns > 0);
        // perf_event counters of both incarnations: task-clock and context switches where
        // every machine has them; cycles and instructions present or absent with the reason.
        let perf = out.perf.as_ref().expect("perf counters");
        let task_clock = perf.task_clock_ns.value().expect("task-clock");
        assert!(task_clock > 0, "{perf:?}");
        assert!(
            perf.context_switches.value().is_some_and(|n| n > 0),
            "{perf:?}"
        );
        for v in [&perf.cycles, &perf.instructions] {
            match v {
                smp_agent::proxy::perf::PerfValue::Absent { reason } => assert!(!reason.is_empty()),
                _ => assert!(v.value().is_some()),
            }
        }
        // The new pid was tracked right after the old one left: by the exec event, not the
        // (30 s) rescan.
        let gone = view
            .changes
            .iter()
            .find(|(_, c)| matches!(c, smp_agent::proxy::ProxyChange::Removed { tgid, .. } if *tgid == old_pid))
            .map(|(t, _)| *t)
            .expect("removal of the old pid");
        let back = view
            .changes
            .iter()
            .find(|(_, c)| matches!(c, smp_agent::proxy::ProxyChange::Added { tgid, restart: true, .. } if *tgid == new_pid))
            .map(|(t, _)| *t)
            .expect("the new pid, as a restart");
        assert!(
            back.saturating_sub(gone) < Duration::from_secs(1),
            "re-found after {:?}",
            back.saturating_sub(gone)
        );
        assert_eq!(view.discovery.rescans, 1, "only the initial scan ran");
    });
}

/// nginx started after the tracker: the master is found by its exec, the workers by the fork
/// events, before the first request (every request is counted).
#[test]
fn proxies_started_later_are_found_with_their_workers() {
    if !require_root("proxies_started_later_are_found_with_their_workers") {
        return;
    }
    let (live, first) = Live::start(&["nginx"]);
    let before: Vec<u32> = first.proxies.iter().flat_map(|p| p.pids.clone()).collect();
    let cfg = lab_config("trk2", ProxyKind::Nginx, false);
    let view = with_lab(&cfg, |info| {
        let n = drive(info, 200.0, 2);
        let view = live.finish();
        (view, n, info.outbound.pid, info.inbound.pid)
    });
    let (view, n, out_pid, in_pid) = view;
    for pid in [out_pid, in_pid] {
        let p = view
            .proxies
            .iter()
            .find(|p| p.pids_seen.first() == Some(&pid))
            .unwrap_or_else(|| panic!("nginx {pid} not found: {:?}", view.proxies));
        assert!(
            p.pids_seen.len() >= 2,
            "master and worker(s): {p:?}\nall: {:?}\nchanges: {:?}",
            view.proxies
                .iter()
                .map(|p| (&p.id, &p.pids_seen))
                .collect::<Vec<_>>(),
            view.changes
        );
        assert!(
            p.pids_seen.iter().all(|x| !before.contains(x)),
            "found after the tracker started: {p:?}"
        );
        assert_eq!(p.pairing.requests, n, "{p:?}");
    }
}

/// Issue 5: CPU-µs per request of each sidecar, measured by two `top --name` runs at the same
/// rate, agrees within ±10 %, and with the kernel's own accounting (`/proc/<pid>/stat`). The
/// two runs watch the same 8 s of load: Envoy's own CPU per request moves by up to ±20 %
/// between consecutive runs on a shared VM (hypervisor steal counts as on-CPU time in a
/// guest), which says nothing about the tool.
#[test]
fn cpu_per_request_is_stable_between_two_runs() {
    if !require_root("cpu_per_request_is_stable_between_two_runs") {
        return;
    }
    let cfg = lab_config("trk3", ProxyKind::Envoy, false);
    with_lab(&cfg, |info| {
        // The first run starts while the second loads its programs (1–2 s), and both must
        // still be watching when the 8 s of load end.
        let spawn = || {
            let mut top = Command::new(agent_bin())
                .args([
                    "top",
                    "--name",
                    "envoy",
                    "--duration",
                    "13s",
                    "--output",
                    "json",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn top");
            wait_for_line(top.stderr.take().expect("stderr"), "tracking");
            top
        };
        let figures = |top: std::process::Child, n: u64| -> Vec<(String, f64, u64)> {
            let out = top.wait_with_output().expect("top");
            assert!(out.status.success(), "top failed");
            let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
            // Only the lab's sidecars (another Envoy may run on this machine).
            let lab = [info.outbound.pid, info.inbound.pid];
            let proxies: Vec<&Value> = doc["proxies"]
                .as_array()
                .expect("proxies")
                .iter()
                .filter(|p| {
                    p["pids_seen"].as_array().is_some_and(|a| {
                        a.iter()
                            .any(|x| x.as_u64().is_some_and(|x| lab.contains(&(x as u32))))
                    })
                })
                .collect();
            assert_eq!(proxies.len(), 2, "{doc}");
            proxies
                .into_iter()
                .map(|p| {
                    let reqs = p["requests"].as_u64().unwrap();
                    assert_eq!(reqs, n, "requests of {}: {}", p["id"], p["pairing"]);
                    (
                        p["id"].as_str().unwrap().to_string(),
                        p["cpu"]["cpu_us_per_request"].as_f64().unwrap(),
                        reqs,
                    )
                })
                .collect()
        };
        // Warm the sidecars first: a fresh Envoy's first seconds (connection pools, lazy
        // init) cost more CPU per request than its steady state.
        drive(info, 400.0, 2);
        let (first, second) = (spawn(), spawn());
        let lab = [info.outbound.pid, info.inbound.pid];
        let stat0 = lab.map(proc_cpu_ns);
        let n = drive(info, 400.0, 8);
        let a = figures(first, n);
        let b = figures(second, n);
        let stat1 = lab.map(proc_cpu_ns);
        // The kernel's figure for the same window (the runs' last seconds are idle: a little more).
        let per_request = |i: usize| (stat1[i] - stat0[i]) as f64 / 1e3 / n as f64;
        let mut kernel: Vec<f64> = (0..2).map(per_request).collect();
        kernel.sort_by(f64::total_cmp);
        let mut probes: Vec<f64> = a.iter().map(|(_, x, _)| *x).collect();
        probes.sort_by(f64::total_cmp);
        eprintln!("kernel (/proc/<pid>/stat): {kernel:.1?} us/request, probes {probes:.1?}");
        for (k, p) in kernel.iter().zip(&probes) {
            assert!(
                (k - p).abs() <= 0.10 * k.max(*p),
                "probes {p:.1} vs kernel {k:.1} CPU-us per request"
            );
        }
        for ((id, x, _), (id2, y, _)) in a.iter().zip(&b) {
            assert_eq!(id, id2, "same identities in both runs");
            eprintln!("{id}: {x:.1} vs {y:.1} us/request");
            assert!(
                (x - y).abs() <= 0.10 * x.max(*y),
                "{id}: {x:.1} vs {y:.1} CPU-us per request"
            );
        }
    });
}

/// Reads `r` until a line contains `needle`, then keeps draining it in the background.
fn wait_for_line(r: impl std::io::Read + Send + 'static, needle: &str) {
    use std::io::BufRead as _;
    let mut lines = std::io::BufReader::new(r).lines();
    for line in lines.by_ref() {
        let line = line.expect("read");
        if line.contains(needle) {
            std::thread::spawn(move || lines.for_each(drop));
            return;
        }
    }
    panic!("the process ended before printing {needle:?}");
}
