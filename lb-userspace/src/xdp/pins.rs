//! The pin directory: what a running (or stopped) balancer leaves on bpffs,
//! and whether a new daemon may adopt it.
//!
//! ```text
//! <pin_path>/XLB_*           maps (flows, VIPs, backends, Maglev, counters, ...)
//! <pin_path>/prog            the balancer program currently attached
//! <pin_path>/links/<if>@<mode>  one bpf_link per interface (mode: native|generic);
//!                            it keeps the program attached while no daemon runs
//! ```

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::maps::MapData;
use lb_common::{
    Backend, Config, Counters, FlowKey, FlowValue, Iface, LAYOUT_VERSION, Liveness, NextHop, Owned,
    OwnedKey, VipInfo, VipKey, names,
};

use super::{Settings, loader::PINNED};

pub struct PinDir {
    pub root: PathBuf,
}

/// One attached interface, from its link pin's name.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LinkPin {
    pub iface: String,
    /// "native" or "generic".
    pub mode: String,
    #[serde(skip)]
    pub path: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn prog(&self) -> PathBuf {
        self.root.join("prog")
    }

    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, iface: &str, mode: &str) -> PathBuf {
        self.links_dir().join(format!("{iface}@{mode}"))
    }

    pub fn has_maps(&self) -> bool {
        self.root.join(names::VIPS).exists()
    }

    pub fn links(&self) -> Vec<LinkPin> {
        let Ok(dir) = fs::read_dir(self.links_dir()) else {
            return Vec::new();
        };
        let mut v: Vec<LinkPin> = dir
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let (iface, mode) = name.split_once('@')?;
                Some(LinkPin {
                    iface: iface.into(),
                    mode: mode.into(),
                    path: e.path(),
                })
            })
            .collect();
        v.sort_by(|a, b| a.iface.cmp(&b.iface));
        v
    }

    /// Why the pinned maps cannot be adopted by this daemon with these
    /// settings, if they cannot. Every pinned map must have the type, key
    /// and value sizes and capacity this build would create, and the
    /// config map must carry this build's layout version.
    pub fn incompatibility(&self, s: &Settings) -> Option<String> {
        use aya::maps::MapType as T;
        let expect: [(&str, T, usize, usize, u32); 15] = [
            (
                names::IFACES_LOW,
                T::Array,
                4,
                size_of::<Iface>(),
                lb_common::IFACES_LOW,
            ),
            (names::ROUTE_EPOCH, T::Array, 4, 8, 1),
            (names::VIP_FILTER, T::Array, 4, 8, s.filter_bits() / 64),
            (
                names::VIPS,
                T::Hash,
                size_of::<VipKey>(),
                size_of::<VipInfo>(),
                s.max_vips,
            ),
            (
                names::BACKENDS,
                T::Array,
                4,
                size_of::<Backend>(),
                s.max_backends,
            ),
            (
                names::MAGLEV,
                T::Array,
                4,
                8,
                s.maglev_slots.div_ceil(lb_common::MAGLEV_SLOTS_PER_ENTRY),
            ),
            (
                names::FLOWS,
                T::LruHash,
                size_of::<FlowKey>(),
                size_of::<FlowValue>(),
                s.flow_table_size,
            ),
            (names::CONFIG, T::Array, 4, size_of::<Config>(), 1),
            (
                names::STATS,
                T::PerCpuArray,
                4,
                8,
                lb_common::Outcome::COUNT,
            ),
            (
                names::VIP_STATS,
                T::PerCpuArray,
                4,
                size_of::<Counters>(),
                s.max_vips,
            ),
            (
                names::BACKEND_STATS,
                T::PerCpuArray,
                4,
                size_of::<Counters>(),
                s.max_backends,
            ),
            (
                names::NEXTHOPS,
                T::PerCpuArray,
                4,
                size_of::<NextHop>(),
                s.max_backends,
            ),
            (
                names::IFACES,
                T::Hash,
                4,
                size_of::<Iface>(),
                lb_common::DEFAULT_MAX_IFACES,
            ),
            (
                names::OWNED,
                T::Hash,
                size_of::<OwnedKey>(),
                size_of::<Owned>(),
                s.max_vips,
            ),
            (names::LIVENESS, T::Array, 4, size_of::<Liveness>(), 1),
        ];
        debug_assert_eq!(expect.len(), PINNED.len());
        for (name, ty, key, value, max) in expect {
            let path = self.root.join(name);
            if !path.exists() {
                return Some(format!("{name} is missing"));
            }
            let info = match MapData::from_pin(&path).and_then(|m| m.info()) {
                Ok(i) => i,
                Err(e) => return Some(format!("{name} cannot be opened: {e}")),
            };
            let got_ty = info.map_type().ok();
            let (k, v, m) = (
                info.key_size() as usize,
                info.value_size() as usize,
                info.max_entries(),
            );
            if got_ty != Some(ty) || k != key || v != value || m != max {
                let got =
                    got_ty.map_or_else(|| "an unknown map type".to_string(), |t| format!("{t:?}"));
                return Some(format!(
                    "{name} is {got} key {k} value {v} max {m}, this build wants {ty:?} key {key} value {value} max {max}"
                ));
            }
        }
        let cfg = MapData::from_pin(self.root.join(names::CONFIG))
            .ok()
            .and_then(|m| aya::maps::Array::<_, Config>::try_from(aya::maps::Map::Array(m)).ok())
            .and_then(|a| a.get(&0, 0).ok());
        match cfg {
            Some(c) if c.layout == LAYOUT_VERSION || c.layout == 0 => None,
            Some(c) => Some(format!(
                "maps were written by layout version {}, this build is {LAYOUT_VERSION}",
                c.layout
            )),
            None => Some(format!("{} cannot be read", names::CONFIG)),
        }
    }

    /// Removes the maps and the program pin; links too when `links` (which
    /// detaches the program from every interface).
    pub fn remove(&self, links: bool) -> std::io::Result<()> {
        for name in PINNED {
            remove_if_exists(&self.root.join(name))?;
        }
        remove_if_exists(&self.prog())?;
        if links {
            for l in self.links() {
                l.detach()?;
            }
            let _ = fs::remove_dir(self.links_dir());
            let _ = fs::remove_dir(&self.root);
        }
        Ok(())
    }
}

