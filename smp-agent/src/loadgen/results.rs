//! What a run measured: a per-connection [`Recorder`] on the hot path, merged into one
//! serializable [`Results`] at the end.
//!
//! Latencies go into an HdrHistogram of microseconds, 1 µs to 60 s at 3 significant digits.
//! The histogram is written losslessly (HdrHistogram V2 + DEFLATE, base64) inside the JSON/YAML
//! result, so the results of several runs (or several nodes) merge exactly with
//! [`Results::merge`].

use std::{collections::BTreeMap, fmt, time::Duration};

use base64::Engine as _;
use hdrhistogram::{
    serialization::{Serializer as _, V2DeflateSerializer},
    Histogram,
};
use serde::{Deserialize, Serialize};

use super::LoadError;

/// Smallest recordable latency, in microseconds.
pub const HIST_LOW_US: u64 = 1;
/// Largest recordable latency, in microseconds (60 s); larger values saturate.
pub const HIST_HIGH_US: u64 = 60_000_000;
/// Significant decimal digits kept by the histogram.
pub const HIST_SIGFIG: u8 = 3;

/// Why a request got no HTTP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The TCP connection (or the TLS handshake, or the HTTP/2 handshake) failed.
    Connect,
    /// No complete response within the request timeout.
    Timeout,
    /// The peer reset or closed the connection before the response was complete.
    Reset,
    /// The response was not valid HTTP (or the HTTP/2 stream was refused or reset).
    Protocol,
}

/// Error counts by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Connection, TLS or HTTP/2 handshake failures.
    pub connect: u64,
    /// Requests without a complete response within the timeout.
    pub timeout: u64,
    /// Connections reset or closed by the peer mid-request.
    pub reset: u64,
    /// Malformed responses, refused or reset HTTP/2 streams, gRPC responses without a
    /// `grpc-status`.
    pub protocol: u64,
    /// gRPC responses with a non-OK `grpc-status` (by code in [`Results::grpc_status`]). They
    /// are responses too: their latency is in the histogram.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub grpc: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ErrorCounts {
    /// All errors.
    pub fn total(&self) -> u64 {
        self.connect + self.timeout + self.reset + self.protocol + self.grpc
    }

    fn add(&mut self, o: &Self) {
        self.connect += o.connect;
        self.timeout += o.timeout;
        self.reset += o.reset;
        self.protocol += o.protocol;
        self.grpc += o.grpc;
    }

    fn bump(&mut self, kind: ErrorKind) {
        match kind {
            ErrorKind::Connect => self.connect += 1,
            ErrorKind::Timeout => self.timeout += 1,
            ErrorKind::Reset => self.reset += 1,
            ErrorKind::Protocol => self.protocol += 1,
        }
    }
}

/// A fresh latency histogram with the run's bounds.
pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy HdrHistogram's constraints.
    Histogram::new_with_bounds(HIST_LOW_US, HIST_HIGH_US, HIST_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// One connection's counters. Not shared: no locking on the hot path.
#[derive(Debug)]
pub struct Recorder {
    hist: Histogram<u64>,
    /// Counts by status code 0..=599 (other codes are counted as protocol errors).
    status: Box<[u64; 600]>,
    errors: ErrorCounts,
    /// gRPC responses by `grpc-status` (empty unless the run speaks gRPC).
    grpc: BTreeMap<u32, u64>,
    /// Bytes written to the network (requests, including TLS overhead is *not* counted: these
    /// are HTTP bytes).
    pub bytes_sent: u64,
    /// HTTP bytes read (headers and bodies).
    pub bytes_received: u64,
    /// Requests the schedule called for that could not be sent before the run had to end.
    pub missed: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self {
            hist: new_histogram(),
            status: Box::new([0; 600]),
            errors: ErrorCounts::default(),
            grpc: BTreeMap::new(),
            bytes_sent: 0,
            bytes_received: 0,
            missed: 0,
        }
    }

    /// Records a response with its status and latency.
    #[inline]
    pub fn response(&mut self, status: u16, latency: Duration) {
        match self.status.get_mut(status as usize) {
            Some(n) => *n += 1,
            None => {
                self.errors.protocol += 1;
                return;
            }
        }
        let us = (latency.as_nanos() / 1_000).max(u128::from(HIST_LOW_US));
        let us = u64::try_from(us).unwrap_or(u64::MAX);
        self.hist.saturating_record(us);
    }

    /// Records the `grpc-status` of a response already recorded with [`Recorder::response`];
    /// a non-OK code also counts as an error.
    #[inline]
    pub fn grpc_status(&mut self, code: u32) {
        *self.grpc.entry(code).or_default() += 1;
        if code != 0 {
            self.errors.grpc += 1;
        }
    }

    /// Records a request that got no response.
    #[inline]
    pub fn error(&mut self, kind: ErrorKind) {
        self.errors.bump(kind);
    }

    /// Responses recorded so far.
    pub fn responses(&self) -> u64 {
        self.hist.len()
    }

    /// Adds another recorder's counts.
    pub fn merge(&mut self, o: &Recorder) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.hist.add(&o.hist);
        for (a, b) in self.status.iter_mut().zip(o.status.iter()) {
            *a += *b;
        }
        self.errors.add(&o.errors);
        for (code, n) in &o.grpc {
            *self.grpc.entry(*code).or_default() += n;
        }
        self.bytes_sent += o.bytes_sent;
        self.bytes_received += o.bytes_received;
        self.missed += o.missed;
    }

    /// Turns the counts into results.
    pub fn finish(self, meta: RunMeta) -> Results {
        let status_codes = self
            .status
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| (code as u16, *n))
            .collect();
        let mut r = Results {
            requested_rate: meta.requested_rate,
            achieved_rate: 0.0,
            duration_s: meta.elapsed.as_secs_f64(),
            connections: meta.connections,
            requests: 0,
            status_codes,
            grpc_status: self.grpc,
            errors: self.errors,
            missed: self.missed,
            bytes: ByteCounts {
                sent: self.bytes_sent,
                received: self.bytes_received,
            },
            latency: LatencySummary::default(),
            histogram: EncodedHistogram(self.hist),
        };
        r.recompute();
        r
    }
}

