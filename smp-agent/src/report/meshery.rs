//! Result layouts Meshery produced that are not the SMP proto layout, read so `compare` can use
//! them:
//!
//! - [`LegacyBenchmark`]: Meshery's 2020 "SMP" export (its `BenchmarkSpec` Go struct), the only
//!   published SMP result sample (`service mesh performance result.yaml`). It flattens test,
//!   result, environment and mesh config into one document; `client.rps` is the *achieved*
//!   rate and `client.latencies_ms` holds **seconds**.
//! - [`MesheryResult`]: the record Meshery stores and serves (`runner_results` in Fortio's
//!   layout, durations in seconds), e.g. the smp-spec.io dashboard's `test-results.json`.
//!
//! Markers that identify Meshery output are in [`MESHERY_PLACEHOLDER_IDS`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::smp::{Latency, PerformanceTestResult, StringMap, Timestamp};

/// The hard-coded placeholders Meshery's `ConvertToSpec` writes into a proto-layout result
/// (`smp_version`, `test_id`, `details_uri`, `mesh_config_id`, `env_id`).
pub const MESHERY_PLACEHOLDER_IDS: &[&str] = &[
    "test_smp_version",
    "test_test_id",
    "test_details",
    "test_meshconfigID",
    "test_envID",
];

/// Whether a proto-layout result carries Meshery's placeholder ids (so its `latencies_ms`
/// are seconds).
pub fn has_meshery_placeholders(r: &PerformanceTestResult) -> bool {
    [
        &r.smp_version,
        &r.test_id,
        &r.details_uri,
        &r.mesh_config_id,
        &r.env_id,
    ]
    .iter()
    .any(|v| MESHERY_PLACEHOLDER_IDS.contains(&v.as_str()))
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Meshery's legacy (2020) result export, `BenchmarkSpec`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyBenchmark {
    /// Start (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Timestamp>,
    /// End (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<Timestamp>,
    /// Mesh build.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mesh_build: String,
    /// Proxy build.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proxy_build: String,
    /// Experiment group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exp_group_uuid: String,
    /// Experiment id.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub exp_uuid: String,
    /// Install profile.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub profile: String,
    /// Details link.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details_uri: String,
    /// Target URL.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint_url: String,
    /// Environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<LegacyEnv>,
    /// Mesh settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<LegacyConfig>,
    /// Client and its latencies.
    pub client: LegacyClient,
    /// Component usage blocks (never filled by Meshery: `{}`).
    #[serde(default)]
    pub metrics: BTreeMap<String, LegacyComponent>,
}

/// `BenchmarkSpec.env`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyEnv {
    /// Kubernetes version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kubernetes: String,
    /// Nodes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub node_count: i64,
}

/// `BenchmarkSpec.config`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyConfig {
    /// Policy on.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mesh_policy_enabled: bool,
    /// Telemetry on.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mesh_telemetry_enabled: bool,
    /// mTLS on.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mtls_enabled: bool,
    /// Proxy worker threads.
    #[serde(default, skip_serializing_if = "is_default")]
    pub proxy_concurrency: i64,
}

/// `BenchmarkSpec.client`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacyClient {
    /// Internal client.
    #[serde(default, skip_serializing_if = "is_default")]
    pub internal: bool,
    /// Protocol (free string in this layout).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    /// Connections.
    #[serde(default, skip_serializing_if = "is_default")]
    pub connections: i64,
    /// **Achieved** rate, requests/second.
    #[serde(default, skip_serializing_if = "is_default")]
    pub rps: f64,
    /// Latency summary in **seconds** despite the name.
    #[serde(default)]
    pub latencies_ms: Latency,
}

/// One `BenchmarkSpec.metrics.*` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyComponent {
    /// Instances.
    #[serde(default, skip_serializing_if = "is_default")]
    pub count: i64,
    /// Millicores (Meshery spelled it `cpu_mCores`).
    #[serde(
        default,
        rename = "cpu_mCores",
        alias = "cpu_mcores",
        skip_serializing_if = "is_default"
    )]
    pub cpu_mcores: i64,
    /// MB.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mem_mb: i64,
    /// Requests/second.
    #[serde(default, skip_serializing_if = "is_default")]
    pub rps: i64,
    /// Bytes.
    #[serde(default, skip_serializing_if = "is_default")]
    pub bps: i64,
    /// Control-plane and other extras.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl LegacyBenchmark {
    /// The same figures in the proto layout. Latencies stay as they are (seconds); the caller
    /// converts.
    pub fn to_result(&self) -> PerformanceTestResult {
        let mut labels = StringMap::new();
        if !self.endpoint_url.is_empty() {
            labels.insert("endpoint_url".into(), self.endpoint_url.clone());
        }
        PerformanceTestResult {
            id: self.exp_uuid.clone(),
            labels,
            start_time: self.start_time,
            end_time: self.end_time,
            latencies_ms: Some(self.client.latencies_ms.clone()),
            actual_qps: self.client.rps,
            details_uri: self.details_uri.clone(),
            ..Default::default()
        }
    }
}

