//! Comparing two results: ours (a results directory or `result.yaml`), SMP results from other
//! tools, and Meshery's layouts (whose `latencies_ms` hold seconds: detected and converted).
//!
//! Deltas are `B − A` (A is the reference, B the candidate). Significance comes from a
//! bootstrap over the two latency histograms when both sides have one (ours always do, in the
//! details document; Fortio records carry a bucketed one); otherwise it cannot be judged.
//! Thresholds (`p99>+10%`, `p50>+2ms`, `qps<-5%`) turn the comparison into a CI gate.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    details::{Details, Hop},
    file::{self, SmpFileError, Strictness},
    meshery::{self, LegacyBenchmark, MesheryResult},
    set::{self, RESULT_FILE, TEST_CONFIG_FILE},
    smp::{Latency, LatencyStat, PerformanceTestResult, TestConfigFile, LATENCY_UNIT_LABEL},
};

// ---------------------------------------------------------------------------------------------
// Loading one side.

/// The unit a file's `latencies_ms` values are in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyUnit {
    /// Milliseconds, as the spec says.
    Milliseconds,
    /// Seconds (Meshery's exports).
    Seconds,
}

impl LatencyUnit {
    /// Factor that converts a value in this unit to milliseconds.
    pub fn to_ms(self) -> f64 {
        match self {
            LatencyUnit::Milliseconds => 1.0,
            LatencyUnit::Seconds => 1000.0,
        }
    }
}

impl FromStr for LatencyUnit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ms" => Ok(LatencyUnit::Milliseconds),
            "s" => Ok(LatencyUnit::Seconds),
            _ => Err(format!("unknown latency unit {s:?} (expected ms or s)")),
        }
    }
}

/// Why we believe a unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnitEvidence {
    /// The file says so (`labels.latency_unit`), as smp-agent writes.
    Label {
        /// The label value.
        value: String,
    },
    /// The user said so (`--a-unit`/`--b-unit`).
    Assumed,
    /// Meshery's legacy export layout (`client.latencies_ms`): always seconds.
    MesheryLegacyLayout,
    /// Meshery's `ConvertToSpec` placeholder ids (`test_test_id`, …): seconds.
    MesheryPlaceholders,
    /// A Meshery/Fortio record: seconds in the source, converted while reading.
    FortioRecord,
    /// `smp-agent load` results: `*_ms` fields.
    LoadRunFields,
    /// Little's law: at `connections` concurrent requests, reading the values as seconds
    /// would cap the rate far below the achieved `actual_qps`.
    LittlesLaw {
        /// Concurrency.
        connections: i64,
        /// Achieved rate.
        actual_qps: f64,
        /// Highest rate possible if the mean were in seconds.
        max_qps_if_seconds: f64,
    },
    /// No marker: the mean is below 0.05 and the max below 2, implausible in milliseconds
    /// for a request through a load generator, usual in seconds.
    ImplausiblySmall {
        /// Mean as written.
        average: f64,
    },
    /// No marker and nothing implausible: the spec's milliseconds.
    SpecDefault,
}

impl fmt::Display for UnitEvidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitEvidence::Label { value } => write!(f, "label {LATENCY_UNIT_LABEL}={value}"),
            UnitEvidence::Assumed => f.write_str("given on the command line"),
            UnitEvidence::MesheryLegacyLayout => {
                f.write_str("Meshery legacy export layout (client.latencies_ms holds seconds)")
            }
            UnitEvidence::MesheryPlaceholders => {
                f.write_str("Meshery ConvertToSpec placeholder ids (its latencies_ms hold seconds)")
            }
            UnitEvidence::FortioRecord => {
                f.write_str("Meshery/Fortio record (seconds, converted to ms)")
            }
            UnitEvidence::LoadRunFields => f.write_str("smp-agent load results (*_ms fields)"),
            UnitEvidence::LittlesLaw {
                connections,
                actual_qps,
                max_qps_if_seconds,
            } => write!(
                f,
                "{actual_qps:.1} req/s over {connections} connections is impossible if these \
                 were seconds (at most {max_qps_if_seconds:.1} req/s)"
            ),
            UnitEvidence::ImplausiblySmall { average } => write!(
                f,
                "no unit marker; a mean of {average} would be implausibly small in ms \
                 (heuristic: Meshery-style seconds; override with --a-unit/--b-unit)"
            ),
            UnitEvidence::SpecDefault => f.write_str("no marker; the spec's milliseconds"),
        }
    }
}

