//! IPv4 VIPs with `ipip` DSR: the packet leaves inside a fresh outer IPv4
//! header (TOS and DF of the inner, TTL 64; ID 0 with DF, random without)
//! towards its backend; IP options are dropped.

use std::net::Ipv4Addr;

use lb_common::Outcome;
use xlb_tests::{
    lab::{GATEWAY_MAC, LB0_MAC, LB1_MAC, backend_mac},
    packet::*,
};

use crate::{
    Case,
    frames::{B1, B3, M11, M13, VIP_WILD, VIP1, XDP_DROP, XDP_REDIRECT, XDP_TX, ipip4, tcp4, udp4},
    rewritten, unchanged,
};

pub(crate) fn cases() -> Vec<Case> {
    let to_b1 = |f: &[u8]| ipip4(f, 14, M11, LB0_MAC, B1);
    let to_b3 = |f: &[u8]| ipip4(f, 14, M13, LB0_MAC, B3);
    vec![
        rewritten(
            "v4 tcp syn to ipip vip",
            tcp4(VIP1, 80, TCP_SYN, 0, |_| {}),
            XDP_TX,
            Outcome::Tx,
            to_b1,
        ),
        rewritten(
            "v4 tcp data, tos copied, DF clear copied, outer id non-zero",
            tcp4(VIP1, 80, TCP_ACK | TCP_PSH, 100, |h| {
                h.tos = 0x10;
                h.frag = 0;
            }),
            XDP_TX,
            Outcome::Tx,
            to_b1,
        )
        .random_outer_id(),
        unchanged(
            "v4 ip options (router alert, nops): dropped",
            tcp4(VIP1, 80, TCP_ACK, 10, |h| {
                h.options = vec![0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00]
            }),
            XDP_DROP,
            Outcome::DropIpOptions,
        ),
        unchanged(
            "v4 maximal ip header (ihl 15): dropped",
            tcp4(VIP1, 80, TCP_ACK, 0, |h| h.options = vec![0x01; 40]),
            XDP_DROP,
            Outcome::DropIpOptions,
        ),
        rewritten(
            "v4 ttl 1 tunnelled untouched (outer ttl 64)",
            tcp4(VIP1, 80, TCP_ACK, 0, |h| h.ttl = 1),
            XDP_TX,
            Outcome::Tx,
            to_b1,
        ),
        rewritten(
            "v4 rst forwarded",
            tcp4(VIP1, 80, TCP_RST, 0, |_| {}),
            XDP_TX,
            Outcome::Tx,
            to_b1,
        ),
        rewritten(
            "v4 tcp wildcard vip (any port)",
            tcp4(VIP_WILD, 443, TCP_SYN, 0, |_| {}),
            XDP_TX,
            Outcome::Tx,
            to_b3,
        ),
        rewritten(
            "v4 udp wildcard vip",
            udp4(VIP_WILD, 5000, 32),
            XDP_TX,
            Outcome::Tx,
            to_b3,
        ),
        rewritten(
            "v4 backend behind another interface: redirect",
            tcp4(Ipv4Addr::new(10, 99, 0, 3), 80, TCP_SYN, 0, |_| {}),
            XDP_REDIRECT,
            Outcome::Redirect,
            |f| {
                ipip4(
                    f,
                    14,
                    backend_mac(1, 0x21),
                    LB1_MAC,
                    Ipv4Addr::new(10, 1, 0, 0x21),
                )
            },
        ),
        rewritten(
            "v4 ipip backend behind a gateway: gateway MAC",
            tcp4(Ipv4Addr::new(10, 99, 0, 9), 80, TCP_SYN, 0, |_| {}),
            XDP_TX,
            Outcome::Tx,
            |f| ipip4(f, 14, GATEWAY_MAC, LB0_MAC, Ipv4Addr::new(10, 2, 0, 5)),
        ),
    ]
}
