//! ICMP: "fragmentation needed" / "packet too big" answers to clients whose
//! packets no longer fit once encapsulated, and the flow quoted inside ICMP
//! errors sent to a VIP, so they reach the backend that owns the flow.

use aya_ebpf::{helpers::bpf_xdp_adjust_tail, programs::XdpContext};
use lb_common::{FAMILY_V4, FlowKey, Outcome, PROTO_TCP, PROTO_UDP};

use crate::{
    csum,
    encap::{self, Mac, TTL},
    parse::{self, ETH_LEN, ETH_P_IP, ETH_P_IPV6, PROTO_ICMP, PROTO_ICMPV6, Packet},
    ptr,
    verdict::{Step, Verdict},
};

/// Bytes of the offending packet quoted back (from its IP header on).
/// RFC 792 asks for the IP header and 8 bytes; quoting more helps the
/// client match it to a socket. Multiples of 4 (the checksum helper's
/// unit), and the ICMPv6 message stays far below the 1280-byte minimum MTU.
pub const QUOTE_V4: usize = 128;
pub const QUOTE_V6: usize = 256;

const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_DEST_UNREACH: u8 = 1;
const ICMPV6_PKT_TOOBIG: u8 = 2;
const ICMP_HDR: usize = 8;
const INTERNAL: Verdict = Verdict::drop(Outcome::DropInternal);

/// Answers the client that its packet must shrink to `mtu` bytes, in place:
/// the headers are rebuilt in front of the quoted packet, the tail cut off,
/// and the frame goes back out where it came in. Out of line: a cold path.
#[inline(never)]
pub fn too_big(ctx: &XdpContext, pkt: &Packet, mtu: u16) -> Step<Verdict> {
    let v4 = pkt.family == FAMILY_V4;
    let (quote, ip_hdr) = if v4 { (QUOTE_V4, 20) } else { (QUOTE_V6, 40) };
    let l2 = ETH_LEN;
    let frame = ptr::frame_len(ctx);
    if l2 + quote > frame {
        return Err(Verdict::drop(Outcome::DropTooBig));
    }
    let eth = ptr::at::<[u8; 12]>(ctx, 0).ok_or(INTERNAL)? as usize;
    let (us, client) = (Mac::load(eth), Mac::load(eth + 6));
    encap::grow_head(ctx, (ip_hdr + ICMP_HDR) as i32)?;
    if unsafe { bpf_xdp_adjust_tail(ctx.ctx, -((frame - l2 - quote) as i32)) } != 0 {
        return Err(INTERNAL);
    }
    if v4 {
        encap::write_l2(ctx, client, us, ETH_P_IP)?;
        v4_message(ctx, pkt, l2, mtu)?;
    } else {
        encap::write_l2(ctx, client, us, ETH_P_IPV6)?;
        v6_message(ctx, pkt, l2, mtu)?;
    }
    Ok(Verdict::tx(Outcome::IcmpTooBigSent))
}

#[inline(always)]
fn v4_message(ctx: &XdpContext, pkt: &Packet, l2: usize, mtu: u16) -> Step<()> {
    const MSG: usize = ICMP_HDR + QUOTE_V4;
    let ip = unsafe { &mut *ptr::at::<[u8; 20]>(ctx, l2).ok_or(INTERNAL)? };
    let len = ((20 + MSG) as u16).to_be_bytes();
    let (s, d) = (&pkt.dst, &pkt.src);
    *ip = [
        0x45, 0, len[0], len[1], 0, 0, 0, 0, TTL, PROTO_ICMP, 0, 0, s[0], s[1], s[2], s[3], d[0],
        d[1], d[2], d[3],
    ];
    let c = csum::ipv4_header(ip).to_be_bytes();
    ip[10] = c[0];
    ip[11] = c[1];
    let msg = unsafe { &mut *ptr::at::<[u8; MSG]>(ctx, l2 + 20).ok_or(INTERNAL)? };
    let m = mtu.to_be_bytes();
    msg[..8].copy_from_slice(&[ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, 0, 0, 0, 0, m[0], m[1]]);
    let sum = csum::partial(msg.as_ptr(), MSG as u32, 0).ok_or(INTERNAL)?;
    msg[2..4].copy_from_slice(&csum::finish(sum));
    Ok(())
}