/// What kind of file a side came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// An smp-agent results directory.
    ResultsDir,
    /// A `PerformanceTestResult` file.
    SmpResult,
    /// Meshery's legacy export.
    MesheryLegacy,
    /// A Meshery result record (Fortio layout).
    MesheryRecord,
    /// `smp-agent load --output json|yaml` results.
    LoadRun,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::ResultsDir => "smp-agent results directory",
            SourceKind::SmpResult => "SMP PerformanceTestResult",
            SourceKind::MesheryLegacy => "Meshery legacy SMP export",
            SourceKind::MesheryRecord => "Meshery result record (Fortio)",
            SourceKind::LoadRun => "smp-agent load results",
        })
    }
}

/// One side of a comparison, latencies in milliseconds.
#[derive(Debug, Clone)]
pub struct Side {
    /// Where it came from.
    pub source: PathBuf,
    /// What it was.
    pub kind: SourceKind,
    /// The result, `latencies_ms` converted to milliseconds.
    pub result: PerformanceTestResult,
    /// The unit the file used.
    pub unit: LatencyUnit,
    /// Why.
    pub unit_evidence: UnitEvidence,
    /// Concurrency, when known.
    pub connections: Option<i64>,
    /// Details document, when the result references one that could be read.
    pub details: Option<Details>,
    /// End-to-end latency histogram (ns), from the details or a Fortio record.
    pub histogram: Option<Histogram<u64>>,
    /// Whether [`Self::histogram`] is exact (HdrHistogram) or rebuilt from buckets.
    pub histogram_exact: bool,
    /// Things the reader noticed.
    pub notes: Vec<String>,
}

