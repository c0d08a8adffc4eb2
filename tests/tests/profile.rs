//! `smp-agent profile` end to end: on the mesh lab with every proxy kind, mTLS off and on,
//! the written result set re-reads strictly and its numbers hang together; Ctrl-C and SIGTERM
//! still write what was measured and take the lab down; bad input names the file, line and
//! field and writes nothing.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use smp_agent::aggregate::path::Peer;
use smp_agent::report::{
    details::{DataPlane, Direction, Leg},
    set::{
        DETAILS_FILE, ENVIRONMENT_FILE, MESH_CONFIG_FILE, REPORT_FILE, RESULT_FILE,
        TEST_CONFIG_FILE,
    },
    smp::MeshType,
    ResultSet, Strictness,
};
use smp_tests::{
    agent_bin,
    browser::{chromium, dump_dom},
    require_root, require_ztunnel,
};

/// The load of a lab profile: a fixed rate over a number of connections, for a duration
/// after a warm-up.
#[derive(Clone, Copy)]
struct Load {
    rate: u32,
    connections: u32,
    seconds: u32,
}

/// What every proxy kind is profiled at.
const STEADY: Load = Load {
    rate: 200,
    connections: 8,
    seconds: 3,
};

/// The load of the pairing tests on busy labs (`ends.rs`): 1 000 rps over 64 connections.
const BUSY: Load = Load {
    rate: 1000,
    connections: 64,
    seconds: 4,
};

