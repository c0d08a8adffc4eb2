//! The exposition passes `promtool check metrics` (Prometheus' own linter: naming, units,
//! `_total` on counters, help texts, histogram shape), both built in-process and as served
//! over HTTP by the metrics server.

use std::time::Duration;

use smp_agent::metrics::{synthetic::SyntheticNode, Format, MetricsOptions, NodeMetrics};
use smp_tests::{
    prometheus::{http_get_with, promtool_check_metrics},
    require_tool, Workload,
};

const INSTALL: &str = "cargo xtask setup, or apt-get install prometheus";

#[test]
fn promtool_check_metrics_passes_on_a_populated_exposition() {
    let Some(promtool) = require_tool(
        "promtool",
        "promtool_check_metrics_passes_on_a_populated_exposition",
        INSTALL,
    ) else {
        return;
    };
    let m = NodeMetrics::new(MetricsOptions::default());
    let mut node = SyntheticNode::new();
    for i in 1..=30u64 {
        let t = Duration::from_millis(100 * i);
        if i == 15 {
            node.restart(0);
        }
        m.update(&node.tick(t));
    }
    let text = m.encode(Format::PrometheusText);
    assert!(text.contains("smp_hop_duration_seconds_bucket"));
    assert!(text.contains("smp_proxy_restarts_total"));
    promtool_check_metrics(&promtool, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
}

#[test]
fn promtool_check_metrics_passes_on_what_the_server_serves() {
    let Some(promtool) = require_tool(
        "promtool",
        "promtool_check_metrics_passes_on_what_the_server_serves",
        INSTALL,
    ) else {
        return;
    };
    let (feeder, ready) = Workload::spawn(env!("CARGO_BIN_EXE_metrics_feeder"), &[]);
    let addr: std::net::SocketAddr = smp_tests::values_after(&ready, "ready")[0];
    std::thread::sleep(Duration::from_millis(500));
    let (status, head, text) = http_get_with(addr, "/metrics", &[]).expect("scrape");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    promtool_check_metrics(&promtool, &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let (status, head, om) = http_get_with(
        addr,
        "/metrics",
        &[("Accept", "application/openmetrics-text; version=1.0.0")],
    )
    .expect("scrape OpenMetrics");
    assert_eq!(status, 200);
    assert!(
        head.contains("application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n"));
    feeder.finish();
}
