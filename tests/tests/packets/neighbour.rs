//! ARP and neighbour discovery for owned VIPs: the program answers a
//! request for an address in the owned map with the receiving interface's
//! MAC, and passes everything else untouched. The expected replies are
//! written here field by field from RFC 826 and RFC 4861, not from the
//! program's code.

use std::net::Ipv6Addr;

use lb_common::Outcome;
use xlb_tests::{
    lab::{CLIENT_MAC, CLIENT_V4, CLIENT_V6, LB0_MAC, LB0_V4},
    packet::*,
};

use crate::{
    Case,
    frames::{VIP1, VIP6, XDP_PASS, XDP_TX},
    rewritten, unchanged,
};

const BROADCAST: [u8; 6] = [0xff; 6];
/// A VIP of the lab that this node does not own.
const VIP_NOT_OWNED: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 99, 0, 2);
const VIP6_NOT_OWNED: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2);

/// An Ethernet/IPv4 ARP packet.
pub(crate) fn arp(op: u16, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa);
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa);
    a
}

/// The reply RFC 826 prescribes for `request` (an Ethernet frame holding
/// an ARP request) from a station with MAC `mac`: the sender becomes the
/// target, we the sender; the frame goes to the asker's hardware address.
pub(crate) fn arp_reply(request: &[u8], mac: [u8; 6]) -> Vec<u8> {
    let a = &request[14..];
    let sha: [u8; 6] = a[8..14].try_into().unwrap();
    let spa: [u8; 4] = a[14..18].try_into().unwrap();
    let tpa: [u8; 4] = a[24..28].try_into().unwrap();
    let mut out = eth(sha, mac, ETH_P_ARP, &arp(2, mac, tpa, sha, spa));
    // Whatever padding the request carried stays.
    out.extend_from_slice(&request[out.len()..]);
    out
}

/// The solicited-node multicast group of `a` (RFC 4291 2.7.1).
pub(crate) fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet group of an IPv6 multicast address (RFC 2464 7).
pub(crate) fn group_mac(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// A neighbour solicitation for `target` with the options given (each
/// already a whole option), as an Ethernet frame.
pub(crate) fn ns(
    eth_dst: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    options: &[u8],
    tweak: impl FnOnce(&mut V6),
) -> Vec<u8> {
    let mut body = target.octets().to_vec();
    body.extend_from_slice(options);
    let msg = icmp6(src, dst, 135, 0, [0; 4], &body);
    let mut h = V6::new(src, dst, 58);
    h.hop = 255;
    tweak(&mut h);
    eth(eth_dst, CLIENT_MAC, ETH_P_IPV6, &ipv6(&h, &msg))
}

/// A link-layer address option (type 1: source, 2: target).
pub(crate) fn lla(kind: u8, mac: [u8; 6]) -> Vec<u8> {
    let mut o = vec![kind, 1];
    o.extend_from_slice(&mac);
    o
}

/// The advertisement RFC 4861 7.2.4 prescribes: from the target, to the
/// solicitation's source (all nodes, for a DAD probe from ::), hop limit
/// 255, Solicited (not for DAD) and Override set, our MAC as the target
/// link-layer option; the frame to the asker's link-layer address.
pub(crate) fn na(
    to_mac: [u8; 6],
    dst: Ipv6Addr,
    target: Ipv6Addr,
    mac: [u8; 6],
    dad: bool,
) -> Vec<u8> {
    let flags = if dad { 0x20 } else { 0x60 };
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&lla(2, mac));
    let msg = icmp6(target, dst, 136, 0, [flags, 0, 0, 0], &body);
    let mut h = V6::new(target, dst, 58);
    h.hop = 255;
    eth(to_mac, mac, ETH_P_IPV6, &ipv6(&h, &msg))
}

fn o4(a: std::net::Ipv4Addr) -> [u8; 4] {
    a.octets()
}

