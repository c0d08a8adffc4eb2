//! The frame of the page: `<head>` with the inline CSS and the security policy, the header,
//! the footer, and the small blocks every section uses (a note about missing data, a card).

use std::fmt::Write as _;

use super::format::{escape, or_dash};
use crate::report::{smp::MeshType, ResultSet};

pub(super) const CSS: &str = r#"
:root { --fg:#1b1f24; --muted:#57606a; --line:#d0d7de; --bg:#ffffff; --band:#f6f8fa;
        --meshed:#c62828; --baseline:#1565c0; --ok:#1a7f37; --bad:#b35900; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width:1120px; margin:0 auto; padding:24px 28px 40px; }
header.page { border-bottom:3px solid var(--fg); padding-bottom:12px; margin-bottom:20px; }
header.page h1 { font-size:26px; margin:0 0 4px; }
header.page .sub { color:var(--muted); font-size:14px; }
h2 { font-size:20px; margin:34px 0 10px; padding-bottom:4px; border-bottom:1px solid var(--line); }
h3 { font-size:16px; margin:18px 0 6px; }
p { margin:6px 0; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:8px 0 4px; }
.card { flex:1 1 200px; border:1px solid var(--line); border-radius:6px; padding:10px 14px; background:var(--band); }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .value { font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }
.card .detail { color:var(--muted); font-size:13px; }
table { border-collapse:collapse; width:100%; margin:8px 0 4px; font-size:14px; }
th, td { padding:5px 10px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
thead th { background:var(--band); border-bottom:2px solid var(--line); font-weight:600; white-space:nowrap; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tbody tr:nth-child(even) td { background:#fbfcfd; }
tbody th { white-space:nowrap; font-weight:600; }
table.kv, table.single { width:auto; min-width:460px; }
table.kv th { font-weight:600; background:none; padding-right:32px; }
.wide { overflow-x:auto; }
.wide table { font-size:13px; }
.wide td:first-child { white-space:nowrap; }
.wide thead th { white-space:normal; }
table.kv tbody tr:nth-child(even) td { background:none; }
td .url { white-space:normal; }
thead small { font-weight:400; color:var(--muted); }
code, .url { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:13px; word-break:break-all; }
figure { margin:12px 0 6px; border:1px solid var(--line); border-radius:6px; padding:10px; }
figure svg.plot { display:block; width:100%; height:auto; max-width:100%; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; }
.key { display:inline-block; width:12px; height:12px; border-radius:2px; vertical-align:-1px; margin-right:4px; }
.legend { display:flex; gap:18px; font-size:14px; margin:0 0 4px 8px; }
.key.meshed { background:var(--meshed); } .key.baseline { background:var(--baseline); }
.key.outbound, .seg.outbound { background:#d95f02; } .key.network, .seg.network { background:#7570b3; }
.key.inbound, .seg.inbound { background:#1b9e77; }
.key.unexplained, .seg.unexplained { background:repeating-linear-gradient(135deg,#9e9e9e 0 4px,#d6d6d6 4px 8px); }
.key.overhead { width:3px; border-radius:0; background:var(--fg); }
.bars { margin:10px 0 8px; }
.bar-row { display:grid; grid-template-columns:44px 1fr; column-gap:10px; align-items:center; margin:12px 0; }
.bar-row .pct { font-weight:600; font-variant-numeric:tabular-nums; }
.track { position:relative; height:28px; background:var(--band); border:1px solid var(--line); border-radius:3px; }
.stack { display:flex; height:100%; overflow:hidden; }
.seg { flex:none; height:100%; overflow:hidden; white-space:nowrap; text-overflow:clip; color:#fff;
       font-size:12px; line-height:26px; text-align:center; font-variant-numeric:tabular-nums;
       -webkit-print-color-adjust:exact; print-color-adjust:exact; }
.seg.unexplained { color:var(--fg); }
.mark { position:absolute; top:-5px; bottom:-5px; width:0; border-left:3px solid var(--fg); margin-left:-1px; }
.bar-row .parts { grid-column:2; font-size:13px; color:var(--muted); margin-top:3px; }
.bar-scale { display:flex; justify-content:space-between; margin-left:54px; font-size:12px; color:var(--muted); border-top:1px solid var(--line); }
.absent { color:var(--muted); font-style:italic; border-left:3px solid var(--line); padding:4px 10px; background:var(--band); }
.verdict { display:inline-block; padding:1px 8px; border-radius:10px; font-weight:600; color:#fff; }
.verdict.consistent { background:var(--ok); } .verdict.inconsistent { background:var(--bad); }
.warn { color:var(--bad); font-weight:600; }
footer { margin-top:36px; padding-top:10px; border-top:1px solid var(--line); color:var(--muted); font-size:12px; }
@media print { main { max-width:none; padding:0; } figure { break-inside:avoid; } }
"#;

pub(super) fn head(page: &mut String, set: &ResultSet) {
    let name = title_name(set);
    let when = set
        .result
        .start_time
        .map(|t| format!(" — {t}"))
        .unwrap_or_default();
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"generator\" content=\"{gen}\">\n\
         <title>smp-agent profile: {title}{when}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n",
        gen = escape(&generator()),
        title = escape(&name),
        when = escape(&when),
    );
}

pub(super) fn generator() -> String {
    format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
}

pub(super) fn title_name(set: &ResultSet) -> String {
    if set.test.test.name.is_empty() {
        "unnamed test".into()
    } else {
        set.test.test.name.clone()
    }
}

pub(super) fn mesh_name(set: &ResultSet) -> String {
    let mesh = set.mesh_config.mesh_type.as_ref().unwrap_or(&set.test.mesh);
    let mut s = if mesh.r#type == MeshType::InvalidMesh {
        "no mesh type given".to_string()
    } else {
        mesh.r#type.cli_name()
    };
    if !mesh.version.is_empty() {
        s.push(' ');
        s.push_str(&mesh.version);
    }
    s
}

pub(super) fn header(page: &mut String, set: &ResultSet) {
    let window = match (set.result.start_time, set.result.end_time) {
        (Some(a), Some(b)) => format!("{a} → {b} ({:.1} s)", a.seconds_until(b)),
        (Some(a), None) => format!("from {a}"),
        _ => "time not recorded".into(),
    };
    let mtls = if set.mesh_config.mtls_enabled {
        ", mTLS"
    } else {
        ""
    };
    let _ = write!(
        page,
        "<header class=\"page\">\n<h1>Service mesh overhead: {name}</h1>\n\
         <div class=\"sub\">Mesh: <strong>{mesh}{mtls}</strong> · {window} · result <code>{id}</code></div>\n</header>\n",
        name = escape(&title_name(set)),
        mesh = escape(&mesh_name(set)),
        window = escape(&window),
        id = escape(or_dash(&set.result.id)),
    );
}

pub(super) fn absent(page: &mut String, id: &str, text: &str) {
    let _ = writeln!(
        page,
        "<p class=\"absent\" id=\"{}\">{}</p>",
        escape(id),
        escape(text)
    );
}

pub(super) fn card(page: &mut String, label: &str, value: &str, detail: &str) {
    let _ = writeln!(
        page,
        "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{}</div><div class=\"detail\">{}</div></div>",
        escape(label),
        escape(value),
        escape(detail)
    );
}