#[inline(always)]
fn v6_message(ctx: &XdpContext, pkt: &Packet, l2: usize, mtu: u16) -> Step<()> {
    const MSG: usize = ICMP_HDR + QUOTE_V6;
    let ip = unsafe { &mut *ptr::at::<[u8; 40]>(ctx, l2).ok_or(INTERNAL)? };
    let len = (MSG as u16).to_be_bytes();
    ip[..8].copy_from_slice(&[0x60, 0, 0, 0, len[0], len[1], PROTO_ICMPV6, TTL]);
    ip[8..24].copy_from_slice(&pkt.dst);
    ip[24..40].copy_from_slice(&pkt.src);
    let msg = unsafe { &mut *ptr::at::<[u8; MSG]>(ctx, l2 + 40).ok_or(INTERNAL)? };
    let m = (mtu as u32).to_be_bytes();
    msg[..8].copy_from_slice(&[ICMPV6_PKT_TOOBIG, 0, 0, 0, m[0], m[1], m[2], m[3]]);
    // RFC 4443: the checksum covers a pseudo-header of both addresses, the
    // message length and the next-header value; the addresses are summed
    // straight from the header just written.
    let seed = csum::partial(ip[8..].as_ptr(), 32, 0).ok_or(INTERNAL)?;
    let mut tail = [0u8; 8];
    tail[2] = len[0];
    tail[3] = len[1];
    tail[7] = PROTO_ICMPV6;
    let seed = csum::partial(tail.as_ptr(), 8, seed).ok_or(INTERNAL)?;
    let sum = csum::partial(msg.as_ptr(), MSG as u32, seed).ok_or(INTERNAL)?;
    msg[2..4].copy_from_slice(&csum::finish(sum));
    Ok(())
}

/// For an ICMP error addressed to a VIP, the client flow it is about, into
/// `key`. The quoted packet is one the backend sent as the VIP (a DSR
/// reply): its source is the VIP, its destination the client; reversed it
/// is the client's flow key, which leads to the flow's own backend.
///
/// The ICMP header, the quoted IP header and the quoted 8 bytes of ports
/// must all lie within the outer packet by its IP length, and the quoted
/// header must be consistent, else `pass_bad_l4`; other ICMP messages and
/// errors about traffic that is not a VIP's are `pass_not_vip`.
#[inline(always)]
pub fn quoted_flow(ctx: &XdpContext, pkt: &Packet, key: &mut FlowKey) -> Step<()> {
    let not_ours = Verdict::pass(Outcome::PassNotVip);
    let bad = Verdict::pass(Outcome::PassBadL4);
    let end = parse::ip_end(pkt);
    let l4 = pkt.l4_off as usize;
    if l4 + ICMP_HDR > end {
        return Err(bad);
    }
    // The whole 8-byte header: a 1-byte check compiles to `>=`, from which
    // the verifier derives no readable range.
    let icmp_type = unsafe { (*ptr::at::<[u8; ICMP_HDR]>(ctx, l4).ok_or(bad)?)[0] };
    let inner = l4 + ICMP_HDR;
    let ports_off;
    key.family = pkt.family;
    key.src = [0; 16];
    key.dst = [0; 16];
    if pkt.family == FAMILY_V4 {
        if icmp_type != ICMP_DEST_UNREACH {
            return Err(not_ours);
        }
        if inner + 20 > end {
            return Err(bad);
        }
        let ip = unsafe { &*ptr::at::<[u8; 20]>(ctx, inner).ok_or(bad)? };
        let hdr_len = ((ip[0] & 0x0f) as usize) * 4;
        if ip[0] >> 4 != 4 || hdr_len < 20 {
            return Err(bad);
        }
        key.proto = ip[9];
        key.dst[..4].copy_from_slice(&ip[12..16]);
        key.src[..4].copy_from_slice(&ip[16..20]);
        ports_off = inner + hdr_len;
    } else {
        if icmp_type != ICMPV6_DEST_UNREACH && icmp_type != ICMPV6_PKT_TOOBIG {
            return Err(not_ours);
        }
        if inner + 40 > end {
            return Err(bad);
        }
        let ip = unsafe { &*ptr::at::<[u8; 40]>(ctx, inner).ok_or(bad)? };
        // Extension headers in the quote are not walked: only a TCP or UDP
        // header straight after the IPv6 header is a flow we can name.
        if ip[0] >> 4 != 6 || (ip[6] != PROTO_TCP && ip[6] != PROTO_UDP) {
            return Err(bad);
        }
        key.proto = ip[6];
        key.dst.copy_from_slice(&ip[8..24]);
        key.src.copy_from_slice(&ip[24..40]);
        ports_off = inner + 40;
    }
    if ports_off + 8 > end {
        return Err(bad);
    }
    if key.proto != PROTO_TCP && key.proto != PROTO_UDP {
        return Err(not_ours);
    }
    // Errors about traffic some other host sent are not the VIP's.
    if !crate::addr::eq(&key.dst, &pkt.dst) {
        return Err(not_ours);
    }
    let ports = unsafe { &*ptr::at::<[u8; 8]>(ctx, ports_off).ok_or(bad)? };
    key.dport = u16::from_be_bytes([ports[0], ports[1]]);
    key.sport = u16::from_be_bytes([ports[2], ports[3]]);
    key._pad = [0; 2];
    Ok(())
}

/// Whether `proto` is ICMP for the packet's family.
#[inline(always)]
pub fn is_icmp(pkt: &Packet) -> bool {
    pkt.proto
        == if pkt.family == FAMILY_V4 {
            PROTO_ICMP
        } else {
            PROTO_ICMPV6
        }
}
