//! The machines xlb is built for: x86_64, the development and CI host, and
//! arm64 (AWS Graviton), the cheapest router nodes of the AWS set-up. The
//! shipped binary is static (musl) on both; arm64 is cross-compiled here and
//! tested in an emulated arm64 kernel (`cargo xtask vm-test --arch arm64`).

use clap::ValueEnum;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub(crate) enum Arch {
    #[value(name = "x86_64", alias = "amd64")]
    X86_64,
    #[value(name = "arm64", alias = "aarch64")]
    Arm64,
}

impl Arch {
    /// The architecture this xtask runs on, which builds natively.
    pub(crate) const HOST: Self = Self::X86_64;

    /// The Rust target of the static binary. Its C compiler and linker are
    /// set in `.cargo/config.toml`.
    pub(crate) fn musl_target(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64-unknown-linux-musl",
            Self::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// Debian's name for it: package architecture and kernel flavour
    /// (`linux-image-<debian>`).
    pub(crate) fn debian(self) -> &'static str {
        match self {
            Self::X86_64 => "amd64",
            Self::Arm64 => "arm64",
        }
    }

    /// Debian packages that compile C for `musl_target` on the host (ring
    /// needs them): musl's gcc wrapper natively, Debian's cross gcc for
    /// arm64.
    pub(crate) fn c_compiler_packages(self) -> &'static [&'static str] {
        match self {
            Self::X86_64 => &["musl-tools"],
            Self::Arm64 => &["gcc-aarch64-linux-gnu"],
        }
    }

    /// The Debian package of QEMU's system emulator for it.
    pub(crate) fn qemu_package(self) -> &'static str {
        match self {
            Self::X86_64 => "qemu-system-x86",
            Self::Arm64 => "qemu-system-arm",
        }
    }

    /// The ELF `e_machine` of its executables.
    pub(crate) fn elf_machine(self) -> u16 {
        match self {
            Self::X86_64 => 62,
            Self::Arm64 => 183,
        }
    }

    /// Its name on the command line, which virtme-ng's `--arch` takes too.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_parse() {
        assert_eq!(Arch::from_str("arm64", false), Ok(Arch::Arm64));
        assert_eq!(Arch::from_str("aarch64", false), Ok(Arch::Arm64));
        assert_eq!(Arch::from_str("amd64", false), Ok(Arch::X86_64));
        for arch in Arch::value_variants() {
            assert_eq!(Arch::from_str(arch.name(), false), Ok(*arch));
        }
        assert!(Arch::Arm64.musl_target().starts_with("aarch64-"));
    }

    /// The image (deploy/Dockerfile) and cargo's configuration build the
    /// static binary the way `cargo xtask build --target` does: the same
    /// Rust target and C compiler per architecture.
    #[test]
    fn the_dockerfile_and_cargo_config_agree_with_the_table() {
        let root = crate::workspace::root();
        let dockerfile = std::fs::read_to_string(root.join("deploy/Dockerfile")).unwrap();
        let config = std::fs::read_to_string(root.join(".cargo/config.toml")).unwrap();
        for arch in Arch::value_variants() {
            let line = format!(
                "{}) echo {} {} ;;",
                arch.debian(),
                arch.musl_target(),
                arch.c_compiler_packages().join(" ")
            );
            assert!(
                dockerfile.contains(&line),
                "deploy/Dockerfile lacks `{line}`"
            );
            let cc = format!("CC_{} = ", arch.musl_target().replace('-', "_"));
            assert!(config.contains(&cc), ".cargo/config.toml sets no {cc}");
        }
    }
}
