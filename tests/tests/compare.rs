//! `smp-agent compare A B` as a CI gate: exit codes, thresholds, JSON output, Meshery's seconds,
//! per-hop deltas. No root needed: results are written with the library, then compared by the
//! built binary.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use smp_agent::report::{
    details::{new_latency_histogram, Direction, Distribution, Hop, Leg, RunSummary, SidecarUsage},
    smp::{
        Client, Latency, MeshType, PerformanceTestConfig, PerformanceTestResult, Protocol,
        ServiceMesh, ServiceMeshConfig, Sidecar, SmpDuration, TestConfigFile, Timestamp,
    },
    Details, EnvironmentConfig, ResultSet,
};

fn agent(args: &[&str]) -> Output {
    Command::new(smp_tests::agent_bin())
        .args(args)
        .output()
        .expect("run smp-agent")
}

/// `compare A B --fail-if RULE` without the bootstrap (only the exit status matters).
fn gate(a: &str, b: &str, rule: &str) -> Output {
    agent(&[
        "compare",
        a,
        b,
        "--fail-if",
        rule,
        "--bootstrap-iterations",
        "0",
    ])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smp-compare-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Removes a scratch directory, unless `SMP_KEEP_TEST_DIRS` is set (to look at the files).
fn cleanup(dir: &Path) {
    if std::env::var_os("SMP_KEEP_TEST_DIRS").is_none() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/smp")
        .join(name)
}

/// Deterministic latencies (ns) spread 0.5×..2× around `center_ns`.
fn histogram(center_ns: u64, n: u64) -> Distribution {
    let mut h = new_latency_histogram();
    for i in 0..n {
        let f = 0.5 + 1.5 * ((i * 7919) % n) as f64 / n as f64;
        h.record((center_ns as f64 * f) as u64).unwrap();
    }
    Distribution::from_histogram_ns(&h).unwrap()
}

/// Writes one of our result sets: end-to-end latency around `center_ms`, one hop around
/// `hop_us`, `qps` achieved.
fn write_run(dir: &Path, center_ms: f64, hop_us: f64, qps: f64) {
    let e2e = histogram((center_ms * 1e6) as u64, 3000);
    let hop = histogram((hop_us * 1e3) as u64, 3000);
    let p = e2e.percentiles;
    let mut details = Details::new("");
    details.end_to_end.meshed = RunSummary {
        url: "http://10.0.0.2:8080/".into(),
        actual_qps: qps,
        errors: 0,
        grpc_status: Default::default(),
        latency: e2e,
    };
    details.end_to_end.baseline = Some(RunSummary {
        url: "http://10.0.0.2:9080/".into(),
        actual_qps: qps,
        errors: 0,
        grpc_status: Default::default(),
        latency: histogram((center_ms * 0.5e6) as u64, 3000),
    });
    details.end_to_end.compute_overhead();
    details.hops.push(Hop {
        proxy: "envoy-client".into(),
        kind: "envoy".into(),
        pid: Some(42),
        direction: Direction::Outbound,
        direction_reason: String::new(),
        leg: Leg::Request,
        latency: hop,
        unpaired: 0,
        wait: None,
        send: None,
        sides: Vec::new(),
    });
    let mut usage = SidecarUsage {
        proxy: "envoy-client".into(),
        cpu_seconds: 3.0,
        requests: (qps * 30.0) as u64,
        ..Default::default()
    };
    usage.derive(30.0);
    details.sidecars.push(usage);
    let mut set = ResultSet {
        test: TestConfigFile {
            test: PerformanceTestConfig {
                name: "it".into(),
                clients: vec![Client {
                    load_generator: "smp-agent".into(),
                    protocol: Protocol::Http,
                    connections: 8,
                    rps: qps as i64,
                    endpoint_urls: vec!["http://10.0.0.2:8080/".into()],
                    ..Default::default()
                }],
                duration: Some(SmpDuration::new(Duration::from_secs(30))),
                ..Default::default()
            },
            mesh: ServiceMesh {
                r#type: MeshType::Istio,
                ..Default::default()
            },
        },
        result: PerformanceTestResult {
            start_time: Timestamp::parse_rfc3339("2026-11-23T12:00:00Z").ok(),
            end_time: Timestamp::parse_rfc3339("2026-11-23T12:00:30Z").ok(),
            latencies_ms: Some(Latency {
                min: p.min,
                average: p.mean,
                p50: p.p50,
                p90: p.p90,
                p99: p.p99,
                max: p.max,
            }),
            actual_qps: qps,
            ..Default::default()
        },
        mesh_config: ServiceMeshConfig {
            sidecar: Some(Sidecar {
                count: 2,
                cpu_mcores: 100,
                mem_mb: 30,
                rps: qps as i32,
                bps: 0,
            }),
            ..Default::default()
        },
        environment: EnvironmentConfig::default(),
        details: Some(details),
    };
    set.write_to_dir(dir).unwrap();
}

#[test]
fn same_runs_pass_the_gate_and_differences_are_noise() {
    let root = scratch("same");
    let (a, b) = (root.join("a"), root.join("b"));
    write_run(&a, 2.0, 100.0, 500.0);
    write_run(&b, 2.0, 100.0, 500.0);
    let out = agent(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--fail-if",
        "p99>+10%",
        "--fail-if",
        "qps<-5%",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("within noise"), "{stdout}");
    assert!(stdout.contains("envoy-client/outbound/request"), "{stdout}");
    assert!(stdout.contains("PASS"), "{stdout}");
    let out = agent(&[
        "compare",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["overhead"][0]["name"], "p50");
    assert_eq!(v["overhead"][0]["significance"]["verdict"], "within_noise");
    assert_eq!(v["latency"][4]["significance"]["verdict"], "within_noise");
    assert_eq!(v["passed"], true);
    cleanup(&root);
}

#[test]
fn a_regression_fails_the_gate_with_exit_1() {
    let root = scratch("regress");
    let (a, b) = (root.join("a"), root.join("b"));
    write_run(&a, 2.0, 100.0, 500.0);
    write_run(&b, 2.6, 180.0, 450.0); // +30 % latency, hop slower, −10 % qps
    let a_s = a.to_str().unwrap();
    let b_s = b.to_str().unwrap();

    let out = agent(&["compare", a_s, b_s, "--fail-if", "p99>+10%"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("significant"), "{stdout}");

    // Absolute limits: +0.6 ms at p50 passes a 2 ms limit, fails a 0.1 ms one.
    let out = gate(a_s, b_s, "p50>+2ms");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = gate(a_s, b_s, "p50>+100us");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let out = gate(a_s, b_s, "qps<-5%");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));

    // Gates on what only the details documents have: the mesh overhead and one hop.
    let out = agent(&["compare", a_s, b_s, "--fail-if", "overhead.p50>+10%"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("mesh overhead"), "{stdout}");
    let hop_rule = "hop:envoy-client/outbound/request.p50>+50us";
    let out = gate(a_s, b_s, hop_rule);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let out = gate(a_s, a_s, hop_rule);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));

    // JSON for machines.
    let out = agent(&[
        "compare",
        a_s,
        b_s,
        "--output",
        "json",
        "--fail-if",
        "p99>+50%",
        "--fail-if",
        "qps<-5%",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(v["passed"], false);
    assert_eq!(v["thresholds"][0]["failed"], false);
    assert_eq!(v["thresholds"][1]["failed"], true);
    assert_eq!(v["a"]["unit"], "milliseconds");
    assert_eq!(v["a"]["unit_evidence"]["kind"], "label");
    let p99 = &v["latency"][4];
    assert_eq!(p99["name"], "p99");
    assert!(p99["delta_pct"].as_f64().unwrap() > 20.0, "{p99}");
    assert_eq!(p99["significance"]["verdict"], "significant");
    let hop = &v["hops"][0];
    assert_eq!(hop["hop"], "envoy-client/outbound/request");
    assert!(hop["deltas"][0]["delta"].as_f64().unwrap() > 0.05, "{hop}");
    cleanup(&root);
}

#[test]
fn meshery_seconds_are_detected_and_converted() {
    let root = scratch("meshery");
    let ours = root.join("ours");
    write_run(&ours, 20.0, 100.0, 1.0);
    let legacy = fixture("service mesh performance result.yaml");
    let out = agent(&[
        "compare",
        legacy.to_str().unwrap(),
        ours.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["a"]["unit"], "seconds");
    assert_eq!(v["a"]["unit_evidence"]["kind"], "meshery_legacy_layout");
    // 0.021899… s in the file → 21.9 ms.
    let p50_a = v["latency"][2]["a"].as_f64().unwrap();
    assert!((p50_a - 21.899077590884428).abs() < 1e-6, "{p50_a}");

    // A proto-layout file as Meshery's ConvertToSpec writes it: placeholders mark seconds.
    let convert_to_spec = root.join("result_meshery.yaml");
    std::fs::write(
        &convert_to_spec,
        "smp_version: test_smp_version\nstart_time: 2022-04-26T19:56:40.358118Z\n\
         end_time: 2022-04-26T19:57:10.546096458Z\nlatencies_ms:\n  min: 0.3349775\n  \
         average: 0.3866328985641026\n  p50: 0.38333333333333336\n  p90: 0.4373684210526316\n  \
         p99: 0.50217102424\n  max: 0.509868292\nactual_qps: 2.5838099794764338\n\
         details_uri: test_details\ntest_id: test_test_id\nmesh_config_id: test_meshconfigID\n\
         env_id: test_envID\n",
    )
    .unwrap();
    let records = fixture("test-results.json");
    let out = agent(&[
        "compare",
        convert_to_spec.to_str().unwrap(),
        records.to_str().unwrap(),
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("SECONDS"), "{stdout}");
    assert!(stdout.contains("placeholder"), "{stdout}");
    // Same run both ways: no delta once both are in ms.
    let out = agent(&[
        "compare",
        convert_to_spec.to_str().unwrap(),
        records.to_str().unwrap(),
        "--output",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["a"]["unit_evidence"]["kind"], "meshery_placeholders");
    assert_eq!(v["b"]["unit_evidence"]["kind"], "fortio_record");
    for stat in v["latency"].as_array().unwrap() {
        assert!(stat["delta"].as_f64().unwrap().abs() < 1e-9, "{stat}");
    }
    assert!((v["latency"][2]["a"].as_f64().unwrap() - 383.333333).abs() < 1e-3);
    cleanup(&root);
}

#[test]
fn bad_input_exits_2_naming_the_file() {
    let root = scratch("bad");
    let good = root.join("good");
    write_run(&good, 2.0, 100.0, 500.0);
    let g = good.to_str().unwrap();

    let missing = root.join("nope.yaml");
    let out = agent(&["compare", g, missing.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nope.yaml"),
        "{}",
        text(&out.stderr)
    );

    // A result with a wrong type: file, line and field in the message.
    let broken = root.join("broken.yaml");
    std::fs::write(&broken, "id: x\nlatencies_ms:\n  p50: fast\n").unwrap();
    let out = agent(&["compare", g, broken.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("broken.yaml:3:"), "{stderr}");
    assert!(stderr.contains("latencies_ms.p50"), "{stderr}");

    // A test config is not a result.
    let tc = fixture("load-test.yaml");
    let out = agent(&["compare", g, tc.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a result"),
        "{}",
        text(&out.stderr)
    );

    // A malformed rule is a usage error.
    let out = agent(&["compare", g, g, "--fail-if", "p99=10%"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("invalid threshold"),
        "{}",
        text(&out.stderr)
    );
    cleanup(&root);
}

/// Rewrites one top-level field of a written result (YAML).
fn set_result_field(dir: &Path, key: &str, value: serde_yaml_ng::Value) {
    let p = dir.join("result.yaml");
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    doc[key] = value;
    std::fs::write(&p, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
}

/// Issue 17 item 1: a `details_uri` pointing outside the result's directory is not followed,
/// and nothing of the file it names is printed.
#[test]
fn details_uri_outside_the_result_dir_is_not_followed() {
    let root = scratch("uri");
    let good = root.join("good");
    write_run(&good, 2.0, 100.0, 500.0);
    let secret = root.join("secret.yaml");
    std::fs::write(&secret, "SECRET-hunter2-in-the-file\n").unwrap();
    std::fs::write(root.join("secret.json"), "\"SECRET-hunter2-in-the-file\"\n").unwrap();
    let abs = secret.to_str().unwrap().to_string();
    for uri in [
        abs.clone(),
        format!("file://{abs}"),
        "../secret.yaml".to_string(),
        "../secret.json".to_string(),
    ] {
        let evil = root.join("evil");
        let _ = std::fs::remove_dir_all(&evil);
        write_run(&evil, 2.0, 100.0, 500.0);
        set_result_field(&evil, "details_uri", uri.clone().into());
        let out = agent(&[
            "compare",
            good.to_str().unwrap(),
            evil.to_str().unwrap(),
            "--bootstrap-iterations",
            "0",
        ]);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{uri}: {all}");
        assert!(!all.contains("hunter2"), "{uri}: {all}");
        assert!(
            all.contains("details not used: details_uri must be a plain file name"),
            "{uri}: {all}"
        );
    }
    cleanup(&root);
}

/// Issue 17 item 2: a details histogram whose header claims a 4 GiB payload is refused without
/// allocating it (the run is limited to 1 GiB of address space).
#[test]
fn a_histogram_claiming_4_gib_is_refused_without_allocating() {
    // V2 compressed framing around a V2 header with payload length 0xFFFFFFFF.
    const BOMB: &str = "HISTFAAAABx42pNpmSz8HwgYIIAZSjOCERDYf4AIAADDnQZ3";
    let root = scratch("bomb");
    let (a, b) = (root.join("a"), root.join("b"));
    write_run(&a, 2.0, 100.0, 500.0);
    write_run(&b, 2.0, 100.0, 500.0);
    let p = b.join("details.json");
    let mut d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    d["end_to_end"]["meshed"]["latency"]["histogram"]["data"] = BOMB.into();
    std::fs::write(&p, serde_json::to_string(&d).unwrap()).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576 && exec \"$0\" compare \"$1\" \"$2\"")
        .arg(smp_tests::agent_bin())
        .arg(&a)
        .arg(&b)
        .output()
        .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("end-to-end histogram not used") && all.contains("payload length"),
        "{all}"
    );
    cleanup(&root);
}

/// Issue 17 item 3: `max: .nan` in a result is an input error (exit 2), not "observed NaN% ok".
#[test]
fn a_nan_latency_is_refused_not_passed() {
    let root = scratch("nan");
    let (a, b) = (root.join("a"), root.join("b"));
    write_run(&a, 2.0, 100.0, 500.0);
    write_run(&b, 2.0, 100.0, 500.0);
    let p = b.join("result.yaml");
    let mut doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    doc["latencies_ms"]["max"] = f64::NAN.into();
    std::fs::write(&p, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let out = gate(a.to_str().unwrap(), b.to_str().unwrap(), "max>+10%");
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains("latencies_ms.max") && all.contains("NaN"),
        "{all}"
    );
    assert!(!all.contains(" ok"), "{all}");
    cleanup(&root);
}

/// Issue 17 item 4: deeply nested or oversized YAML is refused at once with a clear error.
#[test]
fn deep_or_huge_yaml_is_refused_quickly() {
    let root = scratch("yaml");
    let good = root.join("good");
    write_run(&good, 2.0, 100.0, 500.0);
    let deep = root.join("deep.yaml");
    std::fs::write(&deep, "[".repeat(100_000)).unwrap();
    let t0 = std::time::Instant::now();
    let out = agent(&["compare", good.to_str().unwrap(), deep.to_str().unwrap()]);
    let elapsed = t0.elapsed();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("deep.yaml") && stderr.contains("nested deeper than 64 levels"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    let huge = root.join("huge.yaml");
    std::fs::write(&huge, "# x\n".repeat(5 << 20)).unwrap();
    let out = agent(&["compare", good.to_str().unwrap(), huge.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("huge.yaml") && stderr.contains("over the limit"),
        "{stderr}"
    );
    cleanup(&root);
}
