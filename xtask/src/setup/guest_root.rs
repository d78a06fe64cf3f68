//! The root directory of a foreign-architecture guest. An x86_64 guest
//! boots on the host's own filesystem; an arm64 one cannot run the host's
//! programs, so virtme-ng boots it on a directory of arm64 Debian
//! (`vng --root DIR`). It is assembled without debootstrap or binfmt: the
//! packages' .debs, downloaded through a private apt state, are unpacked
//! into a usr-merged skeleton. Their maintainer scripts never run, so what
//! they would have done and the guests need is done here (accounts,
//! `/var/run`, `/bin/sh`, `poweroff`). Built once and cached; the kernels
//! are unpacked into it beside the userland (`vm::ensure_kernel`).

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};

use super::vm::{PrivateApt, cache_dir, remove_dir_if_any};
use crate::{arch::Arch, cmd::Cmd};

/// The userland's Debian suite, whatever the kernel's.
const SUITE: &str = "bookworm";

/// What the guests run: virtme-ng's init (bash, coreutils, util-linux,
/// udev, busybox for `poweroff`), the tools the tests in the arm64 share of
/// the VM table shell out to, and CA certificates: with no CA in the
/// kubeconfig (the harness's API server is plain HTTP), the daemon's
/// Kubernetes client builds its TLS set-up from the system's roots up
/// front and refuses to start without any. busybox's `ip` is no substitute for
/// iproute2's: it has no `netns` and ignores veth peer names.
const PACKAGES: &[&str] = &[
    "bash",
    "busybox-static",
    "bpftool",
    "ca-certificates",
    "coreutils",
    "curl",
    "ethtool",
    "findutils",
    "grep",
    "hostname",
    "iperf3",
    "iproute2",
    "ipvsadm",
    "kmod",
    "libcap2-bin",
    "mawk",
    "mount",
    "procps",
    "sed",
    "tcpdump",
    "udev",
    "util-linux",
];

/// Changed whenever the assembly below changes, so that a cached root
/// built the old way is rebuilt.
const ASSEMBLY: u32 = 2;

/// Written last into a complete root: what it was built from.
const READY: &str = ".xlb-root";

/// Where the guest sees the host's build directory (the test executables
/// under `deps/`, `xlb` and `xlb-backend`) and the directory of guest
/// scripts: directories of the root that virtme-ng mounts them on.
pub(crate) const BIN_MOUNT: &str = "/xlb/bin";
pub(crate) const SCRIPT_MOUNT: &str = "/xlb/vm";

/// The root for `arch`, assembled first if it is not in the cache.
pub(super) fn ensure(arch: Arch) -> Result<PathBuf> {
    let dir = cache_dir()?.join("roots").join(arch.debian());
    let root = dir.join("root");
    let fingerprint = fingerprint();
    if fs::read_to_string(root.join(READY)).is_ok_and(|built| built == fingerprint) {
        return Ok(root);
    }
    eprintln!(
        "assembling a Debian {SUITE} {} root for the guests in {} \
         (about 100 MB of packages, once)",
        arch.debian(),
        root.display()
    );
    let apt = PrivateApt::new(&dir.join("apt"), SUITE, arch)?;
    apt.get().args(["update", "-qq"]).run()?;
    let debs = apt.download_closure(PACKAGES)?;

    // Assembled beside the final place and renamed at the end, so that an
    // interrupted run leaves no tree that looks complete.
    let fresh = dir.join("root.new");
    remove_dir_if_any(&fresh)?;
    skeleton(&fresh)?;
    for deb in &debs {
        unpack(deb, &fresh)?;
    }
    configure(&fresh)?;
    fs::write(fresh.join(READY), &fingerprint)
        .with_context(|| format!("writing {}", fresh.join(READY).display()))?;
    remove_dir_if_any(&root)?;
    fs::rename(&fresh, &root)
        .with_context(|| format!("renaming {} to {}", fresh.display(), root.display()))?;
    // The unpacked tree is all that is kept.
    remove_dir_if_any(&dir.join("apt/cache"))?;
    Ok(root)
}

fn fingerprint() -> String {
    format!("{ASSEMBLY} {SUITE} {}\n", PACKAGES.join(" "))
}

/// Unpacks `deb`'s files into `root`, keeping the skeleton's links: a
/// package's `/bin/...` lands in `/usr/bin`, as on a usr-merged system.
/// (`dpkg-deb -x` would replace the links with directories.)
pub(super) fn unpack(deb: &Path, root: &Path) -> Result<()> {
    Cmd::new("bash")
        .args([
            "-c",
            r#"set -o pipefail; dpkg-deb --fsys-tarfile "$1" | tar -x --keep-directory-symlink -C "$2""#,
            "unpack",
        ])
        .arg(deb)
        .arg(root)
        .read()
        .with_context(|| format!("unpacking {} into {}", deb.display(), root.display()))?;
    Ok(())
}

