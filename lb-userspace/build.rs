//! Builds the eBPF programs `xlb` embeds (lb-ebpf without its `bench`
//! feature); see lb-ebpf/build_objects.rs.

#[path = "../lb-ebpf/build_objects.rs"]
mod build_objects;

/// The `[[bin]]` targets of lb-ebpf built without its `bench` feature, each
/// an ELF object embedded in `xlb`. The benchmark's programs need that
/// feature and are built by xlb-tests' build script instead, so they never
/// reach the daemon's binary.
const PROGRAMS: &[&str] = &["xlb-balancer", "xlb-decap", "xlb-probe"];

fn main() -> anyhow::Result<()> {
    build_objects::build(PROGRAMS, &[])
}
