//! The result set one profile run writes: one file per SMP message plus the details document,
//! in one directory, linked by ids (layout and reasons in docs/smp.md).
//!
//! ```text
//! <dir>/test-config.yaml   {test: PerformanceTestConfig, mesh: ServiceMesh}  (mesheryctl-style)
//! <dir>/mesh-config.yaml   ServiceMeshConfig
//! <dir>/environment.yaml   EnvironmentConfig
//! <dir>/details.json       details document (schema smp-agent/details/v1)
//! <dir>/report.html        the same for people: tables and plots, self-contained
//! <dir>/result.yaml        PerformanceTestResult, written last
//! ```

use std::path::{Path, PathBuf};

use super::{
    details::{Details, SidecarUsage},
    file::{self, SmpFileError, StagedFile, Strictness},
    html,
    smp::{
        self, EnvironmentConfig, Node, PerformanceTestResult, ServiceMeshConfig, Sidecar,
        TestConfigFile, GENERATOR_LABEL, LATENCY_UNIT_LABEL, SMP_VERSION,
    },
};

/// File name of the test configuration.
pub const TEST_CONFIG_FILE: &str = "test-config.yaml";
/// File name of the result.
pub const RESULT_FILE: &str = "result.yaml";
/// File name of the mesh configuration.
pub const MESH_CONFIG_FILE: &str = "mesh-config.yaml";
/// File name of the environment.
pub const ENVIRONMENT_FILE: &str = "environment.yaml";
/// File name of the details document.
pub const DETAILS_FILE: &str = "details.json";
/// File name of the HTML report.
pub const REPORT_FILE: &str = "report.html";

/// Everything one profile run reports.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultSet {
    /// The load that was applied and the mesh under test.
    pub test: TestConfigFile,
    /// What was measured.
    pub result: PerformanceTestResult,
    /// The mesh deployment and its measured sidecar overhead.
    pub mesh_config: ServiceMeshConfig,
    /// The machine(s).
    pub environment: EnvironmentConfig,
    /// What SMP has no field for; `None` writes no details file.
    pub details: Option<Details>,
}

/// Paths written by [`ResultSet::write_to_dir`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenSet {
    /// `result.yaml`.
    pub result: PathBuf,
    /// `test-config.yaml`.
    pub test_config: PathBuf,
    /// `mesh-config.yaml`.
    pub mesh_config: PathBuf,
    /// `environment.yaml`.
    pub environment: PathBuf,
    /// `details.json`, when written.
    pub details: Option<PathBuf>,
    /// `report.html`.
    pub report: PathBuf,
}

impl ResultSet {
    /// Makes the documents consistent before writing: `smp_version` everywhere, fresh ids
    /// where empty, the result's `test_id`/`mesh_config_id`/`env_id` pointing at them, the
    /// `latency_unit: ms` and `generator` labels, `details_uri` and the details' `result_id`.
    pub fn link(&mut self) {
        for v in [
            &mut self.test.test.smp_version,
            &mut self.result.smp_version,
            &mut self.mesh_config.smp_version,
            &mut self.environment.smp_version,
        ] {
            if v.is_empty() {
                *v = SMP_VERSION.to_string();
            }
        }
        for id in [
            &mut self.test.test.id,
            &mut self.result.id,
            &mut self.mesh_config.id,
            &mut self.environment.id,
        ] {
            if id.is_empty() {
                *id = smp::new_id();
            }
        }
        self.result.test_id = self.test.test.id.clone();
        self.result.mesh_config_id = self.mesh_config.id.clone();
        self.result.env_id = self.environment.id.clone();
        self.result
            .labels
            .insert(LATENCY_UNIT_LABEL.to_string(), "ms".to_string());
        self.result.labels.insert(
            GENERATOR_LABEL.to_string(),
            format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION")),
        );
        if let Some(d) = &mut self.details {
            d.result_id = self.result.id.clone();
            self.result.details_uri = DETAILS_FILE.to_string();
        } else {
            self.result.details_uri.clear();
        }
    }

