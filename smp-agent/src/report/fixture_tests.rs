//! Round-trips of the published SMP samples (copied unchanged into tests/fixtures/smp/) and
//! the error-location cases for bad input.

use std::path::{Path, PathBuf};

use super::{
    file::{self, SmpFileError, Strictness},
    meshery::{LegacyBenchmark, MesheryResult},
    smp::{MeshType, Protocol, TestConfigFile},
};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/smp")
        .join(name)
}

fn tmp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smp-fixture-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

const TEST_CONFIGS: [&str; 2] = ["load-test.yaml", "soak-test.yaml"];
const LEGACY_RESULTS: [&str; 2] = [
    "service mesh performance result.yaml",
    "service mesh performance specification result.yaml",
];

#[test]
fn test_config_samples_are_accepted_unchanged() {
    for name in TEST_CONFIGS {
        let tc = file::read_test_config(&fixture(name)).unwrap();
        let t = &tc.test;
        assert_eq!(t.smp_version, "v0.0.1");
        assert!(t.name.ends_with(" Test"), "{}", t.name);
        assert_eq!(t.duration.as_ref().unwrap().get().as_secs(), 60);
        let c = &t.clients[0];
        assert_eq!(c.load_generator, "fortio");
        assert_eq!(c.protocol, Protocol::Http);
        assert_eq!((c.connections, c.rps), (2, 10));
        assert_eq!(c.endpoint_urls, vec!["https://smp-spec.io".to_string()]);
        assert_eq!(tc.mesh.r#type, MeshType::Istio);
    }
}

#[test]
fn test_config_samples_round_trip_through_our_writer() {
    for name in TEST_CONFIGS {
        let tc = file::read_test_config(&fixture(name)).unwrap();
        let out = tmp_path(name);
        file::write_document(&out, &tc).unwrap();
        let back = file::read_test_config(&out).unwrap();
        assert_eq!(back, tc, "{name}");
        // and again, byte-stable after the first write
        let first = std::fs::read_to_string(&out).unwrap();
        file::write_document(&out, &back).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), first);
        // JSON too
        let out_json = tmp_path(&format!("{name}.json"));
        file::write_document(&out_json, &tc).unwrap();
        assert_eq!(file::read_test_config(&out_json).unwrap(), tc);
    }
}

#[test]
fn legacy_meshery_result_samples_round_trip() {
    for name in LEGACY_RESULTS {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let r: LegacyBenchmark = file::parse_plain(&text, &fixture(name)).unwrap();
        assert_eq!(r.client.connections, 1);
        assert!((r.client.latencies_ms.p99 - 0.055).abs() < 1e-12);
        assert_eq!(
            r.start_time.unwrap().to_rfc3339(),
            "2020-03-17T14:53:05.499893378Z"
        );
        let out = tmp_path(name);
        file::write_atomic(&out, serde_yaml_ng::to_string(&r).unwrap().as_bytes()).unwrap();
        let back: LegacyBenchmark =
            file::parse_plain(&std::fs::read_to_string(&out).unwrap(), &out).unwrap();
        assert_eq!(back, r, "{name}");
        let proto = r.to_result();
        assert_eq!(proto.id, "a0b57497-12f1-40a5-ae78-3fd3414c4a48");
        assert!((proto.actual_qps - 0.9999971285438009).abs() < 1e-15);
    }
}

#[test]
fn meshery_result_records_convert_to_milliseconds() {
    let text = std::fs::read_to_string(fixture("test-results.json")).unwrap();
    let records: Vec<MesheryResult> =
        file::parse_plain(&text, &fixture("test-results.json")).unwrap();
    assert_eq!(records.len(), 3);
    let r = records[0].to_result_ms().unwrap();
    let l = r.latencies_ms.unwrap();
    assert!((l.average - 386.6328985641026).abs() < 1e-6, "{l:?}");
    assert!((l.p50 - 383.33333333333336).abs() < 1e-6, "{l:?}");
    assert!((r.actual_qps - 2.5838099794764338).abs() < 1e-12);
    let dur = r.start_time.unwrap().seconds_until(r.end_time.unwrap());
    assert!((dur - 30.187978458).abs() < 1e-6, "{dur}");
}