/// What the runner knows about the run besides the counts.
#[derive(Debug, Clone, Copy)]
pub struct RunMeta {
    /// `None` for closed-loop (`--rate max`).
    pub requested_rate: Option<f64>,
    /// Wall time of the measured part of the run (warm-up excluded).
    pub elapsed: Duration,
    /// Concurrent connections (per target authority).
    pub connections: u64,
}

/// Bytes moved (HTTP bytes, not counting TLS framing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteCounts {
    /// Request bytes written.
    pub sent: u64,
    /// Response bytes read.
    pub received: u64,
}

/// Latency statistics in milliseconds (microsecond resolution), from the histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub min_ms: f64,
    pub mean_ms: f64,
    pub stddev_ms: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p99_9_ms: f64,
    pub p99_99_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    /// Summarizes a microsecond histogram.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |p: f64| ms(h.value_at_quantile(p));
        Self {
            min_ms: ms(h.min()),
            mean_ms: h.mean() / 1000.0,
            stddev_ms: h.stdev() / 1000.0,
            p50_ms: q(0.50),
            p75_ms: q(0.75),
            p90_ms: q(0.90),
            p99_ms: q(0.99),
            p99_9_ms: q(0.999),
            p99_99_ms: q(0.9999),
            max_ms: ms(h.max()),
        }
    }
}

/// The result of a run: what `smp-agent load --output json|yaml` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    /// Requests per second asked for; absent for closed-loop (`--rate max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_rate: Option<f64>,
    /// Responses per second actually received during the measured part.
    pub achieved_rate: f64,
    /// Wall time of the measured part, seconds (warm-up excluded).
    pub duration_s: f64,
    /// Concurrent connections.
    pub connections: u64,
    /// Responses received (any status).
    pub requests: u64,
    /// Responses by HTTP status code.
    pub status_codes: BTreeMap<u16, u64>,
    /// gRPC responses by `grpc-status` code (`--grpc` runs only; 0 is OK).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grpc_status: BTreeMap<u32, u64>,
    /// Requests without a response, by kind.
    pub errors: ErrorCounts,
    /// Open loop only: scheduled requests that could not be sent before the run ended (the
    /// target fell too far behind). Never silently dropped.
    pub missed: u64,
    /// HTTP bytes moved.
    pub bytes: ByteCounts,
    /// Latency statistics (from the histogram, so they survive merging exactly).
    pub latency: LatencySummary,
    /// The full latency histogram (µs), HdrHistogram V2 DEFLATE, base64.
    pub histogram: EncodedHistogram,
}

