//! Where the time goes: the per-request breakdown of the mesh's overhead (details.json
//! `breakdown`). One stacked bar per percentile (outbound sidecar, network leg, inbound
//! sidecar, unexplained), drawn in plain HTML and CSS on one scale for the three bars, the parts
//! in a table, then the join counts, the network legs between the sidecars and TCP's
//! round-trip estimates of their upstream connections.

use std::fmt::Write as _;

use super::{format::*, page::absent};
use crate::{
    aggregate::path::{Part, PathCounts, Peer, SAMPLES_CAP, WAITING_CAP},
    report::{
        breakdown::{Breakdown, BreakdownAt},
        details::Details,
    },
};

/// A segment narrower than this share of the scale (%) carries no text inside it (its value
/// is in the line under the bar).
const LABEL_MIN_PCT: f64 = 9.0;

pub(super) fn breakdown(page: &mut String, d: &Details) {
    page.push_str("<section id=\"breakdown\">\n<h2>Where the time goes</h2>\n");
    let Some(b) = &d.breakdown else {
        absent(
            page,
            "breakdown-absent",
            "No breakdown: no request was joined across two sidecars of this node. No traced \
             proxy's exchange faced another traced proxy here (the sidecars' peers are on other \
             nodes or were not traced, or no hop was kept), or the result was written by an \
             agent that does not record the breakdown.",
        );
        page.push_str("</section>\n");
        return;
    };
    explain(page);
    if b.at.is_empty() {
        absent(
            page,
            "breakdown-unjoined",
            "No bar: no request was joined across an outbound and an inbound sidecar of this \
             node. The join counts below say why.",
        );
    } else {
        bars(page, b);
        parts_table(page, &b.at);
    }
    counts(page, &b.paths);
    legs(page, b);
    estimates(page, b);
    page.push_str("</section>\n");
}

fn explain(page: &mut String) {
    page.push_str(
        "<p>The overhead is what the mesh adds to a request: meshed − baseline latency at the \
         same percentile. When a request passes an outbound sidecar and then an inbound \
         sidecar on this node, the agent joins what the two sidecars did with it and splits \
         its time in the mesh into parts:</p>\n<ul id=\"breakdown-places\">\n\
         <li><span class=\"key outbound\"></span><b>outbound sidecar</b> (beside the client): \
         <i>wait</i>, the request and the response lying in its sockets before it read them; \
         <i>hop</i>, its time inside the proxy for both; <i>send</i>, its write of the response \
         back to the client app.</li>\n\
         <li><span class=\"key network\"></span><b>network leg</b> between the sidecars: from \
         the outbound sidecar's write to the inbound sidecar's socket receiving the bytes \
         (<i>request</i>), and the same way back (<i>response</i>). Both sidecars run on this \
         node, so one kernel clock stamps both ends.</li>\n\
         <li><span class=\"key inbound\"></span><b>inbound sidecar</b> (beside the server): \
         <i>wait</i> and <i>hop</i> as above; <i>send</i>, its write of the request to the \
         server app.</li>\n\
         <li><span class=\"key unexplained\"></span><b>unexplained</b>: the part of the overhead \
         that none of these holds (overhead − the three above), known only with a baseline \
         run.</li>\n</ul>\n\
         <p>Requests are ranked by their time in the mesh. The bar at p90 shows the mean of \
         each part over the requests whose time in the mesh lies at the 90th percentile, not \
         the 90th percentile of each part, so the parts add up. The three bars share one scale; \
         the black mark is the measured overhead at that percentile.</p>\n",
    );
}

/// The positive value of a part, 0 when not a number.
fn part_len(v: f64) -> f64 {
    finite_or_zero(v).max(0.0)
}

/// The unexplained time when positive (a segment of the bar).
fn unexplained_len(a: &BreakdownAt) -> f64 {
    a.unexplained_ms.map_or(0.0, part_len)
}

/// How far a bar reaches: its segments, or the overhead mark when that lies beyond them.
fn extent(a: &BreakdownAt) -> f64 {
    let segments = part_len(a.outbound_ms)
        + part_len(a.network_ms)
        + part_len(a.inbound_ms)
        + unexplained_len(a);
    segments.max(a.overhead_ms.map_or(0.0, part_len))
}

fn bars(page: &mut String, b: &Breakdown) {
    let scale = b.at.iter().map(extent).fold(0.0f64, f64::max);
    let scale = if scale > 0.0 && scale.is_finite() {
        scale
    } else {
        1.0
    };
    page.push_str(
        "<div id=\"breakdown-legend\" class=\"legend\">\
         <span><span class=\"key outbound\"></span>outbound sidecar</span>\
         <span><span class=\"key network\"></span>network leg</span>\
         <span><span class=\"key inbound\"></span>inbound sidecar</span>\
         <span><span class=\"key unexplained\"></span>unexplained</span>\
         <span><span class=\"key overhead\"></span>overhead (meshed − baseline)</span></div>\n\
         <div id=\"breakdown-bars\" class=\"bars\">\n",
    );
    for a in &b.at {
        bar(page, a, scale);
    }
    let _ = writeln!(
        page,
        "<div class=\"bar-scale\"><span>0</span><span>{}</span></div>\n</div>",
        ms(scale)
    );
}

