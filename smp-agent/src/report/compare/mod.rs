//! Comparing two results: ours (a results directory or `result.yaml`), SMP results from other
//! tools, and Meshery's layouts (whose `latencies_ms` hold seconds: detected and converted).
//!
//! Deltas are `B − A` (A is the reference, B the candidate). Significance comes from a
//! bootstrap over the two latency histograms when both sides have one (ours always do, in the
//! details document; Fortio records carry a bucketed one); otherwise it cannot be judged.
//! Thresholds (`p99>+10%`, `p50>+2ms`, `qps<-5%`) turn the comparison into a CI gate.
//!
//! The parts: [`input`] reads one side (any supported layout, with the limits of
//! docs/smp.md), [`thresholds`] parses and evaluates `--fail-if` rules, [`statistics`] holds the
//! bootstrap, and `text` prints a comparison for people.

mod input;
mod statistics;
#[cfg(test)]
mod tests;
mod text;
mod thresholds;

use serde::Serialize;

use super::{details::Hop, smp::LatencyStat};

pub use input::{
    detect_unit, load_side, CompareError, LatencyUnit, Side, SourceKind, UnitEvidence,
};
pub use statistics::{BootstrapConfig, Significance};
pub use thresholds::{
    Limit, Metric, Op, Threshold, ThresholdError, ThresholdOutcome, ThresholdProblem,
};

use statistics::{bootstrap, overhead_bootstrap};
use thresholds::evaluate;

// ---------------------------------------------------------------------------------------------
// The comparison.

/// One statistic on both sides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delta {
    /// Name (`p99`, `qps`, …).
    pub name: String,
    /// A's value (ms, or req/s for qps).
    pub a: f64,
    /// B's value.
    pub b: f64,
    /// `b − a`.
    pub delta: f64,
    /// `(b − a) / a × 100`; `None` when `a` is 0.
    pub delta_pct: Option<f64>,
    /// Noise verdict (latencies only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub significance: Option<Significance>,
}

impl Delta {
    fn new(name: &str, a: f64, b: f64, significance: Option<Significance>) -> Self {
        Self {
            name: name.to_string(),
            a,
            b,
            delta: b - a,
            delta_pct: (a != 0.0).then(|| (b - a) / a * 100.0),
            significance,
        }
    }
}

/// A hop present in both details documents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HopDelta {
    /// `proxy/direction/leg`.
    pub hop: String,
    /// What the proxy's two sides spoke in A and in B ([`Hop::sides_label`]; empty: not
    /// known).
    pub sides: [String; 2],
    /// p50, p90, p99 deltas (ms).
    pub deltas: Vec<Delta>,
}

impl HopDelta {
    /// How the hop is named in the text: with its sides, or both when they differ.
    pub fn title(&self) -> String {
        match &self.sides {
            [a, b] if a.is_empty() && b.is_empty() => self.hop.clone(),
            [a, b] if a == b => format!("{} ({a})", self.hop),
            [a, b] => format!(
                "{} (sides differ: A {}, B {})",
                self.hop,
                if a.is_empty() { "-" } else { a },
                if b.is_empty() { "-" } else { b }
            ),
        }
    }
}

/// Summary of one side for the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SideSummary {
    /// Path.
    pub source: String,
    /// Kind.
    pub kind: SourceKind,
    /// Unit its `latencies_ms` were in.
    pub unit: LatencyUnit,
    /// Why.
    pub unit_evidence: UnitEvidence,
    /// Human version of the evidence.
    pub unit_reason: String,
    /// Has a latency histogram.
    pub histogram: bool,
    /// Has a details document.
    pub details: bool,
    /// Notes from reading.
    pub notes: Vec<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The reference.
    pub a: SideSummary,
    /// The candidate.
    pub b: SideSummary,
    /// Per latency statistic, ms.
    pub latency: Vec<Delta>,
    /// Achieved rate.
    pub qps: Delta,
    /// Mesh overhead (meshed − baseline), when both details documents have it.
    pub overhead: Vec<Delta>,
    /// Per hop, when both have details.
    pub hops: Vec<HopDelta>,
    /// Hops present on one side only.
    pub unmatched_hops: Vec<String>,
    /// Threshold outcomes.
    pub thresholds: Vec<ThresholdOutcome>,
    /// False when any threshold fired.
    pub passed: bool,
}

