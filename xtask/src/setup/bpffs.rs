//! The BPF filesystem at /sys/fs/bpf, where maps and programs get pinned.

use std::fs;

use anyhow::{Context as _, Result};

use crate::cmd::Cmd;

const BPFFS: &str = "/sys/fs/bpf";

pub(super) fn ensure(is_root: bool) -> Result<()> {
    if mounted()? {
        return Ok(());
    }
    if !is_root {
        eprintln!("note: {BPFFS} is not mounted; as root run: mount -t bpf bpf {BPFFS}");
        return Ok(());
    }
    Cmd::new("mount").args(["-t", "bpf", "bpf", BPFFS]).run()
}

/// Whether /proc/mounts has a `bpf` filesystem at /sys/fs/bpf.
fn mounted() -> Result<bool> {
    let mounts = fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    Ok(mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(BPFFS) && fields.next() == Some("bpf")
    }))
}