/// Plain and mTLS profiles of a lab of `proxy` (with `extra` flags) under [`BUSY`], each held
/// to every check and self-consistency.
fn busy_profiles(names: [&str; 2], proxy: &str, extra: &[&str]) {
    for (name, mtls) in names.into_iter().zip([false, true]) {
        let (_, dir) = lab_profile_in(name, proxy, mtls, extra, BUSY);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smp-profile-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn profile(args: &[&str]) -> Output {
    Command::new(agent_bin())
        .arg("profile")
        .args(args)
        .output()
        .expect("run smp-agent profile")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One lab profile; checks what every proxy kind must satisfy. Returns the set.
fn lab_profile(name: &str, proxy: &str, mtls: bool) -> ResultSet {
    let (set, dir) = lab_profile_in(name, proxy, mtls, &[], STEADY);
    let _ = std::fs::remove_dir_all(&dir);
    set
}

/// [`lab_profile`] with extra flags, keeping the results directory (returned).
///
/// The self-consistency check compares two load runs made one after the other (meshed, then
/// baseline): on this shared VM a slow phase of a few minutes can cover one and not the
/// other (2026-12-02: 3 of 6 lab profiles inconsistent with every latency up to 2x, the same
/// build consistent in 6 of 6 ten minutes later). So an inconsistent profile is run once more,
/// and the second must hold; everything else must hold on every run.
fn lab_profile_in(
    name: &str,
    proxy: &str,
    mtls: bool,
    extra: &[&str],
    load: Load,
) -> (ResultSet, PathBuf) {
    // HTTP/1.1 between the sidecars: one exchange at a time on a connection, every request
    // joined across them. ztunnels always speak HTTP/2 to each other (HBONE): two streams
    // can overlap on their connection, and are then counted ambiguous, not joined.
    let h1 = proxy != "ztunnel" && !extra.iter().any(|f| *f == "--h2" || *f == "--app-protocol");
    let checked = |set: &ResultSet| consistency(name, set).and_then(|()| breakdown(name, set, h1));
    let (set, dir) = checked_profile(name, proxy, mtls, extra, load);
    match checked(&set) {
        Ok(()) => (set, dir),
        Err(first) => {
            eprintln!("{name}: {first}; the machine may have changed pace between the two load runs: once more");
            let _ = std::fs::remove_dir_all(&dir);
            let (set, dir) = checked_profile(name, proxy, mtls, extra, load);
            if let Err(second) = checked(&set) {
                panic!("{name}: {second} (first run: {first})");
            }
            (set, dir)
        }
    }
}

/// Self-consistency (docs/design.md, issue 6): what the proxies add per request (wait + hop +
/// send of the four hops) explains the meshed − baseline median within 25 % (or 0.05 ms: the
/// medians of 600 requests move by that much between runs; or two wake-ups of a task on an
/// idle CPU, measured on the machine: the ends' wake-ups, which no proxy's socket holds,
/// docs/hops.md), the verdict `profile` prints: its tolerance, checked to be no looser than
/// those.
fn consistency(name: &str, set: &ResultSet) -> Result<(), String> {
    let d = set.details.as_ref().expect("details");
    let c = d.consistency.as_ref().expect("consistency check");
    let sum: f64 = d.hops.iter().map(|h| h.latency.percentiles.p50).sum();
    assert!((c.sum_hop_p50_ms - sum).abs() < 1e-9);
    let explained = c.sum_hop_p50_ms + c.sum_wait_p50_ms + c.sum_send_p50_ms;
    let bound = (0.25 * c.overhead_p50_ms).max(0.05).max(c.ends_wake_ms);
    assert!(
        (c.tolerance_ms - bound).abs() < 1e-9,
        "{name}: tolerance {} against {bound}",
        c.tolerance_ms
    );
    // This machine has two CPUs: the round trip is measured, and is a few wake-ups at most.
    assert!(
        c.ends_wake_ms > 0.0 && c.ends_wake_ms < 1.0,
        "{name}: {} ms for two wake-ups",
        c.ends_wake_ms
    );
    eprintln!(
        "{name}: hops {:.3} + waits {:.3} + sends {:.3} = {explained:.3} ms vs overhead {:.3} ms ({:.0}%); tolerance {:.3} ms (two wake-ups on an idle CPU {:.3} ms)",
        c.sum_hop_p50_ms,
        c.sum_wait_p50_ms,
        c.sum_send_p50_ms,
        c.overhead_p50_ms,
        100.0 * explained / c.overhead_p50_ms,
        c.tolerance_ms,
        c.ends_wake_ms
    );
    if (explained - c.overhead_p50_ms).abs() <= c.tolerance_ms {
        Ok(())
    } else {
        Err(format!(
            "{explained:.3} ms explained of an overhead of {:.3} ms",
            c.overhead_p50_ms
        ))
    }
}

/// Where the time goes (issue 21): the requests joined across the two sidecars, and at the
/// median their parts (outbound, network leg, inbound) explain meshed − baseline within
/// self-consistency's tolerance, as the sums of medians must. Over HTTP/1.1 every paired
/// request is joined (≥ 99 % of the outbound's request hops); with HTTP/2 the overlapping
/// streams are counted ambiguous, not guessed, and what is joined must still explain the
/// overhead.
fn breakdown(name: &str, set: &ResultSet, h1: bool) -> Result<(), String> {
    let d = set.details.as_ref().expect("details");
    let b = d
        .breakdown
        .as_ref()
        .unwrap_or_else(|| panic!("{name}: no breakdown"));
    let c = &b.paths;
    let outbound = d
        .hops
        .iter()
        .find(|h| h.direction == Direction::Outbound && h.leg == Leg::Request)
        .expect("an outbound request hop");
    eprintln!(
        "{name}: paths {c:?} of {} outbound exchanges",
        outbound.latency.count
    );
    assert!(
        c.breakdown <= c.joined && c.joined <= outbound.latency.count,
        "{name}: {c:?}"
    );
    if h1 {
        assert!(
            c.breakdown as f64 >= 0.99 * outbound.latency.count as f64,
            "{name}: {} of {} requests joined: {c:?}",
            c.breakdown,
            outbound.latency.count
        );
        assert_eq!(c.ambiguous, 0, "{name}: {c:?}");
        // TCP's estimate of the outbound's connections to its peer, kept to compare with the
        // measured legs: one per joined exchange, none unknown.
        let e = b
            .rtt_estimates
            .iter()
            .find(|e| e.peer == Peer::OnNode)
            .unwrap_or_else(|| panic!("{name}: no estimate on this node: {:?}", b.rtt_estimates));
        assert!(e.srtt.count >= c.joined && e.unknown == 0, "{name}: {e:?}");
        let legs: f64 = b
            .network_legs
            .iter()
            .map(|l| l.latency.percentiles.p50)
            .sum();
        eprintln!(
            "{name}: TCP's srtt p50 {:.3} ms, min RTT p50 {:.3} ms; measured legs p50 {legs:.3} ms",
            e.srtt.percentiles.p50, e.min_rtt.percentiles.p50
        );
    }
    assert_eq!(b.at.len(), 3, "{name}: p50, p90, p99");
    assert_eq!(b.network_legs.len(), 2, "{name}: {:?}", b.network_legs);
    for a in &b.at {
        let sum = a.outbound_ms + a.network_ms + a.inbound_ms;
        assert!((sum - a.in_mesh_ms).abs() < 1e-9, "{name}: {a:?}");
        assert!(
            a.network_ms > 0.0 && a.outbound_ms > 0.0 && a.inbound_ms > 0.0,
            "{name}: {a:?}"
        );
        eprintln!(
            "{name} {}: outbound {:.3} + network {:.3} + inbound {:.3} = {:.3} ms vs overhead {:.3} ms",
            a.percentile,
            a.outbound_ms,
            a.network_ms,
            a.inbound_ms,
            a.in_mesh_ms,
            a.overhead_ms.unwrap_or(f64::NAN)
        );
    }
    let p50 = &b.at[0];
    let overhead = p50.overhead_ms.expect("a baseline run");
    // The resolution of self-consistency's (its tolerance): the ends' wake-ups are outside
    // the breakdown's parts too.
    let tolerance = d.consistency.as_ref().map_or(0.0, |c| c.tolerance_ms);
    assert!(
        tolerance >= (0.25 * overhead).max(0.05) - 1e-9,
        "{name}: {tolerance}"
    );
    if (p50.in_mesh_ms - overhead).abs() <= tolerance {
        Ok(())
    } else {
        Err(format!(
            "breakdown at p50: {:.3} ms in the mesh of an overhead of {overhead:.3} ms",
            p50.in_mesh_ms
        ))
    }
}

/// One lab profile and every check but self-consistency.
fn checked_profile(
    name: &str,
    proxy: &str,
    mtls: bool,
    extra: &[&str],
    load: Load,
) -> (ResultSet, PathBuf) {
    let dir = scratch(name);
    let (rate, conns, secs) = (
        load.rate.to_string(),
        load.connections.to_string(),
        format!("{}s", load.seconds),
    );
    let mut args = vec![
        "--lab",
        "--lab-name",
        name,
        "--proxy",
        proxy,
        "--rate",
        &rate,
        "--connections",
        &conns,
        "--duration",
        &secs,
        "--warmup",
        "500ms",
        "--output-dir",
    ];
    let d = dir.display().to_string();
    args.push(&d);
    // ztunnels speak mTLS to each other always (HBONE): no flag for it.
    if mtls && proxy != "ztunnel" {
        args.push("--mtls");
    }
    args.extend_from_slice(extra);
    let out = profile(&args);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "profile {name} failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    // A lab with a slow link lost none of its segments (TCP would have resent them late).
    assert!(!stderr.contains("slow link"), "{name}: {stderr}");
    let set = ResultSet::read_from_dir(&dir, Strictness::Strict).expect("strict re-read");
    let d = set.details.as_ref().expect("details");

    // The load happened as asked, and through the mesh.
    let qps = set.result.actual_qps;
    let rate = f64::from(load.rate);
    assert!((qps - rate).abs() <= 0.05 * rate, "actual_qps {qps}");
    let lat = set.result.latencies_ms.as_ref().expect("latencies");
    assert!(lat.p50 > 0.0 && lat.p50 < 1000.0, "p50 {} ms", lat.p50);
    assert_eq!(d.end_to_end.meshed.errors, 0);
    let baseline = d.end_to_end.baseline.as_ref().expect("baseline run");
    assert_eq!(baseline.errors, 0);

    // Istio's ambient node proxy, or sidecars: from the proxies' kinds.
    let plane = if proxy == "ztunnel" {
        DataPlane::Ambient
    } else {
        DataPlane::Sidecars
    };
    assert_eq!(d.data_plane, plane);

    // Two sidecars, each with CPU, memory and the requests the client sent; or one node
    // proxy (a shared ztunnel) that carried each request twice, once for each pod.
    let node_proxy = extra.windows(2).any(|w| w == ["--ztunnel-mode", "shared"]);
    let (proxies, crossings) = if node_proxy { (1, 2.0) } else { (2, 1.0) };
    let sc = set.mesh_config.sidecar.as_ref().expect("sidecar");
    assert_eq!(sc.count, proxies, "{sc:?}");
    assert!(sc.cpu_mcores > 0 && sc.mem_mb > 0, "{sc:?}");
    assert_eq!(set.mesh_config.mtls_enabled, mtls);
    let sent = d.end_to_end.meshed.latency.count as f64;
    assert_eq!(d.sidecars.len(), proxies as usize);
    for s in &d.sidecars {
        assert!(s.cpu_seconds > 0.0 && s.cpu_us_per_request > 0.0, "{s:?}");
        assert!(s.mem_mb > 0.0 && s.mem_peak_mb >= s.mem_mb, "{s:?}");
        let r = s.requests as f64 / crossings;
        assert!(
            (r - sent).abs() <= 0.05 * sent,
            "{}: {r} requests seen by the probes vs {sent} measured by the client",
            s.proxy
        );
    }

    // Four hops: both directions, both legs, each with the requests of the run.
    assert_eq!(
        d.hops.len(),
        4,
        "{:?}",
        d.hops.iter().map(|h| h.key()).collect::<Vec<_>>()
    );
    let mut dirs: Vec<_> = d.hops.iter().map(|h| (h.direction, h.leg)).collect();
    dirs.sort();
    dirs.dedup();
    assert_eq!(dirs.len(), 4, "{dirs:?}");
    for h in &d.hops {
        let n = h.latency.count as f64;
        // With TLS the first exchange of each connection is not timed (handshake inside).
        assert!(n >= 0.9 * sent, "{}: {n} of {sent}", h.key());
        // Nor more: the warm-up's exchanges (their requests read before the window began),
        // even those completed or read from the ring after it began, stay out. What may come
        // in: requests of the few ms between the window's start and the client's measured
        // part, and warm-up requests the client sent late (about rate × p99 behind).
        let in_flight = rate * (lat.p99 / 1e3 + 0.01) + 3.0;
        eprintln!(
            "{name}: {}: {n} exchanges for {sent} requests (at most {in_flight:.1} more)",
            h.key()
        );
        assert!(
            n <= sent + in_flight,
            "{}: {n} exchanges for {sent} requests (allowed {in_flight:.1} more in flight; \
             p99 {} ms; losses {:?})",
            h.key(),
            lat.p99,
            d.losses
        );
        assert!(h.latency.percentiles.p50 > 0.0);
    }
    assert_eq!(d.losses.ringbuf_drops, 0);

    // Every hop has its wait (arrival → read) and send (forwarding write) measured.
    for h in &d.hops {
        let (w, s) = (h.wait.as_ref(), h.send.as_ref());
        assert!(
            w.is_some_and(|w| w.count as f64 >= 0.9 * h.latency.count as f64),
            "{}: wait {w:?}",
            h.key()
        );
        assert!(
            s.is_some_and(|s| s.count as f64 >= 0.9 * h.latency.count as f64),
            "{}: send {s:?}",
            h.key()
        );
    }
    // Each hop says what its proxy's two sides spoke, every exchange: HTTP/1.1 from and to
    // the apps (h2c with an HTTP/2 app), and between the sidecars TLS with mTLS, else HTTP/2
    // in the clear with `--h2` or an HTTP/2 app.
    use smp_agent::report::details::{Direction, WireProtocol};
    let app_h2 = extra.contains(&"grpc") || extra.contains(&"h2c");
    let app = if app_h2 {
        WireProtocol::H2c
    } else {
        WireProtocol::Http1
    };
    let between = match (mtls, app_h2 || extra.contains(&"--h2")) {
        (true, _) => WireProtocol::Tls,
        (false, true) => WireProtocol::H2c,
        (false, false) => WireProtocol::Http1,
    };
    for h in &d.hops {
        let want = match h.direction {
            Direction::Outbound => (app, between),
            _ => (between, app),
        };
        let [only] = h.sides.as_slice() else {
            panic!("{}: sides {:?}", h.key(), h.sides);
        };
        assert_eq!((only.downstream, only.upstream), want, "{}", h.key());
        assert_eq!(only.exchanges, h.latency.count, "{}", h.key());
    }
    assert!(dir.join("report.html").is_file());
    (set, dir)
}

/// Writes `set` again into a scratch directory (for `compare`).
fn rewrite(mut set: ResultSet, name: &str) -> PathBuf {
    let dir = scratch(name);
    set.write_to_dir(&dir).expect("write");
    dir
}

#[test]
fn profile_lab_envoy_one_and_two_workers_plain_and_mtls_with_the_report_in_chromium() {
    if !require_root(
        "profile_lab_envoy_one_and_two_workers_plain_and_mtls_with_the_report_in_chromium",
    ) {
        return;
    }
    let plain = lab_profile("pf-env", "envoy", false);
    // Envoy with 2 workers and mTLS; its report goes to the browser.
    let (two, dir) = lab_profile_in("pf-env2m", "envoy", true, &["--concurrency", "2"], STEADY);
    assert_eq!(two.mesh_config.proxy_concurrency, 2);
    let Some(chrome) = chromium(
        "profile_lab_envoy_one_and_two_workers_plain_and_mtls_with_the_report_in_chromium",
    ) else {
        return;
    };
    let run = dump_dom(&chrome, &dir, "profile", &dir.join("report.html"));
    assert!(run.console.is_empty(), "console: {:?}", run.console);
    for id in [
        "latency-curve",
        "hop-breakdown",
        "sidecar-usage",
        // Where the time goes, from the profile's own breakdown: one bar per percentile.
        "breakdown-bars",
        "breakdown-p50",
        "breakdown-p90",
        "breakdown-p99",
        "breakdown-legs-table",
    ] {
        assert!(
            run.stdout.contains(&format!("id=\"{id}\"")),
            "{id} missing from the rendered page"
        );
    }
    assert!(run.stdout.contains("<polyline"), "no plotted curves");
    let _ = std::fs::remove_dir_all(&dir);
    let plain = rewrite(plain, "cmp-a");
    let mtls = rewrite(lab_profile("pf-envm", "envoy", true), "cmp-b");
    // The two runs compare hop by hop under the same stable proxy names, and gate.
    let gate = |rule: &str| {
        Command::new(agent_bin())
            .args(["compare"])
            .arg(&plain)
            .arg(&mtls)
            .args(["--fail-if", rule])
            .output()
            .expect("compare")
    };
    let ok = gate("hop:envoy-client/outbound/request.p50>+100000%");
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stdout));
    let fired = gate("hop:envoy-server/inbound/response.p50>-100%");
    assert_eq!(fired.status.code(), Some(1), "{}", text(&fired.stdout));
    for d in [plain, mtls] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Where the time goes, against a known network leg (issue 21): the lab of our ground-truth
/// sidecars profiled with 1 µs, then 3 ms, then 1 µs held each way on every TCP segment the
/// sidecars exchange (`--link-delay-us`; the baseline crosses undelayed, so meshed − baseline
/// grows by the two legs too). Both go through the link's queue, so only the time differs
/// (the queue itself moved Envoy's inbound hops by 45–60 µs). Ours, not Envoy: Envoy's own
/// timing changes with the link's round trip (its outbound request hop p50 was 14–56 µs
/// shorter with 3 ms than with 1 µs, the suite's run the most; docs/hops.md), which says
/// nothing of where the probes put the wire's time. Each leg's p50 grows by D and the two by 2·D, within
/// max(10 %, 0.2 ms); no hop's p50 moves by more than max(10 %, 0.05 ms); the breakdown
/// explains meshed − baseline within 25 %, while the self-consistency check, which leaves the
/// network out, fails and the network is the largest part; the link lost no segment
/// (`checked_profile`).
#[test]
fn a_delay_on_the_sidecars_link_shows_in_the_network_leg_and_nowhere_else() {
    if !require_root("a_delay_on_the_sidecars_link_shows_in_the_network_leg_and_nowhere_else") {
        return;
    }
    const D_MS: f64 = 3.0;
    // Control, delayed, control: the machine's pace drifts between runs (Envoy's hop p50s by
    // ±15 % on this VM), so the delayed run is held to the mean of the runs around it.
    let run = |name: &str, us: &str| {
        let (set, dir) = checked_profile(name, "ours", false, &["--link-delay-us", us], STEADY);
        let _ = std::fs::remove_dir_all(dir);
        set
    };
    let before = run("pf-link0", "1");
    let slow = run("pf-link3", "3000");
    let after = run("pf-link1", "1");
    assert_eq!(
        slow.test
            .test
            .labels
            .get("lab_link_delay_us")
            .map(String::as_str),
        Some("3000")
    );
    if let Err(e) = breakdown("pf-link3", &slow, true) {
        panic!("pf-link3: {e}");
    }
    let sd = slow.details.as_ref().expect("details");
    let controls = [&before, &after].map(|s| s.details.as_ref().expect("details"));
    let leg_p50 = |d: &smp_agent::report::details::Details, leg: Leg| {
        let b = d.breakdown.as_ref().expect("breakdown");
        let l: Vec<_> = b.network_legs.iter().filter(|l| l.leg == leg).collect();
        assert_eq!(l.len(), 1, "{leg:?}: {:?}", b.network_legs);
        l[0].latency.percentiles.p50
    };
    let within = |got: f64, want: f64, floor: f64| (got - want).abs() <= (0.1 * want).max(floor);
    let mut grown = 0.0;
    for leg in [Leg::Request, Leg::Response] {
        let c = controls.iter().map(|d| leg_p50(d, leg)).sum::<f64>() / 2.0;
        let s = leg_p50(sd, leg);
        eprintln!("network leg {leg:?}: p50 {c:.3} ms with 1 µs, {s:.3} ms with 3 ms");
        assert!(within(s - c, D_MS, 0.2), "{leg:?}: {c:.3} -> {s:.3} ms");
        grown += s - c;
    }
    assert!(
        within(grown, 2.0 * D_MS, 0.2),
        "both legs grew by {grown:.3} ms"
    );
    for h in &sd.hops {
        let p50 = |d: &smp_agent::report::details::Details| {
            d.hops
                .iter()
                .find(|c| c.key() == h.key())
                .unwrap_or_else(|| panic!("{}: not in a control run", h.key()))
                .latency
                .percentiles
                .p50
        };
        let c = controls.iter().map(|d| p50(d)).sum::<f64>() / 2.0;
        let s = h.latency.percentiles.p50;
        eprintln!(
            "{}: p50 {c:.3} ms with 1 µs ({:.3}, {:.3}), {s:.3} ms with 3 ms",
            h.key(),
            p50(controls[0]),
            p50(controls[1])
        );
        assert!(within(s, c, 0.05), "{}: {c:.3} -> {s:.3} ms", h.key());
    }
    use smp_agent::report::details::ConsistencyVerdict;
    let c = sd.consistency.as_ref().expect("consistency check");
    assert_eq!(c.verdict, ConsistencyVerdict::Inconsistent, "{c:?}");
    let p50 = &sd.breakdown.as_ref().expect("breakdown").at[0];
    assert_eq!(p50.largest, "network", "{p50:?}");
}

#[test]
fn profile_lab_haproxy_plain_and_mtls() {
    if require_root("profile_lab_haproxy_plain_and_mtls") {
        lab_profile("pf-hap", "haproxy", false);
        lab_profile("pf-hapm", "haproxy", true);
    }
}

#[test]
fn profile_lab_nginx_plain_and_mtls() {
    if require_root("profile_lab_nginx_plain_and_mtls") {
        lab_profile("pf-ngx", "nginx", false);
        lab_profile("pf-ngxm", "nginx", true);
    }
}

#[test]
fn profile_lab_ground_truth_proxy_plain_and_mtls() {
    if require_root("profile_lab_ground_truth_proxy_plain_and_mtls") {
        lab_profile("pf-ours", "ours", false);
        lab_profile("pf-oursm", "ours", true);
    }
}

/// Traefik (Go: a response is often written by another thread than the one that read its
/// request) at 1 000 rps over 64 connections, plain and with mTLS between the sidecars: the
/// four hops and self-consistency hold at the rate of the pairing test (`ends.rs`).
#[test]
fn profile_lab_traefik_at_1000_rps_plain_and_mtls() {
    if require_root("profile_lab_traefik_at_1000_rps_plain_and_mtls") {
        busy_profiles(["pf-tk", "pf-tkm"], "traefik", &[]);
    }
}

/// Our proxy with 4 threads in each slot (a request goes to whichever thread is free, like a
/// work-stealing runtime's task) at 1 000 rps over 64 connections, plain and with mTLS: the
/// four hops and self-consistency hold at the rate of the pairing test (`ends.rs`).
#[test]
fn profile_lab_ours_four_threads_at_1000_rps_plain_and_mtls() {
    if require_root("profile_lab_ours_four_threads_at_1000_rps_plain_and_mtls") {
        busy_profiles(["pf-o4", "pf-o4m"], "ours", &["--concurrency", "4"]);
    }
}

/// Istio's ambient data plane, a ztunnel in each pod and HBONE (HTTP/2 CONNECT over mTLS)
/// between them, at the load (200 rps over 32 connections for 10 s): every check of
/// every proxy kind, two ztunnels' request and response hops for at least 99 % of the
/// requests, self-consistency and the breakdown; the SMP result names Istio and says ambient.
#[test]
fn profile_lab_ztunnel_ambient() {
    if !require_root("profile_lab_ztunnel_ambient")
        || !require_ztunnel("profile_lab_ztunnel_ambient")
    {
        return;
    }
    let load = Load {
        rate: 200,
        connections: 32,
        seconds: 10,
    };
    // A ztunnel in each pod, then one on the node for both pods (Istio's deployment).
    for (name, extra) in [
        ("pzt", &[][..]),
        ("pzts", &["--ztunnel-mode", "shared"][..]),
    ] {
        let shared = !extra.is_empty();
        let (set, dir) = lab_profile_in(name, "ztunnel", true, extra, load);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(set.test.mesh.r#type, MeshType::Istio);
        let (key, value) = smp_agent::cli::profile::AMBIENT_LABEL;
        assert_eq!(
            set.test.test.labels.get(key).map(String::as_str),
            Some(value)
        );
        let d = set.details.as_ref().expect("details");
        assert_eq!(d.data_plane, DataPlane::Ambient);
        let sent = d.end_to_end.meshed.latency.count as f64;
        for h in &d.hops {
            assert!(h.proxy.starts_with("ztunnel"), "{}", h.key());
            let n = h.latency.count as f64;
            assert!(n >= 0.99 * sent, "{name} {}: {n} of {sent}", h.key());
        }
        if !shared {
            assert!(d.workloads.is_empty(), "a pod's own ztunnel serves one pod");
            continue;
        }
        // One process, named for the node, with both pods' hops.
        assert_eq!(d.sidecars.len(), 1, "{:?}", d.sidecars);
        let node = &d.sidecars[0];
        assert_eq!(node.proxy, "ztunnel-node");
        assert_eq!(d.hops.len(), 4);
        // Per workload: the client pod's requests leave through it, the server pod's arrive.
        let rows: Vec<(&str, Direction, &str)> = d
            .workloads
            .iter()
            .map(|w| (w.workload.as_str(), w.direction, w.peer.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                ("client", Direction::Outbound, "server"),
                ("server", Direction::Inbound, "client")
            ]
        );
        for w in &d.workloads {
            let n = w.exchanges as f64;
            assert!(n >= 0.99 * sent, "{}: {n} of {sent}", w.workload);
            assert_eq!(w.request_hop.count, w.exchanges);
            let hop = d
                .hops
                .iter()
                .find(|h| h.direction == w.direction && h.leg == Leg::Request)
                .expect("the direction's hop");
            assert_eq!(w.request_hop.count, hop.latency.count, "{}", w.workload);
        }
        let apportioned: f64 = d.workloads.iter().map(|w| w.cpu_seconds).sum();
        assert!(
            (apportioned - node.cpu_seconds).abs() < 1e-9,
            "{apportioned} vs {}",
            node.cpu_seconds
        );
    }
}

/// The node's ztunnel profiled as a user would on a node: by pid, from the client pod, no
/// baseline, pods by address, and started after ztunnel opened the HBONE connection the run's
/// requests share (a request before the agent). Returns the run's details.
fn profile_node_ztunnel(
    info: &smp_agent::lab::LabInfo,
    name: &str,
    rate: u32,
    seconds: u32,
) -> smp_agent::report::details::Details {
    let pid = info.outbound.pid;
    let dir = scratch(name);
    let warm = Command::new("ip")
        .args([
            "netns",
            "exec",
            &info.client_netns,
            "curl",
            "-sSf",
            "-o",
            "/dev/null",
        ])
        .arg(&info.meshed_url)
        .status()
        .expect("curl");
    assert!(warm.success(), "a request before the agent");
    let out = Command::new("ip")
        .args(["netns", "exec", &info.client_netns])
        .arg(agent_bin())
        .args(["profile", "--url", &info.meshed_url, "--sidecar-pid"])
        .arg(pid.to_string())
        .args([
            "--rate",
            &rate.to_string(),
            "--connections",
            "32",
            "--duration",
        ])
        .arg(format!("{seconds}s"))
        .args(["--warmup", "0s", "--output-dir"])
        .arg(&dir)
        .output()
        .expect("run smp-agent profile");
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let set = ResultSet::read_from_dir(&dir, Strictness::Strict).expect("strict re-read");
    let _ = std::fs::remove_dir_all(&dir);
    let d = set.details.expect("details");
    // Outside the lab's own names, each pod is named by what holds its address on the node:
    // here the lab's network namespaces (a pod's UID in a cluster).
    let addresses: Vec<String> = [info.client_addr, info.server_addr]
        .iter()
        .map(ToString::to_string)
        .collect();
    let served: Vec<(&str, &str)> = d
        .workloads
        .iter()
        .map(|w| (w.workload.as_str(), w.address.as_str()))
        .collect();
    assert_eq!(
        served,
        [
            (info.client_netns.as_str(), addresses[0].as_str()),
            (info.server_netns.as_str(), addresses[1].as_str())
        ],
        "pods named by their namespaces"
    );
    d
}

fn shared_ztunnel_lab(name: &str) -> smp_agent::lab::LabConfig {
    let mut cfg = smp_tests::lab_config(name, smp_agent::lab::config::ProxyKind::Ztunnel, false);
    cfg.ztunnel_mode = smp_agent::lab::config::ZtunnelMode::Shared;
    cfg
}

/// A shared ztunnel's CPU, apportioned to the pods it serves, sums to what the kernel charged
/// its process (`/proc/<pid>/stat`) within 5 % (1 000 rps, so that the clock ticks of
/// `/proc` are a small part of it). Its memory, apportioned by connections, sums to its
/// `mem_mb`: each request crosses it twice (out of the client pod, into the server pod) on
/// a connection of each pod, so each row counts the load's 32 connections (a few more if
/// ztunnel pools more than one HBONE connection and an exchange is paired across them) and
/// takes its share of the memory by them.
#[test]
fn shared_ztunnel_cpu_per_workload_sums_to_proc() {
    if !require_root("shared_ztunnel_cpu_per_workload_sums_to_proc")
        || !require_ztunnel("shared_ztunnel_cpu_per_workload_sums_to_proc")
    {
        return;
    }
    smp_tests::with_lab(&shared_ztunnel_lab("pzcpu"), |info| {
        let pid = info.outbound.pid;
        let before = smp_tests::proc_cpu_ns(pid);
        let d = profile_node_ztunnel(info, "pzcpu", 1000, 10);
        let after = smp_tests::proc_cpu_ns(pid);
        let apportioned: f64 = d.workloads.iter().map(|w| w.cpu_seconds).sum();
        let kernel = (after - before) as f64 / 1e9;
        eprintln!("per workload {apportioned:.3} s vs /proc/{pid}/stat {kernel:.3} s");
        assert!(
            (apportioned - kernel).abs() <= 0.05 * kernel,
            "per workload {apportioned:.3} s vs /proc {kernel:.3} s"
        );
        let usage = d
            .sidecars
            .iter()
            .find(|s| s.pid == Some(pid))
            .expect("ztunnel's usage");
        let memory: f64 = d.workloads.iter().map(|w| w.mem_mb).sum();
        assert!(usage.mem_mb > 1.0, "{usage:?}");
        assert!(
            (memory - usage.mem_mb).abs() <= 1e-6 * usage.mem_mb,
            "per workload {memory} MB vs {} MB",
            usage.mem_mb
        );
        let connections: u64 = d.workloads.iter().map(|w| w.connections).sum();
        for w in &d.workloads {
            eprintln!(
                "{} {:?}: {} connections, {:.2} MB",
                w.workload, w.direction, w.connections, w.mem_mb
            );
            assert!((32..=36).contains(&w.connections), "{w:?}");
            let share = usage.mem_mb * w.connections as f64 / connections as f64;
            assert!((w.mem_mb - share).abs() <= 1e-6 * usage.mem_mb, "{w:?}");
        }
    });
}

/// ztunnel keeps its HBONE connection open, so an agent on a node starts after it: that
/// connection's sockets take their roles from their ports (one end's is ephemeral) and their
/// TLS from their records, and the requests over it are paired as on a fresh connection
/// (200 rps: the HBONE streams seldom overlap; docs/hops.md, Roles). Before, none was.
#[test]
fn an_agent_started_after_ztunnels_connection_pairs_its_requests() {
    if !require_root("an_agent_started_after_ztunnels_connection_pairs_its_requests")
        || !require_ztunnel("an_agent_started_after_ztunnels_connection_pairs_its_requests")
    {
        return;
    }
    smp_tests::with_lab(&shared_ztunnel_lab("pzaged"), |info| {
        let d = profile_node_ztunnel(info, "pzaged", 200, 5);
        let sent = d.end_to_end.meshed.latency.count as f64;
        for w in &d.workloads {
            assert!(
                w.exchanges as f64 >= 0.98 * sent,
                "{} {:?}: {} exchanges of {sent} requests; losses {:?}",
                w.workload,
                w.direction,
                w.exchanges,
                d.losses
            );
        }
        assert!(
            !d.losses.unpaired_reasons.contains_key("unknown_role"),
            "{:?}",
            d.losses
        );
        use smp_agent::report::details::WireProtocol::{Http1, Tls};
        for h in &d.hops {
            let want = match h.direction {
                Direction::Outbound => (Http1, Tls),
                _ => (Tls, Http1),
            };
            let sides: Vec<_> = h.sides.iter().map(|s| (s.downstream, s.upstream)).collect();
            assert_eq!(sides, [want], "{}", h.key());
        }
    });
}

/// Envoy with HTTP/2 between the sidecars (plain, then inside mTLS), and with a gRPC app
/// (HTTP/2 on every leg, the app's included): four hops, every check of every proxy kind
/// (requests per sidecar, sends and waits, the sides of each hop) and self-consistency.
#[test]
fn profile_lab_envoy_http2_and_grpc_are_self_consistent() {
    if !require_root("profile_lab_envoy_http2_and_grpc_are_self_consistent") {
        return;
    }
    for (name, mtls, extra) in [
        ("pf-eh2", false, &["--h2"][..]),
        ("pf-eh2m", true, &["--h2"][..]),
        ("pf-egrpc", false, &["--app-protocol", "grpc"][..]),
        ("pf-egrpcm", true, &["--app-protocol", "grpc"][..]),
    ] {
        let (_, dir) = lab_profile_in(name, "envoy", mtls, extra, STEADY);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Ctrl-C (SIGINT) in the meshed run: the run stops, what was measured is written (marked
/// interrupted), no baseline is run, the lab is taken down, exit status 130.
#[test]
fn ctrl_c_writes_what_was_measured() {
    if !require_root("ctrl_c_writes_what_was_measured") {
        return;
    }
    stop_signal_writes_what_was_measured("pf-ctrlc", libc::SIGINT, 130);
}

/// SIGTERM (`kill`, systemd, a CI timeout) behaves as Ctrl-C does, exit status 143: before,
/// it killed the process, leaving no result and the lab's namespaces and proxies behind.
#[test]
fn sigterm_writes_what_was_measured_and_takes_the_lab_down() {
    if !require_root("sigterm_writes_what_was_measured_and_takes_the_lab_down") {
        return;
    }
    stop_signal_writes_what_was_measured("pf-sigterm", libc::SIGTERM, 143);
}

/// Profiles the lab `lab` for 60 s, sends `signal` to the agent alone 3 s into the meshed run
/// and checks what it leaves: a result set that re-reads strictly, marked interrupted, with the
/// ~3 s measured and no baseline; the lab and its namespaces gone; exit status `status`.
fn stop_signal_writes_what_was_measured(lab: &str, signal: i32, status: i32) {
    let dir = scratch(lab);
    let mut child = Command::new(agent_bin())
        .args([
            "profile",
            "--lab",
            "--lab-name",
            lab,
            "--rate",
            "200",
            "--duration",
            "60s",
            "--warmup",
            "0s",
            "--output-dir",
        ])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn profile");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stdout));
    for l in lines.by_ref() {
        if l.expect("read").starts_with("meshed run") {
            break;
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, signal) };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let out = child.wait_with_output().expect("wait");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(status),
        "{}\n{}",
        rest.join("\n"),
        text(&out.stderr)
    );
    assert!(rest.iter().any(|l| l.contains("INTERRUPTED")), "{rest:?}");
    let set = ResultSet::read_from_dir(&dir, Strictness::Strict).expect("partial result");
    assert_eq!(
        set.result
            .labels
            .get("smp-agent/interrupted")
            .map(String::as_str),
        Some("true")
    );
    let d = set.details.expect("details");
    assert!(
        d.end_to_end.baseline.is_none(),
        "no baseline after {signal}"
    );
    let n = d.end_to_end.meshed.latency.count;
    assert!((300..=1000).contains(&n), "{n} requests in ~3 s at 200 rps");
    assert_eq!(d.sidecars.len(), 2);
    assert!(d.sidecars.iter().all(|s| s.requests > 0));
    let page = std::fs::read_to_string(dir.join(REPORT_FILE)).expect("report.html");
    assert!(page.trim_end().ends_with("</html>"), "report.html is whole");
    // Only the files of the set: no temporary file left behind.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected = [
        DETAILS_FILE,
        ENVIRONMENT_FILE,
        MESH_CONFIG_FILE,
        REPORT_FILE,
        RESULT_FILE,
        TEST_CONFIG_FILE,
    ];
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert!(
        !smp_agent::lab::Lab::list().contains(&lab.to_string()),
        "the lab was taken down"
    );
    let (client_ns, server_ns) = smp_agent::lab::netns_names(lab);
    let namespaces = smp_agent::lab::netns::list().expect("ip netns list");
    assert!(
        !namespaces.contains(&client_ns) && !namespaces.contains(&server_ns),
        "the lab's namespaces are gone: {namespaces:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// Bad input: the error names the file, the line and the field; nothing is written.
#[test]
fn bad_input_names_file_line_and_field_and_writes_nothing() {
    let dir = scratch("bad");
    let out_dir = dir.join("results");
    let od = out_dir.display().to_string();
    let cases: [(&str, &str, &[&str]); 3] = [
        (
            "wrong-type.yaml",
            "test:\n  name: t\n  clients:\n    - rps: fast\n      endpoint_urls: [http://127.0.0.1:1/]\nmesh:\n  type: 3\n",
            &["wrong-type.yaml:4", "rps"],
        ),
        (
            "unknown-mesh.yaml",
            "test:\n  clients:\n    - rps: 10\n      endpoint_urls: [http://127.0.0.1:1/]\nmesh:\n  type: 99\n",
            &["unknown-mesh.yaml:6", "type", "99"],
        ),
        (
            "bad-duration.yaml",
            "test:\n  duration: abc\n  clients:\n    - rps: 10\n      endpoint_urls: [http://127.0.0.1:1/]\n",
            &["bad-duration.yaml:2", "duration", "abc"],
        ),
    ];
    for (name, body, wants) in cases {
        let f = write(&dir, name, body);
        let out = profile(&["--config", &f.display().to_string(), "--output-dir", &od]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        for w in wants {
            assert!(err.contains(w), "{name}: {w:?} not in: {err}");
        }
        assert!(!out_dir.exists(), "{name}: something was written");
    }
    // No endpoint anywhere.
    let f = write(
        &dir,
        "no-endpoint.yaml",
        "test:\n  clients:\n    - rps: 10\n",
    );
    let out = profile(&["--config", &f.display().to_string(), "--output-dir", &od]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no-endpoint.yaml:3") && err.contains("endpoint_urls"),
        "{err}"
    );
    // A bad flag value.
    let out = profile(&[
        "--url",
        "http://127.0.0.1:1/",
        "--duration",
        "abc",
        "--output-dir",
        &od,
    ]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--duration") && err.contains("abc"), "{err}");
    let out = profile(&["--url", "http://127.0.0.1:1/", "--mesh", "nosuchmesh"]);
    assert!(
        text(&out.stderr).contains("--mesh"),
        "{}",
        text(&out.stderr)
    );
    assert!(!out_dir.exists(), "something was written");
    let _ = std::fs::remove_dir_all(&dir);
}
