//! The nightly toolchain and its `rust-src`, which lb-ebpf needs for
//! `-Z build-std=core` on `bpfel-unknown-none`.

use anyhow::{Context as _, Result};

use crate::cmd::Cmd;

pub(super) fn ensure() -> Result<()> {
    if !has_nightly()? {
        eprintln!("installing the nightly Rust toolchain (it builds the eBPF programs)");
        Cmd::new("rustup")
            .args(["toolchain", "install", "nightly", "--profile", "minimal"])
            .run()
            .context("could not install the nightly toolchain (is the machine offline?)")?;
    }
    if !has_rust_src()? {
        Cmd::new("rustup")
            .args(["component", "add", "rust-src", "--toolchain", "nightly"])
            .run()
            .context("could not add rust-src to the nightly toolchain (is the machine offline?)")?;
    }
    Ok(())
}

/// Whether `rustup toolchain list` has the moving `nightly` channel (for
/// example `nightly-x86_64-unknown-linux-gnu`; a dated nightly does not count).
fn has_nightly() -> Result<bool> {
    let list = Cmd::new("rustup").args(["toolchain", "list"]).read()?;
    Ok(list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .any(|name| {
            name == "nightly"
                || name
                    .strip_prefix("nightly-")
                    .is_some_and(|host| !host.starts_with(|c: char| c.is_ascii_digit()))
        }))
}

fn has_rust_src() -> Result<bool> {
    let list = Cmd::new("rustup")
        .args(["component", "list", "--toolchain", "nightly", "--installed"])
        .read()?;
    Ok(list
        .lines()
        .any(|line| line.split_whitespace().next() == Some("rust-src")))
}
