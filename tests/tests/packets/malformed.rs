//! Frames cut short or inconsistent at every layer, IPv4 and IPv6: passed
//! to the kernel untouched (which drops them), counted as malformed (IP
//! layer) or bad L4 (TCP, UDP: the header cut short by the IP length, or
//! inconsistent).

use std::net::IpAddr;

use lb_common::Outcome;
use xlb_tests::{
    lab::{CLIENT_MAC, CLIENT_V4, CLIENT_V6, LB0_MAC},
    packet::*,
};

use crate::{
    Case,
    frames::{CPORT, VIP1, VIP6, XDP_PASS, c4, tcp4, tcp6},
    unchanged,
};

/// `frame` with `edit` applied.
fn edited(mut frame: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    edit(&mut frame);
    frame
}

fn malformed(name: &'static str, frame: Vec<u8>) -> Case {
    unchanged(name, frame, XDP_PASS, Outcome::PassMalformed)
}

fn bad_l4(name: &'static str, frame: Vec<u8>) -> Case {
    unchanged(name, frame, XDP_PASS, Outcome::PassBadL4)
}

pub(crate) fn cases() -> Vec<Case> {
    let syn4 = tcp4(VIP1, 80, TCP_SYN, 0, |_| {});
    let syn6 = tcp6(VIP6, 80, TCP_SYN, 0, |_| {});
    let to_vip1 = |proto: u8, l4: &[u8]| {
        eth(
            LB0_MAC,
            CLIENT_MAC,
            ETH_P_IP,
            &ipv4(&V4::new(CLIENT_V4, VIP1, proto), l4),
        )
    };
    vec![
        malformed(
            "ethernet header only (zero-length IP)",
            eth(LB0_MAC, CLIENT_MAC, ETH_P_IP, &[]),
        ),
        malformed("truncated IPv4 header", syn4[..14 + 12].to_vec()),
        malformed("IPv4 ihl 4", edited(syn4.clone(), |f| f[14] = 0x44)),
        malformed(
            "IPv4 header with version 5",
            edited(syn4.clone(), |f| f[14] = 0x55),
        ),
        malformed(
            "IPv4 total length beyond the frame",
            edited(syn4.clone(), |f| {
                f[16..18].copy_from_slice(&200u16.to_be_bytes())
            }),
        ),
        malformed(
            "IPv4 total length below the header",
            edited(syn4, |f| f[16..18].copy_from_slice(&16u16.to_be_bytes())),
        ),
        bad_l4(
            "truncated TCP header to vip address",
            to_vip1(6, &[0, 1, 0, 80, 0, 0, 0, 0, 0, 0]),
        ),
        bad_l4(
            "TCP data offset 4",
            to_vip1(
                6,
                &edited(tcp(c4(), IpAddr::V4(VIP1), CPORT, 80, TCP_SYN, &[]), |s| {
                    s[12] = 0x40
                }),
            ),
        ),
        bad_l4("truncated UDP header", to_vip1(17, &[0x9c, 0x40, 0, 53])),
        malformed("truncated IPv6 header", syn6[..14 + 30].to_vec()),
        malformed(
            "IPv6 payload length beyond the frame",
            edited(syn6.clone(), |f| {
                f[18..20].copy_from_slice(&400u16.to_be_bytes())
            }),
        ),
        bad_l4(
            "v6 truncated TCP header",
            eth(
                LB0_MAC,
                CLIENT_MAC,
                ETH_P_IPV6,
                &ipv6(&V6::new(CLIENT_V6, VIP6, 6), &[0x9c, 0x40, 0, 80, 0, 0]),
            ),
        ),
        malformed(
            "IPv6 ethertype with version 4",
            edited(syn6, |f| f[14] = 0x40),
        ),
    ]
}
