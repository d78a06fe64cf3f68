//! IPVS serves only packets the director delivers locally (its hook is
//! LOCAL_IN), so every VIP needs a `local` route. xlb adds one per VIP
//! address to the `local` table on `lo`, like
//! `ip route add local VIP dev lo table local proto 177`, and tells its
//! own routes from everyone else's by that protocol number; no address is
//! added to any interface.

use std::{collections::BTreeSet, net::IpAddr};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
};

use super::IpvsError;
use crate::netlink::Channel;

/// The routing protocol number that marks xlb's routes (unassigned in
/// iproute2's rt_protos).
pub const RTPROT_XLB: u8 = 177;
const RT_TABLE_LOCAL: u8 = 255;

pub struct VipRoutes {
    chan: Channel,
    lo: u32,
}

impl VipRoutes {
    pub fn open() -> Result<Self, IpvsError> {
        let chan = Channel::open(netlink_sys::constants::NETLINK_ROUTE)
            .map_err(|e| IpvsError::kernel("opening", "an rtnetlink socket", e))?;
        // SAFETY: a NUL-terminated literal.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        if lo == 0 {
            return Err(IpvsError::kernel(
                "finding",
                "interface lo",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self { chan, lo })
    }

    /// The VIP addresses xlb's local routes cover now.
    pub fn list(&mut self) -> Result<BTreeSet<IpAddr>, IpvsError> {
        let mut out = BTreeSet::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut req = RouteMessage::default();
            req.header.address_family = family;
            let replies = self
                .chan
                .request(RouteNetlinkMessage::GetRoute(req), 0, true)
                .map_err(|e| IpvsError::kernel("listing", "local routes", e))?;
            for r in replies {
                let RouteNetlinkMessage::NewRoute(m) = r else {
                    continue;
                };
                if m.header.protocol != RouteProtocol::Other(RTPROT_XLB)
                    || m.header.kind != RouteType::Local
                {
                    continue;
                }
                out.extend(m.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                    RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                    _ => None,
                }));
            }
        }
        Ok(out)
    }

    pub fn add(&mut self, vip: IpAddr) -> Result<(), IpvsError> {
        match self.chan.request(
            RouteNetlinkMessage::NewRoute(self.route(vip)),
            NLM_F_CREATE | NLM_F_EXCL,
            false,
        ) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r
                .map(drop)
                .map_err(|e| IpvsError::kernel("adding the local route for", vip, e)),
        }
    }

    pub fn remove(&mut self, vip: IpAddr) -> Result<(), IpvsError> {
        match self
            .chan
            .request(RouteNetlinkMessage::DelRoute(self.route(vip)), 0, false)
        {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            r => r
                .map(drop)
                .map_err(|e| IpvsError::kernel("removing the local route for", vip, e)),
        }
    }

    fn route(&self, vip: IpAddr) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = if vip.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.destination_prefix_length = if vip.is_ipv4() { 32 } else { 128 };
        m.header.table = RT_TABLE_LOCAL;
        m.header.protocol = RouteProtocol::Other(RTPROT_XLB);
        m.header.scope = RouteScope::Host;
        m.header.kind = RouteType::Local;
        m.attributes = vec![
            RouteAttribute::Destination(vip.into()),
            RouteAttribute::Oif(self.lo),
        ];
        m
    }
}
