//! The VIP's owner on the link: ARP requests (RFC 826) and IPv6 neighbour
//! solicitations (RFC 4861) for an address in `XLB_OWNED` are answered
//! here, in place, with XDP_TX and the receiving interface's own MAC. The
//! kernel never holds a VIP as an interface address, so it answers for none
//! of them: without this, no host on the link would send a VIP's traffic
//! here.
//!
//! Every answer is gated by the daemon's heartbeat (`XLB_LIVENESS`): a
//! daemon that died stops claiming its VIPs within the bound, before the
//! Lease it held can pass to another node. Anything not answered is passed
//! with its bytes untouched.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_xdp_adjust_tail},
    programs::XdpContext,
};
use lb_common::{FAMILY_V4, FAMILY_V6, Iface, Outcome, OwnedKey};

use crate::{
    addr, csum,
    encap::Mac,
    maps::{XLB_LIVENESS, XLB_OWNED},
    parse::{ETH_LEN, ETH_P_IPV6, PROTO_ICMPV6, Packet, iface},
    ptr,
    verdict::{Step, Verdict},
};

const ARP_REQUEST: u16 = 1;
const ARP_REPLY: u16 = 2;
/// Ethernet header and an Ethernet/IPv4 ARP packet.
const ARP_LEN: usize = ETH_LEN + 28;

const NDP_SOLICIT: u8 = 135;
const NDP_ADVERT: u8 = 136;
const OPT_SOURCE_LLA: u8 = 1;
const OPT_TARGET_LLA: u8 = 2;
/// NA flags (first byte of the reserved word): Solicited, Override.
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;

/// Where the IPv6 header starts, and its address fields: the balancer takes
/// only untagged frames.
const IP6: usize = ETH_LEN;
const IP6_SRC: usize = IP6 + 8;
const IP6_DST: usize = IP6 + 24;
/// The ICMPv6 message, its target address and its options.
const ICMP: usize = IP6 + 40;
const TARGET: usize = ICMP + 8;
const OPTIONS: usize = TARGET + 16;
/// An NS without options, and the NA we send: one target link-layer option.
const NS_MIN: usize = 24;
const NA_LEN: usize = 32;
/// Options of an NS looked at; a longer one is passed (`pass_unsupported`).
/// A source link-layer option and a nonce (RFC 7527) take 2.
const MAX_OPTION_CHUNKS: usize = 8;

const INTERNAL: Verdict = Verdict::drop(Outcome::DropInternal);

/// An ARP frame: a request for an owned IPv4 address becomes its reply.
#[inline(never)]
pub fn arp(ctx: &XdpContext) -> Step<Verdict> {
    let not_ours = Verdict::pass(Outcome::PassNotIp);
    let f = ptr::at::<[u8; ARP_LEN]>(ctx, 0).ok_or(not_ours)? as usize;
    let a = f + ETH_LEN;
    // Ethernet hardware, IPv4 protocol, 6- and 4-byte addresses, a request.
    let (w0, w1) = unsafe { (ptr::load::<u32>(a), ptr::load::<u32>(a + 4)) };
    if w0 != u32::from_ne_bytes([0, 1, 0x08, 0x00])
        || w1 != u32::from_ne_bytes([6, 4, 0, ARP_REQUEST as u8])
    {
        return Err(not_ours);
    }
    let (spa, tpa) = unsafe { (ptr::load::<u32>(a + 14), ptr::load::<u32>(a + 24)) };
    // An announcement (gratuitous ARP: sender == target) is another host's
    // news, not a question.
    if spa == tpa {
        return Err(not_ours);
    }
    let mut key = OwnedKey {
        family: FAMILY_V4,
        ..OwnedKey::default()
    };
    addr::set_v4(&mut key.addr, tpa);
    let us = owner(ctx, &key).ok_or(not_ours)?;
    let sha = Mac::load(a + 8);
    let eth_dst = Mac::load(f);
    if !(eth_dst.is_broadcast() || eth_dst == Mac::of(&us.mac)) {
        return Err(Verdict::pass(Outcome::PassOtherHost));
    }
    if !sha.is_unicast() {
        return Err(Verdict::pass(Outcome::PassMalformed));
    }
    gate()?;
    let me = Mac::of(&us.mac);
    unsafe {
        me.store(f + 6);
        sha.store(f);
        ptr::store::<u16>(a + 6, ARP_REPLY.to_be());
        sha.store(a + 18);
        ptr::store::<u32>(a + 24, spa);
        me.store(a + 8);
        ptr::store::<u32>(a + 14, tpa);
    }
    Ok(Verdict::tx(Outcome::ArpReplied))
}

