//! Debian packages: the tools the tests and the demo shell out to.

use anyhow::{Result, bail};

use crate::cmd::Cmd;

const PACKAGES: &[&str] = &[
    "bpftool",
    "iproute2",
    "iperf3",
    "curl",
    "tcpdump",
    "ethtool",
    "libcap2-bin",
    // The BGP tests (tests/tests/bgp.rs) run bird2 in namespaces: the
    // router nodes announce VIPs with it, the upstream router learns them.
    "bird2",
    // `cargo xtask bench peers` (tests/src/peers) measures xlb beside
    // kube-proxy's rules on both iptables back-ends and nftables, and
    // drives HTTP load with wrk.
    "iptables",
    "nftables",
    "wrk",
];

pub(super) fn ensure(is_root: bool) -> Result<()> {
    ensure_these(is_root, PACKAGES)
}

/// Installs whichever of `packages` is missing (as root; otherwise fails
/// with the command to run).
pub(super) fn ensure_these(is_root: bool, packages: &[&'static str]) -> Result<()> {
    let missing = missing(packages)?;
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root {
        bail!(
            "missing Debian packages: {list}\n\
             install them as root with:\n    \
             apt-get update -q && apt-get install -y -q {list}"
        );
    }
    eprintln!("installing Debian packages: {list}");
    apt_get().args(["update", "-q"]).run()?;
    apt_get().args(["install", "-y", "-q"]).args(&missing).run()
}

fn missing(packages: &[&'static str]) -> Result<Vec<&'static str>> {
    let mut missing = Vec::new();
    for &package in packages {
        let status = Cmd::new("dpkg-query")
            .args(["-W", "-f", "${Status}", package])
            .probe()?;
        if status.as_deref().map(str::trim) != Some("install ok installed") {
            missing.push(package);
        }
    }
    Ok(missing)
}

fn apt_get() -> Cmd {
    Cmd::new("apt-get").env("DEBIAN_FRONTEND", "noninteractive")
}
