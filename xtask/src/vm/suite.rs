//! `cargo xtask vm-test`: xlb-tests' integration tests inside each kernel.
//! The host builds everything once per architecture (cross-compiling the
//! static aarch64 binaries for arm64); each kernel boots once and runs its
//! share of the table below from the prebuilt executables.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{
    KERNELS, Kernel,
    guest::{self, quote},
};
use crate::{arch::Arch, setup, workspace};

/// What runs where: an integration-test target of xlb-tests
/// (`tests/tests/<name>.rs` or `tests/tests/<name>/main.rs`), one test of
/// it by exact name or all of them (`None`), and the kernels (keys from
/// `KERNELS`: `6.1` on x86_64, `arm64/6.1` on arm64) that run it. The
/// arm64 kernels (emulated, running the static aarch64 build users ship)
/// take the data path's share: the verifier and JIT on every packet path,
/// real traffic in both DSR modes, flows, decapsulation, pins, the probe
/// path, and the IPVS fallback.
const TESTS: &[(&str, Option<&str>, &[&str])] = &[
    // The verifier and every packet path, frame by frame. Not on 5.10: an
    // XDP test run takes the receiving interface (xdp_md) only from 5.14
    // on, and 5.10 refuses every frame of the table with EINVAL.
    ("packets", None, &["6.1", "6.12", "arm64/6.1", "arm64/6.12"]),
    // Real TCP through the veth topology: both DSR modes, IPv4 and IPv6,
    // the daemon loading, attaching and forwarding, backends decapsulating.
    (
        "e2e",
        Some("http_through_both_dsr_modes_ipv4_and_ipv6"),
        &["5.10", "6.1", "6.12", "arm64/6.12"],
    ),
    // Every e2e test on arm64 6.1: held connections through set changes,
    // kill -9 mid-stream, ECMP over two balancers, native XDP on veth.
    ("e2e", None, &["arm64/6.1"]),
    // The probe path: real sockets through the tc program, on kernels
    // with the dummy driver (the host has only ifb), attached through
    // netlink before 6.6 and with tcx after, down to the oldest kernel
    // with bpf_redirect_neigh (5.10).
    ("probe_path", None, &["5.10", "6.1", "6.12", "arm64/6.12"]),
    // The probe program frame by frame (a tc test run with a context).
    ("probe_fuzz", None, &["6.1"]),
    // 5.10's share of what the table checks without test runs: maps pinned
    // and reused, their BTF field names as bpftool prints them.
    ("pins", None, &["5.10", "arm64/6.1"]),
    // arm64's share of what the host runs: the flow table and the
    // backends' decapsulation, frame by frame and through real sockets.
    ("flows", None, &["arm64/6.1"]),
    ("decap", None, &["arm64/6.1"]),
    // ARP and NDP answered in XDP, the liveness gate, the Lease failover;
    // the neighbour monitor; the route cache's epoch.
    ("announce", None, &["arm64/6.1"]),
    ("neigh", None, &["arm64/6.1"]),
    ("route_epoch", None, &["arm64/6.1"]),
    // The IPVS data plane: DR and TUN, ownership, refusals, auto fallback.
    ("ipvs", None, &["6.1", "arm64/6.1"]),
    // xlb beside IPVS (DR and TUN) in one guest: the peers benchmark's
    // IPVS section, which the host kernel cannot run.
    ("peers_ipvs", None, &["6.1"]),
    // IPVS on the oldest and newest kernels: real HTTP by DR and TUN.
    (
        "ipvs",
        Some("ipvs_serves_http_by_dr_and_tun_and_owns_only_its_services"),
        &["5.10", "6.12", "arm64/6.12"],
    ),
];

/// A line in the guest script's output that frames one test executable.
const BEGIN: &str = "xlb-vm: begin ";
const END: &str = "xlb-vm: end ";

