//! Unit tests of the page: every part present for a full set, what is missing said, escaping,
//! the percentile axis and the number formats.

use super::{format::*, plots::*, *};
use crate::aggregate::path::{Part, PartsAt, PathCounts};
use crate::report::{
    breakdown::{Breakdown, BreakdownAt, NetworkLeg},
    details::{
        self, ConsistencyCheck, Details, Direction, Distribution, Hop, Leg, Losses, Percentiles,
        RunSummary, SideShare, SidecarUsage, ToolInfo, WireProtocol,
    },
    smp::{Client, PerformanceTestConfig, ServiceMesh, TestConfigFile},
};

/// A fully populated set: meshed and baseline histograms, four hops, two sidecars.
pub(crate) fn populated_set() -> ResultSet {
    let mut set = crate::report::set::tests::sample_set();
    let d = set.details.as_mut().unwrap();
    d.tool = ToolInfo {
        name: "smp-agent".into(),
        version: "0.1.0".into(),
        kernel: "6.1.0-test".into(),
        hostname: "lab".into(),
    };
    d.end_to_end.baseline = Some(RunSummary {
        url: "http://127.0.0.1:9090/".into(),
        actual_qps: 99.8,
        errors: 0,
        grpc_status: Default::default(),
        latency: Distribution::from_histogram_ns(&details::tests::sample_histogram(
            1_200_000, 2000,
        ))
        .unwrap(),
    });
    d.end_to_end.compute_overhead();
    let hop = |proxy: &str, direction, leg, center_ns| Hop {
        proxy: proxy.into(),
        kind: "envoy".into(),
        pid: Some(4242),
        direction,
        direction_reason: String::new(),
        leg,
        latency: Distribution::from_histogram_ns(&details::tests::sample_histogram(
            center_ns, 1000,
        ))
        .unwrap(),
        unpaired: 3,
        wait: None,
        send: None,
        sides: vec![SideShare {
            downstream: WireProtocol::Http1,
            upstream: WireProtocol::Tls,
            exchanges: 1000,
        }],
    };
    d.hops = vec![
        hop("envoy-client", Direction::Outbound, Leg::Request, 250_000),
        hop("envoy-server", Direction::Inbound, Leg::Request, 200_000),
        hop("envoy-server", Direction::Inbound, Leg::Response, 120_000),
        hop("envoy-client", Direction::Outbound, Leg::Response, 110_000),
    ];
    let usage = |proxy: &str, cpu_seconds| {
        let mut u = SidecarUsage {
            proxy: proxy.into(),
            kind: "envoy".into(),
            pid: Some(4242),
            cpu_seconds,
            mem_mb: 30.0,
            mem_peak_mb: 34.5,
            requests: 3000,
            bytes: 1_500_000,
            ..Default::default()
        };
        u.derive(30.0);
        u
    };
    d.sidecars = vec![usage("envoy-client", 2.4), usage("envoy-server", 1.8)];
    d.losses = Losses {
        ringbuf_drops: 0,
        map_full: 0,
        unpaired: 12,
        paired: 11_988,
        unpaired_reasons: [("http2".to_string(), 10), ("unknown_role".to_string(), 2)].into(),
        events_lost: [("state_evicted".to_string(), 3)].into(),
        exchanges_left_out: [("before_window".to_string(), 4)].into(),
    };
    let overhead = d.end_to_end.overhead.unwrap().p50;
    d.consistency = Some(ConsistencyCheck::compute(
        &d.hops, overhead, 0.05, 0.25, 0.0,
    ));
    d.breakdown = Some(sample_breakdown(&[0.7, 1.0, 2.0]));
    set.link();
    set
}

/// The parts (ms) of the requests at p50, in [`Part::ALL`]'s order: 0.56 ms in the mesh, of
/// which outbound 0.28, network 0.05, inbound 0.23.
const PARTS_P50: [f64; 8] = [0.02, 0.25, 0.01, 0.03, 0.02, 0.02, 0.2, 0.01];

