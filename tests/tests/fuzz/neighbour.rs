//! The neighbour contract, decided from a frame's bytes alone: an ARP
//! request (RFC 826) or an IPv6 neighbour solicitation (RFC 4861 7.1.1)
//! for an owned address is answered in place with XDP_TX, exactly as
//! RFC 826 and RFC 4861 7.2.4 say; anything else about these frames is
//! passed untouched, and none is ever dropped or forwarded. This parser
//! and these replies share no code with the program's `neighbour.rs`.
//!
//! Details RFC 4861 leaves to the implementation follow Linux: a source
//! link-layer option that is not one Ethernet address long makes the
//! solicitation invalid; of several, the first counts. Ethernet addresses
//! answered to must be station addresses (not a group, not all zeros).
//!
//! The same oracle judges the userspace answerer the IPVS data plane runs
//! (`check_userspace`).

use std::net::IpAddr;

use xlb_tests::{
    lab::LB0_MAC,
    packet::{checksum, verify},
};

use crate::{
    model::{OWNED_V4, OWNED_V6},
    oracle::Expect,
};

const BROADCAST: [u8; 6] = [0xff; 6];
/// ff02::1, where a DAD probe's defence goes (RFC 4861 7.2.4).
const ALL_NODES: [u8; 16] = [0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// NA flags: Solicited and Override; Override alone for a DAD probe.
const FLAGS_SO: u8 = 0x60;
const FLAGS_O: u8 = 0x20;
/// Length of the NA we send: Ethernet, IPv6, NA header, target, one
/// target link-layer option.
pub(crate) const NA_LEN: usize = 14 + 40 + 8 + 16 + 8;

/// An answer the program must send back (XDP_TX), byte for byte.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) reason: &'static str,
    /// The frame the program must leave.
    pub(crate) out: Vec<u8>,
}

fn be16(f: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([f[at], f[at + 1]])
}

fn addr6(f: &[u8], at: usize) -> [u8; 16] {
    f[at..at + 16].try_into().expect("16 bytes")
}

fn mac(f: &[u8], at: usize) -> [u8; 6] {
    f[at..at + 6].try_into().expect("6 bytes")
}

/// The group bit of a MAC (RFC 7042 2.1): multicast and broadcast.
fn group(m: &[u8]) -> bool {
    m[0] & 1 != 0
}

/// The contract's verdict on an ARP frame or a neighbour solicitation;
/// `None` for every other frame (the forwarding contract decides those).
pub(crate) fn judge(f: &[u8]) -> Option<Expect> {
    match be16(f, 12) {
        0x0806 => Some(arp(f)),
        0x86dd if is_solicitation(f) => Some(solicitation(f)),
        _ => None,
    }
}

/// An untagged IPv6 packet whose next header is ICMPv6 and whose message
/// (inside the payload length) is of type 135. Such a packet is the
/// contract's "NS": answered or passed, never dropped, whatever else is
/// wrong with it, even to a VIP.
pub(crate) fn is_solicitation(f: &[u8]) -> bool {
    if f.len() < 55 || f[14] >> 4 != 6 || f[20] != 58 {
        return false;
    }
    let plen = usize::from(be16(f, 18));
    plen >= 1 && 54 + plen <= f.len() && f[54] == 135
}

fn pass(reason: &'static str) -> Expect {
    Expect::Pass(reason)
}