/// Runs the table's entries for `kernels`, all of `arch`; with `only`
/// non-empty, just the entries for those test targets.
pub(crate) fn run(
    arch: Arch,
    kernels: &[&Kernel],
    only: &[String],
    timeout: Duration,
) -> Result<()> {
    let suite_start = Instant::now();
    table_names_known_kernels()?;
    ensure!(
        kernels.iter().all(|k| k.arch == arch),
        "the kernels of one vm-test run are all {}",
        arch.name()
    );
    for target in only {
        ensure!(
            TESTS.iter().any(|(t, _, _)| t == target),
            "--test {target}: the VM test table has no such target"
        );
    }
    // Only what these kernels run is built.
    let mut targets: Vec<_> = kernels
        .iter()
        .flat_map(|k| entries_for(&k.key(), only))
        .map(|(target, _, _)| target)
        .collect();
    targets.sort_unstable();
    targets.dedup();
    if targets.is_empty() {
        eprintln!("==> nothing in the VM test table runs on these kernels");
        return Ok(());
    }
    let suites: Vec<_> = kernels.iter().map(|k| k.suite).collect();
    let images = setup::vm(arch, &suites)?;
    let built = build(arch, &targets)?;

    let mut reports = Vec::new();
    for (kernel, image) in kernels.iter().zip(&images) {
        let entries = entries_for(&kernel.key(), only);
        if entries.is_empty() {
            eprintln!("==> Linux {}: nothing in the table runs here", kernel.key());
            continue;
        }
        let env = guest::Env {
            bin_dir: Some(built.bin_dir.clone()),
        };
        let mut body = String::from("failed=0\n");
        for &(target, exact, _) in &entries {
            let exe = built.tests.get(target).with_context(|| {
                format!(
                    "xlb-tests has no test target {target:?} \
                     (tests/tests/{target}.rs or tests/tests/{target}/main.rs)"
                )
            })?;
            body += &invocation(target, exact, &env.guest_path(image, exe)?);
        }
        body += "exit $failed\n";

        eprintln!(
            "==> Linux {} ({}, Debian {}): {}",
            image.release,
            kernel.key(),
            kernel.suite,
            entries
                .iter()
                .map(|(target, exact, _)| exact
                    .map_or_else(|| (*target).to_owned(), |one| format!("{target}::{one}")))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let script = format!("test-{}-{}.sh", kernel.file_tag(), std::process::id());
        let mut parser = Parser::default();
        let tag = format!("[{}]", kernel.key());
        let ended = guest::boot(image, &env, &body, &script, timeout, |line| {
            println!("{tag} {line}");
            parser.line(line);
        })?;
        let report = Report {
            kernel,
            release: image.release.clone(),
            boot: ended.boot,
            elapsed: ended.elapsed,
            status: ended.status,
            timed_out: ended.timed_out,
            runs: parser.finish(),
            expected: entries.len(),
        };
        eprint!("{}", report.render(timeout));
        reports.push(report);
    }

    eprintln!("==> VM suite");
    let mut failed = Vec::new();
    for report in &reports {
        eprintln!("{}", report.summary_line());
        if !report.passed() {
            failed.push(report.kernel.key());
        }
    }
    eprintln!("  VM suite: {} in all", minutes(suite_start.elapsed()));
    if !failed.is_empty() {
        bail!("VM tests failed on Linux {}", failed.join(", "));
    }
    Ok(())
}

/// The table's entries for one kernel (by key), in table order.
fn entries_for(
    kernel: &str,
    only: &[String],
) -> Vec<(&'static str, Option<&'static str>, &'static [&'static str])> {
    TESTS
        .iter()
        .filter(|(_, _, kernels)| kernels.contains(&kernel))
        .filter(|(target, _, _)| only.is_empty() || only.iter().any(|o| o == target))
        .copied()
        .collect()
}

/// The guest script's lines for one test executable: framed by markers the
/// host times and parses, its exit status folded into `failed`.
fn invocation(target: &str, exact: Option<&str>, exe: &Path) -> String {
    let mut line = quote(&exe.display().to_string());
    if let Some(test) = exact {
        let _ = write!(line, " --exact {}", quote(test));
    }
    format!(
        "echo '{BEGIN}{target}'\n\
         {line}\n\
         rc=$?\n\
         echo \"{END}{target} $rc\"\n\
         [ $rc -eq 0 ] || failed=1\n"
    )
}

struct Built {
    /// Integration-test target name -> executable.
    tests: BTreeMap<String, PathBuf>,
    /// Where `cargo build` put the workspace's binaries (xlb, xlb-backend).
    bin_dir: PathBuf,
}

/// Where the debug build of the workspace's binaries for `arch` goes: the
/// host's own under `<target>/debug`, the static arm64 one under
/// `<target>/aarch64-unknown-linux-musl/debug`.
pub(crate) fn bin_dir(arch: Arch) -> PathBuf {
    let target = workspace::target_dir();
    if arch == Arch::HOST {
        target.join("debug")
    } else {
        target.join(arch.musl_target()).join("debug")
    }
}

