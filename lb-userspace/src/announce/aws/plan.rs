//! What to ask EC2 for, from what it reports and what this node leads: a
//! pure function, so every case (a VIP on another router, outside the
//! subnet, an Elastic IP on the wrong address, one that does not exist) is
//! a unit test and not an API session.
//!
//! The order is the one that never opens a gap: the private IPs first
//! (`AssignPrivateIpAddresses` with `AllowReassignment` moves them, and on
//! AWS their Elastic IPs with them), and only after a fresh look the
//! Elastic IPs that did not follow (`AssociateAddress` with
//! `AllowReassociation`, which moves an association in one step). Nothing
//! is ever disassociated or unassigned.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
};

use serde::{Deserialize, Serialize};

use crate::config::AllocationId;

/// The tag xlb puts on its own ENI: a VIP found as a secondary address of
/// an ENI with this tag is another router's, to be taken over; on any
/// other ENI it belongs to something outside xlb and is left alone.
pub const ROUTER_TAG: &str = "xlb.io/router";

/// What this node leads among the `aws` VIPs, each with its Elastic IP.
pub type Wanted = BTreeMap<Ipv4Addr, Option<AllocationId>>;

/// An IPv4 subnet, as DescribeSubnets gives its CIDR block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = s.split_once('/')?;
        let prefix: u8 = p.parse().ok().filter(|p| *p <= 32)?;
        Some(Self {
            network: a.parse().ok()?,
            prefix,
        })
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        u32::from(a) & mask == u32::from(self.network) & mask
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// An ENI as DescribeNetworkInterfaces reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Eni {
    pub id: String,
    pub primary_ip: Option<Ipv4Addr>,
    pub secondary_ips: BTreeSet<Ipv4Addr>,
    pub source_dest_check: bool,
    /// Whether it carries [`ROUTER_TAG`].
    pub router: bool,
    pub instance_id: Option<String>,
}

impl Eni {
    pub fn holds(&self, a: Ipv4Addr) -> bool {
        self.primary_ip == Some(a) || self.secondary_ips.contains(&a)
    }
}

/// Where EC2 says an Elastic IP is associated.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Association {
    pub public_ip: Option<String>,
    pub network_interface_id: Option<String>,
    pub private_ip: Option<Ipv4Addr>,
}

/// One look at EC2: this node's ENI, its subnet, the other ENIs of the
/// subnet (a private IP moves only within its subnet, so any other holder
/// of a VIP is among them), and the Elastic IPs asked for (`None`: EC2
/// does not know the allocation id).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub eni: Eni,
    pub subnet: Option<Cidr>,
    pub others: Vec<Eni>,
    pub eips: BTreeMap<AllocationId, Option<Association>>,
}

/// Why a VIP cannot be announced: reported on that VIP, the others go on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    OutsideSubnet {
        subnet: Cidr,
        eni: String,
    },
    PrimaryOf {
        eni: String,
    },
    UsedOutsideXlb {
        eni: String,
    },
    UnknownEip {
        allocation_id: AllocationId,
    },
    SharedEip {
        allocation_id: AllocationId,
        other: Ipv4Addr,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutsideSubnet { subnet, eni } => write!(
                f,
                "outside subnet {subnet} of {eni}: a secondary private IP must be in the ENI's \
                 own subnet; use an address of {subnet}, or run this VIP's routers in its subnet"
            ),
            Self::PrimaryOf { eni } => write!(
                f,
                "it is the primary private IP of {eni}, which cannot move; choose a free address"
            ),
            Self::UsedOutsideXlb { eni } => write!(
                f,
                "it is a secondary private IP of {eni}, which is not an xlb router (no \
                 {ROUTER_TAG} tag); xlb does not take addresses from other ENIs: free it there, \
                 or choose another address"
            ),
            Self::UnknownEip { allocation_id } => write!(
                f,
                "Elastic IP {allocation_id} does not exist in this account and region \
                 (DescribeAddresses does not know it); check the allocation id"
            ),
            Self::SharedEip {
                allocation_id,
                other,
            } => write!(
                f,
                "Elastic IP {allocation_id} is also asked for by VIP {other}; an Elastic IP is \
                 associated to one address at a time"
            ),
        }
    }
}

/// The calls that bring EC2 to what this node leads. Each kind is one
/// round: after assigning, EC2 is looked at again before any association.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// VIPs to become secondary IPs of this node's ENI (one call).
    pub assign: BTreeSet<Ipv4Addr>,
    /// Elastic IPs to (re)associate, each to its VIP on this node's ENI.
    pub associate: BTreeMap<AllocationId, Ipv4Addr>,
    /// The ENI's source/destination check is on and must go off: a router
    /// forwards packets addressed to VIPs and sends them out to backends.
    pub source_dest_check_off: bool,
    /// The ENI lacks the router tag.
    pub tag: bool,
    pub refused: BTreeMap<Ipv4Addr, Refusal>,
    /// The VIPs that are in place: on the ENI, with their Elastic IP on
    /// them.
    pub in_place: BTreeSet<Ipv4Addr>,
}

