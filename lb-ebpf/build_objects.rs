//! Shared by the build scripts that embed lb-ebpf's programs (lb-userspace
//! for `xlb`, xlb-tests for the benchmark), through `#[path]`: builds the
//! crate's programs with the nightly toolchain through aya-build into
//! OUT_DIR for `include_bytes_aligned!`. With AYA_BUILD_SKIP=1 (fast `cargo
//! check`/clippy) empty stubs stand in for `programs`.

use std::{env, fs, path::PathBuf};

pub(crate) fn build(programs: &[&str], features: &[&str]) -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../lb-ebpf");
    let common = manifest.join("../lb-common");
    println!("cargo:rerun-if-changed={}", common.display());
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out = PathBuf::from(env::var("OUT_DIR")?);
        for p in programs {
            let path = out.join(p);
            if !path.exists() {
                fs::write(path, [])?;
            }
        }
    }
    let root = root
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lb-ebpf",
            root_dir: root,
            features,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