/// A breakdown at p50, p90, p99 (the parts ×1, ×1.5, ×3 those of [`PARTS_P50`]) with these
/// overheads (ms), two network legs, and every join count set.
fn sample_breakdown(overheads: &[f64; 3]) -> Breakdown {
    let at = [("p50", 0.5, 1.0), ("p90", 0.9, 1.5), ("p99", 0.99, 3.0)]
        .iter()
        .zip(overheads)
        .map(|(&(name, quantile, k), &o)| {
            let parts_ns: std::collections::BTreeMap<Part, f64> = Part::ALL
                .iter()
                .zip(PARTS_P50)
                .map(|(p, v)| (*p, v * k * 1e6))
                .collect();
            let parts = PartsAt {
                quantile,
                total_ns: parts_ns.values().sum(),
                parts_ns,
                paths: 30,
            };
            BreakdownAt::new(name, &parts, Some(o))
        })
        .collect();
    let leg = |source: &str, destination: &str, leg, center_ns| NetworkLeg {
        source: source.into(),
        destination: destination.into(),
        leg,
        latency: Distribution::from_histogram_ns(&details::tests::sample_histogram(
            center_ns, 2900,
        ))
        .unwrap(),
    };
    Breakdown {
        paths: PathCounts {
            joined: 2950,
            breakdown: 2900,
            no_peer: 11,
            ambiguous: 2,
            unclaimed: 7,
            overflow: 0,
            send_unseen: 5,
            sampled: 2900,
        },
        network_legs: vec![
            leg("envoy-client", "envoy-server", Leg::Request, 30_000),
            leg("envoy-server", "envoy-client", Leg::Response, 20_000),
        ],
        parts: Default::default(),
        at,
        rtt_estimates: Vec::new(),
    }
}

/// The `<section id=…>` of the page.
fn section<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("<section id=\"{id}\">"))
        .unwrap_or_else(|| panic!("section {id} missing"));
    let end = start + page[start..].find("</section>").unwrap();
    &page[start..end]
}

/// The bar of one percentile: its markup up to the next bar (or the scale under the bars).
fn bar_of<'a>(section: &'a str, percentile: &str) -> &'a str {
    let start = section
        .find(&format!(
            "<div class=\"bar-row\" id=\"breakdown-{percentile}\">"
        ))
        .unwrap_or_else(|| panic!("no bar for {percentile}"));
    let rest = &section[start + 1..];
    let end = [
        rest.find("<div class=\"bar-row\""),
        rest.find("<div class=\"bar-scale\""),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(rest.len());
    &section[start..=start + end]
}

/// The width (% of the common scale) of each segment of a bar: (class, width).
fn segments(bar: &str) -> Vec<(String, f64)> {
    bar.split("<span class=\"seg ")
        .skip(1)
        .map(|s| {
            let class = s[..s.find('"').unwrap()].to_string();
            let w = &s[s.find("width:").unwrap() + 6..];
            (class, w[..w.find('%').unwrap()].parse().unwrap())
        })
        .collect()
}

/// Everything empty: no details, no latency, no clients.
fn empty_set() -> ResultSet {
    ResultSet {
        test: TestConfigFile {
            test: PerformanceTestConfig::default(),
            mesh: ServiceMesh::default(),
        },
        result: Default::default(),
        mesh_config: Default::default(),
        environment: Default::default(),
        details: None,
    }
}

fn figure_svg<'a>(page: &'a str, id: &str) -> &'a str {
    let start = page
        .find(&format!("<figure id=\"{id}\">"))
        .unwrap_or_else(|| panic!("figure {id} missing"));
    let end = start + page[start..].find("</figure>").unwrap();
    &page[start..end]
}

