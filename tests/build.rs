//! Builds the benchmark's XDP programs (lb-ebpf with its `bench` feature)
//! through aya-build, into this package's OUT_DIR, for xlb-bench to embed.
//! They live here rather than in lb-userspace so that the `xlb` binary
//! carries only the programs it runs. With AYA_BUILD_SKIP=1 (fast `cargo
//! check`/clippy) empty stubs stand in.

use std::{env, fs, path::PathBuf};

/// The `[[bin]]` targets of lb-ebpf that only its `bench` feature builds.
const BENCH_PROGRAMS: &[&str] = &["xlb-balancer-nolog", "xlb-floor-pass", "xlb-floor-swap"];

fn main() -> anyhow::Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.join("../lb-ebpf");
    let common = manifest.join("../lb-common");
    println!("cargo:rerun-if-changed={}", common.display());
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out = PathBuf::from(env::var("OUT_DIR")?);
        for p in BENCH_PROGRAMS {
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
            features: &["bench"],
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