fn arp(f: &[u8]) -> Expect {
    if f.len() < 42 {
        return pass("ARP shorter than 14+28 bytes");
    }
    if be16(f, 14) != 1 {
        return pass("ARP hardware type not Ethernet");
    }
    if be16(f, 16) != 0x0800 {
        return pass("ARP protocol type not IPv4");
    }
    if f[18] != 6 || f[19] != 4 {
        return pass("ARP address lengths not 6 and 4");
    }
    if be16(f, 20) != 1 {
        return pass("ARP not a request");
    }
    let (sha, spa, tpa) = (&f[22..28], &f[28..32], &f[38..42]);
    // Sender = target: an announcement (gratuitous ARP), not a question.
    if spa == tpa {
        return pass("ARP announcement (sender address = target)");
    }
    if tpa != OWNED_V4.octets() {
        return pass("ARP target not owned");
    }
    if f[..6] != BROADCAST && f[..6] != LB0_MAC {
        return pass("ARP Ethernet destination neither broadcast nor ours");
    }
    if group(sha) {
        return pass("ARP sender hardware address a group");
    }
    if sha == [0; 6] {
        return pass("ARP sender hardware address zero");
    }
    answered("ARP request answered", arp_reply(f))
}

/// RFC 826: swap sender and target, we become the sender with our MAC,
/// the opcode becomes reply; the frame goes back to the asker's hardware
/// address. The frame keeps its length: padding stays as it was.
fn arp_reply(f: &[u8]) -> Vec<u8> {
    let sha = mac(f, 22);
    let (spa, tpa) = (f[28..32].to_vec(), f[38..42].to_vec());
    let mut o = f.to_vec();
    o[..6].copy_from_slice(&sha);
    o[6..12].copy_from_slice(&LB0_MAC);
    o[20..22].copy_from_slice(&[0, 2]);
    o[22..28].copy_from_slice(&LB0_MAC);
    o[28..32].copy_from_slice(&tpa);
    o[32..38].copy_from_slice(&sha);
    o[38..42].copy_from_slice(&spa);
    o
}

/// ff02::1:ffXX:XXXX with the last 24 bits of `a` (RFC 4291 2.7.1).
pub(crate) fn solicited_node(a: &[u8; 16]) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[..2].copy_from_slice(&[0xff, 0x02]);
    g[11] = 1;
    g[12] = 0xff;
    g[13..].copy_from_slice(&a[13..]);
    g
}

/// The Ethernet group of an IPv6 multicast address (RFC 2464 7).
pub(crate) fn group_mac(a: &[u8; 16]) -> [u8; 6] {
    [0x33, 0x33, a[12], a[13], a[14], a[15]]
}

/// One NDP option: its type, its length in 8-byte units, where it starts.
struct Opt {
    kind: u8,
    units: u8,
    at: usize,
}

/// The options from `at` to `end`: each of non-zero length, together
/// filling the message exactly (RFC 4861 7.1.1, 4.6).
fn options(f: &[u8], mut at: usize, end: usize) -> Result<Vec<Opt>, &'static str> {
    let mut out = Vec::new();
    while at < end {
        // `at` and `end` are 8-byte aligned: a whole option header is here.
        let units = f[at + 1];
        if units == 0 {
            return Err("NS option of length 0");
        }
        let next = at + usize::from(units) * 8;
        if next > end {
            return Err("NS option past the message's end");
        }
        out.push(Opt {
            kind: f[at],
            units,
            at,
        });
        at = next;
    }
    Ok(out)
}

