//! Ethernet, IPv4 and IPv6 headers, and the L4 ports. The balancer takes
//! only untagged frames (`frame`), and balances only those addressed to the
//! receiving interface (`for_us`); the decapsulator also takes one 802.1Q
//! tag (`packet`). Header fields are loaded a word at a time (`ptr::load`). Anything not handled
//! ends here with a PASS verdict and the bytes untouched.

use aya_ebpf::programs::XdpContext;
use lb_common::{FAMILY_V4, FAMILY_V6, IFACES_LOW, Iface, Outcome, PROTO_TCP};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, ip::Ipv6Hdr, vlan::VlanHdr};

pub use crate::scratch::{FRAG_FIRST, FRAG_LATER, FRAG_NONE, Packet};
use crate::{
    addr,
    maps::{XLB_IFACES, XLB_IFACES_LOW},
    ptr,
    verdict::{Step, Verdict},
};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_ARP: u16 = 0x0806;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_ICMPV6: u8 = 58;

/// Length of the Ethernet header of every frame the balancer handles.
pub const ETH_LEN: usize = EthHdr::LEN;

const IP_MF: u16 = 0x2000;
const IP_DF: u16 = 0x4000;
const IP_OFFSET: u16 = 0x1fff;

/// The balancer's parse: an untagged frame carrying a consistent IPv4 or
/// IPv6 header, into `p`. Whose MAC the frame is for is checked later
/// (`for_us`), only for frames that may be VIP traffic. Inline: out of
/// line, LLVM would pass `data`/`data_end` as promoted 32-bit arguments and
/// widen them with shifts, pointer arithmetic the verifier refuses.
#[inline(always)]
pub fn frame(ctx: &XdpContext, p: &mut Packet) -> Step<()> {
    let malformed = Verdict::pass(Outcome::PassMalformed);
    let eth = ptr::at::<[u8; EthHdr::LEN]>(ctx, 0).ok_or(malformed)? as usize;
    p.l2_len = ETH_LEN as u32;
    match u16::from_be(unsafe { ptr::load::<u16>(eth + 12) }) {
        ETH_P_IP => ipv4(ctx, p, ETH_LEN),
        ETH_P_IPV6 => {
            ipv6(ctx, p, ETH_LEN)?;
            // Payload length 0 announces a jumbogram (RFC 2675).
            if p.ip_len as usize == Ipv6Hdr::LEN {
                return Err(malformed);
            }
            Ok(())
        }
        // The program runs on the physical device: the route of a tagged
        // frame is the VLAN device's, which the kernel knows and we do not.
        ETH_P_8021Q | ETH_P_8021AD => Err(Verdict::pass(Outcome::PassVlan)),
        ETH_P_ARP => Err(match crate::neighbour::arp(ctx) {
            Ok(v) | Err(v) => v,
        }),
        _ => Err(Verdict::pass(Outcome::PassNotIp)),
    }
}

/// Whether the frame is addressed to the receiving interface's own MAC.
/// Frames for another host (or broadcast, multicast) reach us through
/// promiscuous mode, a bridge or a hub; the kernel would not route them.
#[inline(always)]
pub fn for_us(ctx: &XdpContext) -> bool {
    let Some(eth) = ptr::at::<[u8; 6]>(ctx, 0) else {
        return false;
    };
    iface(ctx).is_some_and(|i| {
        let (eth, mac) = (eth as usize, i.mac.as_ptr() as usize);
        // `Iface` is 8-byte aligned in its map, the MAC at its start.
        unsafe {
            ptr::load::<u32>(eth) == ptr::load::<u32>(mac)
                && ptr::load::<u16>(eth + 4) == ptr::load::<u16>(mac + 4)
        }
    })
}

/// The receiving interface, if the program runs on it.
#[inline(always)]
pub fn iface(ctx: &XdpContext) -> Option<&'static Iface> {
    let ifindex = ctx.ingress_ifindex() as u32;
    let iface = if ifindex < IFACES_LOW {
        XLB_IFACES_LOW.get(ifindex)
    } else {
        unsafe { XLB_IFACES.get(ifindex) }
    };
    iface.filter(|i| i.present != 0)
}

/// The decapsulator's parse: Ethernet, optional 802.1Q, then IPv4 or IPv6,
/// into `p`, whatever the destination MAC.
#[inline(always)]
pub fn packet(ctx: &XdpContext, p: &mut Packet) -> Step<()> {
    let malformed = Verdict::pass(Outcome::PassMalformed);
    let eth = ptr::at::<[u8; EthHdr::LEN]>(ctx, 0).ok_or(malformed)? as usize;
    let mut ether_type = u16::from_be(unsafe { ptr::load::<u16>(eth + 12) });
    p.l2_len = EthHdr::LEN as u32;
    if ether_type == ETH_P_8021Q {
        let tag = ptr::at::<[u8; VlanHdr::LEN]>(ctx, EthHdr::LEN).ok_or(malformed)? as usize;
        ether_type = u16::from_be(unsafe { ptr::load::<u16>(tag + 2) });
        p.l2_len += VlanHdr::LEN as u32;
    }
    match ether_type {
        ETH_P_IP => ipv4(ctx, p, p.l2_len as usize),
        ETH_P_IPV6 => ipv6(ctx, p, p.l2_len as usize),
        _ => Err(Verdict::pass(Outcome::PassNotIp)),
    }
}

