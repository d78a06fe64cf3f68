//! Direct Server Return: IPIP encapsulation or a MAC rewrite, and the way out.

use aya_ebpf::{
    helpers::{bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use lb_common::{IPIP4_OVERHEAD, IPIP6_OVERHEAD, NextHop, Outcome};

use crate::{
    csum,
    parse::{ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, PROTO_IPIP, PROTO_IPV6, Packet},
    ptr,
    verdict::{Step, Verdict},
};

/// Hop limit of headers this program originates.
pub const TTL: u8 = 64;

const INTERNAL: Verdict = Verdict::drop(Outcome::DropInternal);

/// Writes the Ethernet header at the start of the frame, keeping the input's
/// 802.1Q tag when there was one.
#[inline(always)]
pub fn write_l2(
    ctx: &XdpContext,
    pkt: &Packet,
    dst: &[u8; 6],
    src: &[u8; 6],
    ether_type: u16,
) -> Step<()> {
    let eth = unsafe { &mut *ptr::at::<[u8; 18]>(ctx, 0).ok_or(INTERNAL)? };
    eth[..6].copy_from_slice(dst);
    eth[6..12].copy_from_slice(src);
    let t = ether_type.to_be_bytes();
    if pkt.vlan != 0 {
        let q = ETH_P_8021Q.to_be_bytes();
        *eth = [
            eth[0],
            eth[1],
            eth[2],
            eth[3],
            eth[4],
            eth[5],
            eth[6],
            eth[7],
            eth[8],
            eth[9],
            eth[10],
            eth[11],
            q[0],
            q[1],
            pkt.vlan_tci[0],
            pkt.vlan_tci[1],
            t[0],
            t[1],
        ];
    } else {
        eth[12] = t[0];
        eth[13] = t[1];
    }
    Ok(())
}

/// Makes `len` bytes of room in front of the packet. Every packet pointer
/// taken before this is invalid afterwards (the verifier insists).
#[inline(always)]
pub fn grow_head(ctx: &XdpContext, len: i32) -> Step<()> {
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -len) } != 0 {
        return Err(INTERNAL);
    }
    Ok(())
}

/// IPv4-in-IPv4: a new outer header from `src` to `dst` in front of the
/// untouched inner packet. TOS and DF are copied from the inner header.
#[inline(always)]
pub fn ipip4(
    ctx: &XdpContext,
    pkt: &Packet,
    hop: &NextHop,
    src: &[u8; 4],
    dst: &[u8; 16],
) -> Step<()> {
    grow_head(ctx, IPIP4_OVERHEAD as i32)?;
    write_l2(ctx, pkt, &hop.dmac, &hop.smac, ETH_P_IP)?;
    let h = unsafe { &mut *ptr::at::<[u8; 20]>(ctx, pkt.l2_len as usize).ok_or(INTERNAL)? };
    let len = (pkt.ip_len + IPIP4_OVERHEAD).to_be_bytes();
    *h = [
        0x45,
        pkt.tos,
        len[0],
        len[1],
        0,
        0,
        pkt.df << 6,
        0,
        TTL,
        PROTO_IPIP,
        0,
        0,
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3],
    ];
    let c = csum::ipv4_header(h).to_be_bytes();
    h[10] = c[0];
    h[11] = c[1];
    Ok(())
}

/// IPv6-in-IPv6. The flow label carries the flow hash, so routers between
/// the balancer and the backend spread tunnels by flow (RFC 6438).
#[inline(always)]
pub fn ipip6(
    ctx: &XdpContext,
    pkt: &Packet,
    hop: &NextHop,
    src: &[u8; 16],
    dst: &[u8; 16],
    flow_hash: u32,
) -> Step<()> {
    grow_head(ctx, IPIP6_OVERHEAD as i32)?;
    write_l2(ctx, pkt, &hop.dmac, &hop.smac, ETH_P_IPV6)?;
    let h = unsafe { &mut *ptr::at::<[u8; 40]>(ctx, pkt.l2_len as usize).ok_or(INTERNAL)? };
    let label = flow_hash & 0x000f_ffff;
    let len = pkt.ip_len.to_be_bytes();
    h[0] = 0x60 | (pkt.tos >> 4);
    h[1] = (pkt.tos << 4) | (label >> 16) as u8;
    h[2] = (label >> 8) as u8;
    h[3] = label as u8;
    h[4] = len[0];
    h[5] = len[1];
    h[6] = PROTO_IPV6;
    h[7] = TTL;
    h[8..24].copy_from_slice(src);
    h[24..40].copy_from_slice(dst);
    Ok(())
}

/// Sends the frame out: back through the receiving interface (XDP_TX), or
/// redirected when the route leaves through another one. Tagged frames
/// always leave where they came in: the route points at the VLAN device,
/// which cannot transmit XDP frames, while the tag is already right.
#[inline(always)]
pub fn send(ctx: &XdpContext, pkt: &Packet, hop: &NextHop) -> Verdict {
    if pkt.vlan != 0 || hop.out_ifindex == ctx.ingress_ifindex() as u32 {
        return Verdict::tx(Outcome::Tx);
    }
    unsafe { bpf_redirect(hop.out_ifindex, 0) };
    Verdict::redirect()
}
