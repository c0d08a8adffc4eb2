//! Hop latency buckets and the conversion of nanosecond HdrHistograms into them.
//!
//! Buckets go 1-2-3-5 per decade from 10 µs to 10 s (25 bounds, then `+Inf`): neighbouring
//! bounds differ by at most 2×, so `histogram_quantile` (linear inside a bucket) is off by less
//! than one bucket width, and every series costs 28 samples (25 bounds, `+Inf`, `_sum`,
//! `_count`). Sidecar hops sit between ~20 µs and a few ms; the range leaves a decade of room on
//! both sides. Values above 10 s land in `+Inf` (counted, not lost).

use hdrhistogram::Histogram;

/// Upper bounds of the hop latency buckets, seconds (`le` label values), ascending.
pub const HOP_BUCKETS_SECONDS: [f64; 25] = [
    0.000_01, 0.000_02, 0.000_03, 0.000_05, // 10-50 µs
    0.000_1, 0.000_2, 0.000_3, 0.000_5, // 100-500 µs
    0.001, 0.002, 0.003, 0.005, // 1-5 ms
    0.01, 0.02, 0.03, 0.05, // 10-50 ms
    0.1, 0.2, 0.3, 0.5, // 100-500 ms
    1.0, 2.0, 3.0, 5.0,  // 1-5 s
    10.0, // 10 s
];

/// Number of buckets including the implicit `+Inf` one.
pub const BUCKETS_WITH_INF: usize = HOP_BUCKETS_SECONDS.len() + 1;

/// Bucket bounds in nanoseconds, exact integers (a value equal to a bound belongs to it, as
/// Prometheus' `le` means "less than or equal").
const BOUNDS_NS: [u64; 25] = [
    10_000,
    20_000,
    30_000,
    50_000,
    100_000,
    200_000,
    300_000,
    500_000,
    1_000_000,
    2_000_000,
    3_000_000,
    5_000_000,
    10_000_000,
    20_000_000,
    30_000_000,
    50_000_000,
    100_000_000,
    200_000_000,
    300_000_000,
    500_000_000,
    1_000_000_000,
    2_000_000_000,
    3_000_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Index of the bucket a nanosecond value falls into (`HOP_BUCKETS_SECONDS.len()` = `+Inf`).
pub fn bucket_index(ns: u64) -> usize {
    BOUNDS_NS.partition_point(|b| *b < ns)
}

/// Cumulative classic-histogram state: per-bucket (not cumulative) counts, sum and count.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketCounts {
    /// Count per bucket; the last one is `+Inf`.
    pub counts: [u64; BUCKETS_WITH_INF],
    /// Sum of all observations, seconds.
    pub sum_seconds: f64,
    /// Number of observations.
    pub count: u64,
}

impl Default for BucketCounts {
    fn default() -> Self {
        Self {
            counts: [0; BUCKETS_WITH_INF],
            sum_seconds: 0.0,
            count: 0,
        }
    }
}

impl BucketCounts {
    /// Adds one observation of `ns` nanoseconds.
    pub fn observe_ns(&mut self, ns: u64) {
        self.add_ns(ns, 1, ns as f64);
    }

    fn add_ns(&mut self, bucket_ns: u64, n: u64, value_ns: f64) {
        self.counts[bucket_index(bucket_ns)] += n;
        self.count += n;
        self.sum_seconds += value_ns * n as f64 / 1e9;
    }

    /// Adds every value recorded in a nanosecond HdrHistogram (as [`crate::aggregate::hops`]
    /// keeps them). A value is placed by the lowest value HdrHistogram treats as equal to it,
    /// so a value recorded exactly on a bound lands in that bound's bucket; the sum uses the
    /// median equivalent value (HdrHistogram's own mean does the same).
    pub fn add_hdr(&mut self, h: &Histogram<u64>) {
        for v in h.iter_recorded() {
            let value = v.value_iterated_to();
            self.add_ns(
                h.lowest_equivalent(value),
                v.count_at_value(),
                h.median_equivalent(value) as f64,
            );
        }
    }

    /// `(upper bound, count)` pairs in the shape prometheus-client's encoder takes (the last
    /// bound is `+Inf`; counts are per bucket, the encoder accumulates them).
    pub fn encoder_buckets(&self) -> Vec<(f64, u64)> {
        HOP_BUCKETS_SECONDS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree_and_ascend() {
        for (s, ns) in HOP_BUCKETS_SECONDS.iter().zip(BOUNDS_NS) {
            assert_eq!((s * 1e9).round() as u64, ns);
        }
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
        // At most 2x between neighbours: the quantile error stays within one bucket.
        assert!(BOUNDS_NS.windows(2).all(|w| w[1] <= 2 * w[0]));
        assert_eq!(HOP_BUCKETS_SECONDS[0], 10e-6);
        assert_eq!(*HOP_BUCKETS_SECONDS.last().unwrap(), 10.0);
    }

    #[test]
    fn le_is_inclusive() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(10_000), 0);
        assert_eq!(bucket_index(10_001), 1);
        assert_eq!(bucket_index(10_000_000_000), 24);
        assert_eq!(bucket_index(10_000_000_001), 25);
        assert_eq!(bucket_index(u64::MAX), 25);
    }

    #[test]
    fn hdr_values_land_in_their_buckets() {
        let mut h = crate::aggregate::hops::new_histogram();
        for ns in [5_000u64, 100_000, 150_000, 2_500_000, 20_000_000_000] {
            h.record(ns).unwrap();
        }
        h.record_n(250_000, 10).unwrap();
        let mut b = BucketCounts::default();
        b.add_hdr(&h);
        assert_eq!(b.count, 15);
        assert_eq!(b.counts[0], 1); // 5 µs
        assert_eq!(b.counts[4], 1); // exactly 100 µs: le="0.0001"
        assert_eq!(b.counts[5], 1); // 150 µs: (100 µs, 200 µs]
        assert_eq!(b.counts[6], 10); // 250 µs: (200 µs, 300 µs]
        assert_eq!(b.counts[10], 1); // 2.5 ms: (2 ms, 3 ms]
        assert_eq!(b.counts[25], 1); // 20 s: +Inf
        let expected_sum = (5e3 + 100e3 + 150e3 + 10.0 * 250e3 + 2.5e6 + 20e9) / 1e9;
        assert!((b.sum_seconds - expected_sum).abs() / expected_sum < 1e-3);
    }
}
