//! Builds the kernel programs (`smp-ebpf`) for bpfel and embeds them in the agent.
//!
//! With `AYA_BUILD_SKIP=1` the eBPF build is skipped and an empty placeholder object is written;
//! the agent then refuses to load probes and says why (pure-userspace builds and tests only).

use std::{env, fs, path::PathBuf};

use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let object = out_dir.join("smp");
    if skip {
        fs::write(&object, b"").context("failed to write the placeholder eBPF object")?;
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let root = PathBuf::from(manifest).join("../smp-ebpf");
    let root = root
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {root:?}"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "smp-ebpf",
            root_dir: root,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
    .context("failed to build the eBPF programs (run `cargo xtask setup` first)")
}
