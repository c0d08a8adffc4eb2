//! The comparison as text for people.

use std::fmt;

use super::{Comparison, Delta, LatencyUnit, Limit, Metric};

fn fmt_pct(p: Option<f64>) -> String {
    p.map_or_else(|| "n/a".to_string(), |p| format!("{p:+.1}%"))
}

fn significance(d: &Delta) -> String {
    d.significance
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// Column layout of one table of deltas: every row of every table goes through [`Self::row`].
struct Table {
    indent: &'static str,
    name_width: usize,
    width: usize,
}

impl Table {
    fn header(
        &self,
        f: &mut fmt::Formatter<'_>,
        name: &str,
        [a, b, delta]: [&str; 3],
        tail: &str,
    ) -> fmt::Result {
        let (i, nw, w) = (self.indent, self.name_width, self.width);
        writeln!(
            f,
            "{i}{name:<nw$} {a:>w$} {b:>w$} {delta:>w$} {:>9}  {tail}",
            "B-A %"
        )
    }

    /// `name  A  B  B−A  B−A%  tail`, numbers at `precision` decimals.
    fn row(
        &self,
        f: &mut fmt::Formatter<'_>,
        d: &Delta,
        precision: usize,
        tail: &str,
    ) -> fmt::Result {
        let (i, nw, w, p) = (self.indent, self.name_width, self.width, precision);
        writeln!(
            f,
            "{i}{:<nw$} {:>w$.p$} {:>w$.p$} {:>+w$.p$} {:>9}  {tail}",
            d.name,
            d.a,
            d.b,
            d.delta,
            fmt_pct(d.delta_pct)
        )
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (label, s) in [("A", &self.a), ("B", &self.b)] {
            writeln!(f, "{label}: {} ({})", s.source, s.kind)?;
            let unit = match s.unit {
                LatencyUnit::Milliseconds => "milliseconds",
                LatencyUnit::Seconds => "SECONDS (converted to ms)",
            };
            writeln!(f, "   latencies_ms in {unit}: {}", s.unit_reason)?;
            for n in &s.notes {
                writeln!(f, "   note: {n}")?;
            }
        }
        writeln!(f)?;
        let main = Table {
            indent: "",
            name_width: 8,
            width: 12,
        };
        main.header(
            f,
            "latency",
            ["A (ms)", "B (ms)", "B-A (ms)"],
            "significance",
        )?;
        for d in &self.latency {
            main.row(f, d, 3, &significance(d))?;
        }
        main.row(f, &self.qps, 2, "(req/s)")?;
        if !self.overhead.is_empty() {
            writeln!(f, "\nmesh overhead (meshed - baseline, ms):")?;
            let t = Table {
                indent: "  ",
                name_width: 6,
                width: 10,
            };
            t.header(f, "", ["A", "B", "B-A"], "significance")?;
            for d in &self.overhead {
                t.row(f, d, 3, &significance(d))?;
            }
        }
        if !self.hops.is_empty() {
            writeln!(f, "\nper hop (ms):")?;
            let t = Table {
                indent: "    ",
                name_width: 4,
                width: 10,
            };
            t.header(f, "", ["A", "B", "B-A"], "significance")?;
            for h in &self.hops {
                writeln!(f, "  {}", h.title())?;
                for d in &h.deltas {
                    t.row(f, d, 3, &significance(d))?;
                }
            }
        } else if !self.a.details || !self.b.details {
            writeln!(
                f,
                "\nper hop: not compared (needs details documents on both sides)"
            )?;
        }
        for u in &self.unmatched_hops {
            writeln!(f, "  hop only on one side: {u}")?;
        }
        if !self.thresholds.is_empty() {
            writeln!(f, "\nthresholds:")?;
            let width = self
                .thresholds
                .iter()
                .map(|t| t.threshold.text.chars().count())
                .max()
                .unwrap_or(0);
            for t in &self.thresholds {
                let obs = match (t.observed, t.threshold.limit) {
                    (Some(o), Limit::Percent(_)) => format!("{o:+.2}%"),
                    (Some(o), Limit::Absolute(_)) => match t.threshold.metric {
                        Metric::Qps => format!("{o:+.2} req/s"),
                        _ => format!("{o:+.3} ms"),
                    },
                    (None, _) => "n/a".to_string(),
                };
                write!(
                    f,
                    "  {:<width$}  observed {:<14} {}",
                    t.threshold.text,
                    obs,
                    if t.failed { "FAIL" } else { "ok" }
                )?;
                if let Some(n) = &t.note {
                    write!(f, "  ({n})")?;
                }
                writeln!(f)?;
            }
            writeln!(
                f,
                "\nresult: {}",
                if self.passed {
                    "PASS"
                } else {
                    "FAIL (a threshold was exceeded)"
                }
            )?;
        }
        Ok(())
    }
}
