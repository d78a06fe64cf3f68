//! Configs of many VIPs: what reading one costs (`xlb check`, the daemon's
//! load) and benchmarks that need many VIPs in the maps.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// A config of `vips` TCP VIPs on port 80 (10.64.0.0 onwards), each with
/// `backends` backends of weight 1 (10.128.0.0 onwards, 16 addresses per
/// VIP: past 524,288 VIPs they go on into 11.0.0.0/8), but the first VIP, which has `first_backends`; `[dataplane]`
/// holds exactly them (no `maglev_table_size` when it is `None`: the
/// default), and whatever else [`ManyVips::toml_with`] is given.
#[derive(Clone, Copy, Debug)]
pub struct ManyVips {
    pub vips: u32,
    pub backends: u32,
    pub first_backends: u32,
    pub maglev_table_size: Option<u32>,
}

impl ManyVips {
    pub fn new(vips: u32, backends: u32, maglev_table_size: u32) -> Self {
        Self {
            vips,
            backends,
            first_backends: backends,
            maglev_table_size: Some(maglev_table_size),
        }
    }

    pub fn toml(&self) -> String {
        self.toml_with("")
    }

    /// The config with `dataplane` (whole lines of `[dataplane]` keys)
    /// added to its `[dataplane]` table.
    pub fn toml_with(&self, dataplane: &str) -> String {
        assert!(
            self.backends.max(self.first_backends) <= 16,
            "at most 16 backends a VIP"
        );
        let most = self.backends.max(self.first_backends);
        // About 160 bytes a VIP of 3 backends.
        let mut t = String::with_capacity(self.vips as usize * (100 + 20 * most as usize));
        t.push_str("[dataplane]\n");
        if let Some(m) = self.maglev_table_size {
            let _ = writeln!(t, "maglev_table_size = {m}");
        }
        let _ = write!(
            t,
            "max_vips = {}\nmax_backends = {}\n\
             flow_table_size = 1024\nipip_source_v4 = \"10.0.0.1\"\n{dataplane}",
            self.vips.max(1),
            self.vips * most + 1,
        );
        for v in 0..self.vips {
            let n = if v == 0 {
                self.first_backends
            } else {
                self.backends
            };
            let a = Ipv4Addr::from(0x0a40_0000 + v);
            let _ = write!(
                t,
                "\n[[vip]]\naddress = \"{a}\"\nport = 80\nprotocol = \"tcp\"\nbackends = ["
            );
            for b in 0..n {
                let be = Ipv4Addr::from(0x0a80_0000 + v * 16 + b);
                let comma = if b > 0 { ", " } else { "" };
                let _ = write!(t, "{comma}{{ address = \"{be}\" }}");
            }
            t.push_str("]\n");
        }
        t
    }
}

/// Waits for the child `pid`; its exit status and peak RSS in KiB (the
/// kernel's rusage, VmHWM at exit).
pub fn wait_with_peak(pid: u32) -> (std::process::ExitStatus, i64) {
    use std::os::unix::process::ExitStatusExt as _;
    let mut status = 0;
    // SAFETY: rusage is plain data that wait4 fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a pointer to a live local for each out-parameter.
    let r = unsafe { libc::wait4(pid as i32, &mut status, 0, &mut usage) };
    assert_eq!(r, pid as i32, "wait4: {}", std::io::Error::last_os_error());
    (std::process::ExitStatus::from_raw(status), usage.ru_maxrss)
}