/// Replaces `from` by `to` in the load-test sample and parses it; returns the error and the
/// 1-based line where `to` landed.
fn bad_variant(from: &str, to: &str) -> (SmpFileError, usize) {
    let text = std::fs::read_to_string(fixture("load-test.yaml")).unwrap();
    assert!(text.contains(from), "{from}");
    let bad = text.replacen(from, to, 1);
    let line = bad
        .lines()
        .position(|l| l.contains(to.lines().next().unwrap_or(to)))
        .map_or(0, |i| i + 1);
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = tmp_path(&format!("bad-{n}.yaml"));
    std::fs::write(&path, &bad).unwrap();
    let e = file::read_test_config(&path).unwrap_err();
    eprintln!("{e}");
    (e, line)
}

fn assert_located(e: &SmpFileError, line: usize, field: &str) {
    assert_eq!(e.line(), Some(line), "{e}");
    assert_eq!(e.field(), Some(field), "{e}");
    let text = e.to_string();
    assert!(text.contains("/bad-"), "{text}");
    assert!(text.contains(&format!(":{line}:")), "{text}");
    assert!(text.contains(field), "{text}");
}

#[test]
fn wrong_type_names_file_line_field() {
    let (e, line) = bad_variant("connections: 2", "connections: many");
    assert_located(&e, line, "test.clients[0].connections");
    assert!(e.to_string().contains("invalid type"), "{e}");
}

#[test]
fn unknown_mesh_type_number_names_file_line_field() {
    let (e, line) = bad_variant("type: 3", "type: 99");
    assert_located(&e, line, "mesh.type");
    assert!(e.to_string().contains("99"), "{e}");
}

#[test]
fn bad_duration_names_file_line_field() {
    let (e, line) = bad_variant("duration: 60s", "duration: abc");
    assert_located(&e, line, "test.duration");
    assert!(e.to_string().contains("\"abc\""), "{e}");
}

#[test]
fn missing_endpoint_names_file_line_field() {
    // The whole endpoint_urls key removed: reported at the client it is missing from.
    let (e, _) = bad_variant(
        "      endpoint_urls:\n        - 'https://smp-spec.io'\n",
        "",
    );
    let client_line = std::fs::read_to_string(fixture("load-test.yaml"))
        .unwrap()
        .lines()
        .position(|l| l.contains("- internal: false"))
        .unwrap()
        + 1;
    assert_eq!(e.line(), Some(client_line), "{e}");
    assert_eq!(e.field(), Some("test.clients[0].endpoint_urls"), "{e}");
    assert!(e.to_string().contains("missing field"), "{e}");
    // An empty list.
    let (e, line) = bad_variant(
        "      endpoint_urls:\n        - 'https://smp-spec.io'\n",
        "      endpoint_urls: []\n",
    );
    assert_located(&e, line, "test.clients[0].endpoint_urls");
    // Not an absolute URL.
    let (e, line) = bad_variant("'https://smp-spec.io'", "'smp-spec.io'");
    assert_located(&e, line, "test.clients[0].endpoint_urls[0]");
    assert!(e.to_string().contains("absolute URL"), "{e}");
}

#[test]
fn unknown_field_is_rejected_in_test_config() {
    let (e, line) = bad_variant("rps: 10", "rpss: 10");
    assert_located(&e, line, "test.clients[0].rpss");
    assert!(e.to_string().contains("unknown field `rpss`"), "{e}");
}

