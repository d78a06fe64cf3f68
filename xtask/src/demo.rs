//! `cargo xtask run`: builds, then runs the xlb-demo binary of xlb-tests.

use anyhow::Result;

use crate::{build, workspace};

pub(crate) fn run(once: bool) -> Result<()> {
    build::run(false, None)?;
    workspace::cargo()
        .args([
            "run",
            "--quiet",
            "-p",
            "xlb-tests",
            "--bin",
            "xlb-demo",
            "--",
        ])
        .args(once.then_some("--once"))
        .run()
}
