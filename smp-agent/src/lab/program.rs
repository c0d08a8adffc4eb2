//! Programs the sidecars run as their own uid: a checkout in a home directory (`/root`, mode
//! 0700) holds binaries (the Envoy and Traefik of `.cache/`, our own agent under `target/`)
//! that uid cannot reach, so such a program is run from a copy it can.

use std::{
    fs::Metadata,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use super::{state, LabError};

/// Whether `m` lets `uid` (no supplementary groups, its own gid) search or execute:
/// the owner's bit when it owns it, else the others' bit.
fn allows(m: &Metadata, uid: u32) -> bool {
    if m.uid() == uid {
        m.mode() & 0o100 != 0
    } else {
        m.mode() & 0o001 != 0
    }
}

/// Whether `uid` can execute `path`: the file itself and every directory above it.
pub fn executable_by(path: &Path, uid: u32) -> bool {
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    let file_ok = std::fs::metadata(&real).is_ok_and(|m| m.is_file() && allows(&m, uid));
    file_ok
        && real
            .ancestors()
            .skip(1)
            .all(|d| std::fs::metadata(d).is_ok_and(|m| allows(&m, uid)))
}

/// Where the copies go: next to the labs' state root (`/run/smp-agent/bin`).
pub fn copies_dir() -> PathBuf {
    let root = state::root();
    root.parent().unwrap_or(&root).join("bin")
}

/// Where `uid` can execute `program` from: the program itself if it can, else a copy in
/// `dir` ([`copies_dir`]), made once per version of the program: `<dir>/<size>-<mtime>/<name>`,
/// so the copy keeps its name (discovery finds a proxy by it); older versions of it are
/// removed.
pub fn reachable_by(program: &Path, uid: u32, dir: &Path) -> Result<PathBuf, LabError> {
    if executable_by(program, uid) {
        return Ok(program.to_path_buf());
    }
    let io = |what: &str, p: &Path, e| LabError::io(format!("{what} {}", p.display()), e);
    let meta = std::fs::metadata(program).map_err(|e| io("stat", program, e))?;
    let name = program
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("program");
    let version = format!("{}-{}", meta.len(), meta.mtime());
    let vdir = dir.join(&version);
    let copy = vdir.join(name);
    if executable_by(&copy, uid) {
        return Ok(copy);
    }
    // Older versions of the same program go (a rebuilt agent, an upgraded Envoy).
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name() != version.as_str() && e.path().join(name).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    for d in [dir, vdir.as_path()] {
        std::fs::create_dir_all(d).map_err(|e| io("create", d, e))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| io("chmod", d, e))?;
    }
    let tmp = vdir.join(format!(".{name}.{}", std::process::id()));
    std::fs::copy(program, &tmp).map_err(|e| io("copy", program, e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| io("chmod", &tmp, e))?;
    std::fs::rename(&tmp, &copy).map_err(|e| io("rename", &tmp, e))?;
    tracing::info!(
        "{} is out of reach of uid {uid} (a directory above it is closed to others): the sidecar runs {}",
        program.display(),
        copy.display()
    );
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("smp-program-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Modes decide, not who runs the test: a closed directory above the file, or a file
    /// without the others' execute bit, is out of reach of another uid.
    #[test]
    fn a_closed_directory_above_puts_a_program_out_of_reach() {
        let d = scratch("reach");
        let home = d.join("home");
        std::fs::create_dir_all(home.join("bin")).unwrap();
        let prog = home.join("bin/proxy");
        std::fs::write(&prog, b"#!/bin/true\n").unwrap();
        chmod(&d, 0o755);
        chmod(&home.join("bin"), 0o755);
        chmod(&prog, 0o755);
        let other = 1337;
        chmod(&home, 0o755);
        assert!(executable_by(&prog, other));
        chmod(&home, 0o700);
        assert!(!executable_by(&prog, other), "a 0700 directory above");
        chmod(&home, 0o755);
        chmod(&prog, 0o750);
        assert!(!executable_by(&prog, other), "no execute bit for others");
        assert!(!executable_by(&d.join("missing"), other));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_unreachable_program_is_run_from_one_reachable_copy() {
        let d = scratch("copy");
        chmod(&d, 0o755);
        let home = d.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let prog = home.join("proxy");
        std::fs::write(&prog, b"binary").unwrap();
        chmod(&prog, 0o755);
        chmod(&home, 0o700);
        let bin = d.join("bin");
        let copy = reachable_by(&prog, 1337, &bin).unwrap();
        assert!(copy.starts_with(&bin), "{}", copy.display());
        assert_eq!(
            copy.file_name().unwrap(),
            "proxy",
            "the copy keeps its name"
        );
        assert!(executable_by(&copy, 1337));
        assert_eq!(std::fs::read(&copy).unwrap(), b"binary");
        // Reachable programs are used as they are.
        chmod(&home, 0o755);
        assert_eq!(reachable_by(&prog, 1337, &bin).unwrap(), prog);
        let _ = std::fs::remove_dir_all(&d);
    }
}
