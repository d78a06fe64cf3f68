//! The frames: valid ones of every kind the balancer's parser knows (TCP
//! and UDP to VIPs and elsewhere, ICMP errors quoting VIP flows, IPv4
//! options and fragments, IPv6 extension headers, VLAN tags, non-IP), then
//! mutated (bit flips, truncation, lying length fields, fragment bits,
//! TTL 0, martian sources, foreign MACs, bad checksums, padding); ARP
//! requests and neighbour solicitations, valid and mutated
//! (`neighbour_gen`, 7% of the frames); and plain random bytes. Frame `i`
//! of a run depends only on the seed and `i`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{Encap, PROTO_TCP};
use xlb_tests::{
    lab::{CLIENT_MAC, LB0_MAC, LB1_MAC, Vip},
    packet::{
        ETH_P_IP, ETH_P_IPV6, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, V4, V6, checksum, eth,
        icmp4, icmp6, ipv4, ipv6, tcp, udp,
    },
};

use crate::{
    model::{MTU, Model, VIP4_A, VIP6_A},
    neighbour_gen,
    rng::Rng,
};

/// Longest frame outside the MTU class: encapsulated, its IP packet still
/// fits the lab's MTU, so "too big" arises only where it is meant to.
const MAX_FRAME: usize = 1400;

/// Frame indices at and above this are the sweep's (see [`by_index`]).
pub(crate) const SWEEP: u64 = 1 << 62;
/// Base frames of the sweep, each cut at every length and given every
/// IP length.
pub(crate) const SWEEP_BASES: u64 = 48;
/// Neighbour frames (ARP requests, solicitations) cut and given lengths
/// the same way, after the others.
pub(crate) const SWEEP_NEIGHBOUR_BASES: u64 = 8;

/// Frame `index` of the run seeded with `seed`.
pub(crate) fn by_index(seed: u64, index: u64, m: &Model) -> Vec<u8> {
    if index < SWEEP {
        return frame(&mut Rng::for_frame(seed, index), m);
    }
    let base = (index - SWEEP) >> 17;
    let ip_length = (index >> 16) & 1 == 1;
    let cut = (index & 0xffff) as usize;
    let mut f = sweep_base(seed, base, m);
    if ip_length {
        set_ip_length(&mut f, cut);
    } else {
        f.truncate(cut);
    }
    f
}

/// Indices of the sweep: every base cut at each length from 14 bytes to
/// whole, and given each IP length from 0 to what the frame holds (the
/// frame's bytes left as they are: what the length leaves out is padding).
pub(crate) fn sweep(seed: u64, m: &Model) -> Vec<u64> {
    let mut out = Vec::new();
    for base in 0..SWEEP_BASES + SWEEP_NEIGHBOUR_BASES {
        let at = SWEEP + (base << 17);
        let f = sweep_base(seed, base, m);
        out.extend((14..f.len() as u64).map(|cut| at + cut));
        if let Some(l3) = ip_at(&f) {
            out.extend((0..=(f.len() - l3) as u64).map(|len| at + (1 << 16) + len));
        }
    }
    out
}

/// The sweep's base frame number `base`.
fn sweep_base(seed: u64, base: u64, m: &Model) -> Vec<u8> {
    let mut rng = Rng::for_frame(seed, SWEEP + (base << 17));
    if base < SWEEP_BASES {
        valid(&mut rng, m)
    } else {
        neighbour_gen::valid(&mut rng)
    }
}

fn frame(rng: &mut Rng, m: &Model) -> Vec<u8> {
    let roll = rng.below(1000);
    if roll < 70 {
        return random_bytes(rng, m);
    }
    if roll < 80 {
        return too_big(rng, m);
    }
    if roll < 150 {
        return neighbour_gen::frame(rng);
    }
    let mut f = valid(rng, m);
    let mutations = [0, 0, 0, 0, 1, 1, 1, 2, 2, 3][rng.below(10) as usize];
    for _ in 0..mutations {
        mutate(rng, &mut f);
    }
    f
}

