//! Builds the benchmark's XDP programs (lb-ebpf with its `bench` feature)
//! into this package's OUT_DIR, for xlb-bench to embed. They live here
//! rather than in lb-userspace so that the `xlb` binary carries only the
//! programs it runs; see lb-ebpf/build_objects.rs.

#[path = "../lb-ebpf/build_objects.rs"]
mod build_objects;

/// The `[[bin]]` targets of lb-ebpf that only its `bench` feature builds.
const BENCH_PROGRAMS: &[&str] = &["xlb-balancer-nolog", "xlb-floor-pass", "xlb-floor-swap"];

fn main() -> anyhow::Result<()> {
    build_objects::build(BENCH_PROGRAMS, &["bench"])
}