#[test]
fn populated_set_has_every_plot_and_table() {
    let page = render(&populated_set()).unwrap();
    for id in ["latency-curve", "hop-breakdown", "sidecar-usage"] {
        let fig = figure_svg(&page, id);
        assert!(fig.contains("<svg class=\"plot\""), "{id}: no svg");
        assert!(fig.contains("</svg>"), "{id}: svg not closed");
    }
    // Two curves (meshed, baseline) drawn as polylines with many points.
    let curve = figure_svg(&page, "latency-curve");
    let polylines: Vec<&str> = curve
        .split("<polyline")
        .skip(1)
        .filter(|p| p.contains("points=\""))
        .collect();
    assert!(polylines.len() >= 2, "{}", polylines.len());
    assert!(curve.contains("\nmeshed\n") && curve.contains("\nbaseline\n"));
    assert!(curve.contains("\n99.9%\n"), "percentile axis labels");
    assert!(curve.contains("latency (ms)"));
    // Bars: one per hop and series (4 × 2), legend boxes come on top.
    assert!(figure_svg(&page, "hop-breakdown").matches("<rect").count() >= 8);
    assert!(figure_svg(&page, "sidecar-usage").matches("<rect").count() >= 6);
    for id in [
        "summary-table",
        "hops-table",
        "breakdown-table",
        "breakdown-paths-table",
        "breakdown-legs-table",
        "sidecars-table",
        "losses-table",
        "consistency-table",
        "environment-table",
    ] {
        assert!(page.contains(&format!("<table id=\"{id}\"")), "{id}");
    }
    assert!(page.contains("6.1.0-test") && page.contains("smp-agent 0.1.0"));
    // Each hop says what its proxy's two sides spoke.
    assert!(
        page.contains("<td>request</td><td>http1→tls</td>"),
        "sides in the hops table"
    );
    assert!(
        page.contains("by reason: http2 10, unknown_role 2"),
        "unpaired reasons in the losses table"
    );
    assert!(
        page.contains("<th>probe losses by reason</th><td class=\"num\">state_evicted 3</td>"),
        "probe losses by reason in the losses table"
    );
    assert!(
        page.contains(
            "<th>exchanges left out of the hops</th><td class=\"num\">before_window 4</td>"
        ),
        "exchanges left out in the losses table"
    );
    assert!(page.contains("class=\"verdict "));
    assert!(
        !page.contains("class=\"absent\""),
        "nothing should be absent"
    );
    // Self-contained: no remote resource, no script.
    assert!(!page.contains("<script") && !page.contains("<link"));
    assert!(!page.contains("src=") && !page.contains("href="));
    assert!(page.contains("Content-Security-Policy"));
}

#[test]
fn each_proxy_says_why_it_has_its_direction() {
    let mut set = populated_set();
    let d = set.details.as_mut().unwrap();
    for h in &mut d.hops {
        h.direction_reason = h.direction.reason().to_string();
    }
    let mut gw = d.hops[0].clone();
    gw.proxy = "edge <gw>".into();
    gw.direction = Direction::Gateway;
    gw.direction_reason = Direction::Gateway.reason().to_string();
    d.hops.push(gw);
    let page = render(&set).unwrap();
    let list = &page[page
        .find("<ul id=\"hop-directions\">")
        .expect("direction list")..];
    let list = &list[..list.find("</ul>").unwrap()];
    // One line per proxy and class, the gateway's name escaped.
    assert_eq!(list.matches("<li>").count(), 3, "{list}");
    assert!(list.contains(&format!(
        "<li><b>edge &lt;gw&gt;</b> is classed <b>gateway</b>: {}</li>",
        Direction::Gateway.reason()
    )));
    assert!(list.contains("<b>envoy-client</b> is classed <b>outbound</b>"));
    assert!(list.contains("<b>envoy-server</b> is classed <b>inbound</b>"));
    // Without reasons (results of older agents) there is no list.
    assert!(!render(&populated_set()).unwrap().contains("hop-directions"));
}

