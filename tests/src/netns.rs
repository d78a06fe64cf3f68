//! Network namespaces as guard values: made with a unique name, removed on
//! drop (test failure and panic included), entered per thread.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Prefix of every namespace the tests make; a later run removes leftovers
/// of a killed one.
pub const PREFIX: &str = "xlbt-";

/// Whether this process can make namespaces and load BPF programs. When it
/// cannot, the caller skips with the reason printed (CI runs as root).
pub fn privileged(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    let reason = "needs root (network namespaces, BPF)";
    // Under CI a skip would turn the suite green having tested nothing.
    assert!(std::env::var_os("CI").is_none(), "{test}: {reason}");
    eprintln!("SKIPPED {test}: {reason}; CI runs it as root");
    false
}

pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new() -> Self {
        remove_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <ns> ARGS`, panicking with the command and its stderr.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full);
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full);
    }

    /// A command that runs in this network namespace only. Unlike `ip netns
    /// exec`, it keeps the caller's mount namespace, so /sys/fs/bpf (and the
    /// pins on it) are the host's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt as _;
        let path = format!("/var/run/netns/{}", self.name);
        let mut c = Command::new(program);
        // SAFETY: only async-signal-safe calls (open, setns) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                let f = File::open(&path)?;
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c
    }

    /// Permanent neighbour entries on `dev`: backends that need not exist,
    /// whose frames the tests count rather than deliver.
    pub fn static_neighbours(&self, dev: &str, entries: &[(&str, &str)]) {
        for (ip, mac) in entries {
            self.ip(&[
                "neigh",
                "replace",
                ip,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-qw", &format!("{key}={value}")]);
    }

    /// Runs `f` on a thread that has entered this namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/var/run/netns/{}", self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Whether `name` is one of ours (`xlbt-<pid>-<n>`) made by a process that
/// no longer exists.
fn is_stale(name: &str) -> bool {
    let Some(rest) = name.strip_prefix(PREFIX) else {
        return false;
    };
    let pid: u32 = rest
        .split('-')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pid != 0 && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes namespaces left by test processes that no longer exist.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if is_stale(name) {
            // Processes a killed run left inside (daemons, servers) would
            // keep the namespace alive after its name is gone.
            if let Ok(pids) = Command::new("ip").args(["netns", "pids", name]).output() {
                for p in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
                    if let Ok(p) = p.parse::<i32>() {
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`{}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory on bpffs for one test's pins, removed on drop.
pub struct PinDir {
    pub path: std::path::PathBuf,
}

impl PinDir {
    pub fn new() -> Self {
        ensure_bpffs();
        remove_stale_pins();
        let path = std::path::PathBuf::from(format!(
            "/sys/fs/bpf/{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Mounts bpffs at /sys/fs/bpf when it is not (fresh machines here), as
/// the daemon does.
pub fn ensure_bpffs() {
    lb_userspace::xdp::dataplane::ensure_bpffs().expect("bpffs at /sys/fs/bpf");
}

/// Removes pin directories left by test processes that no longer exist
/// (their links too, which detaches what they left attached).
fn remove_stale_pins() {
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for e in dir.flatten() {
        if is_stale(&e.file_name().to_string_lossy()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
