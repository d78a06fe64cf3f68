//! Running inside a guest booted by `cargo xtask vm-test` (QEMU without
//! KVM), which sets `XLB_IN_VM=1`.

use std::{path::Path, process::Command, time::Duration};

/// Whether this process runs inside a vm-test guest. There a kernel
/// feature a test needs is part of what is being tested: a test that
/// would skip for its absence elsewhere fails instead.
pub fn in_vm() -> bool {
    std::env::var_os("XLB_IN_VM").is_some()
}

/// How much longer the guest takes: emulated CPUs run code about ten times
/// slower than the host (`xlb decap` took 9 s from start to attached in a
/// 6.1 guest, well under one on the host).
const SLOWDOWN: u32 = 10;

/// `d` as a deadline for waiting on something to happen: unchanged on the
/// host, stretched in a guest so that slowness does not pass for failure.
pub fn patience(d: Duration) -> Duration {
    if in_vm() { d * SLOWDOWN } else { d }
}

/// Whether this kernel has IPVS (loading the module if it can).
pub fn ipvs_available() -> bool {
    let _ = Command::new("modprobe")
        .arg("ip_vs")
        .stderr(std::process::Stdio::null())
        .status();
    Path::new("/proc/net/ip_vs").exists()
}

/// True when `test`, which needs root and IPVS, can run; otherwise says
/// why (and fails inside the VM suite, where IPVS must be there).
pub fn needs_ipvs(test: &str) -> bool {
    if !crate::netns::privileged(test) {
        return false;
    }
    if ipvs_available() {
        return true;
    }
    assert!(!in_vm(), "{test}: this guest kernel has no IPVS");
    eprintln!(
        "SKIPPED {test}: this kernel has no IPVS (CONFIG_IP_VS); `cargo xtask vm-test` runs it in Debian kernels"
    );
    false
}
