//! Running the real `xlb` binary in a namespace, as an operator would.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::{netns::NetNs, vm::patience};

/// The `xlb` binary of this workspace, built once per test process.
pub fn xlb_bin() -> PathBuf {
    crate::topology::workspace_bin("lb-userspace", "xlb")
}

/// An `xlb run` in a namespace; killed (SIGKILL) on drop if still running.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(ns: &NetNs, args: &[&str], log: &Path) -> Self {
        let out = std::fs::File::create(log).expect("daemon log file");
        let child = ns
            .command(xlb_bin())
            .arg("run")
            .args(args)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn xlb run");
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// SIGKILL: no cleanup of any kind runs in the daemon.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Waits for exit after SIGTERM; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let timeout = patience(Duration::from_secs(10));
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "xlb did not exit within {timeout:?} of SIGTERM; log:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows `needle` (the daemon reached that point).
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) {
        let timeout = patience(timeout);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log_text().contains(needle) {
                return;
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "xlb exited ({s}) before logging {needle:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!(
            "xlb did not log {needle:?} within {timeout:?}; log:\n{}",
            self.log_text()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free TCP port on this host's loopback (each namespace has its own
/// loopback, so it is free there too).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// GET http://127.0.0.1:port/path from inside `ns`; (status, body).
///
/// The daemon logs "reconciled" before it binds its metrics port (the
/// server needs the reconciler's handle), so a caller that waited for that
/// line may be a moment early: a refused connection is tried again for a
/// few seconds before it counts.
pub fn http_get(ns: &NetNs, port: u16, path: &str) -> (u16, String) {
    ns.run(|| {
        let deadline = std::time::Instant::now() + crate::vm::patience(Duration::from_secs(5));
        let mut s = loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("connect to the metrics port {port}: {e}"),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).expect("read the response");
        let status = r
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = r
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    })
}

/// The value of an exposition line `name{labels} value`, or `name value`.
pub fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().split(' ').next()?.parse().ok())
    })
}
