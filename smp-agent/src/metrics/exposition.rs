//! Exposition formats: OpenMetrics 1.0 text (what prometheus-client encodes) and the classic
//! Prometheus text format 0.0.4 (derived from it), and choosing between them from an `Accept`
//! header.

/// A text exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text: `# UNIT` lines, counters typed without `_total`, `# EOF`.
    OpenMetrics,
    /// Prometheus text format 0.0.4 (what `promtool check metrics` and older scrapers read).
    PrometheusText,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }

    /// Picks the format for an `Accept` header: OpenMetrics when the client accepts
    /// `application/openmetrics-text` (version 1.0.0, 0.0.1 or unspecified) at least as much as
    /// `text/plain`, else the Prometheus text format (also without a header, and for `*/*`).
    /// Prometheus itself sends `application/openmetrics-text;version=1.0.0,…,text/plain;
    /// version=0.0.4;q=0.5,*/*;q=0.1` and so gets OpenMetrics.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::PrometheusText;
        };
        let mut om_q: f64 = 0.0;
        let mut text_q: f64 = 0.0;
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let mut q = 1.0;
            let mut version: Option<String> = None;
            for p in parts {
                let Some((k, v)) = p.split_once('=') else {
                    continue;
                };
                match k.trim().to_ascii_lowercase().as_str() {
                    "q" => q = v.trim().parse().unwrap_or(0.0),
                    "version" => version = Some(v.trim().trim_matches('"').to_string()),
                    _ => {}
                }
            }
            match media.as_str() {
                "application/openmetrics-text"
                    if matches!(version.as_deref(), None | Some("1.0.0" | "0.0.1")) =>
                {
                    om_q = om_q.max(q);
                }
                "text/plain" if matches!(version.as_deref(), None | Some("0.0.4")) => {
                    text_q = text_q.max(q);
                }
                _ => {}
            }
        }
        if om_q > 0.0 && om_q >= text_q {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }
}

/// Rewrites OpenMetrics text (as prometheus-client encodes it) into the Prometheus text format
/// 0.0.4: `# EOF` and `# UNIT` lines go, counter families are named with their `_total`
/// sample name in `# HELP`/`# TYPE`, `info` families become gauges named `<name>_info`,
/// `unknown` becomes `untyped`, and exemplars are dropped. Samples are unchanged (label and
/// number syntax are the same in both formats for what prometheus-client writes).
pub fn openmetrics_to_prometheus_text(om: &str) -> String {
    // Family name → type, from the `# TYPE` lines (they follow `# HELP`, so read them first).
    let types: std::collections::HashMap<&str, &str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .collect();
    let renamed = |name: &str| -> String {
        match types.get(name).copied() {
            Some("counter") => format!("{name}_total"),
            Some("info") => format!("{name}_info"),
            _ => name.to_string(),
        }
    };
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            out.push_str("# HELP ");
            out.push_str(&renamed(name));
            out.push(' ');
            out.push_str(help);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let kind = match kind {
                "info" => "gauge",
                "unknown" => "untyped",
                k => k,
            };
            out.push_str("# TYPE ");
            out.push_str(&renamed(name));
            out.push(' ');
            out.push_str(kind);
        } else if line.starts_with('#') {
            out.push_str(line);
        } else {
            out.push_str(strip_exemplar(line));
        }
        out.push('\n');
    }
    out
}

/// A sample line without its exemplar (` # {…} value`), minding `#` inside label values.
fn strip_exemplar(line: &str) -> &str {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '#' if !in_quotes => return line[..i].trim_end(),
            _ => {}
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text")),
            Format::OpenMetrics
        );
        assert_eq!(Format::negotiate(None), Format::PrometheusText);
        assert_eq!(Format::negotiate(Some("*/*")), Format::PrometheusText);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some(
                "text/plain;version=0.0.4;q=0.9, application/openmetrics-text;q=0.5"
            )),
            Format::PrometheusText
        );
        // A version we do not speak, or q=0, is not a request for OpenMetrics.
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;version=2.0.0")),
            Format::PrometheusText
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::PrometheusText
        );
    }

    #[test]
    fn converts_openmetrics_to_text_0_0_4() {
        let om = "# HELP smp_x_seconds Some time.\n# TYPE smp_x_seconds counter\n# UNIT smp_x_seconds seconds\nsmp_x_seconds_total{a=\"b # c\"} 1.5 # {trace=\"1\"} 1.0\n# HELP build Build.\n# TYPE build info\nbuild_info{version=\"1\"} 1\n# HELP g A gauge.\n# TYPE g gauge\ng 3\n# EOF\n";
        let text = openmetrics_to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP smp_x_seconds_total Some time.\n# TYPE smp_x_seconds_total counter\nsmp_x_seconds_total{a=\"b # c\"} 1.5\n# HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{version=\"1\"} 1\n# HELP g A gauge.\n# TYPE g gauge\ng 3\n"
        );
    }
}
