//! Typed access to the balancer's maps.

use std::ptr::NonNull;

use aya::{
    Ebpf,
    maps::{Array, HashMap, MapData, PerCpuArray},
};
use lb_common::{
    Backend, Config, Counters, FlowKey, FlowValue, IFACES_LOW, Iface, NO_BACKEND, NextHop, Outcome,
    VipInfo, VipKey, names,
};

use super::{
    LoadError,
    mapped::{MappedArray, map_pages},
    slots::Row,
};
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
    #[error("Maglev row of {size} slots from slot {start} is outside the array of {slots} slots")]
    RowOutside { start: u32, size: u32, slots: u64 },
    #[error("mapping XLB_MAGLEV into memory: {0}")]
    Mmap(std::io::Error),
    #[error("counting possible CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("a Maglev table has {got} slots, its row {want}")]
    RowSize { got: usize, want: u32 },
}

/// Why a Maglev table was not written.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error(transparent)]
    Maglev(#[from] maglev::Error),
    #[error(transparent)]
    Maps(#[from] MapsError),
}

fn map_err(name: &'static str) -> impl FnOnce(aya::maps::MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

impl Maps {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
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
            maglev: MaglevRows::new(maglev_map)?,
            filter: VipFilter::new(match ebpf.take_map(names::VIP_FILTER) {
                Some(aya::maps::Map::Array(data)) => data,
                _ => return Err(LoadError::Missing(names::VIP_FILTER)),
            })?,
        })
    }

    /// The maps pinned under `dir` by a running or stopped balancer, for
    /// readers that load no program (`xlb status`).
    pub fn open_pinned(dir: &std::path::Path) -> Result<Self, LoadError> {
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
            maglev: MaglevRows::new(open(dir, names::MAGLEV)?)?,
            filter: VipFilter::new(open(dir, names::VIP_FILTER)?)?,
        })
    }

    /// Slots of the Maglev array: the sum of the VIPs' tables fits in it.
    pub fn maglev_slots(&self) -> u64 {
        self.maglev.slots()
    }

    /// Capacity of the VIP map.
    pub fn max_vips(&self) -> u32 {
        self.vip_stats.len()
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

    /// Writes a Maglev table (backend ids, [`NO_BACKEND`] for none) into
    /// `row`.
    pub fn write_maglev(&mut self, row: Row, table: &[u32]) -> Result<(), MapsError> {
        self.maglev.write(row, table)
    }

    /// The Maglev table of a VIP entry.
    pub fn read_maglev(&self, vip: &VipInfo) -> Result<Vec<u32>, MapsError> {
        self.maglev.read(Row {
            start: vip.maglev_start,
            size: vip.maglev_size,
        })
    }

    /// Unmaps the window the last Maglev reads and writes went through,
    /// so the array leaves the daemon's resident set (after a reconcile).
    pub fn unmap_maglev(&mut self) {
        self.maglev.unmap();
    }

    /// Builds a Maglev table of `row.size` slots from `(backend id,
    /// weighted backend)` and writes it into `row`. Returns the table.
    pub fn program_maglev(
        &mut self,
        row: Row,
        backends: &[(u32, maglev::Weighted)],
    ) -> Result<Vec<u32>, ProgramError> {
        let weighted: Vec<_> = backends.iter().map(|(_, w)| *w).collect();
        let table = maglev::build(&weighted, row.size)?;
        let table: Vec<u32> = table
            .iter()
            .map(|&i| {
                if i == maglev::EMPTY {
                    NO_BACKEND
                } else {
                    backends[i as usize].0
                }
            })
            .collect();
        self.maglev.write(row, &table)?;
        Ok(table)
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

/// The Maglev array (`XLB_MAGLEV`, BPF_F_MMAPABLE): every VIP's table, two
/// u32 slots per 8-byte entry. Tables are written through a window of the
/// array mapped into our memory (plain stores, not one update syscall per
/// slot), and only while they are written: the array is most of the
/// balancer's kernel memory, and mapped whole it would count in the
/// daemon's resident set for as long as it runs.
struct MaglevRows {
    map: MapData,
    /// Entries (two slots each).
    entries: u64,
    window: Option<Window>,
}

/// Pages `[first_page, first_page + pages)` of the array, mapped.
struct Window {
    base: NonNull<u64>,
    /// The first entry mapped.
    first: u64,
    /// Entries mapped.
    len: u64,
    bytes: usize,
}

// SAFETY: the mapping is owned by its `MaglevRows` and only touched through
// `&mut self`.
unsafe impl Send for MaglevRows {}
unsafe impl Sync for MaglevRows {}

const PAGE: u64 = 4096;
/// Entries per page of the array (8 bytes each).
const PAGE_ENTRIES: u64 = PAGE / 8;
/// The smallest window mapped: rows written one after another (a start
/// into empty maps) mostly reuse it.
const WINDOW_PAGES: u64 = 1024;

impl MaglevRows {
    fn new(map: MapData) -> Result<Self, LoadError> {
        let info = map.info().map_err(|source| LoadError::Map {
            name: names::MAGLEV,
            source,
        })?;
        Ok(Self {
            entries: u64::from(info.max_entries()),
            map,
            window: None,
        })
    }

    fn slots(&self) -> u64 {
        self.entries * u64::from(lb_common::MAGLEV_SLOTS_PER_ENTRY)
    }

    fn check(&self, row: Row) -> Result<(), MapsError> {
        if row.size == 0 || u64::from(row.start) + u64::from(row.size) > self.slots() {
            return Err(MapsError::RowOutside {
                start: row.start,
                size: row.size,
                slots: self.slots(),
            });
        }
        Ok(())
    }

    /// The window holding entries `first..=last`, mapped if it is not.
    fn window(&mut self, first: u64, last: u64) -> Result<&Window, MapsError> {
        let mapped = self
            .window
            .as_ref()
            .is_some_and(|w| w.first <= first && last < w.first + w.len);
        if !mapped {
            self.unmap();
            let first_page = first / PAGE_ENTRIES;
            let total_pages = (self.entries * 8).div_ceil(PAGE);
            let pages = (last / PAGE_ENTRIES - first_page + 1)
                .max(WINDOW_PAGES)
                .min(total_pages - first_page);
            let bytes = (pages * PAGE) as usize;
            let base = map_pages(
                &self.map,
                first_page * PAGE,
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
            )
            .map_err(MapsError::Mmap)?;
            self.window = Some(Window {
                base,
                first: first_page * PAGE_ENTRIES,
                len: (bytes as u64 / 8).min(self.entries - first_page * PAGE_ENTRIES),
                bytes,
            });
        }
        Ok(self.window.as_ref().expect("mapped above"))
    }

    /// Drops the window: the array leaves our resident set.
    fn unmap(&mut self) {
        if let Some(w) = self.window.take() {
            // SAFETY: unmapping exactly what `window` mapped.
            unsafe { libc::munmap(w.base.as_ptr().cast(), w.bytes) };
        }
    }

    /// Writes `row`'s slots. Entries it shares with a neighbouring row
    /// keep the neighbour's half; every entry is one aligned 8-byte store,
    /// so the program sees each old or new, never torn.
    fn write(&mut self, row: Row, values: &[u32]) -> Result<(), MapsError> {
        if values.len() != row.size as usize {
            return Err(MapsError::RowSize {
                got: values.len(),
                want: row.size,
            });
        }
        self.check(row)?;
        let (start, end) = (
            u64::from(row.start),
            u64::from(row.start) + u64::from(row.size),
        );
        let w = self.window(start / 2, (end - 1) / 2)?;
        for entry in start / 2..=(end - 1) / 2 {
            // SAFETY: `window` mapped every entry of the row.
            let p = unsafe { w.base.as_ptr().add((entry - w.first) as usize) };
            // SAFETY: as above.
            let old = unsafe { std::ptr::read_volatile(p) };
            let half = |slot: u64, old: u32| {
                if (start..end).contains(&slot) {
                    values[(slot - start) as usize]
                } else {
                    old
                }
            };
            let lo = half(entry * 2, old as u32);
            let hi = half(entry * 2 + 1, (old >> 32) as u32);
            // SAFETY: as above.
            unsafe { std::ptr::write_volatile(p, u64::from(lo) | u64::from(hi) << 32) };
        }
        Ok(())
    }

    /// Reads `row` through a mapping of its own, so readers (status,
    /// tests) need no `&mut` and leave no window behind.
    fn read(&self, row: Row) -> Result<Vec<u32>, MapsError> {
        self.check(row)?;
        let (start, end) = (
            u64::from(row.start),
            u64::from(row.start) + u64::from(row.size),
        );
        let first_page = start / 2 / PAGE_ENTRIES;
        let bytes = (((end - 1) / 2 / PAGE_ENTRIES - first_page + 1) * PAGE) as usize;
        // Read-only, unmapped below.
        let base = map_pages(&self.map, first_page * PAGE, bytes, libc::PROT_READ)
            .map_err(MapsError::Mmap)?
            .as_ptr();
        let slots = (start..end)
            .map(|slot| {
                let entry = (slot / 2 - first_page * PAGE_ENTRIES) as usize;
                // SAFETY: inside the mapping made above.
                let v = unsafe { std::ptr::read_volatile(base.add(entry)) };
                (v >> (32 * (slot % 2))) as u32
            })
            .collect();
        // SAFETY: unmapping exactly what was mapped above.
        unsafe { libc::munmap(base.cast(), bytes) };
        Ok(slots)
    }
}

impl Drop for MaglevRows {
    fn drop(&mut self) {
        self.unmap();
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
