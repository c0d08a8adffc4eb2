//! Unit tests of the page: every part present for a full set, what is missing said, escaping,
//! the percentile axis and the number formats.

use super::{format::*, plots::*, *};
use crate::report::{
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
    d.consistency = Some(ConsistencyCheck::compute(&d.hops, overhead, 0.05, 0.25));
    set.link();
    set
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
