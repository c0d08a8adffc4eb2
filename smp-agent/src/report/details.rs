//! The details document: what a profile run measured that SMP has no field for. The SMP result
//! points to it with `details_uri`. Schema `smp-agent/details/v1`, documented field by field in
//! docs/smp.md. Written as JSON (`details.json`).
//!
//! All latencies are **milliseconds** (f64); histograms are lossless HdrHistograms of
//! **nanosecond** values, serialized V2 + DEFLATE and base64-encoded ([`EncodedHistogram`]),
//! the format `HistogramLogWriter` and the HdrHistogram tools use, so runs from several nodes
//! can be merged and re-summarised.
//!
//! Plain types: the `profile` command fills them from the aggregates.

use std::{collections::BTreeMap, fmt};

use base64::Engine as _;
use hdrhistogram::{
    serialization::{Deserializer as HdrDeserializer, Serializer as _, V2DeflateSerializer},
    Histogram,
};
use serde::{Deserialize, Serialize};

use super::smp::Timestamp;

/// The schema identifier we write in [`Details::schema`].
pub const DETAILS_SCHEMA: &str = "smp-agent/details/v1";

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_zero_f64(v: &f64) -> bool {
    *v == 0.0
}

/// Highest latency a histogram we create can hold: one hour, in nanoseconds.
pub const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A new latency histogram with our standard settings: nanosecond values from 1 ns to one hour,
/// 3 significant digits (0.1 % resolution), auto-resizing beyond that.
pub fn new_latency_histogram() -> Histogram<u64> {
    // Constant, valid bounds (low ≥ 1, high ≥ 2 × low, sigfig ≤ 5): cannot fail.
    let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3)
        .expect("constant histogram bounds are valid");
    h.auto(true);
    h
}

/// The details document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Details {
    /// Always [`DETAILS_SCHEMA`].
    pub schema: String,
    /// `PerformanceTestResult.id` this document belongs to.
    pub result_id: String,
    /// Who measured, where.
    pub tool: ToolInfo,
    /// Measurement window (the meshed run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    /// End of the measurement window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
    /// Client-observed end-to-end latency: meshed, baseline, and their difference.
    pub end_to_end: EndToEnd,
    /// Per-hop latency through each proxy, by (proxy, direction, leg).
    #[serde(default)]
    pub hops: Vec<Hop>,
    /// Resource use of each sidecar.
    #[serde(default)]
    pub sidecars: Vec<SidecarUsage>,
    /// What was not measured: drops and unpaired messages.
    #[serde(default)]
    pub losses: Losses,
    /// Σ hop medians vs. measured overhead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<ConsistencyCheck>,
    /// Where the time goes, per request: outbound sidecar, network leg, inbound sidecar,
    /// unexplained (absent when no path was joined or the run kept no hops).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<super::breakdown::Breakdown>,
    /// How the proxies sit beside the workloads, which SMP has no field for: sidecars (left
    /// out of the file), or Istio's ambient node proxy.
    #[serde(default, skip_serializing_if = "DataPlane::is_sidecars")]
    pub data_plane: DataPlane,
    /// What each node proxy (one proxy serving several pods: ztunnel in Istio's ambient
    /// mode) did for each pod, which SMP has no field for: its hops and apportioned shares
    /// of its CPU and memory, per pod served and peer. Absent when every proxy served one pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadShare>,
}

/// A node proxy's work for one pod it served, toward one peer pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadShare {
    /// Proxy name (as in `hops` and `sidecars`).
    pub proxy: String,
    /// The pod served: its name when the run knows it (the lab's `client` and `server`),
    /// else its address.
    pub workload: String,
    /// The pod's address.
    pub address: String,
    /// Outbound: the pod's own requests leaving through the proxy; inbound: requests
    /// reaching the pod.
    pub direction: Direction,
    /// The pod at the other end: name when known, else address.
    pub peer: String,
    /// Exchanges (request and response) the proxy carried for it.
    pub exchanges: u64,
    /// Request hops through the proxy.
    pub request_hop: Distribution,
    /// Response hops through the proxy.
    pub response_hop: Distribution,
    /// The proxy's on-CPU time apportioned to this row by its share of the proxy's
    /// exchanges, seconds: the rows of a proxy sum to its CPU (`sidecars`).
    pub cpu_seconds: f64,
    /// The same share of the proxy's CPU, millicores.
    pub cpu_mcores: f64,
    /// Connections its exchanges went through (distinct downstream and upstream pairs, at
    /// most 4 096 told apart per row).
    #[serde(default)]
    pub connections: u64,
    /// The proxy's memory (its `mem_mb` in `sidecars`) apportioned to this row by its share
    /// of the proxy's connections: a proxy holds buffers per connection, not per request.
    /// The rows of a proxy sum to its memory.
    #[serde(default)]
    pub mem_mb: f64,
}

