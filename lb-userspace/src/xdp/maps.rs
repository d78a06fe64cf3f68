//! Typed access to the balancer's maps.

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray},
};
use lb_common::{
    Backend, Config, Counters, FlowKey, FlowValue, IFACES_LOW, Iface, NO_BACKEND, NextHop, Outcome,
    VipInfo, VipKey, names,
};

use super::{LoadError, mapped::MappedArray};
use crate::maglev;

/// The balancer's maps, taken out of the loaded object.
pub struct Maps {
    pub vips: HashMap<MapData, VipKey, VipInfo>,
    pub backends: Array<MapData, Backend>,
    pub flows: HashMap<MapData, FlowKey, FlowValue>,
    pub config: Array<MapData, Config>,
    pub stats: PerCpuArray<MapData, u64>,
    pub vip_stats: PerCpuArray<MapData, Counters>,
    pub backend_stats: PerCpuArray<MapData, Counters>,
    /// The program's per-CPU route cache; emptied for a backend id whenever
    /// that id is (re)written, so a reused id never inherits a stale route.
    pub nexthops: PerCpuArray<MapData, NextHop>,
    /// Interfaces the program runs on (ifindex -> MAC): frames to other
    /// MACs, or arriving on interfaces absent here, are not balanced.
    pub ifaces: HashMap<MapData, u32, Iface>,
    /// The same, by index, for ifindexes below [`IFACES_LOW`].
    pub ifaces_low: Array<MapData, Iface>,
    maglev: MaglevRows,
    /// Set before a VIP is written, so the program never misses one.
    pub filter: VipFilter,
    flows_capacity: u32,
    /// Possible CPUs (the length of every per-CPU value), read once.
    cpus: usize,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoadError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoadError::Missing(name))?;
    T::try_from(map).map_err(|source| LoadError::Map { name, source })
}

