//! Neighbour frames: ARP requests (broadcast and unicast, probes, for
//! owned addresses and others) and neighbour solicitations (to the
//! solicited-node group and unicast, with and without a source
//! link-layer option, DAD probes, nonce and unknown options), then
//! mutated where the contract draws its lines: ARP types, lengths and
//! opcode, the IPv6 payload length, option lengths, hop limit, code,
//! checksum, source, destination and target addresses, Ethernet
//! addresses, truncation and padding.

use std::net::Ipv6Addr;

use xlb_tests::{
    lab::{CLIENT_MAC, LB0_MAC, LB0_V4, LB0_V6, LB1_MAC},
    packet::{ETH_P_ARP, ETH_P_IPV6, V6, checksum, eth, icmp6, ipv6},
};

use crate::{
    generate,
    model::{OWNED_V4, OWNED_V6, VIP4_A, VIP4_B, VIP6_B},
    neighbour::{group_mac, solicited_node},
    rng::Rng,
};

const BROADCAST: [u8; 6] = [0xff; 6];

/// A neighbour frame, mutated half of the time.
pub(crate) fn frame(rng: &mut Rng) -> Vec<u8> {
    let mut f = valid(rng);
    let mutations = [0, 0, 0, 0, 0, 1, 1, 1, 2, 3][rng.below(10) as usize];
    for _ in 0..mutations {
        if rng.chance(80) {
            mutate(rng, &mut f);
        } else {
            generate::mutate(rng, &mut f);
        }
    }
    f
}

/// An ARP request or a solicitation as a host on the link sends it.
pub(crate) fn valid(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(40) {
        arp_request(rng)
    } else {
        solicitation(rng)
    }
}

/// A unicast MAC of a host on the link.
fn host_mac(rng: &mut Rng) -> [u8; 6] {
    if rng.chance(60) {
        return CLIENT_MAC;
    }
    let mut m = [0u8; 6];
    rng.fill(&mut m);
    m[0] &= 0xfe;
    m
}

/// A group or null MAC, which no answer may go to.
fn bad_mac(rng: &mut Rng) -> [u8; 6] {
    *rng.pick(&[
        BROADCAST,
        [0; 6],
        [0x01, 0, 0x5e, 0, 0, 1],
        [0x33, 0x33, 0, 0, 0, 1],
        [0x03, 0, 0, 0, 0, 2],
    ])
}

/// Mostly the owned address; else a VIP not owned, the router's own, a
/// neighbour of the owned one, anything.
fn target4(rng: &mut Rng) -> [u8; 4] {
    if rng.chance(60) {
        return OWNED_V4.octets();
    }
    let any = [198, 51, 100, rng.byte()];
    *rng.pick(&[
        VIP4_A.octets(),
        VIP4_B.octets(),
        LB0_V4.octets(),
        [10, 99, 0, 2],
        [10, 99, 0, 0],
        any,
    ])
}

fn arp_request(rng: &mut Rng) -> Vec<u8> {
    let tpa = target4(rng);
    let sha = host_mac(rng);
    let spa = match rng.below(10) {
        // A probe (RFC 5227): who has it, from no address yet.
        0 => [0; 4],
        1..6 => [198, 51, 100, rng.range(1, 16) as u8],
        _ => [10, 99, 0, rng.byte()],
    };
    let tha = match rng.below(3) {
        0 => [0; 6],
        1 => LB0_MAC,
        _ => host_mac(rng),
    };
    let dst = match rng.below(10) {
        0..7 => BROADCAST,
        7..9 => LB0_MAC,
        _ => host_mac(rng),
    };
    let src = if rng.chance(90) { sha } else { host_mac(rng) };
    let mut a = vec![0, 1, 0x08, 0x00, 6, 4, 0, 1];
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa);
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa);
    let mut f = eth(dst, src, ETH_P_ARP, &a);
    pad(rng, &mut f);
    f
}