impl Results {
    /// The latency histogram (microseconds).
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram.0
    }

    fn recompute(&mut self) {
        self.requests = self.histogram.0.len();
        self.latency = LatencySummary::from_histogram(&self.histogram.0);
        self.achieved_rate = if self.duration_s > 0.0 {
            self.requests as f64 / self.duration_s
        } else {
            0.0
        };
    }

    /// Merges the results of runs that ran *at the same time* (e.g. one per node): counts and
    /// histograms add, rates add, the duration is the longest.
    pub fn merge(runs: &[Results]) -> Result<Results, LoadError> {
        let (first, rest) = runs.split_first().ok_or(LoadError::NothingToMerge)?;
        let mut out = first.clone();
        for r in rest {
            out.histogram
                .0
                .add(&r.histogram.0)
                .map_err(|e| LoadError::Histogram(format!("cannot merge histograms: {e:?}")))?;
            for (code, n) in &r.status_codes {
                *out.status_codes.entry(*code).or_default() += n;
            }
            for (code, n) in &r.grpc_status {
                *out.grpc_status.entry(*code).or_default() += n;
            }
            out.errors.add(&r.errors);
            out.missed += r.missed;
            out.bytes.sent += r.bytes.sent;
            out.bytes.received += r.bytes.received;
            out.connections += r.connections;
            out.requested_rate = match (out.requested_rate, r.requested_rate) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
            out.duration_s = out.duration_s.max(r.duration_s);
        }
        out.recompute();
        Ok(out)
    }

    /// The human summary printed at the end of `smp-agent load`.
    pub fn render_text(&self) -> String {
        use fmt::Write as _;
        let mut s = String::new();
        let l = &self.latency;
        let rate = match self.requested_rate {
            Some(r) => format!("{r:.1} req/s requested (open loop)"),
            None => "max (closed loop)".to_string(),
        };
        let _ = writeln!(
            s,
            "{} requests in {:.2}s over {} connections, rate {}",
            self.requests, self.duration_s, self.connections, rate
        );
        let _ = writeln!(s, "  achieved    {:>12.1} req/s", self.achieved_rate);
        let _ = writeln!(
            s,
            "  latency     min {} / mean {} / stddev {} / max {}",
            Ms(l.min_ms),
            Ms(l.mean_ms),
            Ms(l.stddev_ms),
            Ms(l.max_ms)
        );
        for (name, v) in [
            ("p50", l.p50_ms),
            ("p75", l.p75_ms),
            ("p90", l.p90_ms),
            ("p99", l.p99_ms),
            ("p99.9", l.p99_9_ms),
            ("p99.99", l.p99_99_ms),
        ] {
            let _ = writeln!(s, "  {name:<10}{:>14}", Ms(v).to_string());
        }
        let codes: Vec<String> = self
            .status_codes
            .iter()
            .map(|(c, n)| format!("{c}: {n}"))
            .collect();
        let _ = writeln!(
            s,
            "  status      {}",
            if codes.is_empty() {
                "-".to_string()
            } else {
                codes.join(", ")
            }
        );
        if !self.grpc_status.is_empty() {
            let codes: Vec<String> = self
                .grpc_status
                .iter()
                .map(|(c, n)| format!("{} ({c}): {n}", super::grpc::code_name(*c)))
                .collect();
            let _ = writeln!(s, "  grpc status {}", codes.join(", "));
        }
        let e = &self.errors;
        let _ = writeln!(
            s,
            "  errors      {} (connect {}, timeout {}, reset {}, protocol {}{})",
            e.total(),
            e.connect,
            e.timeout,
            e.reset,
            e.protocol,
            if self.grpc_status.is_empty() {
                String::new()
            } else {
                format!(", grpc non-OK {}", e.grpc)
            }
        );
        if self.missed > 0 {
            let _ = writeln!(
                s,
                "  missed      {} scheduled requests never sent (target too slow to keep up)",
                self.missed
            );
        }
        let _ = writeln!(
            s,
            "  bytes       sent {} / received {}",
            self.bytes.sent, self.bytes.received
        );
        s
    }
}

/// Formats milliseconds with a unit that keeps 3 significant digits readable.
struct Ms(f64);

impl fmt::Display for Ms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        if ms < 1.0 {
            write!(f, "{:.0}µs", ms * 1000.0)
        } else if ms < 1000.0 {
            write!(f, "{ms:.2}ms")
        } else {
            write!(f, "{:.2}s", ms / 1000.0)
        }
    }
}

/// A histogram that serializes as base64 of its HdrHistogram V2 DEFLATE encoding.
#[derive(Debug, Clone)]
pub struct EncodedHistogram(pub Histogram<u64>);

impl EncodedHistogram {
    /// The base64 text.
    pub fn encode(&self) -> Result<String, LoadError> {
        let mut buf = Vec::new();
        V2DeflateSerializer::new()
            .serialize(&self.0, &mut buf)
            .map_err(|e| LoadError::Histogram(format!("cannot encode histogram: {e:?}")))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(buf))
    }

    /// Parses the base64 text.
    pub fn decode(text: &str) -> Result<Self, LoadError> {
        // One bounded decoder for every histogram we read (lengths checked before allocating).
        crate::report::details::decode_v2_base64(text)
            .map(Self)
            .map_err(|e| LoadError::Histogram(format!("cannot decode histogram: {e}")))
    }
}

