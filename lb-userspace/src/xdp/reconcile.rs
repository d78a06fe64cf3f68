//! Brings the balancer's maps to a desired state by writing only what
//! differs, in an order that is safe under traffic: new backend entries
//! before the Maglev row that names them, the row before the VIP entry that
//! makes it reachable, and retired backends only once no row names them.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use lb_common::{BACKEND_ACTIVE, Backend, Encap, LAYOUT_VERSION, VipInfo, VipKey};

use super::{
    Maps, Settings,
    ids::IdPool,
    maps::{MapsError, ProgramError},
    slots::{Full, Row, Slots},
};
use crate::{
    desired::{Desired, TableSize},
    maglev::{self, Weighted, addr_bytes},
    vip::Vip,
};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("VIP {0}: no free VIP slot (max_vips {1}); raise dataplane.max_vips")]
    NoVipSlot(Vip, usize),
    #[error(
        "VIP {0}: no free backend entry (max_backends {1}, one entry per VIP and backend); raise dataplane.max_backends"
    )]
    NoBackendSlot(Vip, usize),
    #[error("VIP {0}: {1}")]
    Maglev(Vip, maglev::Error),
    #[error("VIP {0}: its Maglev table of {1} slots does not fit: {2}")]
    NoMaglevRoom(Vip, u32, Full),
    #[error("{count} VIPs left out, the rest applied; the first: {first}")]
    Refused {
        count: usize,
        first: Box<ReconcileError>,
    },
    #[error(
        "VIP {service}: no {family} source address for IPIP (set dataplane.ipip_source_{family})"
    )]
    NoIpipSource { service: Vip, family: &'static str },
}

impl ReconcileError {
    /// The data plane's tables cannot hold the VIP: it alone is refused.
    fn is_capacity(&self) -> bool {
        matches!(
            self,
            Self::NoVipSlot(..) | Self::NoBackendSlot(..) | Self::NoMaglevRoom(..)
        )
    }
}

/// What one reconcile wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub vips_added: usize,
    pub vips_removed: usize,
    pub vips_changed: usize,
    /// Writes to the VIP map (inserts, updates, deletes).
    pub vip_writes: usize,
    /// Writes to the backend array (new, reweighted, retired).
    pub backend_writes: usize,
    /// Maglev rows rewritten.
    pub maglev_rows: usize,
    pub config_writes: usize,
}

