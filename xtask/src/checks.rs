//! `cargo xtask test`: formatting, lints (host and eBPF), the tests, then
//! the tests inside other kernels (`cargo xtask vm-test`): x86_64's, then
//! arm64's (emulated, on the static aarch64 build). Every step runs even
//! when an earlier one fails; a summary lists them all.

use std::time::Duration;

use anyhow::{Result, bail};

use crate::{arch::Arch, cmd::Cmd, vm, workspace};

/// One boot's limit in the VM step: the slowest kernel's share takes
/// about a third of it on a 2-core machine.
const VM_BOOT_TIMEOUT: Duration = Duration::from_secs(20 * 60);

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
                // The benchmark's programs too (lb-ebpf's `bench` feature).
                "--all-features",
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
    // Test arguments narrow the run to some host tests: the VM suite,
    // which selects its own, is for the full run.
    let vm_suite = test_args.is_empty();
    let arches = [Arch::X86_64, Arch::Arm64];
    let total = steps.len() + if vm_suite { arches.len() } else { 0 };

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

    if vm_suite {
        for arch in arches {
            let name = format!("VM tests, {} (cargo xtask vm-test --arch {0})", arch.name());
            eprintln!("==> {name}");
            match vm::test(arch, &vm::kernels_of(arch), &[], VM_BOOT_TIMEOUT) {
                Ok(()) => summary.push(format!("  ok    {name}")),
                Err(err) => {
                    summary.push(format!("  FAIL  {name}: {err:#}"));
                    failures.push(format!("`cargo xtask vm-test --arch {}`", arch.name()));
                }
            }
        }
    } else {
        summary
            .push("  skip  VM tests: test arguments given (cargo xtask vm-test runs them)".into());
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
