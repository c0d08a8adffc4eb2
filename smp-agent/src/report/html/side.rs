//! The data one side of the comparison (meshed or baseline) contributes to the page.

use hdrhistogram::Histogram;

use crate::report::{
    details::{Distribution, Percentiles, RunSummary},
    smp::Latency,
    ResultSet,
};

/// Latency of one side, whatever the source: the details document (percentiles and histogram)
/// or the SMP result's summary (`latencies_ms`, no p75/p95/p99.9: NaN).
pub(super) struct Side {
    pub(super) url: String,
    pub(super) actual_qps: f64,
    pub(super) errors: Option<u64>,
    pub(super) count: Option<u64>,
    pub(super) pct: Option<Percentiles>,
    /// Decoded histogram (ns), when the details document has one that decodes.
    pub(super) histogram: Option<Histogram<u64>>,
}

impl Side {
    pub(super) fn meshed(set: &ResultSet) -> Self {
        if let Some(d) = &set.details {
            if d.end_to_end.meshed.latency.count > 0 {
                return Self::from_run(&d.end_to_end.meshed);
            }
        }
        Self {
            url: set
                .test
                .test
                .clients
                .first()
                .and_then(|c| c.endpoint_urls.first())
                .cloned()
                .unwrap_or_default(),
            actual_qps: set.result.actual_qps,
            errors: None,
            count: None,
            pct: set.result.latencies_ms.as_ref().map(from_smp_latency),
            histogram: None,
        }
    }

    pub(super) fn from_run(run: &RunSummary) -> Self {
        Self {
            url: run.url.clone(),
            actual_qps: run.actual_qps,
            errors: Some(run.errors),
            count: Some(run.latency.count),
            pct: (run.latency.count > 0).then_some(run.latency.percentiles),
            histogram: decode(&run.latency),
        }
    }
}

fn from_smp_latency(l: &Latency) -> Percentiles {
    Percentiles {
        min: l.min,
        mean: l.average,
        p50: l.p50,
        p75: f64::NAN,
        p90: l.p90,
        p95: f64::NAN,
        p99: l.p99,
        p999: f64::NAN,
        max: l.max,
    }
}

fn decode(d: &Distribution) -> Option<Histogram<u64>> {
    d.histogram
        .as_ref()
        .and_then(|h| h.decode().ok())
        .filter(|h| !h.is_empty())
}