/// Ethernet padding to the 60-byte minimum, zeros or junk; sometimes more.
fn pad(rng: &mut Rng, f: &mut Vec<u8>) {
    let to = match rng.below(10) {
        0..4 => f.len(),
        4..8 => f.len().max(60),
        _ => f.len() + rng.range(1, 40),
    };
    let at = f.len();
    f.resize(to, 0);
    if rng.chance(30) {
        rng.fill(&mut f[at..]);
    }
}

fn v6(segs: [u16; 8]) -> [u8; 16] {
    Ipv6Addr::from(segs).octets()
}

/// Mostly the owned address; else a VIP not owned, the router's own, one
/// in the owned address's solicited-node group, anything, a multicast.
fn target6(rng: &mut Rng) -> [u8; 16] {
    if rng.chance(60) {
        return OWNED_V6.octets();
    }
    let any = v6([0x2001, 0xdb8, 0x99, 0, 0, 0, rng.u16(), rng.u16()]);
    *rng.pick(&[
        VIP6_B.octets(),
        LB0_V6.octets(),
        v6([0xfd98, 0, 0, 0, 0, 0, 0, 1]),
        v6([0xfd99, 0, 0, 0, 0, 0, 1, 1]),
        any,
        v6([0xff02, 0, 0, 0, 0, 0, 0, 1]),
    ])
}

fn asker6(rng: &mut Rng) -> [u8; 16] {
    let h = rng.range(1, 16) as u16;
    match rng.below(3) {
        0 => v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, h]),
        1 => v6([0xfe80, 0, 0, 0, 0, 0, rng.u16(), h]),
        _ => v6([0xfd99, 0, 0, 0, 0, 0, 0, 0x100 + h]),
    }
}

/// The solicitation's options: a source link-layer option (not for a
/// DAD probe, mostly), nonces (RFC 7527), unknown options; at most 64
/// bytes but now and then more.
fn nd_options(rng: &mut Rng, dad: bool, lla: [u8; 6]) -> Vec<u8> {
    let mut opts: Vec<Vec<u8>> = Vec::new();
    if rng.chance(if dad { 3 } else { 65 }) {
        opts.push([&[1, 1][..], &lla].concat());
    }
    for _ in 0..rng.below(4) {
        let units = rng.range(1, 3);
        let mut o = vec![0; units * 8];
        rng.fill(&mut o);
        o[0] = if rng.chance(50) {
            14
        } else {
            *rng.pick(&[3, 5, 24, 31, 200, 253])
        };
        o[1] = units as u8;
        opts.push(o);
    }
    // Options may come in any order: shuffle.
    for i in (1..opts.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        opts.swap(i, j);
    }
    let mut out = opts.concat();
    if out.len() > 64 && rng.chance(80) {
        out.clear();
    }
    out
}

fn solicitation(rng: &mut Rng) -> Vec<u8> {
    let target = target6(rng);
    let sn = solicited_node(&target);
    let (src, dst) = match rng.below(100) {
        0..45 => (asker6(rng), sn),
        45..75 => (asker6(rng), target),
        75..95 => ([0; 16], sn),
        _ => (asker6(rng), v6([0xff02, 0, 0, 0, 0, 1, 0xff00, rng.u16()])),
    };
    let eth_src = host_mac(rng);
    let lla = if rng.chance(80) {
        eth_src
    } else {
        host_mac(rng)
    };
    let opts = nd_options(rng, src == [0; 16], lla);
    let eth_dst = if dst[0] == 0xff {
        group_mac(&dst)
    } else {
        LB0_MAC
    };
    let mut f = ns_frame(rng, eth_dst, eth_src, src, dst, target, &opts);
    if rng.chance(10) {
        pad(rng, &mut f);
    }
    f
}

