//! `cargo xtask build`: builds the workspace's default members. lb-ebpf is
//! not among them; lb-userspace's build script builds it through aya-build.

use anyhow::Result;

use crate::workspace;

pub(crate) fn run(release: bool) -> Result<()> {
    workspace::cargo()
        .arg("build")
        .args(release.then_some("--release"))
        .run()
}
