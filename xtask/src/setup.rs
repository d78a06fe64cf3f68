//! `cargo xtask setup`: installs what building and testing xlb needs on a
//! Debian 12 machine. Idempotent, and silent when there is nothing to do.

mod bpf_linker;
mod bpffs;
mod cross;
mod guest_root;
mod packages;
mod python;
mod toolchain;
mod vm;

use std::fs;

use anyhow::{Context as _, Result};

pub(crate) use self::{
    guest_root::{BIN_MOUNT, SCRIPT_MOUNT},
    vm::Image,
};
use crate::arch::Arch;

pub(crate) fn run() -> Result<()> {
    let root = is_root()?;
    packages::ensure(root)?;
    toolchain::ensure()?;
    bpf_linker::ensure()?;
    bpffs::ensure(root)?;
    python::ensure()?;
    Ok(())
}

/// What building the static `xlb` for `arch` needs on top of `run`: the
/// Rust target and a C compiler for it.
pub(crate) fn cross(arch: Arch) -> Result<()> {
    cross::ensure(is_root()?, arch)
}

/// What booting other kernels of `arch` needs on top of `run`: QEMU,
/// virtme-ng, for a foreign architecture a root directory of its own
/// userland, and the kernels of `suites` (Debian suite names), returned in
/// that order.
pub(crate) fn vm(arch: Arch, suites: &[&str]) -> Result<Vec<Image>> {
    vm::ensure_tools(is_root()?, arch)?;
    suites
        .iter()
        .map(|suite| vm::ensure_kernel(suite, arch))
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
