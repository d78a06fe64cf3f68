//! `cargo xtask build`: builds the workspace's default members. lb-ebpf is
//! not among them; lb-userspace's build script builds the programs `xlb`
//! embeds through aya-build, and xlb-tests' build script the benchmark's.

use anyhow::Result;

use crate::workspace;

pub(crate) fn run(release: bool) -> Result<()> {
    // Quiet: aya-build relays every line of the nested eBPF build as a
    // cargo warning, which buries the progress; errors still show in full.
    eprintln!("building xlb: eBPF programs (nightly, bpf-linker), the daemon, the test tools ...");
    workspace::cargo()
        .args(["build", "--quiet"])
        .args(release.then_some("--release"))
        .run()
}