#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("VIP id {vip_id} is outside the Maglev array (max_vips {max_vips})")]
    VipIdOutOfRange { vip_id: u32, max_vips: u32 },
    #[error("counting possible CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("a Maglev row has {got} slots, the table size is {want}")]
    RowSize { got: usize, want: u32 },
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf, maglev_size: u32) -> Result<Self, LoadError> {
        let flows = match ebpf.take_map(names::FLOWS) {
            Some(aya::maps::Map::LruHashMap(data)) => data,
            _ => return Err(LoadError::Missing(names::FLOWS)),
        };
        let flows_capacity = flows
            .info()
            .map_err(|source| LoadError::Map {
                name: names::FLOWS,
                source,
            })?
            .max_entries();
        let maglev_map = match ebpf.take_map(names::MAGLEV) {
            Some(aya::maps::Map::Array(data)) => data,
            _ => return Err(LoadError::Missing(names::MAGLEV)),
        };
        Ok(Self {
            vips: take(ebpf, names::VIPS)?,
            backends: take(ebpf, names::BACKENDS)?,
            flows: HashMap::try_from(aya::maps::Map::LruHashMap(flows)).map_err(|source| {
                LoadError::Map {
                    name: names::FLOWS,
                    source,
                }
            })?,
            flows_capacity,
            cpus: possible_cpus()?,
            config: take(ebpf, names::CONFIG)?,
            stats: take(ebpf, names::STATS)?,
            vip_stats: take(ebpf, names::VIP_STATS)?,
            backend_stats: take(ebpf, names::BACKEND_STATS)?,
            nexthops: take(ebpf, names::NEXTHOPS)?,
            ifaces: take(ebpf, names::IFACES)?,
            ifaces_low: take(ebpf, names::IFACES_LOW)?,
            maglev: MaglevRows::new(maglev_map, maglev_size)?,
            filter: VipFilter::new(match ebpf.take_map(names::VIP_FILTER) {
                Some(aya::maps::Map::Array(data)) => data,
                _ => return Err(LoadError::Missing(names::VIP_FILTER)),
            })?,
        })
    }

    /// The maps pinned under `dir` by a running or stopped balancer, for
    /// readers that load no program (`xlb status`).
    pub fn open_pinned(dir: &std::path::Path, maglev_size: u32) -> Result<Self, LoadError> {
        fn open(dir: &std::path::Path, name: &'static str) -> Result<MapData, LoadError> {
            MapData::from_pin(dir.join(name)).map_err(|source| LoadError::Map { name, source })
        }
        fn typed<T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>>(
            dir: &std::path::Path,
            name: &'static str,
            wrap: fn(MapData) -> aya::maps::Map,
        ) -> Result<T, LoadError> {
            T::try_from(wrap(open(dir, name)?)).map_err(|source| LoadError::Map { name, source })
        }
        use aya::maps::Map as M;
        Ok(Self {
            vips: typed(dir, names::VIPS, M::HashMap)?,
            backends: typed(dir, names::BACKENDS, M::Array)?,
            flows_capacity: open(dir, names::FLOWS)?
                .info()
                .map_err(|source| LoadError::Map {
                    name: names::FLOWS,
                    source,
                })?
                .max_entries(),
            flows: typed(dir, names::FLOWS, M::LruHashMap)?,
            cpus: possible_cpus()?,
            config: typed(dir, names::CONFIG, M::Array)?,
            stats: typed(dir, names::STATS, M::PerCpuArray)?,
            vip_stats: typed(dir, names::VIP_STATS, M::PerCpuArray)?,
            backend_stats: typed(dir, names::BACKEND_STATS, M::PerCpuArray)?,
            nexthops: typed(dir, names::NEXTHOPS, M::PerCpuArray)?,
            ifaces: typed(dir, names::IFACES, M::HashMap)?,
            ifaces_low: typed(dir, names::IFACES_LOW, M::Array)?,
            maglev: MaglevRows::new(open(dir, names::MAGLEV)?, maglev_size)?,
            filter: VipFilter::new(open(dir, names::VIP_FILTER)?)?,
        })
    }

    pub fn maglev_size(&self) -> u32 {
        self.maglev.size
    }

    /// Capacity of the VIP map (Maglev rows).
    pub fn max_vips(&self) -> u32 {
        (self.maglev.slots / self.maglev.size as usize) as u32
    }

    pub fn flows_capacity(&self) -> u32 {
        self.flows_capacity
    }

    pub fn max_backends(&self) -> u32 {
        self.backends.len()
    }

    pub fn backend(&self, id: u32) -> Result<Backend, MapsError> {
        self.backends.get(&id, 0).map_err(map_err(names::BACKENDS))
    }

    pub fn config(&self) -> Result<Config, MapsError> {
        self.config.get(&0, 0).map_err(map_err(names::CONFIG))
    }

    /// Entries in the flow table (walks its keys).
    pub fn flow_entries(&self) -> u64 {
        self.flows.keys().filter(Result::is_ok).count() as u64
    }

    pub fn set_config(&mut self, cfg: &Config) -> Result<(), MapsError> {
        self.config.set(0, cfg, 0).map_err(map_err(names::CONFIG))
    }

    pub fn set_backend(&mut self, id: u32, b: &Backend) -> Result<(), MapsError> {
        self.backends
            .set(id, b, 0)
            .map_err(map_err(names::BACKENDS))?;
        self.forget_route(id)
    }

    /// Empties every CPU's cached route to backend `id`.
    pub fn forget_route(&mut self, id: u32) -> Result<(), MapsError> {
        let empty = aya::maps::PerCpuValues::try_from(vec![NextHop::default(); self.cpus])
            .map_err(MapsError::Cpus)?;
        self.nexthops
            .set(id, empty, 0)
            .map_err(map_err(names::NEXTHOPS))
    }

    /// Writes a VIP, its filter bit first so no packet misses it.
    pub fn set_vip(&mut self, key: &VipKey, info: &VipInfo) -> Result<(), MapsError> {
        let bit = self.filter.bit(&key.addr);
        self.filter.set(bit);
        self.vips.insert(key, info, 0).map_err(map_err(names::VIPS))
    }

    pub fn remove_vip(&mut self, key: &VipKey) -> Result<(), MapsError> {
        self.vips.remove(key).map_err(map_err(names::VIPS))
    }

    /// Writes VIP `vip_id`'s Maglev row (backend ids, [`NO_BACKEND`] for none).
    pub fn write_maglev(&mut self, vip_id: u32, row: &[u32]) -> Result<(), MapsError> {
        self.maglev.write(vip_id, row)
    }

    pub fn read_maglev(&self, vip_id: u32) -> Result<Vec<u32>, MapsError> {
        self.maglev.read(vip_id)
    }

    /// Builds the VIP's Maglev table from `(backend id, weighted backend)`
    /// and writes it. Returns the row written.
    pub fn program_maglev(
        &mut self,
        vip_id: u32,
        backends: &[(u32, maglev::Weighted)],
    ) -> Result<Vec<u32>, crate::maglev::Error> {
        let weighted: Vec<_> = backends.iter().map(|(_, w)| *w).collect();
        let table = maglev::build(&weighted, self.maglev.size)?;
        let row: Vec<u32> = table
            .iter()
            .map(|&i| {
                if i == maglev::EMPTY {
                    NO_BACKEND
                } else {
                    backends[i as usize].0
                }
            })
            .collect();
        self.maglev
            .write(vip_id, &row)
            .expect("row built with the map's own size");
        Ok(row)
    }

    /// Lets the program balance frames for `mac` arriving on `ifindex`.
    pub fn set_iface(&mut self, ifindex: u32, mac: [u8; 6]) -> Result<(), MapsError> {
        let v = Iface {
            mac,
            present: 1,
            _pad: 0,
        };
        if ifindex < IFACES_LOW {
            return self
                .ifaces_low
                .set(ifindex, v, 0)
                .map_err(map_err(names::IFACES_LOW));
        }
        self.ifaces
            .insert(ifindex, v, 0)
            .map_err(map_err(names::IFACES))
    }

    /// Forgets every interface but `keep` (ifindexes), so an interface the
    /// program left is not balanced on should it run there again unasked.
    pub fn retain_ifaces(&mut self, keep: &[u32]) -> Result<(), MapsError> {
        for i in 0..IFACES_LOW {
            if keep.contains(&i) {
                continue;
            }
            let old = self
                .ifaces_low
                .get(&i, 0)
                .map_err(map_err(names::IFACES_LOW))?;
            if old.present != 0 {
                self.ifaces_low
                    .set(i, Iface::default(), 0)
                    .map_err(map_err(names::IFACES_LOW))?;
            }
        }
        let stale: Vec<u32> = self
            .ifaces
            .keys()
            .filter_map(Result::ok)
            .filter(|i| !keep.contains(i))
            .collect();
        for i in stale {
            match self.ifaces.remove(&i) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(names::IFACES)(e)),
            }
        }
        Ok(())
    }

    /// Global outcome counters, summed over CPUs, indexed by [`Outcome`].
    pub fn outcomes(&self) -> Result<Vec<u64>, MapsError> {
        (0..Outcome::COUNT)
            .map(|i| {
                let v = self.stats.get(&i, 0).map_err(map_err(names::STATS))?;
                Ok(v.iter().sum())
            })
            .collect()
    }

    pub fn outcome(&self, o: Outcome) -> Result<u64, MapsError> {
        let v = self
            .stats
            .get(&(o as u32), 0)
            .map_err(map_err(names::STATS))?;
        Ok(v.iter().sum())
    }

    pub fn vip_counters(&self, vip_id: u32) -> Result<Counters, MapsError> {
        sum(&self.vip_stats, vip_id).map_err(map_err(names::VIP_STATS))
    }

    pub fn backend_counters(&self, id: u32) -> Result<Counters, MapsError> {
        sum(&self.backend_stats, id).map_err(map_err(names::BACKEND_STATS))
    }
}