/// One stacked bar with its line of values.
fn bar(page: &mut String, a: &BreakdownAt, scale: f64) {
    let pct = escape(&a.percentile);
    let unexplained = unexplained_len(a);
    let mut segments = vec![
        ("outbound", part_len(a.outbound_ms)),
        ("network", part_len(a.network_ms)),
        ("inbound", part_len(a.inbound_ms)),
    ];
    if unexplained > 0.0 {
        segments.push(("unexplained", unexplained));
    }
    let values: Vec<String> = segments
        .iter()
        .map(|(name, v)| format!("{name} {}", ms(*v)))
        .collect();
    let _ = write!(
        page,
        "<div class=\"bar-row\" id=\"breakdown-{pct}\">\n<div class=\"pct\">{pct}</div>\n\
         <div class=\"track\" role=\"img\" aria-label=\"{pct}: {}\"><div class=\"stack\">",
        escape(&values.join(", "))
    );
    for (name, v) in &segments {
        let width = v / scale * 100.0;
        let inside = if width >= LABEL_MIN_PCT {
            ms(*v)
        } else {
            String::new()
        };
        let _ = write!(
            page,
            "<span class=\"seg {name}\" style=\"width:{width:.3}%\" title=\"{name}: {}\">{inside}</span>",
            ms(*v)
        );
    }
    page.push_str("</div>");
    if let Some(o) = a.overhead_ms.filter(|o| o.is_finite() && *o > 0.0) {
        let _ = write!(
            page,
            "<span class=\"mark\" style=\"left:{:.3}%\" title=\"overhead at {pct}: {}\"></span>",
            o / scale * 100.0,
            ms(o)
        );
    }
    page.push_str("</div>\n<div class=\"parts\">");
    let shown: Vec<String> = segments
        .iter()
        .map(|(name, v)| format!("<span class=\"key {name}\"></span>{name} {}", ms(*v)))
        .collect();
    page.push_str(&shown.join(" + "));
    match (a.overhead_ms, a.unexplained_ms) {
        (Some(o), Some(u)) if u < 0.0 => {
            let _ = write!(
                page,
                " = {} in the mesh. <span class=\"warn\">The parts exceed the measured overhead \
                 ({}) by {}.</span>",
                ms(a.in_mesh_ms),
                ms(o),
                ms(-u)
            );
        }
        (Some(o), _) => {
            let _ = write!(page, " = overhead {}", ms(o));
            if let Some(e) = a.explained() {
                let _ = write!(page, " ({} % in the parts)", num(100.0 * e, 0));
            }
            page.push('.');
        }
        (None, _) => {
            let _ = write!(
                page,
                " = {} in the mesh. No baseline run: the overhead and its unexplained part are \
                 unknown.",
                ms(a.in_mesh_ms)
            );
        }
    }
    let _ = writeln!(
        page,
        " Mean of {} requests; largest: {}.</div>\n</div>",
        count(a.paths as u64),
        escape(&a.largest)
    );
}

/// The parts of each bar, one row per percentile (ms, without the unit in each cell).
fn parts_table(page: &mut String, at: &[BreakdownAt]) {
    page.push_str(
        "<div class=\"wide\"><table id=\"breakdown-table\">\n<thead>\
         <tr><th rowspan=\"2\">percentile<br><small>all in ms</small></th>\
         <th colspan=\"3\">outbound sidecar</th><th colspan=\"2\">network leg</th>\
         <th colspan=\"3\">inbound sidecar</th><th class=\"num\" rowspan=\"2\">in the mesh</th>\
         <th class=\"num\" rowspan=\"2\">overhead</th><th class=\"num\" rowspan=\"2\">unexplained</th>\
         <th class=\"num\" rowspan=\"2\">requests</th></tr>\n\
         <tr><th class=\"num\">wait</th><th class=\"num\">hop</th><th class=\"num\">send</th>\
         <th class=\"num\">request</th><th class=\"num\">response</th>\
         <th class=\"num\">wait</th><th class=\"num\">hop</th><th class=\"num\">send</th></tr>\
         </thead>\n<tbody>\n",
    );
    let v = |x: f64| num(x, 3);
    let signed = |x: f64| {
        if x.is_finite() {
            format!("{x:+.3}").replace('-', "−")
        } else {
            "—".into()
        }
    };
    for a in at {
        let _ = write!(page, "<tr><th>{}</th>", escape(&a.percentile));
        for p in Part::ALL {
            let x = a.parts_ms.get(&p).copied().unwrap_or(f64::NAN);
            let _ = write!(page, "<td class=\"num\">{}</td>", v(x));
        }
        let _ = writeln!(
            page,
            "<td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            v(a.in_mesh_ms),
            a.overhead_ms.map_or_else(|| "—".into(), v),
            a.unexplained_ms.map_or_else(|| "—".into(), signed),
            count(a.paths as u64),
        );
    }
    page.push_str("</tbody>\n</table></div>\n");
}