impl Report {
    pub fn writes(&self) -> usize {
        self.vip_writes + self.backend_writes + self.maglev_rows + self.config_writes
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct AppliedVip {
    id: u32,
    /// This incarnation's [`Backend::tag`].
    tag: u32,
    encap: Encap,
    /// Where its Maglev table is; `None` until one is written (or when an
    /// adopted entry's row overlapped another's: it is written again).
    row: Option<Row>,
    /// address -> (backend id, weight)
    backends: BTreeMap<IpAddr, (u32, u32)>,
}

/// What the maps hold, mirrored in memory so a reconcile reads nothing.
pub struct Applied {
    /// Sorted like the desired state, so a reconcile is one walk of both.
    vips: BTreeMap<Vip, AppliedVip>,
    vip_ids: IdPool,
    backend_ids: IdPool,
    /// The Maglev array's free runs.
    slots: Slots,
    /// The largest table a VIP gets ([`Settings::maglev_size`]).
    largest_table: u32,
    config: lb_common::Config,
    /// Active backend entries whose VIP is gone (a crash mid-reconcile):
    /// retired by the next reconcile.
    orphans: Vec<u32>,
    /// The next VIP incarnation's tag.
    tags: Tags,
    /// VIPs per VIP-filter bit: a bit is cleared when its last VIP is gone.
    filter_users: HashMap<u32, u32>,
    /// The desired state last applied in full, while the mirror is known
    /// to match it: the next reconcile diffs against it (skipping what the
    /// two versions share) instead of walking every VIP.
    last: Option<Desired>,
}

/// Tags of VIP incarnations ([`Backend::tag`]): consecutive from a random
/// start, so no two in one daemon's life are equal and a tag left in the
/// flow table by an earlier daemon is equal to a new one only by a
/// 1-in-2^32 chance (and then only matters if a backend id is reused too).
struct Tags(u32);

impl Tags {
    fn new() -> Self {
        use std::hash::BuildHasher as _;
        Self(std::collections::hash_map::RandomState::new().hash_one(std::process::id()) as u32)
    }

    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(1);
        if self.0 == 0 {
            self.0 = 1;
        }
        self.0
    }
}

pub fn backend_addr(b: &Backend) -> IpAddr {
    if b.family == lb_common::FAMILY_V4 {
        IpAddr::from([b.addr[0], b.addr[1], b.addr[2], b.addr[3]])
    } else {
        IpAddr::from(b.addr)
    }
}

impl Applied {
    /// Reads what the maps hold (adopted pins) into the mirror.
    pub fn read(maps: &Maps, settings: &Settings) -> Result<Self, MapsError> {
        let (max_vips, max_backends) = (settings.max_vips, settings.max_backends);
        let mut vips = BTreeMap::new();
        let mut vip_ids = IdPool::new(0, max_vips);
        let mut slots = Slots::new(maps.maglev_slots() as u32);
        let mut filter_users = HashMap::new();
        let mut by_id = HashMap::new();
        for entry in maps.vips.iter() {
            let (k, v) = entry.map_err(|source| MapsError::Map {
                name: lb_common::names::VIPS,
                source,
            })?;
            let svc = Vip::from(&k);
            vip_ids.claim(v.vip_id);
            *filter_users.entry(maps.filter.bit(&k.addr)).or_insert(0) += 1;
            by_id.insert(v.vip_id, svc);
            let encap = Encap::from_u8(v.encap).unwrap_or(Encap::Ipip);
            let row = Row {
                start: v.maglev_start,
                size: v.maglev_size,
            };
            vips.insert(
                svc,
                AppliedVip {
                    id: v.vip_id,
                    tag: v.tag,
                    encap,
                    row: slots.claim(row).then_some(row),
                    backends: BTreeMap::new(),
                },
            );
        }
        let mut backend_ids = IdPool::new(1, max_backends);
        let mut orphans = Vec::new();
        for id in 1..max_backends {
            let b = maps.backend(id)?;
            if b.flags & BACKEND_ACTIVE == 0 {
                continue;
            }
            backend_ids.claim(id);
            match by_id.get(&b.vip_id).and_then(|s| vips.get_mut(s)) {
                Some(v) => {
                    v.backends.insert(backend_addr(&b), (id, b.weight));
                }
                None => orphans.push(id),
            }
        }
        Ok(Self {
            vips,
            vip_ids,
            backend_ids,
            slots,
            largest_table: settings.maglev_size,
            config: maps.config()?,
            orphans,
            tags: Tags::new(),
            filter_users,
            last: None,
        })
    }

    pub fn empty(settings: &Settings) -> Self {
        Self {
            vips: BTreeMap::new(),
            vip_ids: IdPool::new(0, settings.max_vips),
            backend_ids: IdPool::new(1, settings.max_backends),
            slots: Slots::new(settings.maglev_slots),
            largest_table: settings.maglev_size,
            config: lb_common::Config::default(),
            orphans: Vec::new(),
            tags: Tags::new(),
            filter_users: HashMap::new(),
            last: None,
        }
    }

    pub fn vip_count(&self) -> usize {
        self.vips.len()
    }

    /// The Maglev table size for `spec`: the same on every node given the
    /// same config, whatever each node's health checks found.
    fn table_size(&self, spec: &crate::desired::ServiceSpec) -> u32 {
        match spec.table {
            TableSize::Fixed(m) => m,
            TableSize::Auto => maglev::table_size(spec.backends.len(), self.largest_table),
            TableSize::ForBackends(n) => maglev::table_size(n as usize, self.largest_table),
        }
    }

    /// Writes the difference between the maps and `desired`. On error the
    /// mirror still matches what was written, so the next call resumes.
    pub fn reconcile(
        &mut self,
        maps: &mut Maps,
        desired: &Desired,
    ) -> Result<Report, ReconcileError> {
        let r = self.apply(maps, desired);
        // The array leaves our resident set until the next reconcile.
        maps.unmap_maglev();
        r
    }

