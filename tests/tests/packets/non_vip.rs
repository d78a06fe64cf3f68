//! Traffic that is not for a VIP (another port or protocol of a VIP's
//! address, another address, not IP at all) passes to the kernel untouched.

use lb_common::Outcome;
use xlb_tests::{
    lab::{CLIENT_MAC, CLIENT_V4, LB0_MAC, LB0_V4, LB0_V6},
    packet::*,
};

use crate::{
    Case,
    frames::{VIP1, XDP_PASS, tcp4, tcp6, udp4},
    unchanged,
};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        unchanged(
            "v4 vip address, other port",
            tcp4(VIP1, 81, TCP_SYN, 0, |_| {}),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
        unchanged(
            "v4 vip address:port, other protocol",
            udp4(VIP1, 80, 8),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
        unchanged(
            "v4 not a vip",
            tcp4(LB0_V4, 22, TCP_SYN, 0, |_| {}),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
        unchanged(
            "arp reply to us",
            eth(LB0_MAC, CLIENT_MAC, ETH_P_ARP, &[0u8; 28]),
            XDP_PASS,
            Outcome::PassNotIp,
        ),
        unchanged(
            "v4 gre to vip address",
            eth(
                LB0_MAC,
                CLIENT_MAC,
                ETH_P_IP,
                &ipv4(&V4::new(CLIENT_V4, VIP1, 47), &[0u8; 24]),
            ),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
        unchanged(
            "v6 not a vip",
            tcp6(LB0_V6, 22, TCP_SYN, 0, |_| {}),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
    ]
}
