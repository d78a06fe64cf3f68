//! The IPVS data plane: the same desired state as XDP, programmed into the
//! kernel's IP Virtual Server over generic netlink, for nodes where XDP
//! cannot be used. Directors share `mh` (Maglev hashing), so like the XDP
//! data plane they agree on each flow's backend.
//!
//! Ownership: xlb touches only the services it created. It records them in
//! a state file (`ownership`) before creating them, so a crash between the
//! two leaves nothing unowned, and it marks the local routes that make its
//! VIPs local with a routing protocol number of its own (`vip_routes`).

pub mod client;
pub mod dataplane;
pub mod message;
pub mod ownership;
pub mod plan;
pub mod status;
pub mod sysctl;
pub mod vip_routes;

use crate::vip::Vip;
use std::fmt;

pub use client::Ipvs;
pub use dataplane::IpvsDataplane;

#[derive(Debug, thiserror::Error)]
pub enum IpvsError {
    /// The kernel has no IPVS (module missing or not loadable).
    #[error("IPVS is not available: {0}")]
    Unavailable(String),
    #[error(
        "IPVS refused scheduler {scheduler:?} for {service}: the kernel has no such scheduler (is the module ip_vs_{scheduler} installed?)"
    )]
    Scheduler { service: String, scheduler: String },
    #[error("IPVS: {what} {target}: {source}")]
    Kernel {
        what: String,
        target: String,
        source: std::io::Error,
    },
    #[error("IPVS: cannot decode the kernel's reply: {0}")]
    Decode(String),
    #[error(
        "IPVS service {0} already exists and was not created by xlb; xlb never changes services it does not own (remove it, or remove the VIP from the config)"
    )]
    Foreign(Vip),
    #[error(
        "VIP {0}: IPVS cannot balance every port of an address (port 0) without persistence; use the XDP data plane or list the ports"
    )]
    Wildcard(String),
    #[error("{path}: {source}")]
    State {
        path: String,
        source: std::io::Error,
    },
}

impl IpvsError {
    pub(crate) fn kernel(what: &str, target: impl fmt::Display, source: std::io::Error) -> Self {
        Self::Kernel {
            what: what.to_string(),
            target: target.to_string(),
            source,
        }
    }

    pub(crate) fn decode(e: netlink_packet_core::DecodeError) -> Self {
        Self::Decode(e.to_string())
    }
}
