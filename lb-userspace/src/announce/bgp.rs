//! The `bgp` mode: which VIP addresses this node announces, and why not
//! the others. Every healthy router announces (no election); the routes go
//! into a kernel table the node's routing daemon exports
//! ([`crate::owned_routes`], blackhole routes). See docs/bgp.md.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use serde::{Deserialize, Serialize};

use crate::{config::AnnounceMode, desired::Desired, vip::Vip};

/// The file `xlb status`, `xlb drain` and `xlb stop` read, in the state
/// directory.
pub const FILE: &str = "bgp.json";
/// Present in the state directory: withdraw everything and keep it
/// withdrawn (maintenance), across restarts, until removed (`xlb undrain`).
pub const DRAIN_FILE: &str = "drain";

/// Why an address is not announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Withheld {
    /// The node is being drained (`xlb drain`).
    Draining,
    /// The data plane is not in place (XDP detached, IPVS gone).
    DataplaneDown,
    /// No VIP at the address has a backend that takes new flows (none
    /// configured, all drained, all held down by health checks).
    NoActiveBackend,
    /// Every backend fails its health checks; the VIP is kept in rotation
    /// by `fail_open`, but not announced (`[announce.bgp]
    /// announce_fail_open` decides).
    AllBackendsDown,
}

impl Withheld {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draining => "draining",
            Self::DataplaneDown => "data plane not attached",
            Self::NoActiveBackend => "no active backend",
            Self::AllBackendsDown => "all backends failing health checks",
        }
    }
}

/// What, besides the served state, decides an announcement.
#[derive(Clone, Copy, Debug)]
pub struct Gates<'a> {
    /// The VIPs served only because their check fails open.
    pub failing_open: &'a BTreeSet<Vip>,
    /// Announce those anyway (`[announce.bgp] announce_fail_open`).
    pub announce_fail_open: bool,
    pub draining: bool,
    pub attached: bool,
}

