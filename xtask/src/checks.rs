//! `cargo xtask test`: formatting, lints (host and eBPF) and the tests. Every
//! step runs even when an earlier one fails; a summary lists them all.

use anyhow::{Result, bail};

use crate::{cmd::Cmd, workspace};

pub(crate) fn run(test_args: &[String]) -> Result<()> {
    let steps: [(&str, Cmd); 4] = [
        (
            "cargo fmt",
            workspace::cargo().args(["fmt", "--all", "--", "--check"]),
        ),
        (
            "cargo clippy",
            workspace::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]),
        ),
        (
            "cargo test",
            workspace::cargo()
                .args(["test", "--no-fail-fast"])
                .args(test_args),
        ),
        (
            "cargo clippy (eBPF)",
            workspace::nightly_cargo().args([
                "clippy",
                "-p",
                "lb-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--release",
                "--",
                "-D",
                "warnings",
            ]),
        ),
    ];
    let total = steps.len();

    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for (name, cmd) in steps {
        eprintln!("==> {name}");
        let shown = cmd.to_string();
        match cmd.run() {
            Ok(()) => summary.push(format!("  ok    {name}")),
            Err(err) => {
                summary.push(format!("  FAIL  {name}: {err:#}"));
                failures.push(format!("`{shown}`"));
            }
        }
    }

    eprintln!("==> summary");
    for line in &summary {
        eprintln!("{line}");
    }
    if !failures.is_empty() {
        bail!(
            "{} of {total} steps failed: {}",
            failures.len(),
            failures.join(", ")
        );
    }
    Ok(())
}
