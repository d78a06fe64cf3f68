//! `cargo xtask bench`: runs the xlb-bench binary of the xlb-tests crate.

use anyhow::Result;

use crate::workspace;

pub(crate) fn run(args: &[String]) -> Result<()> {
    workspace::cargo()
        .args([
            "run",
            "--release",
            "-p",
            "xlb-tests",
            "--bin",
            "xlb-bench",
            "--",
        ])
        .args(args)
        .run()
}