/// How a mesh's proxies sit beside its workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPlane {
    /// A proxy in each pod, in front of its app (Envoy in Istio's sidecar mode, Linkerd, …).
    #[default]
    Sidecars,
    /// Istio's ambient mode: ztunnel, an L4 proxy, carries the pods' connections as HBONE
    /// (HTTP/2 CONNECT over mTLS); one per node, or one per pod in its dedicated mode.
    Ambient,
}

impl DataPlane {
    /// The data plane of proxies of these kinds: ambient when ztunnel is among them.
    pub fn of_kinds<'a>(mut kinds: impl Iterator<Item = &'a str>) -> Self {
        let ztunnel = crate::proxy::kind::ProxyKind::Ztunnel;
        if kinds.any(|k| k == ztunnel.name()) {
            Self::Ambient
        } else {
            Self::Sidecars
        }
    }

    /// True for [`DataPlane::Sidecars`].
    pub fn is_sidecars(&self) -> bool {
        *self == Self::Sidecars
    }
}

impl Details {
    /// An empty document for `result_id`, with this tool's version and the running kernel.
    pub fn new(result_id: impl Into<String>) -> Self {
        Self {
            schema: DETAILS_SCHEMA.to_string(),
            result_id: result_id.into(),
            tool: ToolInfo::current(),
            start_time: None,
            end_time: None,
            end_to_end: EndToEnd::default(),
            hops: Vec::new(),
            sidecars: Vec::new(),
            losses: Losses::default(),
            consistency: None,
            breakdown: None,
            data_plane: DataPlane::Sidecars,
            workloads: Vec::new(),
        }
    }

    /// The hop with this key, if measured.
    pub fn hop(&self, key: &HopKey) -> Option<&Hop> {
        self.hops.iter().find(|h| &h.key() == key)
    }
}

/// The tool and the machine it ran on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolInfo {
    /// `smp-agent`.
    pub name: String,
    /// Crate version.
    pub version: String,
    /// Kernel release (`uname -r`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kernel: String,
    /// Host name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
}

impl ToolInfo {
    /// This binary on this machine (kernel and host name from procfs; empty when unreadable).
    pub fn current() -> Self {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        Self {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            kernel: read("/proc/sys/kernel/osrelease"),
            hostname: read("/proc/sys/kernel/hostname"),
        }
    }
}

/// Latency percentiles, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percentiles {
    /// Minimum.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 75th.
    pub p75: f64,
    /// 90th.
    pub p90: f64,
    /// 95th.
    pub p95: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Percentiles {
    /// The quantiles, in field order after `min`/`mean` (for tables and plots).
    pub const QUANTILES: [(&'static str, f64); 6] = [
        ("p50", 0.50),
        ("p75", 0.75),
        ("p90", 0.90),
        ("p95", 0.95),
        ("p99", 0.99),
        ("p999", 0.999),
    ];

    /// From a histogram of nanosecond values.
    pub fn from_histogram_ns(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        let q = |q: f64| ms(h.value_at_quantile(q));
        Self {
            min: ms(h.min()),
            mean: h.mean() / 1e6,
            p50: q(0.50),
            p75: q(0.75),
            p90: q(0.90),
            p95: q(0.95),
            p99: q(0.99),
            p999: q(0.999),
            max: ms(h.max()),
        }
    }

    /// A named value (`min`, `mean`/`average`, `p50` … `p999`, `max`).
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "min" => self.min,
            "mean" | "average" | "avg" => self.mean,
            "p50" => self.p50,
            "p75" => self.p75,
            "p90" => self.p90,
            "p95" => self.p95,
            "p99" => self.p99,
            "p999" | "p99.9" => self.p999,
            "max" => self.max,
            _ => return None,
        })
    }

    /// `self − other`, field by field (the overhead when `self` is meshed, `other` baseline).
    pub fn minus(&self, other: &Percentiles) -> Percentiles {
        Percentiles {
            min: self.min - other.min,
            mean: self.mean - other.mean,
            p50: self.p50 - other.p50,
            p75: self.p75 - other.p75,
            p90: self.p90 - other.p90,
            p95: self.p95 - other.p95,
            p99: self.p99 - other.p99,
            p999: self.p999 - other.p999,
            max: self.max - other.max,
        }
    }
}

