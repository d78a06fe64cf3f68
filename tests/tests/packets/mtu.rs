//! Packets that no longer fit once encapsulated (or, for `l2`, that exceed
//! the egress link): the client gets ICMP fragmentation-needed / packet too
//! big with the MTU that does fit; a packet that fits exactly goes through.

use lb_common::Outcome;
use xlb_tests::{lab::LB0_MAC, packet::*};

use crate::{
    Case,
    frames::{B1, M11, VIP1, VIP6, XDP_TX, frag_needed, ipip4, packet_too_big, tcp4, tcp6, udp4},
    rewritten,
};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        rewritten(
            "v4 1500-byte packet: frag needed, mtu 1480",
            tcp4(VIP1, 80, TCP_ACK, 1500 - 40, |_| {}),
            XDP_TX,
            Outcome::IcmpTooBigSent,
            |f| frag_needed(f, VIP1, 1480),
        ),
        rewritten(
            "v4 1480-byte packet fits exactly",
            tcp4(VIP1, 80, TCP_ACK, 1480 - 40, |_| {}),
            XDP_TX,
            Outcome::Tx,
            |f| ipip4(f, 14, M11, LB0_MAC, B1),
        ),
        rewritten(
            "v4 l2 packet over the link mtu: frag needed, mtu 1500",
            udp4(VIP1, 53, 1600 - 28),
            XDP_TX,
            Outcome::IcmpTooBigSent,
            |f| frag_needed(f, VIP1, 1500),
        ),
        rewritten(
            "v6 1500-byte packet: packet too big, mtu 1460",
            tcp6(VIP6, 80, TCP_ACK, 1500 - 60, |_| {}),
            XDP_TX,
            Outcome::IcmpTooBigSent,
            |f| packet_too_big(f, VIP6, 1460),
        ),
    ]
}