/// A well-formed frame of some kind, addressed to lb0.
fn valid(rng: &mut Rng, m: &Model) -> Vec<u8> {
    let mut f = match rng.below(100) {
        0..45 => to_vip(rng, m, false, &[]),
        45..55 => elsewhere(rng),
        55..67 => icmp_error(rng, m),
        67..70 => icmp_other(rng, m),
        70..75 => {
            let n = 4 * rng.range(1, 10);
            let o = options(rng, n);
            to_vip(rng, m, true, &o)
        }
        75..80 => fragment(rng, m),
        80..85 => v6_extension(rng, m),
        85..90 => not_ip(rng),
        _ => vlan(rng, m),
    };
    if f.len() < 60 && rng.chance(15) {
        f.resize(60, 0);
    }
    f
}

fn client(rng: &mut Rng, v4: bool) -> (IpAddr, u16) {
    if rng.chance(70) {
        // A small pool: flows recur, so the flow table's hits are tested.
        let h = rng.range(1, 16) as u8;
        let port = 40_000 + rng.below(64) as u16;
        let a = if v4 {
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, h))
        } else {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(h)))
        };
        (a, port)
    } else {
        let r = rng.next();
        let a = if v4 {
            IpAddr::V4(Ipv4Addr::new(
                198,
                18 + (r as u8 & 1),
                (r >> 8) as u8,
                (r >> 16) as u8,
            ))
        } else {
            IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                1,
                r as u16,
                0,
                0,
                (r >> 16) as u16,
                (r >> 32) as u16,
            ))
        };
        (a, rng.range(1024, 65535) as u16)
    }
}

fn vip_port(rng: &mut Rng, vip: &Vip) -> u16 {
    if vip.port != 0 {
        vip.port
    } else if rng.chance(10) {
        443
    } else {
        rng.range(1, 65535) as u16
    }
}

fn payload(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0..3 => 0,
        3..8 => rng.range(1, 64),
        _ => rng.range(64, 300),
    };
    let mut p = vec![0; len];
    rng.fill(&mut p);
    p
}

/// A TCP segment or UDP datagram with a valid checksum.
fn segment(rng: &mut Rng, src: IpAddr, dst: IpAddr, sport: u16, dport: u16, proto: u8) -> Vec<u8> {
    let data = payload(rng);
    if proto != PROTO_TCP {
        return udp(src, dst, sport, dport, &data);
    }
    let any = rng.byte();
    let flags = *rng.pick(&[
        TCP_SYN,
        TCP_ACK,
        TCP_PSH | TCP_ACK,
        TCP_FIN | TCP_ACK,
        TCP_RST,
        TCP_RST | TCP_ACK,
        any,
    ]);
    let mut s = tcp(src, dst, sport, dport, flags, &data);
    if rng.chance(10) {
        // TCP options (NOPs and an MSS): a longer header, doff to match.
        let opts = [1, 1, 2, 4, 0x05, 0xb4, 1, 0];
        s.splice(20..20, opts);
        s[12] = 0x70;
    }
    s
}

/// An Ethernet frame to lb0 around an IP packet from `src` to `dst`.
fn wrap(rng: &mut Rng, src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8], options: &[u8]) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = V4::new(s, d, proto);
            h.tos = if rng.chance(30) { rng.byte() } else { 0 };
            h.id = rng.u16();
            h.frag = if rng.chance(70) { 0x4000 } else { 0 };
            h.ttl = if rng.chance(80) {
                64
            } else {
                rng.range(1, 255) as u8
            };
            h.options = options.to_vec();
            eth(LB0_MAC, CLIENT_MAC, ETH_P_IP, &ipv4(&h, l4))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = V6::new(s, d, proto);
            h.tclass = if rng.chance(30) { rng.byte() } else { 0 };
            h.flow = if rng.chance(50) {
                rng.next() as u32 & 0xf_ffff
            } else {
                0
            };
            h.hop = if rng.chance(80) {
                64
            } else {
                rng.range(1, 255) as u8
            };
            eth(LB0_MAC, CLIENT_MAC, ETH_P_IPV6, &ipv6(&h, l4))
        }
        _ => unreachable!("one family per packet"),
    }
}

