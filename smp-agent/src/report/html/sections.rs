//! The sections after the summary: latency percentiles, per-hop latency, sidecar usage,
//! losses, the self-consistency check, and the run and machine.

use std::{collections::BTreeMap, fmt::Write as _};

use hdrhistogram::Histogram;
use plotters::prelude::*;

use super::{
    format::*,
    page::{absent, generator, mesh_name},
    plots::*,
    side::Side,
    HtmlError,
};
use crate::report::{
    details::{ConsistencyVerdict, DataPlane, Details},
    smp, ResultSet,
};

pub(super) fn latency(
    page: &mut String,
    meshed: &Side,
    baseline: Option<&Side>,
) -> Result<(), HtmlError> {
    page.push_str("<section id=\"latency\">\n<h2>Latency percentiles</h2>\n");
    let samples = [Some(meshed), baseline]
        .into_iter()
        .flatten()
        .filter_map(|s| s.histogram.as_ref().map(Histogram::len).or(s.count))
        .max()
        .unwrap_or(0);
    let cap = x_cap(samples);
    let curve = |s: &Side, label, color| {
        if let Some(h) = &s.histogram {
            Some(Curve {
                label,
                color,
                points: histogram_curve(h, cap),
                markers: false,
            })
        } else {
            s.pct.as_ref().map(|p| Curve {
                label,
                color,
                points: percentile_points(p, cap, s.count),
                markers: true,
            })
        }
    };
    let curves: Vec<Curve> = [
        curve(meshed, "meshed", MESHED),
        baseline.and_then(|b| curve(b, "baseline", BASELINE)),
    ]
    .into_iter()
    .flatten()
    .filter(|c| !c.points.is_empty())
    .collect();
    if curves.is_empty() {
        absent(page, "latency-absent", "No latency distribution to plot.");
        page.push_str("</section>\n");
        return Ok(());
    }
    let from_histograms = curves.iter().all(|c| !c.markers);
    let caption = format!(
        "End-to-end latency by percentile, {} (HdrHistogram percentile axis: each step right is \
         ten times rarer). {}",
        if baseline.is_some() {
            "meshed vs baseline"
        } else {
            "meshed only, no baseline run"
        },
        if from_histograms {
            "Drawn from the full latency histograms."
        } else {
            "Drawn through the recorded percentiles (no histogram)."
        }
    );
    let y_max = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_max = if y_max > 0.0 && y_max.is_finite() {
        y_max * 1.08
    } else {
        1.0
    };
    let decades = cap.log10().round() as i32;
    // 0 %, 50 % (the median), 90 %, 99 %, 99.9 % …
    let mut ticks: Vec<f64> = (0..=decades).map(|k| 10f64.powi(k)).collect();
    ticks.insert(1, 2.0);
    figure(page, "latency-curve", (1040, 480), &caption, &[], |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(16)
            .margin_right(28)
            .x_label_area_size(54)
            .y_label_area_size(78)
            .build_cartesian_2d(
                (1f64..cap).log_scale().with_key_points(ticks.clone()),
                0f64..y_max,
            )?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| num(*y, axis_decimals(y_max)))
            .y_labels(8)
            .label_style((FONT, 17))
            .axis_desc_style((FONT, 18))
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(0xd0, 0xd0, 0xd0))
            .draw()?;
        for c in &curves {
            let color = c.color;
            chart
                .draw_series(LineSeries::new(
                    c.points.iter().copied(),
                    color.stroke_width(2),
                ))?
                .label(c.label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
                });
            if c.markers {
                chart.draw_series(c.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 18))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(0xb0, 0xb0, 0xb0))
            .draw()
    })?;
    page.push_str("</section>\n");
    Ok(())
}