/// Errors loading a side.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    /// A file could not be read or parsed.
    #[error(transparent)]
    File(#[from] SmpFileError),
    /// The file has no latency figures to compare.
    #[error("{}: no latencies to compare (no latencies_ms / runner results)", path.display())]
    NoLatencies {
        /// The file.
        path: PathBuf,
    },
    /// The file is an SMP document, but not a result.
    #[error("{}: this is a test configuration ({{test, mesh}}), not a result; compare result files or results directories", path.display())]
    NotAResult {
        /// The file.
        path: PathBuf,
    },
    /// A list of Meshery records with no element.
    #[error("{}: empty list of results", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// Loads one side: a results directory, or a result file of any supported layout.
/// `unit` forces the unit of `latencies_ms` (else detected).
pub fn load_side(path: &Path, unit: Option<LatencyUnit>) -> Result<Side, CompareError> {
    if path.is_dir() {
        let mut side = load_result_file(&path.join(RESULT_FILE), SourceKind::ResultsDir, unit)?;
        side.source = path.to_path_buf();
        return Ok(side);
    }
    let text = file::read_text(path)?;
    let shape = sniff(&text, path);
    match shape {
        Shape::MesheryRecords => {
            let records: Vec<MesheryResult> = file::parse_plain(&text, path)?;
            let n = records.len();
            let first = records
                .into_iter()
                .next()
                .ok_or_else(|| CompareError::Empty {
                    path: path.to_path_buf(),
                })?;
            let mut side = from_meshery_record(path, &first)?;
            if n > 1 {
                side.notes
                    .push(format!("{n} records in the file; using the first"));
            }
            Ok(side)
        }
        Shape::MesheryRecord => {
            let record: MesheryResult = file::parse_plain(&text, path)?;
            from_meshery_record(path, &record)
        }
        Shape::MesheryLegacy => {
            let legacy: LegacyBenchmark = file::parse_plain(&text, path)?;
            let unit_used = unit.unwrap_or(LatencyUnit::Seconds);
            let evidence = if unit.is_some() {
                UnitEvidence::Assumed
            } else {
                UnitEvidence::MesheryLegacyLayout
            };
            let mut result = legacy.to_result();
            convert(&mut result, unit_used);
            Ok(Side {
                source: path.to_path_buf(),
                kind: SourceKind::MesheryLegacy,
                result,
                unit: unit_used,
                unit_evidence: evidence,
                connections: Some(legacy.client.connections).filter(|c| *c > 0),
                details: None,
                histogram: None,
                histogram_exact: false,
                notes: Vec::new(),
            })
        }
        Shape::SmpResult => load_result_file(path, SourceKind::SmpResult, unit),
        Shape::LoadRun => {
            let run: LoadRun = file::parse_plain(&text, path)?;
            Ok(from_load_run(path, &run))
        }
        Shape::TestConfig => Err(CompareError::NotAResult {
            path: path.to_path_buf(),
        }),
    }
}

enum Shape {
    SmpResult,
    LoadRun,
    TestConfig,
    MesheryLegacy,
    MesheryRecord,
    MesheryRecords,
}

fn sniff(text: &str, path: &Path) -> Shape {
    let value: Option<serde_json::Value> = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        serde_json::from_str(text).ok()
    } else {
        serde_yaml::from_str::<serde_yaml::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
    };
    let is_record = |v: &serde_json::Value| {
        v.get("runner_results").is_some() || v.get("runnerResults").is_some()
    };
    match value {
        Some(serde_json::Value::Array(a)) if a.first().is_some_and(is_record) => {
            Shape::MesheryRecords
        }
        Some(v) if is_record(&v) => Shape::MesheryRecord,
        Some(v)
            if v.get("client")
                .is_some_and(|c| c.get("latencies_ms").is_some()) =>
        {
            Shape::MesheryLegacy
        }
        Some(v) if v.get("test").is_some() && v.get("mesh").is_some() => Shape::TestConfig,
        Some(v)
            if v.get("achieved_rate").is_some()
                && v.get("latency").is_some_and(|l| l.get("p50_ms").is_some()) =>
        {
            Shape::LoadRun
        }
        _ => Shape::SmpResult,
    }
}

fn convert(result: &mut PerformanceTestResult, unit: LatencyUnit) {
    if let Some(l) = &mut result.latencies_ms {
        *l = l.scaled(unit.to_ms());
    }
}

/// The fields of `smp-agent load` results that `compare` uses (milliseconds; histogram of
/// microseconds, HdrHistogram V2 + DEFLATE, base64). Read leniently: other fields are ignored.
#[derive(Debug, Clone, serde::Deserialize)]
struct LoadRun {
    achieved_rate: f64,
    #[serde(default)]
    connections: u64,
    latency: LoadLatency,
    #[serde(default)]
    histogram: Option<String>,
}

