//! Unit tests of the comparison.

use std::path::PathBuf;

use hdrhistogram::Histogram;

use super::*;
use crate::report::{
    details::tests::sample_histogram,
    smp::{Latency, PerformanceTestResult, LATENCY_UNIT_LABEL},
};

fn side(lat: Latency, qps: f64, hist: Option<Histogram<u64>>) -> Side {
    Side {
        source: PathBuf::from("x"),
        kind: SourceKind::SmpResult,
        result: PerformanceTestResult {
            latencies_ms: Some(lat),
            actual_qps: qps,
            ..Default::default()
        },
        unit: LatencyUnit::Milliseconds,
        unit_evidence: UnitEvidence::SpecDefault,
        connections: None,
        details: None,
        histogram_exact: hist.is_some(),
        histogram: hist,
        notes: Vec::new(),
    }
}

fn lat(p: f64) -> Latency {
    Latency {
        min: p / 2.0,
        average: p,
        p50: p,
        p90: p * 1.5,
        p99: p * 2.0,
        max: p * 3.0,
    }
}

#[test]
fn parses_thresholds() {
    let t: Threshold = "p99>+10%".parse().unwrap();
    assert_eq!(
        (t.metric, t.op, t.limit),
        (
            Metric::Latency(LatencyStat::P99),
            Op::Gt,
            Limit::Percent(10.0)
        )
    );
    let t: Threshold = "p50 > +2ms".parse().unwrap();
    assert_eq!(t.limit, Limit::Absolute(2.0));
    let t: Threshold = "qps<-5%".parse().unwrap();
    assert_eq!(
        (t.metric, t.op, t.limit),
        (Metric::Qps, Op::Lt, Limit::Percent(-5.0))
    );
    let t: Threshold = "avg>=500us".parse().unwrap();
    assert_eq!((t.op, t.limit), (Op::Ge, Limit::Absolute(0.5)));
    let t: Threshold = "max<=1s".parse().unwrap();
    assert_eq!(t.limit, Limit::Absolute(1000.0));
    let t: Threshold = "qps<-100".parse().unwrap();
    assert_eq!(t.limit, Limit::Absolute(-100.0));
    for (bad, problem) in [
        ("p99=10%", ThresholdProblem::NoOperator),
        ("p98>10%", ThresholdProblem::UnknownMetric),
        ("p99>abc", ThresholdProblem::BadNumber),
        ("p99>10", ThresholdProblem::BadUnit),
        ("qps<5ms", ThresholdProblem::BadUnit),
        ("p99>", ThresholdProblem::BadNumber),
    ] {
        let e = bad.parse::<Threshold>().unwrap_err();
        assert_eq!(e.problem, problem, "{bad}");
        assert!(e.to_string().contains(bad), "{e}");
    }
}

#[test]
fn parses_overhead_and_hop_thresholds() {
    let t: Threshold = "overhead.p99>+10%".parse().unwrap();
    assert_eq!(t.metric, Metric::Overhead(LatencyStat::P99));
    let t: Threshold = "hop:envoy.v1/outbound/request.p90>+50us".parse().unwrap();
    assert_eq!(
        t.metric,
        Metric::Hop {
            hop: "envoy.v1/outbound/request".into(),
            stat: LatencyStat::P90
        }
    );
    assert_eq!(t.limit, Limit::Absolute(0.05));
    for bad in [
        "overhead.max>1%",
        "hop:envoy.p99>1%",
        "hop:a/b/c.p42>1%",
        "hop:a/b/c>1%",
    ] {
        let e = bad.parse::<Threshold>().unwrap_err();
        assert_eq!(e.problem, ThresholdProblem::UnknownMetric, "{bad}");
    }
    assert_eq!(
        "overhead.p50>5".parse::<Threshold>().unwrap_err().problem,
        ThresholdProblem::BadUnit
    );
}

