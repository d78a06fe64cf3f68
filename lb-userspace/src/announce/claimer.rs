//! What answers for claimed addresses, as the announcer sees it: the XDP
//! program's maps ([`crate::xdp::Claims`]) or, on the IPVS data plane, the
//! userspace [`super::responder::Responder`]. Both gate every answer on a
//! heartbeat younger than its bound.

use std::{collections::BTreeSet, net::IpAddr, time::Duration};

pub trait Claimer: Send {
    /// Answers for `a` from now on (while the heartbeat is fresh).
    fn claim(&mut self, a: IpAddr) -> Result<(), String>;
    /// Stops answering for `a` at once; not claimed is no error.
    fn release(&mut self, a: IpAddr) -> Result<(), String>;
    /// The claimed addresses, a previous run's included.
    fn claimed(&self) -> BTreeSet<IpAddr>;
    /// The heartbeat: answers for `bound` from now.
    fn beat(&mut self, bound: Duration) -> Result<(), String>;
    /// Closes the gate at once.
    fn silence(&mut self) -> Result<(), String>;
}

impl Claimer for crate::xdp::Claims {
    fn claim(&mut self, a: IpAddr) -> Result<(), String> {
        crate::xdp::Claims::claim(self, a, 0).map_err(|e| e.to_string())
    }

    fn release(&mut self, a: IpAddr) -> Result<(), String> {
        crate::xdp::Claims::release(self, a).map_err(|e| e.to_string())
    }

    fn claimed(&self) -> BTreeSet<IpAddr> {
        crate::xdp::Claims::claimed(self)
    }

    fn beat(&mut self, bound: Duration) -> Result<(), String> {
        crate::xdp::Claims::beat(self, bound).map_err(|e| e.to_string())
    }

    fn silence(&mut self) -> Result<(), String> {
        crate::xdp::Claims::silence(self).map_err(|e| e.to_string())
    }
}
