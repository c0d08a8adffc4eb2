//! The HTML report (`report.html`) in a real browser: a realistic result set (HdrHistograms of
//! recorded latencies, four hops, two sidecars) is written with `ResultSet::write_to_dir`, then
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

use smp_agent::report::{
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

/// 60 s at 1000 req/s, meshed and baseline; each meshed request = a baseline-like request plus
/// the four hop latencies it crossed (recorded into the hop histograms too).
fn realistic_set() -> ResultSet {
    const N: u64 = 60_000;
    const RUN_S: f64 = 60.0;
    let mut rng = Rng(7);
    let mut meshed = new_latency_histogram();
    let mut baseline = new_latency_histogram();
    let mut hops: Vec<_> = HOPS.iter().map(|_| new_latency_histogram()).collect();
    for _ in 0..N {
        baseline
            .record(rng.latency(550_000.0, 0.25, 0.002, 3e6))
            .unwrap();
        let mut t = rng.latency(550_000.0, 0.25, 0.002, 3e6);
        for (h, (_, _, _, median_us)) in hops.iter_mut().zip(HOPS) {
            let v = rng.latency(median_us * 1e3, 0.3, 0.003, 0.8e6);
            h.record(v).unwrap();
            t += v;
        }
        meshed.record(t).unwrap();
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
    d.consistency = Some(ConsistencyCheck::compute(&d.hops, overhead_p50, 0.05, 0.25));
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
/// SVG, the total length of its polylines and the number of rectangles with an area.
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
