//! Development tasks for xlb, run as `cargo xtask <task>`.

mod bench;
mod build;
mod checks;
mod cmd;
mod demo;
mod setup;
mod vm;
mod workspace;

use std::{process::ExitCode, time::Duration};

use anyhow::Result;
use clap::{Parser, Subcommand};

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
    Setup,
    /// Set up, then build the workspace
    Build {
        /// Build with the release profile
        #[arg(long)]
        release: bool,
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
    /// booted with virtme-ng (QEMU without KVM, the host's filesystem)
    VmTest {
        /// 5.10 (bullseye), 6.1 (bookworm), 6.12 (trixie) or all
        #[arg(long, default_value = "all", value_parser = vm::parse_kernels)]
        kernel: vm::Selection,
        /// Only this test target of the table (tests/tests/NAME.rs); repeatable
        #[arg(long = "test", value_name = "NAME")]
        tests: Vec<String>,
        /// Seconds one boot may take, tests included, before it is stopped
        #[arg(long, default_value_t = 1200)]
        timeout: u64,
    },
    /// Boot a Debian kernel with virtme-ng and run a shell command in it, as
    /// root in the workspace root, with bpffs mounted, XLB_IN_VM=1 and
    /// XLB_BIN_DIR=target/debug
    VmRun {
        /// 5.10 (bullseye), 6.1 (bookworm) or 6.12 (trixie)
        #[arg(long, default_value = "6.1", value_parser = vm::parse_kernel)]
        kernel: &'static vm::Kernel,
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
        Task::Setup => Ok(()),
        Task::Build { release } => build::run(release),
        Task::Test { cargo_test_args } => checks::run(&cargo_test_args),
        Task::Bench { args } => bench::run(&args),
        Task::Run { once } => demo::run(once),
        Task::VmTest {
            kernel,
            tests,
            timeout,
        } => vm::test(&kernel.0, &tests, Duration::from_secs(timeout)),
        // The command's own exit status, not just success or failure.
        Task::VmRun {
            kernel,
            timeout,
            command,
        } => return vm::run(kernel, &command.join(" "), Duration::from_secs(timeout)),
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
    fn bench_takes_hyphenated_args() {
        let cli = Cli::try_parse_from(["xtask", "bench", "--duration", "5"]).unwrap();
        let Task::Bench { args } = cli.task else {
            panic!("not the bench task");
        };
        assert_eq!(args, ["--duration", "5"]);
    }

    #[test]
    fn vm_tasks_take_a_kernel() {
        let cli = Cli::try_parse_from(["xtask", "vm-test"]).unwrap();
        let Task::VmTest { kernel, .. } = cli.task else {
            panic!("not the vm-test task");
        };
        assert_eq!(kernel.0.len(), vm::KERNELS.len());
        let cli =
            Cli::try_parse_from(["xtask", "vm-run", "--", "modprobe ip_vs", "&&", "true"]).unwrap();
        let Task::VmRun {
            kernel, command, ..
        } = cli.task
        else {
            panic!("not the vm-run task");
        };
        assert_eq!(kernel.name, "6.1");
        assert_eq!(command.join(" "), "modprobe ip_vs && true");
        assert!(
            Cli::try_parse_from(["xtask", "vm-run", "--kernel", "4.19", "--", "true"]).is_err()
        );
    }
}