fn solicitation(f: &[u8]) -> Expect {
    let len = usize::from(be16(f, 18));
    if len < 24 {
        return pass("NS shorter than 24 bytes");
    }
    if len > 88 {
        return pass("NS longer than 88 bytes");
    }
    if len % 8 != 0 {
        return pass("NS length not a multiple of 8");
    }
    let (src, dst, target) = (addr6(f, 22), addr6(f, 38), addr6(f, 62));
    if target != OWNED_V6.octets() {
        return pass("NS target not owned");
    }
    if f[21] != 255 {
        return pass("NS hop limit not 255");
    }
    if f[55] != 0 {
        return pass("NS code not 0");
    }
    let end = 54 + len;
    let pseudo_len = (len as u32).to_be_bytes();
    if !verify(&[&f[22..54], &pseudo_len, &[0, 0, 0, 58], &f[54..end]]) {
        return pass("NS checksum");
    }
    let opts = match options(f, 78, end) {
        Ok(o) => o,
        Err(reason) => return pass(reason),
    };
    let sllas: Vec<&Opt> = opts.iter().filter(|o| o.kind == 1).collect();
    // An Ethernet link-layer option is one unit long; Linux drops an NS
    // whose option is another length (RFC 4861 7.1.1: invalid option).
    if sllas.iter().any(|o| o.units != 1) {
        return pass("NS source link-layer option not Ethernet-sized");
    }
    let sn = solicited_node(&target);
    let dad = src == [0; 16];
    if dad && dst != sn {
        return pass("NS from :: not to the solicited-node group");
    }
    if dad && !sllas.is_empty() {
        return pass("NS from :: with a source link-layer option");
    }
    if dst != target && dst != sn {
        return pass("NS to neither the target nor its solicited-node group");
    }
    let want_dst = if dst == sn { group_mac(&dst) } else { LB0_MAC };
    if f[..6] != want_dst {
        return pass("NS Ethernet destination not the IPv6 destination's");
    }
    // A station address: the group bit clear and not all zeros (as for
    // ARP senders).
    if group(&f[6..12]) || f[6..12] == [0; 6] {
        return pass("NS Ethernet source not a station address");
    }
    if dad {
        return answered(
            "NS from :: (DAD) answered to all nodes",
            advert(group_mac(&ALL_NODES), &ALL_NODES, &target, FLAGS_O),
        );
    }
    let answer = |to: [u8; 6]| advert(to, &src, &target, FLAGS_SO);
    match sllas.first() {
        None => answered("NS answered to the Ethernet source", answer(mac(f, 6))),
        // Several: the first counts, as in Linux.
        Some(o) => {
            let lla = mac(f, o.at + 2);
            if group(&lla) || lla == [0; 6] {
                return pass("NS source link-layer address not a station address");
            }
            answered("NS answered to the source link-layer address", answer(lla))
        }
    }
}

/// Judges the userspace answerer (`announce::answer`, what the IPVS data
/// plane runs) on `f` against the same expectation as the program.
pub(crate) fn check_userspace(want: &Expect, f: &[u8]) -> Result<(), String> {
    let owned = [IpAddr::V4(OWNED_V4), IpAddr::V6(OWNED_V6)];
    let got = lb_userspace::announce::answer::answer(f, LB0_MAC, |a| owned.contains(&a));
    match (want, got) {
        (Expect::Answer(a), Some(out)) if same_answer(&a.out, &out) => Ok(()),
        (Expect::Answer(a), Some(out)) => Err(format!(
            "userspace answerer, {}: {}",
            a.reason,
            difference(&a.out, &out)
        )),
        (Expect::Answer(a), None) => Err(format!("userspace answerer, {}: no answer", a.reason)),
        (_, None) => Ok(()),
        (other, Some(_)) => Err(format!(
            "userspace answerer answered where the program must not: {}",
            other.reason()
        )),
    }
}

fn answered(reason: &'static str, out: Vec<u8>) -> Expect {
    Expect::Answer(Answer { reason, out })
}

/// The NA of RFC 4861 7.2.4, built here byte by byte: from the target to
/// `dst`, hop limit 255, traffic class and flow label 0, `flags`, one
/// target link-layer option carrying our MAC; the frame to `to`.
fn advert(to: [u8; 6], dst: &[u8; 16], target: &[u8; 16], flags: u8) -> Vec<u8> {
    let mut msg = vec![136, 0, 0, 0, flags, 0, 0, 0];
    msg.extend_from_slice(target);
    msg.extend_from_slice(&[2, 1]);
    msg.extend_from_slice(&LB0_MAC);
    let len = (msg.len() as u32).to_be_bytes();
    let c = checksum(&[target, dst, &len, &[0, 0, 0, 58], &msg]);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::with_capacity(NA_LEN);
    f.extend_from_slice(&to);
    f.extend_from_slice(&LB0_MAC);
    f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]);
    f.extend_from_slice(target);
    f.extend_from_slice(dst);
    f.extend_from_slice(&msg);
    debug_assert_eq!(f.len(), NA_LEN);
    f
}