#[test]
fn camel_case_and_2026_mesh_string_are_accepted() {
    let text = r#"
test:
  smpVersion: v0.0.1
  name: camel
  clients:
    - loadGenerator: fortio
      protocol: http
      connections: 2
      rps: "10"
      endpointUrls: ["http://127.0.0.1:8080/"]
      contentType: text/plain
  duration: 1m30s
mesh: linkerd
"#;
    let tc: TestConfigFile =
        file::parse_document(text, Path::new("c.yaml"), Strictness::Strict).unwrap();
    assert_eq!(tc.mesh.r#type, MeshType::Linkerd);
    let c = &tc.test.clients[0];
    assert_eq!((c.protocol, c.rps), (Protocol::Http, 10));
    assert_eq!(c.content_type, "text/plain");
    assert_eq!(tc.test.duration.unwrap().get().as_secs(), 90);
}

#[test]
fn bare_test_config_without_wrapper_is_accepted() {
    let text = "name: bare\nclients:\n  - endpoint_urls: [http://a:1/]\nduration: 10s\n";
    let tc = file::parse_test_config(text, Path::new("bare.yaml")).unwrap();
    assert_eq!(tc.test.name, "bare");
    assert_eq!(tc.mesh.r#type, MeshType::InvalidMesh);
}

#[test]
fn non_smp_input_is_a_located_error() {
    let e = file::read_test_config(&fixture("test-results.json")).unwrap_err();
    assert!(e.line().is_some(), "{e}");
    assert!(e.to_string().contains("test-results.json"), "{e}");
}

#[test]
fn protojson_camel_case_documents_are_read_and_written_snake_case() {
    use super::smp::{PerformanceTestResult, ServiceMeshConfig};
    let result_json = r#"{
  "smpVersion": "v0.0.1",
  "id": "r",
  "startTime": "2026-11-23T10:00:00Z",
  "endTime": "2026-11-23T10:00:30.250Z",
  "latenciesMs": {"min": 0.5, "average": 1.25, "p50": 1.0, "p90": 2.0, "p99": 3.0, "max": 9.0},
  "actualQps": 99.5,
  "detailsUri": "details.json",
  "testId": "t", "meshConfigId": "m", "envId": "e"
}"#;
    let r: PerformanceTestResult =
        file::parse_document(result_json, Path::new("r.json"), Strictness::Strict).unwrap();
    assert_eq!((r.test_id.as_str(), r.env_id.as_str()), ("t", "e"));
    assert_eq!(r.latencies_ms.as_ref().unwrap().p99, 3.0);
    let yaml = file::to_yaml(&r).unwrap();
    for key in [
        "smp_version:",
        "start_time: 2026-11-23T10:00:00Z",
        "latencies_ms:",
        "actual_qps:",
        "mesh_config_id:",
    ] {
        assert!(yaml.contains(key), "{key} in\n{yaml}");
    }
    assert!(!yaml.contains("Ms") && !yaml.contains("Id:"), "{yaml}");
    let back: PerformanceTestResult =
        file::parse_document(&yaml, Path::new("r.yaml"), Strictness::Strict).unwrap();
    assert_eq!(back, r);

    let mesh_json = r#"{"sidecar": {"count": 2, "cpuMcores": 150, "memMb": 40},
        "mtlsEnabled": true, "meshType": {"type": "ISTIO", "version": "1.24"}}"#;
    let m: ServiceMeshConfig =
        file::parse_document(mesh_json, Path::new("m.json"), Strictness::Strict).unwrap();
    assert_eq!(m.sidecar.as_ref().unwrap().cpu_mcores, 150);
    assert_eq!(m.mesh_type.as_ref().unwrap().r#type, MeshType::Istio);
    let yaml = file::to_yaml(&m).unwrap();
    assert!(
        yaml.contains("cpu_mcores: 150") && yaml.contains("type: 3"),
        "{yaml}"
    );
}

#[test]
fn scalar_labels_and_integer_duration() {
    let text = "test:\n  name: n\n  labels: {run: 1, fast: true}\n  clients:\n    - endpoint_urls: [http://a:1/]\n  duration: 60\nmesh: {type: 0}\n";
    let e = file::parse_test_config(text, Path::new("d.yaml")).unwrap_err();
    assert_eq!(e.field(), Some("test.duration"), "{e}");
    assert_eq!(e.line(), Some(6), "{e}");
    let ok = text.replace("duration: 60", "duration: 60s");
    let tc = file::parse_test_config(&ok, Path::new("d.yaml")).unwrap();
    assert_eq!(tc.test.labels["run"], "1");
    assert_eq!(tc.test.labels["fast"], "true");
}

#[test]
fn truncated_or_mangled_input_never_panics() {
    let dir = std::env::temp_dir().join(format!("smp-mangle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in [
        "load-test.yaml",
        "service mesh performance result.yaml",
        "test-results.json",
    ] {
        let text = std::fs::read_to_string(fixture(name)).unwrap();
        let ext = if name.ends_with(".json") {
            "json"
        } else {
            "yaml"
        };
        let step = (text.len() / 60).max(1);
        for cut in (0..text.len()).step_by(step) {
            if !text.is_char_boundary(cut) {
                continue;
            }
            for variant in [
                text[..cut].to_string(),
                format!("{}\u{0}{{[:-{}", &text[..cut], &text[cut..]),
            ] {
                let p = dir.join(format!("m.{ext}"));
                std::fs::write(&p, &variant).unwrap();
                // Errors are fine; panics are not.
                let _ = file::read_test_config(&p);
                let _ = file::read_document::<super::smp::PerformanceTestResult>(
                    &p,
                    Strictness::Lenient,
                );
                let _ = super::compare::load_side(&p, None);
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