fn pick_vip<'a>(rng: &mut Rng, m: &'a Model, ok: impl Fn(&Vip) -> bool) -> &'a Vip {
    loop {
        let v = rng.pick(&m.vips);
        if ok(v) {
            return v;
        }
    }
}

/// A client's TCP or UDP packet to a VIP.
fn to_vip(rng: &mut Rng, m: &Model, v4_only: bool, options: &[u8]) -> Vec<u8> {
    let vip = pick_vip(rng, m, |v| !v4_only || v.addr.is_ipv4());
    let (src, sport) = client(rng, vip.addr.is_ipv4());
    let dport = vip_port(rng, vip);
    let l4 = segment(rng, src, vip.addr, sport, dport, vip.proto);
    wrap(rng, src, vip.addr, vip.proto, &l4, options)
}

/// TCP or UDP to no VIP: a VIP's address on a port or protocol it does
/// not serve, the lab's own or a backend's address, anywhere else.
fn elsewhere(rng: &mut Rng) -> Vec<u8> {
    let v4 = rng.chance(50);
    let tcp = rng.chance(50);
    let proto = if tcp { 6 } else { 17 };
    let (dst, port) = match rng.below(3) {
        0 => {
            let served = if tcp { 80 } else { 53 };
            let mut p = rng.range(1, 65535) as u16;
            if p == served {
                p += 1;
            }
            let a = if v4 {
                IpAddr::V4(VIP4_A)
            } else {
                IpAddr::V6(VIP6_A)
            };
            (a, p)
        }
        1 => {
            let a = match (v4, rng.chance(50)) {
                (true, true) => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                (true, false) => IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0x11)),
                (false, true) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
                (false, false) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x11)),
            };
            (a, rng.range(1, 65535) as u16)
        }
        _ => {
            let a = if v4 {
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, rng.byte()))
            } else {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, rng.u16()))
            };
            (a, rng.range(1, 65535) as u16)
        }
    };
    let (src, sport) = client(rng, v4);
    let l4 = segment(rng, src, dst, sport, port, proto);
    wrap(rng, src, dst, proto, &l4, &[])
}

fn router(rng: &mut Rng, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, rng.range(1, 254) as u8))
    } else {
        IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            0xffff,
            0,
            0,
            0,
            0,
            rng.range(1, 0xfffe) as u16,
        ))
    }
}

/// A router's ICMP error about a reply the backend sent as the VIP.
fn icmp_error(rng: &mut Rng, m: &Model) -> Vec<u8> {
    let vip = pick_vip(rng, m, |_| true);
    let v4 = vip.addr.is_ipv4();
    let (client, cport) = client(rng, v4);
    let vport = vip_port(rng, vip);
    let reply = segment(rng, vip.addr, client, vport, cport, vip.proto);
    // Mostly quoting the VIP's reply; sometimes someone else's packet.
    let from = if rng.chance(90) {
        vip.addr
    } else {
        router(rng, v4)
    };
    let qproto = if rng.chance(95) {
        vip.proto
    } else {
        *rng.pick(&[1, 58, 47])
    };
    let mut quoted = match (from, client) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = V4::new(s, d, qproto);
            if rng.chance(10) {
                let n = 4 * rng.range(1, 4);
                h.options = options(rng, n);
            }
            ipv4(&h, &reply)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => ipv6(&V6::new(s, d, qproto), &reply),
        _ => unreachable!("one family per packet"),
    };
    let hdr = if v4 {
        usize::from(quoted[0] & 0x0f) * 4
    } else {
        40
    };
    let keep = match rng.below(20) {
        0 => rng.range(hdr.saturating_sub(4), hdr + 7),
        1..10 => hdr + 8,
        _ => rng.range(hdr + 8, quoted.len()),
    };
    quoted.truncate(keep.min(quoted.len()));
    let from_router = router(rng, v4);
    let mtu = (rng.range(576, MTU) as u16).to_be_bytes();
    match (from_router, vip.addr) {
        (IpAddr::V4(_), _) => {
            let msg = icmp4(3, rng.below(16) as u8, [0, 0, mtu[0], mtu[1]], &quoted);
            wrap(rng, from_router, vip.addr, 1, &msg, &[])
        }
        (IpAddr::V6(r), IpAddr::V6(d)) => {
            let kind = if rng.chance(50) { 1 } else { 2 };
            let code = if kind == 1 { rng.below(7) as u8 } else { 0 };
            let msg = icmp6(r, d, kind, code, [0, 0, mtu[0], mtu[1]], &quoted);
            wrap(rng, from_router, vip.addr, 58, &msg, &[])
        }
        _ => unreachable!("one family per packet"),
    }
}

