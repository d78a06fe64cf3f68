//! Development tasks for xlb, run as `cargo xtask <task>`.

mod bench;
mod build;
mod checks;
mod cmd;
mod demo;
mod setup;
mod workspace;

use std::process::ExitCode;

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
}

fn main() -> ExitCode {
    let task = Cli::parse().task;
    match run(task) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The whole chain on one line; no backtrace, even with RUST_BACKTRACE.
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(task: Task) -> Result<()> {
    setup::run()?;
    match task {
        Task::Setup => Ok(()),
        Task::Build { release } => build::run(release),
        Task::Test { cargo_test_args } => checks::run(&cargo_test_args),
        Task::Bench { args } => bench::run(&args),
        Task::Run { once } => demo::run(once),
    }
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
}
