//! From what the kernel holds to what is desired: the list of IPVS changes,
//! each with its inverse, so a change the kernel refuses part-way can be
//! undone and nothing is left half-applied. Pure: no kernel here.

use crate::vip::Vip;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use lb_common::Encap;

use super::{
    IpvsError,
    message::{DestEntry, Forward, SVC_F_SCHED_PORT, Stats},
};
use crate::desired::Desired;

/// A service as xlb wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    pub scheduler: String,
    pub flags: u32,
    pub dests: BTreeMap<IpAddr, (Forward, u32)>,
}

/// A service as the kernel holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Have {
    pub scheduler: String,
    pub flags: u32,
    pub dests: Vec<DestEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    AddService {
        key: Vip,
        scheduler: String,
        flags: u32,
    },
    SetService {
        key: Vip,
        scheduler: String,
        flags: u32,
        old: (String, u32),
    },
    /// Deleting a service deletes its destinations; the old ones are kept
    /// to recreate them on undo.
    DelService {
        key: Vip,
        old: Have,
    },
    AddDest {
        key: Vip,
        dest: DestEntry,
    },
    SetDest {
        key: Vip,
        dest: DestEntry,
        old: DestEntry,
    },
    DelDest {
        key: Vip,
        dest: DestEntry,
    },
}

impl Op {
    /// The changes that take this one back.
    pub fn inverse(&self) -> Vec<Op> {
        match self {
            Op::AddService { key, .. } => vec![Op::DelService {
                key: *key,
                old: Have {
                    scheduler: String::new(),
                    flags: 0,
                    dests: Vec::new(),
                },
            }],
            Op::SetService {
                key,
                scheduler,
                flags,
                old,
            } => vec![Op::SetService {
                key: *key,
                scheduler: old.0.clone(),
                flags: old.1,
                old: (scheduler.clone(), *flags),
            }],
            Op::DelService { key, old } => {
                let mut v = vec![Op::AddService {
                    key: *key,
                    scheduler: old.scheduler.clone(),
                    flags: old.flags,
                }];
                v.extend(old.dests.iter().map(|d| Op::AddDest {
                    key: *key,
                    dest: d.clone(),
                }));
                v
            }
            Op::AddDest { key, dest } => vec![Op::DelDest {
                key: *key,
                dest: dest.clone(),
            }],
            Op::SetDest { key, dest, old } => vec![Op::SetDest {
                key: *key,
                dest: old.clone(),
                old: dest.clone(),
            }],
            Op::DelDest { key, dest } => vec![Op::AddDest {
                key: *key,
                dest: dest.clone(),
            }],
        }
    }
}

/// The IPVS services a desired state asks for. Wildcard VIPs (port 0)
/// cannot be expressed without persistence and are refused by name.
pub fn wanted(desired: &Desired) -> Result<BTreeMap<Vip, Want>, IpvsError> {
    let mut out = BTreeMap::new();
    for (svc, spec) in &desired.services {
        if svc.port == 0 {
            return Err(IpvsError::Wildcard(svc.to_string()));
        }
        let forward = match spec.encap {
            Encap::L2 => Forward::Dr,
            Encap::Ipip => Forward::Tun,
        };
        let flags = if matches!(&*spec.scheduler, "mh" | "sh") {
            SVC_F_SCHED_PORT
        } else {
            0
        };
        out.insert(
            Vip {
                address: svc.address,
                port: svc.port,
                protocol: svc.protocol,
            },
            Want {
                scheduler: spec.scheduler.to_string(),
                flags,
                dests: spec
                    .backends
                    .iter()
                    .map(|(a, w)| (*a, (forward, *w)))
                    .collect(),
            },
        );
    }
    Ok(out)
}