/// Whether `got` is the answer `want`: byte for byte, but an NA whose
/// checksum is the other zero (0xffff for 0x0000 or back) of a valid
/// sum is just as right.
pub(crate) fn same_answer(want: &[u8], got: &[u8]) -> bool {
    if want == got {
        return true;
    }
    let na = want.len() == NA_LEN && want[12..14] == [0x86, 0xdd];
    na && got.len() == NA_LEN
        && want[..56] == got[..56]
        && want[58..] == got[58..]
        && verify(&[
            &got[22..54],
            &32u32.to_be_bytes(),
            &[0, 0, 0, 58],
            &got[54..],
        ])
}

/// What differs first between the answer `want` and the output `got`,
/// named by field, so that violations group by cause.
pub(crate) fn difference(want: &[u8], got: &[u8]) -> String {
    if want.len() != got.len() {
        return format!("answer of {} bytes, not {}", got.len(), want.len());
    }
    let arp = want[12..14] == [0x08, 0x06];
    // A wrong field makes the NA's checksum differ too: name the field.
    let checksum = |i: usize| !arp && (56..58).contains(&i);
    let differs = |&(i, (a, b)): &(usize, (&u8, &u8))| a != b && !checksum(i);
    let first = want.iter().zip(got).enumerate().find(differs);
    let Some(i) = first
        .map(|(i, _)| i)
        .or_else(|| (want != got).then_some(56))
    else {
        return "answer as wanted".into();
    };
    format!(
        "answer's {} wrong",
        if arp { arp_field(i) } else { na_field(i) }
    )
}

fn arp_field(i: usize) -> &'static str {
    match i {
        0..6 => "Ethernet destination",
        6..12 => "Ethernet source",
        12..14 => "EtherType",
        14..20 => "ARP types/lengths",
        20..22 => "ARP opcode",
        22..28 => "ARP sender hardware address",
        28..32 => "ARP sender protocol address",
        32..38 => "ARP target hardware address",
        38..42 => "ARP target protocol address",
        _ => "padding",
    }
}

fn na_field(i: usize) -> &'static str {
    match i {
        0..6 => "Ethernet destination",
        6..12 => "Ethernet source",
        12..14 => "EtherType",
        14..18 => "IPv6 version/traffic class/flow label",
        18..20 => "IPv6 payload length",
        20 => "IPv6 next header",
        21 => "IPv6 hop limit",
        22..38 => "IPv6 source",
        38..54 => "IPv6 destination",
        54 => "ICMPv6 type",
        55 => "ICMPv6 code",
        56..58 => "ICMPv6 checksum",
        58 => "NA flags",
        59..62 => "NA reserved bytes",
        62..78 => "NA target",
        _ => "NA target link-layer option",
    }
}

