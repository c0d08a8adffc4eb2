//! The HTML report (`report.html`) in a real browser: a realistic result set (HdrHistograms of
//! recorded latencies, four hops, two sidecars, the breakdown of the requests' paths) is written with `ResultSet::write_to_dir`, then
//! headless Chromium loads the file and the test checks the DOM it built, the size of the drawn
//! plots, the console (no message at all: the page has no script, so any console line is a
//! blocked load or an error) and a screenshot. Negative controls prove the console check sees
//! a broken script and a blocked external load.
//!
//! No root needed. Chromium comes from `cargo xtask setup` (Debian package `chromium`); without
//! it the tests skip, and fail under `CI=true`. `SMP_CHROMIUM` overrides the binary;
//! `SMP_KEEP_TEST_DIRS=1` keeps the written directory (report.html, screenshot) to look at.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

use smp_agent::aggregate::path::{parts_at, Part, PathCounts, PathSample};
use smp_agent::report::{
    breakdown::{self, Breakdown, BreakdownAt, NetworkLeg},
    details::{
        new_latency_histogram, ConsistencyCheck, Direction, Distribution, Hop, Leg, Losses,
        RunSummary, SidecarUsage,
    },
    set::{environment_for_this_host, sidecar_totals},
    smp::{
        Client, Latency, MeshType, PerformanceTestConfig, PerformanceTestResult, Protocol,
        ServiceMesh, ServiceMeshConfig, SmpDuration, TestConfigFile, Timestamp,
    },
    Details, ResultSet,
};
use smp_tests::browser::{chromium, dump_dom, run_chromium};

/// The Content-Security-Policy the report carries (html.rs); the probe relaxes it.
const CSP: &str = "content=\"default-src 'none'; style-src 'unsafe-inline'\"";

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("smp-report-it-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&d);
    fs::create_dir_all(&d).unwrap();
    d
}

/// Removes a scratch directory, unless `SMP_KEEP_TEST_DIRS` is set.
fn cleanup(dir: &Path) {
    if std::env::var_os("SMP_KEEP_TEST_DIRS").is_none() {
        let _ = fs::remove_dir_all(dir);
    } else {
        eprintln!("kept {}", dir.display());
    }
}

// ---------------------------------------------------------------------------------------------
// A realistic result set.

/// splitmix64: deterministic, good enough to draw latencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1).
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Log-normal around `median_ns` with shape `sigma`, plus a rare slow tail (`tail_p` of the
    /// samples gain `tail_ns` × (1..4)): what scheduling and GC do to real latency.
    fn latency(&mut self, median_ns: f64, sigma: f64, tail_p: f64, tail_ns: f64) -> u64 {
        let z = (-2.0 * self.unit().ln()).sqrt() * (std::f64::consts::TAU * self.unit()).cos();
        let mut v = median_ns * (sigma * z).exp();
        if self.unit() < tail_p {
            v += tail_ns * (1.0 + 3.0 * self.unit());
        }
        v.max(1.0) as u64
    }
}

/// The four hops of a meshed request: (proxy, direction, leg, median µs).
const HOPS: [(&str, Direction, Leg, f64); 4] = [
    ("envoy-client", Direction::Outbound, Leg::Request, 180.0),
    ("envoy-server", Direction::Inbound, Leg::Request, 150.0),
    ("envoy-server", Direction::Inbound, Leg::Response, 70.0),
    ("envoy-client", Direction::Outbound, Leg::Response, 60.0),
];

/// The parts of a request's path besides the hops (which [`HOPS`] gives): (part, median µs).
/// The outbound and inbound hop parts are the sums of that sidecar's two hops.
const EXTRA_PARTS: [(Part, f64); 6] = [
    (Part::OutboundWait, 12.0),
    (Part::OutboundSend, 9.0),
    (Part::NetworkRequest, 28.0),
    (Part::NetworkResponse, 22.0),
    (Part::InboundWait, 14.0),
    (Part::InboundSend, 10.0),
];

/// Requests whose outbound response write was not seen to return (out of the breakdown).
const SEND_UNSEEN: u64 = 3;

