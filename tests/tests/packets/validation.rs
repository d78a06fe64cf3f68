//! What the balancer refuses to forward (docs/architecture.md, "What is
//! forwarded"): frames for another host, headers that disagree with the IP
//! length, and VIP packets the kernel would not forward either (fragments,
//! options, a bad checksum, TTL 0, martian sources, too big without DF).
//! Passed frames and dropped ones leave the program untouched; the checks
//! run in a fixed order, so a packet failing two is counted by the first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::Outcome;
use xlb_tests::{
    lab::{CLIENT_MAC, CLIENT_V4, CLIENT_V6, LB0_MAC},
    packet::*,
};

use crate::{
    Case,
    frames::{
        B1, B6_1, CPORT, M11, M12, VIP_WILD, VIP1, VIP6, XDP_DROP, XDP_PASS, XDP_TX, c4,
        icmp4_error, icmp6_error, ipip4, ipip6, key, remac, tcp4, tcp6, udp4,
    },
    rewritten, unchanged,
};

fn bad_l4(name: &'static str, frame: Vec<u8>) -> Case {
    unchanged(name, frame, XDP_PASS, Outcome::PassBadL4)
}

fn dropped(name: &'static str, frame: Vec<u8>, outcome: Outcome) -> Case {
    unchanged(name, frame, XDP_DROP, outcome)
}

/// `frame` with `edit` applied.
fn edited(mut frame: Vec<u8>, edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    edit(&mut frame);
    frame
}