/// A usr-merged tree (bookworm's layout): `/bin`, `/sbin` and `/lib` are
/// links into `/usr`.
fn skeleton(root: &Path) -> Result<()> {
    for dir in ["usr/bin", "usr/sbin", "usr/lib"] {
        let path = root.join(dir);
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    for (link, target) in [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")] {
        link_at(root, link, target)?;
    }
    Ok(())
}

/// What the packages' maintainer scripts would have done, as far as the
/// guests need it, and the mount points of the host's directories.
fn configure(root: &Path) -> Result<()> {
    // base-files' postinst makes /var/run a link; udev and ip netns write
    // into /run, which virtme-ng mounts as a tmpfs.
    remove_dir_if_any(&root.join("var/run"))?;
    link_at(root, "var/run", "/run")?;
    // dash is not in the closure; bash serves as /bin/sh.
    link_at(root, "usr/bin/sh", "bash")?;
    // virtme-ng's init ends the guest with `poweroff -f`, from systemd or
    // busybox on a full system.
    link_at(root, "usr/sbin/poweroff", "../bin/busybox")?;
    // base-passwd's and the packages' postinsts create the accounts:
    // tcpdump drops its privileges to its own user and fails without it.
    write(
        root,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n\
         tcpdump:x:100:101::/nonexistent:/usr/sbin/nologin\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    write(
        root,
        "etc/group",
        "root:x:0:\ntcpdump:x:101:\nnogroup:x:65534:\n",
    )?;
    // ca-certificates' postinst (update-ca-certificates) writes the bundle
    // that TLS libraries read; the package itself ships single files.
    ca_bundle(root)?;
    for mount in [BIN_MOUNT, SCRIPT_MOUNT] {
        let path = root.join(mount.trim_start_matches('/'));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(())
}

/// `/etc/ssl/certs/ca-certificates.crt` from the certificates under
/// `/usr/share/ca-certificates`, in a stable order; none is fine (the
/// bundle is then empty, as on a system without the package).
fn ca_bundle(root: &Path) -> Result<()> {
    let mut certs = Vec::new();
    let mut dirs = vec![root.join("usr/share/ca-certificates")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "crt") {
                certs.push(path);
            }
        }
    }
    certs.sort();
    let mut bundle = String::new();
    for cert in &certs {
        let pem =
            fs::read_to_string(cert).with_context(|| format!("reading {}", cert.display()))?;
        bundle += pem.trim_end();
        bundle.push('\n');
    }
    write(root, "etc/ssl/certs/ca-certificates.crt", &bundle)
}

fn link_at(root: &Path, link: &str, target: &str) -> Result<()> {
    let path = root.join(link);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.symlink_metadata().is_ok() {
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    symlink(target, &path).with_context(|| format!("linking {} to {target}", path.display()))
}

fn write(root: &Path, file: &str, contents: &str) -> Result<()> {
    let path = root.join(file);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch directory under the workspace's target directory.
    fn scratch(name: &str) -> PathBuf {
        let dir = crate::workspace::target_dir()
            .join("xtask-tests")
            .join(format!("{name}-{}", std::process::id()));
        remove_dir_if_any(&dir).unwrap();
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A package as bookworm's are still built (files under /bin and
    /// /lib, not /usr) lands in the usr-merged tree, and the links and
    /// accounts the guests need are in place.
    #[test]
    fn a_package_with_files_in_bin_lands_in_usr_bin() {
        let dir = scratch("guest-root");
        let pkg = dir.join("pkg");
        for sub in [
            "DEBIAN",
            "bin",
            "lib/modules/6.1.0-57-arm64",
            "var/run",
            "usr/share/ca-certificates/mozilla",
        ] {
            fs::create_dir_all(pkg.join(sub)).unwrap();
        }
        fs::write(
            pkg.join("DEBIAN/control"),
            "Package: xlb-probe\nVersion: 1\nArchitecture: arm64\n\
             Maintainer: xlb <xlb@example.invalid>\nDescription: test\n",
        )
        .unwrap();
        fs::write(pkg.join("bin/tool"), "#!/bin/sh\n").unwrap();
        fs::write(pkg.join("lib/modules/6.1.0-57-arm64/m.ko"), "").unwrap();
        for name in ["B", "A"] {
            fs::write(
                pkg.join(format!("usr/share/ca-certificates/mozilla/{name}.crt")),
                format!("-----BEGIN CERTIFICATE-----\n{name}\n-----END CERTIFICATE-----\n"),
            )
            .unwrap();
        }
        let deb = dir.join("probe.deb");
        Cmd::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&pkg)
            .arg(&deb)
            .read()
            .unwrap();

        let root = dir.join("root");
        skeleton(&root).unwrap();
        unpack(&deb, &root).unwrap();
        configure(&root).unwrap();
        assert!(root.join("usr/bin/tool").is_file());
        assert!(root.join("usr/lib/modules/6.1.0-57-arm64/m.ko").is_file());
        for (link, target) in [
            ("bin", "usr/bin"),
            ("lib", "usr/lib"),
            ("var/run", "/run"),
            ("usr/bin/sh", "bash"),
            ("usr/sbin/poweroff", "../bin/busybox"),
        ] {
            assert_eq!(
                fs::read_link(root.join(link)).unwrap(),
                Path::new(target),
                "{link}"
            );
        }
        let bundle = fs::read_to_string(root.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
        assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "{bundle}");
        assert!(bundle.find("\nA\n") < bundle.find("\nB\n"), "{bundle}");
        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(passwd.starts_with("root:x:0:0:") && passwd.contains("\ntcpdump:x:"));
        for mount in [BIN_MOUNT, SCRIPT_MOUNT] {
            assert!(root.join(mount.trim_start_matches('/')).is_dir());
        }
        remove_dir_if_any(&dir).unwrap();
    }

    #[test]
    fn a_missing_deb_is_named() {
        let dir = scratch("guest-root-missing");
        let err = unpack(&dir.join("absent.deb"), &dir).unwrap_err();
        assert!(format!("{err:#}").contains("absent.deb"), "{err:#}");
        remove_dir_if_any(&dir).unwrap();
    }
}
