//! The desired state: what should be balanced, independent of the data
//! plane that will do it (XDP maps or IPVS) and of where it came from
//! (config file, Kubernetes).

use std::{
    collections::{BTreeMap, btree_map},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
};

use lb_common::Encap;

use crate::{
    config::{self, Announcement, HealthCheck},
    vip::Vip,
};

/// How a VIP is served.
///
/// Cloned and compared whole on every change of the desired state (the
/// sources publish states, the reconciler merges them and diffs against
/// what it applied), so its parts are shared: a clone is a few reference
/// counts, and comparing two clones a few pointer comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    pub encap: Encap,
    /// IPVS scheduler; the XDP data plane always uses its own Maglev.
    pub scheduler: Arc<str>,
    /// Backend address -> weight (0: draining, established flows only).
    pub backends: Arc<Backends>,
    /// How the VIP's address is claimed on the network (the announcers'
    /// business; the data plane ignores it).
    pub announce: Announcement,
    /// How its backends are health-checked; `None`: not at all, the
    /// source's word (config weights, Kubernetes readiness) alone decides.
    /// Shared, like the backends: one check serves every VIP of a Service.
    pub health: Option<Arc<HealthCheck>>,
    /// The size of its Maglev table (the XDP data plane's business).
    pub table: TableSize,
}

/// How large a VIP's Maglev table is. Decided by the VIP's configured
/// backends, never by what a node's health checks found: nodes that
/// disagree on a backend's health still give every other backend the
/// same slots, and a backend going down moves no one else's flows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TableSize {
    /// Chosen from the number of backends ([`crate::maglev::table_size`]).
    #[default]
    Auto,
    /// Chosen as for this many backends: what the health gate leaves when
    /// it takes backends out.
    ForBackends(u32),
    /// Set by the operator (`[[vip]] maglev_table_size`, a prime).
    Fixed(u32),
}

/// A VIP's backends: address -> weight, in address order, read like a
/// `BTreeMap<IpAddr, u32>`. A sorted slice rather than a map: a VIP has a
/// handful of backends, and a `BTreeMap` node for them took 250 bytes of
/// each VIP's 500 in a desired state of 100,000 VIPs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Backends(Box<[(IpAddr, u32)]>);

impl Backends {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Address and weight of each backend, in address order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (&IpAddr, &u32)> + ExactSizeIterator {
        self.0.iter().map(|(address, weight)| (address, weight))
    }

    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &IpAddr> + ExactSizeIterator {
        self.0.iter().map(|(address, _)| address)
    }

    pub fn values(&self) -> impl DoubleEndedIterator<Item = &u32> + ExactSizeIterator {
        self.0.iter().map(|(_, weight)| weight)
    }

    /// The weight of backend `address`.
    pub fn get(&self, address: &IpAddr) -> Option<&u32> {
        let found = self.0.binary_search_by_key(address, |(a, _)| *a).ok()?;
        Some(&self.0[found].1)
    }

    pub fn contains_key(&self, address: &IpAddr) -> bool {
        self.get(address).is_some()
    }
}

/// As a map is collected: an address given twice keeps its last weight.
impl FromIterator<(IpAddr, u32)> for Backends {
    fn from_iter<I: IntoIterator<Item = (IpAddr, u32)>>(iter: I) -> Self {
        let mut v: Vec<(IpAddr, u32)> = iter.into_iter().collect();
        // Stable, so of equal addresses the last given is last.
        v.sort_by_key(|(address, _)| *address);
        v.reverse();
        v.dedup_by_key(|(address, _)| *address);
        v.reverse();
        Self(v.into_boxed_slice())
    }
}

impl From<BTreeMap<IpAddr, u32>> for Backends {
    fn from(map: BTreeMap<IpAddr, u32>) -> Self {
        Self(map.into_iter().collect())
    }
}