/// Recomputes the IPv4 header checksum of an untagged frame after an edit.
fn fix_ip_checksum(f: &mut [u8]) {
    let hl = usize::from(f[14] & 0x0f) * 4;
    f[24..26].fill(0);
    let c = checksum(&[&f[14..14 + hl]]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

/// An IPv4 packet with header `h` around `l4`, as it arrives on lb0.
fn v4(h: &V4, l4: &[u8]) -> Vec<u8> {
    eth(LB0_MAC, CLIENT_MAC, ETH_P_IP, &ipv4(h, l4))
}

fn v6(h: &V6, l4: &[u8]) -> Vec<u8> {
    eth(LB0_MAC, CLIENT_MAC, ETH_P_IPV6, &ipv6(h, l4))
}

/// A SYN from `src:sport` to VIP1:80 (IPv4, ipip to B1), header tweaked.
fn syn4(src: Ipv4Addr, sport: u16, tweak: impl FnOnce(&mut V4)) -> Vec<u8> {
    let mut h = V4::new(src, VIP1, 6);
    tweak(&mut h);
    let seg = tcp(IpAddr::V4(src), IpAddr::V4(VIP1), sport, 80, TCP_SYN, &[]);
    v4(&h, &seg)
}

/// A SYN from `src` to VIP6:80, header tweaked.
fn syn6(src: Ipv6Addr, tweak: impl FnOnce(&mut V6)) -> Vec<u8> {
    let mut h = V6::new(src, VIP6, 6);
    tweak(&mut h);
    let seg = tcp(IpAddr::V6(src), IpAddr::V6(VIP6), CPORT, 80, TCP_SYN, &[]);
    v6(&h, &seg)
}

/// A UDP datagram to VIP1:53 (the `l2` VIP) whose length field says `len`.
fn udp_len(len: u16, payload: usize) -> Vec<u8> {
    edited(udp4(VIP1, 53, payload), |f| {
        f[38..40].copy_from_slice(&len.to_be_bytes());
    })
}

/// The ethernet part of the lab: frames to other MACs, tagged frames.
fn ethernet() -> Vec<Case> {
    let syn = tcp4(VIP1, 80, TCP_SYN, 0, |_| {});
    let to = |mac: [u8; 6]| edited(syn.clone(), |f| f[..6].copy_from_slice(&mac));
    let other_host = |name, frame| unchanged(name, frame, XDP_PASS, Outcome::PassOtherHost);
    vec![
        other_host(
            "vip syn to another host's MAC",
            to([0x02, 0, 0, 0, 0, 0x99]),
        ),
        other_host("vip syn to the broadcast MAC", to([0xff; 6])),
        other_host(
            "vip syn to a multicast MAC",
            to([0x01, 0x00, 0x5e, 0, 0, 1]),
        ),
        other_host(
            "v6 vip syn to an IPv6 multicast MAC",
            edited(tcp6(VIP6, 80, TCP_SYN, 0, |_| {}), |f| {
                f[..6].copy_from_slice(&[0x33, 0x33, 0, 0, 0, 1]);
            }),
        ),
        // Whose MAC a frame is for is asked only of frames that may be VIP
        // traffic; the others are passed either way, counted as what they
        // are.
        unchanged(
            "arp request (broadcast)",
            eth([0xff; 6], CLIENT_MAC, ETH_P_ARP, &[0u8; 28]),
            XDP_PASS,
            Outcome::PassNotIp,
        ),
        unchanged(
            "non-VIP syn to another host's MAC",
            edited(
                tcp4(Ipv4Addr::new(192, 0, 2, 80), 80, TCP_SYN, 0, |_| {}),
                |f| {
                    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
                },
            ),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
        unchanged(
            "tagged frame to another host",
            eth_vlan(
                [0x02, 0, 0, 0, 0, 0x99],
                CLIENT_MAC,
                100,
                ETH_P_IP,
                &syn[14..],
            ),
            XDP_PASS,
            Outcome::PassVlan,
        ),
        unchanged(
            "802.1ad (QinQ) tagged vip syn",
            edited(
                eth_vlan(LB0_MAC, CLIENT_MAC, 100, ETH_P_IP, &syn[14..]),
                |f| f[12..14].copy_from_slice(&0x88a8u16.to_be_bytes()),
            ),
            XDP_PASS,
            Outcome::PassVlan,
        ),
    ]
}

/// IP and L4 lengths: the IP length field, not the frame, ends the packet.
fn lengths() -> Vec<Case> {
    // Total length 24: the IP header and 4 bytes of the UDP header (the
    // ports of VIP1:53), zero padding up to the 60-byte Ethernet minimum.
    let udp_cut = edited(udp4(VIP1, 53, 0), |f| {
        f[16..18].copy_from_slice(&24u16.to_be_bytes());
        f.truncate(14 + 24);
        f.resize(60, 0);
        fix_ip_checksum(f);
    });
    let v6_short = edited(tcp6(VIP6, 80, TCP_SYN, 0, |_| {}), |f| {
        f[18..20].copy_from_slice(&12u16.to_be_bytes());
    });
    let tcp_doff = |doff: u8| {
        let seg = edited(tcp(c4(), IpAddr::V4(VIP1), CPORT, 80, TCP_SYN, &[]), |s| {
            s[12] = doff << 4
        });
        v4(&V4::new(CLIENT_V4, VIP1, 6), &seg)
    };
    let mut cases = vec![
        bad_l4("v4 total length ends inside the UDP header", udp_cut),
        bad_l4("v6 payload length short of the TCP header", v6_short),
        bad_l4("tcp data offset 15 in a 20-byte segment", tcp_doff(15)),
        bad_l4("tcp data offset 0", tcp_doff(0)),
        bad_l4("tcp data offset 4", tcp_doff(4)),
        bad_l4("udp length beyond the IP payload", udp_len(8 + 21, 20)),
        rewritten(
            "udp length shorter than the IP payload: trimmed by the kernel, forwarded",
            udp_len(8 + 4, 20),
            XDP_TX,
            Outcome::Tx,
            |f| remac(f, M12, LB0_MAC),
        ),
        rewritten(
            "ethernet padding after a short udp datagram is not part of it",
            edited(udp4(VIP1, 53, 2), |f| f.resize(60, 0)),
            XDP_TX,
            Outcome::Tx,
            |f| remac(f, M12, LB0_MAC),
        ),
        unchanged(
            "v6 payload length 0 (jumbogram)",
            edited(tcp6(VIP6, 80, TCP_SYN, 0, |_| {}), |f| f[18..20].fill(0)),
            XDP_PASS,
            Outcome::PassMalformed,
        ),
        unchanged(
            "v6 next header ipv6 (a tunnel) is not parsed",
            v6(&V6::new(CLIENT_V6, VIP6, 41), &[0u8; 40]),
            XDP_PASS,
            Outcome::PassUnsupported,
        ),
    ];
    for len in 0..8u16 {
        let name: &'static str = Box::leak(format!("udp length {len}").into_boxed_str());
        cases.push(bad_l4(name, udp_len(len, 20)));
    }
    cases
}

/// ICMP to a VIP: the quote must lie within the outer packet.
fn icmp() -> Vec<Case> {
    // The quoted ports begin 20 bytes into the quote; the outer packet is
    // cut 2 bytes into them (the frame keeps the rest as padding).
    let straddle = edited(icmp4_error(VIP1, 80, 3, 4, 0), |f| {
        let cut = 20 + 8 + 20 + 2;
        f[16..18].copy_from_slice(&(cut as u16).to_be_bytes());
        fix_ip_checksum(f);
    });
    let quoted_icmp6 = edited(icmp6_error(VIP6, 80, 1), |f| {
        // next header of the quoted IPv6 header
        f[14 + 40 + 8 + 6] = 58;
    });
    let short_echo = v4(&V4::new(CLIENT_V4, VIP1, 1), &[8, 0, 0xf7, 0xff]);
    let mut first_frag = icmp4_error(VIP1, 80, 3, 4, 0);
    first_frag[20] |= 0x20;
    fix_ip_checksum(&mut first_frag);
    let later_frag = v4(
        &V4 {
            frag: 0x0010,
            ..V4::new(CLIENT_V4, VIP1, 1)
        },
        &[0x66; 32],
    );
    vec![
        bad_l4(
            "v4 icmp error whose quoted ports straddle the outer IP end",
            straddle,
        ),
        bad_l4("v6 icmp error quoting an icmpv6 packet", quoted_icmp6),
        bad_l4("v4 icmp shorter than its 8-byte header", short_echo),
        dropped(
            "v4 icmp error about a vip flow, first fragment",
            first_frag,
            Outcome::DropFragment,
        ),
        unchanged(
            "v4 icmp later fragment to a vip address: no quote, not steered",
            later_frag,
            XDP_PASS,
            Outcome::PassNotVip,
        ),
    ]
}

/// VIP packets the kernel would not forward.
fn vip_checks() -> Vec<Case> {
    let martian4 = |a, b, c, d| syn4(Ipv4Addr::new(a, b, c, d), CPORT, |_| {});
    let martian6 = |a: Ipv6Addr| syn6(a, |_| {});
    vec![
        dropped(
            "v4 udp first fragment to a wildcard vip",
            edited(udp4(VIP_WILD, 5000, 64), |f| {
                f[20] = 0x20;
                fix_ip_checksum(f);
            }),
            Outcome::DropFragment,
        ),
        dropped(
            "v4 ip options (router alert)",
            syn4(CLIENT_V4, CPORT, |h| h.options = vec![0x94, 0x04, 0, 0]),
            Outcome::DropIpOptions,
        ),
        dropped(
            "v4 bad header checksum: no flow opened",
            edited(syn4(CLIENT_V4, 41_001, |_| {}), |f| f[24] ^= 0x40),
            Outcome::DropBadChecksum,
        )
        .no_new_flow(),
        dropped(
            "v4 ttl 0",
            syn4(CLIENT_V4, CPORT, |h| h.ttl = 0),
            Outcome::DropTtlZero,
        ),
        dropped(
            "v6 hop limit 0",
            syn6(CLIENT_V6, |h| h.hop = 0),
            Outcome::DropTtlZero,
        ),
        dropped(
            "v4 source 0.0.0.0/8",
            martian4(0, 1, 2, 3),
            Outcome::DropMartian,
        ),
        dropped(
            "v4 source 127.0.0.0/8",
            martian4(127, 0, 0, 1),
            Outcome::DropMartian,
        ),
        dropped(
            "v4 source multicast",
            martian4(224, 0, 0, 5),
            Outcome::DropMartian,
        ),
        dropped(
            "v4 source 240.0.0.0/4",
            martian4(240, 0, 0, 1),
            Outcome::DropMartian,
        ),
        dropped(
            "v4 source broadcast",
            martian4(255, 255, 255, 255),
            Outcome::DropMartian,
        ),
        dropped(
            "v4 source is the vip",
            martian4(10, 99, 0, 1),
            Outcome::DropMartian,
        ),
        dropped(
            "v6 source ::",
            martian6(Ipv6Addr::UNSPECIFIED),
            Outcome::DropMartian,
        ),
        dropped(
            "v6 source ::1",
            martian6(Ipv6Addr::LOCALHOST),
            Outcome::DropMartian,
        ),
        dropped(
            "v6 source multicast",
            martian6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
            Outcome::DropMartian,
        ),
        dropped(
            "v6 source v4-mapped",
            martian6(CLIENT_V4.to_ipv6_mapped()),
            Outcome::DropMartian,
        ),
        dropped("v6 source is the vip", martian6(VIP6), Outcome::DropMartian),
        rewritten(
            "v6 source ::2 is no martian",
            martian6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 2)),
            XDP_TX,
            Outcome::Tx,
            |f| {
                let src = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 2));
                ipip6(
                    f,
                    14,
                    M11,
                    LB0_MAC,
                    B6_1,
                    &key(src, IpAddr::V6(VIP6), CPORT, 80, 6),
                )
            },
        ),
        rewritten(
            "v4 source 223.255.255.255 is no martian",
            martian4(223, 255, 255, 255),
            XDP_TX,
            Outcome::Tx,
            |f| ipip4(f, 14, M11, LB0_MAC, B1),
        ),
        dropped(
            "v4 too big with DF clear: no frag-needed",
            tcp4(VIP1, 80, TCP_ACK, 1500 - 40, |h| h.frag = 0),
            Outcome::DropTooBigNoDf,
        ),
        // Only VIP traffic is checked: the rest is the kernel's.
        unchanged(
            "not a vip: ttl 0, bad checksum, martian source passed",
            edited(
                v4(
                    &V4 {
                        ttl: 0,
                        ..V4::new(Ipv4Addr::new(127, 0, 0, 1), CLIENT_V4, 17)
                    },
                    &[0u8; 8],
                ),
                |f| f[24] ^= 1,
            ),
            XDP_PASS,
            Outcome::PassNotVip,
        ),
    ]
}

