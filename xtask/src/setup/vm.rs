//! What booting other kernels needs: QEMU, virtme-ng and Debian's kernel
//! images. The images come from an apt of their own (sources list, lists,
//! status and cache under the cache directory), so the host's apt never
//! sees another suite and never offers its packages as upgrades.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{guest_root, packages};
use crate::{arch::Arch, cmd::Cmd};

/// busybox boots the guest (with QEMU, `Arch::qemu_package`); kmod's
/// depmod indexes the unpacked modules; ipvsadm is the IPVS tests' witness
/// inside the guest. udev is there for virtme-ng's init: without it no
/// `/dev/virtio-ports/*` names appear, and the guest script falls back to
/// the console, where its output is mixed with the kernel's and its exit
/// status is lost. (A foreign architecture's guest has its own copies,
/// `guest_root::PACKAGES`.)
const PACKAGES: &[&str] = &["busybox-static", "kmod", "ipvsadm", "udev"];

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A Debian kernel unpacked in the cache, ready for `vng --run`.
pub(crate) struct Image {
    pub(crate) arch: Arch,
    /// `uname -r` inside the guest, e.g. `6.1.0-56-amd64`.
    pub(crate) release: String,
    pub(crate) vmlinuz: PathBuf,
    /// The guest's root directory, with the kernel's modules in it, for a
    /// foreign architecture; `None` when the guest runs on the host's own
    /// filesystem.
    pub(crate) root: Option<PathBuf>,
}

/// The packages and virtme-ng.
pub(super) fn ensure_tools(is_root: bool, arch: Arch) -> Result<()> {
    packages::ensure_these(is_root, PACKAGES)?;
    packages::ensure_these(is_root, &[arch.qemu_package()])?;
    if vng_works() {
        return Ok(());
    }
    eprintln!("installing virtme-ng (it boots a kernel on the host's filesystem)");
    Cmd::new("python3")
        .args(["-m", "pip", "install", "--quiet", "virtme-ng"])
        .run()?;
    ensure!(
        vng_works(),
        "virtme-ng was installed but `vng --version` fails; is pip's script directory on PATH?"
    );
    Ok(())
}

fn vng_works() -> bool {
    Cmd::new("vng").arg("--version").succeeds()
}

/// The current `linux-image-<arch>` of `suite`, downloaded and unpacked
/// once; later calls return the cached one without touching the network.
/// (Remove the suite's directory under `cache_dir()` to pick a newer one.)
/// A foreign architecture's kernel is unpacked into its guest root.
pub(super) fn ensure_kernel(suite: &str, arch: Arch) -> Result<Image> {
    if arch != Arch::HOST {
        return ensure_foreign_kernel(suite, arch);
    }
    let dir = cache_dir()?.join("kernels").join(suite);
    if let Some(image) = unpacked(&dir.join("root"))? {
        return Ok(image);
    }
    let (deb, _) = download_kernel(&dir, suite, arch)?;

    // Unpack beside the final place and rename at the end, so that an
    // interrupted run leaves no tree that looks complete.
    let fresh = dir.join("root.new");
    remove_dir_if_any(&fresh)?;
    Cmd::new("dpkg-deb").arg("-x").arg(&deb).arg(&fresh).run()?;
    let release = normalise_modules(&fresh)?;
    ensure!(
        fresh.join("boot").join(vmlinuz_name(&release)).is_file(),
        "{} has modules for {release} but no boot/{}",
        deb.display(),
        vmlinuz_name(&release)
    );
    // The package leaves modules.dep to its postinst; modprobe in the
    // guest needs it.
    Cmd::new("depmod")
        .arg("-b")
        .arg(&fresh)
        .arg(&release)
        .run()?;
    fs::write(fresh.join(READY), &release)
        .with_context(|| format!("writing {}", fresh.join(READY).display()))?;
    let root = dir.join("root");
    remove_dir_if_any(&root)?;
    fs::rename(&fresh, &root)
        .with_context(|| format!("renaming {} to {}", fresh.display(), root.display()))?;
    remove_dir_if_any(&dir.join("debs"))?;
    unpacked(&root)?.context("the kernel was unpacked but is not found again")
}