impl Plan {
    /// Whether there is nothing to write.
    pub fn is_settled(&self) -> bool {
        self.assign.is_empty()
            && self.associate.is_empty()
            && !self.source_dest_check_off
            && !self.tag
    }
}

/// `check_private_ip`: whether an Elastic IP counts as in place only on the
/// VIP itself, or on any address of the right ENI (emulators; see
/// `config::Aws`).
pub fn plan(wanted: &Wanted, seen: &Observed, check_private_ip: bool) -> Plan {
    let mut p = Plan {
        source_dest_check_off: seen.eni.source_dest_check,
        tag: !seen.eni.router,
        ..Plan::default()
    };
    let mut users: BTreeMap<&AllocationId, Vec<Ipv4Addr>> = BTreeMap::new();
    for (vip, eip) in wanted {
        if let Some(e) = eip {
            users.entry(e).or_default().push(*vip);
        }
    }
    for (&vip, eip) in wanted {
        if let Some(r) = refusal(vip, eip.as_ref(), seen, &users) {
            p.refused.insert(vip, r);
            continue;
        }
        if !seen.eni.secondary_ips.contains(&vip) {
            p.assign.insert(vip);
            continue;
        }
        let Some(eip) = eip else {
            p.in_place.insert(vip);
            continue;
        };
        let here = seen.eips.get(eip).cloned().flatten().is_some_and(|a| {
            a.network_interface_id.as_deref() == Some(seen.eni.id.as_str())
                && (!check_private_ip || a.private_ip == Some(vip))
        });
        if here {
            p.in_place.insert(vip);
        } else {
            p.associate.insert(eip.clone(), vip);
        }
    }
    p
}

