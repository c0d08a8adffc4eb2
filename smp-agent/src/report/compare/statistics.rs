//! Whether a difference stands out from sampling noise: a seeded bootstrap over the latency
//! histograms of both sides.

use std::fmt;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::report::{details::Details, smp::LatencyStat};

/// Whether a difference stands out from sampling noise.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Significance {
    /// The bootstrap 95 % interval of the difference contains 0.
    WithinNoise {
        /// Lower bound of the difference, ms.
        ci_low: f64,
        /// Upper bound, ms.
        ci_high: f64,
    },
    /// The interval excludes 0.
    Significant {
        /// Lower bound of the difference, ms.
        ci_low: f64,
        /// Upper bound, ms.
        ci_high: f64,
    },
    /// Not judged.
    CannotJudge {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Significance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Significance::WithinNoise { ci_low, ci_high } => {
                write!(f, "within noise (95% CI {ci_low:+.3}..{ci_high:+.3} ms)")
            }
            Significance::Significant { ci_low, ci_high } => {
                write!(f, "significant (95% CI {ci_low:+.3}..{ci_high:+.3} ms)")
            }
            Significance::CannotJudge { reason } => write!(f, "cannot judge: {reason}"),
        }
    }
}

/// Bootstrap settings.
#[derive(Debug, Clone, Copy)]
pub struct BootstrapConfig {
    /// Resamples.
    pub iterations: usize,
    /// At most this many draws per resample (fewer than the recorded count widens the
    /// interval: conservative).
    pub max_samples: u64,
    /// RNG seed (fixed, so a comparison is reproducible).
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            iterations: 200,
            max_samples: 10_000,
            seed: 0x5eed_5e7f_0000_0007,
        }
    }
}

/// Bootstrap of the change in overhead, (meshed B − baseline B) − (meshed A − baseline A).
pub(super) fn overhead_bootstrap(
    da: &Details,
    db: &Details,
    boot: BootstrapConfig,
) -> Result<BootstrapResult, &'static str> {
    if boot.iterations == 0 {
        return Err("bootstrap disabled");
    }
    let hist = |r: Option<&crate::report::details::RunSummary>| {
        r.and_then(|r| r.latency.histogram.as_ref())
            .and_then(|h| h.decode().ok())
    };
    let (Some(ma), Some(ba), Some(mb), Some(bb)) = (
        hist(Some(&da.end_to_end.meshed)),
        hist(da.end_to_end.baseline.as_ref()),
        hist(Some(&db.end_to_end.meshed)),
        hist(db.end_to_end.baseline.as_ref()),
    ) else {
        return Err("meshed or baseline histogram missing");
    };
    Ok(bootstrap_terms(
        &[(&mb, 1.0), (&bb, -1.0), (&ma, -1.0), (&ba, 1.0)],
        boot,
    ))
}

/// SplitMix64: small, fast, deterministic; good enough for resampling.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), via 128-bit multiply (negligible bias).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// A histogram flattened for sampling: distinct values (ns) and cumulative counts.
struct Sampler {
    values: Vec<u64>,
    cumulative: Vec<u64>,
}

impl Sampler {
    fn new(h: &Histogram<u64>) -> Self {
        let mut values = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0u64;
        for v in h.iter_recorded() {
            total += v.count_at_value();
            values.push(h.median_equivalent(v.value_iterated_to()));
            cumulative.push(total);
        }
        Self { values, cumulative }
    }

    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    /// Draws `n` values with replacement; returns counts per distinct value.
    fn resample(&self, n: u64, rng: &mut SplitMix64, counts: &mut Vec<u64>) {
        counts.clear();
        counts.resize(self.values.len(), 0);
        let total = self.total();
        for _ in 0..n {
            let r = rng.below(total);
            let i = self.cumulative.partition_point(|&c| c <= r);
            counts[i] += 1;
        }
    }