/// A run through Istio's ambient data plane says so where its proxies' resources are, and
/// what its hops are; a sidecar run carries no such note, and the kinds decide which it is.
#[test]
fn an_ambient_run_explains_its_node_proxy() {
    use crate::report::details::DataPlane;
    let mut set = populated_set();
    assert!(!render(&set).unwrap().contains("id=\"data-plane\""));
    let d = set.details.as_mut().unwrap();
    assert_eq!(
        DataPlane::of_kinds(d.sidecars.iter().map(|s| s.kind.as_str())),
        DataPlane::Sidecars
    );
    for s in &mut d.sidecars {
        s.kind = "ztunnel".into();
    }
    d.data_plane = DataPlane::of_kinds(d.sidecars.iter().map(|s| s.kind.as_str()));
    assert_eq!(d.data_plane, DataPlane::Ambient);
    let page = render(&set).unwrap();
    let sidecars = section(&page, "sidecars");
    assert!(sidecars.contains("<p id=\"data-plane\"><b>Istio ambient data plane.</b>"));
    assert!(sidecars.contains("HBONE"));
    assert!(
        !sidecars.contains("workloads-table"),
        "no node proxy, no per-pod rows"
    );
    // A node proxy's rows: one per pod served, escaped, CPU shares as given.
    let d = set.details.as_mut().unwrap();
    let hop = d.hops[0].latency.clone();
    d.workloads = vec![crate::report::details::WorkloadShare {
        proxy: "ztunnel-node".into(),
        workload: "<client>".into(),
        address: "10.77.0.1".into(),
        direction: crate::report::details::Direction::Outbound,
        peer: "server".into(),
        exchanges: 1999,
        request_hop: hop.clone(),
        response_hop: hop,
        cpu_seconds: 0.13,
        cpu_mcores: 12.9,
        connections: 32,
        mem_mb: 6.5,
    }];
    let page = render(&set).unwrap();
    let sidecars = section(&page, "sidecars");
    let table = sidecars
        .split("<table id=\"workloads-table\">")
        .nth(1)
        .expect("the per-pod table");
    assert!(
        table.contains("<td>&lt;client&gt;</td><td>10.77.0.1</td><td>outbound</td><td>server</td>")
    );
    assert!(
        table.contains(
            "<td class=\"num\">12.9</td><td class=\"num\">32</td><td class=\"num\">6.5</td></tr>"
        ),
        "{table}"
    );
}

#[test]
fn empty_set_says_what_is_missing() {
    let page = render(&empty_set()).unwrap();
    assert!(page.contains("id=\"no-details\""), "{page}");
    assert!(page.contains("id=\"latency-absent\""));
    assert!(page.contains("id=\"no-latency\""));
    assert!(!page.contains("<figure"));
    assert!(page.ends_with("</html>\n"));
    // Details with nothing in them: no baseline, hops, sidecars, consistency.
    let mut set = empty_set();
    set.details = Some(Details::new(""));
    let page = render(&set).unwrap();
    for id in [
        "no-baseline",
        "hops-absent",
        "breakdown-absent",
        "sidecars-absent",
        "consistency-absent",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
    }
    // Details with zero values (zero-width bars, zero latency) still render.
    let mut set = populated_set();
    let d = set.details.as_mut().unwrap();
    d.sidecars.iter_mut().for_each(|s| {
        s.cpu_mcores = 0.0;
        s.mem_mb = f64::NAN;
    });
    d.hops.truncate(1);
    d.hops[0].latency = Distribution::default();
    render(&set).unwrap();
}

