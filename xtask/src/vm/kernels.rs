//! The kernels: which Debian packages, a private apt configuration, download, keep vmlinuz.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{bail, Context as _};

use crate::util::output;

use super::{cache_dir, run_deadline, tail_lines};

/// The kernels the matrix knows. Each is a Debian cloud-flavour package found by name
/// pattern; the newest ABI that downloads is used and then cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Spec {
    /// What `--kernels` accepts.
    pub(super) alias: &'static str,
    /// Debian suite it comes from (documentation only: the private apt config has them all).
    pub(super) suite: &'static str,
    /// Package name = prefix + middle + suffix.
    pub(super) prefix: &'static str,
    pub(super) middle: Middle,
    pub(super) suffix: &'static str,
    /// `linux-image-*` has an `-unsigned` twin (same vmlinuz, no signature); try it first.
    pub(super) unsigned_twin: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Middle {
    /// An ABI number: `linux-image-6.1.0-<56>-cloud-amd64`.
    Abi,
    /// `<patch>+debNN`: `linux-image-6.12.<117>+deb12-cloud-amd64`.
    PatchDeb(&'static str),
    /// `<minor>.<patch>+debNN`: `linux-binary-7.<2.13>+deb14-cloud-amd64`.
    MinorPatchDeb,
}

pub(super) const SPECS: &[Spec] = &[
    Spec {
        alias: "5.10",
        suite: "bullseye",
        prefix: "linux-image-5.10.0-",
        middle: Middle::Abi,
        suffix: "-cloud-amd64",
        unsigned_twin: true,
    },
    Spec {
        alias: "6.1",
        suite: "bookworm",
        prefix: "linux-image-6.1.0-",
        middle: Middle::Abi,
        suffix: "-cloud-amd64",
        unsigned_twin: true,
    },
    Spec {
        alias: "6.12",
        suite: "bookworm",
        prefix: "linux-image-6.12.",
        middle: Middle::PatchDeb("+deb12"),
        suffix: "-cloud-amd64",
        unsigned_twin: true,
    },
    Spec {
        // trixie and later split the kernel: vmlinuz is in linux-binary-KVER.
        alias: "7",
        suite: "sid",
        prefix: "linux-binary-7.",
        middle: Middle::MinorPatchDeb,
        suffix: "-cloud-amd64",
        unsigned_twin: false,
    },
];

/// The private apt sources (no change to /etc/apt).
pub(super) const APT_SOURCES: &str = "\
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian sid main
";

pub(super) fn apt_dir() -> PathBuf {
    cache_dir().join("apt")
}

pub(super) fn apt_opts() -> Vec<String> {
    let d = apt_dir();
    let d = d.display();
    [
        format!("Dir::Etc::SourceList={d}/sources.list"),
        format!("Dir::Etc::SourceParts={d}/sources.list.d"),
        format!("Dir::Etc::Preferences={d}/preferences"),
        format!("Dir::Etc::PreferencesParts={d}/preferences.d"),
        format!("Dir::State::Lists={d}/lists"),
        format!("Dir::Cache={d}/cache"),
        "Dir::State::status=/dev/null".into(),
        "APT::Architectures::=amd64".into(),
        "APT::Sandbox::User=root".into(),
        "Acquire::Languages=none".into(),
        "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".into(),
        "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false".into(),
        "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false".into(),
        "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false".into(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

pub(super) fn apt(tool: &str) -> Command {
    let mut c = Command::new(tool);
    c.args(apt_opts());
    c
}

/// `apt-get update` of the private configuration.
pub(super) fn apt_update() -> anyhow::Result<()> {
    let d = apt_dir();
    for sub in [
        "lists/partial",
        "cache/archives/partial",
        "sources.list.d",
        "preferences.d",
    ] {
        fs::create_dir_all(d.join(sub))?;
    }
    fs::write(d.join("sources.list"), APT_SOURCES)?;
    println!("vm-test: apt-get update (private config in .cache/vm/apt: bullseye, bookworm, sid)");
    let (ok, out) = run_deadline(apt("apt-get").arg("update"), Duration::from_secs(300))?;
    if !ok {
        bail!(
            "apt-get update failed:\n{}",
            tail_lines(&String::from_utf8_lossy(&out), 15)
        );
    }
    Ok(())
}

/// Sort key of a package name for this spec, or None if it is not one of its packages.
pub(super) fn match_spec(spec: &Spec, name: &str) -> Option<Vec<u64>> {
    let mid = name.strip_prefix(spec.prefix)?.strip_suffix(spec.suffix)?;
    let nums =
        |s: &str| -> Option<Vec<u64>> { s.split('.').map(|p| p.parse::<u64>().ok()).collect() };
    match spec.middle {
        Middle::Abi => nums(mid).filter(|v| v.len() == 1),
        Middle::PatchDeb(deb) => nums(mid.strip_suffix(deb)?).filter(|v| v.len() == 1),
        Middle::MinorPatchDeb => {
            let (ver, deb) = mid.split_once("+deb")?;
            deb.parse::<u64>().ok()?;
            nums(ver).filter(|v| v.len() == 2)
        }
    }
}

/// Package names to try, best first.
pub(super) fn candidates(spec: &Spec) -> anyhow::Result<Vec<String>> {
    let names = output(apt("apt-cache").args(["pkgnames", spec.prefix]))?;
    let mut found: Vec<(Vec<u64>, String)> = names
        .lines()
        .filter_map(|n| match_spec(spec, n.trim()).map(|k| (k, n.trim().to_string())))
        .collect();
    found.sort();
    found.dedup();
    let mut out = Vec::new();
    for (_, n) in found.into_iter().rev().take(3) {
        if spec.unsigned_twin {
            out.push(format!("{n}-unsigned"));
        }
        out.push(n);
    }
    Ok(out)
}

/// The cached `vmlinuz` of a kernel, fetched first if needed.
pub(super) fn fetch_kernel(spec: &Spec, refresh: bool) -> anyhow::Result<PathBuf> {
    let dir = cache_dir().join("kernels").join(spec.alias);
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.is_file() && dir.join("package").is_file() && !refresh {
        return Ok(vmlinuz);
    }
    let t0 = Instant::now();
    let lists = apt_dir().join("lists");
    let fresh = fs::read_dir(&lists)
        .ok()
        .and_then(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with("InRelease"))
                .filter_map(|e| e.metadata().ok()?.modified().ok())
                .min()
        })
        .is_some_and(|m| {
            SystemTime::now()
                .duration_since(m)
                .is_ok_and(|age| age < Duration::from_secs(24 * 3600))
        });
    let same_sources =
        fs::read_to_string(apt_dir().join("sources.list")).is_ok_and(|s| s == APT_SOURCES);
    let mut updated = false;
    if !fresh || !same_sources || refresh {
        apt_update()?;
        updated = true;
    }
    let debs = cache_dir().join("debs");
    fs::create_dir_all(&debs)?;
    let mut errors = Vec::new();
    for attempt in 0..2 {
        let names = candidates(spec)?;
        if names.is_empty() {
            errors.push(format!(
                "no package {}*{} in the {} archive",
                spec.prefix, spec.suffix, spec.suite
            ));
        }
        for name in &names {
            println!("vm-test: {}: apt-get download {name}", spec.alias);
            match run_deadline(
                apt("apt-get").args(["download", name]).current_dir(&debs),
                Duration::from_secs(600),
            ) {
                Ok((true, _)) => {
                    let v = extract_vmlinuz(&debs, name, &dir)?;
                    println!(
                        "vm-test: {}: {} ready in {:.0} s",
                        spec.alias,
                        v.display(),
                        t0.elapsed().as_secs_f64()
                    );
                    return Ok(v);
                }
                Ok((false, out)) => errors.push(format!(
                    "{name}: {}",
                    tail_lines(&String::from_utf8_lossy(&out), 2)
                )),
                Err(e) => errors.push(format!("{name}: {e:#}")),
            }
        }
        if attempt == 0 && !updated {
            // Stale lists name packages the mirror no longer has: refresh once.
            apt_update()?;
            updated = true;
        } else {
            break;
        }
    }
    bail!(
        "kernel {}: no package could be downloaded:\n  {}",
        spec.alias,
        errors.join("\n  ")
    )
}

/// Extracts only the `vmlinuz*` of the downloaded `.deb` into `dir/vmlinuz`; deletes the .deb.
pub(super) fn extract_vmlinuz(debs: &Path, name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let deb = fs::read_dir(debs)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with(&format!("{name}_")) && f.ends_with(".deb"))
        })
        .with_context(|| format!("apt-get download {name} left no .deb in {}", debs.display()))?;
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("dpkg-deb")?;
    let stdout = dpkg.stdout.take().context("dpkg-deb stdout")?;
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(&tmp)
        .arg("*vmlinuz*")
        .stdin(stdout)
        .status()
        .context("tar")?;
    let dpkg_ok = dpkg.wait()?.success();
    if !tar.success() || !dpkg_ok {
        bail!("extracting vmlinuz from {} failed", deb.display());
    }
    let found = find_file(&tmp, &|p: &Path| {
        p.file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with("vmlinuz"))
    })
    .with_context(|| format!("{} holds no vmlinuz", deb.display()))?;
    // /boot/vmlinuz-KVER or /usr/lib/modules/KVER/vmlinuz
    let fname = found.file_name().and_then(|f| f.to_str()).unwrap_or("");
    let kver = match fname.strip_prefix("vmlinuz-") {
        Some(k) => k.to_string(),
        None => found
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|f| f.to_str())
            .unwrap_or("?")
            .to_string(),
    };
    fs::create_dir_all(dir)?;
    fs::rename(&found, dir.join("vmlinuz"))?;
    let pkg = deb.file_name().and_then(|f| f.to_str()).unwrap_or(name);
    fs::write(dir.join("package"), format!("{kver} {pkg}\n"))?;
    let _ = fs::remove_dir_all(&tmp);
    let _ = fs::remove_file(&deb);
    Ok(dir.join("vmlinuz"))
}

