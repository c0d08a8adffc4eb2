//! Unit tests of `details` (kept apart so the module reads as what it does).

use super::*;

/// A histogram of `n` values spread log-uniformly-ish around `center_ns`.
pub(crate) fn sample_histogram(center_ns: u64, n: u64) -> Histogram<u64> {
    let mut h = new_latency_histogram();
    for i in 0..n {
        // deterministic spread: 0.5×..2× the center
        let f = 0.5 + 1.5 * ((i * 7919) % n) as f64 / n as f64;
        h.record((center_ns as f64 * f) as u64).unwrap();
    }
    h
}

#[test]
fn histogram_round_trips_losslessly() {
    let h = sample_histogram(1_000_000, 5000);
    let enc = EncodedHistogram::encode(&h).unwrap();
    let back = enc.decode().unwrap();
    assert_eq!(back.len(), h.len());
    assert_eq!(back.value_at_quantile(0.99), h.value_at_quantile(0.99));
    assert_eq!(back, h);
    let bad = EncodedHistogram {
        unit: "ms".into(),
        ..enc.clone()
    };
    assert!(matches!(
        bad.decode(),
        Err(HistogramCodecError::Unsupported { .. })
    ));
    let junk = EncodedHistogram {
        data: "!!".into(),
        ..enc
    };
    assert!(matches!(junk.decode(), Err(HistogramCodecError::Base64(_))));
}

/// A V2 header (uncompressed) with these fields, then `payload`.
pub(crate) fn v2_bytes(
    payload_len: u32,
    digits: u32,
    low: u64,
    high: u64,
    payload: &[u8],
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(V2_COOKIE.to_be_bytes());
    b.extend(payload_len.to_be_bytes());
    b.extend(0u32.to_be_bytes());
    b.extend(digits.to_be_bytes());
    b.extend(low.to_be_bytes());
    b.extend(high.to_be_bytes());
    b.extend(1f64.to_be_bytes());
    b.extend(payload);
    b
}

/// `v2` DEFLATE-compressed in the V2 compressed framing, base64.
pub(crate) fn compressed_base64(v2: &[u8]) -> String {
    use std::io::Write as _;
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(v2).unwrap();
    let deflated = z.finish().unwrap();
    let mut b = Vec::new();
    b.extend(V2_COMPRESSED_COOKIE.to_be_bytes());
    b.extend((deflated.len() as u32).to_be_bytes());
    b.extend(deflated);
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[test]
fn hostile_histograms_are_refused_before_allocating() {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    // A header claiming a 4 GiB payload: hdrhistogram would allocate it all.
    let bomb = compressed_base64(&v2_bytes(u32::MAX, 3, 1, 1 << 40, &[]));
    assert!(bomb.len() < 120, "{}", bomb.len());
    let e = decode_v2_base64(&bomb).unwrap_err();
    assert!(matches!(e, HistogramCodecError::Invalid(_)), "{e}");
    let e = decode_v2_base64(&b64(&v2_bytes(u32::MAX, 3, 1, 1 << 40, &[0; 8]))).unwrap_err();
    assert!(matches!(e, HistogramCodecError::Invalid(_)), "{e}");
    // Bounds that imply millions of counters.
    let e = decode_v2_base64(&b64(&v2_bytes(0, 5, 1, u64::MAX, &[]))).unwrap_err();
    assert!(matches!(e, HistogramCodecError::TooLarge { .. }), "{e}");
    // A compressed length beyond the data, and a DEFLATE stream inflating past the limit.
    let mut b = base64::engine::general_purpose::STANDARD
        .decode(compressed_base64(&v2_bytes(0, 3, 1, 1 << 40, &[])))
        .unwrap();
    b[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        decode_v2_base64(&b64(&b)),
        Err(HistogramCodecError::Invalid(_))
    ));
    let big = compressed_base64(&v2_bytes(0, 3, 1, 1 << 40, &vec![0; MAX_HISTOGRAM_BYTES]));
    assert!(matches!(
        decode_v2_base64(&big),
        Err(HistogramCodecError::TooLarge { .. })
    ));
    // Truncated and cookie-less data.
    for bytes in [&b"\x1c\x84\x93"[..], b"", &[0u8; 64]] {
        assert!(decode_v2_base64(&b64(bytes)).is_err());
    }
    // Our own histograms pass, and the counter estimate is hdrhistogram's.
    let h = new_latency_histogram();
    assert_eq!(counts_len(1, MAX_LATENCY_NS, 3), h.distinct_values() as u64);
    let h = sample_histogram(1_000_000, 5000);
    let text = EncodedHistogram::encode(&h).unwrap().data;
    assert_eq!(decode_v2_base64(&text).unwrap(), h);
}

#[test]
fn sidecar_derived_figures() {
    let mut s = SidecarUsage {
        proxy: "envoy".into(),
        cpu_seconds: 6.0,
        requests: 60_000,
        ..Default::default()
    };
    s.derive(60.0); // 1000 rps, 0.1 core
    assert!((s.cpu_mcores - 100.0).abs() < 1e-9);
    assert!((s.cpu_us_per_request - 100.0).abs() < 1e-9);
    assert!((s.vcpu_per_1000_rps - 0.1).abs() < 1e-9);
}