    /// Links ([`Self::link`]) and writes the set into `dir` (created if missing), with the HTML
    /// report ([`html::render`]) beside it. Every file is first staged under a temporary name;
    /// only when all are staged are they renamed into place, `result.yaml` last. On error
    /// nothing new is left in `dir`.
    pub fn write_to_dir(&mut self, dir: &Path) -> Result<WrittenSet, SmpFileError> {
        self.link();
        super::file::create_dir_durable(dir).map_err(|source| SmpFileError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
        /// Serializes, checks that the text re-reads with our strict reader, stages.
        fn stage<T: serde::Serialize>(
            dir: &Path,
            name: &str,
            kind: &'static str,
            doc: &T,
            reread: fn(&str, &Path) -> Result<(), SmpFileError>,
        ) -> Result<StagedFile, SmpFileError> {
            let path = dir.join(name);
            let bytes = file::serialize(&path, kind, doc)?;
            let text = String::from_utf8_lossy(&bytes);
            reread(&text, &path).map_err(|e| SmpFileError::WouldNotReread {
                path: path.clone(),
                kind,
                source: Box::new(e),
            })?;
            StagedFile::stage(&path, &bytes)
        }
        fn smp<T: file::SmpDocument>(text: &str, path: &Path) -> Result<(), SmpFileError> {
            file::parse_document::<T>(text, path, Strictness::Strict).map(drop)
        }
        fn details(text: &str, path: &Path) -> Result<(), SmpFileError> {
            file::parse_plain::<Details>(text, path).map(drop)
        }
        // Staged files not committed are removed when dropped (on any `?` below).
        let test = stage(
            dir,
            TEST_CONFIG_FILE,
            "TestConfigFile",
            &self.test,
            smp::<TestConfigFile>,
        )?;
        let mesh = stage(
            dir,
            MESH_CONFIG_FILE,
            "ServiceMeshConfig",
            &self.mesh_config,
            smp::<ServiceMeshConfig>,
        )?;
        let env = stage(
            dir,
            ENVIRONMENT_FILE,
            "EnvironmentConfig",
            &self.environment,
            smp::<EnvironmentConfig>,
        )?;
        let details = match &self.details {
            Some(d) => Some(stage(dir, DETAILS_FILE, "Details", d, details)?),
            None => None,
        };
        let report_path = dir.join(REPORT_FILE);
        let page = html::render(self).map_err(|source| SmpFileError::Report {
            path: report_path.clone(),
            source,
        })?;
        let report = StagedFile::stage(&report_path, page.as_bytes())?;
        let result = stage(
            dir,
            RESULT_FILE,
            "PerformanceTestResult",
            &self.result,
            smp::<PerformanceTestResult>,
        )?;
        // All staged: commit, the result (which points at the others) last.
        Ok(WrittenSet {
            test_config: test.commit()?,
            mesh_config: mesh.commit()?,
            environment: env.commit()?,
            details: details.map(StagedFile::commit).transpose()?,
            report: report.commit()?,
            result: result.commit()?,
        })
    }

    /// Reads a set written by [`Self::write_to_dir`], strictly or not.
    pub fn read_from_dir(dir: &Path, strictness: Strictness) -> Result<Self, SmpFileError> {
        let result: PerformanceTestResult =
            file::read_document(&dir.join(RESULT_FILE), strictness)?;
        let details = if result.details_uri.is_empty() {
            None
        } else {
            let result_path = dir.join(RESULT_FILE);
            let details =
                details_path(dir, &result.details_uri).map_err(|e| SmpFileError::Read {
                    path: result_path,
                    source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                })?;
            Some(read_details(&details)?)
        };
        Ok(Self {
            test: file::read_document(&dir.join(TEST_CONFIG_FILE), strictness)?,
            mesh_config: file::read_document(&dir.join(MESH_CONFIG_FILE), strictness)?,
            environment: file::read_document(&dir.join(ENVIRONMENT_FILE), strictness)?,
            result,
            details,
        })
    }
}

/// Why a result's `details_uri` was not followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DetailsUriError {
    /// Not a plain file name: a path (`/etc/x`, `../x`, `a/b`), a URL (`file://…`), `.`/`..`.
    #[error("details_uri must be a plain file name in the result's directory (no path, no URL)")]
    NotAFileName,
    /// A file name without the `.json` extension (details documents are JSON).
    #[error("details_uri must name a .json file")]
    NotJson,
}

/// The details document a result's `details_uri` names. Only a plain file name (as we write,
/// `details.json`) is accepted, resolved inside `base_dir`, the result's own directory: results
/// come from others (CI), and a path or URL could make us read any file on the machine.
pub fn details_path(base_dir: &Path, uri: &str) -> Result<PathBuf, DetailsUriError> {
    let is_plain_name = !uri.is_empty()
        && uri != "."
        && uri != ".."
        && !uri.contains(['/', '\\', ':', '\0'])
        && uri.chars().all(|c| !c.is_control());
    if !is_plain_name {
        return Err(DetailsUriError::NotAFileName);
    }
    if !Path::new(uri)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        return Err(DetailsUriError::NotJson);
    }
    Ok(base_dir.join(uri))
}

/// Reads a details document (JSON, strict; size-capped like every input file).
pub fn read_details(path: &Path) -> Result<Details, SmpFileError> {
    let text = file::read_text(path)?;
    file::parse_plain(&text, path)
}

// ---------------------------------------------------------------------------------------------
// Helpers that fill the SMP messages from measurements.

