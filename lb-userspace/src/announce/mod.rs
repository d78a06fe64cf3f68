//! Claiming VIPs on the network: the pieces the announcer task
//! (`daemon::announcer`) is made of.
//!
//! - [`frames`]: the gratuitous ARP and unsolicited neighbour advertisement
//!   a new owner sends, so hosts and switches move the VIP to it at once.
//! - [`link`]: a packet socket per interface, to send them and to join the
//!   Ethernet groups solicitations for owned IPv6 VIPs are sent to.
//! - [`status`]: what `xlb status` and the metrics show of it.
//!
//! The answering itself is the data plane's (`lb-ebpf/src/neighbour.rs`),
//! for the addresses the announcer writes into `XLB_OWNED`.

pub mod frames;
pub mod link;
pub mod status;