    fn apply(&mut self, maps: &mut Maps, desired: &Desired) -> Result<Report, ReconcileError> {
        // Rows the last reconcile moved away from are free from now.
        self.slots.settle();
        let mut r = Report::default();
        let cfg = lb_common::Config {
            ipip_src_v4: desired
                .ipip_source_v4
                .map(|a| addr_bytes(a.into()))
                .unwrap_or_default(),
            ipip_src_v6: desired
                .ipip_source_v6
                .map(|a| a.octets())
                .unwrap_or_default(),
            layout: LAYOUT_VERSION,
            flags: if desired.services.keys().any(|s| s.port == 0) {
                lb_common::CONFIG_WILDCARDS
            } else {
                0
            },
        };
        // The wildcard flag is raised before a wildcard VIP appears and
        // lowered only after the last one is gone, so none is ever missed.
        let lowering = self.config.flags & lb_common::CONFIG_WILDCARDS != 0
            && cfg.flags & lb_common::CONFIG_WILDCARDS == 0;
        if cfg != self.config && !lowering {
            maps.set_config(&cfg)?;
            self.config = cfg;
            r.config_writes += 1;
        }
        // Until this reconcile completes the mirror may match neither state.
        let last = self.last.take();
        let (gone, todo) = match last {
            Some(prev)
                if prev.ipip_source_v4 == desired.ipip_source_v4
                    && prev.ipip_source_v6 == desired.ipip_source_v6 =>
            {
                changes(&prev, desired)?
            }
            _ => self.differences(desired)?,
        };
        for svc in gone {
            self.remove(maps, &svc, &mut r)?;
        }
        // A VIP the tables cannot hold is left out (its old state, if any,
        // kept), not a stop: the VIPs after it in order still come in.
        let mut refused = Vec::new();
        for svc in todo {
            match self.upsert(maps, &svc, &desired.services[&svc], &mut r) {
                Err(e) if e.is_capacity() => refused.push(e),
                other => other?,
            }
        }
        if cfg != self.config {
            maps.set_config(&cfg)?;
            self.config = cfg;
            r.config_writes += 1;
        }
        while let Some(id) = self.orphans.pop() {
            maps.set_backend(id, &Backend::default())?;
            self.backend_ids.release(id);
            r.backend_writes += 1;
        }
        if !refused.is_empty() {
            // The mirror matches the maps but not `desired`: the next
            // reconcile walks every VIP again, and retries these.
            let count = refused.len();
            return Err(ReconcileError::Refused {
                count,
                first: Box::new(refused.swap_remove(0)),
            });
        }
        self.last = Some(desired.clone());
        Ok(r)
    }

    /// One walk of the mirror and the desired state, both sorted: the VIPs
    /// that are gone, and those that are new or differ. For when there is
    /// no last state to diff against (a start, adopted pins, a failed
    /// apply, a new IPIP source).
    fn differences(&self, desired: &Desired) -> Result<(Vec<Vip>, Vec<Vip>), ReconcileError> {
        let (mut gone, mut todo) = (Vec::new(), Vec::new());
        let mut have = self.vips.iter().peekable();
        for (svc, spec) in &desired.services {
            ipip_source(desired, svc, spec)?;
            while let Some((k, _)) = have.next_if(|(k, _)| *k < svc) {
                gone.push(*k);
            }
            match have.next_if(|(k, _)| *k == svc) {
                Some((_, cur))
                    if cur.encap == spec.encap
                        && same_backends(cur, spec)
                        && cur.row.map(|r| r.size) == Some(self.table_size(spec)) => {}
                _ => todo.push(*svc),
            }
        }
        gone.extend(have.map(|(k, _)| *k));
        Ok((gone, todo))
    }