#[test]
fn breakdown_draws_a_stacked_bar_per_percentile_on_one_scale() {
    let page = render(&populated_set()).unwrap();
    let s = section(&page, "breakdown");
    assert!(s.contains("<h2>Where the time goes</h2>"));
    // What each part is, in words, and how a bar is made.
    for words in [
        "outbound sidecar",
        "network leg",
        "inbound sidecar",
        "unexplained",
        "inbound sidecar's socket receiving the bytes",
        "one kernel clock",
        "mean of each part over the requests whose time in the mesh lies at the 90th percentile",
    ] {
        assert!(s.contains(words), "{words:?} not said");
    }
    assert_eq!(s.matches("<div class=\"bar-row\"").count(), 3);
    // p99 reaches furthest (its overhead, 2 ms, is the scale); p50 is 0.7 / 2 of it, p90 half.
    let total = |p: &str| segments(bar_of(s, p)).iter().map(|(_, w)| w).sum::<f64>();
    for (p, want) in [("p50", 35.0), ("p90", 50.0), ("p99", 100.0)] {
        let bar = bar_of(s, p);
        let classes: Vec<String> = segments(bar).into_iter().map(|(c, _)| c).collect();
        assert_eq!(
            classes,
            ["outbound", "network", "inbound", "unexplained"],
            "{p}: {bar}"
        );
        assert!((total(p) - want).abs() < 0.01, "{p}: {} %", total(p));
        assert!(bar.contains("class=\"mark\""), "{p}: the overhead mark");
        assert!(bar.contains("<div class=\"pct\">"), "{p}: its name");
    }
    // Each segment's width in proportion to its value: outbound 0.28 of 2 ms at p50 = 14 %.
    assert_eq!(segments(bar_of(s, "p50"))[0], ("outbound".into(), 14.0));
    // Labels with values: inside the wide segments and in the line under each bar.
    let p50 = bar_of(s, "p50");
    assert!(p50.contains(">0.280 ms</span>"), "{p50}");
    for text in [
        "outbound 0.280 ms",
        "network 0.050 ms",
        "inbound 0.230 ms",
        "unexplained 0.140 ms",
        "= overhead 0.700 ms (80 % in the parts)",
        "Mean of 30 requests; largest: outbound",
    ] {
        assert!(p50.contains(text), "{text:?} not in {p50}");
    }
    assert!(bar_of(s, "p99").contains("inbound 0.690 ms"));
    assert!(s.contains("<div class=\"bar-scale\"><span>0</span><span>2.000 ms</span></div>"));
    // The parts table: one row per percentile, each part.
    let table = &s[s.find("<table id=\"breakdown-table\"").unwrap()..];
    assert!(
        table.contains("<tr><th>p90</th><td class=\"num\">0.030</td><td class=\"num\">0.375</td>")
    );
    assert!(table.contains("<td class=\"num\">+0.140</td>"));
    // The join counts with their meaning, the network legs.
    for name in [
        "joined",
        "breakdown",
        "no_peer",
        "ambiguous",
        "unclaimed",
        "overflow",
        "send_unseen",
    ] {
        assert!(
            s.contains(&format!(
                "<tr><th><code>{name}</code></th><td class=\"num\">"
            )),
            "{name}"
        );
    }
    assert!(s.contains("<code>no_peer</code></th><td class=\"num\">11</td><td>a proxy"));
    assert!(s.contains("<tr><td>envoy-client → envoy-server</td><td>request</td>"));
    assert!(s.contains("<tr><td>envoy-server → envoy-client</td><td>response</td>"));
    assert!(s.contains("<td class=\"num\">2,900</td></tr>"), "leg count");
    // Between the hops and the sidecars.
    let at = |id: &str| page.find(&format!("<section id=\"{id}\">")).unwrap();
    assert!(at("hops") < at("breakdown") && at("breakdown") < at("sidecars"));
}