/// ICMP to a VIP that is no error the balancer steers: echo, time
/// exceeded, neighbour discovery...
fn icmp_other(rng: &mut Rng, m: &Model) -> Vec<u8> {
    let vip = pick_vip(rng, m, |_| true);
    let (src, _) = client(rng, vip.addr.is_ipv4());
    let mut data = vec![0; rng.range(0, 64)];
    rng.fill(&mut data);
    match (src, vip.addr) {
        (IpAddr::V4(_), _) => {
            let kind = *rng.pick(&[0, 8, 11, 5, 13, 12]);
            let msg = icmp4(kind, 0, [0, 1, 0, 1], &data);
            wrap(rng, src, vip.addr, 1, &msg, &[])
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let kind = *rng.pick(&[128, 129, 3, 4, 135, 136]);
            let msg = icmp6(s, d, kind, 0, [0, 1, 0, 1], &data);
            wrap(rng, src, vip.addr, 58, &msg, &[])
        }
        _ => unreachable!("one family per packet"),
    }
}

/// IPv4 options: NOPs, router alert, record route, a timestamp, junk.
fn options(rng: &mut Rng, len: usize) -> Vec<u8> {
    let mut o = Vec::with_capacity(len);
    while o.len() < len {
        match rng.below(5) {
            0 => o.push(1),
            1 => o.extend_from_slice(&[0x94, 4, 0, 0]),
            2 => o.extend_from_slice(&[7, 7, 4, 0, 0, 0, 0]),
            3 => o.extend_from_slice(&[0x44, 8, 5, 0, 0, 0, 0, 0]),
            _ => o.push(rng.byte()),
        }
    }
    o.truncate(len);
    o
}

/// An IPv4 fragment (first or later) of VIP traffic, ICMP errors included.
fn fragment(rng: &mut Rng, m: &Model) -> Vec<u8> {
    let mut f = if rng.chance(75) {
        to_vip(rng, m, true, &[])
    } else {
        let mut f;
        loop {
            f = icmp_error(rng, m);
            if f[12..14] == [0x08, 0x00] {
                break f;
            }
        }
    };
    let off = rng.range(1, 0x1fff) as u16;
    let bits: u16 = match rng.below(3) {
        0 => 0x2000,
        1 => off,
        _ => 0x2000 | off,
    };
    f[20..22].copy_from_slice(&bits.to_be_bytes());
    refix_v4(&mut f, 14);
    f
}

/// IPv6 with an extension header (or another next header) before TCP/UDP.
fn v6_extension(rng: &mut Rng, m: &Model) -> Vec<u8> {
    let vip = pick_vip(rng, m, |v| !v.addr.is_ipv4());
    let (src, sport) = client(rng, false);
    let dport = vip_port(rng, vip);
    let seg = segment(rng, src, vip.addr, sport, dport, vip.proto);
    let first = *rng.pick(&[0, 43, 44, 60, 51, 50, 135, 59, 41, 4]);
    let mut p = vec![vip.proto, 0, 0, 0, 0, 0, 0, 0];
    rng.fill(&mut p[2..]);
    p.extend_from_slice(&seg);
    wrap(rng, src, vip.addr, first, &p, &[])
}

fn not_ip(rng: &mut Rng) -> Vec<u8> {
    let any = rng.u16();
    let kind = *rng.pick(&[0x0806, 0x88cc, 0x8035, 0x0842, 0x8847, any]);
    let dst = if rng.chance(60) { LB0_MAC } else { [0xff; 6] };
    let mut p = vec![0; rng.range(28, 64)];
    rng.fill(&mut p);
    eth(dst, CLIENT_MAC, kind, &p)
}

