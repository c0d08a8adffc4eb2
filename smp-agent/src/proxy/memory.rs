//! Proxy memory: RSS (and PSS where readable) summed over a proxy's processes, sampled over a
//! run, summarised as mean and peak MB (SMP `mem_mb`).
//!
//! * RSS from `/proc/<pid>/statm` (resident pages × page size): cheap, readable for any pid.
//! * PSS from `/proc/<pid>/smaps_rollup` (Linux ≥ 4.14): shared pages divided among the
//!   processes that map them, so summing PSS over nginx master + workers does not count the
//!   shared binary and shared memory zones N times the way summing RSS does. It needs
//!   ptrace-read access and walks every mapping (cost grows with the mapping count), so it is
//!   optional and `None` where unreadable.
//! * `mem_mb` is PSS when every process of the proxy had a PSS in every sample, else RSS.
//!   MB here is MiB (2^20 bytes), as Kubernetes `Mi` and `container_memory_*` dashboards use.

use std::{collections::BTreeMap, fs, path::Path};

use serde::Serialize;

use super::{discovery::ProxyId, procfs::ProcFs, ProcError};

const MIB: f64 = 1024.0 * 1024.0;

/// Memory of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcessMemory {
    pub rss_bytes: u64,
    pub pss_bytes: Option<u64>,
}

/// Resident bytes from the text of `/proc/<pid>/statm` (second field, in pages).
pub fn parse_statm(text: &str, page_size: u64) -> Option<u64> {
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    pages.checked_mul(page_size)
}

/// `(Rss, Pss)` in bytes from the text of `/proc/<pid>/smaps_rollup` (values in kB).
pub fn parse_smaps_rollup(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.trim();
            let kb: u64 = rest.strip_suffix("kB")?.trim().parse().ok()?;
            kb.checked_mul(1024)
        })
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// The system page size in bytes (4096 if sysconf fails).
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(4096)
}

impl ProcFs {
    /// RSS (and PSS if `with_pss` and readable) of one process.
    pub fn memory(&self, pid: u32, with_pss: bool) -> Result<ProcessMemory, ProcError> {
        let dir = self.root().join(pid.to_string());
        let statm = read(&dir, pid, "statm")?;
        let rss_bytes = parse_statm(&statm, page_size()).ok_or(ProcError::Parse {
            pid,
            file: "statm",
            reason: "no resident field",
        })?;
        let pss_bytes = if with_pss {
            match read(&dir, pid, "smaps_rollup") {
                Ok(text) => parse_smaps_rollup(&text).map(|(_, pss)| pss),
                Err(ProcError::Gone { pid }) => return Err(ProcError::Gone { pid }),
                Err(_) => None,
            }
        } else {
            None
        };
        Ok(ProcessMemory {
            rss_bytes,
            pss_bytes,
        })
    }

    /// Memory of a proxy: the sum over `tgids`. Processes gone mid-read are skipped and
    /// counted in the result; PSS is `None` unless every read process had one.
    pub fn proxy_memory(
        &self,
        tgids: impl IntoIterator<Item = u32>,
        with_pss: bool,
    ) -> ProxyMemorySample {
        let mut s = ProxyMemorySample {
            rss_bytes: 0,
            pss_bytes: Some(0),
            processes: 0,
            skipped: 0,
        };
        for pid in tgids {
            match self.memory(pid, with_pss) {
                Ok(m) => s.add(m),
                Err(_) => s.skipped += 1,
            }
        }
        if s.processes == 0 {
            s.pss_bytes = None;
        }
        s
    }
}

fn read(dir: &Path, pid: u32, file: &'static str) -> Result<String, ProcError> {
    fs::read_to_string(dir.join(file)).map_err(|e| ProcError::from_io(pid, file, e))
}

/// One sample of one proxy (sum over its processes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProxyMemorySample {
    pub rss_bytes: u64,
    pub pss_bytes: Option<u64>,
    /// Processes read.
    pub processes: u32,
    /// Processes that could not be read (gone, no permission).
    pub skipped: u32,
}

