//! Backend side: strips the outer header of IPIP packets for local VIPs and
//! passes the inner packet up, for kernels without the ipip/ip6_tunnel
//! modules (and without the cost of a tunnel device).

use aya_ebpf::{
    btf_maps::{HashMap, PerCpuArray},
    helpers::bpf_xdp_adjust_head,
    macros::btf_map,
    programs::XdpContext,
};
use lb_common::{DecapKey, FAMILY_V4, FAMILY_V6, stats::DecapOutcome};

use crate::{
    parse::{self, FRAG_NONE, PROTO_IPIP, PROTO_IPV6, Packet},
    ptr,
};

/// VIP addresses this backend serves.
#[btf_map]
pub static XLB_DECAP_VIPS: HashMap<DecapKey, u8, 1024> = HashMap::new();

#[btf_map]
pub static XLB_DECAP_STATS: PerCpuArray<u64, { DecapOutcome::COUNT as usize }> = PerCpuArray::new();

#[inline(always)]
pub fn count(outcome: DecapOutcome) {
    if let Some(c) = XLB_DECAP_STATS.get_ptr_mut(outcome as u32) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn decap(ctx: &XdpContext) -> DecapOutcome {
    let mut pkt = Packet::zeroed();
    if parse::packet(ctx, &mut pkt).is_err() {
        return DecapOutcome::Pass;
    }
    if pkt.fragment != FRAG_NONE {
        return DecapOutcome::Pass;
    }
    let mut key = DecapKey::default();
    match (pkt.family, pkt.proto) {
        (FAMILY_V4, PROTO_IPIP) => {
            let Some(inner) = ptr::read::<[u8; 20]>(ctx, pkt.l4_off as usize) else {
                return DecapOutcome::Malformed;
            };
            if inner[0] >> 4 != 4 {
                return DecapOutcome::Malformed;
            }
            key.family = FAMILY_V4;
            key.addr[..4].copy_from_slice(&inner[16..20]);
        }
        (FAMILY_V6, PROTO_IPV6) => {
            let Some(inner) = ptr::read::<[u8; 40]>(ctx, pkt.l4_off as usize) else {
                return DecapOutcome::Malformed;
            };
            if inner[0] >> 4 != 6 {
                return DecapOutcome::Malformed;
            }
            key.family = FAMILY_V6;
            key.addr.copy_from_slice(&inner[24..40]);
        }
        _ => return DecapOutcome::Pass,
    }
    if unsafe { XLB_DECAP_VIPS.get(key) }.is_none() {
        return DecapOutcome::Pass;
    }
    // The outer family equals the inner one, so the L2 header (and its
    // EtherType) is kept as it is, only moved up against the inner header.
    let Some(l2) = ptr::read::<[u8; 18]>(ctx, 0) else {
        return DecapOutcome::Malformed;
    };
    let outer = (pkt.l4_off - pkt.l2_len) as i32;
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, outer) } != 0 {
        return DecapOutcome::Malformed;
    }
    let ok = if pkt.l2_len == 18 {
        ptr::write(ctx, 0, l2)
    } else {
        ptr::write(
            ctx,
            0,
            [
                l2[0], l2[1], l2[2], l2[3], l2[4], l2[5], l2[6], l2[7], l2[8], l2[9], l2[10],
                l2[11], l2[12], l2[13],
            ],
        )
    };
    if ok {
        DecapOutcome::Decapsulated
    } else {
        DecapOutcome::Malformed
    }
}
