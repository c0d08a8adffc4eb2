//! Go-style duration strings (`1h2m3s`, `1m30s`, `500ms`, `10s`, `1.5s`), as SMP and our flags
//! use them. Parsing is strict: the error says what is wrong.

use std::{fmt, time::Duration};

/// A duration string that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (expected e.g. 10s, 1m30s, 500ms)")]
pub struct DurationError {
    pub input: String,
    pub reason: &'static str,
}

/// Parses a Go-style duration: one or more `<number><unit>` with units
/// `ns`, `us`/`µs`, `ms`, `s`, `m`, `h`. A bare `0` is zero.
pub fn parse(input: &str) -> Result<Duration, DurationError> {
    let err = |reason| DurationError {
        input: input.to_string(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.starts_with('-') {
        return Err(err("negative durations are not allowed"));
    }
    let mut total_ns: f64 = 0.0;
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| err("missing unit"))?;
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err("bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit_ns = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        total_ns += value * unit_ns;
    }
    if !total_ns.is_finite() || total_ns > u64::MAX as f64 {
        return Err(err("too large"));
    }
    Ok(Duration::from_nanos(total_ns.round() as u64))
}

/// Formats a duration the Go way (`1m30s`, `500ms`, `0s`), so SMP files we write re-read.
pub fn format(d: Duration) -> String {
    GoDuration(d).to_string()
}

/// Display adapter for [`format`].
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        if ns == 0 {
            return f.write_str("0s");
        }
        if ns < 1_000_000_000 {
            return if ns.is_multiple_of(1_000_000) {
                write!(f, "{}ms", ns / 1_000_000)
            } else if ns.is_multiple_of(1_000) {
                write!(f, "{}us", ns / 1_000)
            } else {
                write!(f, "{ns}ns")
            };
        }
        let h = ns / 3_600_000_000_000;
        let m = (ns / 60_000_000_000) % 60;
        let s_ns = ns % 60_000_000_000;
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if h > 0 || m > 0 {
            write!(f, "{m}m")?;
        }
        if s_ns.is_multiple_of(1_000_000_000) {
            write!(f, "{}s", s_ns / 1_000_000_000)
        } else {
            let secs = s_ns as f64 / 1e9;
            let text = format!("{secs:.9}");
            write!(f, "{}s", text.trim_end_matches('0'))
        }
    }
}

/// clap value parser for duration flags.
pub fn clap_parse(s: &str) -> Result<Duration, String> {
    parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("250us").unwrap(), Duration::from_micros(250));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(
            parse("2h45m0.5s").unwrap(),
            Duration::from_millis(9_900_500)
        );
    }

    #[test]
    fn rejects_bad_durations_with_a_reason() {
        for (bad, reason) in [
            ("abc", "expected a number"),
            ("10", "missing unit"),
            ("10x", "unknown unit"),
            ("-5s", "negative durations are not allowed"),
            ("", "empty"),
            ("1..2s", "bad number"),
        ] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.reason, reason, "input {bad:?}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for s in [
            "0s", "500ms", "10s", "1m30s", "1h0m0s", "1h2m3s", "1.5s", "250us",
        ] {
            let d = parse(s).unwrap();
            assert_eq!(parse(&format(d)).unwrap(), d, "{s} -> {}", format(d));
        }
        assert_eq!(format(Duration::from_secs(90)), "1m30s");
        assert_eq!(format(Duration::from_millis(500)), "500ms");
    }
}