/// `ServiceMeshConfig.sidecar` from the per-sidecar usage in the details document: `count`,
/// Σ `cpu_mcores`, Σ `mem_mb` (rounded; SMP's fields are int32, saturated), and the `rps` /
/// `bps` traversing the sidecars, which the caller measures (requests counted once each).
pub fn sidecar_totals(usages: &[SidecarUsage], rps: f64, bps: f64) -> Sidecar {
    let to_i32 = |v: f64| {
        if v.is_finite() {
            v.round().clamp(0.0, f64::from(i32::MAX)) as i32
        } else {
            0
        }
    };
    Sidecar {
        count: i32::try_from(usages.len()).unwrap_or(i32::MAX),
        cpu_mcores: to_i32(usages.iter().map(|u| u.cpu_mcores).sum()),
        mem_mb: to_i32(usages.iter().map(|u| u.mem_mb).sum()),
        rps: to_i32(rps),
        bps: to_i32(bps),
    }
}

/// `EnvironmentConfig` for the machine we run on: one node with its type (DMI product name,
/// else the architecture), online CPUs and `MemTotal`; labels `kernel` and `arch` (SMP's
/// `Node` has no kernel field). Unreadable facts are left at zero / empty.
pub fn environment_for_this_host() -> EnvironmentConfig {
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let kind = read("/sys/class/dmi/id/product_name")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = read("/sys/devices/system/cpu/online")
        .and_then(|s| count_cpu_list(&s))
        .or_else(|| {
            std::thread::available_parallelism()
                .ok()
                .and_then(|n| i32::try_from(n.get()).ok())
        })
        .unwrap_or(0);
    let mem_mb = read("/proc/meminfo")
        .and_then(|s| meminfo_total_mb(&s))
        .unwrap_or(0);
    let mut env = EnvironmentConfig {
        nodes: vec![Node {
            r#type: kind,
            cores,
            mem_mb,
        }],
        ..Default::default()
    };
    if let Some(k) = read("/proc/sys/kernel/osrelease") {
        env.labels.insert("kernel".into(), k.trim().to_string());
    }
    env.labels
        .insert("arch".into(), std::env::consts::ARCH.to_string());
    env
}

/// Number of CPUs in a kernel CPU list (`0-3,5,7-8` → 7).
fn count_cpu_list(list: &str) -> Option<i32> {
    let mut n = 0i32;
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>().ok()?, b.parse::<i32>().ok()?),
            None => {
                let v = part.parse::<i32>().ok()?;
                (v, v)
            }
        };
        if hi < lo {
            return None;
        }
        n = n.checked_add(hi - lo + 1)?;
    }
    (n > 0).then_some(n)
}