#[test]
fn breakdown_says_when_the_parts_exceed_the_overhead() {
    let mut set = populated_set();
    // p99: 1.68 ms in the mesh, an overhead of 1.5 ms: unexplained −0.18 ms.
    set.details.as_mut().unwrap().breakdown = Some(sample_breakdown(&[0.7, 1.0, 1.5]));
    let page = render(&set).unwrap();
    let s = section(&page, "breakdown");
    let p99 = bar_of(s, "p99");
    let segs = segments(p99);
    assert_eq!(
        segs.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["outbound", "network", "inbound"],
        "no unexplained segment when it is negative"
    );
    // The parts set the scale now (1.68 ms); the overhead mark falls inside them.
    assert!((segs.iter().map(|(_, w)| w).sum::<f64>() - 100.0).abs() < 0.01);
    assert!(p99.contains("style=\"left:89.286%\""), "{p99}");
    assert!(
        p99.contains(
            "= 1.680 ms in the mesh. <span class=\"warn\">The parts exceed the measured \
             overhead (1.500 ms) by 0.180 ms.</span>"
        ),
        "{p99}"
    );
    assert!(
        s.contains("<td class=\"num\">−0.180</td>"),
        "signed in the table"
    );
    assert!(!bar_of(s, "p50").contains("exceed"));
    assert!(s.contains("<span>1.680 ms</span>"), "the scale");
    // No baseline: no overhead, no unexplained, said so.
    let mut set = populated_set();
    for a in &mut set.details.as_mut().unwrap().breakdown.as_mut().unwrap().at {
        a.overhead_ms = None;
        a.unexplained_ms = None;
    }
    let page = render(&set).unwrap();
    let p50 = bar_of(section(&page, "breakdown"), "p50");
    assert!(!p50.contains("class=\"mark\"") && !p50.contains("seg unexplained"));
    assert!(
        p50.contains("= 0.560 ms in the mesh. No baseline run"),
        "{p50}"
    );
}

#[test]
fn breakdown_absent_says_why() {
    let mut set = populated_set();
    set.details.as_mut().unwrap().breakdown = None;
    let page = render(&set).unwrap();
    let s = section(&page, "breakdown");
    assert!(s.contains("<h2>Where the time goes</h2>"));
    assert!(s.contains(
        "<p class=\"absent\" id=\"breakdown-absent\">No breakdown: no request was joined \
         across two sidecars of this node."
    ));
    assert!(!s.contains("bar-row") && !s.contains("<table"));
    // Paths tried but none outbound → inbound: the counts and legs, no bar.
    let mut set = populated_set();
    let b = set.details.as_mut().unwrap().breakdown.as_mut().unwrap();
    b.at.clear();
    b.network_legs.clear();
    b.paths = PathCounts {
        no_peer: 40,
        ..PathCounts::default()
    };
    let page = render(&set).unwrap();
    let s = section(&page, "breakdown");
    assert!(s.contains("id=\"breakdown-unjoined\""));
    assert!(s.contains("id=\"breakdown-no-legs\""));
    assert!(!s.contains("bar-row") && !s.contains("breakdown-table"));
    assert!(s.contains("<code>no_peer</code></th><td class=\"num\">40</td>"));
}

#[test]
fn smp_only_result_plots_the_percentile_points() {
    let mut set = populated_set();
    set.details = None;
    let page = render(&set).unwrap();
    let curve = figure_svg(&page, "latency-curve");
    assert!(curve.contains("<circle"), "markers at the percentiles");
    assert!(curve.contains("recorded percentiles"));
    assert!(page.contains("id=\"no-details\""));
}