/// Proxy `p`'s outbound request hop with `latency`, nothing else said.
fn outbound_request(latency: Distribution) -> Hop {
    Hop {
        proxy: "p".into(),
        kind: String::new(),
        pid: None,
        direction: Direction::Outbound,
        direction_reason: String::new(),
        leg: Leg::Request,
        latency,
        unpaired: 0,
        wait: None,
        send: None,
        sides: Vec::new(),
    }
}

#[test]
fn consistency_check() {
    let hop = |p50: f64| {
        outbound_request(Distribution {
            count: 1,
            percentiles: Percentiles {
                p50,
                ..Default::default()
            },
            histogram: None,
        })
    };
    let hops = [hop(0.1), hop(0.1), hop(0.05), hop(0.05)];
    let c = ConsistencyCheck::compute(&hops, 0.32, 0.05, 0.2, 0.0);
    assert_eq!(c.verdict, ConsistencyVerdict::Consistent);
    assert!((c.difference_ms + 0.02).abs() < 1e-9);
    let c = ConsistencyCheck::compute(&hops, 1.0, 0.05, 0.2, 0.0);
    assert_eq!(c.verdict, ConsistencyVerdict::Inconsistent);
    // Waits and sends count too: 0.3 in hops + 4 × 0.1 waits + 4 × 0.05 sends = 0.9 ms.
    let dist = |p50: f64| Distribution {
        count: 1,
        percentiles: Percentiles {
            p50,
            ..Default::default()
        },
        histogram: None,
    };
    let full: Vec<Hop> = hops
        .iter()
        .cloned()
        .map(|mut h| {
            h.wait = Some(dist(0.1));
            h.send = Some(dist(0.05));
            h
        })
        .collect();
    let c = ConsistencyCheck::compute(&full, 1.0, 0.05, 0.2, 0.0);
    assert!((c.sum_wait_p50_ms - 0.4).abs() < 1e-9);
    assert!((c.sum_send_p50_ms - 0.2).abs() < 1e-9);
    assert!((c.difference_ms + 0.1).abs() < 1e-9);
    assert_eq!(c.verdict, ConsistencyVerdict::Consistent);
    // A gateway's hops count like a sidecar's, and the check names what it summed.
    let mut gw = hop(0.2);
    gw.proxy = "g".into();
    gw.direction = Direction::Gateway;
    let c = ConsistencyCheck::compute(&[hop(0.1), gw], 0.3, 0.05, 0.2, 0.0);
    assert!((c.sum_hop_p50_ms - 0.3).abs() < 1e-9);
    assert_eq!(c.hops_used, ["p/outbound/request", "g/gateway/request"]);
    let back: Details = serde_json::from_str(
        &serde_json::to_string(&Details {
            consistency: Some(c.clone()),
            ..Details::new("r")
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(back.consistency, Some(c));
}

#[test]
fn details_json_round_trip() {
    let mut d = Details::new("r1");
    d.end_to_end.meshed = RunSummary {
        url: "http://x/".into(),
        actual_qps: 100.0,
        errors: 0,
        grpc_status: Default::default(),
        latency: Distribution::from_histogram_ns(&sample_histogram(2_000_000, 1000)).unwrap(),
    };
    d.end_to_end.baseline = Some(RunSummary {
        url: "http://y/".into(),
        actual_qps: 100.0,
        errors: 0,
        grpc_status: Default::default(),
        latency: Distribution::from_histogram_ns(&sample_histogram(1_000_000, 1000)).unwrap(),
    });
    d.end_to_end.compute_overhead();
    assert!(d.end_to_end.overhead.unwrap().p50 > 0.5);
    let text = serde_json::to_string_pretty(&d).unwrap();
    let back: Details = serde_json::from_str(&text).unwrap();
    assert_eq!(back, d);
}

#[test]
fn a_hop_says_what_its_sides_spoke() {
    use WireProtocol::{H2c, Http1, Tls};
    let s = |downstream, upstream| Sides {
        downstream,
        upstream,
    };
    let counts: BTreeMap<Sides, u64> = [(s(Http1, Tls), 3), (s(H2c, Tls), 90), (s(Http1, H2c), 3)]
        .into_iter()
        .collect();
    let sides = SideShare::from_counts(&counts);
    // Most exchanges first; ties in a fixed order.
    let order: Vec<(Sides, u64)> = sides.iter().map(|x| (x.sides(), x.exchanges)).collect();
    assert_eq!(
        order,
        [(s(H2c, Tls), 90), (s(Http1, H2c), 3), (s(Http1, Tls), 3)]
    );
    let hop = Hop {
        sides,
        ..outbound_request(Distribution::default())
    };
    assert_eq!(hop.sides_label(), "h2c→tls http1→h2c http1→tls");
    let json = serde_json::to_string(&hop).unwrap();
    assert!(
        json.contains(r#""sides":[{"downstream":"h2c","upstream":"tls","exchanges":90},"#),
        "{json}"
    );
    let back: Hop = serde_json::from_str(&json).unwrap();
    assert_eq!(back, hop);
    // Files without it (older agents) still read; an unknown protocol does not.
    let old = json.replace(&json[json.find(r#","sides""#).unwrap()..json.len() - 1], "");
    assert!(serde_json::from_str::<Hop>(&old).unwrap().sides.is_empty());
    assert!(serde_json::from_str::<Hop>(&json.replace("\"tls\"", "\"quic\"")).is_err());
}
