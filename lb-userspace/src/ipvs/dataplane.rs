//! The IPVS data plane as the daemon drives it: diff the desired state
//! against what the kernel reports, apply only the difference, undo it all
//! when the kernel refuses a step.

use crate::vip::Vip;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use super::{
    Ipvs, IpvsError,
    ownership::Ownership,
    plan::{self, Have, Op},
    sysctl,
    vip_routes::VipRoutes,
};
use crate::{
    dataplane::{Dataplane, DataplaneError},
    desired::Desired,
    metrics::{BackendSample, Snapshot, VipSample},
    xdp::reconcile::Report,
};

pub struct IpvsDataplane {
    ipvs: Ipvs,
    routes: VipRoutes,
    owned: Ownership,
}

impl IpvsDataplane {
    /// Connects to IPVS, sets the director sysctls, and reads which
    /// services earlier runs created (from `state_dir`).
    pub fn start(state_dir: &Path) -> Result<Self, IpvsError> {
        let dp = Self::open(state_dir)?;
        sysctl::apply().map_err(|e| IpvsError::Kernel {
            what: "setting director sysctl".into(),
            target: String::new(),
            source: std::io::Error::other(e),
        })?;
        Ok(dp)
    }

    /// Connects without changing anything (status, stop).
    pub fn open(state_dir: &Path) -> Result<Self, IpvsError> {
        let ipvs = Ipvs::connect()?;
        let routes = VipRoutes::open()?;
        let owned = Ownership::load(state_dir)?;
        tracing::info!(
            version = ipvs.version(),
            owned = owned.keys().len(),
            state = %owned.path().display(),
            "IPVS ready"
        );
        Ok(Self {
            ipvs,
            routes,
            owned,
        })
    }

    pub fn ipvs(&mut self) -> &mut Ipvs {
        &mut self.ipvs
    }

    /// The kernel's services; destinations only for the ones xlb owns,
    /// the only ones it will diff.
    fn have(&mut self) -> Result<BTreeMap<Vip, Have>, IpvsError> {
        let mut out = BTreeMap::new();
        for s in self.ipvs.services()? {
            let dests = if self.owned.owns(&s.key) {
                self.ipvs.dests(&s.key)?
            } else {
                Vec::new()
            };
            out.insert(
                s.key,
                Have {
                    scheduler: s.scheduler,
                    flags: s.flags,
                    dests,
                },
            );
        }
        Ok(out)
    }

    /// Brings IPVS to `desired`. Either every change lands, or the ones
    /// made are undone and the error says which step the kernel refused.
    pub fn reconcile(&mut self, desired: &Desired) -> Result<Report, IpvsError> {
        let want = plan::wanted(desired)?;
        let wanted_keys: BTreeSet<Vip> = want.keys().copied().collect();
        let have = self.have()?;
        let live = self.live(&have);
        let ops = plan::diff(&want, &have, &live)?;
        let mut report = Report::default();
        for op in &ops {
            match op {
                Op::AddService { .. } => report.vips_added += 1,
                Op::DelService { .. } => report.vips_removed += 1,
                _ => {}
            }
        }
        report.vips_changed = ops
            .iter()
            .filter_map(|o| match o {
                Op::SetService { key, .. }
                | Op::AddDest { key, .. }
                | Op::SetDest { key, .. }
                | Op::DelDest { key, .. }
                    if have.contains_key(key) =>
                {
                    Some(*key)
                }
                _ => None,
            })
            .collect::<BTreeSet<_>>()
            .len();
        report.backend_writes = ops.len();

        // Record what we are about to create before creating it.
        let before: BTreeSet<Vip> = live.clone();
        self.owned
            .set(before.union(&wanted_keys).copied().collect())?;
        let mut done: Vec<&Op> = Vec::new();
        for op in &ops {
            if let Err(e) = self.exec(op) {
                tracing::error!(
                    "IPVS refused a change ({e}); undoing the {} made",
                    done.len()
                );
                for made in done.iter().rev() {
                    for undo in made.inverse() {
                        if let Err(u) = self.exec(&undo) {
                            tracing::error!("undo failed: {u}");
                        }
                    }
                }
                self.owned.set(before)?;
                return Err(e);
            }
            done.push(op);
        }
        self.owned.set(wanted_keys)?;

        let want_vips: BTreeSet<IpAddr> = want.keys().map(|k| k.address).collect();
        let have_vips = self.routes.list()?;
        for vip in want_vips.difference(&have_vips) {
            self.routes.add(*vip)?;
            report.vip_writes += 1;
        }
        for vip in have_vips.difference(&want_vips) {
            self.routes.remove(*vip)?;
            report.vip_writes += 1;
        }
        Ok(report)
    }