#[test]
fn strings_are_escaped() {
    assert_eq!(
        escape(r#"<a href="x">'&'</a>"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
    );
    let mut set = populated_set();
    let evil = "<script>alert('x')</script>&\"";
    set.test.test.name = evil.into();
    set.test.test.clients = vec![Client {
        endpoint_urls: vec![format!("http://h/?a=1&b=<{evil}>")],
        ..Default::default()
    }];
    let d = set.details.as_mut().unwrap();
    d.hops[0].proxy = evil.into();
    d.sidecars[0].proxy = evil.into();
    d.end_to_end.meshed.url = evil.into();
    d.breakdown.as_mut().unwrap().network_legs[0].source = evil.into();
    let page = render(&set).unwrap();
    assert!(!page.contains("<script"), "unescaped markup in the page");
    assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"));
    // In the SVG too (plotters' own escaping).
    assert!(figure_svg(&page, "hop-breakdown").contains("&lt;script&gt;"));
}

#[test]
fn percentile_axis() {
    assert_eq!(percentile_label(1.0), "0%");
    assert_eq!(percentile_label(2.0), "50%");
    assert_eq!(percentile_label(10.0), "90%");
    assert_eq!(percentile_label(100.0), "99%");
    assert_eq!(percentile_label(1000.0), "99.9%");
    assert_eq!(percentile_label(10000.0), "99.99%");
    assert_eq!(x_cap(0), 100.0);
    assert_eq!(x_cap(2000), 10_000.0);
    assert_eq!(x_cap(u64::MAX), 1e6);
    let h = details::tests::sample_histogram(1_000_000, 5000);
    let c = histogram_curve(&h, x_cap(h.len()));
    assert!(
        c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{c:?}"
    );
    assert_eq!(c.last().unwrap(), &(10_000.0, h.max() as f64 / 1e6));
}

#[test]
fn percentile_points_place_the_max_only_with_a_count() {
    let p = Percentiles {
        min: 1.0,
        mean: 2.0,
        p50: 2.0,
        p75: f64::NAN,
        p90: 3.0,
        p95: f64::NAN,
        p99: 4.0,
        p999: f64::NAN,
        max: 9.0,
    };
    let xs = |v: Vec<(f64, f64)>| v.iter().map(|&(x, _)| x.round()).collect::<Vec<_>>();
    // SMP summary only: min, p50, p90, p99 (exactly at the edge), no max.
    assert_eq!(
        xs(percentile_points(&p, 100.0, None)),
        [1.0, 2.0, 10.0, 100.0]
    );
    // 5000 samples: the max at 1 − 1/5000.
    let v = percentile_points(&p, x_cap(5000), Some(5000));
    assert_eq!(v.last(), Some(&(5000.0, 9.0)));
}

#[test]
fn number_formats() {
    assert_eq!(count(0), "0");
    assert_eq!(count(1_234_567), "1,234,567");
    assert_eq!(ms(0.4204), "0.420 ms");
    assert_eq!(signed_ms(0.42), "+0.420 ms");
    assert_eq!(signed_ms(-1.5), "−1.500 ms");
    assert_eq!(ms(f64::NAN), "—");
    assert_eq!(bytes(1_500_000), "1.4 MiB");
}

#[test]
fn breakdown_lists_tcp_round_trip_estimates_as_estimates() {
    let mut set = populated_set();
    let d = set.details.as_mut().unwrap();
    let mut e = crate::aggregate::path::RttEstimates::default();
    for us in [90u64, 100, 110] {
        e.srtt.saturating_record(us * 1_000);
        e.rttvar.saturating_record(us * 250);
        e.min_rtt.saturating_record(40_000);
    }
    e.unknown = 2;
    d.breakdown.as_mut().unwrap().rtt_estimates = vec![crate::report::breakdown::rtt_estimate(
        "<gw>".into(),
        crate::aggregate::path::Peer::NotOnNode,
        &e,
    )
    .unwrap()];
    let page = render(&set).unwrap();
    let s = section(&page, "breakdown");
    assert!(s.contains("id=\"breakdown-rtt-table\""), "{s}");
    assert!(s.contains("&lt;gw&gt;") && !s.contains("<gw>"));
    assert!(s.contains("not a traced proxy of this node"));
    assert!(s.contains("<em>estimate</em>"));
    // Without estimates, no table.
    let page = render(&populated_set()).unwrap();
    assert!(!page.contains("breakdown-rtt-table"));
}

/// The check's measured resolution is shown beside its tolerance when `profile` measured it,
/// and nothing is said of it when it did not.
#[test]
fn the_consistency_section_names_the_measured_wake_ups() {
    let mut set = populated_set();
    assert!(!render(&set).unwrap().contains("consistency-wake"));
    let d = set.details.as_mut().unwrap();
    let overhead = d.end_to_end.overhead.unwrap().p50;
    d.consistency = Some(ConsistencyCheck::compute(
        &d.hops, overhead, 0.05, 0.25, 97.5,
    ));
    let page = render(&set).unwrap();
    assert!(
        page.contains("<p id=\"consistency-wake\">"),
        "no wake-up line"
    );
    assert!(page.contains(&ms(97.5)), "the measured round trip");
}
