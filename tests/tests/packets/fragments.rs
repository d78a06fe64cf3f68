//! IPv4 fragments: the balancer cannot see the ports of a later fragment,
//! so fragments to a VIP are dropped (counted), and fragments that cannot be
//! for a VIP are left to the kernel.

use lb_common::Outcome;
use xlb_tests::{
    lab::{CLIENT_MAC, CLIENT_V4, LB0_MAC, LB0_V4},
    packet::*,
};

use crate::{
    Case,
    frames::{VIP_WILD, VIP1, XDP_DROP, XDP_PASS, tcp4},
    unchanged,
};

/// A later fragment (offset 185 x 8 bytes) of a `proto` datagram to `dst`.
fn later_fragment(dst: std::net::Ipv4Addr, proto: u8) -> Vec<u8> {
    let mut h = V4::new(CLIENT_V4, dst, proto);
    h.frag = 185;
    eth(LB0_MAC, CLIENT_MAC, ETH_P_IP, &ipv4(&h, &[0x66; 64]))
}

pub(crate) fn cases() -> Vec<Case> {
    vec![
        unchanged(
            "v4 first fragment to vip",
            tcp4(VIP1, 80, TCP_ACK, 64, |h| h.frag = 0x2000),
            XDP_DROP,
            Outcome::DropFragment,
        ),
        unchanged(
            "v4 later fragment to wildcard vip",
            later_fragment(VIP_WILD, 17),
            XDP_DROP,
            Outcome::DropFragment,
        ),
        unchanged(
            "v4 later fragment, vip without wildcard",
            later_fragment(VIP1, 6),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
        unchanged(
            "v4 first fragment, not a vip",
            tcp4(LB0_V4, 22, TCP_ACK, 64, |h| h.frag = 0x2000),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
    ]
}