    /// The owned services the kernel still has: ownership of one someone
    /// deleted behind our back lapses.
    fn live(&self, have: &BTreeMap<Vip, Have>) -> BTreeSet<Vip> {
        self.owned
            .keys()
            .iter()
            .filter(|k| have.contains_key(k))
            .copied()
            .collect()
    }

    fn exec(&mut self, op: &Op) -> Result<(), IpvsError> {
        match op {
            Op::AddService {
                key,
                scheduler,
                flags,
            } => self.ipvs.add_service(key, scheduler, *flags),
            Op::SetService {
                key,
                scheduler,
                flags,
                ..
            } => self.ipvs.set_service(key, scheduler, *flags),
            Op::DelService { key, .. } => self.ipvs.del_service(key),
            Op::AddDest { key, dest } => self.ipvs.add_dest(key, dest),
            Op::SetDest { key, dest, .. } => self.ipvs.set_dest(key, dest),
            Op::DelDest { key, dest } => self.ipvs.del_dest(key, dest),
        }
    }

    /// Removes every service and VIP route xlb owns, and its state file
    /// (`xlb stop`). Foreign services stay.
    pub fn remove_all(mut self) -> Result<BTreeSet<Vip>, IpvsError> {
        let have = self.have()?;
        let mine = self.live(&have);
        for key in &mine {
            self.ipvs.del_service(key)?;
        }
        for vip in self.routes.list()? {
            self.routes.remove(vip)?;
        }
        let path = self.owned.path().display().to_string();
        self.owned
            .remove()
            .map_err(|source| IpvsError::State { path, source })?;
        Ok(mine)
    }

    /// The owned services with their destinations, as the kernel reports
    /// them (status, metrics).
    pub fn owned_services(
        &mut self,
    ) -> Result<Vec<(super::message::ServiceEntry, Vec<super::message::DestEntry>)>, IpvsError>
    {
        let mut out = Vec::new();
        for s in self.ipvs.services()? {
            if self.owned.owns(&s.key) {
                let d = self.ipvs.dests(&s.key)?;
                out.push((s, d));
            }
        }
        Ok(out)
    }
}

impl Dataplane for IpvsDataplane {
    fn name(&self) -> &'static str {
        "ipvs"
    }

    fn apply(&mut self, desired: &Desired) -> Result<Report, DataplaneError> {
        Ok(self.reconcile(desired)?)
    }

    fn health(&mut self) -> Result<(), DataplaneError> {
        // IPVS services live in the kernel until removed; nothing detaches them.
        Ok(())
    }

    fn snapshot(&mut self) -> Result<Snapshot, DataplaneError> {
        let mut s = Snapshot {
            dataplane: "ipvs".into(),
            ..Snapshot::default()
        };
        for (svc, dests) in self.owned_services()? {
            let vip = svc.key.to_string();
            s.vips.push(VipSample {
                vip: vip.clone(),
                packets: svc.stats.packets_in,
                bytes: svc.stats.bytes_in,
            });
            for d in dests {
                s.flow_entries += u64::from(d.active_conns) + u64::from(d.inactive_conns);
                s.backends.push(BackendSample {
                    vip: vip.clone(),
                    backend: d.address.to_string(),
                    packets: d.stats.packets_in,
                    bytes: d.stats.bytes_in,
                });
            }
        }
        Ok(s)
    }
}