/// An IPv4 header at `l3` whose lengths agree with each other and with the
/// frame (Ethernet padding after the packet allowed, and not part of it).
#[inline(always)]
fn ipv4(ctx: &XdpContext, p: &mut Packet, l3: usize) -> Step<()> {
    let malformed = Verdict::pass(Outcome::PassMalformed);
    let ip = ptr::at::<[u8; Ipv4Hdr::LEN]>(ctx, l3).ok_or(malformed)? as usize;
    // Three words hold every field but the addresses (loaded as they are
    // in memory: byte 0 of the header is the low byte).
    let (w0, w1, w2) = unsafe {
        (
            ptr::load::<u32>(ip),
            ptr::load::<u32>(ip + 4),
            ptr::load::<u32>(ip + 8),
        )
    };
    let vihl = w0 as u8;
    let hdr_len = ((vihl & 0x0f) as usize) * 4;
    let ip_len = u16::from_be((w0 >> 16) as u16);
    if vihl >> 4 != 4
        || hdr_len < Ipv4Hdr::LEN
        || (ip_len as usize) < hdr_len
        || l3 + ip_len as usize > ptr::frame_len(ctx)
    {
        return Err(malformed);
    }
    let frags = u16::from_be((w1 >> 16) as u16);
    p.fragment = if frags & IP_OFFSET != 0 {
        FRAG_LATER
    } else if frags & IP_MF != 0 {
        FRAG_FIRST
    } else {
        FRAG_NONE
    };
    p.df = (frags & IP_DF != 0) as u8;
    p.family = FAMILY_V4;
    p.proto = (w2 >> 8) as u8;
    p.tos = (w0 >> 8) as u8;
    p.ttl = w2 as u8;
    p.ip_hdr_len = hdr_len as u8;
    p.ip_len = ip_len;
    p.l4_off = (l3 + hdr_len) as u32;
    unsafe {
        addr::set_v4(&mut p.src, ptr::load::<u32>(ip + 12));
        addr::set_v4(&mut p.dst, ptr::load::<u32>(ip + 16));
    }
    Ok(())
}

/// An IPv6 header at `l3` whose payload fits the frame. Any next header:
/// callers pick the ones they handle.
#[inline(always)]
fn ipv6(ctx: &XdpContext, p: &mut Packet, l3: usize) -> Step<()> {
    let malformed = Verdict::pass(Outcome::PassMalformed);
    let ip = ptr::at::<Ipv6Hdr>(ctx, l3).ok_or(malformed)? as usize;
    let (w0, w1) = unsafe { (ptr::load::<u32>(ip), ptr::load::<u32>(ip + 4)) };
    let payload = u16::from_be(w1 as u16) as usize;
    if (w0 as u8) >> 4 != 6 || l3 + Ipv6Hdr::LEN + payload > ptr::frame_len(ctx) {
        return Err(malformed);
    }
    p.fragment = FRAG_NONE;
    p.df = 1;
    p.family = FAMILY_V6;
    p.proto = (w1 >> 16) as u8;
    p.tos = ((w0 as u8) << 4) | ((w0 >> 8) as u8 >> 4);
    p.ttl = (w1 >> 24) as u8;
    p.ip_hdr_len = Ipv6Hdr::LEN as u8;
    p.ip_len = (Ipv6Hdr::LEN + payload) as u16;
    p.l4_off = (l3 + Ipv6Hdr::LEN) as u32;
    addr::set_v6_from(&mut p.src, ip + 8);
    addr::set_v6_from(&mut p.dst, ip + 24);
    Ok(())
}

/// Where the IP packet ends in the frame, by its own length field.
#[inline(always)]
pub fn ip_end(p: &Packet) -> usize {
    p.l2_len as usize + p.ip_len as usize
}

/// Source and destination ports, whether the TCP RST flag is set, and
/// whether the rest of the L4 header agrees with the IP length.
#[derive(Clone, Copy)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
    pub rst: bool,
    /// TCP: data offset at least 5 and within the IP payload; UDP: length
    /// at least 8 and within the IP payload (shorter is trimmed, as the
    /// kernel does).
    pub valid: bool,
}

/// Ports of the TCP or UDP header at `off`, when its fixed part (20 or 8
/// bytes) lies before `ip_end`: the IP length, never the frame, bounds it.
#[inline(always)]
pub fn ports(ctx: &XdpContext, off: usize, proto: u8, ip_end: usize) -> Option<Ports> {
    if proto == PROTO_TCP {
        if off + 20 > ip_end {
            return None;
        }
        let h = ptr::at::<[u8; 20]>(ctx, off)? as usize;
        let (w0, w3) = unsafe { (ptr::load::<u32>(h), ptr::load::<u32>(h + 12)) };
        let doff = ((w3 as u8) >> 4) as usize;
        Some(Ports {
            src: u16::from_be(w0 as u16),
            dst: u16::from_be((w0 >> 16) as u16),
            rst: (w3 >> 8) as u8 & 0x04 != 0,
            valid: doff >= 5 && off + doff * 4 <= ip_end,
        })
    } else {
        if off + 8 > ip_end {
            return None;
        }
        let h = ptr::at::<[u8; 8]>(ctx, off)? as usize;
        let (w0, w1) = unsafe { (ptr::load::<u32>(h), ptr::load::<u32>(h + 4)) };
        let len = u16::from_be(w1 as u16) as usize;
        Some(Ports {
            src: u16::from_be(w0 as u16),
            dst: u16::from_be((w0 >> 16) as u16),
            rst: false,
            valid: len >= 8 && off + len <= ip_end,
        })
    }
}