/// `ensure_kernel` for a foreign architecture: the kernel goes into the
/// guest root (its modules where the guest's modprobe looks), beside any
/// other kernel already there; a marker per suite says it is complete.
fn ensure_foreign_kernel(suite: &str, arch: Arch) -> Result<Image> {
    let root = guest_root::ensure(arch)?;
    let marker = root.join(format!(".xlb-kernel-{suite}"));
    let image = |release: String| Image {
        arch,
        vmlinuz: root.join("boot").join(vmlinuz_name(&release)),
        release,
        root: Some(root.clone()),
    };
    if let Ok(release) = fs::read_to_string(&marker) {
        let image = image(release.trim().to_owned());
        if image.vmlinuz.is_file() {
            return Ok(image);
        }
    }
    let dir = cache_dir()?
        .join("kernels")
        .join(format!("{suite}-{}", arch.debian()));
    let (deb, package) = download_kernel(&dir, suite, arch)?;
    guest_root::unpack(&deb, &root)?;
    // linux-image-6.1.0-57-arm64 holds 6.1.0-57-arm64.
    let release = package
        .strip_prefix("linux-image-")
        .unwrap_or(&package)
        .to_owned();
    let image = image(release.clone());
    ensure!(
        image.vmlinuz.is_file() && root.join("lib/modules").join(&release).is_dir(),
        "{} did not unpack boot/{} and lib/modules/{release}",
        deb.display(),
        vmlinuz_name(&release)
    );
    Cmd::new("depmod")
        .arg("-b")
        .arg(&root)
        .arg(&release)
        .run()?;
    fs::write(&marker, &release).with_context(|| format!("writing {}", marker.display()))?;
    remove_dir_if_any(&dir.join("debs"))?;
    Ok(image)
}

/// Downloads the current `linux-image-<arch>` of `suite` into `dir/debs`:
/// the .deb and its package name.
fn download_kernel(dir: &Path, suite: &str, arch: Arch) -> Result<(PathBuf, String)> {
    eprintln!(
        "fetching Debian {suite}'s {} kernel into {} (70-95 MB, once)",
        arch.debian(),
        dir.display()
    );
    let apt = PrivateApt::new(&dir.join("apt"), suite, arch)?;
    apt.get().args(["update", "-qq"]).run()?;
    let package = apt.image_package()?;

    let debs = dir.join("debs");
    remove_dir_if_any(&debs)?;
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    apt.get()
        .args(["download", "-qq", &package])
        .dir(&debs)
        .run()?;
    Ok((only_file(&debs)?, package))
}

/// Written last into an unpacked tree: the kernel release it holds.
const READY: &str = ".xlb-release";

fn vmlinuz_name(release: &str) -> String {
    format!("vmlinuz-{release}")
}

/// The image in an unpacked tree, if the tree is complete.
fn unpacked(root: &Path) -> Result<Option<Image>> {
    let Ok(release) = fs::read_to_string(root.join(READY)) else {
        return Ok(None);
    };
    let release = release.trim().to_owned();
    let vmlinuz = root.join("boot").join(vmlinuz_name(&release));
    if !vmlinuz.is_file() {
        return Ok(None);
    }
    Ok(Some(Image {
        arch: Arch::HOST,
        release,
        vmlinuz,
        root: None,
    }))
}

/// Trixie's packages put modules under `usr/lib/modules`, older ones under
/// `lib/modules`. virtme-ng finds them from the kernel's path in either
/// place, depmod -b only in the second: move them there. Returns the one
/// kernel release found.
fn normalise_modules(root: &Path) -> Result<String> {
    let modules = root.join("lib/modules");
    let usr_modules = root.join("usr/lib/modules");
    if !modules.exists() && usr_modules.exists() {
        fs::create_dir_all(root.join("lib"))?;
        fs::rename(&usr_modules, &modules).with_context(|| {
            format!("moving {} to {}", usr_modules.display(), modules.display())
        })?;
    }
    let mut releases = Vec::new();
    for entry in fs::read_dir(&modules).with_context(|| format!("reading {}", modules.display()))? {
        releases.push(entry?.file_name().to_string_lossy().into_owned());
    }
    match releases.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one kernel release in {}, found {releases:?}",
            modules.display()
        ),
    }
}

/// apt-get and apt-cache with every piece of state in `dir`, for packages
/// of one architecture.
pub(super) struct PrivateApt {
    options: Vec<String>,
    arch: Arch,
    archives: PathBuf,
}