pub(super) fn hops(page: &mut String, d: &Details) -> Result<(), HtmlError> {
    page.push_str("<section id=\"hops\">\n<h2>Per-hop latency</h2>\n");
    if d.hops.is_empty() {
        absent(
            page,
            "hops-absent",
            "No hops were measured (no proxy on the path was traced).",
        );
        page.push_str("</section>\n");
        return Ok(());
    }
    page.push_str(
        "<p>Time a message spends inside each proxy: from the proxy's read of its first bytes \
         to the write that forwards them (t<sub>out</sub> − t<sub>in</sub>, measured in the \
         kernel).</p>\n",
    );
    let rows: Vec<String> = d
        .hops
        .iter()
        .map(|h| {
            format!(
                "{} · {} {}",
                h.proxy,
                direction_name(h.direction),
                leg_name(h.leg)
            )
        })
        .collect();
    let height = (90 + 62 * d.hops.len() as u32).clamp(240, 1400);
    let series = [
        Bars {
            label: "p50",
            color: P50,
            values: d.hops.iter().map(|h| h.latency.percentiles.p50).collect(),
        },
        Bars {
            label: "p99",
            color: P99,
            values: d.hops.iter().map(|h| h.latency.percentiles.p99).collect(),
        },
    ];
    figure(
        page,
        "hop-breakdown",
        (1040, height),
        "Latency added by each hop (proxy · direction leg): median and 99th percentile, ms.",
        &legend(&series),
        |root| hbars(root, "", "hop latency (ms)", &rows, &series, ms),
    )?;
    page.push_str(
        "<div class=\"wide\"><table id=\"hops-table\">\n<thead><tr><th>proxy</th><th>kind</th><th class=\"num\">pid</th>\
         <th>direction</th><th>leg</th><th>sides</th><th class=\"num\">messages</th><th class=\"num\">p50</th>\
         <th class=\"num\">p90</th><th class=\"num\">p99</th><th class=\"num\">p99.9</th>\
         <th class=\"num\">max</th><th class=\"num\">unpaired</th></tr></thead>\n<tbody>\n",
    );
    for h in &d.hops {
        let p = &h.latency.percentiles;
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            escape(&h.proxy),
            escape(or_dash(&h.kind)),
            pid_text(h.pid),
            direction_name(h.direction),
            leg_name(h.leg),
            escape(or_dash(&h.sides_label())),
            count(h.latency.count),
            ms(p.p50),
            ms(p.p90),
            ms(p.p99),
            ms(p.p999),
            ms(p.max),
            count(h.unpaired),
        );
    }
    let sum50: f64 = d.hops.iter().map(|h| h.latency.percentiles.p50).sum();
    let _ = writeln!(
        page,
        "</tbody>\n<tfoot><tr><th colspan=\"7\">Σ hop medians</th><td class=\"num\">{}</td>\
         <td colspan=\"5\"></td></tr></tfoot>\n</table></div>",
        ms(sum50)
    );
    page.push_str(
        "<p>Sides: what the proxy's downstream → upstream spoke in the hop's exchanges, as the \
         kernel saw the bytes: <code>http1</code> (plaintext, one message at a time), \
         <code>h2c</code> (plaintext HTTP/2, paired stream by stream), <code>tls</code> \
         (encrypted, paired by record alternation).</p>\n",
    );
    directions(page, d);
    page.push_str("</section>\n");
    Ok(())
}

/// Each proxy's class (outbound, inbound, gateway) with the reason for it, once per proxy and
/// class: a proxy classed as neither sidecar direction is shown, and says why.
/// What a reader of an ambient run must know to read its hops and resources.
const AMBIENT_NOTE: &str = "<p id=\"data-plane\"><b>Istio ambient data plane.</b> The \
    proxies here are ztunnel, Istio's ambient-mode proxy, not sidecars: it carries each pod's \
    connections as HTTP/2 CONNECT streams over mutual TLS (HBONE, port 15008) to the \
    destination pod's ztunnel, one per node (or one per pod in its dedicated mode). It works \
    at L4 and never parses HTTP, so its hops are the time a request's bytes and a response's \
    bytes spend inside it, found from the HTTP/1.1 its pod-facing sides carry; the HBONE side \
    is paired by TLS record alternation, which holds while the streams between two pods seldom \
    overlap (the share paired is in the losses below). Its CPU and memory are the whole \
    ztunnel's, for every workload it serves; a ztunnel that served several pods has its hops \
    and a share of its CPU per pod in the table below.</p>\n";

/// A node proxy's work per pod served ([`Details::workloads`]): hops and apportioned CPU.
fn workloads(page: &mut String, d: &Details) {
    if d.workloads.is_empty() {
        return;
    }
    page.push_str(
        "<p>Per pod a node proxy served (by the pod's address; the name when the run knew \
         it): outbound rows are the pod's own requests leaving through the proxy, inbound rows \
         the requests reaching it. The proxy's CPU is apportioned to the rows by their share \
         of its exchanges, its memory by their share of its connections (a proxy holds \
         buffers per connection), so a proxy's rows add up to its CPU and memory above.</p>\n\
         <div class=\"wide\"><table id=\"workloads-table\">\n<thead><tr><th>proxy</th>\
         <th>pod</th><th>address</th><th>direction</th><th>peer</th>\
         <th class=\"num\">exchanges</th><th class=\"num\">request hop p50 (ms)</th>\
         <th class=\"num\">request hop p99 (ms)</th><th class=\"num\">response hop p50 (ms)</th>\
         <th class=\"num\">response hop p99 (ms)</th><th class=\"num\">CPU share (mcores)</th>\
         <th class=\"num\">connections</th><th class=\"num\">memory share (MB)</th>\
         </tr></thead>\n<tbody>\n",
    );
    for w in &d.workloads {
        let (q, r) = (&w.request_hop.percentiles, &w.response_hop.percentiles);
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            escape(&w.proxy),
            escape(&w.workload),
            escape(&w.address),
            direction_name(w.direction),
            escape(&w.peer),
            count(w.exchanges),
            num(q.p50, 3),
            num(q.p99, 3),
            num(r.p50, 3),
            num(r.p99, 3),
            num(w.cpu_mcores, 1),
            count(w.connections),
            num(w.mem_mb, 1),
        );
    }
    page.push_str("</tbody>\n</table></div>\n");
}

