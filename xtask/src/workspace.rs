//! Where child commands run, and how child `cargo`/`rustc` are invoked.

use std::path::{Path, PathBuf};

use crate::cmd::Cmd;

/// Variables that `cargo run` (and the rustup proxy in front of it) hand to
/// xtask and that would pin a child to the toolchain that built xtask.
const TOOLCHAIN_PINS: &[&str] = &["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTC_WORKSPACE_WRAPPER"];

/// The workspace root: the parent of the xtask crate.
pub(crate) fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the xtask crate lives inside the workspace")
}

/// `cargo ...` at the workspace root, on the toolchain xtask runs under.
pub(crate) fn cargo() -> Cmd {
    Cmd::new("cargo").dir(root())
}

/// `cargo +nightly ...` at the workspace root.
pub(crate) fn nightly_cargo() -> Cmd {
    unpinned(Cmd::new("cargo").arg("+nightly")).dir(root())
}

/// `rustc +nightly ...`.
pub(crate) fn nightly_rustc() -> Cmd {
    unpinned(Cmd::new("rustc").arg("+nightly"))
}

/// `cmd` without the variables that select a toolchain, so that rustup picks
/// the one named on the command line (or the default one).
pub(crate) fn unpinned(cmd: Cmd) -> Cmd {
    TOOLCHAIN_PINS
        .iter()
        .fold(cmd, |cmd, var| cmd.env_remove(var))
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` (relative to the
/// workspace root if relative), or `target/` in the workspace root.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root().join(dir),
        _ => root().join("target"),
    }
}
