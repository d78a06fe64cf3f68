//! `cargo xtask setup`: installs what building and testing xlb needs on a
//! Debian 12 machine. Idempotent, and silent when there is nothing to do.

mod bpf_linker;
mod bpffs;
mod packages;
mod python;
mod toolchain;
mod vm;

use std::fs;

use anyhow::{Context as _, Result};

pub(crate) use self::vm::Image;

pub(crate) fn run() -> Result<()> {
    let root = is_root()?;
    packages::ensure(root)?;
    toolchain::ensure()?;
    bpf_linker::ensure()?;
    bpffs::ensure(root)?;
    python::ensure()?;
    Ok(())
}

/// What booting other kernels needs on top of `run`: QEMU, virtme-ng and
/// the kernels of `suites` (Debian suite names), returned in that order.
pub(crate) fn vm(suites: &[&str]) -> Result<Vec<Image>> {
    vm::ensure_tools(is_root()?)?;
    suites
        .iter()
        .map(|suite| vm::ensure_kernel(suite))
        .collect()
}

/// Whether this process runs with effective user id 0.
fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    // "Uid:\treal\teffective\tsaved\tfs"
    let euid = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .context("no effective uid in /proc/self/status")?;
    Ok(euid == "0")
}