/// Compares `a` (reference) and `b` (candidate) and evaluates `thresholds`.
pub fn compare(a: &Side, b: &Side, thresholds: &[Threshold], boot: BootstrapConfig) -> Comparison {
    let la = a.result.latencies_ms.clone().unwrap_or_default();
    let lb = b.result.latencies_ms.clone().unwrap_or_default();
    let boots = match (&a.histogram, &b.histogram) {
        (Some(ha), Some(hb)) if boot.iterations > 0 => Some(bootstrap(ha, hb, boot)),
        _ => None,
    };
    let no_hist_reason = match (&a.histogram, &b.histogram) {
        _ if boot.iterations == 0 => "bootstrap disabled",
        (None, None) => "neither side has a latency histogram",
        (None, _) => "A has no latency histogram",
        _ => "B has no latency histogram",
    };
    let latency: Vec<Delta> = LatencyStat::ALL
        .iter()
        .map(|&stat| {
            let sig = match (&boots, stat) {
                (_, LatencyStat::Min | LatencyStat::Max) => Significance::CannotJudge {
                    reason: "extreme values are not resampled".into(),
                },
                (Some(bs), _) => bs.significance(stat),
                (None, _) => Significance::CannotJudge {
                    reason: no_hist_reason.into(),
                },
            };
            Delta::new(stat.name(), la.get(stat), lb.get(stat), Some(sig))
        })
        .collect();
    let qps = Delta::new("qps", a.result.actual_qps, b.result.actual_qps, None);

    let (mut hops, mut unmatched_hops, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    if let (Some(da), Some(db)) = (&a.details, &b.details) {
        for ha in &da.hops {
            match db.hop(&ha.key()) {
                Some(hb) => hops.push(hop_delta(ha, hb, boot)),
                None => unmatched_hops.push(format!("{} (A only)", ha.key())),
            }
        }
        for hb in &db.hops {
            if da.hop(&hb.key()).is_none() {
                unmatched_hops.push(format!("{} (B only)", hb.key()));
            }
        }
        if let (Some(oa), Some(ob)) = (&da.end_to_end.overhead, &db.end_to_end.overhead) {
            let boots = overhead_bootstrap(da, db, boot);
            for stat in [LatencyStat::P50, LatencyStat::P90, LatencyStat::P99] {
                let name = stat.name();
                if let (Some(x), Some(y)) = (oa.get(name), ob.get(name)) {
                    let sig = match &boots {
                        Ok(bs) => bs.significance(stat),
                        Err(reason) => Significance::CannotJudge {
                            reason: (*reason).to_string(),
                        },
                    };
                    overhead.push(Delta::new(name, x, y, Some(sig)));
                }
            }
        }
    }

    let thresholds: Vec<ThresholdOutcome> = thresholds
        .iter()
        .map(|t| {
            let d = match &t.metric {
                Metric::Qps => Ok(&qps),
                Metric::Latency(stat) => Ok(latency_delta(&latency, *stat)),
                Metric::Overhead(stat) => overhead
                    .iter()
                    .find(|d| d.name == stat.name())
                    .ok_or("no mesh overhead on both sides (needs details with a baseline)"),
                Metric::Hop { hop, stat } => hops
                    .iter()
                    .find(|h| &h.hop == hop)
                    .and_then(|h| h.deltas.iter().find(|d| d.name == stat.name()))
                    .ok_or("this hop is not in both details documents"),
            };
            evaluate(t, d)
        })
        .collect();
    let passed = thresholds.iter().all(|t| !t.failed);
    Comparison {
        a: summary(a),
        b: summary(b),
        latency,
        qps,
        overhead,
        hops,
        unmatched_hops,
        thresholds,
        passed,
    }
}

fn latency_delta(latency: &[Delta], stat: LatencyStat) -> &Delta {
    // `latency` holds every LatencyStat in ALL order.
    let i = LatencyStat::ALL
        .iter()
        .position(|s| *s == stat)
        .unwrap_or(0);
    &latency[i]
}

fn summary(s: &Side) -> SideSummary {
    SideSummary {
        source: s.source.display().to_string(),
        kind: s.kind,
        unit: s.unit,
        unit_reason: s.unit_evidence.to_string(),
        unit_evidence: s.unit_evidence.clone(),
        histogram: s.histogram.is_some(),
        details: s.details.is_some(),
        notes: s.notes.clone(),
    }
}

fn hop_delta(a: &Hop, b: &Hop, boot: BootstrapConfig) -> HopDelta {
    let ha = a.latency.histogram.as_ref().and_then(|h| h.decode().ok());
    let hb = b.latency.histogram.as_ref().and_then(|h| h.decode().ok());
    let bs = match (&ha, &hb) {
        (Some(x), Some(y)) if boot.iterations > 0 => Some(bootstrap(x, y, boot)),
        _ => None,
    };
    let pa = &a.latency.percentiles;
    let pb = &b.latency.percentiles;
    let deltas = [
        (LatencyStat::P50, pa.p50, pb.p50),
        (LatencyStat::P90, pa.p90, pb.p90),
        (LatencyStat::P99, pa.p99, pb.p99),
    ]
    .into_iter()
    .map(|(stat, x, y)| {
        let sig = match &bs {
            Some(bs) => bs.significance(stat),
            None => Significance::CannotJudge {
                reason: if boot.iterations == 0 {
                    "bootstrap disabled".into()
                } else {
                    "hop histogram missing".into()
                },
            },
        };
        Delta::new(stat.name(), x, y, Some(sig))
    })
    .collect();
    HopDelta {
        hop: a.key().to_string(),
        sides: [a.sides_label(), b.sides_label()],
        deltas,
    }
}