impl LinkPin {
    /// Detaches the link from its interface, then removes the pin.
    ///
    /// Removing the pin alone detaches too, but later: bpffs drops its
    /// reference after an RCU grace period and the link is released from a
    /// work queue, so the interface can still run the program when the
    /// caller reports it detached. `BPF_LINK_DETACH` (Linux 5.9) takes the
    /// program off the interface before it returns.
    pub fn detach(&self) -> std::io::Result<()> {
        match link_detach(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            // A kernel without BPF_LINK_DETACH: unpinning still detaches, later.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
        remove_if_exists(&self.path)
    }
}

/// `BPF_OBJ_GET` on the pin, then `BPF_LINK_DETACH` on the descriptor.
fn link_detach(pin: &Path) -> std::io::Result<()> {
    use std::os::{
        fd::{FromRawFd, OwnedFd},
        unix::ffi::OsStrExt,
    };
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    #[repr(C)]
    struct LinkDetach {
        link_fd: u32,
    }
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let get = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
    };
    // SAFETY: `ObjGet` is the obj_get member of `union bpf_attr`; its
    // pathname points at a NUL-terminated string that outlives the call.
    let fd = unsafe { bpf(BPF_OBJ_GET, &get)? };
    // SAFETY: a successful BPF_OBJ_GET returns a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let detach = LinkDetach {
        link_fd: std::os::fd::AsRawFd::as_raw_fd(&fd) as u32,
    };
    // SAFETY: `LinkDetach` is the link_detach member of `union bpf_attr`.
    unsafe { bpf(BPF_LINK_DETACH, &detach)? };
    Ok(())
}

/// bpf(2): `cmd` with `attr`.
///
/// # Safety
/// `T` must be `repr(C)` and lay out the prefix of `union bpf_attr` that
/// `cmd` reads, and any pointer in it must be valid for the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &T) -> std::io::Result<libc::c_long> {
    // SAFETY: the kernel reads `size_of::<T>()` bytes of `attr`, which the
    // caller vouches for.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *const T,
            size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

fn remove_if_exists(p: &Path) -> std::io::Result<()> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
