//! bpf-linker, which links the eBPF programs. It is built against the LLVM
//! shipped inside the nightly toolchain, so that both speak the same bitcode.

use std::{
    env, fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, ensure};

use crate::{cmd::Cmd, workspace};

pub(super) fn ensure() -> Result<()> {
    if works() {
        return Ok(());
    }
    let llvm = NightlyLlvm::find()?;
    let prefix = llvm.prefix()?;
    eprintln!("building bpf-linker (about a minute)...");
    // The stable toolchain builds it; only the LLVM comes from nightly.
    // `--force` replaces a binary that exists but no longer runs (for
    // example after an update of nightly removed the LLVM it linked).
    workspace::unpinned(Cmd::new("cargo"))
        .args(["install", "bpf-linker", "--force", "--no-default-features"])
        .args(["--features", &format!("llvm-{}", llvm.major)])
        .env("LLVM_PREFIX", &prefix)
        .run()?;
    ensure!(
        works(),
        "bpf-linker was installed but `bpf-linker --version` still fails; \
         is cargo's bin directory ({}) on PATH?",
        install_bin_dir()?.display()
    );
    Ok(())
}

fn works() -> bool {
    Cmd::new("bpf-linker").arg("--version").succeeds()
}

/// The `libLLVM.so.<version>` in the nightly sysroot.
struct NightlyLlvm {
    /// Full path of the library.
    path: PathBuf,
    /// Its file name, which is also its soname.
    name: String,
    /// LLVM major version, which selects the bpf-linker feature.
    major: String,
}

impl NightlyLlvm {
    fn find() -> Result<Self> {
        let sysroot = workspace::nightly_rustc()
            .args(["--print", "sysroot"])
            .read()?;
        let lib = Path::new(sysroot.trim()).join("lib");
        let entries = fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))?;
        for entry in entries {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some(version) = name.strip_prefix("libLLVM.so.") {
                let major = version
                    .split(['.', '-'])
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                ensure!(
                    !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()),
                    "cannot tell the LLVM version of {}",
                    lib.join(&name).display()
                );
                return Ok(Self {
                    path: lib.join(&name),
                    name,
                    major,
                });
            }
        }
        anyhow::bail!("no libLLVM.so.* in {}", lib.display())
    }

    /// A stable directory laid out like an LLVM install (`lib/libLLVM.so`)
    /// whose libraries link to this one. bpf-linker records `<prefix>/lib`
    /// as its runtime library path, so it must outlive the build.
    fn prefix(&self) -> Result<PathBuf> {
        let prefix = cargo_home()?.join("xlb-llvm-prefix");
        let lib = prefix.join("lib");
        fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
        // Drop links left by an older nightly.
        for entry in fs::read_dir(&lib).with_context(|| format!("reading {}", lib.display()))? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("libLLVM") {
                fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
        for link in [lib.join("libLLVM.so"), lib.join(&self.name)] {
            symlink(&self.path, &link).with_context(|| {
                format!("linking {} to {}", link.display(), self.path.display())
            })?;
        }
        Ok(prefix)
    }
}

/// `$CARGO_HOME`, or `~/.cargo`.
fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = env::var_os("CARGO_HOME") {
        return Ok(home.into());
    }
    let home = env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(Path::new(&home).join(".cargo"))
}

/// Where `cargo install` puts binaries.
fn install_bin_dir() -> Result<PathBuf> {
    let root = match env::var_os("CARGO_INSTALL_ROOT") {
        Some(root) => root.into(),
        None => cargo_home()?,
    };
    Ok(root.join("bin"))
}