impl ProxyMemorySample {
    /// Adds one process.
    pub fn add(&mut self, m: ProcessMemory) {
        self.rss_bytes += m.rss_bytes;
        self.pss_bytes = match (self.pss_bytes, m.pss_bytes) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
        self.processes += 1;
    }
}

/// Summary of one proxy's samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemorySummary {
    pub samples: u64,
    pub rss_mean_mb: f64,
    pub rss_peak_mb: f64,
    /// `None` unless every sample had PSS.
    pub pss_mean_mb: Option<f64>,
    pub pss_peak_mb: Option<f64>,
    /// The SMP figure: PSS mean where available, else RSS mean.
    pub mem_mb: f64,
}

impl MemorySummary {
    /// SMP `mem_mb` is an int32.
    pub fn mem_mb_i32(&self) -> i32 {
        self.mem_mb.round().clamp(0.0, f64::from(i32::MAX)) as i32
    }
}

#[derive(Debug, Clone, Default)]
struct Acc {
    n: u64,
    rss_sum: u128,
    rss_peak: u64,
    pss_sum: u128,
    pss_peak: u64,
    pss_all: bool,
}

/// Collects samples per proxy over a run and summarises them.
#[derive(Debug, Clone, Default)]
pub struct MemorySampler {
    per_proxy: BTreeMap<ProxyId, Acc>,
}

