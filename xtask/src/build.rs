//! `cargo xtask build`: builds the workspace's default members. lb-ebpf is
//! not among them; lb-userspace's build script builds the programs `xlb`
//! embeds through aya-build, and xlb-tests' build script the benchmark's.
//! With `--target`, the static `xlb` that images ship instead: musl, for
//! x86_64 or aarch64 (cross-compiled; aya-build builds the eBPF programs
//! for the target's byte order and `bpf_target_arch`).

use std::{fs, path::Path};

use anyhow::{Context as _, Result, ensure};

use crate::{arch::Arch, setup, workspace};

pub(crate) fn run(release: bool, target: Option<Arch>) -> Result<()> {
    let Some(arch) = target else {
        // Quiet: aya-build relays every line of the nested eBPF build as a
        // cargo warning, which buries the progress; errors still show in full.
        eprintln!(
            "building xlb: eBPF programs (nightly, bpf-linker), the daemon, the test tools ..."
        );
        return workspace::cargo()
            .args(["build", "--quiet"])
            .args(release.then_some("--release"))
            .run();
    };
    setup::cross(arch)?;
    let triple = arch.musl_target();
    eprintln!("building the static xlb for {triple} ...");
    workspace::cargo()
        .args(["build", "--quiet", "--target", triple])
        .args(release.then_some("--release"))
        .args(["-p", "lb-userspace", "--bin", "xlb"])
        .run()?;
    let xlb = workspace::target_dir()
        .join(triple)
        .join(if release { "release" } else { "debug" })
        .join("xlb");
    check_static(&xlb, arch)?;
    eprintln!("built {} (static, {})", xlb.display(), arch.name());
    Ok(())
}

/// Fails unless `exe` is an ELF executable for `arch` with no program
/// interpreter, i.e. one that runs on a bare image with no libc.
fn check_static(exe: &Path, arch: Arch) -> Result<()> {
    let bytes = fs::read(exe).with_context(|| format!("reading {}", exe.display()))?;
    let elf = Elf::parse(&bytes).with_context(|| format!("{} is no ELF64 file", exe.display()))?;
    ensure!(
        elf.machine == arch.elf_machine(),
        "{} is for ELF machine {}, not {} ({})",
        exe.display(),
        elf.machine,
        arch.elf_machine(),
        arch.name()
    );
    ensure!(
        !elf.has_interpreter,
        "{} asks for a program interpreter: it is dynamically linked",
        exe.display()
    );
    Ok(())
}

/// The two facts `check_static` needs from a little-endian ELF64 header
/// and its program headers.
struct Elf {
    machine: u16,
    has_interpreter: bool,
}

impl Elf {
    const PT_INTERP: u32 = 3;

    fn parse(bytes: &[u8]) -> Option<Self> {
        // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1).
        if bytes.get(..6)? != b"\x7fELF\x02\x01" {
            return None;
        }
        let u16_at = |at: usize| Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?));
        let u32_at = |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
        let u64_at = |at: usize| Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        let machine = u16_at(18)?;
        let phoff = usize::try_from(u64_at(32)?).ok()?;
        let phentsize = usize::from(u16_at(54)?);
        let phnum = usize::from(u16_at(56)?);
        let mut has_interpreter = false;
        for i in 0..phnum {
            has_interpreter |=
                u32_at(phoff.checked_add(i.checked_mul(phentsize)?)?)? == Self::PT_INTERP;
        }
        Some(Self {
            machine,
            has_interpreter,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with `phdrs` program headers of these types.
    fn elf(machine: u16, phdrs: &[u32]) -> Vec<u8> {
        let mut b = vec![0u8; 64 + 56 * phdrs.len()];
        b[..6].copy_from_slice(b"\x7fELF\x02\x01");
        b[18..20].copy_from_slice(&machine.to_le_bytes());
        b[32..40].copy_from_slice(&64u64.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&u16::try_from(phdrs.len()).unwrap().to_le_bytes());
        for (i, kind) in phdrs.iter().enumerate() {
            b[64 + 56 * i..68 + 56 * i].copy_from_slice(&kind.to_le_bytes());
        }
        b
    }

    #[test]
    fn reads_the_machine_and_the_interpreter() {
        let dynamic = Elf::parse(&elf(183, &[6, 3, 1])).unwrap();
        assert_eq!((dynamic.machine, dynamic.has_interpreter), (183, true));
        let fixed = Elf::parse(&elf(62, &[1, 1, 4])).unwrap();
        assert_eq!((fixed.machine, fixed.has_interpreter), (62, false));
        // Truncated program headers, a 32-bit file, not an ELF file.
        let mut short = elf(183, &[1, 1]);
        short.truncate(100);
        assert!(Elf::parse(&short).is_none());
        assert!(Elf::parse(b"\x7fELF\x01\x01\0\0").is_none());
        assert!(Elf::parse(b"#!/bin/sh\n").is_none());
    }

    #[test]
    fn this_xtask_is_not_static_but_is_x86_64() {
        // The host's own executable: an independent witness for the parser.
        let me = std::env::current_exe().unwrap();
        let elf = Elf::parse(&fs::read(me).unwrap()).unwrap();
        assert_eq!(elf.machine, Arch::X86_64.elf_machine());
        assert!(
            elf.has_interpreter,
            "the test binary is dynamically linked (glibc)"
        );
    }
}
