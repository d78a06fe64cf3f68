//! Claiming VIPs on the network: the pieces the announcer task
//! (`daemon::announcer`) is made of.
//!
//! - [`frames`]: the gratuitous ARP and unsolicited neighbour advertisement
//!   a new owner sends, so hosts and switches move the VIP to it at once.
//! - [`link`]: a packet socket per interface, to send them and to join the
//!   Ethernet groups solicitations for owned IPv6 VIPs are sent to.
//! - [`status`]: what `xlb status` and the metrics show of it.
//! - [`claimer`]: what answers for the claimed addresses: the XDP program
//!   (`lb-ebpf/src/neighbour.rs`, through `XLB_OWNED`), or on the IPVS data
//!   plane the [`responder`]'s threads, with [`answer`] (the same contract
//!   in userspace).
//! - [`aws`]: the `aws` mode's parts (secondary private IPs, Elastic IPs).
//! - [`bgp`]: the `bgp` mode: which addresses this node announces, and why
//!   not the others.

pub mod answer;
pub mod aws;
pub mod bgp;
pub mod claimer;
pub mod frames;
pub mod link;
pub mod responder;
pub mod status;