impl PrivateApt {
    pub(super) fn new(dir: &Path, suite: &str, arch: Arch) -> Result<Self> {
        for sub in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        }
        let sources = dir.join("sources.list");
        fs::write(&sources, sources_list(suite))
            .with_context(|| format!("writing {}", sources.display()))?;
        // An empty status file: nothing is installed as far as this apt
        // knows, so the host's packages never take part in its choices.
        let status = dir.join("status");
        fs::write(&status, "").with_context(|| format!("writing {}", status.display()))?;
        let at = |path: &str| dir.join(path).display().to_string();
        let options = [
            ("Dir::Etc::SourceList", at("sources.list")),
            ("Dir::Etc::SourceParts", at("sources.list.d")),
            ("Dir::State::Lists", at("lists")),
            ("Dir::State::status", at("status")),
            ("Dir::Cache", at("cache")),
            ("APT::Architecture", arch.debian().into()),
            ("APT::Architectures", arch.debian().into()),
            // The `_apt` user cannot write into root's cache directory.
            ("APT::Sandbox::User", "root".into()),
        ]
        .into_iter()
        .flat_map(|(key, value)| ["-o".to_owned(), format!("{key}={value}")])
        .collect();
        Ok(Self {
            options,
            arch,
            archives: dir.join("cache/archives"),
        })
    }

    pub(super) fn get(&self) -> Cmd {
        Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(&self.options)
    }

    /// The versioned package `linux-image-<arch>` depends on, e.g.
    /// `linux-image-6.1.0-56-amd64` (signed, and holding the vmlinuz).
    fn image_package(&self) -> Result<String> {
        let meta = format!("linux-image-{}", self.arch.debian());
        let out = Cmd::new("apt-cache")
            .args(&self.options)
            .args(["depends", &meta])
            .read()?;
        image_dependency(&out)
            .with_context(|| format!("{meta} depends on no linux-image-* package"))
    }

    /// Downloads `packages` and everything they depend on (not what they
    /// recommend) as .deb files, and returns them. Nothing is installed: the
    /// private status file says nothing is, so the whole closure comes.
    pub(super) fn download_closure(&self, packages: &[&str]) -> Result<Vec<PathBuf>> {
        remove_dir_if_any(&self.archives)?;
        fs::create_dir_all(self.archives.join("partial"))
            .with_context(|| format!("creating {}", self.archives.display()))?;
        self.get()
            .args(["install", "--download-only", "--no-install-recommends"])
            .args(["-y", "-qq"])
            .args(packages)
            .run()?;
        let mut debs = Vec::new();
        for entry in fs::read_dir(&self.archives)
            .with_context(|| format!("reading {}", self.archives.display()))?
        {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "deb") {
                debs.push(path);
            }
        }
        debs.sort();
        Ok(debs)
    }
}

fn sources_list(suite: &str) -> String {
    // Kernel updates of a released suite arrive through its security suite.
    format!(
        "deb [signed-by={KEYRING}] http://deb.debian.org/debian {suite} main\n\
         deb [signed-by={KEYRING}] http://deb.debian.org/debian-security {suite}-security main\n"
    )
}

fn image_dependency(apt_cache_depends: &str) -> Option<String> {
    apt_cache_depends.lines().find_map(|line| {
        let package = line
            .trim()
            .trim_start_matches('|')
            .strip_prefix("Depends:")?;
        let package = package.trim();
        package
            .starts_with("linux-image-")
            .then(|| package.to_owned())
    })
}

fn only_file(dir: &Path) -> Result<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        files.push(entry?.path());
    }
    match files.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one downloaded file in {}, found {files:?}",
            dir.display()
        ),
    }
}

pub(super) fn remove_dir_if_any(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// `$XDG_CACHE_HOME/xlb`, or `~/.cache/xlb`: outside the work tree, so
/// that a fresh clone (CI) reuses the downloads.
pub(super) fn cache_dir() -> Result<PathBuf> {
    let cache = match env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(&env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?)
            .join(".cache"),
    };
    Ok(cache.join("xlb"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_versioned_image_from_apt_cache_depends() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            image_dependency(out).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        let alternatives = "linux-image-amd64\n |Depends: linux-image-6.12.48+deb13-amd64\n  \
                            Depends: linux-image-6.12.48+deb13-amd64-unsigned\n";
        assert_eq!(
            image_dependency(alternatives).as_deref(),
            Some("linux-image-6.12.48+deb13-amd64")
        );
        assert_eq!(
            image_dependency("linux-image-amd64\n  Depends: kmod\n"),
            None
        );
    }
}