#[derive(Debug, Clone, Copy, serde::Deserialize)]
struct LoadLatency {
    min_ms: f64,
    mean_ms: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn from_load_run(path: &Path, run: &LoadRun) -> Side {
    let l = run.latency;
    let mut notes = Vec::new();
    let histogram =
        run.histogram
            .as_deref()
            .and_then(|text| match super::details::decode_v2_base64(text) {
                Ok(us) => super::details::scale_histogram(&us, 1000),
                Err(e) => {
                    notes.push(format!("histogram not used: {e}"));
                    None
                }
            });
    Side {
        source: path.to_path_buf(),
        kind: SourceKind::LoadRun,
        result: PerformanceTestResult {
            latencies_ms: Some(Latency {
                min: l.min_ms,
                average: l.mean_ms,
                p50: l.p50_ms,
                p90: l.p90_ms,
                p99: l.p99_ms,
                max: l.max_ms,
            }),
            actual_qps: run.achieved_rate,
            ..Default::default()
        },
        unit: LatencyUnit::Milliseconds,
        unit_evidence: UnitEvidence::LoadRunFields,
        connections: i64::try_from(run.connections).ok().filter(|c| *c > 0),
        details: None,
        histogram_exact: histogram.is_some(),
        histogram,
        notes,
    }
}

fn from_meshery_record(path: &Path, record: &MesheryResult) -> Result<Side, CompareError> {
    let result = record
        .to_result_ms()
        .ok_or_else(|| CompareError::NoLatencies {
            path: path.to_path_buf(),
        })?;
    let fortio = record.runner_results.first();
    let histogram = fortio.and_then(|f| f.duration_histogram.to_histogram_ns());
    let mut notes = Vec::new();
    if histogram.is_some() {
        notes.push("histogram rebuilt from Fortio buckets (bucket midpoints)".to_string());
    }
    Ok(Side {
        source: path.to_path_buf(),
        kind: SourceKind::MesheryRecord,
        result,
        unit: LatencyUnit::Seconds,
        unit_evidence: UnitEvidence::FortioRecord,
        connections: fortio.map(|f| f.num_threads).filter(|c| *c > 0),
        details: None,
        histogram,
        histogram_exact: false,
        notes,
    })
}

fn load_result_file(
    path: &Path,
    kind: SourceKind,
    unit: Option<LatencyUnit>,
) -> Result<Side, CompareError> {
    let text = file::read_text(path)?;
    let mut result: PerformanceTestResult = file::parse_document(&text, path, Strictness::Lenient)?;
    let mut notes = Vec::new();
    // Files from other tools may carry extra keys: read leniently, but say so.
    if let Err(e) = file::parse_document::<PerformanceTestResult>(&text, path, Strictness::Strict) {
        notes.push(format!("ignored: {e}"));
    }
    if result.latencies_ms.is_none() {
        return Err(CompareError::NoLatencies {
            path: path.to_path_buf(),
        });
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    // Concurrency from the linked test config, when it sits beside the result.
    let connections =
        file::read_document::<TestConfigFile>(&dir.join(TEST_CONFIG_FILE), Strictness::Lenient)
            .ok()
            .filter(|tc| result.test_id.is_empty() || tc.test.id == result.test_id)
            .and_then(|tc| tc.test.clients.first().map(|c| i64::from(c.connections)))
            .filter(|c| *c > 0);
    let placeholders = meshery::has_meshery_placeholders(&result);
    let details = if result.details_uri.is_empty() || placeholders {
        None
    } else {
        let p = set::resolve_uri(dir, &result.details_uri);
        match set::read_details(&p) {
            Ok(d) => Some(d),
            Err(e) => {
                notes.push(format!("details not used: {e}"));
                None
            }
        }
    };
    let (unit_used, evidence) = match unit {
        Some(u) => (u, UnitEvidence::Assumed),
        None => detect_unit(&result, placeholders, connections),
    };
    convert(&mut result, unit_used);
    let histogram = match details
        .as_ref()
        .and_then(|d| d.end_to_end.meshed.latency.histogram.as_ref())
    {
        Some(h) => match h.decode() {
            Ok(h) => Some(h),
            Err(e) => {
                notes.push(format!("end-to-end histogram not used: {e}"));
                None
            }
        },
        None => None,
    };
    Ok(Side {
        source: path.to_path_buf(),
        kind,
        result,
        unit: unit_used,
        unit_evidence: evidence,
        connections,
        details,
        histogram_exact: histogram.is_some(),
        histogram,
        notes,
    })
}

/// Decides the unit of a proto-layout result's `latencies_ms` (see [`UnitEvidence`]).
pub fn detect_unit(
    r: &PerformanceTestResult,
    meshery_placeholders: bool,
    connections: Option<i64>,
) -> (LatencyUnit, UnitEvidence) {
    if let Some(v) = r.labels.get(LATENCY_UNIT_LABEL) {
        match v.trim() {
            "ms" => {
                return (
                    LatencyUnit::Milliseconds,
                    UnitEvidence::Label { value: v.clone() },
                )
            }
            "s" => {
                return (
                    LatencyUnit::Seconds,
                    UnitEvidence::Label { value: v.clone() },
                )
            }
            _ => {}
        }
    }
    if meshery_placeholders {
        return (LatencyUnit::Seconds, UnitEvidence::MesheryPlaceholders);
    }
    let Some(l) = &r.latencies_ms else {
        return (LatencyUnit::Milliseconds, UnitEvidence::SpecDefault);
    };
    if let Some(c) = connections {
        if l.average > 0.0 && r.actual_qps > 0.0 {
            // Little's law: throughput ≤ concurrency / mean latency.
            let max_qps_if_seconds = c as f64 / l.average;
            if r.actual_qps > 1.5 * max_qps_if_seconds {
                return (
                    LatencyUnit::Milliseconds,
                    UnitEvidence::LittlesLaw {
                        connections: c,
                        actual_qps: r.actual_qps,
                        max_qps_if_seconds,
                    },
                );
            }
        }
    }
    if l.average > 0.0 && l.average < 0.05 && l.max < 2.0 {
        return (
            LatencyUnit::Seconds,
            UnitEvidence::ImplausiblySmall { average: l.average },
        );
    }
    (LatencyUnit::Milliseconds, UnitEvidence::SpecDefault)
}

// ---------------------------------------------------------------------------------------------
// Thresholds.

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

// ---------------------------------------------------------------------------------------------
// The comparison.

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
    /// p50, p90, p99 deltas (ms).
    pub deltas: Vec<Delta>,
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

/// Bootstrap of the change in overhead, (meshed B − baseline B) − (meshed A − baseline A).
fn overhead_bootstrap(
    da: &Details,
    db: &Details,
    boot: BootstrapConfig,
) -> Result<BootstrapResult, &'static str> {
    if boot.iterations == 0 {
        return Err("bootstrap disabled");
    }
    let hist = |r: Option<&super::details::RunSummary>| {
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

fn latency_delta(latency: &[Delta], stat: LatencyStat) -> &Delta {
    // `latency` holds every LatencyStat in ALL order.
    let i = LatencyStat::ALL
        .iter()
        .position(|s| *s == stat)
        .unwrap_or(0);
    &latency[i]
}

fn evaluate(t: &Threshold, d: Result<&Delta, &str>) -> ThresholdOutcome {
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
        deltas,
    }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap.

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
struct BootstrapResult {
    /// (stat, sorted differences in ms).
    diffs: Vec<(LatencyStat, Vec<f64>)>,
    empty: bool,
}

impl BootstrapResult {
    fn significance(&self, stat: LatencyStat) -> Significance {
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
fn bootstrap(a: &Histogram<u64>, b: &Histogram<u64>, cfg: BootstrapConfig) -> BootstrapResult {
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

// ---------------------------------------------------------------------------------------------
// Text rendering.

fn fmt_pct(p: Option<f64>) -> String {
    p.map_or_else(|| "n/a".to_string(), |p| format!("{p:+.1}%"))
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (label, s) in [("A", &self.a), ("B", &self.b)] {
            writeln!(f, "{label}: {} ({})", s.source, s.kind)?;
            let unit = match s.unit {
                LatencyUnit::Milliseconds => "milliseconds",
                LatencyUnit::Seconds => "SECONDS (converted to ms)",
            };
            writeln!(f, "   latencies_ms in {unit}: {}", s.unit_reason)?;
            for n in &s.notes {
                writeln!(f, "   note: {n}")?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "{:<8} {:>12} {:>12} {:>12} {:>9}  significance",
            "latency", "A (ms)", "B (ms)", "B-A (ms)", "B-A %"
        )?;
        for d in &self.latency {
            writeln!(
                f,
                "{:<8} {:>12.3} {:>12.3} {:>+12.3} {:>9}  {}",
                d.name,
                d.a,
                d.b,
                d.delta,
                fmt_pct(d.delta_pct),
                d.significance
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default()
            )?;
        }
        writeln!(
            f,
            "{:<8} {:>12.2} {:>12.2} {:>+12.2} {:>9}  (req/s)",
            "qps",
            self.qps.a,
            self.qps.b,
            self.qps.delta,
            fmt_pct(self.qps.delta_pct)
        )?;
        if !self.overhead.is_empty() {
            writeln!(f, "\nmesh overhead (meshed - baseline, ms):")?;
            writeln!(
                f,
                "  {:<6} {:>10} {:>10} {:>10} {:>9}  significance",
                "", "A", "B", "B-A", "B-A %"
            )?;
            for d in &self.overhead {
                writeln!(
                    f,
                    "  {:<6} {:>10.3} {:>10.3} {:>+10.3} {:>9}  {}",
                    d.name,
                    d.a,
                    d.b,
                    d.delta,
                    fmt_pct(d.delta_pct),
                    d.significance
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                )?;
            }
        }
        if !self.hops.is_empty() {
            writeln!(f, "\nper hop (ms):")?;
            writeln!(
                f,
                "    {:<4} {:>10} {:>10} {:>10} {:>9}  significance",
                "", "A", "B", "B-A", "B-A %"
            )?;
            for h in &self.hops {
                writeln!(f, "  {}", h.hop)?;
                for d in &h.deltas {
                    writeln!(
                        f,
                        "    {:<4} {:>10.3} {:>10.3} {:>+10.3} {:>9}  {}",
                        d.name,
                        d.a,
                        d.b,
                        d.delta,
                        fmt_pct(d.delta_pct),
                        d.significance
                            .as_ref()
                            .map(ToString::to_string)
                            .unwrap_or_default()
                    )?;
                }
            }
        } else if !self.a.details || !self.b.details {
            writeln!(
                f,
                "\nper hop: not compared (needs details documents on both sides)"
            )?;
        }
        for u in &self.unmatched_hops {
            writeln!(f, "  hop only on one side: {u}")?;
        }
        if !self.thresholds.is_empty() {
            writeln!(f, "\nthresholds:")?;
            let width = self
                .thresholds
                .iter()
                .map(|t| t.threshold.text.chars().count())
                .max()
                .unwrap_or(0);
            for t in &self.thresholds {
                let obs = match (t.observed, t.threshold.limit) {
                    (Some(o), Limit::Percent(_)) => format!("{o:+.2}%"),
                    (Some(o), Limit::Absolute(_)) => match t.threshold.metric {
                        Metric::Qps => format!("{o:+.2} req/s"),
                        _ => format!("{o:+.3} ms"),
                    },
                    (None, _) => "n/a".to_string(),
                };
                write!(
                    f,
                    "  {:<width$}  observed {:<14} {}",
                    t.threshold.text,
                    obs,
                    if t.failed { "FAIL" } else { "ok" }
                )?;
                if let Some(n) = &t.note {
                    write!(f, "  ({n})")?;
                }
                writeln!(f)?;
            }
            writeln!(
                f,
                "\nresult: {}",
                if self.passed {
                    "PASS"
                } else {
                    "FAIL (a threshold was exceeded)"
                }
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{details::tests::sample_histogram, smp::Latency};

    fn side(lat: Latency, qps: f64, hist: Option<Histogram<u64>>) -> Side {
        Side {
            source: PathBuf::from("x"),
            kind: SourceKind::SmpResult,
            result: PerformanceTestResult {
                latencies_ms: Some(lat),
                actual_qps: qps,
                ..Default::default()
            },
            unit: LatencyUnit::Milliseconds,
            unit_evidence: UnitEvidence::SpecDefault,
            connections: None,
            details: None,
            histogram_exact: hist.is_some(),
            histogram: hist,
            notes: Vec::new(),
        }
    }

    fn lat(p: f64) -> Latency {
        Latency {
            min: p / 2.0,
            average: p,
            p50: p,
            p90: p * 1.5,
            p99: p * 2.0,
            max: p * 3.0,
        }
    }

    #[test]
    fn parses_thresholds() {
        let t: Threshold = "p99>+10%".parse().unwrap();
        assert_eq!(
            (t.metric, t.op, t.limit),
            (
                Metric::Latency(LatencyStat::P99),
                Op::Gt,
                Limit::Percent(10.0)
            )
        );
        let t: Threshold = "p50 > +2ms".parse().unwrap();
        assert_eq!(t.limit, Limit::Absolute(2.0));
        let t: Threshold = "qps<-5%".parse().unwrap();
        assert_eq!(
            (t.metric, t.op, t.limit),
            (Metric::Qps, Op::Lt, Limit::Percent(-5.0))
        );
        let t: Threshold = "avg>=500us".parse().unwrap();
        assert_eq!((t.op, t.limit), (Op::Ge, Limit::Absolute(0.5)));
        let t: Threshold = "max<=1s".parse().unwrap();
        assert_eq!(t.limit, Limit::Absolute(1000.0));
        let t: Threshold = "qps<-100".parse().unwrap();
        assert_eq!(t.limit, Limit::Absolute(-100.0));
        for (bad, problem) in [
            ("p99=10%", ThresholdProblem::NoOperator),
            ("p98>10%", ThresholdProblem::UnknownMetric),
            ("p99>abc", ThresholdProblem::BadNumber),
            ("p99>10", ThresholdProblem::BadUnit),
            ("qps<5ms", ThresholdProblem::BadUnit),
            ("p99>", ThresholdProblem::BadNumber),
        ] {
            let e = bad.parse::<Threshold>().unwrap_err();
            assert_eq!(e.problem, problem, "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn parses_overhead_and_hop_thresholds() {
        let t: Threshold = "overhead.p99>+10%".parse().unwrap();
        assert_eq!(t.metric, Metric::Overhead(LatencyStat::P99));
        let t: Threshold = "hop:envoy.v1/outbound/request.p90>+50us".parse().unwrap();
        assert_eq!(
            t.metric,
            Metric::Hop {
                hop: "envoy.v1/outbound/request".into(),
                stat: LatencyStat::P90
            }
        );
        assert_eq!(t.limit, Limit::Absolute(0.05));
        for bad in [
            "overhead.max>1%",
            "hop:envoy.p99>1%",
            "hop:a/b/c.p42>1%",
            "hop:a/b/c>1%",
        ] {
            let e = bad.parse::<Threshold>().unwrap_err();
            assert_eq!(e.problem, ThresholdProblem::UnknownMetric, "{bad}");
        }
        assert_eq!(
            "overhead.p50>5".parse::<Threshold>().unwrap_err().problem,
            ThresholdProblem::BadUnit
        );
    }

    #[test]
    fn detail_thresholds_without_details_fail_safe() {
        let a = side(lat(10.0), 1000.0, None);
        let rules: Vec<Threshold> = ["overhead.p99>+10%", "hop:p/outbound/request.p50>+1ms"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let c = compare(&a, &a, &rules, BootstrapConfig::default());
        assert!(c.thresholds.iter().all(|t| t.failed && t.note.is_some()));
        assert!(!c.passed);
    }

    #[test]
    fn thresholds_gate() {
        let a = side(lat(10.0), 1000.0, None);
        let b = side(lat(11.5), 940.0, None);
        let rules: Vec<Threshold> = ["p99>+10%", "p50>+2ms", "qps<-5%"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let c = compare(&a, &b, &rules, BootstrapConfig::default());
        assert_eq!(
            c.thresholds.iter().map(|t| t.failed).collect::<Vec<_>>(),
            [true, false, true]
        );
        assert!(!c.passed);
        assert!((c.latency[4].delta_pct.unwrap() - 15.0).abs() < 1e-9);
        let c = compare(&a, &a, &rules, BootstrapConfig::default());
        assert!(c.passed);
        // Without histograms significance cannot be judged.
        assert!(matches!(
            c.latency[2].significance,
            Some(Significance::CannotJudge { .. })
        ));
        let text = c.to_string();
        assert!(
            text.contains("cannot judge") && text.contains("PASS"),
            "{text}"
        );
    }

    #[test]
    fn relative_threshold_against_zero_fails_safe() {
        let a = side(lat(0.0), 0.0, None);
        let b = side(lat(1.0), 1.0, None);
        let c = compare(
            &a,
            &b,
            &["p99>+10%".parse().unwrap()],
            BootstrapConfig::default(),
        );
        assert!(c.thresholds[0].failed && c.thresholds[0].note.is_some());
    }

    #[test]
    fn bootstrap_tells_noise_from_a_shift() {
        let h1 = sample_histogram(1_000_000, 4000);
        let h1b = sample_histogram(1_000_000, 3900);
        let h2 = sample_histogram(1_300_000, 4000);
        let l1 = Latency::from_histogram_ns(&h1);
        let same = compare(
            &side(l1.clone(), 100.0, Some(h1.clone())),
            &side(Latency::from_histogram_ns(&h1b), 100.0, Some(h1b)),
            &[],
            BootstrapConfig::default(),
        );
        for i in [1, 2, 3, 4] {
            assert!(
                matches!(
                    same.latency[i].significance,
                    Some(Significance::WithinNoise { .. })
                ),
                "{:?}",
                same.latency[i]
            );
        }
        let shifted = compare(
            &side(l1, 100.0, Some(h1)),
            &side(Latency::from_histogram_ns(&h2), 100.0, Some(h2)),
            &[],
            BootstrapConfig::default(),
        );
        for i in [1, 2, 3] {
            assert!(
                matches!(
                    shifted.latency[i].significance,
                    Some(Significance::Significant { .. })
                ),
                "{:?}",
                shifted.latency[i]
            );
        }
    }

    #[test]
    fn reads_smp_agent_load_results() {
        use crate::report::details::EncodedHistogram;
        // A microsecond histogram, as `smp-agent load` writes it.
        let mut us = crate::report::details::new_latency_histogram();
        for i in 1..=1000u64 {
            us.record(1000 + i).unwrap(); // 1.001..2.0 ms
        }
        let data = EncodedHistogram::encode(&us).unwrap().data;
        let text = format!(
            "{{\"achieved_rate\": 500.0, \"duration_s\": 10.0, \"connections\": 4, \
             \"requests\": 5000, \"latency\": {{\"min_ms\": 1.001, \"mean_ms\": 1.5, \
             \"stddev_ms\": 0.3, \"p50_ms\": 1.5, \"p75_ms\": 1.75, \"p90_ms\": 1.9, \
             \"p99_ms\": 1.99, \"p99_9_ms\": 2.0, \"p99_99_ms\": 2.0, \"max_ms\": 2.0}}, \
             \"histogram\": \"{data}\"}}"
        );
        let dir = std::env::temp_dir().join(format!("smp-loadrun-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("load.json");
        std::fs::write(&p, text).unwrap();
        let side = load_side(&p, None).unwrap();
        assert_eq!(side.kind, SourceKind::LoadRun);
        assert_eq!(side.connections, Some(4));
        let h = side.histogram.as_ref().unwrap();
        assert_eq!(h.len(), 1000);
        // ns now: the median is about 1.5 ms.
        let p50 = h.value_at_quantile(0.5);
        assert!((1_490_000..1_510_000).contains(&p50), "{p50}");
        let c = compare(&side, &side, &[], BootstrapConfig::default());
        assert!(matches!(
            c.latency[2].significance,
            Some(Significance::WithinNoise { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unit_detection() {
        let mut r = PerformanceTestResult {
            latencies_ms: Some(lat(0.023)),
            actual_qps: 1.0,
            ..Default::default()
        };
        // Meshery-like magnitudes, no marker: seconds by heuristic.
        assert_eq!(detect_unit(&r, false, None).0, LatencyUnit::Seconds);
        // Placeholders.
        assert_eq!(
            detect_unit(&r, true, None).1,
            UnitEvidence::MesheryPlaceholders
        );
        // Our label wins.
        r.labels.insert(LATENCY_UNIT_LABEL.into(), "ms".into());
        assert_eq!(detect_unit(&r, true, None).0, LatencyUnit::Milliseconds);
        r.labels.clear();
        // Little's law: 5000 req/s on 2 connections with mean 0.08: must be ms.
        r.latencies_ms = Some(lat(0.08));
        r.actual_qps = 5000.0;
        assert!(matches!(
            detect_unit(&r, false, Some(2)).1,
            UnitEvidence::LittlesLaw { .. }
        ));
        // Ordinary ms values.
        r.latencies_ms = Some(lat(12.0));
        assert_eq!(detect_unit(&r, false, None).1, UnitEvidence::SpecDefault);
    }
}
