//! Ethernet (one 802.1Q tag), IPv4 (options included) and IPv6 headers, and
//! the L4 ports. Anything the balancer does not handle ends here with a PASS
//! verdict and the bytes untouched.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V4, FAMILY_V6, Outcome, PROTO_TCP, PROTO_UDP};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, ip::Ipv6Hdr, vlan::VlanHdr};

pub use crate::scratch::{FRAG_FIRST, FRAG_LATER, FRAG_NONE, Packet};
use crate::{
    ptr,
    verdict::{Step, Verdict},
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_ICMPV6: u8 = 58;

const IP_MF: u16 = 0x2000;
const IP_DF: u16 = 0x4000;
const IP_OFFSET: u16 = 0x1fff;

/// Ethernet, optional 802.1Q, then IPv4 or IPv6, into `p`. Inline: out of
/// line, LLVM would pass `data`/`data_end` as promoted 32-bit arguments and
/// widen them with shifts, pointer arithmetic the verifier refuses.
#[inline(always)]
pub fn packet(ctx: &XdpContext, p: &mut Packet) -> Step<()> {
    let malformed = Verdict::pass(Outcome::PassMalformed);
    let eth = ptr::at::<[u8; EthHdr::LEN]>(ctx, 0).ok_or(malformed)?;
    let eth = unsafe { &*eth };
    let mut ether_type = u16::from_be_bytes([eth[12], eth[13]]);
    p.l2_len = EthHdr::LEN as u32;
    p.vlan = 0;
    if ether_type == ETH_P_8021Q {
        let tag = ptr::at::<[u8; VlanHdr::LEN]>(ctx, EthHdr::LEN).ok_or(malformed)?;
        let tag = unsafe { &*tag };
        ether_type = u16::from_be_bytes([tag[2], tag[3]]);
        p.vlan = 1;
        p.vlan_tci = [tag[0], tag[1]];
        p.l2_len += VlanHdr::LEN as u32;
    }
    match ether_type {
        ETH_P_IP => ipv4(ctx, p),
        ETH_P_IPV6 => ipv6(ctx, p),
        _ => Err(Verdict::pass(Outcome::PassNotIp)),
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, p: &mut Packet) -> Step<()> {
    let malformed = Verdict::pass(Outcome::PassMalformed);
    let l3 = p.l2_len as usize;
    let ip = ptr::at::<[u8; Ipv4Hdr::LEN]>(ctx, l3).ok_or(malformed)?;
    let ip = unsafe { &*ip };
    let hdr_len = ((ip[0] & 0x0f) as usize) * 4;
    let ip_len = u16::from_be_bytes([ip[2], ip[3]]);
    if ip[0] >> 4 != 4
        || hdr_len < Ipv4Hdr::LEN
        || (ip_len as usize) < hdr_len
        || l3 + ip_len as usize > ptr::frame_len(ctx)
    {
        return Err(malformed);
    }
    let frags = u16::from_be_bytes([ip[6], ip[7]]);
    p.fragment = if frags & IP_OFFSET != 0 {
        FRAG_LATER
    } else if frags & IP_MF != 0 {
        FRAG_FIRST
    } else {
        FRAG_NONE
    };
    p.df = (frags & IP_DF != 0) as u8;
    p.family = FAMILY_V4;
    p.proto = ip[9];
    p.tos = ip[1];
    p.ip_len = ip_len;
    p.l4_off = (l3 + hdr_len) as u32;
    p.src = [
        ip[12], ip[13], ip[14], ip[15], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    p.dst = [
        ip[16], ip[17], ip[18], ip[19], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    Ok(())
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, p: &mut Packet) -> Step<()> {
    let malformed = Verdict::pass(Outcome::PassMalformed);
    let l3 = p.l2_len as usize;
    let ip = ptr::at::<Ipv6Hdr>(ctx, l3).ok_or(malformed)?;
    let ip = unsafe { &*ip };
    let payload = u16::from_be_bytes(ip.payload_len) as usize;
    if ip.vcf[0] >> 4 != 6 || l3 + Ipv6Hdr::LEN + payload > ptr::frame_len(ctx) {
        return Err(malformed);
    }
    // Read as a byte: network-types' IpProto enum cannot hold every value.
    let proto = unsafe { *(&ip.next_hdr as *const _ as *const u8) };
    match proto {
        PROTO_TCP | PROTO_UDP | PROTO_ICMPV6 | PROTO_IPV6 => {}
        // Extension headers (hop-by-hop, routing, fragment, ...) are rare on
        // VIP traffic; walking them costs verifier complexity on every
        // packet. Left to the kernel, counted.
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 => {
            return Err(Verdict::pass(Outcome::PassUnsupported));
        }
        _ => return Err(Verdict::pass(Outcome::PassNotVip)),
    }
    p.fragment = FRAG_NONE;
    p.df = 1;
    p.family = FAMILY_V6;
    p.proto = proto;
    p.tos = (ip.vcf[0] << 4) | (ip.vcf[1] >> 4);
    p.ip_len = (Ipv6Hdr::LEN + payload) as u16;
    p.l4_off = (l3 + Ipv6Hdr::LEN) as u32;
    p.src = ip.src_addr;
    p.dst = ip.dst_addr;
    Ok(())
}

/// Source and destination ports and whether the TCP RST flag is set.
#[derive(Clone, Copy)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
    pub rst: bool,
}

/// Ports of a TCP or UDP header at `off`. TCP needs its whole fixed header
/// (flags, data offset); UDP its 8 bytes.
#[inline(always)]
pub fn ports(ctx: &XdpContext, off: usize, proto: u8) -> Option<Ports> {
    if proto == PROTO_TCP {
        let h = unsafe { &*ptr::at::<[u8; 20]>(ctx, off)? };
        if h[12] >> 4 < 5 {
            return None;
        }
        Some(Ports {
            src: u16::from_be_bytes([h[0], h[1]]),
            dst: u16::from_be_bytes([h[2], h[3]]),
            rst: h[13] & 0x04 != 0,
        })
    } else {
        let h = unsafe { &*ptr::at::<[u8; 8]>(ctx, off)? };
        Some(Ports {
            src: u16::from_be_bytes([h[0], h[1]]),
            dst: u16::from_be_bytes([h[2], h[3]]),
            rst: false,
        })
    }
}