/// One latency distribution: count, percentiles and the lossless histogram.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distribution {
    /// Number of samples.
    pub count: u64,
    /// Percentiles, ms.
    pub percentiles: Percentiles,
    /// The histogram (ns values), when kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub histogram: Option<EncodedHistogram>,
}

impl Distribution {
    /// From a histogram of nanosecond values, keeping the histogram.
    pub fn from_histogram_ns(h: &Histogram<u64>) -> Result<Self, HistogramCodecError> {
        Ok(Self {
            count: h.len(),
            percentiles: Percentiles::from_histogram_ns(h),
            histogram: Some(EncodedHistogram::encode(h)?),
        })
    }
}

/// One side of the A/B run (meshed or baseline), as the load generator saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSummary {
    /// URL the load went to.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Achieved requests/second.
    pub actual_qps: f64,
    /// Requests that failed (connect errors, non-2xx/3xx, non-OK gRPC statuses).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: u64,
    /// gRPC runs: responses by `grpc-status`, keyed `NAME (code)`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grpc_status: BTreeMap<String, u64>,
    /// Latency distribution.
    pub latency: Distribution,
}

/// Client-observed latency, meshed vs. baseline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndToEnd {
    /// Through the mesh (the run the SMP result describes).
    pub meshed: RunSummary,
    /// Same load bypassing the sidecars; absent without `--baseline-url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<RunSummary>,
    /// meshed − baseline, per percentile (ms); absent without a baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overhead: Option<Percentiles>,
}

impl EndToEnd {
    /// Sets `overhead` from `meshed` and `baseline`.
    pub fn compute_overhead(&mut self) {
        self.overhead = self.baseline.as_ref().map(|b| {
            self.meshed
                .latency
                .percentiles
                .minus(&b.latency.percentiles)
        });
    }
}

pub use crate::aggregate::hops::{Direction, Leg, Sides, WireProtocol};

/// Identifies a hop across runs: proxy name, direction, leg.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HopKey {
    /// Proxy name (stable across runs, unlike the pid).
    pub proxy: String,
    /// Direction.
    pub direction: Direction,
    /// Leg.
    pub leg: Leg,
}

impl fmt::Display for HopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.direction.name();
        let l = match self.leg {
            Leg::Request => "request",
            Leg::Response => "response",
        };
        write!(f, "{}/{d}/{l}", self.proxy)
    }
}

/// One hop: one pass of a message through one proxy (t_out − t_in, docs/design.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hop {
    /// Proxy name (e.g. `envoy-client`, or the comm).
    pub proxy: String,
    /// Proxy kind (`envoy`, `linkerd2-proxy`, `haproxy`, `nginx`, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Proxy pid during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Direction.
    pub direction: Direction,
    /// Why the hop has its direction, from the addresses its exchanges used.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub direction_reason: String,
    /// Leg.
    pub leg: Leg,
    /// Hop latency distribution.
    pub latency: Distribution,
    /// Messages seen entering but never paired with an exit (or vice versa).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unpaired: u64,
    /// How long the message waited in the proxy's socket before the proxy read it: from the
    /// arrival of its first bytes (`tcp_probe`) to `t_in`. Outside the hop by its definition,
    /// but part of what the proxy adds (wake-up and event-loop delay). Absent when no arrival
    /// was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Distribution>,
    /// Time inside the write that forwarded the message (its delivery to the next socket on
    /// this host). Outside the hop by its definition, part of what the proxy adds. Absent
    /// when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<Distribution>,
    /// What the proxy's two sides spoke in the hop's exchanges, most exchanges first (the
    /// same for both legs of a direction). Absent from older files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sides: Vec<SideShare>,
}