/// A Meshery result record (`MesheryResult`), the fields `compare` needs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MesheryResult {
    /// Record id.
    #[serde(default, alias = "mesheryId")]
    pub meshery_id: Option<String>,
    /// Test name.
    #[serde(default)]
    pub name: Option<String>,
    /// Mesh name (free string).
    #[serde(default)]
    pub mesh: Option<String>,
    /// The load generator's output; the dashboard copy stores it as a one-element list.
    #[serde(alias = "runnerResults")]
    pub runner_results: OneOrMany<FortioResult>,
}

/// A value, or a list whose first element is used.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// One.
    One(T),
    /// Many.
    Many(Vec<T>),
}

impl<T: Default> Default for OneOrMany<T> {
    fn default() -> Self {
        OneOrMany::One(T::default())
    }
}

impl<T> OneOrMany<T> {
    /// The first value.
    pub fn first(&self) -> Option<&T> {
        match self {
            OneOrMany::One(t) => Some(t),
            OneOrMany::Many(v) => v.first(),
        }
    }
}

/// Fortio's `HTTPRunnerResults`, the fields `compare` needs (seconds, nanoseconds).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FortioResult {
    /// Start time.
    #[serde(default)]
    pub start_time: Option<Timestamp>,
    /// Achieved rate.
    #[serde(default, rename = "ActualQPS")]
    pub actual_qps: f64,
    /// Elapsed, nanoseconds.
    #[serde(default)]
    pub actual_duration: i64,
    /// Connections.
    #[serde(default)]
    pub num_threads: i64,
    /// Latency histogram, seconds.
    #[serde(default)]
    pub duration_histogram: FortioHistogram,
}

/// Fortio histogram summary (seconds).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FortioHistogram {
    /// Samples.
    #[serde(default)]
    pub count: u64,
    /// Min.
    #[serde(default)]
    pub min: f64,
    /// Max.
    #[serde(default)]
    pub max: f64,
    /// Mean.
    #[serde(default)]
    pub avg: f64,
    /// Percentiles.
    #[serde(default)]
    pub percentiles: Option<Vec<FortioPercentile>>,
    /// Buckets.
    #[serde(default)]
    pub data: Option<Vec<FortioBucket>>,
}

/// One Fortio histogram bucket (seconds).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FortioBucket {
    /// Lower bound, seconds.
    pub start: f64,
    /// Upper bound, seconds.
    pub end: f64,
    /// Samples in the bucket.
    pub count: u64,
}

impl FortioHistogram {
    /// An HdrHistogram (ns values) rebuilt from the buckets, each bucket's samples at its
    /// midpoint: approximate, good enough for a bootstrap. `None` without buckets.
    pub fn to_histogram_ns(&self) -> Option<hdrhistogram::Histogram<u64>> {
        let buckets = self.data.as_ref().filter(|d| !d.is_empty())?;
        let mut h = hdrhistogram::Histogram::<u64>::new(3).ok()?;
        for b in buckets {
            let mid_ns = ((b.start + b.end) / 2.0 * 1e9).max(1.0);
            if mid_ns.is_finite() && b.count > 0 {
                h.record_n(mid_ns as u64, b.count).ok()?;
            }
        }
        (!h.is_empty()).then_some(h)
    }
}

/// One Fortio percentile.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FortioPercentile {
    /// e.g. 99.
    pub percentile: f64,
    /// Seconds.
    pub value: f64,
}

impl MesheryResult {
    /// The figures as a proto-layout result, latencies converted to **milliseconds**
    /// (Fortio's are seconds); `None` without runner results.
    pub fn to_result_ms(&self) -> Option<PerformanceTestResult> {
        let f = self.runner_results.first()?;
        let h = &f.duration_histogram;
        let pct = |p: f64| {
            h.percentiles
                .iter()
                .flatten()
                .find(|x| (x.percentile - p).abs() < 1e-9)
                .map_or(0.0, |x| x.value)
        };
        let latency = Latency {
            min: h.min,
            average: h.avg,
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            max: h.max,
        }
        .scaled(1000.0);
        let end_time = f.start_time.and_then(|s| {
            Timestamp::from_unix_nanos(s.unix_nanos() + i128::from(f.actual_duration))
        });
        let mut labels = StringMap::new();
        if let Some(m) = self.mesh.as_deref().filter(|m| !m.is_empty()) {
            labels.insert("mesh".into(), m.to_string());
        }
        if let Some(n) = &self.name {
            labels.insert("name".into(), n.clone());
        }
        Some(PerformanceTestResult {
            id: self.meshery_id.clone().unwrap_or_default(),
            labels,
            start_time: f.start_time,
            end_time,
            latencies_ms: Some(latency),
            actual_qps: f.actual_qps,
            ..Default::default()
        })
    }
}
