//! h2c and unary gRPC end to end: the lab with `--app-protocol h2c|grpc` (real Envoy and
//! haproxy, our proxy; mTLS between the sidecars too), `smp-agent load --grpc` counting gRPC statuses by code against the lab app, and
//! `profile --lab --app-protocol grpc` writing a gRPC test config and a result with both
//! sidecars' hops, paired stream by stream on their HTTP/2 sides.
//! Run with `--test-threads=1`.

use std::{
    net::{SocketAddr, TcpStream},
    process::{Child, Command, Output},
    time::{Duration, Instant},
};

use serde_json::Value;
use smp_agent::{
    lab::{config::AppProtocol, Lab, LabInfo, Side},
    report::{details::WireProtocol, smp::Protocol, ResultSet, Strictness},
};
use smp_tests::{agent_bin, free_port, require_root};

fn agent(args: &[&str]) -> Output {
    Command::new(agent_bin())
        .args(args)
        .output()
        .expect("run smp-agent")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A lab under test; `Drop` takes it down even when an assertion failed.
struct TestLab {
    name: String,
    info: LabInfo,
}

impl TestLab {
    fn up(name: &str, extra: &[&str]) -> TestLab {
        let _ = agent(&["lab", "down", "--name", name]);
        let mut args = vec!["lab", "up", "--name", name, "--output", "json"];
        args.extend_from_slice(extra);
        let o = agent(&args);
        assert!(o.status.success(), "lab up {extra:?}: {}", text(&o));
        let info: LabInfo = serde_json::from_slice(&o.stdout).expect("lab up --output json");
        TestLab {
            name: name.to_string(),
            info,
        }
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let o = agent(&["lab", "down", "--name", &self.name]);
        if !std::thread::panicking() {
            assert!(o.status.success(), "lab down: {}", text(&o));
        }
    }
}

/// `smp-agent load … --output json` (in `netns` if given); the parsed result.
fn load(netns: Option<&str>, args: &[&str]) -> Value {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(agent_bin());
            c
        }
        None => Command::new(agent_bin()),
    };
    let o = cmd
        .arg("load")
        .args(args)
        .args(["--output", "json", "--no-progress"])
        .output()
        .expect("run smp-agent load");
    assert!(o.status.success(), "load {args:?}: {}", text(&o));
    serde_json::from_slice(&o.stdout).expect("load --output json")
}

fn u(v: &Value, path: &[&str]) -> u64 {
    let mut v = v;
    for p in path {
        v = &v[*p];
    }
    v.as_u64().unwrap_or(0)
}

/// The lab with `app`: a fixed-rate load through the mesh gets every answer OK, each request
/// crossed both sidecars (their own counters), and the inbound Envoy spoke HTTP/2 to the app.
fn lab_app_protocol(proxy: &str, app: &str, mtls: bool, name: &str) {
    let mut args = vec!["--proxy", proxy, "--app-protocol", app];
    if mtls {
        args.push("--mtls");
    }
    let lab = TestLab::up(name, &args);
    assert_eq!(lab.info.mtls, mtls);
    let expected = if app == "grpc" {
        AppProtocol::Grpc
    } else {
        AppProtocol::H2c
    };
    assert_eq!(lab.info.app_protocol, expected);
    assert!(lab.info.h2, "{app} implies HTTP/2 between the sidecars");
    let before = (
        Lab::sidecar_requests(&lab.info, Side::Outbound).expect("outbound counter"),
        Lab::sidecar_requests(&lab.info, Side::Inbound).expect("inbound counter"),
    );
    let (flag, url) = if app == "grpc" {
        (
            "--grpc",
            smp_agent::loadgen::grpc::lab_method_url(&lab.info.meshed_url),
        )
    } else {
        ("--http2", lab.info.meshed_url.clone())
    };
    let r = load(
        Some(&lab.info.client_netns),
        &[
            flag, "--rate", "200", "-c", "2", "-d", "2s", "--body", "ping", &url,
        ],
    );
    // 200 streams per connection: enough for h2's flood guards to see a relay that splits
    // responses into small DATA frames.
    let n = u(&r, &["requests"]);
    assert_eq!(n, 400, "{proxy}/{app}: {r}");
    assert_eq!(u(&r, &["missed"]), 0, "{proxy}/{app}: {r}");
    for kind in ["connect", "timeout", "reset", "protocol", "grpc"] {
        assert_eq!(u(&r, &["errors", kind]), 0, "{proxy}/{app} {kind}: {r}");
    }
    assert_eq!(u(&r, &["status_codes", "200"]), n, "{proxy}/{app}: {r}");
    if app == "grpc" {
        assert_eq!(u(&r, &["grpc_status", "0"]), n, "{proxy}/{app}: {r}");
        // The echoed message, framed: 5 + 4 bytes per response.
        assert_eq!(u(&r, &["bytes", "received"]), 9 * n, "{proxy}/{app}: {r}");
    } else {
        assert!(r.get("grpc_status").is_none(), "{r}");
        assert_eq!(u(&r, &["bytes", "received"]), 4 * n, "{proxy}/{app}: {r}");
    }
    let after = (
        Lab::sidecar_requests(&lab.info, Side::Outbound).expect("outbound counter"),
        Lab::sidecar_requests(&lab.info, Side::Inbound).expect("inbound counter"),
    );
    for (side, b, a) in [
        ("outbound", before.0, after.0),
        ("inbound", before.1, after.1),
    ] {
        let (Some(b), Some(a)) = (b, a) else {
            panic!("{proxy}/{app}: the {side} sidecar has no request counter");
        };
        // Warm-up and the preflight send no request: exactly the measured ones.
        assert_eq!(a - b, n, "{proxy}/{app}: {side} sidecar counted {}", a - b);
    }
    if proxy == "envoy" {
        // The inbound Envoy's upstream (the app) connection really is HTTP/2.
        let stats = smp_agent::lab::http_get(
            &lab.info.server_netns,
            lab.info.inbound.admin,
            "/stats?filter=upstream_cx_http2_total",
        )
        .unwrap();
        assert!(
            stats.contains("cluster.upstream.upstream_cx_http2_total: 1"),
            "{app} mtls {mtls}: {stats}"
        );
    }
}