impl Serialize for EncodedHistogram {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = self.encode().map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for EncodedHistogram {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::decode(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(latencies_ms: &[u64], status: u16, rate: Option<f64>) -> Results {
        let mut r = Recorder::new();
        for &ms in latencies_ms {
            r.response(status, Duration::from_millis(ms));
        }
        r.error(ErrorKind::Reset);
        r.bytes_sent = 10;
        r.finish(RunMeta {
            requested_rate: rate,
            elapsed: Duration::from_secs(2),
            connections: 4,
        })
    }

    #[test]
    fn percentiles_and_counts() {
        let lat: Vec<u64> = (1..=1000).collect();
        let r = run(&lat, 200, Some(500.0));
        assert_eq!(r.requests, 1000);
        assert_eq!(r.status_codes.get(&200), Some(&1000));
        assert_eq!(r.errors.reset, 1);
        assert_eq!(r.errors.total(), 1);
        assert!((r.achieved_rate - 500.0).abs() < 1e-9);
        // 3 significant digits: within 0.1 %.
        assert!((r.latency.p50_ms - 500.0).abs() <= 0.5, "{:?}", r.latency);
        assert!((r.latency.p99_ms - 990.0).abs() <= 1.0, "{:?}", r.latency);
        assert!((r.latency.min_ms - 1.0).abs() <= 0.001);
        assert!((r.latency.max_ms - 1000.0).abs() <= 1.0);
        assert!((r.latency.mean_ms - 500.5).abs() <= 0.5);
    }

    #[test]
    fn odd_status_is_a_protocol_error() {
        let mut r = Recorder::new();
        r.response(999, Duration::from_millis(1));
        assert_eq!(r.responses(), 0);
        assert_eq!(r.errors.protocol, 1);
    }

    #[test]
    fn json_round_trip_is_lossless_and_merges() {
        let a = run(&[1, 2, 3, 60_000, 120_000], 200, Some(100.0));
        let b = run(&[5, 5, 5], 500, Some(50.0));
        let ja = serde_json::to_string(&a).unwrap();
        let a2: Results = serde_json::from_str(&ja).unwrap();
        assert_eq!(a2.histogram(), a.histogram());
        assert_eq!(a2.status_codes, a.status_codes);
        // 120 s saturates at the 60 s upper bound.
        assert!(a.latency.max_ms <= 60_100.0 && a.latency.max_ms >= 59_900.0);

        let yb = serde_yaml_ng::to_string(&b).unwrap();
        let b2: Results = serde_yaml_ng::from_str(&yb).unwrap();
        let m = Results::merge(&[a2, b2]).unwrap();
        assert_eq!(m.requests, 8);
        assert_eq!(m.status_codes.get(&200), Some(&5));
        assert_eq!(m.status_codes.get(&500), Some(&3));
        assert_eq!(m.errors.reset, 2);
        assert_eq!(m.bytes.sent, 20);
        assert_eq!(m.requested_rate, Some(150.0));
        assert_eq!(m.connections, 8);
        assert!((m.latency.p50_ms - 5.0).abs() < 0.01, "{:?}", m.latency);
    }

    #[test]
    fn grpc_statuses_are_counted_and_merged() {
        let mut r = Recorder::new();
        for code in [0, 0, 14, 3] {
            r.response(200, Duration::from_millis(1));
            r.grpc_status(code);
        }
        let meta = RunMeta {
            requested_rate: None,
            elapsed: Duration::from_secs(1),
            connections: 1,
        };
        let a = r.finish(meta);
        assert_eq!(a.requests, 4);
        assert_eq!(a.errors.grpc, 2);
        assert_eq!(a.errors.total(), 2);
        assert_eq!(a.grpc_status, BTreeMap::from([(0, 2), (3, 1), (14, 1)]));
        let text = a.render_text();
        assert!(text.contains("UNAVAILABLE (14): 1"), "{text}");
        assert!(text.contains("grpc non-OK 2"), "{text}");
        let j: Results = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        let m = Results::merge(&[a, j]).unwrap();
        assert_eq!(m.grpc_status.get(&14), Some(&2));
        assert_eq!(m.errors.grpc, 4);
        // An HTTP run's result says nothing about gRPC.
        let h = run(&[1], 200, None);
        let text = serde_json::to_string(&h).unwrap();
        assert!(!text.contains("grpc"), "{text}");
    }

    #[test]
    fn merge_of_nothing_is_an_error() {
        assert!(matches!(
            Results::merge(&[]),
            Err(LoadError::NothingToMerge)
        ));
    }

    #[test]
    fn bad_histogram_text_is_an_error() {
        assert!(EncodedHistogram::decode("not base64!").is_err());
        assert!(EncodedHistogram::decode("aGVsbG8=").is_err());
    }
}