/// Exchanges of a hop whose proxy's two sides spoke `downstream` and `upstream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SideShare {
    pub downstream: WireProtocol,
    pub upstream: WireProtocol,
    pub exchanges: u64,
}

impl SideShare {
    /// `counts` as shares, most exchanges first.
    pub fn from_counts<'a>(
        counts: impl IntoIterator<Item = (&'a Sides, &'a u64)>,
    ) -> Vec<SideShare> {
        let mut v: Vec<SideShare> = counts
            .into_iter()
            .map(|(s, n)| SideShare {
                downstream: s.downstream,
                upstream: s.upstream,
                exchanges: *n,
            })
            .collect();
        v.sort_by(|a, b| {
            b.exchanges
                .cmp(&a.exchanges)
                .then(a.sides().cmp(&b.sides()))
        });
        v
    }

    /// The pair of protocols.
    pub fn sides(&self) -> Sides {
        Sides {
            downstream: self.downstream,
            upstream: self.upstream,
        }
    }
}

impl Hop {
    /// What its sides spoke, most exchanges first (`http1→h2c`, `tls→http1 h2c→http1`);
    /// empty when not known.
    pub fn sides_label(&self) -> String {
        let v: Vec<String> = self.sides.iter().map(|s| s.sides().to_string()).collect();
        v.join(" ")
    }

    /// The key that matches this hop across runs.
    pub fn key(&self) -> HopKey {
        HopKey {
            proxy: self.proxy.clone(),
            direction: self.direction,
            leg: self.leg,
        }
    }
}

/// Resource use of one sidecar over the meshed run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SidecarUsage {
    /// Proxy name.
    pub proxy: String,
    /// Proxy kind.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// On-CPU time of all its threads (scheduler accounting), seconds.
    pub cpu_seconds: f64,
    /// Mean CPU, millicores (1000 = one core).
    pub cpu_mcores: f64,
    /// CPU per request, microseconds.
    pub cpu_us_per_request: f64,
    /// vCPU per 1 000 requests/second (Istio's published figure): cpu_mcores / rps.
    pub vcpu_per_1000_rps: f64,
    /// Memory over the run, MB (MiB): the mean of the samples, PSS where readable, else RSS
    /// (`proxy::memory`; SMP's `mem_mb`).
    pub mem_mb: f64,
    /// Peak of the same samples, MB; 0 when not sampled.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub mem_peak_mb: f64,
    /// Requests it handled.
    pub requests: u64,
    /// Bytes it forwarded (both directions).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bytes: u64,
}

impl SidecarUsage {
    /// Fills the derived figures from `cpu_seconds`, `requests` and the run length.
    pub fn derive(&mut self, run_seconds: f64) {
        let rps = if run_seconds > 0.0 {
            self.requests as f64 / run_seconds
        } else {
            0.0
        };
        self.cpu_mcores = if run_seconds > 0.0 {
            self.cpu_seconds / run_seconds * 1000.0
        } else {
            0.0
        };
        self.cpu_us_per_request = if self.requests > 0 {
            self.cpu_seconds * 1e6 / self.requests as f64
        } else {
            0.0
        };
        // vCPU at 1000 rps = (cores used / rps) × 1000 = cpu_mcores / rps.
        self.vcpu_per_1000_rps = if rps > 0.0 {
            self.cpu_mcores / rps
        } else {
            0.0
        };
    }
}

