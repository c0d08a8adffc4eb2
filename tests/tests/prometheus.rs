//! A real Prometheus scrapes the metrics server fed with a synthetic node of known inputs
//! (tests/src/bin/metrics_feeder.rs: hop latencies, CPU rates, request rates, one proxy
//! restart), and what its HTTP API computes matches the inputs: `histogram_quantile` over our
//! hop buckets within the bucket holding the true quantile, `rate()` of proxy CPU within 10 %,
//! counters without resets across the proxy restart. Then every query of the Grafana dashboard
//! runs against the same Prometheus and returns data.
//!
//! Needs Debian's `prometheus` (`cargo xtask setup`); skips without it, fails under CI=true.

use std::time::Duration;

use smp_agent::{
    aggregate::hops::{Direction, Leg},
    metrics::synthetic::{bucket_around_quantile, SyntheticNode},
};
use smp_tests::{
    prometheus::{Prometheus, ScrapeTarget},
    repo_root, require_tool, Workload,
};

const INSTALL: &str = "cargo xtask setup, or apt-get install prometheus";
/// The rate window: ten scrapes at 1 s.
const WINDOW: &str = "10s";

fn within(value: f64, want: f64, tolerance: f64) -> bool {
    (value - want).abs() <= tolerance * want
}

fn assert_in_bucket(p: &Prometheus, expr: &str, (lo, hi): (f64, f64)) -> f64 {
    let v = p.query_one(expr);
    assert!(
        v > lo && v <= hi,
        "{expr} = {v}: expected within the bucket ({lo}, {hi}]"
    );
    v
}

#[test]
fn prometheus_computes_known_quantiles_and_rates_from_our_exposition() {
    let test = "prometheus_computes_known_quantiles_and_rates_from_our_exposition";
    let Some(prometheus) = require_tool("prometheus", test, INSTALL) else {
        return;
    };
    let (feeder, ready) = Workload::spawn(
        env!("CARGO_BIN_EXE_metrics_feeder"),
        &["--period-ms", "100", "--restart-after-ms", "4000"],
    );
    let addr: std::net::SocketAddr = smp_tests::values_after(&ready, "ready")[0];
    let p = Prometheus::start(
        &prometheus,
        &[ScrapeTarget::new("smp-agent", addr)],
        Duration::from_secs(1),
    );

    // Twelve scrapes: the 10 s windows below are full, and the restart at 4 s is inside them.
    p.wait_for(
        "count_over_time(smp_agent_updates_total[1m])",
        Duration::from_secs(60),
        |r| r.first().is_some_and(|s| s.value >= 12.0),
    );
    let targets = p.targets();
    assert!(
        targets.iter().all(|(_, health, _)| health == "up"),
        "{targets:?}"
    );

    let node = SyntheticNode::new();
    // Median and p99 over every hop on the node (sum by le: how cluster-wide figures are made).
    let all = node.tick_latencies(None);
    let p50 = assert_in_bucket(
        &p,
        &format!("histogram_quantile(0.5, sum by (le) (rate(smp_hop_duration_seconds_bucket[{WINDOW}])))"),
        bucket_around_quantile(&all, 0.5),
    );
    let p99 = assert_in_bucket(
        &p,
        &format!("histogram_quantile(0.99, sum by (le) (rate(smp_hop_duration_seconds_bucket[{WINDOW}])))"),
        bucket_around_quantile(&all, 0.99),
    );
    // Per hop: the inbound request hop is 250 µs every time; the outbound request hop is
    // 70 % 120 µs and 30 % 1.5 ms.
    let inbound = node.tick_latencies(Some((Direction::Inbound, Leg::Request)));
    let inbound_p50 = assert_in_bucket(
        &p,
        &format!("histogram_quantile(0.5, sum by (le) (rate(smp_hop_duration_seconds_bucket{{direction=\"inbound\",leg=\"request\"}}[{WINDOW}])))"),
        bucket_around_quantile(&inbound, 0.5),
    );
    let outbound = node.tick_latencies(Some((Direction::Outbound, Leg::Request)));
    for q in [0.5, 0.9] {
        assert_in_bucket(
            &p,
            &format!("histogram_quantile({q}, sum by (le) (rate(smp_hop_duration_seconds_bucket{{direction=\"outbound\",leg=\"request\"}}[{WINDOW}])))"),
            bucket_around_quantile(&outbound, q),
        );
    }
    // Mean from _sum/_count is exact (not bucketed): 250 µs.
    let mean = p.query_one(&format!(
        "rate(smp_hop_duration_seconds_sum{{direction=\"inbound\",leg=\"request\"}}[{WINDOW}]) / rate(smp_hop_duration_seconds_count{{direction=\"inbound\",leg=\"request\"}}[{WINDOW}])"
    ));
    assert!(
        within(mean, 250e-6, 0.01),
        "mean inbound request hop {mean}"
    );

    // CPU rates per proxy, in cores; the productpage proxy restarted at 4 s and its counter
    // went on without a reset.
    for sp in &node.proxies {
        let pod = sp.pod.as_ref().map_or("", |p| p.name.as_str());
        let expr = format!(
            "rate(smp_proxy_cpu_seconds_total{{proxy=\"{}\",pod=\"{pod}\"}}[{WINDOW}])",
            sp.id.kind
        );
        let cores = p.query_one(&expr);
        assert!(
            within(cores, sp.cpu_cores, 0.10),
            "{expr} = {cores}, fed {} cores",
            sp.cpu_cores
        );
    }
    let resets = p
        .query("resets(smp_proxy_cpu_seconds_total[1m]) > 0")
        .unwrap();
    assert!(resets.is_empty(), "counter resets: {resets:?}");
    let restarts = p.query_one(&format!(
        "smp_proxy_restarts_total{{pod=\"{}\"}}",
        node.proxies[0].pod.as_ref().unwrap().name
    ));
    assert_eq!(restarts, 1.0);

    // Request rate: 20 + 20 + 10 requests per 100 ms tick.
    let rps = p.query_one(&format!("sum(rate(smp_proxy_requests_total[{WINDOW}]))"));
    assert!(within(rps, 500.0, 0.15), "requests/s {rps}");
    let lost = p.query_one(&format!(
        "rate(smp_events_lost_total{{reason=\"ringbuf_full\"}}[{WINDOW}])"
    ));
    assert!(within(lost, 10.0, 0.15), "lost/s {lost}");
    // Pod and namespace labels came through (honor_labels), the host proxy has none.
    let pods = p
        .query("count by (namespace, pod) (smp_proxy_resident_memory_bytes)")
        .unwrap();
    assert_eq!(pods.len(), 3, "{pods:?}");
    eprintln!("p50 {p50:.6} s, p99 {p99:.6} s, inbound request p50 {inbound_p50:.6} s");

    dashboard_queries_return_data(&p);
    feeder.finish();
}