/// Builds the workspace's binaries and the test executables of `targets`
/// for `arch`, the same profile for both: natively for the host, the
/// static musl build for another architecture (what its image ships).
fn build(arch: Arch, targets: &[&str]) -> Result<Built> {
    eprintln!(
        "==> building the binaries and test executables for the {} guests",
        arch.name()
    );
    let cross = (arch != Arch::HOST).then(|| arch.musl_target());
    if cross.is_some() {
        setup::cross(arch)?;
    }
    let target_args = cross.into_iter().flat_map(|t| ["--target", t]);
    let mut build = workspace::cargo()
        .args(["build", "--quiet"])
        .args(target_args.clone());
    if cross.is_some() {
        // Only what the guests run: the test tools and xtask stay native.
        build = build.args([
            "-p",
            "lb-userspace",
            "-p",
            "xlb-tests",
            "--bin",
            "xlb",
            "--bin",
            "xlb-backend",
        ]);
    }
    build.run()?;
    let mut cmd = workspace::cargo()
        .args([
            "test",
            "--no-run",
            "--quiet",
            "--message-format=json",
            "-p",
            "xlb-tests",
        ])
        .args(target_args);
    for target in targets {
        cmd = cmd.args(["--test", target]);
    }
    let json = cmd.read()?;
    let tests = test_executables(&json)?;
    let any = tests
        .values()
        .next()
        .context("cargo test --no-run built no test executable")?;
    // <target>/debug/deps/<test>-<hash> -> <target>/debug
    let bin_dir = any
        .parent()
        .and_then(Path::parent)
        .context("a test executable outside <target>/<profile>/deps")?
        .to_path_buf();
    ensure!(
        bin_dir.join("xlb").is_file(),
        "no xlb beside the test executables in {}",
        bin_dir.display()
    );
    Ok(Built { tests, bin_dir })
}

/// Integration-test executables from `cargo test --no-run
/// --message-format=json`: target name -> path.
fn test_executables(json: &str) -> Result<BTreeMap<String, PathBuf>> {
    let mut tests = BTreeMap::new();
    for line in json.lines().filter(|l| l.starts_with('{')) {
        let message: serde_json::Value =
            serde_json::from_str(line).context("a line of cargo's JSON output")?;
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let target = &message["target"];
        let is_test = target["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "test"));
        if let (true, Some(name), Some(exe)) = (
            is_test,
            target["name"].as_str(),
            message["executable"].as_str(),
        ) {
            tests.insert(name.to_owned(), PathBuf::from(exe));
        }
    }
    Ok(tests)
}

/// One test executable's run in a guest, as read from its output.
#[derive(Debug, Default, PartialEq)]
struct Run {
    target: String,
    /// Its exit status; `None` if the guest never printed the end marker.
    status: Option<i32>,
    passed: usize,
    failed: Vec<String>,
    ignored: usize,
    elapsed: Duration,
}

/// Reads the guest's output as it streams: markers and libtest's lines.
#[derive(Default)]
struct Parser {
    runs: Vec<Run>,
    started: Option<Instant>,
}

impl Parser {
    fn line(&mut self, line: &str) {
        if let Some(target) = line.strip_prefix(BEGIN) {
            self.started = Some(Instant::now());
            self.runs.push(Run {
                target: target.to_owned(),
                ..Run::default()
            });
            return;
        }
        let Some(run) = self.runs.last_mut() else {
            return;
        };
        if let Some(rest) = line.strip_prefix(END) {
            run.status = rest.rsplit(' ').next().and_then(|s| s.parse().ok());
            run.elapsed = self.started.map(|s| s.elapsed()).unwrap_or_default();
            return;
        }
        // libtest prints "test NAME ... RESULT"; with one test thread, output
        // of the test's own children can fall between the name and the result.
        if let Some(rest) = line.strip_prefix("test ")
            && let Some((name, result)) = rest.rsplit_once(" ... ")
        {
            match result {
                "ok" => run.passed += 1,
                "ignored" => run.ignored += 1,
                "FAILED" => run.failed.push(name.to_owned()),
                _ => {}
            }
        }
    }

    fn finish(mut self) -> Vec<Run> {
        if let (Some(run), Some(started)) = (self.runs.last_mut(), self.started)
            && run.status.is_none()
        {
            run.elapsed = started.elapsed();
        }
        self.runs
    }
}

struct Report<'a> {
    kernel: &'a Kernel,
    release: String,
    boot: Option<Duration>,
    elapsed: Duration,
    status: Option<i32>,
    timed_out: bool,
    runs: Vec<Run>,
    /// Test executables the script was to run.
    expected: usize,
}