#[test]
fn detail_thresholds_without_details_fail_safe() {
    let a = side(lat(10.0), 1000.0, None);
    let rules: Vec<Threshold> = ["overhead.p99>+10%", "hop:p/outbound/request.p50>+1ms"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let c = compare(&a, &a, &rules, BootstrapConfig::default());
    assert!(c.thresholds.iter().all(|t| t.failed && t.note.is_some()));
    assert!(!c.passed);
}

#[test]
fn thresholds_gate() {
    let a = side(lat(10.0), 1000.0, None);
    let b = side(lat(11.5), 940.0, None);
    let rules: Vec<Threshold> = ["p99>+10%", "p50>+2ms", "qps<-5%"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let c = compare(&a, &b, &rules, BootstrapConfig::default());
    assert_eq!(
        c.thresholds.iter().map(|t| t.failed).collect::<Vec<_>>(),
        [true, false, true]
    );
    assert!(!c.passed);
    assert!((c.latency[4].delta_pct.unwrap() - 15.0).abs() < 1e-9);
    let c = compare(&a, &a, &rules, BootstrapConfig::default());
    assert!(c.passed);
    // Without histograms significance cannot be judged.
    assert!(matches!(
        c.latency[2].significance,
        Some(Significance::CannotJudge { .. })
    ));
    let text = c.to_string();
    assert!(
        text.contains("cannot judge") && text.contains("PASS"),
        "{text}"
    );
}

#[test]
fn relative_threshold_against_zero_fails_safe() {
    let a = side(lat(0.0), 0.0, None);
    let b = side(lat(1.0), 1.0, None);
    let c = compare(
        &a,
        &b,
        &["p99>+10%".parse().unwrap()],
        BootstrapConfig::default(),
    );
    assert!(c.thresholds[0].failed && c.thresholds[0].note.is_some());
}

#[test]
fn bootstrap_tells_noise_from_a_shift() {
    let h1 = sample_histogram(1_000_000, 4000);
    let h1b = sample_histogram(1_000_000, 3900);
    let h2 = sample_histogram(1_300_000, 4000);
    let l1 = Latency::from_histogram_ns(&h1);
    let same = compare(
        &side(l1.clone(), 100.0, Some(h1.clone())),
        &side(Latency::from_histogram_ns(&h1b), 100.0, Some(h1b)),
        &[],
        BootstrapConfig::default(),
    );
    for i in [1, 2, 3, 4] {
        assert!(
            matches!(
                same.latency[i].significance,
                Some(Significance::WithinNoise { .. })
            ),
            "{:?}",
            same.latency[i]
        );
    }
    let shifted = compare(
        &side(l1, 100.0, Some(h1)),
        &side(Latency::from_histogram_ns(&h2), 100.0, Some(h2)),
        &[],
        BootstrapConfig::default(),
    );
    for i in [1, 2, 3] {
        assert!(
            matches!(
                shifted.latency[i].significance,
                Some(Significance::Significant { .. })
            ),
            "{:?}",
            shifted.latency[i]
        );
    }
}

#[test]
fn reads_smp_agent_load_results() {
    use crate::report::details::EncodedHistogram;
    // A microsecond histogram, as `smp-agent load` writes it.
    let mut us = crate::report::details::new_latency_histogram();
    for i in 1..=1000u64 {
        us.record(1000 + i).unwrap(); // 1.001..2.0 ms
    }
    let data = EncodedHistogram::encode(&us).unwrap().data;
    let text = format!(
        "{{\"achieved_rate\": 500.0, \"duration_s\": 10.0, \"connections\": 4, \
         \"requests\": 5000, \"latency\": {{\"min_ms\": 1.001, \"mean_ms\": 1.5, \
         \"stddev_ms\": 0.3, \"p50_ms\": 1.5, \"p75_ms\": 1.75, \"p90_ms\": 1.9, \
         \"p99_ms\": 1.99, \"p99_9_ms\": 2.0, \"p99_99_ms\": 2.0, \"max_ms\": 2.0}}, \
         \"histogram\": \"{data}\"}}"
    );
    let dir = std::env::temp_dir().join(format!("smp-loadrun-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("load.json");
    std::fs::write(&p, text).unwrap();
    let side = load_side(&p, None).unwrap();
    assert_eq!(side.kind, SourceKind::LoadRun);
    assert_eq!(side.connections, Some(4));
    let h = side.histogram.as_ref().unwrap();
    assert_eq!(h.len(), 1000);
    // ns now: the median is about 1.5 ms.
    let p50 = h.value_at_quantile(0.5);
    assert!((1_490_000..1_510_000).contains(&p50), "{p50}");
    let c = compare(&side, &side, &[], BootstrapConfig::default());
    assert!(matches!(
        c.latency[2].significance,
        Some(Significance::WithinNoise { .. })
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unit_detection() {
    let mut r = PerformanceTestResult {
        latencies_ms: Some(lat(0.023)),
        actual_qps: 1.0,
        ..Default::default()
    };
    // Meshery-like magnitudes, no marker: seconds by heuristic.
    assert_eq!(detect_unit(&r, false, None).0, LatencyUnit::Seconds);
    // Placeholders.
    assert_eq!(
        detect_unit(&r, true, None).1,
        UnitEvidence::MesheryPlaceholders
    );
    // Our label wins.
    r.labels.insert(LATENCY_UNIT_LABEL.into(), "ms".into());
    assert_eq!(detect_unit(&r, true, None).0, LatencyUnit::Milliseconds);
    r.labels.clear();
    // Little's law: 5000 req/s on 2 connections with mean 0.08: must be ms.
    r.latencies_ms = Some(lat(0.08));
    r.actual_qps = 5000.0;
    assert!(matches!(
        detect_unit(&r, false, Some(2)).1,
        UnitEvidence::LittlesLaw { .. }
    ));
    // Ordinary ms values.
    r.latencies_ms = Some(lat(12.0));
    assert_eq!(detect_unit(&r, false, None).1, UnitEvidence::SpecDefault);
}

#[test]
fn a_delta_that_is_not_a_number_fails_the_gate() {
    // A side that escaped the reader's checks (NaN max) must not pass a rule.
    let mut nan = lat(10.0);
    nan.max = f64::NAN;
    let a = side(lat(10.0), 100.0, None);
    let b = side(nan, 100.0, None);
    let rules: Vec<Threshold> = ["max>+10%", "max>1ms", "max<-10%"]
        .iter()
        .map(|r| r.parse().unwrap())
        .collect();
    let c = compare(&a, &b, &rules, BootstrapConfig::default());
    assert!(!c.passed);
    for t in &c.thresholds {
        assert!(t.failed, "{t:?}");
        assert!(
            t.note.as_deref().unwrap().contains("not a finite number"),
            "{t:?}"
        );
    }
    let text = c.to_string();
    assert!(!text.contains("NaN% ok") && text.contains("FAIL"), "{text}");
}

#[test]
fn nan_and_negative_latencies_are_rejected_when_read() {
    let dir = std::env::temp_dir().join(format!("smp-cmp-nan-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body, field) in [
        ("nan.yaml", "latencies_ms: {min: 1, average: 2, p50: 2, p90: 3, p99: 4, max: .nan}\nactual_qps: 10\n", "latencies_ms.max"),
        ("neg.yaml", "latencies_ms: {min: -1, average: 2, p50: 2, p90: 3, p99: 4, max: 5}\nactual_qps: 10\n", "latencies_ms.min"),
        ("inf.yaml", "latencies_ms: {min: 1, average: 2, p50: 2, p90: 3, p99: 4, max: 5}\nactual_qps: .inf\n", "actual_qps"),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        let e = load_side(&p, None).unwrap_err();
        assert!(matches!(&e, CompareError::BadFigure { field: f, .. } if f == field), "{e}");
        let m = e.to_string();
        assert!(m.contains(name) && m.contains(field), "{m}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_hop_is_named_with_what_its_sides_spoke() {
    let d = |a: &str, b: &str| HopDelta {
        hop: "envoy-client/outbound/request".into(),
        sides: [a.into(), b.into()],
        deltas: Vec::new(),
    };
    assert_eq!(d("", "").title(), "envoy-client/outbound/request");
    assert_eq!(
        d("http1→tls", "http1→tls").title(),
        "envoy-client/outbound/request (http1→tls)"
    );
    // An HTTP/1.1 run against an HTTP/2 one: said, not hidden.
    assert_eq!(
        d("http1→http1", "http1→h2c").title(),
        "envoy-client/outbound/request (sides differ: A http1→http1, B http1→h2c)"
    );
    assert_eq!(
        d("", "http1→h2c").title(),
        "envoy-client/outbound/request (sides differ: A -, B http1→h2c)"
    );
}