/// A valid frame with an 802.1Q tag (or 802.1ad, sometimes two tags).
fn vlan(rng: &mut Rng, m: &Model) -> Vec<u8> {
    let inner = match rng.below(3) {
        0 => icmp_error(rng, m),
        1 => elsewhere(rng),
        _ => to_vip(rng, m, false, &[]),
    };
    let tpid: u16 = if rng.chance(80) { 0x8100 } else { 0x88a8 };
    let mut f = inner[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&(rng.u16() & 0x0fff).to_be_bytes());
    if tpid == 0x88a8 && rng.chance(50) {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&(rng.u16() & 0x0fff).to_be_bytes());
    }
    f.extend_from_slice(&inner[12..]);
    f
}

/// A packet to an ipip VIP that fits the MTU but not once encapsulated.
fn too_big(rng: &mut Rng, m: &Model) -> Vec<u8> {
    let vip = pick_vip(rng, m, |v| v.encap == Encap::Ipip);
    let v4 = vip.addr.is_ipv4();
    let (src, sport) = client(rng, v4);
    let dport = vip_port(rng, vip);
    let (ip_hdr, overhead) = if v4 { (20, 20) } else { (40, 40) };
    let ip_len = rng.range(MTU - overhead + 1, MTU);
    let l4_hdr = if vip.proto == PROTO_TCP { 20 } else { 8 };
    let mut data = vec![0; ip_len - ip_hdr - l4_hdr];
    rng.fill(&mut data);
    let l4 = if vip.proto == PROTO_TCP {
        tcp(src, vip.addr, sport, dport, TCP_ACK, &data)
    } else {
        udp(src, vip.addr, sport, dport, &data)
    };
    wrap(rng, src, vip.addr, vip.proto, &l4, &[])
}

