//! Text of the page: HTML escaping and the formats of numbers and names.

use crate::report::details::{ConsistencyVerdict, Direction, Leg};

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds with a precision that suits the magnitude; `—` when not a number.
pub(super) fn ms(v: f64) -> String {
    if !v.is_finite() {
        return "—".into();
    }
    let a = v.abs();
    if a < 10.0 {
        format!("{v:.3} ms")
    } else if a < 1000.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// Signed milliseconds (`+0.420 ms`).
pub(super) fn signed_ms(v: f64) -> String {
    if v.is_finite() && v >= 0.0 {
        format!("+{}", ms(v))
    } else {
        ms(v).replace('-', "−")
    }
}

/// A number with `decimals` digits; `—` when not finite.
pub(super) fn num(v: f64, decimals: usize) -> String {
    if v.is_finite() {
        format!("{v:.decimals$}")
    } else {
        "—".into()
    }
}

/// An integer with thousands separators (`1,234,567`).
pub(super) fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes in a readable unit.
pub(super) fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// Decimals for axis labels of a linear axis from 0 to `max` (about 6–10 ticks).
pub(super) fn axis_decimals(max: f64) -> usize {
    if max >= 20.0 {
        0
    } else if max >= 2.0 {
        1
    } else if max >= 0.2 {
        2
    } else {
        3
    }
}

/// `0.9` → `90%`, `0.999` → `99.9%` (for an axis of x = 1/(1 − q)).
pub(super) fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".into();
    }
    let pct = (1.0 - 1.0 / x) * 100.0;
    let s = format!("{pct:.5}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

pub(super) fn finite_or_zero(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

pub(super) fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "—"
    } else {
        s
    }
}

pub(super) fn direction_name(d: Direction) -> &'static str {
    d.name()
}

pub(super) fn leg_name(l: Leg) -> &'static str {
    match l {
        Leg::Request => "request",
        Leg::Response => "response",
    }
}

pub(super) fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "—".into(), |p| p.to_string())
}

pub(super) fn verdict_name(v: ConsistencyVerdict) -> &'static str {
    match v {
        ConsistencyVerdict::Consistent => "consistent",
        ConsistencyVerdict::Inconsistent => "inconsistent",
    }
}
