//! The data plane, packet by packet: a table of frames run through the
//! verifier-accepted balancer with BPF_PROG_TEST_RUN, each with the XDP
//! action, the exact output frame and the outcome counter it must bump.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{FlowKey, Outcome, PROTO_TCP, hash::flow_hash};
use lb_userspace::{maglev::addr_bytes, xdp::Balancer};
use xlb_tests::{
    lab::{
        self, CLIENT_MAC, CLIENT_V4, CLIENT_V6, GATEWAY_MAC, LB0_MAC, LB0_V4, LB0_V6, LB1_MAC, Lab,
        backend_mac,
    },
    netns::privileged,
    packet::*,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;

const VIP1: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const VIP_WILD: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
const ROUTER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ROUTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
const CPORT: u16 = 40_000;

enum Out {
    /// The frame must leave untouched.
    Same,
    Exact(Vec<u8>),
}

struct Case {
    name: &'static str,
    /// Interface the frame arrives on (lb0 unless stated).
    frame: Vec<u8>,
    action: u32,
    outcome: Outcome,
    out: Out,
}

fn case(name: &'static str, frame: Vec<u8>, action: u32, outcome: Outcome, out: Out) -> Case {
    Case {
        name,
        frame,
        action,
        outcome,
        out,
    }
}

fn c4() -> IpAddr {
    IpAddr::V4(CLIENT_V4)
}
fn c6() -> IpAddr {
    IpAddr::V6(CLIENT_V6)
}

/// Client -> `dst:dport` over TCP, IPv4, with `tweak` applied to the header.
fn tcp4(
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

fn udp4(dst: Ipv4Addr, dport: u16, payload: usize) -> Vec<u8> {
    let dg = udp(c4(), IpAddr::V4(dst), CPORT, dport, &vec![0x62; payload]);
    eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IP,
        &ipv4(&V4::new(CLIENT_V4, dst, 17), &dg),
    )
}

fn tcp6(
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

fn udp6(dst: Ipv6Addr, dport: u16, payload: usize) -> Vec<u8> {
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
fn ipip4(input: &[u8], l2: usize, dmac: [u8; 6], smac: [u8; 6], backend: Ipv4Addr) -> Vec<u8> {
    let inner = ip_packet(input, l2);
    let mut h = V4::new(LB0_V4, backend, 4);
    h.tos = inner[1];
    h.id = 0;
    h.frag = u16::from_be_bytes([inner[6], inner[7]]) & 0x4000;
    let outer = ipv4(&h, inner);
    relink(input, l2, dmac, smac, ETH_P_IP, &outer)
}

/// The expected IPv6-in-IPv6 frame; the flow label is the flow hash.
fn ipip6(
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
    h.flow = flow_hash(key) & 0xf_ffff;
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
fn remac(input: &[u8], dmac: [u8; 6], smac: [u8; 6]) -> Vec<u8> {
    let mut f = input.to_vec();
    f[..6].copy_from_slice(&dmac);
    f[6..12].copy_from_slice(&smac);
    f
}

fn key(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> FlowKey {
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
fn frag_needed(input: &[u8], vip: Ipv4Addr, mtu: u16) -> Vec<u8> {
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

fn packet_too_big(input: &[u8], vip: Ipv6Addr, mtu: u32) -> Vec<u8> {
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
fn icmp4_error(vip: Ipv4Addr, vport: u16, kind: u8, code: u8, pad: usize) -> Vec<u8> {
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

fn icmp6_error(vip: Ipv6Addr, vport: u16, kind: u8) -> Vec<u8> {
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

fn cases() -> Vec<Case> {
    use Out::{Exact, Same};
    let b1 = Ipv4Addr::new(10, 0, 0, 0x11);
    let b3 = Ipv4Addr::new(10, 0, 0, 0x13);
    let b6_4 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x11);
    let m11 = backend_mac(0, 0x11);
    let m12 = backend_mac(0, 0x12);
    let m13 = backend_mac(0, 0x13);
    let vip6_key = |flags_port: u16| key(c6(), IpAddr::V6(VIP6), CPORT, flags_port, PROTO_TCP);
    let mut v = Vec::new();

    // --- IPv4, IPIP ---------------------------------------------------------
    let f = tcp4(VIP1, 80, TCP_SYN, 0, |_| {});
    v.push(case(
        "v4 tcp syn to ipip vip",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 14, m11, LB0_MAC, b1)),
    ));
    let f = tcp4(VIP1, 80, TCP_ACK | TCP_PSH, 100, |h| {
        h.tos = 0x10;
        h.frag = 0;
    });
    v.push(case(
        "v4 tcp data, tos copied, DF clear copied",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 14, m11, LB0_MAC, b1)),
    ));
    let f = tcp4(VIP1, 80, TCP_ACK, 10, |h| {
        h.options = vec![0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x00]
    });
    v.push(case(
        "v4 ip options (router alert, nops)",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 14, m11, LB0_MAC, b1)),
    ));
    let f = tcp4(VIP1, 80, TCP_ACK, 0, |h| h.options = vec![0x01; 40]);
    v.push(case(
        "v4 maximal ip header (ihl 15)",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 14, m11, LB0_MAC, b1)),
    ));
    let f = tcp4(VIP1, 80, TCP_ACK, 0, |h| h.ttl = 1);
    v.push(case(
        "v4 ttl 1 tunnelled untouched (outer ttl 64)",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 14, m11, LB0_MAC, b1)),
    ));
    let f = tcp4(VIP1, 80, TCP_RST, 0, |_| {});
    v.push(case(
        "v4 rst forwarded",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 14, m11, LB0_MAC, b1)),
    ));
    let f = tcp4(VIP_WILD, 443, TCP_SYN, 0, |_| {});
    v.push(case(
        "v4 tcp wildcard vip (any port)",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 14, m13, LB0_MAC, b3)),
    ));
    let f = udp4(VIP_WILD, 5000, 32);
    v.push(case(
        "v4 udp wildcard vip",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 14, m13, LB0_MAC, b3)),
    ));
    let f = {
        let seg = tcp(c4(), IpAddr::V4(VIP1), CPORT, 80, TCP_SYN, &[]);
        eth_vlan(
            LB0_MAC,
            CLIENT_MAC,
            0x0064,
            ETH_P_IP,
            &ipv4(&V4::new(CLIENT_V4, VIP1, 6), &seg),
        )
    };
    v.push(case(
        "v4 802.1Q tagged, tag kept",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 18, m11, LB0_MAC, b1)),
    ));
    let f = tcp4(Ipv4Addr::new(10, 99, 0, 3), 80, TCP_SYN, 0, |_| {});
    v.push(case(
        "v4 backend behind another interface: redirect",
        f.clone(),
        XDP_REDIRECT,
        Outcome::Redirect,
        Exact(ipip4(
            &f,
            14,
            backend_mac(1, 0x21),
            LB1_MAC,
            Ipv4Addr::new(10, 1, 0, 0x21),
        )),
    ));
    let f = tcp4(Ipv4Addr::new(10, 99, 0, 9), 80, TCP_SYN, 0, |_| {});
    v.push(case(
        "v4 ipip backend behind a gateway: gateway MAC",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(
            &f,
            14,
            GATEWAY_MAC,
            LB0_MAC,
            Ipv4Addr::new(10, 2, 0, 5),
        )),
    ));

    // --- IPv4, L2 -----------------------------------------------------------
    let f = udp4(VIP1, 53, 20);
    v.push(case(
        "v4 udp to l2 vip: MACs rewritten only",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(remac(&f, m12, LB0_MAC)),
    ));
    let f = tcp4(Ipv4Addr::new(10, 99, 0, 4), 80, TCP_SYN, 0, |_| {});
    v.push(case(
        "v4 l2 backend not on link: dropped",
        f,
        XDP_DROP,
        Outcome::DropNotOnLink,
        Same,
    ));

    // --- not ours -----------------------------------------------------------
    v.push(case(
        "v4 vip address, other port",
        tcp4(VIP1, 81, TCP_SYN, 0, |_| {}),
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));
    v.push(case(
        "v4 vip address:port, other protocol",
        udp4(VIP1, 80, 8),
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));
    v.push(case(
        "v4 not a vip",
        tcp4(LB0_V4, 22, TCP_SYN, 0, |_| {}),
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));
    let f = {
        let seg = tcp(c4(), IpAddr::V4(LB0_V4), CPORT, 22, TCP_SYN, &[]);
        eth_vlan(
            LB0_MAC,
            CLIENT_MAC,
            0x0064,
            ETH_P_IP,
            &ipv4(&V4::new(CLIENT_V4, LB0_V4, 6), &seg),
        )
    };
    v.push(case(
        "v4 tagged, not a vip",
        f,
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));
    v.push(case(
        "arp",
        eth([0xff; 6], CLIENT_MAC, ETH_P_ARP, &[0u8; 28]),
        XDP_PASS,
        Outcome::PassNotIp,
        Same,
    ));
    let f = eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IP,
        &ipv4(&V4::new(CLIENT_V4, VIP1, 47), &[0u8; 24]),
    );
    v.push(case(
        "v4 gre to vip address",
        f,
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));
    let f = eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IP,
        &ipv4(
            &V4::new(CLIENT_V4, VIP1, 1),
            &icmp4(8, 0, [0, 1, 0, 1], &[0u8; 16]),
        ),
    );
    v.push(case(
        "v4 icmp echo to vip",
        f,
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));

    // --- malformed at every layer ---------------------------------------------
    v.push(case(
        "ethernet header only (zero-length IP)",
        eth(LB0_MAC, CLIENT_MAC, ETH_P_IP, &[]),
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    v.push(case(
        "truncated 802.1Q tag",
        eth(LB0_MAC, CLIENT_MAC, ETH_P_8021Q, &[0, 0x64]),
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    let full = tcp4(VIP1, 80, TCP_SYN, 0, |_| {});
    v.push(case(
        "truncated IPv4 header",
        full[..14 + 12].to_vec(),
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    let mut f = full.clone();
    f[14] = 0x44;
    v.push(case(
        "IPv4 ihl 4",
        f,
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    let mut f = full.clone();
    f[14] = 0x55;
    v.push(case(
        "IPv4 header with version 5",
        f,
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    let mut f = full.clone();
    f[16..18].copy_from_slice(&200u16.to_be_bytes());
    v.push(case(
        "IPv4 total length beyond the frame",
        f,
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    let mut f = full.clone();
    f[16..18].copy_from_slice(&16u16.to_be_bytes());
    v.push(case(
        "IPv4 total length below the header",
        f,
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    let f = eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IP,
        &ipv4(
            &V4::new(CLIENT_V4, VIP1, 6),
            &[0, 1, 0, 80, 0, 0, 0, 0, 0, 0],
        ),
    );
    v.push(case(
        "truncated TCP header to vip address",
        f,
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    let mut seg = tcp(c4(), IpAddr::V4(VIP1), CPORT, 80, TCP_SYN, &[]);
    seg[12] = 0x40;
    let f = eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IP,
        &ipv4(&V4::new(CLIENT_V4, VIP1, 6), &seg),
    );
    v.push(case(
        "TCP data offset 4",
        f,
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    let f = eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IP,
        &ipv4(&V4::new(CLIENT_V4, VIP1, 17), &[0x9c, 0x40, 0, 53]),
    );
    v.push(case(
        "truncated UDP header",
        f,
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));

    // --- fragments ------------------------------------------------------------
    v.push(case(
        "v4 first fragment to vip",
        tcp4(VIP1, 80, TCP_ACK, 64, |h| h.frag = 0x2000),
        XDP_DROP,
        Outcome::DropFragment,
        Same,
    ));
    let f = eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IP,
        &ipv4(
            &{
                let mut h = V4::new(CLIENT_V4, VIP_WILD, 17);
                h.frag = 185;
                h
            },
            &[0x66; 64],
        ),
    );
    v.push(case(
        "v4 later fragment to wildcard vip",
        f,
        XDP_DROP,
        Outcome::DropFragment,
        Same,
    ));
    let f = eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IP,
        &ipv4(
            &{
                let mut h = V4::new(CLIENT_V4, VIP1, 6);
                h.frag = 185;
                h
            },
            &[0x66; 64],
        ),
    );
    v.push(case(
        "v4 later fragment, vip without wildcard",
        f,
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));
    v.push(case(
        "v4 first fragment, not a vip",
        tcp4(LB0_V4, 22, TCP_ACK, 64, |h| h.frag = 0x2000),
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));

    // --- routing failures -------------------------------------------------------
    v.push(case(
        "backend without route",
        tcp4(Ipv4Addr::new(10, 99, 0, 5), 80, TCP_SYN, 0, |_| {}),
        XDP_DROP,
        Outcome::DropNoRoute,
        Same,
    ));
    v.push(case(
        "backend neighbour unresolved: dropped, not passed",
        tcp4(Ipv4Addr::new(10, 99, 0, 6), 80, TCP_SYN, 0, |_| {}),
        XDP_DROP,
        Outcome::DropNoNeigh,
        Same,
    ));
    v.push(case(
        "vip without backends",
        tcp4(Ipv4Addr::new(10, 99, 0, 7), 80, TCP_SYN, 0, |_| {}),
        XDP_DROP,
        Outcome::DropNoBackend,
        Same,
    ));
    v.push(case(
        "v4 vip with a v6 backend",
        tcp4(Ipv4Addr::new(10, 99, 0, 8), 80, TCP_SYN, 0, |_| {}),
        XDP_DROP,
        Outcome::DropFamilyMismatch,
        Same,
    ));

    // --- MTU ----------------------------------------------------------------------
    let f = tcp4(VIP1, 80, TCP_ACK, 1500 - 40, |_| {});
    v.push(case(
        "v4 1500-byte packet: frag needed, mtu 1480",
        f.clone(),
        XDP_TX,
        Outcome::IcmpTooBigSent,
        Exact(frag_needed(&f, VIP1, 1480)),
    ));
    let f = tcp4(VIP1, 80, TCP_ACK, 1480 - 40, |_| {});
    v.push(case(
        "v4 1480-byte packet fits exactly",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 14, m11, LB0_MAC, b1)),
    ));
    let f = udp4(VIP1, 53, 1600 - 28);
    v.push(case(
        "v4 l2 packet over the link mtu: frag needed, mtu 1500",
        f.clone(),
        XDP_TX,
        Outcome::IcmpTooBigSent,
        Exact(frag_needed(&f, VIP1, 1500)),
    ));
    let f = tcp6(VIP6, 80, TCP_ACK, 1500 - 60, |_| {});
    v.push(case(
        "v6 1500-byte packet: packet too big, mtu 1460",
        f.clone(),
        XDP_TX,
        Outcome::IcmpTooBigSent,
        Exact(packet_too_big(&f, VIP6, 1460)),
    ));

    // --- ICMP errors about VIP flows --------------------------------------------
    let f = icmp4_error(VIP1, 80, 3, 4, 0);
    v.push(case(
        "v4 frag-needed about a vip flow: to its backend",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 14, m11, LB0_MAC, b1)),
    ));
    let f = icmp4_error(VIP1, 80, 3, 1, 0);
    v.push(case(
        "v4 host-unreachable about a vip flow",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip4(&f, 14, m11, LB0_MAC, b1)),
    ));
    v.push(case(
        "v4 time-exceeded is not steered",
        icmp4_error(VIP1, 80, 11, 0, 0),
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));
    v.push(case(
        "v4 icmp error about a non-vip port",
        icmp4_error(VIP1, 8080, 3, 4, 0),
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));
    let mut f = icmp4_error(VIP1, 80, 3, 4, 0);
    f.truncate(14 + 20 + 8 + 20 + 2);
    let l = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&l.to_be_bytes());
    v.push(case(
        "v4 icmp error with truncated quote",
        f,
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    v.push(case(
        "v4 icmp error too big to tunnel: dropped, no icmp about icmp",
        icmp4_error(VIP1, 80, 3, 4, 1450),
        XDP_DROP,
        Outcome::DropTooBig,
        Same,
    ));
    let f = icmp6_error(VIP6, 80, 2);
    let k = vip6_key(80);
    v.push(case(
        "v6 packet-too-big about a vip flow: to its backend",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip6(&f, 14, m11, LB0_MAC, b6_4, &k)),
    ));
    v.push(case(
        "v6 echo request to vip",
        {
            let m = icmp6(CLIENT_V6, VIP6, 128, 0, [0, 1, 0, 1], &[0u8; 8]);
            eth(
                LB0_MAC,
                CLIENT_MAC,
                ETH_P_IPV6,
                &ipv6(&V6::new(CLIENT_V6, VIP6, 58), &m),
            )
        },
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));

    // --- IPv6 -------------------------------------------------------------------
    let f = tcp6(VIP6, 80, TCP_SYN, 0, |_| {});
    v.push(case(
        "v6 tcp syn to ipip vip",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip6(&f, 14, m11, LB0_MAC, b6_4, &k)),
    ));
    let f = tcp6(VIP6, 80, TCP_ACK, 64, |h| {
        h.tclass = 0xb8;
        h.hop = 1;
        h.flow = 0x12345;
    });
    v.push(case(
        "v6 traffic class copied, hop limit 1 untouched",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip6(&f, 14, m11, LB0_MAC, b6_4, &k)),
    ));
    let f = tcp6(
        Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2),
        8443,
        TCP_SYN,
        0,
        |_| {},
    );
    let kw = key(
        c6(),
        IpAddr::V6(Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2)),
        CPORT,
        8443,
        PROTO_TCP,
    );
    v.push(case(
        "v6 wildcard vip",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(ipip6(
            &f,
            14,
            m12,
            LB0_MAC,
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x12),
            &kw,
        )),
    ));
    let f = udp6(VIP6, 53, 40);
    v.push(case(
        "v6 udp to l2 vip: MACs rewritten only",
        f.clone(),
        XDP_TX,
        Outcome::Tx,
        Exact(remac(&f, m12, LB0_MAC)),
    ));
    let vip3 = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 3);
    let f = tcp6(vip3, 80, TCP_SYN, 0, |_| {});
    let k3 = key(c6(), IpAddr::V6(vip3), CPORT, 80, PROTO_TCP);
    v.push(case(
        "v6 backend behind another interface: redirect",
        f.clone(),
        XDP_REDIRECT,
        Outcome::Redirect,
        Exact(ipip6(
            &f,
            14,
            backend_mac(1, 0x21),
            LB1_MAC,
            Ipv6Addr::new(0xfd01, 0, 0, 0, 0, 0, 0, 0x21),
            &k3,
        )),
    ));
    v.push(case(
        "v6 not a vip",
        tcp6(LB0_V6, 22, TCP_SYN, 0, |_| {}),
        XDP_PASS,
        Outcome::PassNotVip,
        Same,
    ));
    let f = eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IPV6,
        &ipv6(&V6::new(CLIENT_V6, VIP6, 0), &[6, 0, 1, 4, 0, 0, 0, 0]),
    );
    v.push(case(
        "v6 hop-by-hop header",
        f,
        XDP_PASS,
        Outcome::PassUnsupported,
        Same,
    ));
    let f = eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IPV6,
        &ipv6(
            &V6::new(CLIENT_V6, VIP6, 44),
            &[6, 0, 0, 1, 0, 0, 0, 1, 0, 0],
        ),
    );
    v.push(case(
        "v6 fragment header",
        f,
        XDP_PASS,
        Outcome::PassUnsupported,
        Same,
    ));
    let full6 = tcp6(VIP6, 80, TCP_SYN, 0, |_| {});
    v.push(case(
        "truncated IPv6 header",
        full6[..14 + 30].to_vec(),
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    let mut f = full6.clone();
    f[18..20].copy_from_slice(&400u16.to_be_bytes());
    v.push(case(
        "IPv6 payload length beyond the frame",
        f,
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    let f = eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IPV6,
        &ipv6(&V6::new(CLIENT_V6, VIP6, 6), &[0x9c, 0x40, 0, 80, 0, 0]),
    );
    v.push(case(
        "v6 truncated TCP header",
        f,
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    let mut f = full6;
    f[14] = 0x40;
    v.push(case(
        "IPv6 ethertype with version 4",
        f,
        XDP_PASS,
        Outcome::PassMalformed,
        Same,
    ));
    v
}

/// Where two frames part, with the bytes around it.
fn diff(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(8);
    let show = |f: &[u8]| format!("{:02x?}", &f[from.min(f.len())..(at + 24).min(f.len())]);
    format!(
        "output differs at byte {at} (lengths {} / {}):\n    got  [{from}..] {}\n    want [{from}..] {}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    )
}

#[test]
fn packet_table() {
    if !privileged("packet_table") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&lab::settings()).expect("balancer loads through the verifier");
        lab::program(&mut b, &lab::standard_vips());
        let lb0 = lab::ifindex("lb0");
        let cases = cases();
        assert!(cases.len() >= 40, "only {} cases", cases.len());
        let mut failures = Vec::new();
        for c in &cases {
            let before = lab::outcomes(&b);
            let (action, out) = lab::run(b.program(), lb0, &c.frame);
            let counted = lab::delta(&before, &lab::outcomes(&b));
            let mut problems = Vec::new();
            if action != c.action {
                problems.push(format!("action {action}, want {}", c.action));
            }
            let final_outcomes: Vec<_> = counted
                .iter()
                .filter(|(o, _)| {
                    !matches!(
                        o,
                        Outcome::FlowHit | Outcome::FlowMiss | Outcome::IcmpErrorSteered
                    )
                })
                .collect();
            if final_outcomes != [&(c.outcome, 1)] {
                problems.push(format!(
                    "outcome counters moved {counted:?}, want {:?} +1",
                    c.outcome
                ));
            }
            let want = match &c.out {
                Out::Same => &c.frame,
                Out::Exact(w) => w,
            };
            if &out != want {
                problems.push(diff(&out, want));
            }
            if !problems.is_empty() {
                failures.push(format!("[{}] {}", c.name, problems.join("; ")));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
        eprintln!("{} packet cases passed", cases.len());
    });
}

/// Frames shorter than an Ethernet header never reach an XDP program: the
/// kernel refuses them (BPF_PROG_TEST_RUN mirrors the driver's minimum).
#[test]
fn runt_frames_are_refused_before_the_program() {
    if !privileged("runt_frames_are_refused_before_the_program") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let b = Balancer::load(&lab::settings()).expect("load");
        for len in [0usize, 13] {
            let frame = vec![0u8; len];
            let mut out = vec![0u8; 64];
            let ctx = lab::xdp_md(lab::ifindex("lb0"), len);
            let r = aya::programs::TestRun::test_run(
                b.program(),
                aya::programs::TestRunOptions {
                    data_in: Some(&frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ..aya::programs::TestRunOptions::new()
                },
            );
            assert!(r.is_err(), "{len}-byte frame was accepted: {r:?}");
        }
    });
}