/// A packet failing several checks is counted by the first in the order
/// fragment, options, checksum, TTL, martian, L4.
fn order() -> Vec<Case> {
    vec![
        dropped(
            "first fragment with options",
            syn4(CLIENT_V4, CPORT, |h| {
                h.frag = 0x2000;
                h.options = vec![1, 1, 1, 1];
            }),
            Outcome::DropFragment,
        ),
        dropped(
            "options with a bad checksum",
            edited(
                syn4(CLIENT_V4, CPORT, |h| h.options = vec![1, 1, 1, 1]),
                |f| f[24] ^= 1,
            ),
            Outcome::DropIpOptions,
        ),
        dropped(
            "bad checksum with ttl 0",
            edited(syn4(CLIENT_V4, CPORT, |h| h.ttl = 0), |f| f[24] ^= 1),
            Outcome::DropBadChecksum,
        ),
        dropped(
            "ttl 0 from a martian source",
            syn4(Ipv4Addr::new(127, 0, 0, 1), CPORT, |h| h.ttl = 0),
            Outcome::DropTtlZero,
        ),
        dropped(
            "martian source with tcp data offset 4",
            edited(syn4(Ipv4Addr::new(127, 0, 0, 1), CPORT, |_| {}), |f| {
                f[14 + 20 + 12] = 0x40;
            }),
            Outcome::DropMartian,
        ),
    ]
}

pub(crate) fn cases() -> Vec<Case> {
    let mut v = ethernet();
    v.extend(lengths());
    v.extend(icmp());
    v.extend(vip_checks());
    v.extend(order());
    v
}