fn directions(page: &mut String, d: &Details) {
    let mut told = std::collections::BTreeSet::new();
    let mut items = String::new();
    for h in &d.hops {
        if h.direction_reason.is_empty() || !told.insert((h.proxy.as_str(), h.direction)) {
            continue;
        }
        let _ = writeln!(
            items,
            "<li><b>{}</b> is classed <b>{}</b>: {}</li>",
            escape(&h.proxy),
            direction_name(h.direction),
            escape(&h.direction_reason)
        );
    }
    if !items.is_empty() {
        let _ = writeln!(
            page,
            "<p>Why each proxy has its direction (from the addresses its exchanges used):</p>\n\
             <ul id=\"hop-directions\">\n{items}</ul>"
        );
    }
}

pub(super) fn sidecars(page: &mut String, set: &ResultSet, d: &Details) -> Result<(), HtmlError> {
    page.push_str("<section id=\"sidecars\">\n<h2>Sidecar resources</h2>\n");
    if d.data_plane == DataPlane::Ambient {
        page.push_str(AMBIENT_NOTE);
    }
    if d.sidecars.is_empty() {
        absent(
            page,
            "sidecars-absent",
            "No sidecar resource usage was recorded.",
        );
    } else {
        let rows: Vec<String> = d.sidecars.iter().map(|s| s.proxy.clone()).collect();
        let height = (110 + 58 * d.sidecars.len() as u32).clamp(260, 1000);
        let cpu = [Bars {
            label: "CPU, mean over the run",
            color: CPU,
            values: d.sidecars.iter().map(|s| s.cpu_mcores).collect(),
        }];
        let mut mem = vec![Bars {
            label: "memory, mean",
            color: MEM,
            values: d.sidecars.iter().map(|s| s.mem_mb).collect(),
        }];
        if d.sidecars.iter().any(|s| s.mem_peak_mb > 0.0) {
            mem.push(Bars {
                label: "memory, peak",
                color: MEM_PEAK,
                values: d.sidecars.iter().map(|s| s.mem_peak_mb).collect(),
            });
        }
        let mut keys = legend(&cpu);
        keys.extend(legend(&mem));
        figure(
            page,
            "sidecar-usage",
            (1040, height),
            "CPU (millicores; 1000 = one core busy) and memory (MB) of each sidecar.",
            &keys,
            |root| {
                let (left, right) = root.split_horizontally(520);
                hbars(&left, "CPU", "CPU (millicores)", &rows, &cpu, |v| {
                    format!("{} mcores", num(v, 1))
                })?;
                hbars(&right, "Memory", "memory (MB)", &rows, &mem, |v| {
                    format!("{} MB", num(v, 1))
                })
            },
        )?;
        page.push_str(
            "<div class=\"wide\"><table id=\"sidecars-table\">\n<thead><tr><th>proxy</th><th>kind</th>\
             <th class=\"num\">pid</th><th class=\"num\">CPU (mcores)</th>\
             <th class=\"num\">CPU time (s)</th><th class=\"num\">CPU µs / request</th>\
             <th class=\"num\">vCPU per 1000 rps</th><th class=\"num\">mem mean (MB)</th>\
             <th class=\"num\">mem peak (MB)</th><th class=\"num\">requests</th>\
             <th class=\"num\">bytes</th></tr></thead>\n<tbody>\n",
        );
        for s in &d.sidecars {
            let _ = writeln!(
                page,
                "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
                 <td class=\"num\">{}</td></tr>",
                escape(&s.proxy),
                escape(or_dash(&s.kind)),
                pid_text(s.pid),
                num(s.cpu_mcores, 1),
                num(s.cpu_seconds, 3),
                num(s.cpu_us_per_request, 1),
                num(s.vcpu_per_1000_rps, 3),
                num(s.mem_mb, 1),
                if s.mem_peak_mb > 0.0 {
                    num(s.mem_peak_mb, 1)
                } else {
                    "—".into()
                },
                count(s.requests),
                bytes(s.bytes),
            );
        }
        page.push_str("</tbody>\n</table></div>\n");
        workloads(page, d);
    }
    if let Some(s) = &set.mesh_config.sidecar {
        let _ = writeln!(
            page,
            "<p id=\"sidecar-totals\">SMP totals (<code>ServiceMeshConfig.sidecar</code>): \
             {} sidecars, {} mcores, {} MB, {} req/s, {}/s.</p>",
            s.count,
            s.cpu_mcores,
            s.mem_mb,
            count(s.rps.max(0).unsigned_abs().into()),
            bytes(s.bps.max(0).unsigned_abs().into())
        );
    }
    page.push_str("</section>\n");
    Ok(())
}

