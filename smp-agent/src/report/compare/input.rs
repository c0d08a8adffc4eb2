//! Loading one side of a comparison: a results directory, an SMP result from any tool, a
//! Meshery export or `smp-agent load` results, `latencies_ms` converted to milliseconds.

use std::{
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
};

use hdrhistogram::Histogram;
use serde::Serialize;

use serde::Deserialize as _;

use crate::report::{
    details::Details,
    file::{self, SmpFileError, Strictness},
    meshery::{self, LegacyBenchmark, MesheryResult},
    set::{self, RESULT_FILE, TEST_CONFIG_FILE},
    smp::{Latency, LatencyStat, PerformanceTestResult, TestConfigFile, LATENCY_UNIT_LABEL},
};

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
    /// A latency or rate that is not a finite, non-negative number.
    #[error("{}: field `{field}` is {value}: latencies and rates must be finite and not negative", path.display())]
    BadFigure {
        /// The file.
        path: PathBuf,
        /// The field (statistic) in the file's layout.
        field: String,
        /// Its value.
        value: f64,
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
/// Its figures are checked: a latency or rate that is not a finite, non-negative number is an
/// error naming the file and the field.
pub fn load_side(path: &Path, unit: Option<LatencyUnit>) -> Result<Side, CompareError> {
    let side = read_side(path, unit)?;
    check_figures(&side)?;
    Ok(side)
}

/// Rejects latencies and rates that are NaN, infinite or negative: no comparison (and no gate)
/// can be computed from them.
fn check_figures(side: &Side) -> Result<(), CompareError> {
    let bad = |field: String, value: f64| CompareError::BadFigure {
        path: side.source.clone(),
        field,
        value,
    };
    let (latency_field, qps_field) = match side.kind {
        SourceKind::ResultsDir | SourceKind::SmpResult => ("latencies_ms.", "actual_qps"),
        SourceKind::MesheryLegacy => ("client.latencies_ms.", "client.actual_qps"),
        SourceKind::MesheryRecord => (
            "runner_results[0].DurationHistogram.",
            "runner_results[0].ActualQPS",
        ),
        SourceKind::LoadRun => ("latency.", "achieved_rate"),
    };
    if let Some(l) = &side.result.latencies_ms {
        for stat in LatencyStat::ALL {
            let v = l.get(stat);
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(format!("{latency_field}{}", stat.name()), v));
            }
        }
    }
    let q = side.result.actual_qps;
    if !(q.is_finite() && q >= 0.0) {
        return Err(bad(qps_field.to_string(), q));
    }
    Ok(())
}

fn read_side(path: &Path, unit: Option<LatencyUnit>) -> Result<Side, CompareError> {
    if path.is_dir() {
        let file = path.join(RESULT_FILE);
        let doc = Document::read(&file)?;
        let mut side = load_result_file(&doc, SourceKind::ResultsDir, unit)?;
        side.source = path.to_path_buf();
        return Ok(side);
    }
    let doc = Document::read(path)?;
    match doc.shape() {
        Shape::MesheryRecords => {
            let records: Vec<MesheryResult> = doc.to()?;
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
            let record: MesheryResult = doc.to()?;
            from_meshery_record(path, &record)
        }
        Shape::MesheryLegacy => {
            let legacy: LegacyBenchmark = doc.to()?;
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
        Shape::SmpResult => load_result_file(&doc, SourceKind::SmpResult, unit),
        Shape::LoadRun => {
            let run: LoadRun = doc.to()?;
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

/// One input file, parsed once: its shape is sniffed from the tree and the types are
/// deserialized from it. Only when that fails is the text parsed again, for an error with its
/// line and field.
struct Document {
    path: PathBuf,
    text: String,
    tree: Tree,
}

enum Tree {
    Yaml(serde_yaml_ng::Value),
    Json(serde_json::Value),
}

impl Document {
    /// Reads (size-capped) and parses (YAML nesting-capped) a file: `.json` is JSON, else YAML.
    fn read(path: &Path) -> Result<Self, SmpFileError> {
        let text = file::read_text(path)?;
        let tree = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            serde_json::from_str(&text).map(Tree::Json).ok()
        } else {
            crate::input::yaml_from_str(&text).map(Tree::Yaml).ok()
        };
        match tree {
            Some(tree) => Ok(Self {
                path: path.to_path_buf(),
                text,
                tree,
            }),
            // Not a document: the located syntax error.
            None => Err(file::parse_plain::<serde::de::IgnoredAny>(&text, path)
                .err()
                .unwrap_or_else(|| SmpFileError::Read {
                    path: path.to_path_buf(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, "unparsable"),
                })),
        }
    }

    /// Deserializes the tree into `T` (its own serde attributes decide strictness).
    fn to<T: serde::de::DeserializeOwned>(&self) -> Result<T, SmpFileError> {
        let from_tree = match &self.tree {
            Tree::Yaml(v) => T::deserialize(v).ok(),
            Tree::Json(v) => T::deserialize(v).ok(),
        };
        match from_tree {
            Some(t) => Ok(t),
            None => file::parse_plain(&self.text, &self.path),
        }
    }

    /// Whether the tree has keys the strict (`deny_unknown_fields`) shadow of `T` refuses; the
    /// error names the file, line and field.
    fn strict_error<T: file::SmpDocument>(&self) -> Option<SmpFileError> {
        let ok = match &self.tree {
            Tree::Yaml(v) => T::Strict::deserialize(v).is_ok(),
            Tree::Json(v) => T::Strict::deserialize(v).is_ok(),
        };
        if ok {
            return None;
        }
        file::parse_document::<T>(&self.text, &self.path, Strictness::Strict).err()
    }

    fn shape(&self) -> Shape {
        let value: Option<serde_json::Value> = match &self.tree {
            Tree::Json(v) => Some(v.clone()),
            Tree::Yaml(v) => serde_json::to_value(v).ok(),
        };
        sniff(value)
    }
}

fn sniff(value: Option<serde_json::Value>) -> Shape {
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
    let histogram = run.histogram.as_deref().and_then(|text| {
        match crate::report::details::decode_v2_base64(text) {
            Ok(us) => crate::report::details::scale_histogram(&us, 1000),
            Err(e) => {
                notes.push(format!("histogram not used: {e}"));
                None
            }
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
    doc: &Document,
    kind: SourceKind,
    unit: Option<LatencyUnit>,
) -> Result<Side, CompareError> {
    let path = doc.path.as_path();
    let mut result: PerformanceTestResult = doc.to()?;
    let mut notes = Vec::new();
    // Files from other tools may carry extra keys: read leniently, but say so.
    if let Some(e) = doc.strict_error::<PerformanceTestResult>() {
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
        match set::details_path(dir, &result.details_uri)
            .map_err(|e| e.to_string())
            .and_then(|p| set::read_details(&p).map_err(|e| e.to_string()))
        {
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