fn possible_cpus() -> Result<usize, LoadError> {
    aya::util::nr_cpus().map_err(|(_, e)| LoadError::Cpus(e))
}

fn sum(map: &PerCpuArray<MapData, Counters>, i: u32) -> Result<Counters, aya::maps::MapError> {
    let v = map.get(&i, 0)?;
    Ok(v.iter().fold(Counters::default(), |a, c| Counters {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    }))
}

/// The Maglev array, mapped into our memory (BPF_F_MMAPABLE): a row is one
/// pass of stores, not M update syscalls. A u32 slot occupies 8 bytes, its
/// value in the low half (little-endian).
struct MaglevRows {
    array: MappedArray,
    slots: usize,
    size: u32,
}

impl MaglevRows {
    fn new(map: MapData, size: u32) -> Result<Self, LoadError> {
        let array = MappedArray::new(map, names::MAGLEV)?;
        Ok(Self {
            slots: array.len,
            array,
            size,
        })
    }

    fn row(&self, vip_id: u32) -> Result<usize, MapsError> {
        let start = vip_id as usize * self.size as usize;
        if start + self.size as usize > self.slots {
            return Err(MapsError::VipIdOutOfRange {
                vip_id,
                max_vips: (self.slots / self.size as usize) as u32,
            });
        }
        Ok(start)
    }

    fn write(&mut self, vip_id: u32, row: &[u32]) -> Result<(), MapsError> {
        if row.len() != self.size as usize {
            return Err(MapsError::RowSize {
                got: row.len(),
                want: self.size,
            });
        }
        let start = self.row(vip_id)?;
        for (i, v) in row.iter().enumerate() {
            self.array.set(start + i, u64::from(*v));
        }
        Ok(())
    }

    fn read(&self, vip_id: u32) -> Result<Vec<u32>, MapsError> {
        let start = self.row(vip_id)?;
        Ok((0..self.size as usize)
            .map(|i| self.array.get(start + i) as u32)
            .collect())
    }
}

/// The VIP filter (`XLB_VIP_FILTER`), mapped into our memory: one bit per
/// `vip_filter_hash(address) >> shift`, set while some VIP has an address
/// with that bit.
pub struct VipFilter {
    array: MappedArray,
    shift: u32,
}

impl VipFilter {
    fn new(map: MapData) -> Result<Self, LoadError> {
        let array = MappedArray::new(map, names::VIP_FILTER)?;
        let bits = (array.len * 64) as u64;
        // The loader makes it a power of two of 2^16 bits or more.
        let shift = 32 - bits.trailing_zeros().min(32);
        Ok(Self { array, shift })
    }

    /// The bit of `addr` (16-byte form).
    pub fn bit(&self, addr: &[u8; 16]) -> u32 {
        lb_common::hash::vip_filter_hash(addr) >> self.shift
    }

    pub fn set(&mut self, bit: u32) {
        let (w, m) = (bit as usize / 64, 1u64 << (bit % 64));
        let old = self.array.get(w);
        self.array.set(w, old | m);
    }

    pub fn clear(&mut self, bit: u32) {
        let (w, m) = (bit as usize / 64, 1u64 << (bit % 64));
        let old = self.array.get(w);
        self.array.set(w, old & !m);
    }

    pub fn is_set(&self, bit: u32) -> bool {
        self.array.get(bit as usize / 64) & (1u64 << (bit % 64)) != 0
    }
}
