//! The headline cards and the summary table: meshed, baseline and the overhead between them.

use std::fmt::Write as _;

use super::{
    format::*,
    page::{absent, card},
    side::Side,
};
use crate::report::{details::Percentiles, ResultSet};

/// Headline figures.
pub(super) fn cards(page: &mut String, set: &ResultSet, meshed: &Side, baseline: Option<&Side>) {
    page.push_str("<div class=\"cards\" id=\"headline\">\n");
    let rel = |o: f64, b: f64| {
        if b > 0.0 && o.is_finite() {
            format!("{:+.1} % vs baseline", o / b * 100.0)
        } else {
            String::new()
        }
    };
    match (meshed.pct, baseline.and_then(|b| b.pct)) {
        (Some(m), Some(b)) => {
            card(
                page,
                "p50 overhead",
                &signed_ms(m.p50 - b.p50),
                &rel(m.p50 - b.p50, b.p50),
            );
            card(
                page,
                "p99 overhead",
                &signed_ms(m.p99 - b.p99),
                &rel(m.p99 - b.p99, b.p99),
            );
        }
        (Some(m), None) => {
            card(page, "meshed p50", &ms(m.p50), "no baseline run");
            card(page, "meshed p99", &ms(m.p99), "no baseline run");
        }
        _ => card(page, "latency", "—", "not recorded"),
    }
    card(
        page,
        "achieved rate",
        &format!("{} req/s", num(meshed.actual_qps, 1)),
        &requested_rate(set),
    );
    let sidecars = set
        .details
        .as_ref()
        .map(|d| d.sidecars.as_slice())
        .unwrap_or_default();
    if !sidecars.is_empty() {
        let mcores: f64 = sidecars.iter().map(|s| s.cpu_mcores).sum();
        let us: f64 = sidecars.iter().map(|s| s.cpu_us_per_request).sum();
        card(
            page,
            "sidecar CPU",
            &format!("{} mcores", num(mcores, 0)),
            &format!(
                "{} sidecars · {} CPU-µs per request on the path",
                sidecars.len(),
                num(us, 1)
            ),
        );
    } else if let Some(s) = &set.mesh_config.sidecar {
        card(
            page,
            "sidecar CPU",
            &format!("{} mcores", s.cpu_mcores),
            &format!("{} sidecars (SMP totals)", s.count),
        );
    }
    if let Some(c) = set.details.as_ref().and_then(|d| d.consistency.as_ref()) {
        card(
            page,
            "self-consistency",
            verdict_name(c.verdict),
            &format!(
                "Σ hop + wait p50 {} vs overhead {}",
                ms(c.sum_hop_p50_ms + c.sum_wait_p50_ms + c.sum_send_p50_ms),
                ms(c.overhead_p50_ms)
            ),
        );
    }
    page.push_str("</div>\n");
}

pub(super) fn requested_rate(set: &ResultSet) -> String {
    match set.test.test.clients.first() {
        Some(c) if c.rps > 0 => format!("requested {} req/s", count(c.rps.unsigned_abs())),
        Some(_) => "requested: as fast as possible".into(),
        None => "requested rate not recorded".into(),
    }
}

/// The summary table: meshed vs baseline vs overhead.
pub(super) fn summary(page: &mut String, set: &ResultSet, meshed: &Side, baseline: Option<&Side>) {
    page.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n");
    if baseline.is_none() && set.details.is_some() {
        absent(
            page,
            "no-baseline",
            "No baseline run (profile without --baseline-url): the overhead cannot be computed \
             from end-to-end latency; see the per-hop latency below.",
        );
    }
    page.push_str(if baseline.is_some() {
        "<table id=\"summary-table\">\n<thead><tr><th></th>"
    } else {
        "<table id=\"summary-table\" class=\"single\">\n<thead><tr><th></th>"
    });
    page.push_str("<th class=\"num\"><span class=\"key meshed\"></span>meshed</th>");
    if baseline.is_some() {
        page.push_str(
            "<th class=\"num\"><span class=\"key baseline\"></span>baseline</th>\
             <th class=\"num\">overhead<br><small>meshed − baseline</small></th>",
        );
    }
    page.push_str("</tr></thead>\n<tbody>\n");
    let cols = if baseline.is_some() { 3 } else { 1 };
    let row = |page: &mut String, name: &str, m: String, b: Option<String>, o: Option<String>| {
        let _ = write!(
            page,
            "<tr><th>{}</th><td class=\"num\">{}</td>",
            escape(name),
            m
        );
        if cols == 3 {
            let _ = write!(
                page,
                "<td class=\"num\">{}</td><td class=\"num\">{}</td>",
                b.unwrap_or_default(),
                o.unwrap_or_default()
            );
        }
        page.push_str("</tr>\n");
    };
    let url = |s: &Side| format!("<span class=\"url\">{}</span>", escape(or_dash(&s.url)));
    row(page, "URL", url(meshed), baseline.map(url), None);
    let rate = match set.test.test.clients.first() {
        Some(c) if c.rps > 0 => format!("{} req/s", count(c.rps.unsigned_abs())),
        Some(_) => "max".into(),
        None => "—".into(),
    };
    row(
        page,
        "requested rate",
        rate.clone(),
        baseline.map(|_| rate.clone()),
        None,
    );
    let qps = |s: &Side| format!("{} req/s", num(s.actual_qps, 1));
    row(
        page,
        "achieved rate",
        qps(meshed),
        baseline.map(qps),
        baseline.map(|b| format!("{:+.1} req/s", meshed.actual_qps - b.actual_qps)),
    );
    let n = |v: Option<u64>| v.map(count).unwrap_or_else(|| "—".into());
    row(
        page,
        "requests measured",
        n(meshed.count),
        baseline.map(|b| n(b.count)),
        None,
    );
    row(
        page,
        "errors",
        n(meshed.errors),
        baseline.map(|b| n(b.errors)),
        None,
    );
    /// A row of the table: its name and how to get it.
    type Stat = (&'static str, fn(&Percentiles) -> f64);
    let stats: [Stat; 9] = [
        ("min", |p| p.min),
        ("mean", |p| p.mean),
        ("p50", |p| p.p50),
        ("p75", |p| p.p75),
        ("p90", |p| p.p90),
        ("p95", |p| p.p95),
        ("p99", |p| p.p99),
        ("p99.9", |p| p.p999),
        ("max", |p| p.max),
    ];
    for (name, get) in stats {
        let m = meshed.pct.as_ref().map_or(f64::NAN, get);
        let b = baseline.map(|b| b.pct.as_ref().map_or(f64::NAN, get));
        if !m.is_finite() && b.is_none_or(|b| !b.is_finite()) {
            continue;
        }
        let o = b.map(|b| {
            let d = m - b;
            if d.is_finite() && b > 0.0 {
                format!("{} ({:+.1} %)", signed_ms(d), d / b * 100.0)
            } else {
                signed_ms(d)
            }
        });
        row(page, &format!("latency {name}"), ms(m), b.map(ms), o);
    }
    page.push_str("</tbody>\n</table>\n");
    if meshed.pct.is_none() {
        absent(page, "no-latency", "No end-to-end latency was recorded.");
    }
    page.push_str("</section>\n");
}
