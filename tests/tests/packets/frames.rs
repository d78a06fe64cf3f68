//! The frames the table is made of: what a client sends, and what the
//! balancer must make of it (IPIP and IP6IP6 around the untouched inner
//! packet, rewritten MACs, ICMP too-big answers), built by hand from
//! `xlb_tests::packet` so that a case compares the program's output with
//! bytes it did not help compute.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::FlowKey;
use lb_userspace::maglev::addr_bytes;
use xlb_tests::{
    lab::{self, CLIENT_MAC, CLIENT_V4, CLIENT_V6, LB0_MAC, LB0_V4, LB0_V6, backend_mac},
    packet::*,
};

pub(crate) const XDP_DROP: u32 = 1;
pub(crate) const XDP_PASS: u32 = 2;
pub(crate) const XDP_TX: u32 = 3;
pub(crate) const XDP_REDIRECT: u32 = 4;

pub(crate) const VIP1: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub(crate) const VIP_WILD: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
pub(crate) const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
pub(crate) const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
pub(crate) const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
pub(crate) const CPORT: u16 = 40_000;

/// The lab's backends on lb0 (10.0.0.0x11-0x13, fd00::11-13) and their MACs.
pub(crate) const B1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0x11);
pub(crate) const B3: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0x13);
pub(crate) const B6_1: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x11);
pub(crate) const M11: [u8; 6] = backend_mac(0, 0x11);
pub(crate) const M12: [u8; 6] = backend_mac(0, 0x12);
pub(crate) const M13: [u8; 6] = backend_mac(0, 0x13);

pub(crate) fn c4() -> IpAddr {
    IpAddr::V4(CLIENT_V4)
}
pub(crate) fn c6() -> IpAddr {
    IpAddr::V6(CLIENT_V6)
}

/// Client -> `dst:dport` over TCP, IPv4, with `tweak` applied to the header.
pub(crate) fn tcp4(
    dst: Ipv4Addr,
    dport: u16,
    flags: u8,
    payload: usize,
    tweak: impl FnOnce(&mut V4),
) -> Vec<u8> {
    let mut h = V4::new(CLIENT_V4, dst, 6);
    tweak(&mut h);
    let seg = tcp(
        c4(),
        IpAddr::V4(dst),
        CPORT,
        dport,
        flags,
        &vec![0x61; payload],
    );
    eth(LB0_MAC, CLIENT_MAC, ETH_P_IP, &ipv4(&h, &seg))
}

pub(crate) fn udp4(dst: Ipv4Addr, dport: u16, payload: usize) -> Vec<u8> {
    let dg = udp(c4(), IpAddr::V4(dst), CPORT, dport, &vec![0x62; payload]);
    eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IP,
        &ipv4(&V4::new(CLIENT_V4, dst, 17), &dg),
    )
}

pub(crate) fn tcp6(
    dst: Ipv6Addr,
    dport: u16,
    flags: u8,
    payload: usize,
    tweak: impl FnOnce(&mut V6),
) -> Vec<u8> {
    let mut h = V6::new(CLIENT_V6, dst, 6);
    tweak(&mut h);
    let seg = tcp(
        c6(),
        IpAddr::V6(dst),
        CPORT,
        dport,
        flags,
        &vec![0x63; payload],
    );
    eth(LB0_MAC, CLIENT_MAC, ETH_P_IPV6, &ipv6(&h, &seg))
}

pub(crate) fn udp6(dst: Ipv6Addr, dport: u16, payload: usize) -> Vec<u8> {
    let dg = udp(c6(), IpAddr::V6(dst), CPORT, dport, &vec![0x64; payload]);
    eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IPV6,
        &ipv6(&V6::new(CLIENT_V6, dst, 17), &dg),
    )
}

/// The expected IPv4-in-IPv4 frame: a fresh outer header (TOS and DF of the
/// inner, TTL 64, id 0, checksum) in front of the untouched inner packet.
pub(crate) fn ipip4(
    input: &[u8],
    l2: usize,
    dmac: [u8; 6],
    smac: [u8; 6],
    backend: Ipv4Addr,
) -> Vec<u8> {
    let inner = ip_packet(input, l2);
    let mut h = V4::new(LB0_V4, backend, 4);
    h.tos = inner[1];
    h.id = 0;
    h.frag = u16::from_be_bytes([inner[6], inner[7]]) & 0x4000;
    let outer = ipv4(&h, inner);
    relink(input, l2, dmac, smac, ETH_P_IP, &outer)
}