pub(crate) fn cases() -> Vec<Case> {
    let ask = |tpa: std::net::Ipv4Addr| {
        eth(
            BROADCAST,
            CLIENT_MAC,
            ETH_P_ARP,
            &arp(1, CLIENT_MAC, o4(CLIENT_V4), [0; 6], o4(tpa)),
        )
    };
    let mut padded = ask(VIP1);
    padded.resize(60, 0);
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let sn = solicited_node(VIP6);
    let slla = lla(1, CLIENT_MAC);
    vec![
        rewritten(
            "arp request for an owned vip, broadcast",
            ask(VIP1),
            XDP_TX,
            Outcome::ArpReplied,
            |f| arp_reply(f, LB0_MAC),
        ),
        rewritten(
            "arp request padded to 60 bytes",
            padded,
            XDP_TX,
            Outcome::ArpReplied,
            |f| arp_reply(f, LB0_MAC),
        ),
        rewritten(
            "arp request unicast to us (a cache refresh)",
            eth(
                LB0_MAC,
                CLIENT_MAC,
                ETH_P_ARP,
                &arp(1, CLIENT_MAC, o4(CLIENT_V4), LB0_MAC, o4(VIP1)),
            ),
            XDP_TX,
            Outcome::ArpReplied,
            |f| arp_reply(f, LB0_MAC),
        ),
        rewritten(
            "arp probe (sender 0.0.0.0) for an owned vip is defended",
            eth(
                BROADCAST,
                CLIENT_MAC,
                ETH_P_ARP,
                &arp(1, CLIENT_MAC, [0; 4], [0; 6], o4(VIP1)),
            ),
            XDP_TX,
            Outcome::ArpReplied,
            |f| arp_reply(f, LB0_MAC),
        ),
        unchanged(
            "arp request for a vip not owned",
            ask(VIP_NOT_OWNED),
            XDP_PASS,
            Outcome::PassNotIp,
        ),
        unchanged(
            "arp request for the router's own address",
            ask(LB0_V4),
            XDP_PASS,
            Outcome::PassNotIp,
        ),
        unchanged(
            "gratuitous arp from elsewhere for an owned vip",
            eth(
                BROADCAST,
                CLIENT_MAC,
                ETH_P_ARP,
                &arp(1, CLIENT_MAC, o4(VIP1), [0; 6], o4(VIP1)),
            ),
            XDP_PASS,
            Outcome::PassNotIp,
        ),
        unchanged(
            "arp reply naming an owned vip",
            eth(
                LB0_MAC,
                CLIENT_MAC,
                ETH_P_ARP,
                &arp(2, CLIENT_MAC, o4(VIP1), LB0_MAC, o4(LB0_V4)),
            ),
            XDP_PASS,
            Outcome::PassNotIp,
        ),
        unchanged(
            "arp with 8-byte hardware addresses",
            eth(BROADCAST, CLIENT_MAC, ETH_P_ARP, &{
                let mut a = arp(1, CLIENT_MAC, o4(CLIENT_V4), [0; 6], o4(VIP1));
                a[4] = 8;
                a
            }),
            XDP_PASS,
            Outcome::PassNotIp,
        ),
        unchanged(
            "arp request cut short",
            ask(VIP1)[..40].to_vec(),
            XDP_PASS,
            Outcome::PassNotIp,
        ),
        unchanged(
            "arp request to another host's mac",
            eth(
                [0x02, 0, 0, 0, 0, 0x77],
                CLIENT_MAC,
                ETH_P_ARP,
                &arp(1, CLIENT_MAC, o4(CLIENT_V4), [0; 6], o4(VIP1)),
            ),
            XDP_PASS,
            Outcome::PassOtherHost,
        ),
        unchanged(
            "arp request from a multicast sender address",
            eth(
                BROADCAST,
                CLIENT_MAC,
                ETH_P_ARP,
                &arp(1, [0x01, 0, 0x5e, 0, 0, 1], o4(CLIENT_V4), [0; 6], o4(VIP1)),
            ),
            XDP_PASS,
            Outcome::PassMalformed,
        ),
        rewritten(
            "ns to the solicited-node group with a source lla",
            ns(group_mac(sn), CLIENT_V6, sn, VIP6, &slla, |_| {}),
            XDP_TX,
            Outcome::NdpAdvertised,
            |_| na(CLIENT_MAC, CLIENT_V6, VIP6, LB0_MAC, false),
        ),
        rewritten(
            "ns unicast to the vip without options (answered to the frame's source)",
            ns(LB0_MAC, CLIENT_V6, VIP6, VIP6, &[], |_| {}),
            XDP_TX,
            Outcome::NdpAdvertised,
            |_| na(CLIENT_MAC, CLIENT_V6, VIP6, LB0_MAC, false),
        ),
        rewritten(
            "ns whose source lla differs from the frame's source",
            ns(
                group_mac(sn),
                CLIENT_V6,
                sn,
                VIP6,
                &lla(1, [0x02, 0, 0, 0, 0, 0x42]),
                |_| {},
            ),
            XDP_TX,
            Outcome::NdpAdvertised,
            |_| na([0x02, 0, 0, 0, 0, 0x42], CLIENT_V6, VIP6, LB0_MAC, false),
        ),
        rewritten(
            "ns with a nonce option and a source lla",
            ns(
                group_mac(sn),
                CLIENT_V6,
                sn,
                VIP6,
                &[&[14u8, 1, 1, 2, 3, 4, 5, 6][..], &slla].concat(),
                |_| {},
            ),
            XDP_TX,
            Outcome::NdpAdvertised,
            |_| na(CLIENT_MAC, CLIENT_V6, VIP6, LB0_MAC, false),
        ),
        rewritten(
            "dad probe for an owned vip is defended to all nodes",
            ns(group_mac(sn), Ipv6Addr::UNSPECIFIED, sn, VIP6, &[], |_| {}),
            XDP_TX,
            Outcome::NdpAdvertised,
            |_| na(group_mac(all_nodes), all_nodes, VIP6, LB0_MAC, true),
        ),
        unchanged(
            "ns for a vip not owned",
            ns(
                group_mac(solicited_node(VIP6_NOT_OWNED)),
                CLIENT_V6,
                solicited_node(VIP6_NOT_OWNED),
                VIP6_NOT_OWNED,
                &slla,
                |_| {},
            ),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
        unchanged(
            "ns with hop limit 254",
            ns(group_mac(sn), CLIENT_V6, sn, VIP6, &slla, |h| h.hop = 254),
            XDP_PASS,
            Outcome::PassBadL4,
        ),
        unchanged(
            "ns with a wrong checksum",
            {
                let mut f = ns(group_mac(sn), CLIENT_V6, sn, VIP6, &slla, |_| {});
                f[56] ^= 0x01;
                f
            },
            XDP_PASS,
            Outcome::PassBadL4,
        ),
        unchanged(
            "ns with a zero-length option",
            ns(
                group_mac(sn),
                CLIENT_V6,
                sn,
                VIP6,
                &[1, 0, 0, 0, 0, 0, 0, 0],
                |_| {},
            ),
            XDP_PASS,
            Outcome::PassBadL4,
        ),
        unchanged(
            "ns with an option running past the message",
            ns(
                group_mac(sn),
                CLIENT_V6,
                sn,
                VIP6,
                &[1, 2, 1, 2, 3, 4, 5, 6],
                |_| {},
            ),
            XDP_PASS,
            Outcome::PassBadL4,
        ),
        unchanged(
            "dad probe carrying a source lla",
            ns(
                group_mac(sn),
                Ipv6Addr::UNSPECIFIED,
                sn,
                VIP6,
                &slla,
                |_| {},
            ),
            XDP_PASS,
            Outcome::PassBadL4,
        ),
        unchanged(
            "dad probe carrying a 16-byte source link-layer option",
            ns(
                group_mac(sn),
                Ipv6Addr::UNSPECIFIED,
                sn,
                VIP6,
                &[1, 2, 2, 0, 0, 0, 0, 0x42, 0, 0, 0, 0, 0, 0, 0, 0],
                |_| {},
            ),
            XDP_PASS,
            Outcome::PassBadL4,
        ),
        unchanged(
            "ns with a source link-layer option not Ethernet-sized",
            ns(
                group_mac(sn),
                CLIENT_V6,
                sn,
                VIP6,
                &[1, 2, 2, 0, 0, 0, 0, 0x42, 0, 0, 0, 0, 0, 0, 0, 0],
                |_| {},
            ),
            XDP_PASS,
            Outcome::PassBadL4,
        ),
        rewritten(
            "ns with two source link-layer options: the first counts",
            ns(
                group_mac(sn),
                CLIENT_V6,
                sn,
                VIP6,
                &[lla(1, [0x02, 0, 0, 0, 0, 0x42]), slla.clone()].concat(),
                |_| {},
            ),
            XDP_TX,
            Outcome::NdpAdvertised,
            |_| na([0x02, 0, 0, 0, 0, 0x42], CLIENT_V6, VIP6, LB0_MAC, false),
        ),
        unchanged(
            "ns from an all-zero ethernet source",
            {
                let mut f = ns(LB0_MAC, CLIENT_V6, VIP6, VIP6, &[], |_| {});
                f[6..12].fill(0);
                f
            },
            XDP_PASS,
            Outcome::PassBadL4,
        ),
        unchanged(
            "ns to another group",
            ns(
                group_mac(all_nodes),
                CLIENT_V6,
                all_nodes,
                VIP6,
                &slla,
                |_| {},
            ),
            XDP_PASS,
            Outcome::PassBadL4,
        ),
        unchanged(
            "ns to the group under another host's ethernet group",
            ns(group_mac(all_nodes), CLIENT_V6, sn, VIP6, &slla, |_| {}),
            XDP_PASS,
            Outcome::PassOtherHost,
        ),
        unchanged(
            "ns unicast to another host's mac",
            ns(
                [0x02, 0, 0, 0, 0, 0x77],
                CLIENT_V6,
                VIP6,
                VIP6,
                &slla,
                |_| {},
            ),
            XDP_PASS,
            Outcome::PassOtherHost,
        ),
    ]
}