/// Everything that was seen but not measured. Loss is data: a result with losses is still
/// written, with the counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Losses {
    /// Records the kernel could not push to the ring buffer.
    pub ringbuf_drops: u64,
    /// Map inserts that failed because a map was full.
    pub map_full: u64,
    /// Hop messages never paired (sum over hops), HTTP/2 messages included (the probes time
    /// them per connection direction, they pair none).
    pub unpaired: u64,
    /// Hops paired out of all observed.
    pub paired: u64,
    /// Why messages went unpaired, by reason (`http2`, `unmatched_write`, `unknown_role`,
    /// …, as the `reason` label of `smp_unpaired_messages_total`); reasons with no message
    /// are left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unpaired_reasons: BTreeMap<String, u64>,
    /// The probes' own losses by reason (as the `reason` label of `smp_events_lost_total`:
    /// `ringbuf_full`, `map_full`, `kernel_read_failed`, `state_evicted`, `undecodable`, …);
    /// reasons with no loss are left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub events_lost: BTreeMap<String, u64>,
    /// Exchanges the probes paired but the hops leave out, by reason: `before_window` (its
    /// request reached the proxy before the measurement window began: the warm-up's last,
    /// completed or read after), `unattributed` (of a process discovery had not attributed to a proxy,
    /// over the whole run, warm-up included). Reasons with none are left out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exchanges_left_out: BTreeMap<String, u64>,
}

/// The self-consistency check: the per-hop medians should add up to the measured overhead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyCheck {
    /// Σ over the hops of their p50, ms.
    pub sum_hop_p50_ms: f64,
    /// Σ over the hops of their wait p50 (time in the proxy's socket before it read the
    /// message), ms; 0 when not measured.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub sum_wait_p50_ms: f64,
    /// Σ over the hops of their send p50 (time inside the forwarding write), ms; 0 when not
    /// measured.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub sum_send_p50_ms: f64,
    /// meshed p50 − baseline p50, ms.
    pub overhead_p50_ms: f64,
    /// `sum_hop_p50_ms + sum_wait_p50_ms + sum_send_p50_ms − overhead_p50_ms`, ms.
    pub difference_ms: f64,
    /// Allowed |difference|, ms: the larger of the relative and absolute bounds and
    /// [`Self::ends_wake_ms`].
    pub tolerance_ms: f64,
    /// Two wake-ups of a task on an idle CPU, measured on this machine before the runs
    /// (`host::wake`), ms (0: not measured). A meshed request's ends are woken by the
    /// sidecars, often on another CPU, where in the baseline they wake each other: time no
    /// proxy's socket holds, so the check cannot resolve a difference below it.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub ends_wake_ms: f64,
    /// Verdict.
    pub verdict: ConsistencyVerdict,
    /// The hops summed (`proxy/direction/leg`): every hop measured, of every direction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hops_used: Vec<String>,
}

/// Whether the hops explain the overhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyVerdict {
    /// |difference| ≤ tolerance.
    Consistent,
    /// |difference| > tolerance.
    Inconsistent,
}

impl ConsistencyCheck {
    /// Computes the check: tolerance is `max(abs_ms, rel × |overhead|, ends_wake_ms)`.
    pub fn compute(
        hops: &[Hop],
        overhead_p50_ms: f64,
        abs_ms: f64,
        rel: f64,
        ends_wake_ms: f64,
    ) -> Self {
        let sum: f64 = hops.iter().map(|h| h.latency.percentiles.p50).sum();
        let p50s = |f: fn(&Hop) -> Option<&Distribution>| -> f64 {
            hops.iter().filter_map(f).map(|d| d.percentiles.p50).sum()
        };
        let waits = p50s(|h| h.wait.as_ref());
        let sends = p50s(|h| h.send.as_ref());
        let difference = sum + waits + sends - overhead_p50_ms;
        let tolerance = abs_ms.max(rel * overhead_p50_ms.abs()).max(ends_wake_ms);
        Self {
            sum_hop_p50_ms: sum,
            sum_wait_p50_ms: waits,
            sum_send_p50_ms: sends,
            overhead_p50_ms,
            difference_ms: difference,
            tolerance_ms: tolerance,
            ends_wake_ms,
            verdict: if difference.abs() <= tolerance {
                ConsistencyVerdict::Consistent
            } else {
                ConsistencyVerdict::Inconsistent
            },
            hops_used: hops.iter().map(|h| h.key().to_string()).collect(),
        }
    }
}

/// A histogram serialized losslessly: HdrHistogram V2 + DEFLATE, base64 (standard alphabet,
/// padded). Values are nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodedHistogram {
    /// Always `hdrhistogram-v2-deflate-base64`.
    pub encoding: String,
    /// Unit of the recorded values: `ns`.
    pub unit: String,
    /// The payload.
    pub data: String,
}