    fn remove(&mut self, maps: &mut Maps, svc: &Vip, r: &mut Report) -> Result<(), ReconcileError> {
        let Some(v) = self.vips.get(svc).cloned() else {
            return Ok(());
        };
        let key = VipKey::from(*svc);
        maps.remove_vip(&key)?;
        r.vip_writes += 1;
        // The filter bit goes after the VIP, and only with the last VIP
        // whose address has it.
        let bit = maps.filter.bit(&key.addr);
        if let Some(n) = self.filter_users.get_mut(&bit) {
            *n -= 1;
            if *n == 0 {
                self.filter_users.remove(&bit);
                maps.filter.clear(bit);
            }
        }
        r.vips_removed += 1;
        self.vip_ids.release(v.id);
        if let Some(row) = v.row {
            self.slots.release(row);
        }
        self.vips.remove(svc);
        for (id, _) in v.backends.values() {
            maps.set_backend(*id, &Backend::default())?;
            self.backend_ids.release(*id);
            r.backend_writes += 1;
        }
        Ok(())
    }

    fn upsert(
        &mut self,
        maps: &mut Maps,
        svc: &Vip,
        spec: &crate::desired::ServiceSpec,
        r: &mut Report,
    ) -> Result<(), ReconcileError> {
        let is_new = !self.vips.contains_key(svc);
        if is_new {
            let id = self
                .vip_ids
                .alloc()
                .ok_or(ReconcileError::NoVipSlot(*svc, self.vip_ids.capacity()))?;
            let tag = self.tags.next();
            self.vips.insert(
                *svc,
                AppliedVip {
                    id,
                    tag,
                    encap: spec.encap,
                    row: None,
                    backends: BTreeMap::new(),
                },
            );
        }
        let cur = self.vips.get(svc).cloned().expect("inserted above");
        // Ids for new backends first, all or none: a VIP that does not fit
        // must leave no trace in the maps.
        let mut fresh = Vec::new();
        for addr in spec
            .backends
            .keys()
            .filter(|a| !cur.backends.contains_key(a))
        {
            match self.backend_ids.alloc() {
                Some(id) => fresh.push((*addr, id)),
                None => {
                    for (_, id) in fresh {
                        self.backend_ids.release(id);
                    }
                    if is_new {
                        self.vip_ids.release(cur.id);
                        self.vips.remove(svc);
                    }
                    return Err(ReconcileError::NoBackendSlot(
                        *svc,
                        self.backend_ids.capacity() + 1,
                    ));
                }
            }
        }
        // A table of a new size goes into a new row, found before anything
        // is written, like the ids.
        let size = self.table_size(spec);
        let moved = match cur.row {
            Some(row) if row.size == size => None,
            _ => match self.slots.alloc_settling(size) {
                Ok(row) => Some(row),
                Err(full) => {
                    for (_, id) in fresh {
                        self.backend_ids.release(id);
                    }
                    if is_new {
                        self.vip_ids.release(cur.id);
                        self.vips.remove(svc);
                    }
                    return Err(ReconcileError::NoMaglevRoom(*svc, size, full));
                }
            },
        };
        let row = moved.or(cur.row).expect("a row kept or found");
        let fresh: BTreeMap<IpAddr, u32> = fresh.into_iter().collect();
        // New and reweighted backend entries before the row that names them.
        let mut next = BTreeMap::new();
        for (&addr, &weight) in spec.backends.iter() {
            let (id, old) = match cur.backends.get(&addr) {
                Some(&(id, w)) => (id, Some(w)),
                None => (fresh[&addr], None),
            };
            // Every entry carries the VIP's encapsulation: all are rewritten
            // when it changes.
            if old != Some(weight) || cur.encap != spec.encap {
                let entry = Backend {
                    addr: addr_bytes(addr),
                    family: crate::vip::family(addr),
                    flags: BACKEND_ACTIVE,
                    encap: spec.encap as u8,
                    _pad: 0,
                    vip_id: cur.id,
                    weight,
                    tag: cur.tag,
                };
                maps.set_backend(id, &entry)?;
                r.backend_writes += 1;
            }
            next.insert(addr, (id, weight));
        }
        let weighted = |m: &BTreeMap<IpAddr, (u32, u32)>| -> Vec<(IpAddr, u32)> {
            m.iter()
                .filter(|(_, (_, w))| *w > 0)
                .map(|(a, (_, w))| (*a, *w))
                .collect()
        };
        if moved.is_some()
            || weighted(&cur.backends) != weighted(&next)
            || ids_changed(&cur.backends, &next)
        {
            let list: Vec<(u32, Weighted)> = next
                .iter()
                .map(|(&addr, &(id, weight))| (id, Weighted { addr, weight }))
                .collect();
            if let Err(e) = maps.program_maglev(row, &list) {
                // Nothing names the new row yet: it is free again.
                if let Some(row) = moved {
                    self.slots.release(row);
                }
                return Err(match e {
                    ProgramError::Maglev(e) => ReconcileError::Maglev(*svc, e),
                    ProgramError::Maps(e) => ReconcileError::Maps(e),
                });
            }
            r.maglev_rows += 1;
        }
        if is_new || cur.encap != spec.encap || moved.is_some() {
            let key = VipKey::from(*svc);
            if is_new {
                *self
                    .filter_users
                    .entry(maps.filter.bit(&key.addr))
                    .or_insert(0) += 1;
            }
            maps.set_vip(
                &key,
                &VipInfo {
                    vip_id: cur.id,
                    encap: spec.encap as u8,
                    _pad: [0; 3],
                    tag: cur.tag,
                    maglev_start: row.start,
                    maglev_size: row.size,
                },
            )?;
            r.vip_writes += 1;
            // The old row is unnamed from here on; reused only after the
            // next settle.
            if let (Some(_), Some(old)) = (moved, cur.row) {
                self.slots.release(old);
            }
        }
        // Retire backends that left, now that no row names them.
        for (addr, (id, _)) in &cur.backends {
            if !next.contains_key(addr) {
                maps.set_backend(*id, &Backend::default())?;
                self.backend_ids.release(*id);
                r.backend_writes += 1;
            }
        }
        if is_new {
            r.vips_added += 1;
        } else {
            r.vips_changed += 1;
        }
        let v = self.vips.get_mut(svc).expect("present");
        v.encap = spec.encap;
        v.row = Some(row);
        v.backends = next;
        Ok(())
    }
}

/// What changed from `prev` (applied in full) to `desired`: the VIPs gone,
/// and the VIPs new or different. The two are versions of one persistent
/// map, so the diff skips what they share.
fn changes(prev: &Desired, desired: &Desired) -> Result<(Vec<Vip>, Vec<Vip>), ReconcileError> {
    use imbl::ordmap::DiffItem;
    let (mut gone, mut todo) = (Vec::new(), Vec::new());
    for d in prev.services.diff(&desired.services) {
        match d {
            DiffItem::Remove(svc, _) => gone.push(*svc),
            DiffItem::Add(svc, spec)
            | DiffItem::Update {
                new: (svc, spec), ..
            } => {
                ipip_source(desired, svc, spec)?;
                todo.push(*svc);
            }
        }
    }
    Ok((gone, todo))
}

/// An IPIP VIP needs an outer source address of its family.
fn ipip_source(
    desired: &Desired,
    svc: &Vip,
    spec: &crate::desired::ServiceSpec,
) -> Result<(), ReconcileError> {
    if spec.encap != Encap::Ipip {
        return Ok(());
    }
    let have = if svc.address.is_ipv4() {
        desired.ipip_source_v4.is_some()
    } else {
        desired.ipip_source_v6.is_some()
    };
    if have {
        Ok(())
    } else {
        Err(ReconcileError::NoIpipSource {
            service: *svc,
            family: if svc.address.is_ipv4() { "v4" } else { "v6" },
        })
    }
}

fn same_backends(cur: &AppliedVip, spec: &crate::desired::ServiceSpec) -> bool {
    cur.backends.len() == spec.backends.len()
        && cur
            .backends
            .iter()
            .all(|(a, (_, w))| spec.backends.get(a) == Some(w))
}

/// Only weighted backends are in a row; their ids never change for a kept
/// address, so this only matters for rows of adopted, inconsistent state.
fn ids_changed(a: &BTreeMap<IpAddr, (u32, u32)>, b: &BTreeMap<IpAddr, (u32, u32)>) -> bool {
    a.iter()
        .any(|(addr, (id, _))| b.get(addr).is_some_and(|(nid, _)| nid != id))
}