impl MemorySampler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one sample. Samples where no process could be read are ignored (the proxy was
    /// between restarts), so they do not pull the mean down.
    pub fn record(&mut self, proxy: &ProxyId, sample: ProxyMemorySample) {
        if sample.processes == 0 {
            return;
        }
        let a = self.per_proxy.entry(proxy.clone()).or_insert_with(|| Acc {
            pss_all: true,
            ..Acc::default()
        });
        a.n += 1;
        a.rss_sum += u128::from(sample.rss_bytes);
        a.rss_peak = a.rss_peak.max(sample.rss_bytes);
        match sample.pss_bytes {
            Some(p) => {
                a.pss_sum += u128::from(p);
                a.pss_peak = a.pss_peak.max(p);
            }
            None => a.pss_all = false,
        }
    }

    /// Samples every proxy with live processes in `discovery` once (call it periodically,
    /// e.g. every second of a run).
    pub fn sample_discovery<S: super::discovery::ProcSource>(
        &mut self,
        procfs: &ProcFs,
        discovery: &super::Discovery<S>,
        with_pss: bool,
    ) {
        for p in discovery.proxies().filter(|p| !p.tgids.is_empty()) {
            self.record(
                &p.id,
                procfs.proxy_memory(p.tgids.iter().copied(), with_pss),
            );
        }
    }

    /// Summary of one proxy (`None` if it never had a sample).
    pub fn summary(&self, proxy: &ProxyId) -> Option<MemorySummary> {
        let a = self.per_proxy.get(proxy)?;
        let n = a.n as f64;
        let rss_mean = a.rss_sum as f64 / n / MIB;
        let (pss_mean, pss_peak) = if a.pss_all {
            (
                Some(a.pss_sum as f64 / n / MIB),
                Some(a.pss_peak as f64 / MIB),
            )
        } else {
            (None, None)
        };
        Some(MemorySummary {
            samples: a.n,
            rss_mean_mb: rss_mean,
            rss_peak_mb: a.rss_peak as f64 / MIB,
            pss_mean_mb: pss_mean,
            pss_peak_mb: pss_peak,
            mem_mb: pss_mean.unwrap_or(rss_mean),
        })
    }

    /// Summaries of all proxies.
    pub fn summaries(&self) -> Vec<(ProxyId, MemorySummary)> {
        self.per_proxy
            .keys()
            .filter_map(|id| Some((id.clone(), self.summary(id)?)))
            .collect()
    }

    /// Sum of every proxy's `mem_mb` (SMP `ServiceMeshConfig.sidecar.mem_mb`).
    pub fn total_mem_mb(&self) -> f64 {
        self.summaries().iter().map(|(_, s)| s.mem_mb).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::discovery::{ProxyKind, ProxyScope};

    const ROLLUP: &str =
        "55d0c0a00000-7ffd1e5f2000 ---p 00000000 00:00 0                          [rollup]
Rss:               10240 kB
Pss:                4096 kB
Pss_Dirty:          1000 kB
Shared_Clean:       6000 kB
";

    #[test]
    fn parsers() {
        assert_eq!(
            parse_statm("5000 300 100 10 0 200 0\n", 4096),
            Some(300 * 4096)
        );
        assert_eq!(parse_statm("5000", 4096), None);
        assert_eq!(parse_statm("", 4096), None);
        assert_eq!(
            parse_smaps_rollup(ROLLUP),
            Some((10_240 * 1024, 4_096 * 1024))
        );
        assert_eq!(parse_smaps_rollup("Rss: 12 kB\n"), None);
        // "Pss_Dirty" must not be taken for "Pss".
        assert_eq!(
            parse_smaps_rollup("Pss_Dirty: 1 kB\nRss: 2 kB\nPss: 3 kB\n"),
            Some((2048, 3072))
        );
    }

    fn pid_id() -> ProxyId {
        ProxyId {
            kind: ProxyKind::Nginx,
            scope: ProxyScope::Cgroup("/".into()),
            fingerprint: 0,
        }
    }

    #[test]
    fn sampler_mean_peak_and_pss_fallback() {
        let id = pid_id();
        let mut s = MemorySampler::new();
        let mib = 1024 * 1024;
        let mut sample = ProxyMemorySample {
            rss_bytes: 0,
            pss_bytes: Some(0),
            processes: 0,
            skipped: 0,
        };
        sample.add(ProcessMemory {
            rss_bytes: 10 * mib,
            pss_bytes: Some(6 * mib),
        });
        sample.add(ProcessMemory {
            rss_bytes: 10 * mib,
            pss_bytes: Some(4 * mib),
        });
        s.record(&id, sample);
        s.record(
            &id,
            ProxyMemorySample {
                rss_bytes: 40 * mib,
                pss_bytes: Some(20 * mib),
                processes: 2,
                skipped: 0,
            },
        );
        s.record(
            &id,
            ProxyMemorySample {
                rss_bytes: 0,
                pss_bytes: None,
                processes: 0,
                skipped: 2,
            },
        );
        let sum = s.summary(&id).unwrap();
        assert_eq!(sum.samples, 2, "empty samples ignored");
        assert!((sum.rss_mean_mb - 30.0).abs() < 1e-9);
        assert!((sum.rss_peak_mb - 40.0).abs() < 1e-9);
        assert_eq!(sum.pss_mean_mb, Some(15.0));
        assert_eq!(sum.mem_mb, 15.0);
        assert_eq!(sum.mem_mb_i32(), 15);
        s.record(
            &id,
            ProxyMemorySample {
                rss_bytes: 30 * mib,
                pss_bytes: None,
                processes: 1,
                skipped: 0,
            },
        );
        let sum = s.summary(&id).unwrap();
        assert_eq!(
            sum.pss_mean_mb, None,
            "one sample without PSS: fall back to RSS"
        );
        assert!((sum.mem_mb - 30.0).abs() < 1e-9);
        assert!((s.total_mem_mb() - 30.0).abs() < 1e-9);
    }

    #[test]
    fn reads_self_and_skips_gone() {
        let fs = ProcFs::default();
        let me = fs.memory(std::process::id(), true).unwrap();
        assert!(me.rss_bytes > 0);
        let gone = fs.proxy_memory([4_194_304 + 7], true);
        assert_eq!((gone.processes, gone.skipped, gone.pss_bytes), (0, 1, None));
    }
}