fn refusal(
    vip: Ipv4Addr,
    eip: Option<&AllocationId>,
    seen: &Observed,
    users: &BTreeMap<&AllocationId, Vec<Ipv4Addr>>,
) -> Option<Refusal> {
    if let Some(subnet) = seen.subnet
        && !subnet.contains(vip)
    {
        return Some(Refusal::OutsideSubnet {
            subnet,
            eni: seen.eni.id.clone(),
        });
    }
    if seen.eni.primary_ip == Some(vip) {
        return Some(Refusal::PrimaryOf {
            eni: seen.eni.id.clone(),
        });
    }
    for other in seen.others.iter().filter(|o| o.holds(vip)) {
        if other.primary_ip == Some(vip) {
            return Some(Refusal::PrimaryOf {
                eni: other.id.clone(),
            });
        }
        if !other.router {
            return Some(Refusal::UsedOutsideXlb {
                eni: other.id.clone(),
            });
        }
    }
    let eip = eip?;
    if let Some(&other) = users.get(eip).and_then(|u| u.iter().find(|&&o| o != vip)) {
        return Some(Refusal::SharedEip {
            allocation_id: eip.clone(),
            other,
        });
    }
    match seen.eips.get(eip) {
        Some(None) => Some(Refusal::UnknownEip {
            allocation_id: eip.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENI: &str = "eni-0000000a";

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn eip(n: u8) -> AllocationId {
        AllocationId::parse(&format!("eipalloc-{n:08x}")).unwrap()
    }

    fn eni(id: &str, primary: &str, secondary: &[&str], router: bool) -> Eni {
        Eni {
            id: id.into(),
            primary_ip: Some(ip(primary)),
            secondary_ips: secondary.iter().map(|s| ip(s)).collect(),
            source_dest_check: false,
            router,
            instance_id: None,
        }
    }

    fn at(eni: &str, private: &str) -> Option<Association> {
        Some(Association {
            public_ip: Some("203.0.113.7".into()),
            network_interface_id: Some(eni.into()),
            private_ip: Some(ip(private)),
        })
    }

    fn seen(secondary: &[&str]) -> Observed {
        Observed {
            eni: eni(ENI, "10.0.1.4", secondary, true),
            subnet: Cidr::parse("10.0.1.0/24"),
            others: vec![eni("eni-0000000b", "10.0.1.5", &[], true)],
            eips: BTreeMap::new(),
        }
    }

    #[test]
    fn a_new_leader_assigns_first_then_associates_what_did_not_follow() {
        let wanted: Wanted = [(ip("10.0.1.200"), Some(eip(1)))].into();
        let mut s = seen(&[]);
        s.eips.insert(eip(1), at("eni-0000000b", "10.0.1.200"));
        let p = plan(&wanted, &s, true);
        assert_eq!(p.assign, [ip("10.0.1.200")].into());
        assert!(
            p.associate.is_empty(),
            "no association before the assignment is seen"
        );
        // Assigned; on AWS the EIP has followed: nothing left.
        s.eni.secondary_ips.insert(ip("10.0.1.200"));
        s.eips.insert(eip(1), at(ENI, "10.0.1.200"));
        let p = plan(&wanted, &s, true);
        assert!(
            p.is_settled() && p.in_place.contains(&ip("10.0.1.200")),
            "{p:?}"
        );
        // It did not follow: associate, and only that.
        s.eips.insert(eip(1), at("eni-0000000b", "10.0.1.200"));
        let p = plan(&wanted, &s, true);
        assert_eq!(p.associate, [(eip(1), ip("10.0.1.200"))].into());
        assert!(p.assign.is_empty());
    }

    #[test]
    fn an_eip_on_another_address_of_our_eni_is_moved_unless_told_not_to_look() {
        let wanted: Wanted = [(ip("10.0.1.200"), Some(eip(1)))].into();
        let mut s = seen(&["10.0.1.200"]);
        s.eips.insert(eip(1), at(ENI, "10.0.1.4"));
        assert_eq!(plan(&wanted, &s, true).associate.len(), 1);
        assert!(plan(&wanted, &s, false).is_settled());
        s.eips.insert(eip(1), Some(Association::default()));
        assert_eq!(plan(&wanted, &s, false).associate.len(), 1, "unassociated");
    }

    #[test]
    fn source_dest_check_and_tag_are_fixed_once() {
        let mut s = seen(&[]);
        s.eni.source_dest_check = true;
        s.eni.router = false;
        let p = plan(&Wanted::new(), &s, true);
        assert!(p.source_dest_check_off && p.tag && p.assign.is_empty());
    }

    #[test]
    fn bad_vips_are_refused_alone() {
        let wanted: Wanted = [
            (ip("10.0.1.200"), Some(eip(1))),
            (ip("10.0.9.5"), None),
            (ip("10.0.1.5"), None),
            (ip("10.0.1.77"), None),
            (ip("10.0.1.201"), Some(eip(2))),
        ]
        .into();
        let mut s = seen(&[]);
        s.others
            .push(eni("eni-0000000c", "10.0.1.9", &["10.0.1.77"], false));
        s.eips.insert(eip(1), at("eni-0000000b", "10.0.1.5"));
        s.eips.insert(eip(2), None);
        let p = plan(&wanted, &s, true);
        assert_eq!(p.assign, [ip("10.0.1.200")].into(), "the good VIP goes on");
        let r = |a: &str| p.refused.get(&ip(a)).cloned().unwrap();
        assert!(matches!(r("10.0.9.5"), Refusal::OutsideSubnet { .. }));
        assert_eq!(
            r("10.0.1.5"),
            Refusal::PrimaryOf {
                eni: "eni-0000000b".into()
            }
        );
        assert_eq!(
            r("10.0.1.77"),
            Refusal::UsedOutsideXlb {
                eni: "eni-0000000c".into()
            }
        );
        assert_eq!(
            r("10.0.1.201"),
            Refusal::UnknownEip {
                allocation_id: eip(2)
            }
        );
        assert!(r("10.0.9.5").to_string().contains("10.0.1.0/24"));
    }

    #[test]
    fn a_vip_on_another_router_is_taken_over_and_one_eip_serves_one_vip() {
        let wanted: Wanted = [
            (ip("10.0.1.200"), Some(eip(1))),
            (ip("10.0.1.201"), Some(eip(1))),
        ]
        .into();
        let mut s = seen(&[]);
        s.others[0].secondary_ips.insert(ip("10.0.1.200"));
        s.eips.insert(eip(1), at("eni-0000000b", "10.0.1.200"));
        let p = plan(&wanted, &s, true);
        assert!(p.assign.is_empty());
        assert_eq!(p.refused.len(), 2, "both name the other: {p:?}");
        let one: Wanted = [(ip("10.0.1.200"), Some(eip(1)))].into();
        assert_eq!(plan(&one, &s, true).assign, [ip("10.0.1.200")].into());
    }

    #[test]
    fn cidr_contains() {
        let c = Cidr::parse("10.0.1.0/24").unwrap();
        assert!(c.contains(ip("10.0.1.255")) && !c.contains(ip("10.0.2.0")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("1.2.3.4")));
        assert!(Cidr::parse("10.0.0.0/33").is_none());
    }
}
