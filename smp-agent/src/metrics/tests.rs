use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{synthetic::SyntheticNode, *};
use crate::proxy::{cgroup::CgroupAttribution, discovery::ProxyKind};

/// One parsed sample.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    // s is what is between `{` and `}`.
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").expect("label `k=\"`");
        assert!(valid_name(k) && !k.starts_with("__"), "label name {k:?}");
        let mut v = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next().expect("unterminated label value");
            match c {
                '\\' => match chars.next().expect("escape").1 {
                    'n' => v.push('\n'),
                    '\\' => v.push('\\'),
                    '"' => v.push('"'),
                    e => panic!("bad escape \\{e}"),
                },
                '"' => break i,
                '\n' => panic!("raw newline in label value"),
                c => v.push(c),
            }
        };
        assert!(
            out.insert(k.to_string(), v).is_none(),
            "duplicate label {k}"
        );
        rest = &after[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
    out
}

/// Parses and checks an exposition: names, label syntax, value syntax, every sample in a
/// declared family with the right suffix, no duplicate series, histograms consistent.
fn parse(text: &str, format: Format) -> Vec<Sample> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut samples = Vec::new();
    let mut seen = BTreeSet::new();
    let mut eof = false;
    for line in text.lines() {
        assert!(!eof, "content after # EOF");
        if line == "# EOF" {
            assert_eq!(format, Format::OpenMetrics, "# EOF in text 0.0.4");
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("help text");
            assert!(valid_name(name) && !help.is_empty(), "{line}");
            assert!(helps.insert(name.to_string()), "second HELP for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("type");
            let allowed: &[&str] = match format {
                Format::OpenMetrics => &["counter", "gauge", "histogram", "info", "unknown"],
                Format::PrometheusText => &["counter", "gauge", "histogram", "untyped"],
            };
            assert!(allowed.contains(&ty), "{line}");
            assert!(helps.contains(name), "TYPE before HELP for {name}");
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "second TYPE for {name}"
            );
            continue;
        }
        if let Some(rest) = line.strip_prefix("# UNIT ") {
            assert_eq!(format, Format::OpenMetrics, "# UNIT in text 0.0.4");
            let (name, unit) = rest.split_once(' ').expect("unit");
            assert!(name.ends_with(&format!("_{unit}")), "{line}");
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (series, value) = line.rsplit_once(' ').expect("sample value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("closing brace"))),
            None => (series, BTreeMap::new()),
        };
        assert!(valid_name(name), "{line}");
        let family = [
            ("_total", "counter"),
            ("_bucket", "histogram"),
            ("_sum", "histogram"),
            ("_count", "histogram"),
        ]
        .iter()
        .find_map(|(suffix, ty)| {
            let fam = name.strip_suffix(suffix)?;
            let fam = if format == Format::PrometheusText && *ty == "counter" {
                name
            } else {
                fam
            };
            (types.get(fam).map(String::as_str) == Some(*ty)).then_some(fam)
        })
        .or_else(|| {
            types
                .get(name)
                .is_some_and(|t| t == "gauge")
                .then_some(name)
        });
        assert!(family.is_some(), "sample of no declared family: {line}");
        assert!(
            seen.insert((name.to_string(), labels.clone())),
            "duplicate series {line}"
        );
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    assert_eq!(eof, format == Format::OpenMetrics, "# EOF at the end");
    check_histograms(&samples);
    samples
}

/// Histogram series (family, labels without `le`) → `(le, cumulative count)` pairs.
type Buckets = BTreeMap<(String, BTreeMap<String, String>), Vec<(f64, f64)>>;

fn check_histograms(samples: &[Sample]) {
    let mut buckets = Buckets::new();
    for s in samples.iter().filter(|s| s.name.ends_with("_bucket")) {
        let mut labels = s.labels.clone();
        let le = labels.remove("le").expect("le label");
        let le: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        let fam = s.name.strip_suffix("_bucket").unwrap().to_string();
        buckets
            .entry((fam, labels))
            .or_default()
            .push((le, s.value));
    }
    for ((fam, labels), b) in &buckets {
        assert!(b.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
        assert_eq!(b.last().unwrap().0, f64::INFINITY);
        let count = samples
            .iter()
            .find(|s| s.name == format!("{fam}_count") && &s.labels == labels)
            .expect("_count");
        assert_eq!(count.value, b.last().unwrap().1, "{fam} {labels:?}");
    }
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k) == Some(&v.to_string()))
        })
        .map(|s| s.value)
}