    /// Statistics (ms) of a resample given as counts: mean and quantiles.
    fn stats(&self, counts: &[u64], n: u64, quantiles: &[f64]) -> (f64, Vec<f64>) {
        let mut sum = 0f64;
        for (v, c) in self.values.iter().zip(counts) {
            sum += *v as f64 * *c as f64;
        }
        let mean = sum / n as f64 / 1e6;
        let mut out = Vec::with_capacity(quantiles.len());
        for q in quantiles {
            // Smallest value with at least ceil(q·n) samples at or below it (HdrHistogram's rule).
            let rank = ((q * n as f64).ceil() as u64).max(1);
            let mut acc = 0u64;
            let mut val = 0u64;
            for (v, c) in self.values.iter().zip(counts) {
                acc += c;
                if acc >= rank {
                    val = *v;
                    break;
                }
            }
            out.push(val as f64 / 1e6);
        }
        (mean, out)
    }
}

/// Bootstrap distributions of B − A for the mean and the quantile statistics.
pub(super) struct BootstrapResult {
    /// (stat, sorted differences in ms).
    diffs: Vec<(LatencyStat, Vec<f64>)>,
    empty: bool,
}

impl BootstrapResult {
    pub(super) fn significance(&self, stat: LatencyStat) -> Significance {
        if self.empty {
            return Significance::CannotJudge {
                reason: "a histogram is empty".into(),
            };
        }
        let Some((_, d)) = self.diffs.iter().find(|(s, _)| *s == stat) else {
            return Significance::CannotJudge {
                reason: "not resampled".into(),
            };
        };
        if d.is_empty() {
            return Significance::CannotJudge {
                reason: "no resamples".into(),
            };
        }
        let at = |p: f64| d[((p * (d.len() - 1) as f64).round() as usize).min(d.len() - 1)];
        let (ci_low, ci_high) = (at(0.025), at(0.975));
        if ci_low <= 0.0 && ci_high >= 0.0 {
            Significance::WithinNoise { ci_low, ci_high }
        } else {
            Significance::Significant { ci_low, ci_high }
        }
    }
}

/// Bootstrap of B − A.
pub(super) fn bootstrap(
    a: &Histogram<u64>,
    b: &Histogram<u64>,
    cfg: BootstrapConfig,
) -> BootstrapResult {
    bootstrap_terms(&[(b, 1.0), (a, -1.0)], cfg)
}

/// Bootstrap of Σ signᵢ × statistic(histogramᵢ): each histogram resampled independently.
/// `[(B, +1), (A, −1)]` is a plain difference; `[(meshed B, +1), (baseline B, −1),
/// (meshed A, −1), (baseline A, +1)]` the change of the mesh overhead.
fn bootstrap_terms(terms: &[(&Histogram<u64>, f64)], cfg: BootstrapConfig) -> BootstrapResult {
    let stats = [
        LatencyStat::Average,
        LatencyStat::P50,
        LatencyStat::P90,
        LatencyStat::P99,
    ];
    let quantiles: Vec<f64> = stats.iter().filter_map(|s| s.quantile()).collect();
    let samplers: Vec<(Sampler, u64, f64)> = terms
        .iter()
        .map(|(h, sign)| {
            let s = Sampler::new(h);
            let n = s.total().min(cfg.max_samples);
            (s, n, *sign)
        })
        .collect();
    if samplers.iter().any(|(s, _, _)| s.total() == 0) {
        return BootstrapResult {
            diffs: Vec::new(),
            empty: true,
        };
    }
    let mut rng = SplitMix64(cfg.seed);
    let mut diffs: Vec<(LatencyStat, Vec<f64>)> = stats
        .iter()
        .map(|s| (*s, Vec::with_capacity(cfg.iterations)))
        .collect();
    let mut counts = Vec::new();
    for _ in 0..cfg.iterations {
        let mut acc = vec![0f64; stats.len()];
        for (sampler, n, sign) in &samplers {
            sampler.resample(*n, &mut rng, &mut counts);
            let (mean, qs) = sampler.stats(&counts, *n, &quantiles);
            acc[0] += sign * mean;
            for (i, q) in qs.iter().enumerate() {
                acc[i + 1] += sign * q;
            }
        }
        for (d, v) in diffs.iter_mut().zip(acc) {
            d.1.push(v);
        }
    }
    for (_, d) in &mut diffs {
        d.sort_by(f64::total_cmp);
    }
    BootstrapResult {
        diffs,
        empty: false,
    }
}