/// The encoding name in [`EncodedHistogram::encoding`].
pub const HISTOGRAM_ENCODING: &str = "hdrhistogram-v2-deflate-base64";

/// A histogram could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum HistogramCodecError {
    /// Serialization failed.
    #[error("cannot serialize the histogram: {0:?}")]
    Serialize(hdrhistogram::serialization::V2DeflateSerializeError),
    /// Unknown encoding or unit.
    #[error("unsupported histogram encoding {encoding:?} / unit {unit:?} (expected {HISTOGRAM_ENCODING:?} / \"ns\")")]
    Unsupported {
        /// Encoding found.
        encoding: String,
        /// Unit found.
        unit: String,
    },
    /// Not base64.
    #[error("histogram data is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not an HdrHistogram.
    #[error("histogram data is not a V2 HdrHistogram: {0:?}")]
    Deserialize(hdrhistogram::serialization::DeserializeError),
    /// A V2 header or its framing is wrong.
    #[error("histogram data is not a valid V2 HdrHistogram: {0}")]
    Invalid(&'static str),
    /// The data claims more than we decode.
    #[error("{what} of {size} is over the limit of {limit}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size (bytes, or counters).
        size: u64,
        /// The limit.
        limit: u64,
    },
}

impl EncodedHistogram {
    /// Encodes a histogram of nanosecond values.
    pub fn encode(h: &Histogram<u64>) -> Result<Self, HistogramCodecError> {
        let mut buf = Vec::new();
        V2DeflateSerializer::new()
            .serialize(h, &mut buf)
            .map_err(HistogramCodecError::Serialize)?;
        Ok(Self {
            encoding: HISTOGRAM_ENCODING.to_string(),
            unit: "ns".to_string(),
            data: base64::engine::general_purpose::STANDARD.encode(&buf),
        })
    }

    /// Decodes it.
    pub fn decode(&self) -> Result<Histogram<u64>, HistogramCodecError> {
        if self.encoding != HISTOGRAM_ENCODING || self.unit != "ns" {
            return Err(HistogramCodecError::Unsupported {
                encoding: self.encoding.clone(),
                unit: self.unit.clone(),
            });
        }
        decode_v2_base64(&self.data)
    }
}

/// Largest base64 text of one histogram we decode (ours are a few KiB).
pub const MAX_HISTOGRAM_TEXT: usize = 1 << 20;
/// Largest inflated V2 serialization we decode (header + payload).
pub const MAX_HISTOGRAM_BYTES: usize = 4 << 20;
/// Most counters a decoded histogram may have (8 bytes each: 16 MiB). Ours, 1 ns..1 h at 3
/// digits, have about 45 000.
pub const MAX_HISTOGRAM_COUNTS: u64 = 1 << 21;

const V2_COOKIE: u32 = 0x1c84_9303 | 0x10;
const V2_COMPRESSED_COOKIE: u32 = 0x1c84_9304 | 0x10;
/// cookie, payload length, normalizing offset, digits, low, high, int-to-double ratio.
const V2_HEADER_LEN: usize = 4 + 4 + 4 + 4 + 8 + 8 + 8;