/// The join counts, each with what it means.
fn counts(page: &mut String, c: &PathCounts) {
    let rows: [(&str, u64, String); 8] = [
        (
            "joined",
            c.joined,
            "exchanges of two traced proxies of this node joined into one path, in any \
             direction (a gateway's too)"
                .into(),
        ),
        (
            "breakdown",
            c.breakdown,
            "of those, outbound → inbound sidecar paths: the requests behind the bars".into(),
        ),
        (
            "no_peer",
            c.no_peer,
            "a proxy's upstream exchange that no traced proxy read on this node: the peer is on \
             another node, not traced, or its exchange was not paired"
                .into(),
        ),
        (
            "ambiguous",
            c.ambiguous,
            "an upstream exchange that more than one waiting exchange fitted (HTTP/2 streams \
             overlapping on one connection): left unjoined rather than guessed"
                .into(),
        ),
        (
            "unclaimed",
            c.unclaimed,
            "a downstream exchange from a peer that no upstream exchange took: the peer is off \
             this node, not traced, or its exchange was not paired"
                .into(),
        ),
        (
            "overflow",
            c.overflow,
            format!(
                "downstream exchanges given up unclaimed because {} were already waiting",
                count(WAITING_CAP as u64)
            ),
        ),
        (
            "send_unseen",
            c.send_unseen,
            "outbound → inbound paths whose outbound sidecar's response write was never seen \
             to return: left out of the bars, their network legs kept"
                .into(),
        ),
        (
            "sampled",
            c.sampled,
            format!(
                "paths kept for the bars (at most {}; beyond that, a uniform sample of all)",
                count(SAMPLES_CAP as u64)
            ),
        ),
    ];
    page.push_str(
        "<h3>Joins</h3>\n<table id=\"breakdown-paths-table\">\n<thead><tr><th>field</th>\
         <th class=\"num\">number</th><th>meaning</th></tr></thead>\n<tbody>\n",
    );
    for (name, n, meaning) in rows {
        let _ = writeln!(
            page,
            "<tr><th><code>{name}</code></th><td class=\"num\">{}</td><td>{}</td></tr>",
            count(n),
            escape(&meaning)
        );
    }
    page.push_str("</tbody>\n</table>\n");
}

/// The network leg between each pair of proxies.
fn legs(page: &mut String, b: &Breakdown) {
    page.push_str("<h3>Network legs</h3>\n");
    if b.network_legs.is_empty() {
        absent(
            page,
            "breakdown-no-legs",
            "No network leg was measured between two proxies of this node.",
        );
        return;
    }
    page.push_str(
        "<p>From the sending proxy's write to the receiving proxy's socket getting the bytes, \
         over every joined path (the bars above take only outbound → inbound sidecar paths).</p>\n\
         <table id=\"breakdown-legs-table\">\n<thead><tr><th>source → destination</th>\
         <th>leg</th><th class=\"num\">p50</th><th class=\"num\">p99</th>\
         <th class=\"num\">count</th></tr></thead>\n<tbody>\n",
    );
    for l in &b.network_legs {
        let p = &l.latency.percentiles;
        let _ = writeln!(
            page,
            "<tr><td>{} → {}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr>",
            escape(&l.source),
            escape(&l.destination),
            leg_name(l.leg),
            ms(p.p50),
            ms(p.p99),
            count(l.latency.count)
        );
    }
    page.push_str("</tbody>\n</table>\n");
}

/// TCP's round-trip estimates of each proxy's upstream connections.
fn estimates(page: &mut String, b: &Breakdown) {
    if b.rtt_estimates.is_empty() {
        return;
    }
    page.push_str(
        "<h3>TCP's round-trip estimates</h3>\n<p>Where a proxy's peer is not a traced proxy of \
         this node, its network leg cannot be measured per request: these are the kernel's own \
         estimates of the connection's round trip (both legs), an <em>estimate</em>. The \
         smoothed RTT also holds any delay of the peer's acknowledgement (on request/response \
         traffic it often rides on the response), the minimum RTT is the closest to the \
         wire's round trip. Where the peer is on this node the leg is measured above, and the \
         estimate is shown to compare.</p>\n\
         <table id=\"breakdown-rtt-table\">\n<thead><tr><th>proxy</th><th>peer</th>\
         <th class=\"num\">srtt p50</th><th class=\"num\">rttvar p50</th>\
         <th class=\"num\">min RTT p50</th><th class=\"num\">exchanges</th>\
         <th class=\"num\">unknown</th></tr></thead>\n<tbody>\n",
    );
    for e in &b.rtt_estimates {
        let _ = writeln!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            escape(&e.proxy),
            match e.peer {
                Peer::OnNode => "on this node",
                Peer::NotOnNode => "not a traced proxy of this node",
            },
            ms(e.srtt.percentiles.p50),
            ms(e.rttvar.percentiles.p50),
            ms(e.min_rtt.percentiles.p50),
            count(e.srtt.count),
            count(e.unknown)
        );
    }
    page.push_str("</tbody>\n</table>\n");
}