/// 60 s at 1000 req/s, meshed and baseline; each meshed request = a baseline-like request plus
/// the four hop latencies it crossed (recorded into the hop histograms too) and the waits,
/// sends and network legs of its path through the two sidecars (recorded as the path's
/// parts, from which the breakdown is computed as `profile` does).
fn realistic_set() -> ResultSet {
    const N: u64 = 60_000;
    const RUN_S: f64 = 60.0;
    let mut rng = Rng(7);
    let mut meshed = new_latency_histogram();
    let mut baseline = new_latency_histogram();
    let mut hops: Vec<_> = HOPS.iter().map(|_| new_latency_histogram()).collect();
    let mut parts: std::collections::BTreeMap<Part, _> = Part::ALL
        .iter()
        .map(|p| (*p, new_latency_histogram()))
        .collect();
    let mut samples: Vec<PathSample> = Vec::new();
    // The network legs of every joined path, those out of the breakdown too.
    let mut legs = [new_latency_histogram(), new_latency_histogram()];
    for i in 0..N {
        baseline
            .record(rng.latency(550_000.0, 0.25, 0.002, 3e6))
            .unwrap();
        let mut t = rng.latency(550_000.0, 0.25, 0.002, 3e6);
        let mut path: PathSample = [0; 8];
        for (h, (_, direction, _, median_us)) in hops.iter_mut().zip(HOPS) {
            let v = rng.latency(median_us * 1e3, 0.3, 0.003, 0.8e6);
            h.record(v).unwrap();
            t += v;
            let part = if direction == Direction::Outbound {
                Part::OutboundHop
            } else {
                Part::InboundHop
            };
            path[part as usize] += v as u32;
        }
        for (part, median_us) in EXTRA_PARTS {
            let v = rng.latency(median_us * 1e3, 0.4, 0.002, 0.2e6);
            t += v;
            path[part as usize] = v as u32;
        }
        meshed.record(t).unwrap();
        for (h, part) in legs
            .iter_mut()
            .zip([Part::NetworkRequest, Part::NetworkResponse])
        {
            h.record(u64::from(path[part as usize]).max(1)).unwrap();
        }
        if i >= SEND_UNSEEN {
            for p in Part::ALL {
                parts
                    .get_mut(&p)
                    .unwrap()
                    .record(u64::from(path[p as usize]).max(1))
                    .unwrap();
            }
            samples.push(path);
        }
    }
    let mut d = Details::new("");
    d.start_time = Timestamp::parse_rfc3339("2026-11-23T12:00:00Z").ok();
    d.end_time = Timestamp::parse_rfc3339("2026-11-23T12:01:00Z").ok();
    d.end_to_end.meshed = RunSummary {
        url: "http://10.0.0.2:8080/api?user=a&sort=<desc>".into(),
        actual_qps: 999.7,
        errors: 2,
        grpc_status: Default::default(),
        latency: Distribution::from_histogram_ns(&meshed).unwrap(),
    };
    d.end_to_end.baseline = Some(RunSummary {
        url: "http://10.0.0.2:9080/api?user=a&sort=<desc>".into(),
        actual_qps: 999.9,
        errors: 0,
        grpc_status: Default::default(),
        latency: Distribution::from_histogram_ns(&baseline).unwrap(),
    });
    d.end_to_end.compute_overhead();
    d.hops = hops
        .iter()
        .zip(HOPS)
        .map(|(h, (proxy, direction, leg, _))| Hop {
            proxy: proxy.into(),
            kind: "envoy".into(),
            pid: Some(if proxy == "envoy-client" { 3101 } else { 3202 }),
            direction,
            direction_reason: String::new(),
            leg,
            latency: Distribution::from_histogram_ns(h).unwrap(),
            unpaired: 4,
            wait: None,
            send: None,
            sides: Vec::new(),
        })
        .collect();
    let usage = |proxy: &str, pid, cpu_seconds, mem_mb, mem_peak_mb| {
        let mut u = SidecarUsage {
            proxy: proxy.into(),
            kind: "envoy".into(),
            pid: Some(pid),
            cpu_seconds,
            mem_mb,
            mem_peak_mb,
            requests: N,
            bytes: N * 2 * 820,
            ..Default::default()
        };
        u.derive(RUN_S);
        u
    };
    d.sidecars = vec![
        usage("envoy-client", 3101, 5.4, 38.2, 45.1),
        usage("envoy-server", 3202, 4.2, 35.9, 41.0),
    ];
    d.losses = Losses {
        ringbuf_drops: 0,
        map_full: 0,
        unpaired: 16,
        paired: 4 * N,
        unpaired_reasons: Default::default(),
        events_lost: Default::default(),
        exchanges_left_out: Default::default(),
    };
    let overhead_p50 = d.end_to_end.overhead.unwrap().p50;
    d.consistency = Some(ConsistencyCheck::compute(
        &d.hops,
        overhead_p50,
        0.05,
        0.25,
        0.0,
    ));
    d.breakdown = Some(realistic_breakdown(
        N,
        &samples,
        breakdown::part_distributions(&parts).unwrap(),
        legs.map(|h| Distribution::from_histogram_ns(&h).unwrap()),
        d.end_to_end.overhead.as_ref().unwrap(),
    ));
    let sidecar = sidecar_totals(&d.sidecars, N as f64 / RUN_S, (N * 2 * 820) as f64 / RUN_S);
    ResultSet {
        test: TestConfigFile {
            test: PerformanceTestConfig {
                name: "bookinfo productpage, istio sidecars".into(),
                clients: vec![Client {
                    load_generator: "smp-agent".into(),
                    protocol: Protocol::Http,
                    connections: 16,
                    rps: 1000,
                    endpoint_urls: vec!["http://10.0.0.2:8080/api?user=a&sort=<desc>".into()],
                    ..Default::default()
                }],
                duration: Some(SmpDuration::new(Duration::from_secs(60))),
                ..Default::default()
            },
            mesh: ServiceMesh {
                r#type: MeshType::Istio,
                version: "1.24.2".into(),
                ..Default::default()
            },
        },
        result: PerformanceTestResult {
            start_time: d.start_time,
            end_time: d.end_time,
            latencies_ms: Some(Latency::from_histogram_ns(&meshed)),
            actual_qps: 999.7,
            ..Default::default()
        },
        mesh_config: ServiceMeshConfig {
            sidecar: Some(sidecar),
            mtls_enabled: true,
            proxy_concurrency: 2,
            proxy_build: "envoy 1.32.3".into(),
            mesh_type: Some(ServiceMesh {
                r#type: MeshType::Istio,
                version: "1.24.2".into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        environment: environment_for_this_host(),
        details: Some(d),
    }
}

/// The breakdown of the simulated paths, as `profile` builds it: the parts at p50, p90 and
/// p99 of the paths' time in the mesh against the overhead at the same percentile, the two
/// network legs (`[request, response]`), and join counts of a node where a few exchanges met
/// no peer.
fn realistic_breakdown(
    n: u64,
    samples: &[PathSample],
    parts: std::collections::BTreeMap<Part, Distribution>,
    [request, response]: [Distribution; 2],
    overhead: &smp_agent::report::details::Percentiles,
) -> Breakdown {
    let at = breakdown::QUANTILES
        .iter()
        .map(|&(name, q)| {
            BreakdownAt::new(name, &parts_at(samples, q).unwrap(), overhead.get(name))
        })
        .collect();
    let leg = |source: &str, destination: &str, leg, latency| NetworkLeg {
        source: source.into(),
        destination: destination.into(),
        leg,
        latency,
    };
    Breakdown {
        paths: PathCounts {
            joined: n,
            breakdown: n - SEND_UNSEEN,
            no_peer: 14,
            ambiguous: 0,
            unclaimed: 9,
            overflow: 0,
            send_unseen: SEND_UNSEEN,
            sampled: samples.len() as u64,
        },
        network_legs: vec![
            leg("envoy-client", "envoy-server", Leg::Request, request),
            leg("envoy-server", "envoy-client", Leg::Response, response),
        ],
        parts,
        at,
        rtt_estimates: Vec::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// Chromium.

// ---------------------------------------------------------------------------------------------
// Reading the DOM Chromium serialized.

/// The text from `<tag id="id"` to its closing `</tag>` (no nesting of the same tag inside).
fn element<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let open = format!("<{tag} id=\"{id}\"");
    let start = dom
        .find(&open)
        .unwrap_or_else(|| panic!("no {open} in the DOM"));
    let close = format!("</{tag}>");
    let end = start
        + dom[start..]
            .find(&close)
            .unwrap_or_else(|| panic!("{open} not closed"));
    &dom[start..end]
}

/// The values of `attr` on every `<tag …>` in `html`.
fn attrs(html: &str, tag: &str, attr: &str) -> Vec<String> {
    let open = format!("<{tag} ");
    let key = format!(" {attr}=\"");
    html.split(&open)
        .skip(1)
        .filter_map(|rest| {
            let tag_text = &rest[..rest.find('>').unwrap_or(rest.len())];
            let v = &tag_text[tag_text.find(&key)? + key.len()..];
            Some(v[..v.find('"')?].to_string())
        })
        .collect()
}

/// The report with its CSP allowing inline scripts and `script` inserted before `</body>`.
fn with_script(page: &str, script: &str) -> String {
    assert!(page.contains(CSP), "the report lost its CSP");
    page.replace(
        CSP,
        "content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\"",
    )
    .replace("</body>", &format!("<script>{script}</script>\n</body>"))
}

/// Measures the drawn plots in the browser (layout done): per figure, the rendered size of its
/// SVG, the total length of its polylines and the number of rectangles with an area; per bar
/// of the breakdown (`bars`), the width and height of its track and the width of each segment.
const PROBE: &str = r#"
const out = {};
for (const f of document.querySelectorAll('figure')) {
  const svg = f.querySelector('svg.plot');
  const r = svg ? svg.getBoundingClientRect() : { width: 0, height: 0 };
  let line = 0;
  for (const p of f.querySelectorAll('polyline')) line += p.getTotalLength();
  let bars = 0;
  for (const x of f.querySelectorAll('rect')) { const b = x.getBBox(); if (b.width > 0 && b.height > 0) bars++; }
  out[f.id] = { width: r.width, height: r.height, line: line, bars: bars, texts: f.querySelectorAll('text').length };
}
out.bars = {};
for (const r of document.querySelectorAll('.bar-row')) {
  const t = r.querySelector('.track').getBoundingClientRect();
  const segs = {};
  for (const x of r.querySelectorAll('.seg')) segs[x.classList[1]] = x.getBoundingClientRect().width;
  out.bars[r.id] = { track: t.width, height: t.height, segs: segs };
}
const pre = document.createElement('pre');
pre.id = 'probe';
pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
"#;

// ---------------------------------------------------------------------------------------------
// Tests.

#[test]
fn report_renders_in_headless_chromium() {
    let Some(bin) = chromium("report_renders_in_headless_chromium") else {
        return;
    };
    let dir = scratch("full");
    let mut set = realistic_set();
    let written = set.write_to_dir(&dir).expect("write the result set");
    assert_eq!(written.report, dir.join("report.html"));
    let page = fs::read_to_string(&written.report).unwrap();

    // 1. Loads with no console message, and the DOM has every part.
    let run = dump_dom(&bin, &dir, "dom", &written.report);
    assert!(
        run.console.is_empty(),
        "console messages:\n{}",
        run.console.join("\n")
    );
    let dom = &run.stdout;
    assert!(dom.contains("<h1>Service mesh overhead: bookinfo productpage"));
    for id in [
        "summary-table",
        "hops-table",
        "sidecars-table",
        "losses-table",
        "consistency-table",
        "environment-table",
    ] {
        element(dom, "table", id);
    }
    assert!(!dom.contains("class=\"absent\""), "nothing is missing here");
    // The URL with & and < is shown escaped, as text (never as markup).
    assert!(dom.contains("sort=&lt;desc&gt;") && !dom.contains("<desc>"));
    assert!(dom.contains("envoy 1.32.3") && dom.contains("istio 1.24.2"));

    // Latency: a meshed and a baseline curve of many points, the percentile axis to 99.999 %
    // (60 000 samples), a legend.
    let curve = element(dom, "figure", "latency-curve");
    assert!(curve.contains("<svg class=\"plot\""), "{curve}");
    let long_lines: Vec<usize> = attrs(curve, "polyline", "points")
        .iter()
        .map(|p| p.split_whitespace().count())
        .filter(|&n| n >= 20)
        .collect();
    assert_eq!(
        long_lines.len(),
        2,
        "meshed + baseline curves: {long_lines:?}"
    );
    for label in [
        "meshed",
        "baseline",
        "99.9%",
        "99.999%",
        "latency (ms)",
        "percentile",
    ] {
        assert!(curve.contains(label), "latency plot lacks {label:?}");
    }
    // Hops: 4 hops × (p50, p99) bars with an area; the row labels.
    let hops = element(dom, "figure", "hop-breakdown");
    let bars = attrs(hops, "rect", "width")
        .iter()
        .filter(|w| w.parse::<f64>().is_ok_and(|w| w > 0.0))
        .count();
    assert!(bars >= 9, "8 hop bars + the background: {bars}");
    assert!(hops.contains("envoy-server · inbound response"));
    // Sidecars: 2 CPU bars, 2 × (mean, peak) memory bars.
    let sidecars = element(dom, "figure", "sidecar-usage");
    let bars = attrs(sidecars, "rect", "width")
        .iter()
        .filter(|w| w.parse::<f64>().is_ok_and(|w| w > 0.0))
        .count();
    assert!(bars >= 7, "6 sidecar bars + the background: {bars}");
    assert!(sidecars.contains("CPU (millicores)") && sidecars.contains("memory (MB)"));
    // Where the time goes: a stacked bar per percentile, each with its outbound, network and
    // inbound segments and the overhead mark, labelled with their values; the parts, the join
    // counts and the network legs in tables.
    let wtg = element(dom, "section", "breakdown");
    assert!(wtg.contains("<h2>Where the time goes</h2>"), "{wtg}");
    for label in [
        "outbound sidecar",
        "network leg",
        "inbound sidecar",
        "unexplained",
        "overhead (meshed − baseline)",
    ] {
        assert!(
            element(wtg, "div", "breakdown-legend").contains(label),
            "legend lacks {label:?}"
        );
    }
    let bars = &wtg[..wtg
        .find("<div class=\"bar-scale\">")
        .expect("the bars' scale")];
    let rows: Vec<&str> = bars
        .split("<div class=\"bar-row\" id=\"breakdown-")
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 3, "three bars: {bars}");
    for (row, p) in rows.iter().zip(["p50", "p90", "p99"]) {
        assert!(row.starts_with(&format!("{p}\">")), "{row}");
        assert!(
            row.contains(&format!("<div class=\"pct\">{p}</div>")),
            "{row}"
        );
        for place in ["outbound", "network", "inbound"] {
            assert!(
                row.contains(&format!("<span class=\"seg {place}\" style=\"width:")),
                "{p}: no {place} segment: {row}"
            );
            assert!(
                row.contains(&format!("<span class=\"key {place}\"></span>{place} 0.")),
                "{p}: {place} not labelled with its value: {row}"
            );
        }
        assert!(row.contains("<span class=\"mark\""), "{p}: overhead mark");
        assert!(row.contains("Mean of "), "{row}");
    }
    for id in [
        "breakdown-table",
        "breakdown-paths-table",
        "breakdown-legs-table",
    ] {
        element(wtg, "table", id);
    }
    assert!(wtg.contains("<code>send_unseen</code></th><td class=\"num\">3</td>"));
    assert!(wtg.contains("<td>envoy-client → envoy-server</td><td>request</td>"));

    // 2. After layout, each plot has a real size and its shapes a real extent.
    let probe_page = dir.join("probe.html");
    fs::write(&probe_page, with_script(&page, PROBE)).unwrap();
    let run = run_chromium(
        &bin,
        &dir,
        "probe",
        &["--dump-dom", "--window-size=1200,2400"],
        &probe_page,
    );
    assert!(
        run.console.is_empty(),
        "console messages:\n{}",
        run.console.join("\n")
    );
    let json = element(&run.stdout, "pre", "probe");
    let json = &json[json.find('>').unwrap() + 1..];
    let probe: serde_json::Value = serde_json::from_str(json).expect("probe output");
    for id in ["latency-curve", "hop-breakdown", "sidecar-usage"] {
        let f = &probe[id];
        let (w, h) = (f["width"].as_f64().unwrap(), f["height"].as_f64().unwrap());
        assert!(w > 900.0 && h > 200.0, "{id} drawn at {w}×{h}: {probe}");
        assert!(
            f["texts"].as_u64().unwrap() > 8,
            "{id}: axis labels: {probe}"
        );
    }
    assert!(
        probe["latency-curve"]["line"].as_f64().unwrap() > 1000.0,
        "{probe}"
    );
    assert!(
        probe["hop-breakdown"]["bars"].as_u64().unwrap() >= 9,
        "{probe}"
    );
    assert!(
        probe["sidecar-usage"]["bars"].as_u64().unwrap() >= 7,
        "{probe}"
    );
    // The breakdown's bars: laid out across the page, every place visible, on one scale (the
    // time in the mesh grows with the percentile, so each bar is longer than the one before).
    let mut last = 0.0;
    for p in ["p50", "p90", "p99"] {
        let b = &probe["bars"][format!("breakdown-{p}")];
        let track = b["track"].as_f64().unwrap_or(0.0);
        assert!(
            track > 800.0 && b["height"].as_f64().unwrap() >= 20.0,
            "{p}: {probe}"
        );
        let segs = b["segs"].as_object().expect("segments");
        for place in ["outbound", "network", "inbound"] {
            let w = segs.get(place).and_then(|w| w.as_f64()).unwrap_or(0.0);
            assert!(w >= 1.0, "{p}: the {place} segment is {w} px wide: {probe}");
        }
        let total: f64 = segs.values().filter_map(|w| w.as_f64()).sum();
        assert!(total > last && total <= track + 0.5, "{p}: {probe}");
        last = total;
    }

    // 3. A screenshot: a PNG of the requested size with content (a blank page is ~10 KB).
    let png = dir.join("report.png");
    let shot = format!("--screenshot={}", png.display());
    let run = run_chromium(
        &bin,
        &dir,
        "shot",
        &[&shot, "--window-size=1200,2400", "--hide-scrollbars"],
        &written.report,
    );
    assert!(run.console.is_empty(), "{:?}", run.console);
    let bytes = fs::read(&png).expect("screenshot written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let be32 = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    assert_eq!((be32(&bytes[16..20]), be32(&bytes[20..24])), (1200, 2400));
    assert!(
        bytes.len() > 40_000,
        "screenshot looks blank: {} bytes",
        bytes.len()
    );
    cleanup(&dir);
}

#[test]
fn report_without_details_renders_and_says_so() {
    let Some(bin) = chromium("report_without_details_renders_and_says_so") else {
        return;
    };
    let dir = scratch("minimal");
    let mut set = realistic_set();
    set.details = None;
    let written = set.write_to_dir(&dir).expect("write the result set");
    let run = dump_dom(&bin, &dir, "dom", &written.report);
    assert!(run.console.is_empty(), "{:?}", run.console);
    assert!(run.stdout.contains("id=\"no-details\""));
    // The latency curve is drawn through the SMP percentiles, with markers.
    let curve = element(&run.stdout, "figure", "latency-curve");
    assert!(curve.contains("<circle"), "{curve}");
    assert!(!run.stdout.contains("id=\"hop-breakdown\""));
    cleanup(&dir);
}

/// The console check is real: a script error and an external load blocked by the report's
/// CSP both show up.
#[test]
fn console_check_catches_broken_pages() {
    let Some(bin) = chromium("console_check_catches_broken_pages") else {
        return;
    };
    let dir = scratch("broken");
    let mut set = realistic_set();
    let written = set.write_to_dir(&dir).expect("write the result set");
    let page = fs::read_to_string(&written.report).unwrap();

    let broken = dir.join("broken-script.html");
    fs::write(&broken, with_script(&page, "nonexistent();")).unwrap();
    let run = dump_dom(&bin, &dir, "script", &broken);
    assert!(
        run.console.iter().any(|l| l.contains("nonexistent")),
        "a ReferenceError was not seen: {:?}",
        run.console
    );

    let external = dir.join("external-load.html");
    fs::write(
        &external,
        page.replace(
            "</body>",
            "<img src=\"http://127.0.0.1:9/pixel.png\" alt=\"\">\n</body>",
        ),
    )
    .unwrap();
    let run = dump_dom(&bin, &dir, "external", &external);
    assert!(
        run.console
            .iter()
            .any(|l| l.contains("Content Security Policy") && l.contains("127.0.0.1:9")),
        "the blocked load was not seen: {:?}",
        run.console
    );
    cleanup(&dir);
}