fn random_bytes(rng: &mut Rng, m: &Model) -> Vec<u8> {
    let len = if rng.chance(90) {
        rng.range(14, 200)
    } else {
        rng.range(14, MAX_FRAME)
    };
    let mut f = vec![0; len];
    rng.fill(&mut f);
    if rng.chance(60) {
        f[..6].copy_from_slice(&LB0_MAC);
    }
    if !rng.chance(60) {
        return f;
    }
    // Far enough into an IP header that the bytes get past the first checks.
    let vip = rng.pick(&m.vips).addr;
    if rng.chance(50) {
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        if len > 14 {
            f[14] = if rng.chance(70) {
                0x45
            } else {
                0x40 | (f[14] & 0x0f)
            };
        }
        if len >= 34 {
            if rng.chance(60) {
                let total = rng.range(20, len - 14) as u16;
                f[16..18].copy_from_slice(&total.to_be_bytes());
            }
            if let (IpAddr::V4(a), true) = (vip, rng.chance(60)) {
                f[30..34].copy_from_slice(&a.octets());
            }
            if rng.chance(60) {
                f[23] = *rng.pick(&[1, 6, 17]);
            }
            if rng.chance(60) {
                f[20] &= 0x40;
                f[21] = 0;
            }
            if rng.chance(60) {
                refix_v4(&mut f, 14);
            }
        }
    } else {
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        if len > 14 {
            f[14] = 0x60 | (f[14] & 0x0f);
        }
        if len >= 54 {
            if rng.chance(60) {
                let plen = rng.range(0, len - 54) as u16;
                f[18..20].copy_from_slice(&plen.to_be_bytes());
            }
            if rng.chance(60) {
                f[20] = *rng.pick(&[6, 17, 58]);
            }
            if let (IpAddr::V6(a), true) = (vip, rng.chance(60)) {
                f[38..54].copy_from_slice(&a.octets());
            }
        }
    }
    f
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Offset of the IP header: after one VLAN tag when there is one.
fn l3_of(f: &[u8]) -> usize {
    if f.len() >= 18 && matches!(be16(f, 12), 0x8100 | 0x88a8) {
        18
    } else {
        14
    }
}

/// Offset of a whole IPv4 or IPv6 header, if the frame has one there.
fn ip_at(f: &[u8]) -> Option<usize> {
    let l3 = l3_of(f);
    match f.get(l3).map(|b| b >> 4) {
        Some(4) if f.len() >= l3 + 20 => Some(l3),
        Some(6) if f.len() >= l3 + 40 => Some(l3),
        _ => None,
    }
}

/// Recomputes an IPv4 header checksum, when the header is all there.
fn refix_v4(f: &mut [u8], l3: usize) {
    if f.len() < l3 + 20 || f[l3] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(f[l3] & 0x0f) * 4;
    if ihl < 20 || l3 + ihl > f.len() {
        return;
    }
    f[l3 + 10] = 0;
    f[l3 + 11] = 0;
    let c = checksum(&[&f[l3..l3 + ihl]]);
    put16(f, l3 + 10, c);
}

/// Sets the IP length field (IPv4 total length, IPv6 payload length) so
/// the packet is `len` bytes long (header included), checksum fixed.
fn set_ip_length(f: &mut [u8], len: usize) {
    let Some(l3) = ip_at(f) else { return };
    if f[l3] >> 4 == 4 {
        put16(f, l3 + 2, len as u16);
        refix_v4(f, l3);
    } else {
        put16(f, l3 + 4, len.saturating_sub(40) as u16);
    }
}

/// Offset and protocol of the L4 header by the IP header's own account.
fn l4_of(f: &[u8], l3: usize) -> Option<(usize, u8)> {
    match f[l3] >> 4 {
        4 => Some((l3 + usize::from(f[l3] & 0x0f) * 4, f[l3 + 9])),
        _ => Some((l3 + 40, f[l3 + 6])),
    }
}

/// A plausible lie about a length: off by a little, zero, one short of the
/// minimum, the room there is, a little more, anything.
fn lie(rng: &mut Rng, now: usize, room: usize, min: usize) -> u16 {
    let d = rng.range(1, 8);
    (match rng.below(7) {
        0 => 0,
        1 => min.saturating_sub(1),
        2 => now.saturating_sub(d),
        3 => now + d,
        4 => room,
        5 => room + d,
        _ => rng.below(65536) as usize,
    }) as u16
}

const MARTIAN_V4: [[u8; 4]; 8] = [
    [0, 0, 0, 0],
    [0, 1, 2, 3],
    [127, 0, 0, 1],
    [127, 5, 5, 5],
    [224, 0, 0, 1],
    [239, 1, 1, 1],
    [240, 0, 0, 1],
    [255, 255, 255, 255],
];

fn martian_v6(rng: &mut Rng) -> [u8; 16] {
    let mut a = [0u8; 16];
    match rng.below(5) {
        0 => {}
        1 => a[15] = 1,
        2 => {
            a[0] = 0xff;
            a[1] = 0x02;
            a[15] = 1;
        }
        3 => {
            a[0] = 0xff;
            a[1] = rng.byte();
            rng.fill(&mut a[2..]);
        }
        _ => {
            a[10] = 0xff;
            a[11] = 0xff;
            a[12..].copy_from_slice(&[198, 51, 100, 7]);
        }
    }
    a
}

/// One random change (see the module's list).
pub(crate) fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    let l3 = l3_of(f);
    let len = f.len();
    let v4 = ip_at(f).is_some() && f[l3] >> 4 == 4;
    let v6 = ip_at(f).is_some() && f[l3] >> 4 == 6;
    let fix = rng.chance(75);
    match rng.below(20) {
        2 if len > 14 => f.truncate(rng.range(14, len - 1)),
        3 if v4 => {
            f[l3] = 0x40 | rng.below(16) as u8;
            if fix {
                refix_v4(f, l3);
            }
        }
        4 if v4 => {
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            let v = lie(rng, usize::from(be16(f, l3 + 2)), len - l3, ihl);
            put16(f, l3 + 2, v);
            if fix {
                refix_v4(f, l3);
            }
        }
        5 if v6 => {
            let v = lie(rng, usize::from(be16(f, l3 + 4)), len - l3 - 40, 0);
            put16(f, l3 + 4, v);
        }
        6 => {
            if let Some((l4, 6)) = ip_at(f).and_then(|l3| l4_of(f, l3))
                && l4 + 13 <= len
            {
                f[l4 + 12] = ((rng.below(16) as u8) << 4) | (f[l4 + 12] & 0x0f);
            }
        }
        7 => {
            if let Some((l4, 17)) = ip_at(f).and_then(|l3| l4_of(f, l3))
                && l4 + 6 <= len
            {
                let v = lie(rng, usize::from(be16(f, l4 + 4)), len - l4, 8);
                put16(f, l4 + 4, v);
            }
        }
        8 if v4 => {
            let off = rng.range(1, 0x1fff) as u16;
            let bits = *rng.pick(&[0x2000, off, 0x2000 | off, 0x6000, 0x8000 | 0x4000]);
            put16(f, l3 + 6, bits);
            if fix {
                refix_v4(f, l3);
            }
        }
        9 if v4 => {
            f[l3 + 8] = 0;
            if fix {
                refix_v4(f, l3);
            }
        }
        9 if v6 => f[l3 + 7] = 0,
        10 if v4 => {
            let a = *rng.pick(&MARTIAN_V4);
            f[l3 + 12..l3 + 16].copy_from_slice(&a);
            if fix {
                refix_v4(f, l3);
            }
        }
        10 if v6 => {
            let a = martian_v6(rng);
            f[l3 + 8..l3 + 24].copy_from_slice(&a);
        }
        11 if v4 => {
            f.copy_within(l3 + 16..l3 + 20, l3 + 12);
            if fix {
                refix_v4(f, l3);
            }
        }
        11 if v6 => f.copy_within(l3 + 24..l3 + 40, l3 + 8),
        12 => {
            let mut random = [0u8; 6];
            rng.fill(&mut random);
            let mac = *rng.pick(&[
                [0xff; 6],
                [0x01, 0x00, 0x5e, 0x00, 0x00, 0x01],
                [0x33, 0x33, 0x00, 0x00, 0x00, 0x01],
                LB1_MAC,
                [0x02, 0, 0, 0, 0, 0x99],
                CLIENT_MAC,
                random,
            ]);
            f[..6].copy_from_slice(&mac);
        }
        13 if v4 => f[l3 + 10] ^= rng.range(1, 255) as u8,
        14 => {
            if len < 60 {
                f.resize(60, 0);
            } else {
                let n = rng.range(1, 32);
                let at = f.len();
                f.resize(at + n, 0);
                rng.fill(&mut f[at..]);
            }
        }
        15 => {
            let at = rng.below(len.min(90) as u64) as usize;
            f[at] = rng.byte();
        }
        16 if len > l3 => f[l3] = ((rng.below(16) as u8) << 4) | (f[l3] & 0x0f),
        17 if v4 => {
            // The IP packet ends inside the L4 header or the ICMP quote;
            // the frame keeps the rest as padding.
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            put16(f, l3 + 2, (ihl + rng.range(0, 48)) as u16);
            if fix {
                refix_v4(f, l3);
            }
        }
        17 if v6 => put16(f, l3 + 4, rng.range(0, 48) as u16),
        18 => {
            let t = *rng.pick(&[0x0800u16, 0x86dd, 0x8100, 0x0806]);
            put16(f, 12, t);
        }
        19 if v4 => {
            let ihl = usize::from(f[l3] & 0x0f) * 4;
            if (20..60).contains(&ihl) && l3 + ihl <= len {
                let n = 4 * rng.range(1, (60 - ihl) / 4);
                let o = options(rng, n);
                f.splice(l3 + ihl..l3 + ihl, o);
                f[l3] = 0x40 | ((ihl + n) / 4) as u8;
                let total = be16(f, l3 + 2).wrapping_add(n as u16);
                put16(f, l3 + 2, total);
                if fix {
                    refix_v4(f, l3);
                }
            }
        }
        _ => {
            // Bit flips, mostly in the headers.
            let span = if rng.chance(70) { len.min(90) } else { len };
            let at = rng.below(span as u64) as usize;
            f[at] ^= 1 << rng.below(8);
        }
    }
}