pub(super) fn losses(page: &mut String, d: &Details, meshed: &Side, baseline: Option<&Side>) {
    let l = &d.losses;
    page.push_str("<section id=\"losses\">\n<h2>Losses</h2>\n<p>What was seen but not measured. A result with losses is still valid; large losses bias the hop figures.</p>\n");
    let seen = l.paired + l.unpaired;
    let share = if seen > 0 {
        format!("{:.3} %", l.unpaired as f64 / seen as f64 * 100.0)
    } else {
        "—".into()
    };
    // "reason count, …" of a count per reason, escaped; `None` when there is none.
    let by_reason = |m: &BTreeMap<String, u64>| {
        (!m.is_empty()).then(|| {
            m.iter()
                .map(|(r, n)| format!("{} {}", escape(r), count(*n)))
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    let reasons = by_reason(&l.unpaired_reasons)
        .map(|r| format!("; by reason: {r}"))
        .unwrap_or_default();
    let lost = by_reason(&l.events_lost).unwrap_or_else(|| "none".into());
    let left_out = by_reason(&l.exchanges_left_out).unwrap_or_else(|| "none".into());
    let _ = writeln!(
        page,
        "<table id=\"losses-table\" class=\"kv\">\n<tbody>\n\
         <tr><th>ring-buffer drops</th><td class=\"num\">{}</td></tr>\n\
         <tr><th>map-full events</th><td class=\"num\">{}</td></tr>\n\
         <tr><th>probe losses by reason</th><td class=\"num\">{lost}</td></tr>\n\
         <tr><th>exchanges left out of the hops</th><td class=\"num\">{left_out}</td></tr>\n\
         <tr><th>hops paired</th><td class=\"num\">{}</td></tr>\n\
         <tr><th>messages unpaired</th><td class=\"num\">{} ({share} of seen){reasons}</td></tr>\n\
         <tr><th>load errors, meshed</th><td class=\"num\">{}</td></tr>\n\
         <tr><th>load errors, baseline</th><td class=\"num\">{}</td></tr>\n\
         </tbody>\n</table>",
        count(l.ringbuf_drops),
        count(l.map_full),
        count(l.paired),
        count(l.unpaired),
        meshed.errors.map_or_else(|| "—".into(), count),
        baseline
            .and_then(|b| b.errors)
            .map_or_else(|| "no baseline run".into(), count),
    );
    page.push_str("</section>\n");
}

pub(super) fn consistency(page: &mut String, d: &Details) {
    page.push_str("<section id=\"consistency\">\n<h2>Self-consistency check</h2>\n");
    let Some(c) = &d.consistency else {
        absent(
            page,
            "consistency-absent",
            "Not computed: it needs a baseline run and measured hops.",
        );
        page.push_str("</section>\n");
        return;
    };
    let v = verdict_name(c.verdict);
    let _ = writeln!(
        page,
        "<p>Do the per-hop medians (time inside each proxy, plus the time each message waited \
         in the proxy's socket before the proxy read it, and inside the write that forwarded it) explain the measured end-to-end \
         overhead? <span class=\"verdict {v}\">{v}</span></p>\n\
         <table id=\"consistency-table\" class=\"kv\">\n<tbody>\n\
         <tr><th>Σ hop p50</th><td class=\"num\">{}</td></tr>\n\
         <tr><th>Σ wait p50</th><td class=\"num\">{}</td></tr>\n\
         <tr><th>Σ send p50</th><td class=\"num\">{}</td></tr>\n\
         <tr><th>overhead p50 (meshed − baseline)</th><td class=\"num\">{}</td></tr>\n\
         <tr><th>difference</th><td class=\"num\">{}</td></tr>\n\
         <tr><th>tolerance</th><td class=\"num\">± {}</td></tr>\n\
         </tbody>\n</table>",
        ms(c.sum_hop_p50_ms),
        ms(c.sum_wait_p50_ms),
        ms(c.sum_send_p50_ms),
        ms(c.overhead_p50_ms),
        signed_ms(c.difference_ms),
        ms(c.tolerance_ms),
    );
    if c.ends_wake_ms > 0.0 {
        let _ = writeln!(
            page,
            "<p id=\"consistency-wake\">The tolerance is at least two wake-ups of a task on an \
             idle CPU, measured on this machine before the runs: {}. A meshed request's client \
             and app are woken by the sidecars, often on another CPU, which no proxy's socket \
             holds: the check cannot resolve a smaller difference.</p>",
            ms(c.ends_wake_ms)
        );
    }
    if c.verdict == ConsistencyVerdict::Inconsistent {
        page.push_str(
            "<p class=\"warn\">The hops do not explain the overhead: hops may be missing, \
             pairing may be wrong, or the overhead lies outside the proxies (extra network \
             hops, redirection).</p>\n",
        );
    }
    page.push_str(
        "<p>Medians do not add exactly (the median of a sum is not the sum of medians), hence \
         the tolerance.</p>\n</section>\n",
    );
}

pub(super) fn environment(page: &mut String, set: &ResultSet) {
    page.push_str("<section id=\"environment\">\n<h2>Run and environment</h2>\n<table id=\"environment-table\" class=\"kv\">\n<tbody>\n");
    let mut kv = |k: &str, v: &str| {
        if !v.is_empty() {
            let _ = writeln!(
                page,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(k),
                escape(v)
            );
        }
    };
    let tool = set.details.as_ref().map(|d| &d.tool);
    let measured_by = set
        .result
        .labels
        .get(smp::GENERATOR_LABEL)
        .cloned()
        .unwrap_or_default();
    kv(
        "tool",
        &tool
            .map(|t| format!("{} {}", t.name, t.version))
            .filter(|s| !s.trim().is_empty())
            .unwrap_or(measured_by),
    );
    kv("report written by", &generator());
    let kernel = tool
        .map(|t| t.kernel.clone())
        .filter(|k| !k.is_empty())
        .or_else(|| set.environment.labels.get("kernel").cloned())
        .unwrap_or_default();
    kv("kernel", or_dash(&kernel));
    kv(
        "host",
        &tool.map(|t| t.hostname.clone()).unwrap_or_default(),
    );
    kv(
        "architecture",
        set.environment
            .labels
            .get("arch")
            .map(String::as_str)
            .unwrap_or_default(),
    );
    for (i, n) in set.environment.nodes.iter().enumerate() {
        kv(
            &format!("node {i}"),
            &format!(
                "{} · {} cores · {} MB",
                or_dash(&n.r#type),
                n.cores,
                n.mem_mb
            ),
        );
    }
    kv("Kubernetes", &set.environment.kubernetes_version);
    kv("mesh", &mesh_name(set));
    kv(
        "mTLS between sidecars",
        if set.mesh_config.mtls_enabled {
            "yes"
        } else {
            "no"
        },
    );
    kv("proxy build", &set.mesh_config.proxy_build);
    if set.mesh_config.proxy_concurrency > 0 {
        kv(
            "proxy worker threads",
            &set.mesh_config.proxy_concurrency.to_string(),
        );
    }
    if let Some(c) = set.test.test.clients.first() {
        kv("load generator", &c.load_generator);
        let proto = c.protocol.proto_name();
        kv("protocol", proto.strip_prefix("PROTOCOL_").unwrap_or(proto));
        if c.connections > 0 {
            kv("connections", &c.connections.to_string());
        }
        kv("endpoint URLs", &c.endpoint_urls.join(" "));
    }
    if let Some(c) = set.test.test.clients.first() {
        kv(
            "requested rate",
            &if c.rps > 0 {
                format!("{} req/s", count(c.rps.unsigned_abs()))
            } else {
                "as fast as possible".into()
            },
        );
    }
    if let Some(d) = &set.test.test.duration {
        kv("duration", d.as_str());
    }
    if let (Some(a), Some(b)) = (set.result.start_time, set.result.end_time) {
        kv("measured window", &format!("{a} → {b}"));
    }
    kv("result id", &set.result.id);
    kv("test id", &set.test.test.id);
    kv("mesh config id", &set.mesh_config.id);
    kv("environment id", &set.environment.id);
    page.push_str("</tbody>\n</table>\n</section>\n");
}