/// The expected IPv6-in-IPv6 frame; the flow label is the flow's.
pub(crate) fn ipip6(
    input: &[u8],
    l2: usize,
    dmac: [u8; 6],
    smac: [u8; 6],
    backend: Ipv6Addr,
    key: &FlowKey,
) -> Vec<u8> {
    let inner = ip_packet(input, l2);
    let mut h = V6::new(LB0_V6, backend, 41);
    h.tclass = (inner[0] << 4) | (inner[1] >> 4);
    h.flow = lb_common::hash::flow_label(key);
    let outer = ipv6(&h, inner);
    relink(input, l2, dmac, smac, ETH_P_IPV6, &outer)
}

/// A new L2 header (keeping the input's VLAN tag) in front of `payload`.
fn relink(
    input: &[u8],
    l2: usize,
    dmac: [u8; 6],
    smac: [u8; 6],
    ether_type: u16,
    payload: &[u8],
) -> Vec<u8> {
    if l2 == 18 {
        eth_vlan(
            dmac,
            smac,
            u16::from_be_bytes([input[14], input[15]]),
            ether_type,
            payload,
        )
    } else {
        eth(dmac, smac, ether_type, payload)
    }
}

/// The same frame with new MACs (L2 DSR).
pub(crate) fn remac(input: &[u8], dmac: [u8; 6], smac: [u8; 6]) -> Vec<u8> {
    let mut f = input.to_vec();
    f[..6].copy_from_slice(&dmac);
    f[6..12].copy_from_slice(&smac);
    f
}

pub(crate) fn key(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> FlowKey {
    FlowKey {
        src: addr_bytes(src),
        dst: addr_bytes(dst),
        sport,
        dport,
        proto,
        family: lab::family(src),
        _pad: [0; 2],
    }
}

/// ICMP "fragmentation needed" back to the client, quoting 128 bytes.
pub(crate) fn frag_needed(input: &[u8], vip: Ipv4Addr, mtu: u16) -> Vec<u8> {
    let quoted = &input[14..14 + 128];
    let mut h = V4::new(vip, CLIENT_V4, 1);
    h.id = 0;
    h.frag = 0;
    let m = mtu.to_be_bytes();
    eth(
        CLIENT_MAC,
        LB0_MAC,
        ETH_P_IP,
        &ipv4(&h, &icmp4(3, 4, [0, 0, m[0], m[1]], quoted)),
    )
}

pub(crate) fn packet_too_big(input: &[u8], vip: Ipv6Addr, mtu: u32) -> Vec<u8> {
    let quoted = &input[14..14 + 256];
    let h = V6::new(vip, CLIENT_V6, 58);
    eth(
        CLIENT_MAC,
        LB0_MAC,
        ETH_P_IPV6,
        &ipv6(&h, &icmp6(vip, CLIENT_V6, 2, 0, mtu.to_be_bytes(), quoted)),
    )
}

/// An ICMP error from a router on the client's path, about a reply the
/// backend sent as `vip:vport` to the client.
pub(crate) fn icmp4_error(vip: Ipv4Addr, vport: u16, kind: u8, code: u8, pad: usize) -> Vec<u8> {
    let reply = tcp(IpAddr::V4(vip), c4(), vport, CPORT, TCP_ACK, &[]);
    let mut quoted = ipv4(&V4::new(vip, CLIENT_V4, 6), &reply);
    quoted.resize(quoted.len() + pad, 0x55);
    let msg = icmp4(kind, code, [0, 0, 0x05, 0x00], &quoted);
    eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IP,
        &ipv4(&V4::new(ROUTER_V4, vip, 1), &msg),
    )
}

pub(crate) fn icmp6_error(vip: Ipv6Addr, vport: u16, kind: u8) -> Vec<u8> {
    let reply = tcp(IpAddr::V6(vip), c6(), vport, CPORT, TCP_ACK, &[]);
    let quoted = ipv6(&V6::new(vip, CLIENT_V6, 6), &reply);
    let msg = icmp6(ROUTER_V6, vip, kind, 0, 1280u32.to_be_bytes(), &quoted);
    eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IPV6,
        &ipv6(&V6::new(ROUTER_V6, vip, 58), &msg),
    )
}
