//! 802.1Q-tagged frames: balanced with their tag kept, passed when not for
//! a VIP, and a tag cut short is malformed.

use std::net::IpAddr;

use lb_common::Outcome;
use xlb_tests::{
    lab::{CLIENT_MAC, CLIENT_V4, LB0_MAC, LB0_V4},
    packet::*,
};

use crate::{
    Case,
    frames::{B1, CPORT, M11, VIP1, XDP_PASS, XDP_TX, c4, ipip4},
    rewritten, unchanged,
};

/// A client's TCP SYN to `dst:dport` in VLAN 100.
fn tagged_syn(dst: std::net::Ipv4Addr, dport: u16) -> Vec<u8> {
    let seg = tcp(c4(), IpAddr::V4(dst), CPORT, dport, TCP_SYN, &[]);
    eth_vlan(
        LB0_MAC,
        CLIENT_MAC,
        0x0064,
        ETH_P_IP,
        &ipv4(&V4::new(CLIENT_V4, dst, 6), &seg),
    )
}

pub(crate) fn cases() -> Vec<Case> {
    vec![
        rewritten(
            "v4 802.1Q tagged, tag kept",
            tagged_syn(VIP1, 80),
            XDP_TX,
            Outcome::Tx,
            |f| ipip4(f, 18, M11, LB0_MAC, B1),
        ),
        unchanged(
            "v4 tagged, not a vip",
            tagged_syn(LB0_V4, 22),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
        unchanged(
            "truncated 802.1Q tag",
            eth(LB0_MAC, CLIENT_MAC, ETH_P_8021Q, &[0, 0x64]),
            XDP_PASS,
            Outcome::PassMalformed,
        ),
    ]
}
