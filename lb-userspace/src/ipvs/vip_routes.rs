//! IPVS serves only packets the director delivers locally (its hook is
//! LOCAL_IN), so every VIP needs a `local` route. xlb adds one per VIP
//! address to the `local` table on `lo`, like
//! `ip route add local VIP dev lo table local proto 177`, and tells its
//! own routes from everyone else's by that protocol number; no address is
//! added to any interface.

use std::{collections::BTreeSet, net::IpAddr};

use super::IpvsError;
use crate::owned_routes::{Kind, OwnedRoutes};

/// The routing protocol number that marks xlb's routes (unassigned in
/// iproute2's rt_protos).
pub const RTPROT_XLB: u8 = 177;
const RT_TABLE_LOCAL: u32 = 255;

pub struct VipRoutes(OwnedRoutes);

impl VipRoutes {
    pub fn open() -> Result<Self, IpvsError> {
        // SAFETY: a NUL-terminated literal.
        let lo = unsafe { libc::if_nametoindex(c"lo".as_ptr()) };
        if lo == 0 {
            return Err(IpvsError::kernel(
                "finding",
                "interface lo",
                std::io::Error::last_os_error(),
            ));
        }
        OwnedRoutes::open(RT_TABLE_LOCAL, RTPROT_XLB, Kind::Local { oif: lo })
            .map(Self)
            .map_err(|e| IpvsError::kernel("opening", "an rtnetlink socket", e))
    }

    /// The VIP addresses xlb's local routes cover now.
    pub fn list(&mut self) -> Result<BTreeSet<IpAddr>, IpvsError> {
        self.0
            .list()
            .map_err(|e| IpvsError::kernel("listing", "local routes", e))
    }

    pub fn add(&mut self, vip: IpAddr) -> Result<(), IpvsError> {
        self.0
            .add(vip)
            .map_err(|e| IpvsError::kernel("adding the local route for", vip, e))
    }

    pub fn remove(&mut self, vip: IpAddr) -> Result<(), IpvsError> {
        self.0
            .remove(vip)
            .map_err(|e| IpvsError::kernel("removing the local route for", vip, e))
    }
}
