//! Frames an owner sends unasked when it takes a VIP over.

use std::net::{Ipv4Addr, Ipv6Addr};

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ICMPV6: u8 = 58;
const NDP_ADVERT: u8 = 136;
/// Override, not Solicited: nobody asked (RFC 4861 7.2.6).
const NA_OVERRIDE: u8 = 0x20;

/// ff02::1, every node on the link.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn ethernet(dst: [u8; 6], src: [u8; 6], ether_type: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(86);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ether_type.to_be_bytes());
    f
}

/// A gratuitous ARP in the form RFC 5227 calls an ARP Announcement: a
/// broadcast request whose sender and target address are both the VIP.
/// Every host that has the VIP in its cache replaces the MAC with `mac`
/// (Linux updates an existing entry from any ARP naming its address);
/// requests, unlike gratuitous replies, are accepted by every stack.
pub fn gratuitous_arp(mac: [u8; 6], vip: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet([0xff; 6], mac, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&vip.octets());
    // The Ethernet minimum: a driver may pad with garbage otherwise.
    f.resize(60, 0);
    f
}

/// An unsolicited neighbour advertisement (RFC 4861 7.2.6) to all nodes:
/// Override set, so caches holding the VIP take `mac`.
pub fn unsolicited_na(mac: [u8; 6], vip: Ipv6Addr) -> Vec<u8> {
    let mut f = ethernet([0x33, 0x33, 0, 0, 0, 1], mac, ETH_P_IPV6);
    let mut msg = vec![NDP_ADVERT, 0, 0, 0, NA_OVERRIDE, 0, 0, 0];
    msg.extend_from_slice(&vip.octets());
    msg.extend_from_slice(&[2, 1]);
    msg.extend_from_slice(&mac);
    let sum = checksum(vip, ALL_NODES, &msg);
    msg[2..4].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    f.extend_from_slice(&[ICMPV6, 255]);
    f.extend_from_slice(&vip.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&msg);
    f
}

/// The ICMPv6 checksum (RFC 4443 2.3) of `msg` from `src` to `dst`.
fn checksum(src: Ipv6Addr, dst: Ipv6Addr, msg: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40 + msg.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, ICMPV6]);
    pseudo.extend_from_slice(msg);
    let mut sum: u32 = pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The Ethernet group that solicitations for `a` are sent to: 33:33 and
/// the last four bytes of its solicited-node group ff02::1:ffXX:XXXX.
pub fn solicited_node_mac(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x33, 0x33, 0xff, o[13], o[14], o[15]]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0xaa, 0x01];

    #[test]
    fn gratuitous_arp_is_an_announcement() {
        let f = gratuitous_arp(MAC, Ipv4Addr::new(10, 1, 2, 3));
        let want: Vec<u8> = [
            &[0xff; 6][..],
            &MAC,
            &[0x08, 0x06],
            &[0, 1, 8, 0, 6, 4, 0, 1],
            &MAC,
            &[10, 1, 2, 3],
            &[0; 6],
            &[10, 1, 2, 3],
            &[0; 18],
        ]
        .concat();
        assert_eq!(f, want);
    }

    #[test]
    fn unsolicited_na_checks_out() {
        let vip: Ipv6Addr = "fd00::1:2".parse().unwrap();
        let f = unsolicited_na(MAC, vip);
        assert_eq!(f.len(), 14 + 40 + 32);
        assert_eq!(&f[..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(f[20], 58, "next header");
        assert_eq!(f[21], 255, "hop limit");
        assert_eq!(&f[22..38], &vip.octets());
        assert_eq!(&f[54..56], &[136, 0]);
        assert_eq!(f[58], 0x20, "override only");
        assert_eq!(&f[62..78], &vip.octets());
        assert_eq!(&f[78..86], &[2, 1, 0x02, 0, 0, 0, 0xaa, 0x01]);
        // A right checksum sums the whole message to 0xffff; computed here
        // with 32-bit words, unlike `checksum`.
        let mut data = Vec::new();
        data.extend_from_slice(&f[22..54]);
        data.extend_from_slice(&32u32.to_be_bytes());
        data.extend_from_slice(&[0, 0, 0, 58]);
        data.extend_from_slice(&f[54..]);
        let mut s: u64 = data
            .chunks(4)
            .map(|c| u64::from(u32::from_be_bytes(c.try_into().unwrap())))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        assert_eq!(s, 0xffff);
    }

    #[test]
    fn solicited_node_group() {
        let a: Ipv6Addr = "2001:db8::12:3456:789a".parse().unwrap();
        assert_eq!(solicited_node_mac(a), [0x33, 0x33, 0xff, 0x56, 0x78, 0x9a]);
    }
}
