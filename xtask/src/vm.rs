//! `cargo xtask vm-run` and `cargo xtask vm-test`: commands and tests
//! inside Debian's own kernels, booted with virtme-ng on the host's
//! filesystem. This machine's kernel has no IPVS and loads no modules;
//! these kernels have both, and they are the ones users run. Debian's arm64
//! kernels (AWS Graviton's architecture) boot the same way, emulated, on a
//! root directory of arm64 Debian.

mod guest;
mod suite;

use std::{process::ExitCode, time::Duration};

use anyhow::{Result, bail};

use crate::{arch::Arch, setup};

/// A kernel the VM tasks can boot: the current `linux-image-<arch>` of a
/// Debian suite.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Kernel {
    pub(crate) arch: Arch,
    /// What `--kernel` takes.
    pub(crate) name: &'static str,
    pub(crate) suite: &'static str,
}

impl Kernel {
    /// How the test table and the reports name it: `6.1` for x86_64,
    /// `arm64/6.1` for another architecture.
    pub(crate) fn key(&self) -> String {
        if self.arch == Arch::HOST {
            self.name.to_owned()
        } else {
            format!("{}/{}", self.arch.name(), self.name)
        }
    }

    /// `key()` as part of a file name.
    pub(crate) fn file_tag(&self) -> String {
        self.key().replace('/', "-")
    }
}

pub(crate) const KERNELS: &[Kernel] = &[
    Kernel {
        arch: Arch::X86_64,
        name: "5.10",
        suite: "bullseye",
    },
    Kernel {
        arch: Arch::X86_64,
        name: "6.1",
        suite: "bookworm",
    },
    Kernel {
        arch: Arch::X86_64,
        name: "6.12",
        suite: "trixie",
    },
    Kernel {
        arch: Arch::Arm64,
        name: "6.1",
        suite: "bookworm",
    },
    Kernel {
        arch: Arch::Arm64,
        name: "6.12",
        suite: "trixie",
    },
];

/// The kernels of `arch`.
pub(crate) fn kernels_of(arch: Arch) -> Vec<&'static Kernel> {
    KERNELS.iter().filter(|k| k.arch == arch).collect()
}

/// `--kernel`: a name from the table (checked against `--arch` once both
/// are known), or `all`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    All,
    One(&'static str),
}

pub(crate) fn parse_choice(name: &str) -> Result<Choice, String> {
    if name == "all" {
        return Ok(Choice::All);
    }
    KERNELS
        .iter()
        .find(|k| k.name == name)
        .map(|k| Choice::One(k.name))
        .ok_or_else(|| format!("unknown kernel {name:?}; one of {}, or all", names(None)))
}

/// The kernels `choice` picks for `arch`.
pub(crate) fn select(arch: Arch, choice: Choice) -> Result<Vec<&'static Kernel>> {
    let kernels = kernels_of(arch);
    match choice {
        Choice::All => Ok(kernels),
        Choice::One(name) => match kernels.into_iter().find(|k| k.name == name) {
            Some(kernel) => Ok(vec![kernel]),
            None => bail!(
                "no {name} kernel for {}; one of {}",
                arch.name(),
                names(Some(arch))
            ),
        },
    }
}

/// The table's kernel names, of one architecture or of all (each once).
fn names(arch: Option<Arch>) -> String {
    let mut names: Vec<&str> = Vec::new();
    for kernel in KERNELS.iter().filter(|k| arch.is_none_or(|a| k.arch == a)) {
        if !names.contains(&kernel.name) {
            names.push(kernel.name);
        }
    }
    names.join(", ")
}

/// Boots `kernel`, runs `command` in it (as root, with bpffs mounted and
/// the harness variables set; in the workspace root, or in /tmp for a
/// foreign architecture), prints its output and exits with its status.
pub(crate) fn run(kernel: &Kernel, command: &str, timeout: Duration) -> Result<ExitCode> {
    let [image] = <[setup::Image; 1]>::try_from(setup::vm(kernel.arch, &[kernel.suite])?)
        .ok()
        .expect("one suite asked, one image returned");
    // Whatever `cargo build` left there, so that the harness in the guest
    // can find its binaries without cargo; vm-run builds nothing itself.
    let built = suite::bin_dir(kernel.arch);
    let env = guest::Env {
        bin_dir: built.is_dir().then_some(built),
    };
    let script = format!("run-{}-{}.sh", kernel.file_tag(), std::process::id());
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
        assert_eq!(parse_choice("6.1"), Ok(Choice::One("6.1")));
        assert_eq!(parse_choice("all"), Ok(Choice::All));
        let err = parse_choice("4.19").unwrap_err();
        assert_eq!(
            err,
            "unknown kernel \"4.19\"; one of 5.10, 6.1, 6.12, or all"
        );
    }

    #[test]
    fn kernels_are_picked_per_architecture() {
        let all = select(Arch::X86_64, Choice::All).unwrap();
        assert_eq!(
            all.iter().map(|k| k.key()).collect::<Vec<_>>(),
            ["5.10", "6.1", "6.12"]
        );
        let arm = select(Arch::Arm64, Choice::One("6.12")).unwrap();
        assert_eq!(
            (arm[0].suite, arm[0].key()),
            ("trixie", "arm64/6.12".into())
        );
        let err = select(Arch::Arm64, Choice::One("5.10")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no 5.10 kernel for arm64; one of 6.1, 6.12"
        );
    }
}
