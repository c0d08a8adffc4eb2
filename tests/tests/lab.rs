//! Mesh lab (`smp-agent lab`): real namespaces, real proxies, real redirect rules. Root only.
//!
//! Each test brings a lab up under its own name with the CLI, sends requests from inside the
//! client namespace with curl, proves the meshed path crosses both sidecars (the `x-smp-via`
//! response header each sidecar adds, and the sidecars' own request counters) and the baseline
//! path crosses neither, then takes the lab down and asserts that namespaces, host nft rules and
//! the lab's processes are as before. Run with `--test-threads=1`.

use std::{
    process::{Command, Output},
    time::Instant,
};

use smp_agent::lab::{Lab, LabInfo, Side};

fn agent(args: &[&str]) -> Output {
    Command::new(smp_tests::agent_bin())
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

fn sh(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd).args(args).output().expect(cmd);
    assert!(o.status.success(), "{cmd} {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What must be unchanged after `lab down`.
#[derive(Debug, PartialEq, Eq)]
struct HostSnapshot {
    netns: String,
    nft: String,
}

fn snapshot() -> HostSnapshot {
    HostSnapshot {
        netns: sh("ip", &["netns", "list"]),
        nft: sh("nft", &["list", "ruleset"]),
    }
}

/// Pids of processes whose command line mentions `needle`.
fn procs_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

/// A lab under test; `Drop` takes it down even when an assertion failed.
struct TestLab {
    name: String,
    info: LabInfo,
    before: HostSnapshot,
    down_done: bool,
}

impl TestLab {
    fn up(name: &str, extra: &[&str]) -> TestLab {
        let before = snapshot();
        let _ = agent(&["lab", "down", "--name", name]);
        let mut args = vec!["lab", "up", "--name", name, "--output", "json"];
        args.extend_from_slice(extra);
        let t = Instant::now();
        let o = agent(&args);
        assert!(o.status.success(), "lab up {extra:?}: {}", text(&o));
        eprintln!(
            "{name}: lab up {extra:?} took {:.2} s",
            t.elapsed().as_secs_f64()
        );
        let info: LabInfo = serde_json::from_slice(&o.stdout).expect("lab up --output json");
        TestLab {
            name: name.to_string(),
            info,
            before,
            down_done: false,
        }
    }

    /// curl from the client namespace: per response, its `x-smp-via` values and total seconds.
    fn curl(&self, urls: &[&str], headers: &[&str]) -> Vec<(Vec<String>, f64)> {
        let mut args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            self.info.client_netns.clone(),
            "curl".into(),
            "-sS".into(),
            "--fail".into(),
            "-D".into(),
            "-".into(),
            "-w".into(),
            "SMP-TIME %{time_total}\\n".into(),
        ];
        for h in headers {
            args.push("-H".into());
            args.push((*h).into());
        }
        for u in urls {
            args.push("-o".into());
            args.push("/dev/null".into());
            args.push((*u).into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = sh("ip", &argv);
        let mut res = Vec::new();
        let mut via = Vec::new();
        for line in out.lines() {
            if let Some(t) = line.strip_prefix("SMP-TIME ") {
                res.push((std::mem::take(&mut via), t.trim().parse().unwrap()));
            } else if let Some((k, v)) = line.split_once(':') {
                // Traefik can only set a header, not append to one: its slots use
                // `x-smp-via-<side>`.
                if k.to_ascii_lowercase().starts_with("x-smp-via") {
                    via.push(v.trim().to_string());
                }
            }
        }
        assert_eq!(res.len(), urls.len(), "curl output:\n{out}");
        res
    }

    fn counters(&self) -> (Option<u64>, Option<u64>) {
        (
            Lab::sidecar_requests(&self.info, Side::Outbound).expect("outbound counter"),
            Lab::sidecar_requests(&self.info, Side::Inbound).expect("inbound counter"),
        )
    }

    /// Meshed requests cross both sidecars, baseline requests neither.
    fn assert_paths(&self, n: usize) {
        let kind_out = self.info.outbound.kind;
        let kind_in = self.info.inbound.kind;
        let c0 = self.counters();
        let meshed = vec![self.info.meshed_url.as_str(); n];
        for (via, _) in self.curl(&meshed, &[]) {
            assert!(
                via.contains(&format!("inbound-{kind_in}"))
                    && via.contains(&format!("outbound-{kind_out}")),
                "{}: meshed response did not cross both sidecars: x-smp-via = {via:?}",
                self.name
            );
        }
        let c1 = self.counters();
        let baseline = vec![self.info.baseline_url.as_str(); n];
        for (via, _) in self.curl(&baseline, &[]) {
            assert!(
                via.is_empty(),
                "{}: baseline crossed a sidecar: {via:?}",
                self.name
            );
        }
        let c2 = self.counters();
        let n = n as u64;
        for (side, a, b, c) in [
            ("outbound", c0.0, c1.0, c2.0),
            ("inbound", c0.1, c1.1, c2.1),
        ] {
            if let (Some(a), Some(b), Some(c)) = (a, b, c) {
                assert_eq!(
                    b - a,
                    n,
                    "{}: {side} sidecar counted {} of {n} meshed requests",
                    self.name,
                    b - a
                );
                assert_eq!(c, b, "{}: {side} sidecar saw baseline requests", self.name);
            }
        }
    }

    /// A chunked POST (two requests on one keep-alive connection) comes back intact through
    /// the meshed path: request and response framing survive both sidecars.
    fn assert_echo(&self) {
        let dir = std::env::temp_dir().join(format!("smp-lab-echo-{}", self.name));
        std::fs::create_dir_all(&dir).unwrap();
        let body: String = (0..3000).map(|i| format!("line {i}\n")).collect();
        let input = dir.join("in.txt");
        std::fs::write(&input, &body).unwrap();
        let (o1, o2) = (dir.join("o1"), dir.join("o2"));
        let url = self.info.meshed_url.as_str();
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.info.client_netns,
                "curl",
                "-sS",
                "--fail",
                "-H",
                "Transfer-Encoding: chunked",
                "--data-binary",
                &format!("@{}", input.display()),
                "-o",
                o1.to_str().unwrap(),
                url,
                "-o",
                o2.to_str().unwrap(),
                url,
            ],
        );
        for o in [&o1, &o2] {
            assert!(
                std::fs::read_to_string(o).unwrap() == body,
                "{}: echo through the mesh differs",
                self.name
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn down(mut self) {
        // Every process in the lab's namespaces (nginx workers, Envoy, …) must be gone after.
        let mut pids = vec![
            self.info.app_pid,
            self.info.outbound.pid,
            self.info.inbound.pid,
        ];
        for ns in [&self.info.client_netns, &self.info.server_netns] {
            pids.extend(
                sh("ip", &["netns", "pids", ns])
                    .split_whitespace()
                    .map(|p| p.parse::<u32>().unwrap()),
            );
        }
        let t = Instant::now();
        let o = agent(&["lab", "down", "--name", &self.name]);
        assert!(o.status.success(), "lab down: {}", text(&o));
        eprintln!(
            "{}: lab down took {:.2} s",
            self.name,
            t.elapsed().as_secs_f64()
        );
        self.down_done = true;
        assert_eq!(
            snapshot(),
            self.before,
            "{}: host state differs after lab down",
            self.name
        );
        for pid in pids {
            assert!(
                !std::path::Path::new(&format!("/proc/{pid}")).exists()
                    || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                        .map(|s| s.contains(") Z "))
                        .unwrap_or(true),
                "{}: pid {pid} still runs after lab down",
                self.name
            );
        }
        let state = format!("/run/smp-agent/lab/{}/", self.name);
        assert_eq!(
            procs_mentioning(&state),
            Vec::<u32>::new(),
            "lab processes left"
        );
        assert!(!std::path::Path::new(&state).exists(), "state dir left");
        // Idempotent.
        let o = agent(&["lab", "down", "--name", &self.name]);
        assert!(o.status.success(), "second lab down: {}", text(&o));
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if !self.down_done {
            let _ = agent(&["lab", "down", "--name", &self.name]);
        }
    }
}

fn proxy_kind(kind: &str, name: &str) {
    for mtls in [false, true] {
        let mut extra = vec!["--proxy", kind];
        if mtls {
            extra.push("--mtls");
        }
        let lab = TestLab::up(name, &extra);
        assert_eq!(lab.info.mtls, mtls);
        assert_eq!(lab.info.outbound.kind.as_str(), kind);
        lab.assert_paths(5);
        lab.assert_echo();
        lab.down();
    }
}

/// ztunnel in both pods (Istio's ambient data plane, dedicated mode): each meshed client
/// connection is carried as one HBONE stream with mutual TLS (the client pod's ztunnel
/// reports it as the source, the server pod's as the destination), baseline connections
/// cross neither, and a chunked POST comes back intact through the L4 tunnel. ztunnel adds no
/// header and counts connections, not requests: its own metrics are the proof.
#[test]
fn lab_ztunnel_ambient() {
    if !smp_tests::require_root("lab_ztunnel_ambient")
        || !smp_tests::require_ztunnel("lab_ztunnel_ambient")
    {
        return;
    }
    use smp_agent::lab::proxies::ztunnel::{mtls_connections, Reporter, METRICS_PORT};
    let lab = TestLab::up("lzt", &["--proxy", "ztunnel"]);
    assert!(lab.info.mtls && lab.info.h2, "HBONE is HTTP/2 over mTLS");
    assert_eq!(lab.info.outbound.kind.as_str(), "ztunnel");
    let connections = || {
        let read = |ns: &str, reporter| {
            let body =
                smp_agent::lab::http_get(ns, ([127, 0, 0, 1], METRICS_PORT).into(), "/metrics")
                    .expect("ztunnel metrics");
            mtls_connections(&body, reporter).unwrap_or(0)
        };
        (
            read(&lab.info.client_netns, Reporter::Source),
            read(&lab.info.server_netns, Reporter::Destination),
        )
    };
    let before = connections();
    for _ in 0..3 {
        let res = lab.curl(&[lab.info.meshed_url.as_str()], &[]);
        assert!(
            res[0].0.is_empty(),
            "ztunnel adds no header: {:?}",
            res[0].0
        );
    }
    let meshed = connections();
    for _ in 0..3 {
        lab.curl(&[lab.info.baseline_url.as_str()], &[]);
    }
    let after = connections();
    assert_eq!(
        meshed,
        (before.0 + 3, before.1 + 3),
        "{before:?} → {meshed:?}"
    );
    assert_eq!(after, meshed, "baseline connections crossed a ztunnel");
    lab.assert_echo();
    lab.down();
}

/// Ambient as Istio deploys it: one ztunnel in the node's namespace serves both pods, from
/// listeners it opens inside each pod's namespace once the lab's node agent hands them over.
#[test]
fn lab_shared_ztunnel_serves_both_pods_from_the_node() {
    if !smp_tests::require_root("lab_shared_ztunnel_serves_both_pods_from_the_node")
        || !smp_tests::require_ztunnel("lab_shared_ztunnel_serves_both_pods_from_the_node")
    {
        return;
    }
    use smp_agent::lab::{
        netns,
        proxies::ztunnel::{mtls_connections, Reporter, METRICS_PORT},
        Lab, Side,
    };
    let lab = TestLab::up("lzs", &["--proxy", "ztunnel", "--ztunnel-mode", "shared"]);
    let (out, inb) = (&lab.info.outbound, &lab.info.inbound);
    assert_eq!(out.pid, inb.pid, "one ztunnel for both pods");
    assert_eq!(out.netns, "lzs-node");
    for pod in [&lab.info.client_netns, &lab.info.server_netns] {
        assert!(
            !netns::pids(pod).contains(&(out.pid as i32)),
            "ztunnel runs on the node, not in {pod}"
        );
    }
    let connections = || {
        let body = smp_agent::lab::http_get(
            &out.netns,
            ([127, 0, 0, 1], METRICS_PORT).into(),
            "/metrics",
        )
        .expect("ztunnel metrics");
        (
            mtls_connections(&body, Reporter::Source).unwrap_or(0),
            mtls_connections(&body, Reporter::Destination).unwrap_or(0),
        )
    };
    let before = connections();
    for _ in 0..3 {
        lab.curl(&[lab.info.meshed_url.as_str()], &[]);
    }
    let meshed = connections();
    for _ in 0..3 {
        lab.curl(&[lab.info.baseline_url.as_str()], &[]);
    }
    assert_eq!(
        meshed,
        (before.0 + 3, before.1 + 3),
        "each meshed connection is an HBONE source and a destination of the one ztunnel: {before:?} → {meshed:?}"
    );
    assert_eq!(
        connections(),
        meshed,
        "baseline connections crossed ztunnel"
    );
    lab.assert_echo();
    // Restarting either side restarts the node's ztunnel; the node agent hands it the pods
    // again, and both slots follow the new pid.
    let pid = Lab::restart_sidecar(&lab.info.name, Side::Inbound).expect("restart");
    assert_ne!(pid, out.pid);
    let st = Lab::status(&lab.info.name).expect("status");
    let info = st.info.expect("info");
    assert_eq!((info.outbound.pid, info.inbound.pid), (pid, pid));
    assert!(st.healthy, "{:?}", st.processes);
    lab.curl(&[lab.info.meshed_url.as_str()], &[]);
    lab.down();
    assert!(
        !netns::exists("lzs-node"),
        "down removes the node namespace"
    );
    assert!(!netns::alive(pid), "down stops the node's ztunnel");
}

#[test]
fn lab_envoy_plain_and_mtls() {
    if !smp_tests::require_root("lab_envoy_plain_and_mtls") {
        return;
    }
    proxy_kind("envoy", "tenvoy");
}

#[test]
fn lab_haproxy_plain_and_mtls() {
    if !smp_tests::require_root("lab_haproxy_plain_and_mtls") {
        return;
    }
    proxy_kind("haproxy", "thaproxy");
}

#[test]
fn lab_nginx_plain_and_mtls() {
    if !smp_tests::require_root("lab_nginx_plain_and_mtls") {
        return;
    }
    proxy_kind("nginx", "tnginx");
}

#[test]
fn lab_traefik_plain_and_mtls() {
    if !smp_tests::require_root("lab_traefik_plain_and_mtls") {
        return;
    }
    proxy_kind("traefik", "ttraefik");
}

#[test]
fn lab_ours_plain_and_mtls() {
    if !smp_tests::require_root("lab_ours_plain_and_mtls") {
        return;
    }
    proxy_kind("ours", "tours");
}

#[test]
fn lab_h2_between_sidecars() {
    if !smp_tests::require_root("lab_h2_between_sidecars") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("smp-lab-h2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // (outbound, inbound, mtls): every kind that speaks h2, and Envoy in front of ours so
    // Envoy's counters prove that ours really accepted HTTP/2.
    for (out, inb, mtls) in [
        ("envoy", "envoy", false),
        ("envoy", "envoy", true),
        ("haproxy", "haproxy", false),
        ("haproxy", "haproxy", true),
        ("ours", "ours", false),
        ("ours", "ours", true),
        ("envoy", "ours", true),
    ] {
        let path = dir.join("lab.yaml");
        std::fs::write(
            &path,
            format!(
                "h2: true\nmtls: {mtls}\noutbound: {{proxy: {out}}}\ninbound: {{proxy: {inb}}}\n"
            ),
        )
        .unwrap();
        let lab = TestLab::up("th2", &["--config", path.to_str().unwrap()]);
        assert!(lab.info.h2);
        lab.assert_paths(3);
        if inb == "ours" {
            lab.assert_echo();
        }
        if out == "envoy" {
            // The outbound Envoy's upstream connection really is HTTP/2.
            let stats = smp_agent::lab::http_get(
                &lab.info.client_netns,
                lab.info.outbound.admin,
                "/stats?filter=upstream_cx_http2_total",
            )
            .unwrap();
            assert!(
                stats.contains("cluster.upstream.upstream_cx_http2_total: 1"),
                "{out}->{inb}: {stats}"
            );
        }
        lab.down();
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[test]
fn lab_ground_truth_delay() {
    if !smp_tests::require_root("lab_ground_truth_delay") {
        return;
    }
    const D_US: u64 = 20_000;
    let d = D_US as f64 / 1e6;
    let lab = TestLab::up("tdelay", &["--proxy", "ours", "--delay-us", "20000"]);
    let n = 8;
    let meshed: Vec<f64> = lab
        .curl(&vec![lab.info.meshed_url.as_str(); n], &[])
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let baseline: Vec<f64> = lab
        .curl(&vec![lab.info.baseline_url.as_str(); n], &[])
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let bmed = median(baseline.clone());
    for t in &meshed {
        assert!(
            *t >= 2.0 * d,
            "meshed request took {t} s < 2·D = {} s",
            2.0 * d
        );
    }
    assert!(
        median(meshed.clone()) - bmed >= 2.0 * d,
        "meshed {meshed:?} vs baseline {baseline:?}: difference below 2·D"
    );
    // The header overrides the fixed delay per request.
    let hdr: Vec<f64> = lab
        .curl(
            &[lab.info.meshed_url.as_str(); 4],
            &["x-smp-delay-us: 50000"],
        )
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    for t in &hdr {
        assert!(*t >= 0.1, "header delay 50 ms x2 not applied: {t} s");
    }
    lab.down();
}

/// The slow link (`--link-delay-us`): every meshed request crosses it twice (request and
/// response, more on a new connection) and takes at least 2·D, the baseline crosses a fast
/// link; `status` shows the link served and nothing dropped, and says so when its process is
/// gone (the lab is then not healthy); `down` leaves the host as it was.
#[test]
fn lab_slow_link_delays_the_sidecars_segments_not_the_baseline() {
    if !smp_tests::require_root("lab_slow_link_delays_the_sidecars_segments_not_the_baseline") {
        return;
    }
    const D: f64 = 0.020;
    let lab = TestLab::up("tlink", &["--proxy", "ours", "--link-delay-us", "20000"]);
    let n = 6;
    let times = |url: &str| -> Vec<f64> {
        lab.curl(&vec![url; n], &[])
            .into_iter()
            .map(|(_, t)| t)
            .collect()
    };
    let (meshed, baseline) = (times(&lab.info.meshed_url), times(&lab.info.baseline_url));
    eprintln!("meshed {meshed:?} s, baseline {baseline:?} s");
    assert!(
        meshed.iter().all(|t| *t >= 2.0 * D),
        "meshed {meshed:?}: some under 2·D"
    );
    assert!(
        baseline.iter().all(|t| *t < D / 2.0),
        "baseline {baseline:?}: delayed"
    );
    let status = || -> (bool, serde_json::Value) {
        let o = agent(&["lab", "status", "--name", "tlink", "--output", "json"]);
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).expect("status json");
        (o.status.success(), st)
    };
    let (ok, st) = status();
    assert!(ok && st["healthy"] == true, "{st}");
    let link = &st["link"];
    assert_eq!(link["delay_us"], 20000, "{st}");
    assert_eq!(link["queue"]["queue_dropped"], 0, "{st}");
    assert_eq!(link["queue"]["user_dropped"], 0, "{st}");
    let text_status = text(&agent(&["lab", "status", "--name", "tlink"]));
    assert!(
        text_status.contains("link     +20000 µs each way; segments held now")
            && text_status.contains("dropped 0 (queue full 0, not delivered 0)"),
        "{text_status}"
    );
    // Its process gone, nobody serves the queue: not healthy, and said so.
    let pid = st["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "link-delay")
        .and_then(|p| p["pid"].as_u64())
        .unwrap_or_else(|| panic!("no link-delay process: {st}"));
    sh("kill", &["-9", &pid.to_string()]);
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let st = loop {
        let (ok, st) = status();
        if !ok || Instant::now() > deadline {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(st["healthy"], false, "{st}");
    assert!(st["link"]["queue"].is_null(), "{st}");
    let text_status = text(&agent(&["lab", "status", "--name", "tlink"]));
    assert!(text_status.contains("NOT SERVED"), "{text_status}");
    lab.down();
}

#[test]
fn lab_two_labs_coexist_and_status() {
    if !smp_tests::require_root("lab_two_labs_coexist_and_status") {
        return;
    }
    let a = TestLab::up("tcoa", &["--proxy", "ours"]);
    let b = TestLab::up("tcob", &["--proxy", "haproxy"]);
    a.assert_paths(2);
    b.assert_paths(2);
    let o = agent(&["lab", "status", "--name", "tcoa", "--output", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(st["healthy"], true, "{st}");
    // The app also speaks h2c (prior knowledge) on the baseline port.
    let out = sh(
        "ip",
        &[
            "netns",
            "exec",
            &a.info.client_netns,
            "curl",
            "-sS",
            "--fail",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &a.info.baseline_url,
        ],
    );
    assert_eq!(out, "2");
    b.down();
    a.down();
}

#[test]
fn lab_down_after_crash() {
    if !smp_tests::require_root("lab_down_after_crash") {
        return;
    }
    let before = snapshot();
    let lab = TestLab::up("tcrash", &["--proxy", "ours"]);
    // A sidecar dies: status says so (exit code 1), down still removes everything.
    // SAFETY: kill with a pid we started.
    unsafe { libc::kill(lab.info.outbound.pid as i32, libc::SIGKILL) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    let o = agent(&["lab", "status", "--name", "tcrash"]);
    assert!(
        !o.status.success(),
        "status of a broken lab must fail: {}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("GONE"),
        "{}",
        text(&o)
    );
    lab.down();

    // A crash before any state was written: namespaces exist, no state file.
    sh("ip", &["netns", "add", "tcrash-client"]);
    sh("ip", &["netns", "add", "tcrash-server"]);
    let o = agent(&["lab", "down", "--name", "tcrash"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(snapshot(), before);

    // Two `up`s with one name: the second fails and leaves the first intact.
    let lab = TestLab::up("tcrash", &["--proxy", "ours"]);
    let o = agent(&["lab", "up", "--name", "tcrash", "--proxy", "ours"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("already exists"),
        "{}",
        text(&o)
    );
    lab.assert_paths(1);
    lab.down();
    assert_eq!(snapshot(), before);
}

#[test]
fn lab_mixed_kinds_from_a_config_file() {
    if !smp_tests::require_root("lab_mixed_kinds_from_a_config_file") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("smp-lab-mixed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("lab.yaml");
    std::fs::write(
        &path,
        "name: tmixed\nproxy: ours\nmtls: true\noutbound: {proxy: envoy, workers: 2}\n\
         inbound: {workers: 2, delay_us: 1000}\napp: {body_bytes: 1000, workers: 2}\n\
         network: {client_addr: 10.99.0.1, server_addr: 10.99.0.2}\n",
    )
    .unwrap();
    let lab = TestLab::up("tmixed", &["--config", path.to_str().unwrap()]);
    assert_eq!(lab.info.meshed_url, "http://10.99.0.2:8080/");
    assert_eq!(lab.info.outbound.kind.as_str(), "envoy");
    assert_eq!(lab.info.inbound.kind.as_str(), "ours");
    lab.assert_paths(4);
    lab.assert_echo();
    lab.down();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lab_library_api_in_process() {
    if !smp_tests::require_root("lab_library_api_in_process") {
        return;
    }
    let before = snapshot();
    let cfg = smp_agent::lab::LabConfig {
        name: "tlib".into(),
        proxy: smp_agent::lab::ProxyKind::Ours,
        agent_bin: Some(smp_tests::agent_bin()),
        ..Default::default()
    };
    let _ = Lab::down("tlib");
    let info = Lab::up(&cfg).expect("Lab::up");
    assert_eq!(info.client_netns, "tlib-client");
    assert!(info.outbound.pid > 0 && info.inbound.pid > 0 && info.app_pid > 0);
    let st = Lab::status("tlib").unwrap();
    assert!(st.healthy, "{st:?}");
    assert!(Lab::list().contains(&"tlib".to_string()));
    let lab = TestLab {
        name: "tlib".into(),
        info,
        before,
        down_done: false,
    };
    lab.assert_paths(2);
    // `Lab::down` in-process (it also reaps the children this process spawned).
    let pids = [
        lab.info.app_pid,
        lab.info.outbound.pid,
        lab.info.inbound.pid,
    ];
    let report = Lab::down("tlib").expect("Lab::down");
    assert_eq!(report.netns_deleted.len(), 2, "{report:?}");
    // The kernel reaps asynchronously: give the pids a bounded moment to vanish.
    for pid in pids {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                std::time::Instant::now() < deadline,
                "pid {pid} left: {}",
                std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    assert_eq!(snapshot(), lab.before);
    let again = Lab::down("tlib").expect("second Lab::down");
    assert!(again.netns_deleted.is_empty() && again.killed.is_empty());
    let mut lab = lab;
    lab.down_done = true;
}

#[test]
fn lab_config_errors_name_the_field() {
    if !smp_tests::require_root("lab_config_errors_name_the_field") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("smp-lab-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (yaml, field) in [
        ("outbound: {workers: 0}\n", "outbound.workers"),
        (
            "proxy: envoy\ninbound: {delay_us: 100}\n",
            "inbound.delay_us",
        ),
        ("ports: {baseline: 8080}\n", "ports.baseline"),
        ("network: {client_addr: 1.2.3.4}\n", "network.client_addr"),
        ("app: {bodybytes: 3}\n", "bodybytes"),
        ("link_delay_us: 5000000\n", "link_delay_us"),
    ] {
        let path = dir.join("lab.yaml");
        std::fs::write(&path, format!("name: tcfg\n{yaml}")).unwrap();
        let o = agent(&["lab", "up", "--config", path.to_str().unwrap()]);
        assert!(!o.status.success(), "{yaml}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(field),
            "{yaml}: error does not name {field}: {err}"
        );
    }
    assert!(!smp_agent::lab::netns::exists("tcfg-client"));
    std::fs::remove_dir_all(&dir).unwrap();
}