/// Decodes base64 of an HdrHistogram V2 (+DEFLATE) serialization, whatever its unit.
///
/// The input comes from others' files, so every length and bound is checked before anything is
/// allocated from it: the text size, the compressed length against the bytes present, the
/// inflated size ([`MAX_HISTOGRAM_BYTES`]), the payload length against the bytes present, and
/// the number of counters the bounds imply ([`MAX_HISTOGRAM_COUNTS`]). Only then does
/// hdrhistogram decode the (inflated) V2 bytes.
pub fn decode_v2_base64(text: &str) -> Result<Histogram<u64>, HistogramCodecError> {
    let text = text.trim();
    if text.len() > MAX_HISTOGRAM_TEXT {
        return Err(HistogramCodecError::TooLarge {
            what: "base64 text",
            size: text.len() as u64,
            limit: MAX_HISTOGRAM_TEXT as u64,
        });
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(text)?;
    let v2 = inflate_v2(&bytes)?;
    check_v2_header(&v2)?;
    HdrDeserializer::new()
        .deserialize(&mut v2.as_slice())
        .map_err(HistogramCodecError::Deserialize)
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The uncompressed V2 serialization in `bytes` (inflated when compressed), at most
/// [`MAX_HISTOGRAM_BYTES`].
fn inflate_v2(bytes: &[u8]) -> Result<Vec<u8>, HistogramCodecError> {
    use std::io::Read as _;
    let invalid = |why| HistogramCodecError::Invalid(why);
    match be_u32(bytes, 0) {
        Some(V2_COOKIE) => Ok(bytes.to_vec()),
        Some(V2_COMPRESSED_COOKIE) => {
            let len = be_u32(bytes, 4).ok_or(invalid("truncated header"))? as usize;
            let deflated = bytes
                .get(8..)
                .and_then(|rest| rest.get(..len))
                .ok_or(invalid("compressed length beyond the data"))?;
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(deflated)
                .take(MAX_HISTOGRAM_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|_| invalid("corrupt DEFLATE data"))?;
            if out.len() > MAX_HISTOGRAM_BYTES {
                return Err(HistogramCodecError::TooLarge {
                    what: "inflated histogram",
                    size: out.len() as u64,
                    limit: MAX_HISTOGRAM_BYTES as u64,
                });
            }
            if be_u32(&out, 0) != Some(V2_COOKIE) {
                return Err(invalid("no V2 cookie inside the compressed data"));
            }
            Ok(out)
        }
        _ => Err(invalid("no V2 cookie")),
    }
}

/// Checks an uncompressed V2 header: the payload is present in full, the bounds are valid and
/// imply at most [`MAX_HISTOGRAM_COUNTS`] counters.
fn check_v2_header(v2: &[u8]) -> Result<(), HistogramCodecError> {
    let invalid = |why| HistogramCodecError::Invalid(why);
    if v2.len() < V2_HEADER_LEN {
        return Err(invalid("truncated header"));
    }
    let field32 = |at| be_u32(v2, at).ok_or(invalid("truncated header"));
    let field64 = |at| be_u64(v2, at).ok_or(invalid("truncated header"));
    let payload_len = field32(4)? as usize;
    if payload_len > v2.len() - V2_HEADER_LEN {
        return Err(invalid("payload length beyond the data"));
    }
    let digits = field32(12)?;
    let (low, high) = (field64(16)?, field64(24)?);
    if !(1..=5).contains(&digits) || low < 1 || high < low.saturating_mul(2) {
        return Err(invalid("invalid bounds"));
    }
    let counts = counts_len(low, high, digits);
    if counts > MAX_HISTOGRAM_COUNTS {
        return Err(HistogramCodecError::TooLarge {
            what: "histogram (counters)",
            size: counts,
            limit: MAX_HISTOGRAM_COUNTS,
        });
    }
    Ok(())
}

/// Number of counters HdrHistogram allocates for these bounds (its own sizing rule).
fn counts_len(low: u64, high: u64, digits: u32) -> u64 {
    let largest_single_unit = 2 * 10u64.pow(digits);
    let sub_bucket_magnitude = u64::BITS - (largest_single_unit - 1).leading_zeros();
    let sub_bucket_count = 1u64 << sub_bucket_magnitude.min(62);
    let unit_magnitude = u64::BITS - 1 - low.leading_zeros();
    // Buckets until the smallest untrackable value exceeds `high`.
    let mut untrackable = u128::from(sub_bucket_count) << unit_magnitude;
    let mut buckets = 1u64;
    while untrackable <= u128::from(high) {
        untrackable <<= 1;
        buckets += 1;
    }
    (buckets + 1) * (sub_bucket_count / 2)
}

/// The same distribution with every value multiplied by `factor` (e.g. µs → ns: 1000), each
/// bucket at its median-equivalent value. `None` if a scaled value does not fit.
pub fn scale_histogram(h: &Histogram<u64>, factor: u64) -> Option<Histogram<u64>> {
    let mut out = new_latency_histogram();
    for v in h.iter_recorded() {
        let value = h
            .median_equivalent(v.value_iterated_to())
            .checked_mul(factor)?;
        out.record_n(value.max(1), v.count_at_value()).ok()?;
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests;