/// The changes that bring `have` (the kernel's services, all of them) to
/// `want`, touching only services in `owned`. A wanted service that exists
/// but is not owned is an error before anything changes. Order: new
/// services with their destinations, then changes to kept services (new
/// destinations before removed ones, so a service never runs empty while
/// it has a successor), then removals.
pub fn diff(
    want: &BTreeMap<Vip, Want>,
    have: &BTreeMap<Vip, Have>,
    owned: &BTreeSet<Vip>,
) -> Result<Vec<Op>, IpvsError> {
    if let Some(foreign) = want
        .keys()
        .find(|k| have.contains_key(k) && !owned.contains(k))
    {
        return Err(IpvsError::Foreign(*foreign));
    }
    let dest = |key: &Vip, addr: IpAddr, (forward, weight): (Forward, u32)| DestEntry {
        address: addr,
        port: key.port,
        forward,
        weight,
        active_conns: 0,
        inactive_conns: 0,
        stats: Stats::default(),
    };
    let mut adds = Vec::new();
    let mut changes = Vec::new();
    let mut removals = Vec::new();
    for (key, w) in want {
        let Some(h) = have.get(key) else {
            adds.push(Op::AddService {
                key: *key,
                scheduler: w.scheduler.clone(),
                flags: w.flags,
            });
            adds.extend(w.dests.iter().map(|(a, d)| Op::AddDest {
                key: *key,
                dest: dest(key, *a, *d),
            }));
            continue;
        };
        if h.scheduler != w.scheduler || h.flags != w.flags {
            changes.push(Op::SetService {
                key: *key,
                scheduler: w.scheduler.clone(),
                flags: w.flags,
                old: (h.scheduler.clone(), h.flags),
            });
        }
        let mut gone = Vec::new();
        for old in &h.dests {
            match w.dests.get(&old.address) {
                None => gone.push(Op::DelDest {
                    key: *key,
                    dest: old.clone(),
                }),
                Some(&(forward, weight)) if old.forward != forward || old.weight != weight => {
                    changes.push(Op::SetDest {
                        key: *key,
                        dest: dest(key, old.address, (forward, weight)),
                        old: old.clone(),
                    });
                }
                Some(_) => {}
            }
        }
        for (addr, d) in &w.dests {
            if !h.dests.iter().any(|o| o.address == *addr) {
                changes.push(Op::AddDest {
                    key: *key,
                    dest: dest(key, *addr, *d),
                });
            }
        }
        changes.extend(gone);
    }
    for (key, h) in have {
        if owned.contains(key) && !want.contains_key(key) {
            removals.push(Op::DelService {
                key: *key,
                old: h.clone(),
            });
        }
    }
    adds.extend(changes);
    adds.extend(removals);
    Ok(adds)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn key(last: u8) -> Vip {
        Vip {
            address: IpAddr::V4(Ipv4Addr::new(10, 99, 100, last)),
            port: 80,
            protocol: 6,
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 99, 0, last))
    }

    fn want(dests: &[(u8, u32)]) -> Want {
        Want {
            scheduler: "mh".into(),
            flags: SVC_F_SCHED_PORT,
            dests: dests
                .iter()
                .map(|(a, w)| (ip(*a), (Forward::Dr, *w)))
                .collect(),
        }
    }

    fn have(dests: &[(u8, u32)]) -> Have {
        Have {
            scheduler: "mh".into(),
            flags: SVC_F_SCHED_PORT,
            dests: dests
                .iter()
                .map(|(a, w)| DestEntry {
                    address: ip(*a),
                    port: 80,
                    forward: Forward::Dr,
                    weight: *w,
                    active_conns: 3,
                    inactive_conns: 1,
                    stats: Stats::default(),
                })
                .collect(),
        }
    }

    fn names(ops: &[Op]) -> Vec<String> {
        ops.iter()
            .map(|o| match o {
                Op::AddService { key, .. } => format!("+svc {key}"),
                Op::SetService { key, scheduler, .. } => format!("~svc {key} {scheduler}"),
                Op::DelService { key, .. } => format!("-svc {key}"),
                Op::AddDest { key, dest } => {
                    format!("+dst {key} {} w{}", dest.address, dest.weight)
                }
                Op::SetDest { key, dest, .. } => {
                    format!("~dst {key} {} w{}", dest.address, dest.weight)
                }
                Op::DelDest { key, dest } => format!("-dst {key} {}", dest.address),
            })
            .collect()
    }

    #[test]
    fn unchanged_state_plans_nothing() {
        let w = BTreeMap::from([(key(1), want(&[(11, 1), (12, 2)]))]);
        let h = BTreeMap::from([(key(1), have(&[(11, 1), (12, 2)]))]);
        let ops = diff(&w, &h, &BTreeSet::from([key(1)])).unwrap();
        assert!(ops.is_empty(), "{:?}", names(&ops));
    }

    #[test]
    fn adds_changes_and_removals_in_a_safe_order() {
        let w = BTreeMap::from([
            (key(1), want(&[(11, 1), (12, 5), (13, 1)])),
            (key(2), want(&[(21, 1)])),
        ]);
        let h = BTreeMap::from([
            (key(1), have(&[(10, 1), (11, 1), (12, 2)])),
            (key(3), have(&[(31, 1)])),
        ]);
        let ops = diff(&w, &h, &BTreeSet::from([key(1), key(3)])).unwrap();
        assert_eq!(
            names(&ops),
            [
                "+svc 10.99.100.2:80/tcp",
                "+dst 10.99.100.2:80/tcp 10.99.0.21 w1",
                "~dst 10.99.100.1:80/tcp 10.99.0.12 w5",
                "+dst 10.99.100.1:80/tcp 10.99.0.13 w1",
                "-dst 10.99.100.1:80/tcp 10.99.0.10",
                "-svc 10.99.100.3:80/tcp",
            ]
        );
    }

    #[test]
    fn foreign_services_are_never_touched_and_never_adopted() {
        let w = BTreeMap::from([(key(1), want(&[(11, 1)]))]);
        // key(9) is someone else's: not wanted, not owned: left alone.
        let h = BTreeMap::from([(key(9), have(&[(91, 1)]))]);
        assert!(diff(&w, &h, &BTreeSet::new()).unwrap().iter().all(
            |o| !matches!(o, Op::DelService { key: k, .. } | Op::DelDest { key: k, .. } if *k == key(9))
        ));
        // A wanted VIP that someone else holds is refused before any change.
        let h = BTreeMap::from([(key(1), have(&[(11, 1)]))]);
        let e = diff(&w, &h, &BTreeSet::new()).unwrap_err();
        assert!(matches!(e, IpvsError::Foreign(k) if k == key(1)), "{e}");
    }

    #[test]
    fn scheduler_and_forwarding_changes_are_updates() {
        let mut w = want(&[(11, 1)]);
        w.scheduler = "wrr".into();
        w.flags = 0;
        w.dests.insert(ip(11), (Forward::Tun, 1));
        let ops = diff(
            &BTreeMap::from([(key(1), w)]),
            &BTreeMap::from([(key(1), have(&[(11, 1)]))]),
            &BTreeSet::from([key(1)]),
        )
        .unwrap();
        assert_eq!(
            names(&ops),
            [
                "~svc 10.99.100.1:80/tcp wrr",
                "~dst 10.99.100.1:80/tcp 10.99.0.11 w1"
            ]
        );
        assert!(matches!(&ops[1], Op::SetDest { dest, .. } if dest.forward == Forward::Tun));
    }

    #[test]
    fn every_op_is_undone_by_its_inverse() {
        let h = have(&[(11, 1), (12, 2)]);
        let del = Op::DelService {
            key: key(1),
            old: h.clone(),
        };
        assert_eq!(
            names(&del.inverse()),
            [
                "+svc 10.99.100.1:80/tcp",
                "+dst 10.99.100.1:80/tcp 10.99.0.11 w1",
                "+dst 10.99.100.1:80/tcp 10.99.0.12 w2"
            ]
        );
        let set = Op::SetDest {
            key: key(1),
            dest: h.dests[0].clone(),
            old: h.dests[1].clone(),
        };
        assert_eq!(set.inverse()[0].inverse(), vec![set]);
    }
}