#[test]
fn lab_h2c_and_grpc_through_envoy_haproxy_and_ours() {
    if !require_root("lab_h2c_and_grpc_through_envoy_haproxy_and_ours") {
        return;
    }
    for (proxy, mtls) in [
        ("envoy", false),
        ("envoy", true),
        ("haproxy", false),
        ("ours", false),
        ("ours", true),
    ] {
        for app in ["h2c", "grpc"] {
            lab_app_protocol(proxy, app, mtls, "tgrpc");
        }
    }
}

#[test]
fn lab_nginx_refuses_an_http2_app() {
    if !require_root("lab_nginx_refuses_an_http2_app") {
        return;
    }
    for app in ["h2c", "grpc"] {
        let o = agent(&[
            "lab",
            "up",
            "--name",
            "tgrpcng",
            "--proxy",
            "nginx",
            "--app-protocol",
            app,
        ]);
        assert!(!o.status.success(), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("app_protocol") && err.contains("nginx") && err.contains("HTTP/2"),
            "{err}"
        );
        assert!(!smp_agent::lab::netns::exists("tgrpcng-client"));
    }
}

/// The lab app on a loopback port, killed (by its pid) on drop.
struct App(Child, SocketAddr);

impl App {
    fn start() -> App {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let child = Command::new(agent_bin())
            .args(["lab", "app", "--listen", &addr.to_string()])
            .spawn()
            .expect("spawn lab app");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "lab app does not listen on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        App(child, addr)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn load_grpc_counts_non_ok_statuses_by_code() {
    // Loopback only: no root needed.
    let app = App::start();
    let echo = format!("http://{}/smp.Lab/Echo", app.1);
    let base = ["--grpc", "--rate", "100", "-c", "2", "-d", "1s"];

    let mut args = base.to_vec();
    args.extend(["-H", "x-smp-grpc-status: 14", &echo]);
    let r = load(None, &args);
    let n = u(&r, &["requests"]);
    assert_eq!(n, 100, "{r}");
    assert_eq!(u(&r, &["grpc_status", "14"]), n, "{r}");
    assert_eq!(u(&r, &["grpc_status", "0"]), 0, "{r}");
    assert_eq!(u(&r, &["errors", "grpc"]), n, "{r}");
    // HTTP-wise every answer is a 200: the error is the gRPC status.
    assert_eq!(u(&r, &["status_codes", "200"]), n, "{r}");

    // A method the app does not have: UNIMPLEMENTED (12), by the app's own routing.
    let other = format!("http://{}/smp.Lab/Nope", app.1);
    let mut args = base.to_vec();
    args.push(&other);
    let r = load(None, &args);
    assert_eq!(u(&r, &["grpc_status", "12"]), 100, "{r}");
    assert_eq!(u(&r, &["errors", "grpc"]), 100, "{r}");

    // OK, and the text summary names the codes.
    let o = agent(&[
        "load",
        "--grpc",
        "--rate",
        "50",
        "-d",
        "1s",
        "--no-progress",
        "-H",
        "x-smp-grpc-status: 0",
        &echo,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("grpc status OK (0): 50"), "{out}");
    assert!(out.contains("errors      0 "), "{out}");
    let o = agent(&[
        "load",
        "--grpc",
        "--rate",
        "50",
        "-d",
        "1s",
        "--no-progress",
        "-H",
        "x-smp-grpc-status: 7",
        &echo,
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("PERMISSION_DENIED (7): 50"), "{out}");
    assert!(out.contains("grpc non-OK 50"), "{out}");
}

/// `profile --lab --app-protocol app` through `proxy`: the test config says what the client
/// spoke, the run got every answer, each sidecar counts its requests from the HTTP/2 frames
/// it reads and reports both hops, HTTP/2 on both of its sides.
fn profile_lab_http2_app(proxy: &str, app: &str) {
    let dir = std::env::temp_dir().join(format!("smp-grpc-profile-{}-{app}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let d = dir.display().to_string();
    let o = agent(&[
        "profile",
        "--lab",
        "--lab-name",
        "tgrpcprof",
        "--proxy",
        proxy,
        "--app-protocol",
        app,
        "--rate",
        "200",
        "--connections",
        "4",
        "--duration",
        "2s",
        "--warmup",
        "500ms",
        "--output-dir",
        &d,
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "profile {app}: {}", text(&o));
    eprintln!("{stdout}");
    let set = ResultSet::read_from_dir(&dir, Strictness::Strict).expect("strict re-read");
    let client = &set.test.test.clients[0];
    assert_eq!(client.endpoint_urls.len(), 1);
    let raw = std::fs::read_to_string(dir.join(smp_agent::report::set::TEST_CONFIG_FILE))
        .unwrap_or_default();
    let d = set.details.as_ref().expect("details");
    let sent = d.end_to_end.meshed.latency.count;
    if app == "grpc" {
        assert_eq!(client.protocol, Protocol::Grpc);
        assert!(
            client.endpoint_urls[0].ends_with("/smp.Lab/Echo"),
            "{:?}",
            client.endpoint_urls
        );
        // The raw file says it too, in SMP's own words.
        assert!(
            raw.contains("protocol: 4") || raw.contains("PROTOCOL_GRPC"),
            "{raw}"
        );
        let ok = sent.to_string();
        assert_eq!(
            set.result.labels.get("grpc_status_OK").map(String::as_str),
            Some(ok.as_str()),
            "{:?}",
            set.result.labels
        );
    } else {
        // SMP has no HTTP/2 protocol: HTTP, and a label naming what the client spoke.
        assert_eq!(client.protocol, Protocol::Http);
        assert!(raw.contains("app_protocol: h2c"), "{raw}");
        assert!(!set.result.labels.keys().any(|k| k.starts_with("grpc")));
    }
    let qps = set.result.actual_qps;
    assert!((qps - 200.0).abs() <= 10.0, "actual_qps {qps}");
    assert_eq!(d.end_to_end.meshed.errors, 0);
    assert_eq!(d.end_to_end.baseline.as_ref().expect("baseline").errors, 0);
    // Each sidecar reads its requests as HTTP/2 streams (the kernel walks the frames of its
    // plaintext connections): it counts the requests the client sent, one per stream, and
    // pairs each with its forward, stream by stream on both sides.
    assert_eq!(d.sidecars.len(), 2);
    for s in &d.sidecars {
        let r = s.requests as f64;
        assert!(
            (r - sent as f64).abs() <= 0.05 * sent as f64,
            "{app}: {}: {r} requests seen by the probes vs {sent} sent",
            s.proxy
        );
    }
    assert_eq!(
        d.hops.len(),
        4,
        "{app}: {:?}",
        d.hops.iter().map(|h| h.key()).collect::<Vec<_>>()
    );
    for h in &d.hops {
        assert!(
            h.latency.count as f64 >= 0.95 * sent as f64,
            "{app}: {}: {} of {sent}",
            h.key(),
            h.latency.count
        );
    }
    // Each hop says so: HTTP/2 in the clear on both sides of both sidecars.
    for h in &d.hops {
        let h2c = h
            .sides
            .iter()
            .filter(|s| s.downstream == WireProtocol::H2c && s.upstream == WireProtocol::H2c)
            .map(|s| s.exchanges)
            .sum::<u64>();
        assert_eq!(h2c, h.latency.count, "{app}: {}: {:?}", h.key(), h.sides);
    }
    // Every hop's send is measured, the request forwards on HTTP/2 upstreams included.
    for h in &d.hops {
        let sends = h.send.as_ref().map_or(0, |s| s.count);
        assert!(
            sends as f64 >= 0.9 * h.latency.count as f64,
            "{app}: {}: {sends} sends of {}",
            h.key(),
            h.latency.count
        );
    }
    // What is not paired is counted under its reason, HTTP/2's own included.
    let h2 = d.losses.unpaired_reasons.get("http2").copied().unwrap_or(0);
    assert!(
        h2 * 100 <= 2 * sent,
        "{app}: {h2} HTTP/2 requests unpaired: {:?}",
        d.losses
    );
    // The frame walk loses its place rarely at this rate (counted, a loss by reason): more
    // frames in one read than it reads, then it takes its place again. A header split
    // across two reads is joined, not lost (ours splits about one per connection: its reads
    // fill a buffer of fixed size). At most 1 % of the requests.
    let lost = d
        .losses
        .events_lost
        .get("h2_walk_lost")
        .copied()
        .unwrap_or(0);
    assert!(lost <= sent / 100, "{app}: {:?}", d.losses);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.contains("inbound"), "report");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn profile_lab_grpc_and_h2c_write_their_protocol_and_report_four_hops() {
    if !require_root("profile_lab_grpc_and_h2c_write_their_protocol_and_report_four_hops") {
        return;
    }
    profile_lab_http2_app("envoy", "grpc");
    profile_lab_http2_app("ours", "h2c");
}