fn host_proxy(args: &[&str]) -> ProxyId {
    let cmdline: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    ProxyId::for_leader(
        ProxyKind::Envoy,
        &CgroupAttribution::unknown("/system.slice/envoy.service"),
        &cmdline,
    )
}

fn populated() -> NodeMetrics {
    let m = NodeMetrics::new(MetricsOptions::default());
    let mut node = SyntheticNode::new();
    for i in 1..=20 {
        m.update(&node.tick(Duration::from_millis(100 * i)));
    }
    m
}

#[test]
fn both_formats_parse() {
    let m = populated();
    let om = m.encode(Format::OpenMetrics);
    let text = m.encode(Format::PrometheusText);
    let om_samples = parse(&om, Format::OpenMetrics);
    let text_samples = parse(&text, Format::PrometheusText);
    assert_eq!(om_samples, text_samples, "same samples in both formats");
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains(
        "# TYPE smp_hop_duration_seconds histogram\n# UNIT smp_hop_duration_seconds seconds\n"
    ));
    assert!(text.contains("# TYPE smp_proxy_cpu_seconds_total counter\n"));
    // Every family documented in docs/metrics.md is here, and nothing undocumented.
    let docs = include_str!("../../../docs/metrics.md");
    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for f in &families {
        assert!(
            docs.contains(&format!("`{f}`")),
            "{f} is not in docs/metrics.md"
        );
    }
    assert_eq!(families.len(), 23, "{families:?}");
}

