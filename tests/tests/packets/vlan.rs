//! 802.1Q-tagged frames: passed to the kernel untouched, VIP or not, even
//! cut short: the program runs on the physical device and cannot route by
//! the VLAN device, which the kernel does.

use std::net::IpAddr;

use lb_common::Outcome;
use xlb_tests::{
    lab::{CLIENT_MAC, CLIENT_V4, LB0_MAC, LB0_V4},
    packet::*,
};

use crate::{
    Case,
    frames::{CPORT, VIP1, XDP_PASS, c4},
    unchanged,
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
        unchanged(
            "v4 802.1Q tagged vip syn",
            tagged_syn(VIP1, 80),
            XDP_PASS,
            Outcome::PassVlan,
        ),
        unchanged(
            "v4 tagged, not a vip",
            tagged_syn(LB0_V4, 22),
            XDP_PASS,
            Outcome::PassVlan,
        ),
        unchanged(
            "truncated 802.1Q tag",
            eth(LB0_MAC, CLIENT_MAC, ETH_P_8021Q, &[0, 0x64]),
            XDP_PASS,
            Outcome::PassVlan,
        ),
    ]
}
