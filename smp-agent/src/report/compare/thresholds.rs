//! `--fail-if` rules (`p99>+10%`, `p50>+2ms`, `qps<-5%`): parsing, and their outcome against a
//! delta.

use std::{fmt, str::FromStr};

use serde::Serialize;

use super::{Delta, Significance};
use crate::report::smp::LatencyStat;

/// What a threshold looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// A client-side latency statistic (`p99`).
    Latency(LatencyStat),
    /// Achieved requests/second (`qps`).
    Qps,
    /// Mesh overhead, meshed − baseline, from the details documents (`overhead.p99`).
    Overhead(LatencyStat),
    /// One hop's latency from the details documents (`hop:envoy/outbound/request.p99`).
    Hop {
        /// `proxy/direction/leg`.
        hop: String,
        /// p50, p90 or p99.
        stat: LatencyStat,
    },
}

impl Metric {
    fn is_latency(&self) -> bool {
        !matches!(self, Metric::Qps)
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Latency(s) => write!(f, "{s}"),
            Metric::Qps => f.write_str("qps"),
            Metric::Overhead(s) => write!(f, "overhead.{s}"),
            Metric::Hop { hop, stat } => write!(f, "hop:{hop}.{stat}"),
        }
    }
}

/// `p50`, `p90`, `p99`: the statistics kept per hop and for the overhead.
fn percentile_stat(s: &str) -> Option<LatencyStat> {
    match s.to_ascii_lowercase().as_str() {
        "p50" | "median" => Some(LatencyStat::P50),
        "p90" => Some(LatencyStat::P90),
        "p99" => Some(LatencyStat::P99),
        _ => None,
    }
}

/// Comparison operator: the threshold fails when `delta <op> limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    /// `>`.
    #[serde(rename = ">")]
    Gt,
    /// `>=`.
    #[serde(rename = ">=")]
    Ge,
    /// `<`.
    #[serde(rename = "<")]
    Lt,
    /// `<=`.
    #[serde(rename = "<=")]
    Le,
}

impl Op {
    fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Gt => a > b,
            Op::Ge => a >= b,
            Op::Lt => a < b,
            Op::Le => a <= b,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

/// The limit: relative to A, or absolute (ms for latencies, req/s for qps).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Limit {
    /// Percent of A.
    Percent(f64),
    /// Milliseconds (latency) or requests/second (qps).
    Absolute(f64),
}

/// A `--fail-if` rule: `p99>+10%`, `p50>+2ms`, `qps<-5%`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    /// The rule as written.
    pub text: String,
    /// What it looks at.
    pub metric: Metric,
    /// Operator.
    pub op: Op,
    /// Limit on the delta B − A.
    pub limit: Limit,
}

/// What is wrong with a `--fail-if` rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThresholdProblem {
    /// No `<`, `<=`, `>`, `>=`.
    NoOperator,
    /// Metric not one of min, average/avg/mean, p50, p90, p99, max, qps,
    /// overhead.{p50,p90,p99}, hop:<proxy>/<direction>/<leg>.{p50,p90,p99}.
    UnknownMetric,
    /// The number does not parse.
    BadNumber,
    /// Unit not `%`, `ns`, `us`, `ms`, `s` (latency) or `%`/none/`rps` (qps).
    BadUnit,
}

impl fmt::Display for ThresholdProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ThresholdProblem::NoOperator => "no operator (<, <=, >, >=)",
            ThresholdProblem::UnknownMetric => {
                "unknown metric (expected min, avg, p50, p90, p99, max, qps, overhead.p99 or \
                 hop:<proxy>/<direction>/<leg>.p99)"
            }
            ThresholdProblem::BadNumber => "the limit is not a number",
            ThresholdProblem::BadUnit => "unknown unit (latency: %, ns, us, ms, s; qps: % or none)",
        })
    }
}

