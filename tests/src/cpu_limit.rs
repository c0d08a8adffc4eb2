//! Sidecars with a CPU limit, as Kubernetes sets one: the kernel's CFS bandwidth control gives
//! the sidecar's processes `quota` of CPU time per `period`, and once they have used it they
//! wait, runnable, for the next period (throttled). While a sidecar waits its peers keep
//! sending; once it runs again it catches up in large turns: many reads, then writes that
//! carry dozens of messages.
//!
//! The sidecar's processes move into a cgroup of their own under the cgroup v1 `cpu`
//! controller (`cpu.cfs_quota_us`) or, on a cgroup v2 host, the unified hierarchy
//! (`cpu.max`); dropped, they move back and the cgroup goes.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Duration,
};

/// A CPU limit: `quota` of CPU time per `period`.
#[derive(Clone, Copy, Debug)]
pub struct CpuLimit {
    pub quota: Duration,
    pub period: Duration,
}

/// A set of processes under a CPU limit while it lives.
pub struct Throttled {
    dir: PathBuf,
    /// Where the processes were (their cgroup's `cgroup.procs`).
    home: PathBuf,
    pids: Vec<u32>,
}

/// The cgroup v1 `cpu` hierarchy, or the unified one when it has the `cpu` controller.
fn cpu_root() -> Result<(PathBuf, bool), String> {
    let v1 = Path::new("/sys/fs/cgroup/cpu");
    if v1.join("cpu.cfs_quota_us").exists() {
        return Ok((v1.to_path_buf(), true));
    }
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let controllers =
            fs::read_to_string(Path::new(root).join("cgroup.controllers")).unwrap_or_default();
        if controllers.split_whitespace().any(|c| c == "cpu") {
            return Ok((PathBuf::from(root), false));
        }
    }
    Err("no cgroup hierarchy with the cpu controller (CFS bandwidth control)".into())
}

impl Throttled {
    /// Puts `pids` (a sidecar's processes) under `limit`, in a cgroup named `name`.
    pub fn start(name: &str, pids: &[u32], limit: CpuLimit) -> Result<Throttled, String> {
        let (root, v1) = cpu_root()?;
        let dir = root.join(format!("smp-test-{name}"));
        if !dir.exists() {
            fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        // Made first: a step that fails below drops it, which moves back what moved.
        let t = Throttled {
            home: root.join("cgroup.procs"),
            dir,
            pids: pids.to_vec(),
        };
        let (quota, period) = (limit.quota.as_micros(), limit.period.as_micros());
        if v1 {
            t.set("cpu.cfs_period_us", period.to_string())?;
            t.set("cpu.cfs_quota_us", quota.to_string())?;
        } else {
            let _ = fs::write(root.join("cgroup.subtree_control"), "+cpu");
            t.set("cpu.max", format!("{quota} {period}"))?;
        }
        for pid in pids {
            t.set("cgroup.procs", pid.to_string())?;
        }
        Ok(t)
    }

    /// Writes `value` to the cgroup's `file`.
    fn set(&self, file: &str, value: String) -> Result<(), String> {
        fs::write(self.dir.join(file), value)
            .map_err(|e| format!("{}/{file}: {e}", self.dir.display()))
    }

    /// How many periods the processes were throttled in so far (`cpu.stat`).
    pub fn throttled_periods(&self) -> u64 {
        fs::read_to_string(self.dir.join("cpu.stat"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == "nr_throttled").then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0)
    }
}

impl Drop for Throttled {
    fn drop(&mut self) {
        for pid in &self.pids {
            let _ = fs::write(&self.home, pid.to_string());
        }
        let _ = fs::remove_dir(&self.dir);
    }
}
