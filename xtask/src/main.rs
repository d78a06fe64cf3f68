//! Development tasks for xlb, run as `cargo xtask <task>`.

mod arch;
mod bench;
mod build;
mod checks;
mod cmd;
mod demo;
mod setup;
mod vm;
mod workspace;

use std::{process::ExitCode, time::Duration};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};

use crate::arch::Arch;

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "Development tasks for xlb"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing needs (Debian packages, nightly
    /// rust-src, bpf-linker, bpffs); idempotent, silent when nothing is missing
    Setup {
        /// Also what the static build for this architecture needs (the musl
        /// target, a C compiler for it); repeatable
        #[arg(long = "target", value_name = "ARCH")]
        targets: Vec<Arch>,
    },
    /// Set up, then build the workspace; with --target, the static `xlb`
    /// for that architecture instead
    Build {
        /// Build with the release profile
        #[arg(long)]
        release: bool,
        /// x86_64 or aarch64 (arm64): the static (musl) `xlb` for it
        #[arg(long, value_name = "ARCH")]
        target: Option<Arch>,
    },
    /// Set up, then run cargo fmt --check, clippy (host and eBPF) and cargo test
    Test {
        /// Extra arguments for `cargo test`, e.g. `cargo xtask test -- packets`
        #[arg(last = true)]
        cargo_test_args: Vec<String>,
    },
    /// Set up, then run the benchmark (xlb-bench)
    Bench {
        /// Arguments for xlb-bench
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Set up, build, then run the demo (xlb-demo)
    Run {
        /// Run the demo once and exit
        #[arg(long)]
        once: bool,
    },
    /// Set up, build, then run the integration tests inside Debian kernels
    /// booted with virtme-ng (QEMU without KVM; the host's filesystem, or
    /// for arm64 a root directory of arm64 Debian)
    VmTest {
        /// The kernels' architecture: x86_64, or arm64 (emulated)
        #[arg(long, default_value = "x86_64")]
        arch: Arch,
        /// 5.10 (bullseye, x86_64 only), 6.1 (bookworm), 6.12 (trixie) or all
        #[arg(long, default_value = "all", value_parser = vm::parse_choice)]
        kernel: vm::Choice,
        /// Only this test target of the table (tests/tests/NAME.rs); repeatable
        #[arg(long = "test", value_name = "NAME")]
        tests: Vec<String>,
        /// Seconds one boot may take, tests included, before it is stopped
        #[arg(long, default_value_t = 1200)]
        timeout: u64,
    },
    /// Boot a Debian kernel with virtme-ng and run a shell command in it, as
    /// root in the workspace root (in /tmp for arm64), with bpffs mounted,
    /// XLB_IN_VM=1 and XLB_BIN_DIR=target/debug (for arm64 the aarch64
    /// build, mounted at /xlb/bin)
    VmRun {
        /// The kernel's architecture: x86_64, or arm64 (emulated)
        #[arg(long, default_value = "x86_64")]
        arch: Arch,
        /// 5.10 (bullseye, x86_64 only), 6.1 (bookworm) or 6.12 (trixie)
        #[arg(long, default_value = "6.1", value_parser = vm::parse_choice)]
        kernel: vm::Choice,
        /// Seconds the boot may take before it is stopped
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// The shell command (words are joined with spaces)
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

fn main() -> ExitCode {
    let task = Cli::parse().task;
    match run(task) {
        Ok(code) => code,
        Err(err) => {
            // The whole chain on one line; no backtrace, even with RUST_BACKTRACE.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<ExitCode> {
    setup::run()?;
    match task {
        Task::Setup { targets } => targets.into_iter().try_for_each(setup::cross),
        Task::Build { release, target } => build::run(release, target),
        Task::Test { cargo_test_args } => checks::run(&cargo_test_args),
        Task::Bench { args } => bench::run(&args),
        Task::Run { once } => demo::run(once),
        Task::VmTest {
            arch,
            kernel,
            tests,
            timeout,
        } => vm::test(
            arch,
            &vm::select(arch, kernel)?,
            &tests,
            Duration::from_secs(timeout),
        ),
        // The command's own exit status, not just success or failure.
        Task::VmRun {
            arch,
            kernel,
            timeout,
            command,
        } => {
            let [kernel] = vm::select(arch, kernel)?[..] else {
                bail!("vm-run boots one kernel: name it with --kernel");
            };
            return vm::run(kernel, &command.join(" "), Duration::from_secs(timeout));
        }
    }
    .map(|()| ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn test_passes_everything_after_the_separator_to_cargo_test() {
        let cli =
            Cli::try_parse_from(["xtask", "test", "--", "packets", "--", "--nocapture"]).unwrap();
        let Task::Test { cargo_test_args } = cli.task else {
            panic!("not the test task");
        };
        assert_eq!(cargo_test_args, ["packets", "--", "--nocapture"]);
    }

    #[test]
    fn build_and_setup_take_a_target_architecture() {
        let cli = Cli::try_parse_from(["xtask", "build", "--target", "aarch64"]).unwrap();
        let Task::Build { target, release } = cli.task else {
            panic!("not the build task");
        };
        assert_eq!((target, release), (Some(Arch::Arm64), false));
        let cli = Cli::try_parse_from(["xtask", "setup", "--target", "arm64"]).unwrap();
        let Task::Setup { targets } = cli.task else {
            panic!("not the setup task");
        };
        assert_eq!(targets, [Arch::Arm64]);
        assert!(Cli::try_parse_from(["xtask", "build", "--target", "riscv64"]).is_err());
    }

    #[test]
    fn bench_takes_hyphenated_args() {
        let cli = Cli::try_parse_from(["xtask", "bench", "--duration", "5"]).unwrap();
        let Task::Bench { args } = cli.task else {
            panic!("not the bench task");
        };
        assert_eq!(args, ["--duration", "5"]);
    }

    #[test]
    fn vm_tasks_take_a_kernel_and_an_architecture() {
        let cli = Cli::try_parse_from(["xtask", "vm-test"]).unwrap();
        let Task::VmTest { arch, kernel, .. } = cli.task else {
            panic!("not the vm-test task");
        };
        assert_eq!((arch, kernel), (Arch::X86_64, vm::Choice::All));
        let cli = Cli::try_parse_from(["xtask", "vm-test", "--arch", "arm64", "--kernel", "6.12"])
            .unwrap();
        let Task::VmTest { arch, kernel, .. } = cli.task else {
            panic!("not the vm-test task");
        };
        assert_eq!((arch, kernel), (Arch::Arm64, vm::Choice::One("6.12")));
        let cli =
            Cli::try_parse_from(["xtask", "vm-run", "--", "modprobe ip_vs", "&&", "true"]).unwrap();
        let Task::VmRun {
            kernel, command, ..
        } = cli.task
        else {
            panic!("not the vm-run task");
        };
        assert_eq!(kernel, vm::Choice::One("6.1"));
        assert_eq!(command.join(" "), "modprobe ip_vs && true");
        assert!(
            Cli::try_parse_from(["xtask", "vm-run", "--kernel", "4.19", "--", "true"]).is_err()
        );
    }
}