/// `MemTotal` of a `/proc/meminfo` text, in MB (MiB, as `free -m`).
fn meminfo_total_mb(meminfo: &str) -> Option<i64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::{
        details::{self, Distribution, RunSummary},
        smp::{
            Client, Latency, MeshType, PerformanceTestConfig, Protocol, ServiceMesh, Sidecar,
            SmpDuration, Timestamp,
        },
    };

    pub(crate) fn sample_set() -> ResultSet {
        let h = details::tests::sample_histogram(2_000_000, 2000);
        let mut d = Details::new("");
        d.end_to_end.meshed = RunSummary {
            url: "http://127.0.0.1:8080/".into(),
            actual_qps: 99.5,
            errors: 0,
            grpc_status: Default::default(),
            latency: Distribution::from_histogram_ns(&h).unwrap(),
        };
        ResultSet {
            test: TestConfigFile {
                test: PerformanceTestConfig {
                    name: "lab".into(),
                    clients: vec![Client {
                        load_generator: "smp-agent".into(),
                        protocol: Protocol::Http,
                        connections: 4,
                        rps: 100,
                        endpoint_urls: vec!["http://127.0.0.1:8080/".into()],
                        ..Default::default()
                    }],
                    duration: Some(SmpDuration::new(std::time::Duration::from_secs(30))),
                    ..Default::default()
                },
                mesh: ServiceMesh {
                    r#type: MeshType::Istio,
                    ..Default::default()
                },
            },
            result: PerformanceTestResult {
                start_time: Timestamp::parse_rfc3339("2026-11-23T10:00:00Z").ok(),
                end_time: Timestamp::parse_rfc3339("2026-11-23T10:00:30.5Z").ok(),
                latencies_ms: Some(Latency::from_histogram_ns(&h)),
                actual_qps: 99.5,
                ..Default::default()
            },
            mesh_config: ServiceMeshConfig {
                sidecar: Some(Sidecar {
                    count: 2,
                    cpu_mcores: 120,
                    mem_mb: 40,
                    rps: 99,
                    bps: 12000,
                }),
                mtls_enabled: true,
                mesh_type: Some(ServiceMesh {
                    r#type: MeshType::Istio,
                    version: "1.24".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            environment: EnvironmentConfig {
                nodes: vec![smp::Node {
                    r#type: "lab".into(),
                    cores: 2,
                    mem_mb: 4096,
                }],
                ..Default::default()
            },
            details: Some(d),
        }
    }

    #[test]
    fn an_invalid_set_is_refused_and_nothing_is_written() {
        let dir = std::env::temp_dir().join(format!("smp-set-bad-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut set = sample_set();
        set.test.test.clients[0].endpoint_urls = vec!["not a url".into()];
        let e = set.write_to_dir(&dir).unwrap_err();
        assert!(
            matches!(
                e,
                SmpFileError::WouldNotReread {
                    kind: "TestConfigFile",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("endpoint_urls[0]"), "{e}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        // A failure after three files were staged (JSON has no NaN: the details would not
        // re-read) leaves nothing either.
        let mut set = sample_set();
        set.details.as_mut().unwrap().end_to_end.meshed.actual_qps = f64::NAN;
        let e = set.write_to_dir(&dir).unwrap_err();
        assert!(
            matches!(
                e,
                SmpFileError::WouldNotReread {
                    kind: "Details",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn details_uri_is_a_file_name_in_the_results_directory() {
        let dir = Path::new("/results/run1");
        assert_eq!(
            details_path(dir, "details.json"),
            Ok(dir.join("details.json"))
        );
        for uri in [
            "/etc/shadow",
            "file:///etc/shadow",
            "file://details.json",
            "../details.json",
            "sub/details.json",
            "..",
            ".",
            "",
            "a\\..\\b.json",
            "https://example.com/d.json",
        ] {
            assert_eq!(
                details_path(dir, uri),
                Err(DetailsUriError::NotAFileName),
                "{uri}"
            );
        }
        assert_eq!(details_path(dir, "shadow"), Err(DetailsUriError::NotJson));
        assert_eq!(details_path(dir, "d.yaml"), Err(DetailsUriError::NotJson));
    }

    #[test]
    fn host_facts_parse() {
        assert_eq!(count_cpu_list("0-3\n"), Some(4));
        assert_eq!(count_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("x"), None);
        assert_eq!(
            meminfo_total_mb("MemTotal:        4028416 kB\nMemFree: 1 kB\n"),
            Some(3934)
        );
        assert_eq!(meminfo_total_mb("MemFree: 1 kB\n"), None);
        let env = environment_for_this_host();
        assert!(env.nodes[0].cores > 0 && env.nodes[0].mem_mb > 0, "{env:?}");
        // What we fill re-reads strictly.
        let text = file::to_yaml(&env).unwrap();
        let back: EnvironmentConfig =
            file::parse_document(&text, Path::new("e.yaml"), Strictness::Strict).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn sidecar_totals_round_and_sum() {
        let u = |cpu: f64, mem: f64| SidecarUsage {
            cpu_mcores: cpu,
            mem_mb: mem,
            ..Default::default()
        };
        let s = sidecar_totals(&[u(60.4, 20.2), u(40.4, 20.2)], 99.6, 1e12);
        assert_eq!(
            (s.count, s.cpu_mcores, s.mem_mb, s.rps, s.bps),
            (2, 101, 40, 100, i32::MAX)
        );
    }

    #[test]
    fn written_set_is_linked_and_rereads_strictly() {
        let dir = std::env::temp_dir().join(format!("smp-set-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut set = sample_set();
        let written = set.write_to_dir(&dir).unwrap();
        assert_eq!(written.result, dir.join(RESULT_FILE));
        let page = std::fs::read_to_string(&written.report).unwrap();
        assert!(page.starts_with("<!DOCTYPE html>") && page.contains(&set.result.id));
        let back = ResultSet::read_from_dir(&dir, Strictness::Strict).unwrap();
        assert_eq!(back, set);
        assert_eq!(back.result.test_id, back.test.test.id);
        assert_eq!(back.result.mesh_config_id, back.mesh_config.id);
        assert_eq!(back.result.env_id, back.environment.id);
        assert_eq!(back.result.labels[LATENCY_UNIT_LABEL], "ms");
        assert_eq!(back.details.as_ref().unwrap().result_id, back.result.id);
        // The test config we write is a valid mesheryctl-style input.
        let tc = file::read_test_config(&written.test_config).unwrap();
        assert_eq!(tc, set.test);
        // Integer enums and snake_case on disk.
        let text = std::fs::read_to_string(&written.test_config).unwrap();
        assert!(
            text.contains("protocol: 1") && text.contains("type: 3"),
            "{text}"
        );
        assert!(text.contains("endpoint_urls:"), "{text}");
        // No temporary files left.
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