#[test]
fn exact_lines_for_one_proxy() {
    let m = NodeMetrics::new(MetricsOptions::default());
    let id = host_proxy(&["envoy", "-c", "a.yaml"]);
    let mut s = ProxySample::new(id.clone());
    s.cpu_seconds = 1.5;
    s.rss_bytes = 1000;
    s.pairing.requests = 7;
    s.pairing.unknown_role = 2;
    s.received_bytes = 100;
    s.sent_bytes = 200;
    let sides = |downstream, upstream| Sides {
        downstream,
        upstream,
    };
    use crate::aggregate::hops::WireProtocol::{H2c, Http1, Tls};
    s.sides.insert((Direction::Inbound, sides(Tls, H2c)), 3);
    s.sides.insert((Direction::Outbound, sides(Http1, Tls)), 4);
    let snap = NodeSnapshot {
        proxies: vec![s],
        hops: vec![HopSample::from_ns(
            id.clone(),
            Direction::Inbound,
            Leg::Request,
            &[15_000, 40_000, 40_000, 20_000_000_000],
        )],
        ..NodeSnapshot::default()
    };
    m.update(&snap);
    let text = m.encode(Format::PrometheusText);
    let l = format!("proxy=\"envoy\",proxy_id=\"{id}\",pod=\"\",namespace=\"\"");
    for want in [
        format!("smp_proxy_cpu_seconds_total{{{l}}} 1.5"),
        format!("smp_proxy_resident_memory_bytes{{{l}}} 1000"),
        format!("smp_proxy_requests_total{{{l}}} 7"),
        format!("smp_proxy_received_bytes_total{{{l}}} 100"),
        format!("smp_proxy_sent_bytes_total{{{l}}} 200"),
        format!("smp_proxy_restarts_total{{{l}}} 0"),
        format!("smp_unpaired_messages_total{{{l},reason=\"unknown_role\"}} 2"),
        format!("smp_hop_exchanges_total{{{l},direction=\"inbound\",downstream_protocol=\"tls\",upstream_protocol=\"h2c\"}} 3"),
        format!("smp_hop_exchanges_total{{{l},direction=\"outbound\",downstream_protocol=\"http1\",upstream_protocol=\"tls\"}} 4"),
        format!("smp_hop_duration_seconds_count{{{l},direction=\"inbound\",leg=\"request\"}} 4"),
        format!("smp_hop_duration_seconds_bucket{{le=\"0.00001\",{l},direction=\"inbound\",leg=\"request\"}} 0"),
        format!("smp_hop_duration_seconds_bucket{{le=\"0.00002\",{l},direction=\"inbound\",leg=\"request\"}} 1"),
        format!("smp_hop_duration_seconds_bucket{{le=\"0.00005\",{l},direction=\"inbound\",leg=\"request\"}} 3"),
        format!("smp_hop_duration_seconds_bucket{{le=\"10.0\",{l},direction=\"inbound\",leg=\"request\"}} 3"),
        format!("smp_hop_duration_seconds_bucket{{le=\"+Inf\",{l},direction=\"inbound\",leg=\"request\"}} 4"),
        "smp_proxies 1".to_string(),
        "smp_events_lost_total{reason=\"ringbuf_full\"} 0".to_string(),
        format!("smp_agent_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(text.lines().any(|line| line == want), "missing line {want}\n{text}");
    }
}

#[test]
fn identity_cumulative_values_are_exported_as_they_are() {
    let m = NodeMetrics::new(MetricsOptions::default());
    let id = host_proxy(&["envoy"]);
    let feed = |restarts: u32, cpu: f64, requests: u64| {
        let mut s = ProxySample::new(id.clone());
        s.restarts = restarts;
        s.cpu_seconds = cpu;
        s.pairing.requests = requests;
        m.update(&NodeSnapshot {
            proxies: vec![s],
            ..NodeSnapshot::default()
        });
        let t = parse(&m.encode(Format::PrometheusText), Format::PrometheusText);
        (
            value(&t, "smp_proxy_cpu_seconds_total", &[]).unwrap(),
            value(&t, "smp_proxy_requests_total", &[]).unwrap(),
            value(&t, "smp_proxy_restarts_total", &[]).unwrap(),
        )
    };
    assert_eq!(feed(0, 5.0, 100), (5.0, 100.0, 0.0));
    assert_eq!(feed(0, 7.0, 150), (7.0, 150.0, 0.0));
    // A restart: the tracker's totals for the identity go on from where they were and its
    // restart count goes up. Nothing is added twice (the old pid-based detection added the new
    // instance's values on top).
    assert_eq!(feed(1, 7.5, 160), (7.5, 160.0, 1.0));
    assert_eq!(feed(1, 9.0, 170), (9.0, 170.0, 1.0));
    // Guard: a value that goes down or is garbage does not move a counter back.
    assert_eq!(feed(1, 8.0, 165), (9.0, 170.0, 1.0));
    assert_eq!(feed(0, f64::NAN, 170), (9.0, 170.0, 1.0));
    assert_eq!(feed(1, 9.5, 171), (9.5, 171.0, 1.0));
}

#[test]
fn hops_accumulate_and_follow_identity_across_restarts() {
    let m = NodeMetrics::new(MetricsOptions::default());
    let mut node = SyntheticNode::new();
    for i in 1..=10 {
        m.update(&node.tick(Duration::from_millis(100 * i)));
    }
    node.restart(0);
    for i in 11..=20 {
        m.update(&node.tick(Duration::from_millis(100 * i)));
    }
    let t = parse(&m.encode(Format::PrometheusText), Format::PrometheusText);
    let out = [("direction", "outbound"), ("leg", "request")];
    assert_eq!(
        value(&t, "smp_hop_duration_seconds_count", &out),
        Some(400.0)
    );
    let le = |b: &str| {
        value(
            &t,
            "smp_hop_duration_seconds_bucket",
            &[("direction", "outbound"), ("leg", "request"), ("le", b)],
        )
        .unwrap()
    };
    assert_eq!(le("0.0001"), 0.0);
    assert_eq!(le("0.0002"), 280.0); // 14 × 120 µs per tick
    assert_eq!(le("0.001"), 280.0);
    assert_eq!(le("0.002"), 400.0); // + 6 × 1.5 ms
    let sum = value(&t, "smp_hop_duration_seconds_sum", &out).unwrap();
    assert!((sum - 20.0 * (14.0 * 120e-6 + 6.0 * 1.5e-3)).abs() < 1e-3 * sum);
    // CPU: 0.25 cores for 2 s, a restart in the middle that does not interrupt the totals.
    let cpu = value(
        &t,
        "smp_proxy_cpu_seconds_total",
        &[("pod", "productpage-v1-6f8d7b9c4-x2x7q")],
    )
    .unwrap();
    assert!((cpu - 0.5).abs() < 1e-9, "{cpu}");
    assert_eq!(
        value(
            &t,
            "smp_proxy_restarts_total",
            &[("pod", "productpage-v1-6f8d7b9c4-x2x7q")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&t, "smp_events_lost_total", &[("reason", "ringbuf_full")]),
        Some(20.0)
    );
}

#[test]
fn label_cardinality_is_bounded() {
    let opts = MetricsOptions {
        max_proxies: 50,
        ..MetricsOptions::default()
    };
    let m = NodeMetrics::new(opts);
    // 80 proxies with lots of traffic: only 50 are exported, series per proxy are fixed.
    for round in 0..3u64 {
        let mut snap = NodeSnapshot::default();
        for i in 0..80u32 {
            let id = host_proxy(&["envoy", "--id", &i.to_string()]);
            let mut s = ProxySample::new(id.clone());
            s.cpu_seconds = round as f64;
            snap.proxies.push(s);
            for (direction, leg) in [
                (Direction::Inbound, Leg::Request),
                (Direction::Inbound, Leg::Response),
                (Direction::Outbound, Leg::Request),
                (Direction::Outbound, Leg::Response),
                (Direction::Gateway, Leg::Request),
                (Direction::Gateway, Leg::Response),
            ] {
                let values: Vec<u64> = (0..200).map(|k| 1_000 + k * 997 * (round + 1)).collect();
                snap.hops
                    .push(HopSample::from_ns(id.clone(), direction, leg, &values));
            }
        }
        m.update(&snap);
    }
    assert_eq!(m.proxies(), 50);
    let text = m.encode(Format::PrometheusText);
    let t = parse(&text, Format::PrometheusText);
    assert_eq!(value(&t, "smp_proxies_over_limit", &[]), Some(30.0));
    // The only label names, and the values each can take.
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in &t {
        for (k, v) in &s.labels {
            values.entry(k).or_default().insert(v);
        }
    }
    let names: Vec<&str> = values.keys().copied().collect();
    assert_eq!(
        names,
        [
            "direction",
            "le",
            "leg",
            "namespace",
            "outcome",
            "pod",
            "proxy",
            "proxy_id",
            "reason",
            "version"
        ]
    );
    assert_eq!(values["proxy_id"].len(), 50);
    assert_eq!(values["direction"].len(), 3);
    assert_eq!(values["leg"].len(), 2);
    assert_eq!(values["le"].len(), HOP_BUCKETS_SECONDS.len() + 1);
    assert_eq!(
        values["reason"].len(),
        UNPAIRED_REASONS.len() + LOSS_REASONS.len() + workloads::DROP_REASONS.len()
    );
    // Per proxy: 6 single series + 6 unpaired reasons + 6 hop kinds × 28; plus node series.
    let per_proxy = 6 + UNPAIRED_REASONS.len() + 6 * (HOP_BUCKETS_SECONDS.len() + 3);
    let node = 9 + LOSS_REASONS.len() + PATH_OUTCOMES.len() + workloads::DROP_REASONS.len();
    assert_eq!(t.len(), 50 * per_proxy + node);
}

#[test]
fn forgets_proxies_that_went_away_and_relabels_when_the_pod_is_known() {
    let m = NodeMetrics::new(MetricsOptions {
        max_proxies: 10,
        forget_after: Duration::from_secs(60),
    });
    let t0 = Instant::now();
    let a = host_proxy(&["envoy", "a"]);
    let b = host_proxy(&["envoy", "b"]);
    let mut sa = ProxySample::new(a.clone());
    sa.cpu_seconds = 3.0;
    let sb = ProxySample::new(b.clone());
    m.update_at(
        &NodeSnapshot {
            proxies: vec![sa.clone(), sb],
            ..NodeSnapshot::default()
        },
        t0,
    );
    assert_eq!(m.proxies(), 2);
    // b is gone; a learns its pod: its series move to the new labels with their totals.
    sa.pod = Some(PodRef {
        namespace: "ns".into(),
        name: "p".into(),
    });
    sa.cpu_seconds = 4.0;
    let only_a = NodeSnapshot {
        proxies: vec![sa],
        ..NodeSnapshot::default()
    };
    m.update_at(&only_a, t0 + Duration::from_secs(30));
    assert_eq!(m.proxies(), 2, "b is kept for forget_after");
    m.update_at(&only_a, t0 + Duration::from_secs(61));
    assert_eq!(m.proxies(), 1);
    let t = parse(&m.encode(Format::PrometheusText), Format::PrometheusText);
    let cpu: Vec<&Sample> = t
        .iter()
        .filter(|s| s.name == "smp_proxy_cpu_seconds_total")
        .collect();
    assert_eq!(cpu.len(), 1);
    assert_eq!(cpu[0].labels["pod"], "p");
    assert_eq!(cpu[0].labels["namespace"], "ns");
    assert_eq!(cpu[0].value, 4.0);
    // Hops of an unknown proxy are counted, not exported.
    m.update(&NodeSnapshot {
        hops: vec![HopSample::from_ns(
            b,
            Direction::Inbound,
            Leg::Request,
            &[1, 2, 3],
        )],
        unattributed_hops: 2,
        ..NodeSnapshot::default()
    });
    let t = parse(&m.encode(Format::PrometheusText), Format::PrometheusText);
    assert_eq!(
        value(&t, "smp_hop_observations_dropped_total", &[]),
        Some(5.0)
    );
}

#[test]
fn label_values_are_escaped() {
    let m = NodeMetrics::new(MetricsOptions::default());
    let mut s = ProxySample::new(host_proxy(&["envoy"]));
    s.pod = Some(PodRef {
        namespace: "a\"b".into(),
        name: "c\\d\ne".into(),
    });
    m.update(&NodeSnapshot {
        proxies: vec![s],
        ..NodeSnapshot::default()
    });
    for f in [Format::OpenMetrics, Format::PrometheusText] {
        let t = parse(&m.encode(f), f);
        let s = t
            .iter()
            .find(|s| s.name == "smp_proxy_cpu_seconds_total")
            .unwrap();
        assert_eq!(s.labels["namespace"], "a\"b");
        assert_eq!(s.labels["pod"], "c\\d\ne");
    }
}

#[test]
fn add_hops_merges_processes_of_one_proxy() {
    use crate::aggregate::hops::{Conn, Exchange};
    let mut agg = HopAggregator::default();
    let conn = |l: &str, r: &str| Conn {
        local: Some(l.parse().unwrap()),
        remote: Some(r.parse().unwrap()),
        ..Conn::default()
    };
    for tgid in [10, 11, 99] {
        agg.record(&Exchange {
            tgid,
            tid: tgid,
            req_in_ns: 0,
            req_out_ns: 100_000,
            resp_in_ns: 200_000,
            resp_out_ns: 230_000,
            req_bytes: 1,
            resp_bytes: 1,
            downstream: conn("10.0.0.3:80", "10.0.0.1:4000"),
            upstream: conn("10.0.0.3:4001", "10.0.0.2:8080"),
            ..Exchange::default()
        });
    }
    let nginx = host_proxy(&["nginx"]);
    let mut snap = NodeSnapshot::default();
    let n = snap.add_hops(&agg, |tgid| (tgid != 99).then(|| nginx.clone()));
    assert_eq!(n, 2, "request and response of tgid 99");
    assert_eq!(snap.hops.len(), 2);
    assert!(snap
        .hops
        .iter()
        .all(|h| h.histogram.len() == 2 && h.proxy == nginx));
    assert_eq!(snap.unattributed_hops, 2);
}

#[test]
fn agent_usage_reads_this_process() {
    let a = AgentUsage::current().expect("getrusage and statm");
    assert!(a.rss_bytes > 1 << 20, "{a:?}");
    assert!(a.cpu_seconds >= 0.0);
}

#[test]
fn network_legs_are_exported_per_pair_and_leg_and_go_with_their_proxies() {
    let m = NodeMetrics::new(MetricsOptions::default());
    let (a, b) = (
        host_proxy(&["envoy", "-c", "a"]),
        host_proxy(&["envoy", "-c", "b"]),
    );
    let stranger = host_proxy(&["envoy", "-c", "c"]);
    let leg = |source: &ProxyId, destination: &ProxyId, leg, values: &[u64]| {
        let h = HopSample::from_ns(source.clone(), Direction::Outbound, leg, values);
        LegSample {
            source: source.clone(),
            destination: destination.clone(),
            leg,
            histogram: h.histogram,
        }
    };
    let snap = |legs| NodeSnapshot {
        proxies: vec![ProxySample::new(a.clone()), ProxySample::new(b.clone())],
        legs,
        paths: PathCounts {
            joined: 3,
            no_peer: 2,
            ..PathCounts::default()
        },
        ..NodeSnapshot::default()
    };
    m.update(&snap(vec![
        leg(&a, &b, Leg::Request, &[15_000, 40_000, 40_000]),
        leg(&b, &a, Leg::Response, &[25_000]),
        // A pair with a proxy that is not exported: counted, not shown.
        leg(&a, &stranger, Leg::Request, &[15_000, 15_000]),
    ]));
    m.update(&snap(vec![leg(&a, &b, Leg::Request, &[15_000])]));
    let text = m.encode(Format::PrometheusText);
    let pair = |s: &ProxyId, d: &ProxyId| {
        format!(
            "source_proxy_id=\"{s}\",source_pod=\"\",source_namespace=\"\",destination_proxy_id=\"{d}\",destination_pod=\"\",destination_namespace=\"\""
        )
    };
    let (ab, ba) = (pair(&a, &b), pair(&b, &a));
    for want in [
        format!("smp_network_leg_duration_seconds_count{{{ab},leg=\"request\"}} 4"),
        format!("smp_network_leg_duration_seconds_bucket{{le=\"0.00002\",{ab},leg=\"request\"}} 2"),
        format!("smp_network_leg_duration_seconds_count{{{ba},leg=\"response\"}} 1"),
        "smp_network_leg_exchanges_total{outcome=\"joined\"} 3".to_string(),
        "smp_network_leg_exchanges_total{outcome=\"no_peer\"} 2".to_string(),
        "smp_network_leg_exchanges_total{outcome=\"ambiguous\"} 0".to_string(),
        "smp_network_leg_observations_dropped_total 2".to_string(),
    ] {
        assert!(
            text.lines().any(|line| line == want),
            "missing line {want}\n{text}"
        );
    }
    assert!(!text.contains(&stranger.to_string()), "{text}");
    check_histograms(&parse(&text, Format::PrometheusText));
    // TCP's round-trip estimates, per proxy and where its peer is.
    let mut e = crate::aggregate::path::RttEstimates::default();
    e.srtt.saturating_record_n(400_000, 3);
    e.min_rtt.saturating_record_n(150_000, 3);
    m.update(&NodeSnapshot {
        proxies: vec![ProxySample::new(a.clone()), ProxySample::new(b.clone())],
        estimates: vec![(a.clone(), crate::aggregate::path::Peer::NotOnNode, e)],
        ..NodeSnapshot::default()
    });
    let text = m.encode(Format::PrometheusText);
    let l = format!("proxy=\"envoy\",proxy_id=\"{a}\",pod=\"\",namespace=\"\"");
    for want in [
        format!("smp_network_rtt_estimate_seconds_count{{{l},peer=\"not_on_node\",estimate=\"srtt\"}} 3"),
        format!("smp_network_rtt_estimate_seconds_bucket{{le=\"0.0005\",{l},peer=\"not_on_node\",estimate=\"srtt\"}} 3"),
        format!("smp_network_rtt_estimate_seconds_bucket{{le=\"0.0002\",{l},peer=\"not_on_node\",estimate=\"min_rtt\"}} 3"),
    ] {
        assert!(text.lines().any(|line| line == want), "missing line {want}\n{text}");
    }
    // When a proxy of the pair is forgotten, the pair's series go too.
    let later = Instant::now() + MetricsOptions::default().forget_after + Duration::from_secs(1);
    m.update_at(
        &NodeSnapshot {
            proxies: vec![ProxySample::new(a.clone())],
            ..NodeSnapshot::default()
        },
        later,
    );
    let text = m.encode(Format::PrometheusText);
    assert!(
        !text.contains("smp_network_leg_duration_seconds_count"),
        "{text}"
    );
}

#[test]
fn network_leg_series_are_bounded_and_the_rest_counted() {
    let m = NodeMetrics::new(MetricsOptions::default());
    let ids: Vec<ProxyId> = (0..40)
        .map(|i| host_proxy(&["envoy", "--id", &i.to_string()]))
        .collect();
    let mut snap = NodeSnapshot {
        proxies: ids.iter().cloned().map(ProxySample::new).collect(),
        ..NodeSnapshot::default()
    };
    // Every pair talks: 40 × 39 × 2 series wanted.
    for a in &ids {
        for b in ids.iter().filter(|b| *b != a) {
            for leg in [Leg::Request, Leg::Response] {
                let h = HopSample::from_ns(a.clone(), Direction::Outbound, leg, &[20_000]);
                snap.legs.push(LegSample {
                    source: a.clone(),
                    destination: b.clone(),
                    leg,
                    histogram: h.histogram,
                });
            }
        }
    }
    m.update(&snap);
    let t = parse(&m.encode(Format::PrometheusText), Format::PrometheusText);
    let series = t
        .iter()
        .filter(|s| s.name == "smp_network_leg_duration_seconds_count")
        .count();
    assert_eq!(series, MAX_LEG_SERIES);
    assert_eq!(
        value(&t, "smp_network_leg_observations_dropped_total", &[]),
        Some((40 * 39 * 2 - MAX_LEG_SERIES) as f64)
    );
}

/// A node proxy's rows: hop histograms, exchanges and CPU per (direction, pod served, peer),
/// labelled with the proxy and both pods; the proxy's CPU gained in an interval is apportioned
/// over its rows by exchanges; rows beyond the bound and the tracker's drops are counted by
/// reason; rows go with their proxy.
#[test]
fn a_node_proxys_workloads_are_exported_per_pod_with_their_share_of_cpu() {
    let m = NodeMetrics::new(MetricsOptions::default());
    let z = host_proxy(&["ztunnel", "--node"]);
    let pod = |a: [u8; 4], name: &str, ns: &str| WorkloadRef {
        address: a.into(),
        pod: name.into(),
        namespace: ns.into(),
    };
    let (client, server) = (
        pod([10, 77, 0, 1], "client", "lab"),
        pod([10, 77, 0, 2], "server", "lab"),
    );
    // Each row's exchanges went through one connection per exchange.
    let row = |direction, served: &WorkloadRef, peer: &WorkloadRef, n: usize, ns: u64| {
        let h = HopSample::from_ns(z.clone(), direction, Leg::Request, &vec![ns; n]).histogram;
        WorkloadSample {
            proxy: z.clone(),
            direction,
            served: served.clone(),
            peer: peer.clone(),
            exchanges: n as u64,
            request: h.clone(),
            response: h,
            connections: n as u64,
        }
    };
    let snap = |cpu: f64, workloads, drops| NodeSnapshot {
        proxies: vec![ProxySample {
            cpu_seconds: cpu,
            rss_bytes: 8_000_000,
            ..ProxySample::new(z.clone())
        }],
        workloads,
        workload_drops: drops,
        ..NodeSnapshot::default()
    };
    // 3 exchanges out, 1 in: 2 s of CPU, 1.5 and 0.5. Then 1 s more, all outbound.
    m.update(&snap(
        2.0,
        vec![
            row(Direction::Outbound, &client, &server, 3, 30_000),
            row(Direction::Inbound, &server, &client, 1, 30_000),
        ],
        WorkloadDrops {
            row_limit: 0,
            before_second_pod: 1,
        },
    ));
    m.update(&snap(
        3.0,
        vec![row(Direction::Outbound, &client, &server, 2, 30_000)],
        WorkloadDrops::default(),
    ));
    let text = m.encode(Format::PrometheusText);
    let l = |d: &str, w: &WorkloadRef, p: &WorkloadRef| {
        format!(
            "proxy=\"envoy\",proxy_id=\"{z}\",pod=\"\",namespace=\"\",direction=\"{d}\",workload_address=\"{}\",workload_pod=\"{}\",workload_namespace=\"lab\",peer_address=\"{}\",peer_pod=\"{}\",peer_namespace=\"lab\"",
            w.address, w.pod, p.address, p.pod
        )
    };
    let (out, inb) = (
        l("outbound", &client, &server),
        l("inbound", &server, &client),
    );
    for want in [
        format!("smp_workload_exchanges_total{{{out}}} 5"),
        format!("smp_workload_exchanges_total{{{inb}}} 1"),
        format!("smp_workload_cpu_seconds_total{{{out}}} 2.5"),
        format!("smp_workload_cpu_seconds_total{{{inb}}} 0.5"),
        // Memory by the last interval's connections: all outbound.
        format!("smp_workload_memory_bytes{{{out}}} 8000000.0"),
        format!("smp_workload_memory_bytes{{{inb}}} 0.0"),
        format!("smp_workload_hop_duration_seconds_count{{{out},leg=\"request\"}} 5"),
        format!("smp_workload_hop_duration_seconds_count{{{inb},leg=\"response\"}} 1"),
        "smp_workload_exchanges_dropped_total{reason=\"before_second_pod\"} 1".to_string(),
        "smp_workload_exchanges_dropped_total{reason=\"series_limit\"} 0".to_string(),
    ] {
        assert!(
            text.lines().any(|line| line == want),
            "missing line {want}\n{text}"
        );
    }
    check_histograms(&parse(&text, Format::PrometheusText));
    // An interval whose scan missed the pods (their processes gone) keeps the names known.
    let unnamed = |w: &WorkloadRef| WorkloadRef::address(w.address);
    m.update(&snap(
        3.0,
        vec![row(
            Direction::Inbound,
            &unnamed(&server),
            &unnamed(&client),
            1,
            30_000,
        )],
        WorkloadDrops::default(),
    ));
    let text = m.encode(Format::PrometheusText);
    let want = format!("smp_workload_exchanges_total{{{inb}}} 2");
    assert!(
        text.lines().any(|l| l == want),
        "missing line {want}\n{text}"
    );
    // Bounded: one proxy serving many pods fills the rows, the rest is counted.
    let many: Vec<_> = (0..(MAX_WORKLOAD_ROWS + 10) as u32)
        .map(|i| {
            let a = pod((0x0a00_0000 + i).to_be_bytes(), "", "");
            row(Direction::Inbound, &a, &client, 2, 30_000)
        })
        .collect();
    m.update(&snap(4.0, many, WorkloadDrops::default()));
    let t = parse(&m.encode(Format::PrometheusText), Format::PrometheusText);
    let rows = t
        .iter()
        .filter(|s| s.name == "smp_workload_exchanges_total")
        .count();
    assert_eq!(rows, MAX_WORKLOAD_ROWS);
    assert_eq!(
        value(
            &t,
            "smp_workload_exchanges_dropped_total",
            &[("reason", "series_limit")]
        ),
        Some(((10 + 2) * 2) as f64),
        "138 new rows, room for 126: 12 rows of 2 exchanges counted"
    );
    // The proxy forgotten, its rows go.
    let later = Instant::now() + MetricsOptions::default().forget_after + Duration::from_secs(1);
    m.update_at(&NodeSnapshot::default(), later);
    let text = m.encode(Format::PrometheusText);
    assert!(!text.contains("smp_workload_exchanges_total{"), "{text}");
}
