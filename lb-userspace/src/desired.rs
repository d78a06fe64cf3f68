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
    pub backends: Arc<BTreeMap<IpAddr, u32>>,
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
        let services = c
            .vips
            .iter()
            .map(|v| {
                let svc = Vip {
                    address: v.address,
                    port: v.port,
                    protocol: v.protocol.number(),
                };
                let backends = Arc::new(v.backends.iter().map(|b| (b.address, b.weight)).collect());
                (
                    svc,
                    ServiceSpec {
                        encap: v.encap,
                        scheduler: v.scheduler.as_str().into(),
                        backends,
                        announce: v.announce.clone(),
                        health: v.health.clone().map(Arc::new),
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
