//! What booting other kernels needs: QEMU, virtme-ng and Debian's kernel
//! images. The images come from an apt of their own (sources list, lists,
//! status and cache under the cache directory), so the host's apt never
//! sees another suite and never offers its packages as upgrades.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::packages;
use crate::cmd::Cmd;

/// qemu and busybox boot the guest; kmod's depmod indexes the unpacked
/// modules; ipvsadm is the IPVS tests' witness inside the guest. udev is
/// there for virtme-ng's init: without it no `/dev/virtio-ports/*` names
/// appear, and the guest script falls back to the console, where its
/// output is mixed with the kernel's and its exit status is lost.
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "kmod",
    "ipvsadm",
    "udev",
];

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A Debian kernel unpacked in the cache, ready for `vng --run`.
pub(crate) struct Image {
    /// `uname -r` inside the guest, e.g. `6.1.0-56-amd64`.
    pub(crate) release: String,
    pub(crate) vmlinuz: PathBuf,
}

/// The packages and virtme-ng.
pub(super) fn ensure_tools(is_root: bool) -> Result<()> {
    packages::ensure_these(is_root, PACKAGES)?;
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

/// The current `linux-image-amd64` of `suite`, downloaded and unpacked once;
/// later calls return the cached one without touching the network. (Remove
/// the suite's directory under `kernels_dir()` to pick a newer one.)
pub(super) fn ensure_kernel(suite: &str) -> Result<Image> {
    let dir = kernels_dir()?.join(suite);
    if let Some(image) = unpacked(&dir.join("root"))? {
        return Ok(image);
    }
    eprintln!(
        "fetching Debian {suite}'s kernel into {} (about 70 MB, once)",
        dir.display()
    );
    let apt = PrivateApt::new(&dir.join("apt"), suite)?;
    apt.get().args(["update", "-qq"]).run()?;
    let package = apt.image_package()?;

    let debs = dir.join("debs");
    remove_dir_if_any(&debs)?;
    fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    apt.get()
        .args(["download", "-qq", &package])
        .dir(&debs)
        .run()?;
    let deb = only_file(&debs)?;

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
    remove_dir_if_any(&debs)?;
    unpacked(&root)?.context("the kernel was unpacked but is not found again")
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
    Ok(Some(Image { release, vmlinuz }))
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

/// apt-get and apt-cache with every piece of state in `dir`.
struct PrivateApt {
    options: Vec<String>,
}

impl PrivateApt {
    fn new(dir: &Path, suite: &str) -> Result<Self> {
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
            ("APT::Architecture", "amd64".into()),
            ("APT::Architectures", "amd64".into()),
            // The `_apt` user cannot write into root's cache directory.
            ("APT::Sandbox::User", "root".into()),
        ]
        .into_iter()
        .flat_map(|(key, value)| ["-o".to_owned(), format!("{key}={value}")])
        .collect();
        Ok(Self { options })
    }

    fn get(&self) -> Cmd {
        Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(&self.options)
    }

    /// The versioned package `linux-image-amd64` depends on, e.g.
    /// `linux-image-6.1.0-56-amd64` (signed, and holding the vmlinuz).
    fn image_package(&self) -> Result<String> {
        let out = Cmd::new("apt-cache")
            .args(&self.options)
            .args(["depends", "linux-image-amd64"])
            .read()?;
        image_dependency(&out).context("linux-image-amd64 depends on no linux-image-* package")
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

fn remove_dir_if_any(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// `$XDG_CACHE_HOME/xlb/kernels`, or `~/.cache/xlb/kernels`: outside the
/// work tree, so that a fresh clone (CI) reuses the downloads.
fn kernels_dir() -> Result<PathBuf> {
    let cache = match env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(&env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set")?)
            .join(".cache"),
    };
    Ok(cache.join("xlb").join("kernels"))
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