pub(super) fn find_file(dir: &Path, pred: &dyn Fn(&Path) -> bool) -> Option<PathBuf> {
    for e in fs::read_dir(dir).ok()?.filter_map(Result::ok) {
        let p = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_dir() {
            if let Some(f) = find_file(&p, pred) {
                return Some(f);
            }
        } else if ft.is_file() && pred(&p) {
            return Some(p);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{super::find_spec, *};

    #[test]
    fn package_names_match_their_kernel_only() {
        let s = |a| find_spec(a).unwrap();
        assert_eq!(
            match_spec(s("6.1"), "linux-image-6.1.0-56-cloud-amd64"),
            Some(vec![56])
        );
        assert_eq!(
            match_spec(s("6.1"), "linux-image-6.1.0-0.deb11.52-cloud-amd64"),
            None
        );
        assert_eq!(
            match_spec(s("6.1"), "linux-image-6.1.0-56-cloud-amd64-dbg"),
            None
        );
        assert_eq!(
            match_spec(s("6.12"), "linux-image-6.12.117+deb12-cloud-amd64"),
            Some(vec![117])
        );
        assert_eq!(
            match_spec(s("7"), "linux-binary-7.2.13+deb14-cloud-amd64"),
            Some(vec![2, 13])
        );
        assert_eq!(
            match_spec(s("5.10"), "linux-image-5.10.0-46-cloud-amd64"),
            Some(vec![46])
        );
    }
}
