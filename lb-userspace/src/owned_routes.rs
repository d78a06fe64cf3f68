//! Host routes xlb owns, one per VIP address, told from everyone else's by
//! their table, type and route protocol number: IPVS's `local` routes (the
//! director must deliver VIP packets locally) and the `bgp` announcer's
//! blackhole routes (a table the node's routing daemon exports).

use std::{collections::BTreeSet, io, net::IpAddr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
};

use crate::netlink::Channel;

/// What each route is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `local VIP dev <oif>`: delivered to this host.
    Local { oif: u32 },
    /// `blackhole VIP`: a route only for others to read; it forwards
    /// nothing, and no rule points at its table.
    Blackhole,
}

/// The header's table field holds ids up to 255; larger ones go in the
/// RTA_TABLE attribute with the header's set to this (RT_TABLE_COMPAT).
const RT_TABLE_COMPAT: u8 = 252;

pub struct OwnedRoutes {
    chan: Channel,
    table: u32,
    protocol: u8,
    kind: Kind,
}

impl OwnedRoutes {
    pub fn open(table: u32, protocol: u8, kind: Kind) -> io::Result<Self> {
        Ok(Self {
            chan: Channel::open(netlink_sys::constants::NETLINK_ROUTE)?,
            table,
            protocol,
            kind,
        })
    }

    /// The addresses this set's routes cover now.
    pub fn list(&mut self) -> io::Result<BTreeSet<IpAddr>> {
        let mut out = BTreeSet::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            for r in self
                .chan
                .request(RouteNetlinkMessage::GetRoute(req), 0, true)?
            {
                let RouteNetlinkMessage::NewRoute(m) = r else {
                    continue;
                };
                if self.is_ours(&m) {
                    out.extend(m.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Destination(RouteAddress::Inet(v4)) => {
                            Some(IpAddr::V4(*v4))
                        }
                        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => {
                            Some(IpAddr::V6(*v6))
                        }
                        _ => None,
                    }));
                }
            }
        }
        Ok(out)
    }

    /// Adds the route for `addr`; one already there is fine.
    pub fn add(&mut self, addr: IpAddr) -> io::Result<()> {
        match self.chan.request(
            RouteNetlinkMessage::NewRoute(self.route(addr)),
            NLM_F_CREATE | NLM_F_EXCL,
            false,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Removes the route for `addr`; one already gone is fine.
    pub fn remove(&mut self, addr: IpAddr) -> io::Result<()> {
        match self
            .chan
            .request(RouteNetlinkMessage::DelRoute(self.route(addr)), 0, false)
        {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r.map(drop),
        }
    }

    fn is_ours(&self, m: &RouteMessage) -> bool {
        let table = m
            .attributes
            .iter()
            .find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            })
            .unwrap_or(u32::from(m.header.table));
        table == self.table
            && m.header.protocol == RouteProtocol::from(self.protocol)
            && m.header.kind == self.route_type()
    }

    fn route_type(&self) -> RouteType {
        match self.kind {
            Kind::Local { .. } => RouteType::Local,
            Kind::Blackhole => RouteType::BlackHole,
        }
    }

    fn route(&self, addr: IpAddr) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        m.header.table = u8::try_from(self.table).unwrap_or(RT_TABLE_COMPAT);
        m.header.protocol = RouteProtocol::from(self.protocol);
        m.header.kind = self.route_type();
        m.attributes = vec![RouteAttribute::Destination(addr.into())];
        match self.kind {
            Kind::Local { oif } => {
                m.header.scope = RouteScope::Host;
                m.attributes.push(RouteAttribute::Oif(oif));
            }
            Kind::Blackhole => m.header.scope = RouteScope::Universe,
        }
        if self.table > 255 {
            m.attributes.push(RouteAttribute::Table(self.table));
        }
        m
    }
}
