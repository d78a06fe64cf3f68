//! The backend-side decapsulator: loads `xlb-decap` and keeps its VIP set.

use std::net::IpAddr;

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuArray},
    programs::Xdp,
};
use lb_common::{DecapKey, names, stats::DecapOutcome};

use super::{
    LoadError,
    loader::{DECAP_PROGRAM, load_simple},
    objects,
};
use crate::maglev::addr_bytes;

pub struct Decapsulator {
    pub ebpf: Ebpf,
    vips: HashMap<MapData, DecapKey, u8>,
    stats: PerCpuArray<MapData, u64>,
}

fn key(addr: IpAddr) -> DecapKey {
    DecapKey {
        addr: addr_bytes(addr),
        family: if addr.is_ipv4() {
            lb_common::FAMILY_V4
        } else {
            lb_common::FAMILY_V6
        },
        _pad: [0; 3],
    }
}

impl Decapsulator {
    pub fn load() -> Result<Self, LoadError> {
        let mut ebpf = load_simple(objects::DECAP, DECAP_PROGRAM)?;
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(LoadError::Missing(name))
        };
        let vips = take(&mut ebpf, names::DECAP_VIPS)?;
        let stats = take(&mut ebpf, names::DECAP_STATS)?;
        Ok(Self {
            vips: HashMap::try_from(vips).map_err(|source| LoadError::Map {
                name: names::DECAP_VIPS,
                source,
            })?,
            stats: PerCpuArray::try_from(stats).map_err(|source| LoadError::Map {
                name: names::DECAP_STATS,
                source,
            })?,
            ebpf,
        })
    }

    pub fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(DECAP_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Decapsulator::load")
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(DECAP_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Decapsulator::load")
    }

    /// Accepts encapsulated packets whose inner destination is `vip`.
    pub fn add_vip(&mut self, vip: IpAddr) -> Result<(), aya::maps::MapError> {
        self.vips.insert(key(vip), 1, 0)
    }

    pub fn remove_vip(&mut self, vip: IpAddr) -> Result<(), aya::maps::MapError> {
        self.vips.remove(&key(vip))
    }

    /// Packets per [`DecapOutcome`], summed over CPUs.
    pub fn count(&self, outcome: DecapOutcome) -> Result<u64, aya::maps::MapError> {
        Ok(self.stats.get(&(outcome as u32), 0)?.iter().sum())
    }
}