fn ns_frame(
    rng: &mut Rng,
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    src: [u8; 16],
    dst: [u8; 16],
    target: [u8; 16],
    opts: &[u8],
) -> Vec<u8> {
    let (s, d) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
    let mut body = target.to_vec();
    body.extend_from_slice(opts);
    let mut reserved = [0u8; 4];
    if rng.chance(5) {
        // Reserved bits a receiver must ignore (RFC 4861 4.3).
        rng.fill(&mut reserved);
    }
    let msg = icmp6(s, d, 135, 0, reserved, &body);
    let mut h = V6::new(s, d, 58);
    h.hop = 255;
    if rng.chance(20) {
        h.tclass = rng.byte();
        h.flow = rng.next() as u32 & 0xf_ffff;
    }
    eth(eth_dst, eth_src, ETH_P_IPV6, &ipv6(&h, &msg))
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn put16(f: &mut [u8], at: usize, v: u16) {
    f[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Whether `f` holds an untagged IPv6 ICMPv6 message whose header is
/// within the frame and the payload length.
fn icmp6_at(f: &[u8]) -> bool {
    f.len() >= 58
        && be16(f, 12) == ETH_P_IPV6
        && f[20] == 58
        && (4..=f.len() - 54).contains(&usize::from(be16(f, 18)))
}

/// Recomputes the ICMPv6 checksum over the payload length's bytes, so
/// that a mutation is judged by what it changed, not by the checksum.
fn refix(f: &mut [u8]) {
    if !icmp6_at(f) {
        return;
    }
    let end = 54 + usize::from(be16(f, 18));
    f[56] = 0;
    f[57] = 0;
    let len = ((end - 54) as u32).to_be_bytes();
    let c = checksum(&[&f[22..54], &len, &[0, 0, 0, 58], &f[54..end]]);
    put16(f, 56, c);
}

/// One change at a line the contract draws.
fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    match be16(f, 12) {
        0x0806 if f.len() >= 42 => mutate_arp(rng, f),
        0x86dd if f.len() >= 78 => {
            mutate_ns(rng, f);
            if rng.chance(75) {
                refix(f);
            }
        }
        _ => generate::mutate(rng, f),
    }
}

fn mutate_arp(rng: &mut Rng, f: &mut Vec<u8>) {
    let (any16, any8) = (rng.u16(), rng.byte());
    match rng.below(12) {
        0 => put16(f, 14, *rng.pick(&[0, 6, 0x100, any16])),
        1 => put16(f, 16, *rng.pick(&[0x86dd, 0x0806, 0, any16])),
        2 => f[18] = *rng.pick(&[0, 4, 8, 16, any8]),
        3 => f[19] = *rng.pick(&[0, 6, 16, any8]),
        4 => put16(f, 20, *rng.pick(&[0, 2, 3, 4, 8, 0x100, any16])),
        5 => f.copy_within(38..42, 28),
        6 => {
            let m = bad_mac(rng);
            f[22..28].copy_from_slice(&m);
        }
        7 => {
            let bad = bad_mac(rng);
            let m = *rng.pick(&[BROADCAST, LB0_MAC, LB1_MAC, CLIENT_MAC, bad]);
            f[..6].copy_from_slice(&m);
        }
        8 => f.truncate(rng.range(14, 41)),
        9 => {
            let t = target4(rng);
            f[38..42].copy_from_slice(&t);
        }
        10 => pad(rng, f),
        _ => {
            let at = rng.below(42) as usize;
            f[at] ^= 1 << rng.below(8);
        }
    }
}

/// Offsets of the options of the NS in `f`, as far as they parse, each
/// with its first 8 bytes in the frame.
fn option_offsets(f: &[u8]) -> Vec<usize> {
    let end = (54 + usize::from(be16(f, 18))).min(f.len());
    let mut at = 78;
    let mut out = Vec::new();
    while at + 8 <= end && f[at + 1] != 0 {
        out.push(at);
        at += usize::from(f[at + 1]) * 8;
    }
    out
}

fn mutate_ns(rng: &mut Rng, f: &mut Vec<u8>) {
    let plen = usize::from(be16(f, 18));
    match rng.below(18) {
        0 => {
            let d = *rng.pick(&[1, 7, 8, 16]);
            let any = rng.below(200) as usize;
            let v = *rng.pick(&[plen.saturating_sub(d), plen + d, 0, 8, 16, 23, 25, 96, any]);
            put16(f, 18, v as u16);
        }
        1 => {
            let offs = option_offsets(f);
            if !offs.is_empty() {
                let at = *rng.pick(&offs) + 1;
                let units = usize::from(f[at]);
                f[at] = *rng.pick(&[0, units.saturating_sub(1), units + 1, 2, 9, 255]) as u8;
            }
        }
        2 => add_option(rng, f),
        3 => f[21] = *rng.pick(&[254, 0, 1, 64, 128, 255]),
        4 => f[55] = rng.range(1, 255) as u8,
        5 => f[56 + rng.below(2) as usize] ^= 1 << rng.below(8),
        6 => f[22..38].fill(0),
        7 => {
            let target: [u8; 16] = f[62..78].try_into().expect("16 bytes");
            let sn = solicited_node(&target);
            let d = *rng.pick(&[
                target,
                sn,
                v6([0xff02, 0, 0, 0, 0, 0, 0, 1]),
                v6([0xff02, 0, 0, 0, 0, 1, 0xff00, 2]),
                v6([0xff02, 0, 0, 0, 0, 0, 0, 2]),
                v6([0xff05, 0, 0, 0, 0, 1, 0xff00, 1]),
                OWNED_V6.octets(),
            ]);
            f[38..54].copy_from_slice(&d);
            if rng.chance(50) {
                let m = if d[0] == 0xff { group_mac(&d) } else { LB0_MAC };
                f[..6].copy_from_slice(&m);
            }
        }
        8 => {
            let dst: [u8; 16] = f[38..54].try_into().expect("16 bytes");
            let host = host_mac(rng);
            let m = *rng.pick(&[
                LB0_MAC,
                group_mac(&dst),
                [0x33, 0x33, 0, 0, 0, 1],
                [0x33, 0x33, 0xff, 0, 0, 2],
                BROADCAST,
                LB1_MAC,
                host,
            ]);
            f[..6].copy_from_slice(&m);
        }
        9 => {
            let m = bad_mac(rng);
            f[6..12].copy_from_slice(&m);
        }
        10 => {
            let slla = option_offsets(f).into_iter().find(|&at| f[at] == 1);
            if let Some(at) = slla {
                let m = bad_mac(rng);
                f[at + 2..at + 8].copy_from_slice(&m);
            }
        }
        11 => {
            let t = target6(rng);
            f[62..78].copy_from_slice(&t);
        }
        12 => f.truncate(rng.range(54, f.len() - 1)),
        13 => pad(rng, f),
        14 => f[14] = (rng.byte() & 0xf0) | (f[14] & 0x0f),
        15 => f[20] = *rng.pick(&[0, 43, 60, 17, 59]),
        16 => f[54] = *rng.pick(&[133, 134, 136, 137, 128]),
        _ => {
            let at = rng.below(f.len() as u64) as usize;
            f[at] ^= 1 << rng.below(8);
        }
    }
}

/// Appends an option at the end of the message (payload length grown to
/// match): a source link-layer option (perhaps a second one), a nonce, a
/// zero-length one, an oversized source link-layer option.
fn add_option(rng: &mut Rng, f: &mut Vec<u8>) {
    let end = 54 + usize::from(be16(f, 18));
    if end > f.len() {
        return;
    }
    let lla = host_mac(rng);
    let o: Vec<u8> = match rng.below(4) {
        0 => [&[1, 1][..], &lla].concat(),
        1 => vec![14, 1, 1, 2, 3, 4, 5, 6],
        2 => vec![rng.byte(), 0, 0, 0, 0, 0, 0, 0],
        _ => [&[1, 2][..], &lla, &[0; 8]].concat(),
    };
    let n = o.len();
    f.splice(end..end, o);
    put16(f, 18, (end - 54 + n) as u16);
}
