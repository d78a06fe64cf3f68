//! One boot of a Debian kernel under virtme-ng: QEMU without KVM (a KVM
//! guest hangs on these machines), the host's filesystem as the guest's
//! root (read-only, with throwaway overlays on /etc, /tmp, /var ...), a
//! script run as root, and its output streamed back line by line.

use std::{
    fs,
    io::{BufRead as _, BufReader},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

use crate::{cmd::Cmd, setup::Image};

/// Printed by the guest script first: the host times the boot up to it.
const UP: &str = "xlb-vm: up ";

/// Memory for the guest; virtme-ng's default (1 GB) is tight for the
/// balancer's maps beside a test binary and a daemon.
const MEMORY: &str = "2G";

/// What the guest script does before `body`.
pub(crate) struct Env {
    /// Prebuilt workspace binaries (`XLB_BIN_DIR`): the harness runs these
    /// instead of invoking cargo, which the guest has no use for.
    pub(crate) bin_dir: Option<PathBuf>,
    /// The guest's working directory.
    pub(crate) cwd: PathBuf,
}

/// How a boot ended.
pub(crate) struct Ended {
    /// The script's exit status; `None` when it has none (killed at the
    /// timeout, the guest crashed).
    pub(crate) status: Option<i32>,
    /// From starting QEMU to the script's first line; `None` if it never
    /// came (the guest did not boot).
    pub(crate) boot: Option<Duration>,
    pub(crate) elapsed: Duration,
    pub(crate) timed_out: bool,
}

/// Boots `image`, runs `body` (shell) in it as root after the common
/// preamble, and hands every line the script prints (stdout and stderr,
/// in order) to `on_line`. The script is written to `script` on the host,
/// which the guest reads through the shared filesystem: the kernel command
/// line, virtme-ng's other way in, is limited to 2 KB. `script` must be
/// unique to this boot; it is removed afterwards.
pub(crate) fn boot(
    image: &Image,
    env: &Env,
    body: &str,
    script: &Path,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<Ended> {
    if let Some(dir) = script.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(script, preamble(env) + body)
        .with_context(|| format!("writing {}", script.display()))?;

    let mut vng = Command::new("vng");
    vng.arg("--run")
        .arg(&image.vmlinuz)
        .args(["--disable-kvm", "--user", "root", "--cpus", "2"])
        .args(["--memory", MEMORY, "--", "bash"])
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Relayed, not inherited: vng reopens its stderr with O_TRUNC,
        // which wipes what was written to a file before and leaves NULs.
        .stderr(Stdio::piped())
        // Its own group, so that the timeout ends QEMU and whatever
        // virtme-ng started beside it, and nothing else.
        .process_group(0);
    let shown = format!(
        "vng --run {} --disable-kvm --user root --cpus 2 --memory {MEMORY} -- bash {}",
        image.vmlinuz.display(),
        script.display()
    );
    let start = Instant::now();
    let mut child = vng
        .spawn()
        .with_context(|| format!("could not start `{shown}` (cargo xtask setup installs vng)"))?;
    let group = child.id();
    let stderr = child.stderr.take().context("vng's stderr")?;
    let relay = thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
        }
    });

    let (done, finished) = mpsc::channel::<()>();
    let watchdog = thread::spawn(move || {
        if finished.recv_timeout(timeout) == Err(mpsc::RecvTimeoutError::Timeout) {
            // The group id is the child's pid: only what this boot started.
            Cmd::new("kill")
                .args(["-KILL", "--", &format!("-{group}")])
                .succeeds();
            return true;
        }
        false
    });

    let mut boot = None;
    let mut out = BufReader::new(child.stdout.take().context("vng's stdout")?);
    let mut line = Vec::new();
    loop {
        line.clear();
        if out
            .read_until(b'\n', &mut line)
            .context("reading vng's output")?
            == 0
        {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\n', '\r']);
        if boot.is_none() && text.starts_with(UP) {
            boot = Some(start.elapsed());
            continue;
        }
        on_line(text);
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{shown}`"))?;
    let elapsed = start.elapsed();
    // A closed channel tells the watchdog the boot is over.
    drop(done);
    let timed_out = watchdog.join().unwrap_or(false);
    relay.join().ok();
    // Best effort: a leftover script is harmless, it is only named uniquely.
    fs::remove_file(script).ok();
    Ok(Ended {
        status: if timed_out { None } else { status.code() },
        boot,
        elapsed,
        timed_out,
    })
}

fn preamble(env: &Env) -> String {
    let mut script = String::from(
        "# Written by cargo xtask for one virtme-ng boot.\n\
         exec 2>&1\n",
    );
    script += &format!("echo \"{UP}$(uname -r)\"\n");
    // The guest starts without bpffs; the tests pin maps there.
    script += "grep -qs '^[^ ]* /sys/fs/bpf bpf ' /proc/mounts || mount -t bpf bpf /sys/fs/bpf || exit 125\n";
    // Tests that skip for a missing kernel feature on a development
    // machine fail instead when they run here.
    script += "export XLB_IN_VM=1\n";
    if let Some(dir) = &env.bin_dir {
        script += &format!("export XLB_BIN_DIR={}\n", quote(&dir.display().to_string()));
    }
    script += &format!("cd {} || exit 125\n", quote(&env.cwd.display().to_string()));
    script
}

/// `word` in single quotes for the guest's shell.
pub(crate) fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preamble_mounts_bpffs_and_exports_the_vm_variables() {
        let script = preamble(&Env {
            bin_dir: Some("/w/target/debug".into()),
            cwd: "/w".into(),
        });
        assert!(script.starts_with("# Written by cargo xtask"));
        assert!(script.contains("mount -t bpf bpf /sys/fs/bpf"));
        assert!(script.contains("export XLB_IN_VM=1\n"));
        assert!(script.contains("export XLB_BIN_DIR='/w/target/debug'\n"));
        assert!(script.ends_with("cd '/w' || exit 125\n"));
    }

    #[test]
    fn quotes_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
