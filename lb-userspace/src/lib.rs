//! The `xlb` daemon's library: configuration, Maglev, the XDP data plane's
//! loader and maps, the IPVS fallback, reconciliation, metrics.

pub mod announce;
pub mod caps;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod desired;
pub mod health;
pub mod heap;
pub mod ifaddr;
pub mod ipvs;
pub mod kubernetes;
pub mod maglev;
pub mod metrics;
pub mod neigh;
pub mod netlink;
pub mod owned_routes;
pub mod runstate;
pub mod state_file;
pub mod vip;
pub mod xdp;
