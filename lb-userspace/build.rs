//! Builds the XDP programs (lb-ebpf) with the nightly toolchain through
//! aya-build and leaves the objects in OUT_DIR for `include_bytes_aligned!`.
//! With AYA_BUILD_SKIP=1 (fast `cargo check`/clippy) empty stubs stand in.

use std::{env, fs, path::PathBuf};

/// The `[[bin]]` targets of lb-ebpf built without its `bench` feature, each
/// an ELF object embedded in `xlb`. The benchmark's programs need that
/// feature and are built by xlb-tests' build script instead, so they never
/// reach the daemon's binary.
const PROGRAMS: &[&str] = &["xlb-balancer", "xlb-decap"];

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../lb-ebpf");
    let common = manifest.join("../lb-common");
    println!("cargo:rerun-if-changed={}", common.display());
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out = PathBuf::from(env::var("OUT_DIR")?);
        for p in PROGRAMS {
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
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