impl Report<'_> {
    fn passed(&self) -> bool {
        self.status == Some(0)
            && self.runs.len() == self.expected
            && self
                .runs
                .iter()
                .all(|r| r.status == Some(0) && r.failed.is_empty())
    }

    fn render(&self, timeout: Duration) -> String {
        let mut out = format!("==> Linux {} ({})\n", self.release, self.kernel.key());
        match self.boot {
            Some(boot) => {
                let _ = writeln!(out, "  booted in {:.1} s", boot.as_secs_f64());
            }
            None => {
                let _ = writeln!(
                    out,
                    "  FAIL  the guest did not boot (no output from its script; \
                     `vng --verbose` shows the console)"
                );
            }
        }
        for run in &self.runs {
            let verdict = if run.status == Some(0) && run.failed.is_empty() {
                "ok  "
            } else {
                "FAIL"
            };
            let _ = writeln!(
                out,
                "  {verdict}  {:<11} {} passed, {} failed, {} ignored, {:.0} s{}",
                run.target,
                run.passed,
                run.failed.len(),
                run.ignored,
                run.elapsed.as_secs_f64(),
                match run.status {
                    Some(0) => String::new(),
                    Some(code) => format!(" (exit status {code})"),
                    None => " (did not finish)".to_owned(),
                }
            );
            for name in &run.failed {
                let _ = writeln!(out, "          failed: {name}");
            }
        }
        if self.timed_out {
            let _ = writeln!(
                out,
                "  FAIL  stopped after {} s (--timeout)",
                timeout.as_secs()
            );
        }
        let _ = writeln!(out, "  total {}", minutes(self.elapsed));
        out
    }

    fn summary_line(&self) -> String {
        let tests: usize = self.runs.iter().map(|r| r.passed + r.failed.len()).sum();
        format!(
            "  {}  Linux {:<10} {:<22} boot {:>5}, {} tests, total {}",
            if self.passed() { "ok  " } else { "FAIL" },
            self.kernel.key(),
            self.release,
            self.boot
                .map_or_else(|| "-".to_owned(), |b| format!("{:.0} s", b.as_secs_f64())),
            tests,
            minutes(self.elapsed)
        )
    }
}

fn minutes(d: Duration) -> String {
    let secs = d.as_secs();
    format!("{} min {:02} s", secs / 60, secs % 60)
}

/// Every kernel the table names is one `KERNELS` has.
fn table_names_known_kernels() -> Result<()> {
    for (target, _, kernels) in TESTS {
        for key in *kernels {
            ensure!(
                KERNELS.iter().any(|k| k.key() == *key),
                "the VM test table runs {target} on unknown kernel {key}"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_only_known_kernels() {
        table_names_known_kernels().unwrap();
    }

    #[test]
    fn finds_test_executables_in_cargo_json() {
        let json = concat!(
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"xlb_tests"},"executable":null}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"name":"packets"},"executable":"/w/target/debug/deps/packets-1a2b"}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n"
        );
        let tests = test_executables(json).unwrap();
        assert_eq!(
            tests.into_iter().collect::<Vec<_>>(),
            [(
                "packets".to_owned(),
                PathBuf::from("/w/target/debug/deps/packets-1a2b")
            )]
        );
    }

    #[test]
    fn parses_markers_and_libtest_lines() {
        let mut p = Parser::default();
        for line in [
            "noise before",
            "xlb-vm: begin packets",
            "running 3 tests",
            "test a ... ok",
            "test b::c ... FAILED",
            "test d ... ignored",
            "test result: FAILED. 1 passed; 1 failed; 1 ignored",
            "xlb-vm: end packets 101",
            "xlb-vm: begin e2e",
            "test http ... ok",
        ] {
            p.line(line);
        }
        let runs = p.finish();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].target, "packets");
        assert_eq!(runs[0].status, Some(101));
        assert_eq!(
            (runs[0].passed, runs[0].failed.as_slice(), runs[0].ignored),
            (1, ["b::c".to_owned()].as_slice(), 1)
        );
        assert_eq!((runs[1].passed, runs[1].status), (1, None));
    }

    #[test]
    fn the_script_runs_each_executable_and_keeps_its_status() {
        let body = invocation("e2e", Some("one test"), Path::new("/w/deps/e2e-1"));
        assert_eq!(
            body,
            "echo 'xlb-vm: begin e2e'\n\
             '/w/deps/e2e-1' --exact 'one test'\n\
             rc=$?\n\
             echo \"xlb-vm: end e2e $rc\"\n\
             [ $rc -eq 0 ] || failed=1\n"
        );
    }
}
