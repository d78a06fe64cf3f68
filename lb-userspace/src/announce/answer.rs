//! The answer to an ARP request or neighbour solicitation for an owned
//! address, computed in userspace: what the XDP program does in the kernel
//! (`lb-ebpf/src/neighbour.rs`), for the IPVS data plane, where no program
//! runs. Same contract (docs/announce.md), same validation: RFC 826 for
//! ARP, RFC 4861 7.1.1 for solicitations; anything else gets no answer.

use std::net::{IpAddr, Ipv6Addr};

const ETH: usize = 14;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NS: u8 = 135;
const NA: u8 = 136;
/// NS lengths looked at, as in the data plane.
const NS_MIN: usize = 24;
const NS_MAX: usize = 88;

/// What to send back for `frame`, received on an interface with MAC `mac`,
/// when `owns` says this node claims the address asked about.
pub fn answer(frame: &[u8], mac: [u8; 6], owns: impl Fn(IpAddr) -> bool) -> Option<Vec<u8>> {
    match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        ETH_P_ARP => arp(frame, mac, owns),
        ETH_P_IPV6 => solicitation(frame, mac, owns),
        _ => None,
    }
}

fn station(m: &[u8]) -> bool {
    m[0] & 1 == 0 && m.iter().any(|b| *b != 0)
}

fn arp(f: &[u8], mac: [u8; 6], owns: impl Fn(IpAddr) -> bool) -> Option<Vec<u8>> {
    let a = f.get(ETH..ETH + 28)?;
    if a[..8] != [0, 1, 0x08, 0x00, 6, 4, 0, 1] {
        return None;
    }
    let (sha, spa, tpa) = (&a[8..14], &a[14..18], &a[24..28]);
    if spa == tpa || !owns(IpAddr::from(<[u8; 4]>::try_from(tpa).ok()?)) {
        return None;
    }
    if !(f[..6] == [0xff; 6] || f[..6] == mac) || !station(sha) {
        return None;
    }
    let mut out = f.to_vec();
    out[..6].copy_from_slice(sha);
    out[6..12].copy_from_slice(&mac);
    let r = &mut out[ETH..ETH + 28];
    r[7] = 2;
    r[18..24].copy_from_slice(sha);
    r[24..28].copy_from_slice(spa);
    r[8..14].copy_from_slice(&mac);
    r[14..18].copy_from_slice(tpa);
    Some(out)
}

fn solicitation(f: &[u8], mac: [u8; 6], owns: impl Fn(IpAddr) -> bool) -> Option<Vec<u8>> {
    let ip = f.get(ETH..ETH + 40)?;
    let len = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    if ip[0] >> 4 != 6 || ip[6] != ICMPV6 || len == 0 || f.len() < ETH + 40 + len {
        return None;
    }
    let msg = &f[ETH + 40..ETH + 40 + len];
    if msg[0] != NS || !(NS_MIN..=NS_MAX).contains(&len) || len % 8 != 0 {
        return None;
    }
    let target = Ipv6Addr::from(<[u8; 16]>::try_from(&msg[8..24]).ok()?);
    if !owns(target.into()) || target.is_multicast() || ip[7] != 255 || msg[1] != 0 {
        return None;
    }
    let src = <[u8; 16]>::try_from(&ip[8..24]).ok()?;
    let dst = <[u8; 16]>::try_from(&ip[24..40]).ok()?;
    if checksum(&src, &dst, msg) != 0 {
        return None;
    }
    // Options: each non-zero in length, filling the message exactly; a
    // source link-layer option must be Ethernet-sized, the first counts.
    let mut source_lla: Option<[u8; 6]> = None;
    let mut at = NS_MIN;
    while at < len {
        let units = usize::from(*msg.get(at + 1)?);
        if units == 0 || at + units * 8 > len {
            return None;
        }
        if msg[at] == 1 {
            if units != 1 {
                return None;
            }
            source_lla.get_or_insert(msg[at + 2..at + 8].try_into().ok()?);
        }
        at += units * 8;
    }
    let unspecified = src == [0; 16];
    let group = solicited_node(&target);
    let to_group = dst == group.octets();
    if unspecified && (!to_group || source_lla.is_some()) || !(to_group || dst == target.octets()) {
        return None;
    }
    let want_eth = if to_group {
        [0x33, 0x33, dst[12], dst[13], dst[14], dst[15]]
    } else {
        mac
    };
    if f[..6] != want_eth || !station(&f[6..12]) || source_lla.is_some_and(|m| !station(&m)) {
        return None;
    }
    let (to_mac, to_ip, flags) = if unspecified {
        ([0x33, 0x33, 0, 0, 0, 1], super::frames::ALL_NODES, 0x20)
    } else {
        (
            source_lla.unwrap_or(f[6..12].try_into().ok()?),
            Ipv6Addr::from(src),
            0x60,
        )
    };
    Some(advertisement(to_mac, mac, target, to_ip, flags))
}

/// A neighbour advertisement from `target` to `to_ip` with `flags` and our
/// MAC as the target link-layer option.
fn advertisement(
    to_mac: [u8; 6],
    mac: [u8; 6],
    target: Ipv6Addr,
    to_ip: Ipv6Addr,
    flags: u8,
) -> Vec<u8> {
    let mut msg = vec![NA, 0, 0, 0, flags, 0, 0, 0];
    msg.extend_from_slice(&target.octets());
    msg.extend_from_slice(&[2, 1]);
    msg.extend_from_slice(&mac);
    let sum = checksum(&target.octets(), &to_ip.octets(), &msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = Vec::with_capacity(ETH + 40 + msg.len());
    f.extend_from_slice(&to_mac);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.extend_from_slice(&[ICMPV6, 255]);
    f.extend_from_slice(&target.octets());
    f.extend_from_slice(&to_ip.octets());
    f.extend_from_slice(&msg);
    f
}

/// The one's complement of the one's-complement sum of the pseudo-header
/// and `msg`: 0 for a message whose checksum is right.
fn checksum(src: &[u8; 16], dst: &[u8; 16], msg: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |b: &[u8]| {
        for c in b.chunks(2) {
            sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    };
    add(src);
    add(dst);
    add(&(msg.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(msg);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ff02::1:ffXX:XXXX for `a`.
fn solicited_node(a: &Ipv6Addr) -> Ipv6Addr {
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

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

    fn request(tpa: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&CLIENT);
        f.extend_from_slice(&[10, 0, 0, 2]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa.octets());
        f
    }

    #[test]
    fn arp_for_an_owned_address_is_answered_and_others_are_not() {
        let owns = |a: IpAddr| a == IpAddr::V4(VIP);
        let out = answer(&request(VIP), MAC, owns).expect("answered");
        assert_eq!(&out[..6], &CLIENT);
        assert_eq!(&out[6..12], &MAC);
        assert_eq!(&out[20..22], &[0, 2]);
        assert_eq!(&out[22..28], &MAC);
        assert_eq!(&out[28..32], &VIP.octets());
        assert_eq!(&out[32..38], &CLIENT);
        assert_eq!(&out[38..42], &[10, 0, 0, 2]);
        assert!(answer(&request(Ipv4Addr::new(10, 0, 0, 101)), MAC, owns).is_none());
        // Gratuitous: sender == target.
        let mut g = request(VIP);
        g[28..32].copy_from_slice(&VIP.octets());
        assert!(answer(&g, MAC, owns).is_none());
    }
}