/// Whether `p` (IPv6, ICMPv6) carries a neighbour solicitation: then
/// [`solicitation`] decides everything about it.
#[inline(always)]
pub fn is_solicitation(ctx: &XdpContext, p: &Packet) -> bool {
    p.family == FAMILY_V6
        && p.proto == PROTO_ICMPV6
        && ptr::read::<u8>(ctx, ICMP).is_some_and(|t| t == NDP_SOLICIT)
}

/// A neighbour solicitation: one for an owned address, valid by RFC 4861
/// 7.1.1, becomes its neighbour advertisement.
#[inline(never)]
pub fn solicitation(ctx: &XdpContext, p: &Packet) -> Step<Verdict> {
    let f = ptr::at::<[u8; OPTIONS]>(ctx, 0).ok_or(Verdict::pass(Outcome::PassBadL4))? as usize;
    let mut key = OwnedKey {
        family: FAMILY_V6,
        ..OwnedKey::default()
    };
    addr::set_v6_from(&mut key.addr, f + TARGET);
    let us = owner(ctx, &key).ok_or(Verdict::pass(Outcome::PassNotVip))?;
    let bad = Verdict::pass(Outcome::PassBadL4);
    let len = (p.ip_len as usize).wrapping_sub(40);
    if len < NS_MIN || !len.is_multiple_of(8) || p.l4_off as usize != ICMP {
        return Err(bad);
    }
    if len > NS_MIN + 8 * MAX_OPTION_CHUNKS {
        return Err(Verdict::pass(Outcome::PassUnsupported));
    }
    let code = unsafe { ptr::load::<u8>(f + ICMP + 1) };
    if p.ttl != 255 || code != 0 {
        return Err(bad);
    }
    // The checksum: the pseudo-header (both addresses, the length, the
    // next header), then the message; right when it all folds to zero.
    let mut sum = csum::words_sum(f + IP6_SRC, 8)
        + (len as u32).to_be() as u64
        + (PROTO_ICMPV6 as u32).to_be() as u64
        + csum::words_sum(f + ICMP, NS_MIN / 4);
    // The options, 8 bytes at a time: each must have a non-zero length and
    // they must fill the message exactly; the source link-layer address is
    // taken from its option.
    let mut source_lla: Option<Mac> = None;
    let mut next = 0usize;
    let mut i = 0usize;
    while i < MAX_OPTION_CHUNKS {
        if NS_MIN + 8 * i >= len {
            break;
        }
        let c = ptr::at::<[u8; 8]>(ctx, OPTIONS + 8 * i).ok_or(bad)? as usize;
        sum += csum::words_sum(c, 2);
        if next == i {
            let (kind, units) = unsafe { (ptr::load::<u8>(c), ptr::load::<u8>(c + 1)) };
            if units == 0 {
                return Err(bad);
            }
            if kind == OPT_SOURCE_LLA {
                // An Ethernet address is one unit; another length is
                // invalid here (RFC 4861 7.1.1 makes the kernel drop it).
                // The first of several is the one taken, as Linux does.
                if units != 1 {
                    return Err(bad);
                }
                if source_lla.is_none() {
                    source_lla = Some(Mac::load(c + 2));
                }
            }
            next += units as usize;
        }
        i += 1;
    }
    if csum::fold(sum) != 0 || NS_MIN + 8 * next != len {
        return Err(bad);
    }
    let unspecified =
        unsafe { ptr::load::<u64>(f + IP6_SRC) == 0 && ptr::load::<u64>(f + IP6_SRC + 8) == 0 };
    let to_target = unsafe {
        ptr::load::<u64>(f + IP6_DST) == ptr::load::<u64>(f + TARGET)
            && ptr::load::<u64>(f + IP6_DST + 8) == ptr::load::<u64>(f + TARGET + 8)
    };
    let to_group = solicited_node_group(f);
    // DAD probes (RFC 4862) come from the unspecified address, to the
    // group, without a link-layer address to answer to.
    if unspecified && (!to_group || source_lla.is_some()) || !(to_target || to_group) {
        return Err(bad);
    }
    let eth_dst = Mac::load(f);
    let me = Mac::of(&us.mac);
    let frame_to_us = if to_group {
        eth_dst == Mac::multicast_v6(f + IP6_DST)
    } else {
        eth_dst == me
    };
    if !frame_to_us {
        return Err(Verdict::pass(Outcome::PassOtherHost));
    }
    let eth_src = Mac::load(f + 6);
    if !eth_src.is_unicast() || source_lla.is_some_and(|m| !m.is_unicast()) {
        return Err(bad);
    }
    gate()?;
    let (dst_hi, dst_lo, to, flags) = if unspecified {
        // All nodes, ff02::1: the prober learns the address is taken.
        (
            u64::from_ne_bytes([0xff, 2, 0, 0, 0, 0, 0, 0]),
            u64::from_ne_bytes([0, 0, 0, 0, 0, 0, 0, 1]),
            Mac::multicast_v6_all_nodes(),
            NA_OVERRIDE,
        )
    } else {
        let (hi, lo) = unsafe {
            (
                ptr::load::<u64>(f + IP6_SRC),
                ptr::load::<u64>(f + IP6_SRC + 8),
            )
        };
        (
            hi,
            lo,
            source_lla.unwrap_or(eth_src),
            NA_SOLICITED | NA_OVERRIDE,
        )
    };
    advertise(ctx, dst_hi, dst_lo, to, me, flags)?;
    Ok(Verdict::tx(Outcome::NdpAdvertised))
}