impl<const N: usize> From<[(IpAddr, u32); N]> for Backends {
    fn from(backends: [(IpAddr, u32); N]) -> Self {
        backends.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Backends {
    type Item = (&'a IpAddr, &'a u32);
    type IntoIter = std::iter::Map<
        std::slice::Iter<'a, (IpAddr, u32)>,
        fn(&'a (IpAddr, u32)) -> (&'a IpAddr, &'a u32),
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(|(address, weight)| (address, weight))
    }
}

/// VIPs and how each is served: a persistent map, so a copy (a source
/// publishing its state, the reconciler merging two) is O(1), a change
/// O(log N), and [`imbl::OrdMap::diff`] between two versions skips what they
/// share: an event at 50,000 VIPs costs what it changed, not a copy of
/// every VIP.
pub type Services = imbl::OrdMap<Vip, ServiceSpec>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    pub services: Services,
    pub ipip_source_v4: Option<Ipv4Addr>,
    pub ipip_source_v6: Option<Ipv6Addr>,
}

impl Desired {
    /// The desired state a validated config describes.
    pub fn from_config(c: &config::Config) -> Self {
        // VIPs mostly inherit the same scheduler and health check: one
        // shared copy of each run of equal ones rather than one per VIP.
        let mut scheduler: Arc<str> = Arc::from("");
        let mut health: Option<Arc<HealthCheck>> = None;
        let services = c
            .vips
            .iter()
            .map(|v| {
                let svc = Vip {
                    address: v.address,
                    port: v.port,
                    protocol: v.protocol.number(),
                };
                if *scheduler != *v.scheduler {
                    scheduler = v.scheduler.as_str().into();
                }
                if health.as_deref() != v.health.as_ref() {
                    health = v.health.clone().map(Arc::new);
                }
                let backends = Arc::new(v.backends.iter().map(|b| (b.address, b.weight)).collect());
                (
                    svc,
                    ServiceSpec {
                        encap: v.encap,
                        scheduler: scheduler.clone(),
                        backends,
                        announce: v.announce.clone(),
                        health: health.clone(),
                        table: v
                            .maglev_table_size
                            .map_or(TableSize::Auto, TableSize::Fixed),
                    },
                )
            })
            .collect();
        Self {
            services,
            ipip_source_v4: c.dataplane.ipip_source_v4,
            ipip_source_v6: c.dataplane.ipip_source_v6,
        }
    }
}

/// Keys drawn from the VIPs of successive versions of a desired state (their
/// addresses, their backends), each counted by the VIPs it is drawn from.
/// Each version is diffed against the last ([`imbl::OrdMap::diff`] skips
/// what they share), so a change costs what changed, not a pass over every
/// VIP.
pub struct Tally<K> {
    counts: BTreeMap<K, u32>,
    last: Services,
    draw: fn(&Vip, &ServiceSpec) -> Vec<K>,
}

impl<K: Ord + Copy> Tally<K> {
    pub fn new(draw: fn(&Vip, &ServiceSpec) -> Vec<K>) -> Self {
        Self {
            counts: BTreeMap::new(),
            last: Services::new(),
            draw,
        }
    }

    /// Takes version `now`: the keys that came (their first VIP) and the
    /// keys that went (their last VIP).
    pub fn update(&mut self, now: &Services) -> (Vec<K>, Vec<K>) {
        use imbl::ordmap::DiffItem;
        let (mut came, mut went) = (Vec::new(), Vec::new());
        for d in self.last.diff(now) {
            let (old, new) = match d {
                DiffItem::Add(k, v) => (None, Some((k, v))),
                DiffItem::Remove(k, v) => (Some((k, v)), None),
                DiffItem::Update { old, new } => (Some(old), Some(new)),
            };
            // Counted up first, so a key the VIP keeps never reaches 0.
            for key in new.map(|(k, v)| (self.draw)(k, v)).unwrap_or_default() {
                let n = self.counts.entry(key).or_insert(0);
                if *n == 0 {
                    came.push(key);
                }
                *n += 1;
            }
            for key in old.map(|(k, v)| (self.draw)(k, v)).unwrap_or_default() {
                if let btree_map::Entry::Occupied(mut e) = self.counts.entry(key) {
                    *e.get_mut() -= 1;
                    if *e.get() == 0 {
                        e.remove();
                        went.push(key);
                    }
                }
            }
        }
        self.last = now.clone();
        (came, went)
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.counts.keys()
    }

    pub fn contains(&self, key: &K) -> bool {
        self.counts.contains_key(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn backends_read_like_the_map_they_replace() {
        let given = [
            (ip("10.0.0.3"), 1),
            (ip("fd00::1"), 2),
            (ip("10.0.0.1"), 5),
            (ip("10.0.0.3"), 0),
        ];
        let b: Backends = given.into_iter().collect();
        let map: BTreeMap<IpAddr, u32> = given.into_iter().collect();
        assert_eq!(b.len(), map.len());
        assert!(b.iter().eq(map.iter()));
        assert!(b.keys().eq(map.keys()));
        assert!(b.values().eq(map.values()));
        assert!((&b).into_iter().rev().eq(map.iter().rev()));
        for address in ["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1"] {
            assert_eq!(b.get(&ip(address)), map.get(&ip(address)), "{address}");
        }
        assert_eq!(Backends::from(map), b);
        assert!(Backends::default().is_empty());
    }

    #[test]
    fn vips_share_equal_schedulers_and_health_checks() {
        let mut text = String::from("[health]\nkind = \"tcp\"\nvia = \"direct\"\n");
        for i in 0..3 {
            text.push_str(&format!("[[vip]]\naddress = \"10.0.0.{i}\"\nport = 80\n"));
        }
        text.push_str("scheduler = \"rr\"\n");
        let config = config::parse(&text, "t").unwrap();
        let d = Desired::from_config(&config);
        let specs: Vec<&ServiceSpec> = d.services.values().collect();
        assert!(Arc::ptr_eq(&specs[0].scheduler, &specs[1].scheduler));
        assert_eq!(&*specs[2].scheduler, "rr");
        let health = |i: usize| specs[i].health.clone().unwrap();
        assert!(Arc::ptr_eq(&health(0), &health(2)));
    }
}