/// The oracle on frames whose fate the hand-written table
/// (tests/packets/neighbour.rs) fixes, so that a broken oracle cannot
/// pass for a correct program (no root needed).
#[test]
fn neighbour_oracle_on_hand_built_frames() {
    use std::net::Ipv6Addr;

    use xlb_tests::{
        lab::{CLIENT_MAC, CLIENT_V4, CLIENT_V6},
        packet::{ETH_P_ARP, ETH_P_IPV6, V6, eth, icmp6, ipv6},
    };

    let request = |dst: [u8; 6], sha: [u8; 6], spa: [u8; 4], tpa: [u8; 4]| {
        let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
        a.extend_from_slice(&sha);
        a.extend_from_slice(&spa);
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&tpa);
        eth(dst, CLIENT_MAC, ETH_P_ARP, &a)
    };
    let owned = OWNED_V4.octets();
    let ask = request(BROADCAST, CLIENT_MAC, CLIENT_V4.octets(), owned);
    let Some(Expect::Answer(a)) = judge(&ask) else {
        panic!("an ARP request for an owned address is answered")
    };
    let r = &a.out;
    assert_eq!(r[..12], [CLIENT_MAC, LB0_MAC].concat());
    assert_eq!(r[20..22], [0, 2]);
    assert_eq!(r[28..32], owned);
    assert_eq!(r[38..42], CLIENT_V4.octets());
    let probe = request(BROADCAST, CLIENT_MAC, [0; 4], owned);
    assert!(matches!(judge(&probe), Some(Expect::Answer(_))));
    let gratuitous = request(BROADCAST, CLIENT_MAC, owned, owned);
    assert!(matches!(judge(&gratuitous), Some(Expect::Pass(_))));
    let multicast = request(BROADCAST, [1, 0, 0x5e, 0, 0, 1], [1; 4], owned);
    assert!(matches!(judge(&multicast), Some(Expect::Pass(_))));
    assert!(matches!(judge(&ask[..41]), Some(Expect::Pass(_))));

    let v6 = OWNED_V6.octets();
    let sn = solicited_node(&v6);
    let ns = |eth_dst: [u8; 6], src: Ipv6Addr, dst: [u8; 16], opts: &[u8], hop: u8| {
        let mut body = v6.to_vec();
        body.extend_from_slice(opts);
        let dst = Ipv6Addr::from(dst);
        let msg = icmp6(src, dst, 135, 0, [0; 4], &body);
        let mut h = V6::new(src, dst, 58);
        h.hop = hop;
        eth(eth_dst, CLIENT_MAC, ETH_P_IPV6, &ipv6(&h, &msg))
    };
    let slla = [1, 1, 2, 0, 0, 0, 0, 0x42];
    let f = ns(group_mac(&sn), CLIENT_V6, sn, &slla, 255);
    let Some(Expect::Answer(a)) = judge(&f) else {
        panic!("a valid NS for an owned address is answered")
    };
    let na = &a.out;
    assert_eq!(na.len(), NA_LEN);
    assert_eq!(na[..6], [2, 0, 0, 0, 0, 0x42]);
    assert_eq!((na[54], na[58]), (136, FLAGS_SO));
    assert_eq!(na[22..38], v6);
    assert_eq!(na[38..54], CLIENT_V6.octets());
    let dad = ns(group_mac(&sn), Ipv6Addr::UNSPECIFIED, sn, &[], 255);
    let Some(Expect::Answer(a)) = judge(&dad) else {
        panic!("a DAD probe for an owned address is defended")
    };
    assert_eq!(a.out[..6], [0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(a.out[38..54], ALL_NODES);
    assert_eq!(a.out[58], FLAGS_O);
    let dad_lla = ns(group_mac(&sn), Ipv6Addr::UNSPECIFIED, sn, &slla, 255);
    assert!(matches!(judge(&dad_lla), Some(Expect::Pass(_))));
    let low_hop = ns(group_mac(&sn), CLIENT_V6, sn, &slla, 254);
    assert!(matches!(judge(&low_hop), Some(Expect::Pass(_))));
    let zero_opt = ns(LB0_MAC, CLIENT_V6, v6, &[3, 0, 0, 0, 0, 0, 0, 0], 255);
    assert!(matches!(judge(&zero_opt), Some(Expect::Pass(_))));
    let mut bad_sum = ns(LB0_MAC, CLIENT_V6, v6, &[], 255);
    bad_sum[57] ^= 1;
    assert!(matches!(judge(&bad_sum), Some(Expect::Pass(_))));
    let wrong_group = ns(group_mac(&ALL_NODES), CLIENT_V6, sn, &slla, 255);
    assert!(matches!(judge(&wrong_group), Some(Expect::Pass(_))));
}
