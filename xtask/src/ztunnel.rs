//! ztunnel, Istio's ambient-mode node proxy, for the ambient lab (`smp-agent lab up --proxy
//! ztunnel`). It is on no package registry: `cargo xtask setup` builds it from a source tarball
//! or tree named by `$SMP_ZTUNNEL_SRC` (`.ci/run` points it at the one CI is given), caches
//! the build outside the checkout, keyed by the source, and puts a copy where the lab looks
//! (`<repo>/.cache/ztunnel/ztunnel`). Without a source and a cached build the step says what
//! is missing and goes on: only the ambient tests need it, and under `CI=true` they fail.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _};

use crate::util::{output, run_cmd};

/// Where the lab finds the binary, relative to the checkout.
pub const LAB_COPY: &str = ".cache/ztunnel/ztunnel";

/// The build: no FIPS (`tls-boring` needs a git dependency and prebuilt BoringSSL), ring for
/// TLS, `testing` for the fake CA the lab runs with (no istiod).
const FEATURES: &[&str] = &["--no-default-features", "--features", "tls-ring,testing"];

/// Builds (or finds the cached build of) ztunnel and puts it where the lab looks.
pub fn setup() -> anyhow::Result<()> {
    let copy = crate::util::root().join(LAB_COPY);
    let Some(src) = std::env::var_os("SMP_ZTUNNEL_SRC").filter(|s| !s.is_empty()) else {
        if copy.is_file() {
            println!("setup: ztunnel present ({})", copy.display());
        } else {
            println!(
                "setup: ztunnel not built: set SMP_ZTUNNEL_SRC to a ztunnel source tarball or \
                 tree (docs/lab.md); the ambient lab tests need it"
            );
        }
        return Ok(());
    };
    let src = PathBuf::from(src);
    let key = source_key(&src)?;
    let dir = cache_dir()?.join(format!("ztunnel-{key}"));
    let built = dir.join("ztunnel");
    if !built.is_file() {
        build(&src, &dir, &built)?;
    } else {
        println!("setup: ztunnel cached ({})", built.display());
    }
    if !copy.is_file() || std::fs::read(&copy)? != std::fs::read(&built)? {
        std::fs::create_dir_all(copy.parent().expect("a parent"))?;
        std::fs::copy(&built, &copy)
            .with_context(|| format!("copy {} to {}", built.display(), copy.display()))?;
    }
    println!("setup: ztunnel ready ({})", copy.display());
    Ok(())
}

/// `$SMP_CACHE_DIR`, else `$XDG_CACHE_HOME/smp-agent`, else `~/.cache/smp-agent`: outside any
/// checkout, so every clone on the machine shares one build.
fn cache_dir() -> anyhow::Result<PathBuf> {
    let var = |v: &str| {
        std::env::var_os(v)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("SMP_CACHE_DIR") {
        return Ok(d);
    }
    if let Some(d) = var("XDG_CACHE_HOME") {
        return Ok(d.join("smp-agent"));
    }
    let home = var("HOME").context("HOME is not set: set SMP_CACHE_DIR")?;
    Ok(home.join(".cache/smp-agent"))
}

/// 16 hex digits naming the source: the tarball's SHA-256, or for a tree the SHA-256 of its
/// files' names, sizes and modification times (build outputs left out).
fn source_key(src: &Path) -> anyhow::Result<String> {
    let sum = if src.is_file() {
        output(Command::new("sha256sum").arg(src))?
    } else if src.is_dir() {
        let listing = output(Command::new("find").arg(src).args([
            "-type",
            "f",
            "-not",
            "-path",
            "*/out/*",
            "-not",
            "-path",
            "*/target/*",
            "-not",
            "-path",
            "*/.git/*",
            "-printf",
            "%P %s %T@\\n",
        ]))?;
        let mut lines: Vec<&str> = listing.lines().collect();
        lines.sort_unstable();
        let mut child = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("spawn sha256sum")?;
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("piped");
            stdin.write_all(lines.join("\n").as_bytes())?;
        }
        let out = child.wait_with_output()?;
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        bail!(
            "SMP_ZTUNNEL_SRC={}: no such file or directory (a ztunnel source tarball or tree)",
            src.display()
        );
    };
    Ok(sum.chars().take(16).collect())
}

/// Unpacks or copies the source into `dir/src`, drops what cannot be fetched here, builds, and
/// keeps the binary as `built`.
fn build(src: &Path, dir: &Path, built: &Path) -> anyhow::Result<()> {
    let tree = dir.join("src");
    if tree.exists() {
        std::fs::remove_dir_all(&tree).with_context(|| format!("remove {}", tree.display()))?;
    }
    std::fs::create_dir_all(&tree)?;
    println!(
        "setup: building ztunnel from {} in {} (about 7 minutes on 2 cores)",
        src.display(),
        tree.display()
    );
    if src.is_file() {
        run_cmd(
            Command::new("tar")
                .arg("xzf")
                .arg(src)
                .arg("-C")
                .arg(&tree)
                .arg("--strip-components=1"),
        )?;
    } else {
        run_cmd(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", src.display()))
                .arg(&tree),
        )?;
    }
    let manifest = tree.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("{}: not a ztunnel source tree", manifest.display()))?;
    std::fs::write(&manifest, without_git_dependencies(&text))?;
    run_cmd(
        Command::new("cargo")
            .current_dir(&tree)
            // Not `--locked`: dropping the git dependency changes the lock file (nothing else).
            .args(["build", "--release"])
            .args(FEATURES)
            // Its `.cargo/config.toml` sets the target directory; an inherited one would not
            // be where we look.
            .env_remove("CARGO_TARGET_DIR"),
    )
    .context("building ztunnel failed (it needs protobuf-compiler, which setup installs)")?;
    let out = tree.join("out/rust/release/ztunnel");
    std::fs::copy(&out, built).with_context(|| format!("copy {}", out.display()))?;
    // The tree and its build outputs are most of a gigabyte; the binary is what is kept.
    std::fs::remove_dir_all(&tree).with_context(|| format!("remove {}", tree.display()))?;
    println!("setup: ztunnel built ({})", built.display());
    Ok(())
}

/// The manifest without the optional FIPS feature and its git dependency: git dependencies
/// cannot be fetched where only package registries are reachable, and nothing else needs them.
fn without_git_dependencies(manifest: &str) -> String {
    manifest
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !(l.starts_with("tls-boring ")
                || l.starts_with("tls-boring=")
                || l.starts_with("boring-rustls-provider"))
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_the_fips_feature_and_its_git_dependency_only() {
        let m = "[features]\ndefault = [\"tls-aws-lc\"]\ntls-boring = [\"dep:boring\", \"boring-rustls-provider/fips-only\"]\n\
                 tls-ring = [\"dep:ring\"]\n[dependencies]\nboring-rustls-provider = { git = \"https://x\", optional = true }\n\
                 boring = { version = \"4\", optional = true }\n";
        let out = without_git_dependencies(m);
        assert!(!out.contains("git ="));
        assert!(!out.contains("tls-boring"));
        assert!(out.contains("tls-ring = [\"dep:ring\"]"));
        assert!(out.contains("boring = { version = \"4\", optional = true }"));
        assert!(out.contains("default = [\"tls-aws-lc\"]"));
    }
}
