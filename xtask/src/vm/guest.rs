//! One boot of a Debian kernel under virtme-ng: QEMU without KVM (a KVM
//! guest hangs on these machines), the host's filesystem as the guest's
//! root (read-only, with throwaway overlays on /etc, /tmp, /var ...), a
//! script run as root, and its output streamed back line by line. A
//! foreign architecture's guest (arm64, fully emulated) boots on a root
//! directory of its own userland instead, and sees only the host's build
//! directory and the script's directory, mounted into it.

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

use crate::{
    cmd::Cmd,
    setup::{BIN_MOUNT, Image, SCRIPT_MOUNT},
    workspace,
};

/// Printed by the guest script first: the host times the boot up to it.
const UP: &str = "xlb-vm: up ";

/// Memory for the guest; virtme-ng's default (1 GB) is tight for the
/// balancer's maps beside a test binary and a daemon.
const MEMORY: &str = "2G";

/// What the guest gets from the host.
pub(crate) struct Env {
    /// Prebuilt workspace binaries (`XLB_BIN_DIR`), as a host path: the
    /// harness runs these instead of invoking cargo, which the guest has no
    /// use for. A foreign root sees it at `BIN_MOUNT`.
    pub(crate) bin_dir: Option<PathBuf>,
}

impl Env {
    /// `host`, a file under `bin_dir`, as `image`'s guest sees it.
    pub(crate) fn guest_path(&self, image: &Image, host: &Path) -> Result<PathBuf> {
        if image.root.is_none() {
            return Ok(host.to_path_buf());
        }
        let rest = self
            .bin_dir
            .as_deref()
            .and_then(|dir| host.strip_prefix(dir).ok())
            .with_context(|| {
                format!(
                    "{} is outside the build directory the {} guest sees",
                    host.display(),
                    image.arch.name()
                )
            })?;
        Ok(Path::new(BIN_MOUNT).join(rest))
    }
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
/// in order) to `on_line`. The script is written to `target/vm/<name>` on
/// the host, which the guest reads through the shared filesystem: the
/// kernel command line, virtme-ng's other way in, is limited to 2 KB.
/// `name` must be unique to this boot; the script is removed afterwards.
pub(crate) fn boot(
    image: &Image,
    env: &Env,
    body: &str,
    name: &str,
    timeout: Duration,
    mut on_line: impl FnMut(&str),
) -> Result<Ended> {
    let scripts = workspace::root().join("target/vm");
    fs::create_dir_all(&scripts).with_context(|| format!("creating {}", scripts.display()))?;
    let script = scripts.join(name);
    fs::write(&script, preamble(image, env) + body)
        .with_context(|| format!("writing {}", script.display()))?;

    let mut vng = Command::new("vng");
    vng.arg("--run")
        .arg(&image.vmlinuz)
        .args(["--disable-kvm", "--user", "root", "--cpus", "2"])
        .args(["--memory", MEMORY]);
    let guest_script = match &image.root {
        None => script.clone(),
        Some(root) => {
            // 9p for the root and the shares: the combination known to boot
            // an arm64 guest here (virtme-ng would otherwise try virtiofs).
            vng.args(["--arch", image.arch.name(), "--force-9p", "--root"])
                .arg(root)
                .arg("--rodir")
                .arg(format!("{SCRIPT_MOUNT}={}", scripts.display()));
            if let Some(bin) = &env.bin_dir {
                vng.arg("--rodir")
                    .arg(format!("{BIN_MOUNT}={}", bin.display()));
            }
            Path::new(SCRIPT_MOUNT).join(name)
        }
    };
    vng.args(["--", "bash"])
        .arg(&guest_script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Relayed, not inherited: vng reopens its stderr with O_TRUNC,
        // which wipes what was written to a file before and leaves NULs.
        .stderr(Stdio::piped())
        // Its own group, so that the timeout ends QEMU and whatever
        // virtme-ng started beside it, and nothing else.
        .process_group(0);
    let shown = format!("{vng:?}");
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
    fs::remove_file(&script).ok();
    Ok(Ended {
        status: if timed_out { None } else { status.code() },
        boot,
        elapsed,
        timed_out,
    })
}

fn preamble(image: &Image, env: &Env) -> String {
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
        let dir = match image.root {
            None => dir.clone(),
            Some(_) => PathBuf::from(BIN_MOUNT),
        };
        script += &format!("export XLB_BIN_DIR={}\n", quote(&dir.display().to_string()));
    }
    // The workspace, on the host's filesystem; a foreign root has none of
    // it, and the tests need only a writable directory.
    let cwd = match image.root {
        None => workspace::root().to_path_buf(),
        Some(_) => PathBuf::from("/tmp"),
    };
    script += &format!("cd {} || exit 125\n", quote(&cwd.display().to_string()));
    script
}

/// `word` in single quotes for the guest's shell.
pub(crate) fn quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;

    fn image(arch: Arch, root: Option<&str>) -> Image {
        Image {
            arch,
            release: "6.1.0-57-arm64".into(),
            vmlinuz: "/cache/boot/vmlinuz".into(),
            root: root.map(PathBuf::from),
        }
    }

    #[test]
    fn preamble_mounts_bpffs_and_exports_the_vm_variables() {
        let env = Env {
            bin_dir: Some("/w/target/debug".into()),
        };
        let script = preamble(&image(Arch::X86_64, None), &env);
        assert!(script.starts_with("# Written by cargo xtask"));
        assert!(script.contains("mount -t bpf bpf /sys/fs/bpf"));
        assert!(script.contains("export XLB_IN_VM=1\n"));
        assert!(script.contains("export XLB_BIN_DIR='/w/target/debug'\n"));
        let cwd = quote(&workspace::root().display().to_string());
        assert!(script.ends_with(&format!("cd {cwd} || exit 125\n")));
    }

    #[test]
    fn a_foreign_root_sees_the_build_directory_where_it_is_mounted() {
        let env = Env {
            bin_dir: Some("/w/target/aarch64-unknown-linux-musl/debug".into()),
        };
        let arm = image(Arch::Arm64, Some("/cache/roots/arm64/root"));
        let script = preamble(&arm, &env);
        assert!(script.contains(&format!("export XLB_BIN_DIR='{BIN_MOUNT}'\n")));
        assert!(script.ends_with("cd '/tmp' || exit 125\n"));
        let exe = Path::new("/w/target/aarch64-unknown-linux-musl/debug/deps/e2e-1a2b");
        assert_eq!(
            env.guest_path(&arm, exe).unwrap(),
            Path::new(BIN_MOUNT).join("deps/e2e-1a2b")
        );
        assert!(env.guest_path(&arm, Path::new("/elsewhere/e2e")).is_err());
        // On the host's filesystem a path is its own.
        assert_eq!(
            env.guest_path(&image(Arch::X86_64, None), exe).unwrap(),
            exe
        );
    }

    #[test]
    fn quotes_single_quotes() {
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
