//! The contract of ISSUE 12 ("what the balancer may forward"), decided
//! from a frame's bytes alone: this parser shares no code with the
//! program's. Rules are named as in the contract (E1, 4a, 6d, T, M1...).
//!
//! Where the contract leaves open whether a packet is VIP traffic (a
//! fragment without ports to an exact-port VIP's address, a VIP packet
//! whose L4 header is broken and which also breaks a DROP rule), the
//! oracle accepts either PASS or DROP: the point there is that it is not
//! forwarded.

use std::ops::Range;

use lb_common::Encap;
use xlb_tests::{
    lab::{LB0_MAC, LB0_V4, LB0_V6},
    packet::verify,
};

use crate::{
    model::{self, MTU, Model, Tuple, XDP_REDIRECT, XDP_TX, bytes, hop},
    neighbour::{self, Answer},
};

#[derive(Debug)]
pub(crate) enum Expect {
    /// XDP_PASS, the frame untouched.
    Pass(&'static str),
    /// XDP_DROP.
    Drop(&'static str),
    /// XDP_PASS untouched or XDP_DROP.
    NotForwarded(&'static str),
    /// To a backend, exactly so.
    Forward(Forward),
    /// Too big once encapsulated: an ICMP "too big" back to the client,
    /// checked field by field (not byte for byte).
    TooBig(TooBig),
    /// An ARP reply or neighbour advertisement sent back (XDP_TX).
    Answer(Answer),
}

impl Expect {
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::Pass(r) | Self::Drop(r) | Self::NotForwarded(r) => r,
            Self::Forward(f) => f.reason,
            Self::TooBig(t) => t.reason,
            Self::Answer(a) => a.reason,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Forward {
    pub(crate) reason: &'static str,
    /// XDP_TX or XDP_REDIRECT.
    pub(crate) action: u32,
    /// The new Ethernet header and, for ipip, the outer IP header. An
    /// outer IPv4 header's ID and checksum are checked by rule (M2), not
    /// against these bytes.
    pub(crate) head: Vec<u8>,
    /// `Some(DF)` when `head` ends with an outer IPv4 header.
    pub(crate) outer_v4_df: Option<bool>,
    /// Bytes of the input that follow `head`: the IP packet.
    pub(crate) inner: Range<usize>,
    /// Ethernet padding after the IP packet: kept or trimmed, either way.
    pub(crate) padding: Range<usize>,
    pub(crate) flow: Tuple,
}

#[derive(Debug)]
pub(crate) struct TooBig {
    pub(crate) reason: &'static str,
    pub(crate) v4: bool,
    /// The MTU the message must announce.
    pub(crate) mtu: u32,
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn addr4(f: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0; 16];
    a[..4].copy_from_slice(&f[at..at + 4]);
    a
}

fn addr6(f: &[u8], at: usize) -> [u8; 16] {
    f[at..at + 16].try_into().expect("16 bytes")
}

/// The parsed IP layer of a frame the contract has not rejected yet.
struct Ip {
    v4: bool,
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    l4: usize,
    /// End of the IP packet by its own length field.
    end: usize,
}

/// What the L4 layer makes of a packet.
enum Target {
    /// A VIP's well-formed flow (or an ICMP error steered to one).
    Flow {
        vip: usize,
        flow: Tuple,
        icmp: bool,
    },
    /// VIP traffic that carries no ports (a later fragment to a wildcard).
    Vip,
    /// Perhaps VIP traffic, not forwardable: PASS for this reason unless a
    /// DROP rule also applies, then PASS or DROP.
    Maybe(&'static str),
    NotVip,
}

/// What the balancer must do with `f`, received on lb0.
pub(crate) fn judge(m: &Model, f: &[u8]) -> Expect {
    // Before rule E1: a request comes broadcast or to a multicast group.
    if let Some(want) = neighbour::judge(f) {
        return want;
    }
    if f[..6] != LB0_MAC {
        return Expect::Pass("E1 destination MAC not the interface's");
    }
    match be16(f, 12) {
        0x8100 | 0x88a8 => Expect::Pass("E2 VLAN tag"),
        0x0800 => ipv4(m, f),
        0x86dd => ipv6(m, f),
        _ => Expect::Pass("not IP"),
    }
}

fn ipv4(m: &Model, f: &[u8]) -> Expect {
    if f.len() < 34 {
        return Expect::Pass("4a IPv4 header beyond the frame");
    }
    let ihl = usize::from(f[14] & 0x0f) * 4;
    let total = usize::from(be16(f, 16));
    if f[14] >> 4 != 4 {
        return Expect::Pass("4a IP version not 4");
    }
    if ihl < 20 {
        return Expect::Pass("4a IHL < 5");
    }
    if ihl > total {
        return Expect::Pass("4a IHL beyond total length");
    }
    if 14 + total > f.len() {
        return Expect::Pass("4a total length beyond the frame");
    }
    let frag = be16(f, 20);
    let later = frag & 0x1fff != 0;
    let fragment = later || frag & 0x2000 != 0;
    let ip = Ip {
        v4: true,
        src: addr4(f, 26),
        dst: addr4(f, 30),
        proto: f[23],
        l4: 14 + ihl,
        end: 14 + total,
    };
    let target = if later {
        match ip.proto {
            6 | 17 if m.wildcard(&ip.dst, true, ip.proto).is_some() => Target::Vip,
            _ if m.is_vip_address(&ip.dst, true) => {
                Target::Maybe("4c later fragment to a VIP address")
            }
            _ => Target::NotVip,
        }
    } else if fragment && !matches!(ip.proto, 1 | 6 | 17) && m.is_vip_address(&ip.dst, true) {
        Target::Maybe("4c fragment to a VIP address")
    } else {
        l4_target(m, f, &ip)
    };
    let s = &f[26..30];
    let drop = if fragment {
        Some("4c fragment")
    } else if ihl > 20 {
        Some("4d IP options")
    } else if !verify(&[&f[14..14 + ihl]]) {
        Some("4e header checksum")
    } else if f[22] == 0 {
        Some("4f TTL 0")
    } else if s[0] == 0 || s[0] == 127 || s[0] >= 224 || s == &f[30..34] {
        Some("4g martian source")
    } else {
        None
    };
    let df = frag & 0x4000 != 0;
    decide(m, f, &ip, target, drop, df, "4b not a VIP")
}

fn ipv6(m: &Model, f: &[u8]) -> Expect {
    if f.len() < 54 {
        return Expect::Pass("6a IPv6 header beyond the frame");
    }
    if f[14] >> 4 != 6 {
        return Expect::Pass("6a IP version not 6");
    }
    let plen = usize::from(be16(f, 18));
    if plen == 0 {
        return Expect::Pass("6a payload length 0");
    }
    if 54 + plen > f.len() {
        return Expect::Pass("6a payload length beyond the frame");
    }
    let next = f[20];
    if !matches!(next, 6 | 17 | 58) {
        return Expect::Pass("6b extension header or other next header");
    }
    let ip = Ip {
        v4: false,
        src: addr6(f, 22),
        dst: addr6(f, 38),
        proto: next,
        l4: 54,
        end: 54 + plen,
    };
    let target = l4_target(m, f, &ip);
    let s = &ip.src;
    let unspecified_or_loopback = s[..15].iter().all(|&b| b == 0) && s[15] <= 1;
    let v4_mapped = s[..10].iter().all(|&b| b == 0) && s[10] == 0xff && s[11] == 0xff;
    let drop = if f[21] == 0 {
        Some("6d hop limit 0")
    } else if unspecified_or_loopback || s[0] == 0xff || v4_mapped || ip.src == ip.dst {
        Some("6e martian source")
    } else {
        None
    };
    decide(m, f, &ip, target, drop, true, "6c not a VIP")
}

fn decide(
    m: &Model,
    f: &[u8],
    ip: &Ip,
    target: Target,
    drop: Option<&'static str>,
    df: bool,
    not_vip: &'static str,
) -> Expect {
    match (target, drop) {
        (Target::NotVip, _) => Expect::Pass(not_vip),
        (Target::Flow { .. } | Target::Vip, Some(r)) => Expect::Drop(r),
        (Target::Maybe(_), Some(r)) => Expect::NotForwarded(r),
        (Target::Maybe(r), None) => Expect::Pass(r),
        // A VIP packet without ports is a fragment, which is a DROP rule.
        (Target::Vip, None) => unreachable!("portless VIP traffic that is no fragment"),
        (Target::Flow { vip, flow, icmp }, None) => forward(m, f, ip, vip, flow, icmp, df),
    }
}

/// The VIP and flow of a TCP/UDP packet or of an ICMP error about one.
fn l4_target(m: &Model, f: &[u8], ip: &Ip) -> Target {
    match (ip.proto, ip.v4) {
        (6 | 17, _) => transport(m, f, ip),
        (1, true) | (58, false) => icmp_error(m, f, ip),
        _ => Target::NotVip,
    }
}

fn transport(m: &Model, f: &[u8], ip: &Ip) -> Target {
    let (l4, end) = (ip.l4, ip.end);
    let ports = l4 + 4 <= end;
    let vip = if ports {
        m.lookup(&ip.dst, ip.v4, be16(f, l4 + 2), ip.proto)
    } else {
        m.wildcard(&ip.dst, ip.v4, ip.proto)
    };
    let Some(vip) = vip else {
        return if !ports && m.is_vip_address(&ip.dst, ip.v4) {
            Target::Maybe("T/U ports beyond IP end")
        } else {
            Target::NotVip
        };
    };
    let payload = end - l4;
    if ip.proto == 6 {
        if l4 + 20 > end {
            return Target::Maybe("T TCP header beyond IP end");
        }
        let doff = usize::from(f[l4 + 12] >> 4) * 4;
        if doff < 20 {
            return Target::Maybe("T TCP doff < 5");
        }
        if doff > payload {
            return Target::Maybe("T TCP doff beyond IP payload");
        }
    } else {
        if l4 + 8 > end {
            return Target::Maybe("U UDP header beyond IP end");
        }
        let len = usize::from(be16(f, l4 + 4));
        if len < 8 {
            return Target::Maybe("U UDP length < 8");
        }
        if len > payload {
            return Target::Maybe("U UDP length beyond IP payload");
        }
    }
    Target::Flow {
        vip,
        flow: Tuple {
            src: ip.src,
            dst: ip.dst,
            sport: be16(f, l4),
            dport: be16(f, l4 + 2),
            proto: ip.proto,
        },
        icmp: false,
    }
}

/// An ICMP error about a reply the VIP sent (its quoted source is the
/// VIP): the client's flow reversed, which leads to the flow's backend.
fn icmp_error(m: &Model, f: &[u8], ip: &Ip) -> Target {
    if !m.is_vip_address(&ip.dst, ip.v4) {
        return Target::NotVip;
    }
    let (l4, end) = (ip.l4, ip.end);
    if l4 + 8 > end {
        return Target::Maybe("I ICMP header beyond IP end");
    }
    let kind = f[l4];
    if !(if ip.v4 {
        kind == 3
    } else {
        kind == 1 || kind == 2
    }) {
        return Target::Maybe("ICMP message that is not steered");
    }
    let q = l4 + 8;
    let (proto, src, dst, ports) = if ip.v4 {
        if q + 20 > end {
            return Target::Maybe("I quoted header beyond IP end");
        }
        let ihl = usize::from(f[q] & 0x0f) * 4;
        if f[q] >> 4 != 4 || ihl < 20 {
            return Target::Maybe("I quoted header not IPv4");
        }
        if q + ihl + 8 > end {
            return Target::Maybe("I quoted ports beyond IP end");
        }
        (f[q + 9], addr4(f, q + 12), addr4(f, q + 16), q + ihl)
    } else {
        if q + 40 > end {
            return Target::Maybe("I quoted header beyond IP end");
        }
        if f[q] >> 4 != 6 {
            return Target::Maybe("I quoted header not IPv6");
        }
        if q + 48 > end {
            return Target::Maybe("I quoted ports beyond IP end");
        }
        (f[q + 6], addr6(f, q + 8), addr6(f, q + 24), q + 40)
    };
    if proto != 6 && proto != 17 {
        return Target::Maybe("I quoted protocol not TCP/UDP");
    }
    if src != ip.dst {
        return Target::Maybe("ICMP error about another host's packet");
    }
    let (vport, cport) = (be16(f, ports), be16(f, ports + 2));
    let Some(vip) = m.lookup(&src, ip.v4, vport, proto) else {
        return Target::Maybe("ICMP error about no VIP's flow");
    };
    Target::Flow {
        vip,
        flow: Tuple {
            src: dst,
            dst: src,
            sport: cport,
            dport: vport,
            proto,
        },
        icmp: true,
    }
}

fn forward(m: &Model, f: &[u8], ip: &Ip, vip: usize, flow: Tuple, icmp: bool, df: bool) -> Expect {
    let encap = m.vips[vip].encap;
    let (backend, _) = m.backend(vip, &flow);
    let hop = hop(backend);
    let ip_len = ip.end - 14;
    let overhead = match (encap, ip.v4) {
        (Encap::L2, _) => 0,
        (Encap::Ipip, true) => 20,
        (Encap::Ipip, false) => 40,
    };
    if ip_len + overhead > MTU {
        if icmp {
            return Expect::Drop("M1 ICMP error too big to forward");
        }
        if ip.v4 && !df {
            return Expect::Drop("M1 too big, DF clear");
        }
        return Expect::TooBig(TooBig {
            reason: if ip.v4 {
                "M1 too big, DF set"
            } else {
                "M1 too big, IPv6"
            },
            v4: ip.v4,
            mtu: (MTU - overhead) as u32,
        });
    }
    assert!(
        hop.direct || encap == Encap::Ipip,
        "fuzz topology has no l2 backend behind a gateway"
    );
    let mut head = Vec::with_capacity(54);
    head.extend_from_slice(&hop.dmac);
    head.extend_from_slice(&hop.smac);
    let b = bytes(backend);
    let mut outer_v4_df = None;
    match (encap, ip.v4) {
        (Encap::L2, _) => head.extend_from_slice(&f[12..14]),
        (Encap::Ipip, true) => {
            head.extend_from_slice(&[0x08, 0x00]);
            let len = ((ip_len + 20) as u16).to_be_bytes();
            head.extend_from_slice(&[0x45, f[15], len[0], len[1], 0, 0]);
            head.extend_from_slice(&[if df { 0x40 } else { 0 }, 0, 64, 4, 0, 0]);
            head.extend_from_slice(&LB0_V4.octets());
            head.extend_from_slice(&b[..4]);
            outer_v4_df = Some(df);
        }
        (Encap::Ipip, false) => {
            head.extend_from_slice(&[0x86, 0xdd]);
            let class = (f[14] << 4) | (f[15] >> 4);
            let label = model::flow_label(&flow);
            let len = (ip_len as u16).to_be_bytes();
            head.extend_from_slice(&[
                0x60 | (class >> 4),
                (class << 4) | (label >> 16) as u8,
                (label >> 8) as u8,
                label as u8,
                len[0],
                len[1],
                41,
                64,
            ]);
            head.extend_from_slice(&LB0_V6.octets());
            head.extend_from_slice(&b);
        }
    }
    debug_assert!(hop.action == XDP_TX || hop.action == XDP_REDIRECT);
    Expect::Forward(Forward {
        reason: forward_reason(icmp, ip.v4, encap),
        action: hop.action,
        head,
        outer_v4_df,
        inner: 14..ip.end,
        padding: ip.end..f.len(),
        flow,
    })
}

fn forward_reason(icmp: bool, v4: bool, encap: Encap) -> &'static str {
    match (icmp, v4, encap) {
        (false, true, Encap::Ipip) => "forward TCP/UDP v4 ipip",
        (false, true, Encap::L2) => "forward TCP/UDP v4 l2",
        (false, false, Encap::Ipip) => "forward TCP/UDP v6 ipip",
        (false, false, Encap::L2) => "forward TCP/UDP v6 l2",
        (true, true, Encap::Ipip) => "steer ICMP error v4 ipip",
        (true, true, Encap::L2) => "steer ICMP error v4 l2",
        (true, false, Encap::Ipip) => "steer ICMP error v6 ipip",
        (true, false, Encap::L2) => "steer ICMP error v6 l2",
    }
}

/// The oracle on frames whose fate is known, so that a broken oracle
/// cannot pass for a correct program (no root needed).
#[test]
fn oracle_on_hand_built_frames() {
    use std::net::IpAddr;

    use xlb_tests::{
        lab::{CLIENT_MAC, CLIENT_V4, CLIENT_V6, tcp_frame},
        packet::{ETH_P_IP, TCP_SYN, V4, eth, ipv4, udp},
    };

    use crate::model::{VIP4_A, VIP6_A};

    let m = Model::new();
    let c4 = IpAddr::V4(CLIENT_V4);
    let syn = tcp_frame(c4, 40_000, IpAddr::V4(VIP4_A), 80, TCP_SYN, &[]);
    let Expect::Forward(fw) = judge(&m, &syn) else {
        panic!("a SYN to a VIP is forwarded: {:?}", judge(&m, &syn))
    };
    assert_eq!(
        (fw.head.len(), fw.inner, fw.outer_v4_df),
        (34, 14..54, Some(true))
    );
    let syn6 = tcp_frame(
        IpAddr::V6(CLIENT_V6),
        40_000,
        IpAddr::V6(VIP6_A),
        80,
        TCP_SYN,
        &[],
    );
    assert!(matches!(judge(&m, &syn6), Expect::Forward(f) if f.head.len() == 54));
    let other_port = tcp_frame(c4, 40_000, IpAddr::V4(VIP4_A), 81, TCP_SYN, &[]);
    assert!(matches!(judge(&m, &other_port), Expect::Pass(r) if r.starts_with("4b")));
    let mut foreign = syn.clone();
    foreign[..6].copy_from_slice(&[0xff; 6]);
    assert!(matches!(judge(&m, &foreign), Expect::Pass(r) if r.starts_with("E1")));
    let mut tagged = syn[..12].to_vec();
    tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x07]);
    tagged.extend_from_slice(&syn[12..]);
    assert!(matches!(judge(&m, &tagged), Expect::Pass(r) if r.starts_with("E2")));
    let mut ttl0 = V4::new(CLIENT_V4, VIP4_A, 6);
    ttl0.ttl = 0;
    let seg = &syn[34..];
    let dead = eth(LB0_MAC, CLIENT_MAC, ETH_P_IP, &ipv4(&ttl0, seg));
    assert!(matches!(judge(&m, &dead), Expect::Drop(r) if r.starts_with("4f")));
    // A short UDP datagram padded to 60 bytes: forwarded, padding apart.
    let dg = udp(c4, IpAddr::V4(VIP4_A), 40_000, 53, &[1, 2]);
    let mut padded = eth(
        LB0_MAC,
        CLIENT_MAC,
        ETH_P_IP,
        &ipv4(&V4::new(CLIENT_V4, VIP4_A, 17), &dg),
    );
    padded.resize(60, 0);
    assert!(matches!(judge(&m, &padded), Expect::Forward(f) if f.padding == (44..60)));
    // The UDP length claims more than the IP packet holds.
    let mut long = padded.clone();
    long[38..40].copy_from_slice(&20u16.to_be_bytes());
    assert!(matches!(judge(&m, &long), Expect::Pass(r) if r.starts_with("U ")));
}
