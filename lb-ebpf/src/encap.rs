//! Direct Server Return: IPIP encapsulation or a MAC rewrite, and the way out.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use lb_common::{IPIP4_OVERHEAD, IPIP6_OVERHEAD, NextHop, Outcome};

use crate::{
    csum,
    parse::{ETH_LEN, ETH_P_IP, ETH_P_IPV6, PROTO_IPIP, PROTO_IPV6, Packet},
    ptr,
    verdict::{Step, Verdict},
};

/// Hop limit of headers this program originates.
pub const TTL: u8 = 64;

const INTERNAL: Verdict = Verdict::drop(Outcome::DropInternal);

/// Writes the Ethernet header at the start of the frame.
#[inline(always)]
pub fn write_l2(ctx: &XdpContext, dst: &[u8; 6], src: &[u8; 6], ether_type: u16) -> Step<()> {
    let eth = unsafe { &mut *ptr::at::<[u8; ETH_LEN]>(ctx, 0).ok_or(INTERNAL)? };
    let t = ether_type.to_be_bytes();
    *eth = [
        dst[0], dst[1], dst[2], dst[3], dst[4], dst[5], src[0], src[1], src[2], src[3], src[4],
        src[5], t[0], t[1],
    ];
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
/// Without DF the outer packet may be fragmented on the way, and then its
/// ID must tell its fragments from others' (RFC 791): a random non-zero
/// one per packet. With DF the ID is 0 (RFC 6864: atomic datagrams).
#[inline(always)]
pub fn ipip4(
    ctx: &XdpContext,
    pkt: &Packet,
    hop: &NextHop,
    src: &[u8; 4],
    dst: &[u8; 16],
) -> Step<()> {
    let id = if pkt.df == 0 {
        let r = unsafe { bpf_get_prandom_u32() } as u16;
        (r | (r == 0) as u16).to_be_bytes()
    } else {
        [0, 0]
    };
    grow_head(ctx, IPIP4_OVERHEAD as i32)?;
    write_l2(ctx, &hop.dmac, &hop.smac, ETH_P_IP)?;
    let h = unsafe { &mut *ptr::at::<[u8; 20]>(ctx, ETH_LEN).ok_or(INTERNAL)? };
    let len = (pkt.ip_len + IPIP4_OVERHEAD).to_be_bytes();
    *h = [
        0x45,
        pkt.tos,
        len[0],
        len[1],
        id[0],
        id[1],
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
    write_l2(ctx, &hop.dmac, &hop.smac, ETH_P_IPV6)?;
    let h = unsafe { &mut *ptr::at::<[u8; 40]>(ctx, ETH_LEN).ok_or(INTERNAL)? };
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
/// redirected when the route leaves through another one.
#[inline(always)]
pub fn send(ctx: &XdpContext, hop: &NextHop) -> Verdict {
    if hop.out_ifindex == ctx.ingress_ifindex() as u32 {
        return Verdict::tx(Outcome::Tx);
    }
    unsafe { bpf_redirect(hop.out_ifindex, 0) };
    Verdict::redirect()
}