/// Rewrites the solicitation into the advertisement (the target stays
/// where it is), trimmed or grown to exactly the NA.
#[inline(always)]
fn advertise(ctx: &XdpContext, dst_hi: u64, dst_lo: u64, to: Mac, me: Mac, flags: u8) -> Step<()> {
    let want = ICMP + NA_LEN;
    let delta = want as i32 - ptr::frame_len(ctx) as i32;
    if delta != 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
        // No room to grow (a driver without tailroom): the client asks
        // again, and we claim nothing we cannot say.
        return Err(Verdict::pass(Outcome::PassUnsupported));
    }
    let f = ptr::at::<[u8; ICMP + NA_LEN]>(ctx, 0).ok_or(INTERNAL)? as usize;
    unsafe {
        to.store(f);
        me.store(f + 6);
        ptr::store::<u16>(f + 12, ETH_P_IPV6.to_be());
        ptr::store::<u32>(f + IP6, u32::from_ne_bytes([0x60, 0, 0, 0]));
        ptr::store::<u32>(
            f + IP6 + 4,
            u32::from_ne_bytes([0, NA_LEN as u8, PROTO_ICMPV6, 255]),
        );
        ptr::store::<u64>(f + IP6_SRC, ptr::load::<u64>(f + TARGET));
        ptr::store::<u64>(f + IP6_SRC + 8, ptr::load::<u64>(f + TARGET + 8));
        ptr::store::<u64>(f + IP6_DST, dst_hi);
        ptr::store::<u64>(f + IP6_DST + 8, dst_lo);
        ptr::store::<u32>(f + ICMP, u32::from_ne_bytes([NDP_ADVERT, 0, 0, 0]));
        ptr::store::<u32>(f + ICMP + 4, u32::from_ne_bytes([flags, 0, 0, 0]));
        ptr::store::<u16>(f + OPTIONS, u16::from_ne_bytes([OPT_TARGET_LLA, 1]));
        me.store(f + OPTIONS + 2);
    }
    let sum = csum::words_sum(f + IP6_SRC, 8)
        + (NA_LEN as u32).to_be() as u64
        + (PROTO_ICMPV6 as u32).to_be() as u64
        + csum::words_sum(f + ICMP, NA_LEN / 4);
    unsafe { ptr::store::<u16>(f + ICMP + 2, csum::fold(sum)) };
    Ok(())
}

/// Whether the IPv6 destination is the solicited-node group of the target
/// (ff02::1:ffXX:XXXX with the target's last 24 bits).
#[inline(always)]
fn solicited_node_group(f: usize) -> bool {
    unsafe {
        ptr::load::<u64>(f + IP6_DST) == u64::from_ne_bytes([0xff, 2, 0, 0, 0, 0, 0, 0])
            && ptr::load::<u32>(f + IP6_DST + 8) == u32::from_ne_bytes([0, 0, 0, 1])
            && ptr::load::<u32>(f + IP6_DST + 12)
                == (ptr::load::<u32>(f + TARGET + 12) & u32::from_ne_bytes([0, 0xff, 0xff, 0xff]))
                    | u32::from_ne_bytes([0xff, 0, 0, 0])
    }
}

/// The receiving interface, when this node owns `key` there.
#[inline(always)]
fn owner(ctx: &XdpContext, key: &OwnedKey) -> Option<&'static Iface> {
    let owned = unsafe { XLB_OWNED.get(key) }?;
    if owned.ifindex != 0 && owned.ifindex != ctx.ingress_ifindex() as u32 {
        return None;
    }
    iface(ctx)
}

/// The liveness gate: answers only while the daemon's heartbeat is fresh.
#[inline(always)]
fn gate() -> Step<()> {
    let fresh = XLB_LIVENESS.get(0).is_some_and(|l| {
        let now = unsafe { bpf_ktime_get_ns() };
        // A heartbeat stamped a hair after this CPU read its clock is fresh.
        now.saturating_sub(l.stamp_ns) < l.bound_ns
    });
    if fresh {
        Ok(())
    } else {
        Err(Verdict::pass(Outcome::PassOwnerStale))
    }
}
