//! The lab's state on disk (`/run/smp-agent/lab/<name>/state.json`), written before each step
//! of `up`, so `down` can undo a crashed or half-finished `up`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{config::LabConfig, LabError, LabInfo};

/// Root of all labs' state directories (`SMP_LAB_STATE_ROOT` overrides, for tests).
pub fn root() -> PathBuf {
    std::env::var_os("SMP_LAB_STATE_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/smp-agent/lab"))
}

/// State directory of one lab.
pub fn dir(name: &str) -> PathBuf {
    root().join(name)
}

/// Where a lab is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// `up` is running (or crashed while running).
    Starting,
    /// `up` finished.
    Up,
    /// `down` is running (or crashed while running).
    Stopping,
}

/// One process the lab started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// `app`, `inbound` or `outbound`.
    pub role: String,
    /// Program (proxy kind or `app`).
    pub kind: String,
    /// Process id.
    pub pid: u32,
    /// Start time (clock ticks since boot): guards against pid reuse.
    pub start_time: Option<u64>,
    /// Namespace it runs in.
    pub netns: String,
    /// Its log file.
    pub log: PathBuf,
    /// How it was started, so `restart` can start it again the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

/// A process's command, user and readiness addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub uid: Option<u32>,
    /// Addresses it listens on once ready.
    pub ready: Vec<std::net::SocketAddr>,
}

/// Everything `down` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// Lab name.
    pub name: String,
    /// Phase.
    pub phase: Phase,
    /// The config `up` ran with.
    pub config: LabConfig,
    /// Namespaces `up` created or was about to create.
    pub netns: Vec<String>,
    /// Processes started.
    pub processes: Vec<ProcRecord>,
    /// Set when `up` finished.
    pub info: Option<LabInfo>,
}

impl LabState {
    /// Path of the state file.
    pub fn path(name: &str) -> PathBuf {
        dir(name).join("state.json")
    }

    /// Writes atomically (temp file + rename).
    pub fn save(&self) -> Result<(), LabError> {
        let path = Self::path(&self.name);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| LabError::State {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        std::fs::write(&tmp, text)
            .map_err(|e| LabError::io(format!("write {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| LabError::io(format!("rename {} to {}", tmp.display(), path.display()), e))
    }

    /// Reads a lab's state; `Ok(None)` when there is none.
    pub fn load(name: &str) -> Result<Option<Self>, LabError> {
        let path = Self::path(name);
        load_path(&path)
    }
}

fn load_path(path: &Path) -> Result<Option<LabState>, LabError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| LabError::State {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LabError::io(format!("read {}", path.display()), e)),
    }
}

/// Names of labs with a state directory.
pub fn names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root())
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