/// Every `expr` of the Grafana dashboard, with its template variables filled in, is valid
/// PromQL and returns data from our exposition.
fn dashboard_queries_return_data(p: &Prometheus) {
    let path = repo_root().join("deploy/grafana/smp-agent.json");
    let text = std::fs::read_to_string(&path).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");
    for raw in exprs {
        let expr = raw
            .replace("$__rate_interval", WINDOW)
            .replace("$__interval", "1s")
            .replace("$namespace", ".*")
            .replace("$pod", ".*")
            .replace("$proxy", ".*")
            .replace("$direction", ".*")
            .replace("$leg", ".*")
            .replace("$node", ".*")
            .replace("$job", ".*")
            .replace("$quantile", "0.99");
        assert!(!expr.contains('$'), "unknown variable in {raw}");
        let r = p
            .query(&expr)
            .unwrap_or_else(|e| panic!("dashboard query {raw}: {e}"));
        assert!(
            r.iter().any(|s| s.value.is_finite()),
            "dashboard query returned no data: {expr} → {r:?}"
        );
    }
}

fn collect_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", serde_json::Value::String(s)) => out.push(s.clone()),
                    // Template variable queries: label_values(metric, label).
                    ("query", serde_json::Value::Object(q)) => {
                        if let Some(serde_json::Value::String(s)) = q.get("query") {
                            if let Some(inner) = s
                                .strip_prefix("label_values(")
                                .and_then(|r| r.strip_suffix(')'))
                            {
                                let metric = inner.rsplit_once(',').map_or(inner, |(m, _)| m);
                                out.push(format!("count({})", metric.trim()));
                            }
                        }
                    }
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