/// Per `bgp` VIP address: announced, or withheld and why.
pub fn decide(served: &Desired, g: Gates<'_>) -> BTreeMap<IpAddr, Option<Withheld>> {
    let mut out: BTreeMap<IpAddr, Option<Withheld>> = BTreeMap::new();
    for (vip, spec) in &served.services {
        if spec.announce.mode() != AnnounceMode::Bgp {
            continue;
        }
        let active = spec.backends.values().any(|w| *w > 0);
        let verdict = if g.draining {
            Some(Withheld::Draining)
        } else if !g.attached {
            Some(Withheld::DataplaneDown)
        } else if !active {
            Some(Withheld::NoActiveBackend)
        } else if g.failing_open.contains(vip) && !g.announce_fail_open {
            // Other routers whose checks pass take the traffic; if every
            // router's fail, the VIP is unreachable rather than served by
            // backends that probably do not work.
            Some(Withheld::AllBackendsDown)
        } else {
            None
        };
        // Several VIPs share an address (ports): one that can serve is
        // enough to announce it.
        out.entry(vip.address)
            .and_modify(|v| {
                if verdict.is_none() {
                    *v = None;
                }
            })
            .or_insert(verdict);
    }
    out
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BgpStatus {
    /// Where the routes are: `xlb stop` removes them from there.
    pub table: u32,
    pub protocol: u8,
    pub draining: bool,
    /// Per `bgp` VIP address: `None` to be announced, else why not.
    pub vips: BTreeMap<IpAddr, Option<Withheld>>,
    /// The addresses whose route is in the table, as last written or read
    /// back: what is actually exported. It differs from `vips` while a
    /// write fails.
    #[serde(default)]
    pub installed: BTreeSet<IpAddr>,
    /// Routes added and removed since start.
    pub announcements: u64,
    pub withdrawals: u64,
    /// The last failure writing the table, while writes fail (cleared by
    /// the first pass that writes everything it must).
    pub error: Option<String>,
    /// Table writes that failed since start.
    #[serde(default)]
    pub write_errors: u64,
}

impl BgpStatus {
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        crate::state_file::write(state_dir, FILE, self)
    }

    pub fn read(state_dir: &Path) -> Option<Self> {
        crate::state_file::read(state_dir, FILE)
    }

    /// The addresses decided to be announced.
    pub fn announced(&self) -> usize {
        self.vips.values().filter(|v| v.is_none()).count()
    }

    /// Whether the table holds exactly what was decided, with no write
    /// failing.
    pub fn settled(&self) -> bool {
        self.error.is_none()
            && self
                .vips
                .iter()
                .all(|(a, w)| w.is_none() == self.installed.contains(a))
            && self
                .installed
                .iter()
                .all(|a| self.vips.get(a) == Some(&None))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{config::Announcement, desired::ServiceSpec};

    fn vip(a: &str, port: u16) -> Vip {
        Vip {
            address: a.parse().unwrap(),
            port,
            protocol: lb_common::PROTO_TCP,
        }
    }

    fn spec(weights: &[u32], announce: Announcement) -> ServiceSpec {
        ServiceSpec {
            encap: lb_common::Encap::Ipip,
            scheduler: "mh".into(),
            backends: Arc::new(
                weights
                    .iter()
                    .enumerate()
                    .map(|(i, w)| (IpAddr::from([10, 1, 0, i as u8 + 1]), *w))
                    .collect(),
            ),
            announce,
            health: None,
            table: Default::default(),
        }
    }

    #[test]
    fn an_address_is_announced_when_one_of_its_vips_can_serve() {
        let d = Desired {
            services: [
                (vip("10.0.0.1", 80), spec(&[0, 0], Announcement::Bgp)),
                (vip("10.0.0.1", 443), spec(&[1], Announcement::Bgp)),
                (vip("10.0.0.2", 80), spec(&[0], Announcement::Bgp)),
                (vip("10.0.0.3", 80), spec(&[], Announcement::Bgp)),
                (vip("10.0.0.4", 80), spec(&[1], Announcement::L2)),
            ]
            .into_iter()
            .collect(),
            ..Desired::default()
        };
        let none = BTreeSet::new();
        let gates = |draining, attached| Gates {
            failing_open: &none,
            announce_fail_open: false,
            draining,
            attached,
        };
        let got = decide(&d, gates(false, true));
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(got[&a("10.0.0.1")], None);
        assert_eq!(
            got[&a("10.0.0.2")],
            Some(Withheld::NoActiveBackend),
            "drained"
        );
        assert_eq!(
            got[&a("10.0.0.3")],
            Some(Withheld::NoActiveBackend),
            "empty"
        );
        assert!(!got.contains_key(&a("10.0.0.4")), "not a bgp VIP");
        assert!(
            decide(&d, gates(true, true))
                .values()
                .all(|v| *v == Some(Withheld::Draining))
        );
        assert_eq!(
            decide(&d, gates(false, false))[&a("10.0.0.1")],
            Some(Withheld::DataplaneDown)
        );
    }

    #[test]
    fn settled_means_the_table_holds_what_was_decided() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut b = BgpStatus {
            vips: [
                (a("10.0.0.1"), None),
                (a("10.0.0.2"), Some(Withheld::Draining)),
            ]
            .into_iter()
            .collect(),
            installed: [a("10.0.0.1")].into_iter().collect(),
            ..BgpStatus::default()
        };
        assert!(b.settled());
        b.installed.insert(a("10.0.0.2"));
        assert!(!b.settled(), "a withheld route still installed");
        b.installed.clear();
        assert!(!b.settled(), "an announced route missing");
        b.installed.insert(a("10.0.0.1"));
        b.installed.insert(a("10.0.0.9"));
        assert!(!b.settled(), "a route for no VIP left behind");
        b.installed.remove(&a("10.0.0.9"));
        b.error = Some("removing the route: EPERM".into());
        assert!(!b.settled(), "a write failing");
    }

    #[test]
    fn a_vip_failing_open_is_withdrawn_unless_told_otherwise() {
        let d = Desired {
            services: [
                (vip("10.0.0.1", 80), spec(&[1, 1], Announcement::Bgp)),
                (vip("10.0.0.2", 80), spec(&[1], Announcement::Bgp)),
                (vip("10.0.0.2", 443), spec(&[1], Announcement::Bgp)),
                (vip("10.0.0.3", 80), spec(&[1], Announcement::Bgp)),
            ]
            .into_iter()
            .collect(),
            ..Desired::default()
        };
        let failing: BTreeSet<Vip> = [vip("10.0.0.1", 80), vip("10.0.0.2", 80)]
            .into_iter()
            .collect();
        let gates = |announce_fail_open| Gates {
            failing_open: &failing,
            announce_fail_open,
            draining: false,
            attached: true,
        };
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
        let got = decide(&d, gates(false));
        assert_eq!(got[&a("10.0.0.1")], Some(Withheld::AllBackendsDown));
        assert_eq!(got[&a("10.0.0.2")], None, "its port 443 VIP is healthy");
        assert_eq!(got[&a("10.0.0.3")], None);
        assert_eq!(
            Withheld::AllBackendsDown.as_str(),
            "all backends failing health checks"
        );
        assert!(decide(&d, gates(true)).values().all(Option::is_none));
        // Draining wins over every other reason.
        let draining = Gates {
            draining: true,
            ..gates(false)
        };
        assert_eq!(
            decide(&d, draining)[&a("10.0.0.1")],
            Some(Withheld::Draining)
        );
    }
}
