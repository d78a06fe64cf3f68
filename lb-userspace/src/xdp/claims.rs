//! The addresses this node claims on its links (`XLB_OWNED`) and the
//! heartbeat that gates every claim (`XLB_LIVENESS`): the program answers
//! ARP and neighbour solicitations for an owned address only while the
//! heartbeat is younger than its bound. Held by the announcer, the one
//! writer of both maps.

use std::{collections::BTreeSet, net::IpAddr, path::Path, time::Duration};

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData},
};
use lb_common::{FAMILY_V4, FAMILY_V6, Liveness, Owned, OwnedKey, names};

use super::LoadError;

pub struct Claims {
    owned: HashMap<MapData, OwnedKey, Owned>,
    liveness: Array<MapData, Liveness>,
}

#[derive(Debug, thiserror::Error)]
#[error("map {name}: {source}")]
pub struct ClaimsError {
    name: &'static str,
    source: aya::maps::MapError,
}

fn err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> ClaimsError {
    move |source| ClaimsError { name, source }
}

/// The key of an address, in the layout every key of the program uses.
pub fn key(a: IpAddr) -> OwnedKey {
    let mut k = OwnedKey::default();
    match a {
        IpAddr::V4(v4) => {
            k.addr[..4].copy_from_slice(&v4.octets());
            k.family = FAMILY_V4;
        }
        IpAddr::V6(v6) => {
            k.addr = v6.octets();
            k.family = FAMILY_V6;
        }
    }
    k
}

fn address(k: &OwnedKey) -> Option<IpAddr> {
    match k.family {
        FAMILY_V4 => Some(IpAddr::from(<[u8; 4]>::try_from(&k.addr[..4]).ok()?)),
        FAMILY_V6 => Some(IpAddr::from(k.addr)),
        _ => None,
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of the program's
/// `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Claims {
    /// The maps of a loaded balancer (taken out of it: one owner).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        fn one<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<T, LoadError> {
            let map = ebpf.take_map(name).ok_or(LoadError::Missing(name))?;
            T::try_from(map).map_err(|source| LoadError::Map { name, source })
        }
        Ok(Self {
            owned: one(ebpf, names::OWNED)?,
            liveness: one(ebpf, names::LIVENESS)?,
        })
    }

    /// The maps pinned under `dir` by a running balancer.
    pub fn open_pinned(dir: &Path) -> Result<Self, LoadError> {
        fn open(dir: &Path, name: &'static str) -> Result<MapData, LoadError> {
            MapData::from_pin(dir.join(name)).map_err(|source| LoadError::Map { name, source })
        }
        let owned = aya::maps::Map::HashMap(open(dir, names::OWNED)?);
        let liveness = aya::maps::Map::Array(open(dir, names::LIVENESS)?);
        Ok(Self {
            owned: HashMap::try_from(owned).map_err(|source| LoadError::Map {
                name: names::OWNED,
                source,
            })?,
            liveness: Array::try_from(liveness).map_err(|source| LoadError::Map {
                name: names::LIVENESS,
                source,
            })?,
        })
    }

    /// Claims `a` on interface `ifindex` (0: every interface the balancer
    /// runs on).
    pub fn claim(&mut self, a: IpAddr, ifindex: u32) -> Result<(), ClaimsError> {
        let v = Owned { ifindex, _pad: 0 };
        self.owned.insert(key(a), v, 0).map_err(err(names::OWNED))
    }

    /// Stops claiming `a`; not claimed is no error.
    pub fn release(&mut self, a: IpAddr) -> Result<(), ClaimsError> {
        match self.owned.remove(&key(a)) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                Ok(())
            }
            Err(e) => Err(err(names::OWNED)(e)),
        }
    }

    /// The claimed addresses, as the map holds them.
    pub fn claimed(&self) -> BTreeSet<IpAddr> {
        self.owned
            .keys()
            .filter_map(Result::ok)
            .filter_map(|k| address(&k))
            .collect()
    }

    /// The heartbeat: the program answers for `bound` from now.
    pub fn beat(&mut self, bound: Duration) -> Result<(), ClaimsError> {
        self.set_liveness(Liveness {
            stamp_ns: monotonic_ns(),
            bound_ns: bound.as_nanos().min(u128::from(u64::MAX)) as u64,
        })
    }

    /// Closes the gate at once: nothing owned is answered any more.
    pub fn silence(&mut self) -> Result<(), ClaimsError> {
        self.set_liveness(Liveness::default())
    }

    pub fn liveness(&self) -> Result<Liveness, ClaimsError> {
        self.liveness.get(&0, 0).map_err(err(names::LIVENESS))
    }

    pub fn set_liveness(&mut self, l: Liveness) -> Result<(), ClaimsError> {
        self.liveness.set(0, l, 0).map_err(err(names::LIVENESS))
    }
}
