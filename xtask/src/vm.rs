//! `cargo xtask vm-run` and `cargo xtask vm-test`: commands and tests
//! inside Debian's own kernels, booted with virtme-ng on the host's
//! filesystem. This machine's kernel has no IPVS and loads no modules;
//! these kernels have both, and they are the ones users run.

mod guest;
mod suite;

use std::{process::ExitCode, time::Duration};

use anyhow::{Result, bail};

use crate::{setup, workspace};

/// A kernel the VM tasks can boot: the current `linux-image-amd64` of a
/// Debian suite.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Kernel {
    /// What `--kernel` takes and the test table names.
    pub(crate) name: &'static str,
    pub(crate) suite: &'static str,
}

pub(crate) const KERNELS: &[Kernel] = &[
    Kernel {
        name: "5.10",
        suite: "bullseye",
    },
    Kernel {
        name: "6.1",
        suite: "bookworm",
    },
    Kernel {
        name: "6.12",
        suite: "trixie",
    },
];

/// `--kernel` for vm-run: one of the table's names.
pub(crate) fn parse_kernel(name: &str) -> Result<&'static Kernel, String> {
    KERNELS.iter().find(|k| k.name == name).ok_or_else(|| {
        let names: Vec<_> = KERNELS.iter().map(|k| k.name).collect();
        format!("unknown kernel {name:?}; one of {}", names.join(", "))
    })
}

/// Kernels picked by `--kernel` (one, or all).
#[derive(Clone, Debug)]
pub(crate) struct Selection(pub(crate) Vec<&'static Kernel>);

/// `--kernel` for vm-test: a name from the table, or `all`.
pub(crate) fn parse_kernels(name: &str) -> Result<Selection, String> {
    if name == "all" {
        return Ok(Selection(KERNELS.iter().collect()));
    }
    parse_kernel(name)
        .map(|k| Selection(vec![k]))
        .map_err(|e| format!("{e}, or all"))
}

/// Boots `kernel`, runs `command` in it (as root, in the workspace root,
/// with bpffs mounted and the harness variables set), prints its output
/// and exits with its status.
pub(crate) fn run(kernel: &Kernel, command: &str, timeout: Duration) -> Result<ExitCode> {
    let [image] = <[setup::Image; 1]>::try_from(setup::vm(&[kernel.suite])?)
        .ok()
        .expect("one suite asked, one image returned");
    let root = workspace::root();
    // Whatever `cargo build` left there, so that the harness in the guest
    // can find its binaries without cargo; vm-run builds nothing itself.
    let built = root.join("target/debug");
    let env = guest::Env {
        bin_dir: built.is_dir().then_some(built),
        cwd: root.to_path_buf(),
    };
    let script =
        root.join("target/vm")
            .join(format!("run-{}-{}.sh", kernel.name, std::process::id()));
    eprintln!("booting Linux {} ({}) ...", image.release, kernel.suite);
    let ended = guest::boot(&image, &env, command, &script, timeout, |line| {
        println!("{line}");
    })?;
    match (ended.boot, ended.status) {
        (_, _) if ended.timed_out => bail!(
            "the guest was stopped after {} s (--timeout)",
            timeout.as_secs()
        ),
        (None, _) => bail!(
            "Linux {} did not boot (no output from the guest script); rerun with \
             `vng --verbose` to see the console",
            image.release
        ),
        (Some(boot), status) => {
            eprintln!(
                "Linux {}: booted in {:.1} s, {:.1} s in all, exit status {}",
                image.release,
                boot.as_secs_f64(),
                ended.elapsed.as_secs_f64(),
                status.map_or_else(|| "none".to_owned(), |s| s.to_string())
            );
            Ok(ExitCode::from(
                status.map_or(1, |s| u8::try_from(s).unwrap_or(1)),
            ))
        }
    }
}

pub(crate) use suite::run as test;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_parse() {
        assert_eq!(parse_kernel("6.1").unwrap().suite, "bookworm");
        assert!(
            parse_kernel("4.19")
                .unwrap_err()
                .contains("5.10, 6.1, 6.12")
        );
        assert_eq!(parse_kernels("all").unwrap().0.len(), KERNELS.len());
        assert_eq!(parse_kernels("6.12").unwrap().0[0].suite, "trixie");
        assert!(parse_kernels("7").unwrap_err().ends_with("or all"));
    }
}
