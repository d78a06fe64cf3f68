//! ICMP to a VIP: errors about a VIP flow (quoting the backend's reply)
//! are tunnelled to that flow's backend; echo requests and errors the
//! backend has no use for are left to the kernel; an error too big to
//! tunnel is dropped rather than answered with ICMP about ICMP.

use std::net::IpAddr;

use lb_common::{Outcome, PROTO_TCP};
use xlb_tests::{
    lab::{CLIENT_MAC, CLIENT_V4, CLIENT_V6, LB0_MAC},
    packet::*,
};

use crate::{
    Case,
    frames::{
        B1, B6_1, CPORT, M11, VIP1, VIP6, XDP_DROP, XDP_PASS, XDP_TX, c6, icmp4_error, icmp6_error,
        ipip4, ipip6, key,
    },
    rewritten, unchanged,
};

pub(crate) fn cases() -> Vec<Case> {
    let to_b1 = |f: &[u8]| ipip4(f, 14, M11, LB0_MAC, B1);
    let vip6_flow = key(c6(), IpAddr::V6(VIP6), CPORT, 80, PROTO_TCP);
    vec![
        unchanged(
            "v4 icmp echo to vip",
            eth(
                LB0_MAC,
                CLIENT_MAC,
                ETH_P_IP,
                &ipv4(
                    &V4::new(CLIENT_V4, VIP1, 1),
                    &icmp4(8, 0, [0, 1, 0, 1], &[0u8; 16]),
                ),
            ),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
        rewritten(
            "v4 frag-needed about a vip flow: to its backend",
            icmp4_error(VIP1, 80, 3, 4, 0),
            XDP_TX,
            Outcome::Tx,
            to_b1,
        ),
        rewritten(
            "v4 host-unreachable about a vip flow",
            icmp4_error(VIP1, 80, 3, 1, 0),
            XDP_TX,
            Outcome::Tx,
            to_b1,
        ),
        unchanged(
            "v4 time-exceeded is not steered",
            icmp4_error(VIP1, 80, 11, 0, 0),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
        unchanged(
            "v4 icmp error about a non-vip port",
            icmp4_error(VIP1, 8080, 3, 4, 0),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
        unchanged(
            "v4 icmp error with truncated quote",
            {
                let mut f = icmp4_error(VIP1, 80, 3, 4, 0);
                f.truncate(14 + 20 + 8 + 20 + 2);
                let l = (f.len() - 14) as u16;
                f[16..18].copy_from_slice(&l.to_be_bytes());
                f
            },
            XDP_PASS,
            Outcome::PassBadL4,
        ),
        unchanged(
            "v4 icmp error too big to tunnel: dropped, no icmp about icmp",
            icmp4_error(VIP1, 80, 3, 4, 1450),
            XDP_DROP,
            Outcome::DropTooBig,
        ),
        rewritten(
            "v6 packet-too-big about a vip flow: to its backend",
            icmp6_error(VIP6, 80, 2),
            XDP_TX,
            Outcome::Tx,
            |f| ipip6(f, 14, M11, LB0_MAC, B6_1, &vip6_flow),
        ),
        unchanged(
            "v6 echo request to vip",
            eth(
                LB0_MAC,
                CLIENT_MAC,
                ETH_P_IPV6,
                &ipv6(
                    &V6::new(CLIENT_V6, VIP6, 58),
                    &icmp6(CLIENT_V6, VIP6, 128, 0, [0, 1, 0, 1], &[0u8; 8]),
                ),
            ),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
    ]
}
