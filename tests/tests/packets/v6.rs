//! IPv6 VIPs: IPv6-in-IPv6 (traffic class copied, the flow hash as the
//! outer flow label) or `l2` MAC rewriting; extension headers are not
//! parsed and go to the kernel.

use std::net::{IpAddr, Ipv6Addr};

use lb_common::{Outcome, PROTO_TCP};
use xlb_tests::{
    lab::{CLIENT_MAC, CLIENT_V6, LB0_MAC, LB1_MAC, backend_mac},
    packet::*,
};

use crate::{
    Case,
    frames::{
        B6_1, CPORT, M11, M12, VIP6, XDP_PASS, XDP_REDIRECT, XDP_TX, c6, ipip6, key, remac, tcp6,
        udp6,
    },
    rewritten, unchanged,
};

/// fd99::`host`, one of the lab's IPv6 VIPs.
fn vip(host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, host)
}

/// The flow key of the client's TCP connection to `vip:dport`.
fn flow(vip: Ipv6Addr, dport: u16) -> lb_common::FlowKey {
    key(c6(), IpAddr::V6(vip), CPORT, dport, PROTO_TCP)
}

/// `payload` after an IPv6 header whose next header is `next`, to VIP6.
fn with_next_header(next: u8, payload: &[u8]) -> Vec<u8> {
    eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IPV6,
        &ipv6(&V6::new(CLIENT_V6, VIP6, next), payload),
    )
}

pub(crate) fn cases() -> Vec<Case> {
    let to_b1 = |f: &[u8]| ipip6(f, 14, M11, LB0_MAC, B6_1, &flow(VIP6, 80));
    vec![
        rewritten(
            "v6 tcp syn to ipip vip",
            tcp6(VIP6, 80, TCP_SYN, 0, |_| {}),
            XDP_TX,
            Outcome::Tx,
            to_b1,
        ),
        rewritten(
            "v6 traffic class copied, hop limit 1 untouched",
            tcp6(VIP6, 80, TCP_ACK, 64, |h| {
                h.tclass = 0xb8;
                h.hop = 1;
                h.flow = 0x12345;
            }),
            XDP_TX,
            Outcome::Tx,
            to_b1,
        ),
        rewritten(
            "v6 wildcard vip",
            tcp6(vip(2), 8443, TCP_SYN, 0, |_| {}),
            XDP_TX,
            Outcome::Tx,
            |f| {
                ipip6(
                    f,
                    14,
                    M12,
                    LB0_MAC,
                    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x12),
                    &flow(vip(2), 8443),
                )
            },
        ),
        rewritten(
            "v6 udp to l2 vip: MACs rewritten only",
            udp6(VIP6, 53, 40),
            XDP_TX,
            Outcome::Tx,
            |f| remac(f, M12, LB0_MAC),
        ),
        rewritten(
            "v6 backend behind another interface: redirect",
            tcp6(vip(3), 80, TCP_SYN, 0, |_| {}),
            XDP_REDIRECT,
            Outcome::Redirect,
            |f| {
                ipip6(
                    f,
                    14,
                    backend_mac(1, 0x21),
                    LB1_MAC,
                    Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0x21),
                    &flow(vip(3), 80),
                )
            },
        ),
        unchanged(
            "v6 hop-by-hop header",
            with_next_header(0, &[6, 0, 1, 4, 0, 0, 0, 0]),
            XDP_PASS,
            Outcome::PassUnsupported,
        ),
        unchanged(
            "v6 fragment header",
            with_next_header(44, &[6, 0, 0, 1, 0, 0, 0, 1, 0, 0]),
            XDP_PASS,
            Outcome::PassUnsupported,
        ),
    ]
}
