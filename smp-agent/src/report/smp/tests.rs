//! Unit tests of `smp` (kept apart so the module reads as what it does).

use super::*;

#[test]
fn mesh_type_numbers_and_names() {
    assert_eq!(MeshType::from_number(3), Some(MeshType::Istio));
    assert_eq!(MeshType::from_number(13), None);
    assert_eq!(MeshType::from_name("istio"), Some(MeshType::Istio));
    assert_eq!(
        MeshType::from_name("OPEN_SERVICE_MESH"),
        Some(MeshType::OpenServiceMesh)
    );
    assert_eq!(MeshType::from_name("osm"), Some(MeshType::OpenServiceMesh));
    assert_eq!(MeshType::CiliumServiceMesh.number(), 12);
    assert_eq!(MeshType::ALL.len(), 13);
    assert_eq!(
        serde_yaml_ng::to_string(&MeshType::Linkerd).unwrap().trim(),
        "5"
    );
    let m: MeshType = serde_yaml_ng::from_str("LINKERD").unwrap();
    assert_eq!(m, MeshType::Linkerd);
    let e = serde_yaml_ng::from_str::<MeshType>("99")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("99") && e.contains("12 CILIUM_SERVICE_MESH"),
        "{e}"
    );
}

#[test]
fn protocol_accepts_numbers_and_names() {
    for (text, p) in [
        ("1", Protocol::Http),
        ("http", Protocol::Http),
        ("PROTOCOL_GRPC", Protocol::Grpc),
    ] {
        assert_eq!(
            serde_yaml_ng::from_str::<Protocol>(text).unwrap(),
            p,
            "{text}"
        );
    }
    assert!(serde_yaml_ng::from_str::<Protocol>("5").is_err());
}

#[test]
fn timestamps_round_trip_in_utc() {
    let t = Timestamp::parse_rfc3339("2020-03-17T14:53:05.499893378Z").unwrap();
    assert_eq!(t.to_rfc3339(), "2020-03-17T14:53:05.499893378Z");
    let t2 = Timestamp::parse_rfc3339("2020-03-17T16:53:05.5+02:00").unwrap();
    assert_eq!(t2.to_rfc3339(), "2020-03-17T14:53:05.5Z");
    let t3: Timestamp = serde_yaml_ng::from_str("{seconds: 1584456785, nanos: 5}").unwrap();
    assert_eq!(t3.to_rfc3339(), "2020-03-17T14:53:05.000000005Z");
    assert!(serde_yaml_ng::from_str::<Timestamp>("yesterday").is_err());
    assert!((t.seconds_until(t2) - 0.000106622).abs() < 1e-9);
}

#[test]
fn durations_keep_their_text() {
    let d: SmpDuration = serde_yaml_ng::from_str("60s").unwrap();
    assert_eq!(d.get(), Duration::from_secs(60));
    assert_eq!(serde_yaml_ng::to_string(&d).unwrap().trim(), "60s");
    for (secs, text) in [(90, "90s"), (300, "5m"), (7200, "2h"), (0, "0s")] {
        let d = SmpDuration::new(Duration::from_secs(secs));
        assert_eq!(d.as_str(), text);
        assert_eq!(SmpDuration::parse(text).unwrap(), d);
    }
    assert_eq!(
        SmpDuration::new(Duration::from_millis(1500)).as_str(),
        "1.5s"
    );
    let e = serde_yaml_ng::from_str::<SmpDuration>("abc")
        .unwrap_err()
        .to_string();
    assert!(e.contains("abc"), "{e}");
}

#[test]
fn absolute_urls() {
    assert!(is_absolute_url("https://smp-spec.io"));
    assert!(is_absolute_url("http://10.0.0.1:8080/x"));
    assert!(!is_absolute_url("smp-spec.io"));
    assert!(!is_absolute_url("http://"));
    assert!(!is_absolute_url("http:///x"));
    assert!(!is_absolute_url("1http://x"));
}

#[test]
fn latency_from_histogram() {
    let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for v in 1..=100u64 {
        h.record(v * 1_000_000).unwrap(); // 1..100 ms
    }
    let l = Latency::from_histogram_ns(&h);
    assert!(
        (l.min - 1.0).abs() < 0.01 && (l.max - 100.0).abs() < 0.1,
        "{l:?}"
    );
    assert!(
        (l.p50 - 50.0).abs() < 0.1 && (l.p99 - 99.0).abs() < 0.1,
        "{l:?}"
    );
    assert!((l.average - 50.5).abs() < 0.1);
}

#[test]
fn ids_are_uuid_shaped_and_distinct() {
    let (a, b) = (new_id(), new_id());
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    assert_eq!(&a[14..15], "4");
}