/// A `--fail-if` rule that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid threshold {input:?}: {problem} (examples: p99>+10%, p50>+2ms, qps<-5%)")]
pub struct ThresholdError {
    /// The rule as given.
    pub input: String,
    /// What is wrong.
    pub problem: ThresholdProblem,
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(input: &str) -> Result<Self, ThresholdError> {
        let err = |problem| ThresholdError {
            input: input.to_string(),
            problem,
        };
        let s: String = input.chars().filter(|c| !c.is_whitespace()).collect();
        let i = s
            .find(['<', '>'])
            .ok_or(err(ThresholdProblem::NoOperator))?;
        let (name, rest) = s.split_at(i);
        let (op, rest) = if let Some(r) = rest.strip_prefix(">=") {
            (Op::Ge, r)
        } else if let Some(r) = rest.strip_prefix("<=") {
            (Op::Le, r)
        } else if let Some(r) = rest.strip_prefix('>') {
            (Op::Gt, r)
        } else if let Some(r) = rest.strip_prefix('<') {
            (Op::Lt, r)
        } else {
            return Err(err(ThresholdProblem::NoOperator));
        };
        let lower = name.to_ascii_lowercase();
        let metric = match lower.as_str() {
            _ if lower.starts_with("overhead.") => Metric::Overhead(
                percentile_stat(&name["overhead.".len()..])
                    .ok_or(err(ThresholdProblem::UnknownMetric))?,
            ),
            _ if lower.starts_with("hop:") => {
                let (hop, stat) = name["hop:".len()..]
                    .rsplit_once('.')
                    .ok_or(err(ThresholdProblem::UnknownMetric))?;
                let stat = percentile_stat(stat).ok_or(err(ThresholdProblem::UnknownMetric))?;
                if hop.split('/').count() != 3 {
                    return Err(err(ThresholdProblem::UnknownMetric));
                }
                Metric::Hop {
                    hop: hop.to_string(),
                    stat,
                }
            }
            "min" => Metric::Latency(LatencyStat::Min),
            "avg" | "average" | "mean" => Metric::Latency(LatencyStat::Average),
            "p50" | "median" => Metric::Latency(LatencyStat::P50),
            "p90" => Metric::Latency(LatencyStat::P90),
            "p99" => Metric::Latency(LatencyStat::P99),
            "max" => Metric::Latency(LatencyStat::Max),
            "qps" | "rps" | "actual_qps" => Metric::Qps,
            _ => return Err(err(ThresholdProblem::UnknownMetric)),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | 'e' | 'E')))
            .unwrap_or(rest.len());
        // `e` may start a unit only in none of ours; a trailing `e` without digits is a unit
        // error caught by the number parse below.
        let (num, unit) = rest.split_at(num_end);
        if num.is_empty() {
            return Err(err(ThresholdProblem::BadNumber));
        }
        let value: f64 = num.parse().map_err(|_| err(ThresholdProblem::BadNumber))?;
        if !value.is_finite() {
            return Err(err(ThresholdProblem::BadNumber));
        }
        let limit = match (metric.is_latency(), unit) {
            (_, "%") => Limit::Percent(value),
            (true, "ns") => Limit::Absolute(value / 1e6),
            (true, "us" | "µs") => Limit::Absolute(value / 1e3),
            (true, "ms") => Limit::Absolute(value),
            (true, "s") => Limit::Absolute(value * 1e3),
            (false, "" | "rps" | "qps") => Limit::Absolute(value),
            _ => return Err(err(ThresholdProblem::BadUnit)),
        };
        Ok(Threshold {
            text: input.trim().to_string(),
            metric,
            op,
            limit,
        })
    }
}

/// A threshold and its outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdOutcome {
    /// The rule.
    pub threshold: Threshold,
    /// The delta it was checked against (% or absolute, as the rule says).
    pub observed: Option<f64>,
    /// True when the rule fired (the gate fails).
    pub failed: bool,
    /// Why, when it could not be evaluated or fired within noise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Checks one rule against its delta; a rule that cannot be evaluated fails.
pub(super) fn evaluate(t: &Threshold, d: Result<&Delta, &str>) -> ThresholdOutcome {
    let d = match d {
        Ok(d) => d,
        Err(why) => {
            return ThresholdOutcome {
                threshold: t.clone(),
                observed: None,
                failed: true,
                note: Some(format!("cannot evaluate: {why} (failing safe)")),
            }
        }
    };
    let observed = match t.limit {
        Limit::Percent(_) => d.delta_pct,
        Limit::Absolute(_) => Some(d.delta),
    };
    let limit = match t.limit {
        Limit::Percent(v) | Limit::Absolute(v) => v,
    };
    match observed {
        None => ThresholdOutcome {
            threshold: t.clone(),
            observed: None,
            failed: true,
            note: Some(format!(
                "cannot evaluate a relative limit: A's {} is 0 (failing safe)",
                d.name
            )),
        },
        Some(obs) if !obs.is_finite() => ThresholdOutcome {
            threshold: t.clone(),
            observed: None,
            failed: true,
            note: Some(format!(
                "cannot evaluate: the {} delta is not a finite number (failing safe)",
                d.name
            )),
        },
        Some(obs) => {
            let failed = t.op.holds(obs, limit);
            let note = match (&d.significance, failed) {
                (Some(s @ Significance::WithinNoise { .. }), true) => {
                    Some(format!("the difference is {s}"))
                }
                _ => None,
            };
            ThresholdOutcome {
                threshold: t.clone(),
                observed: Some(obs),
                failed,
                note,
            }
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
