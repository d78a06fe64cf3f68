//! What building the static binary for an architecture needs: Rust's musl
//! target and a C compiler for it (ring compiles C).

use anyhow::{Context as _, Result};

use super::packages;
use crate::{arch::Arch, cmd::Cmd};

pub(super) fn ensure(is_root: bool, arch: Arch) -> Result<()> {
    packages::ensure_these(is_root, arch.c_compiler_packages())?;
    let target = arch.musl_target();
    let installed = Cmd::new("rustup")
        .args(["target", "list", "--installed"])
        .read()?;
    if !installed.lines().any(|line| line.trim() == target) {
        Cmd::new("rustup")
            .args(["target", "add", target])
            .run()
            .with_context(|| format!("could not add the Rust target {target}"))?;
    }
    Ok(())
}
