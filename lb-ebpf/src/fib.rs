//! Next hop and MACs from the kernel's own FIB and neighbour table.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_FWD_DISABLED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
    },
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use lb_common::{FAMILY_V4, NextHop, Outcome};

use crate::{
    maps::{XLB_NEXTHOPS, XLB_ROUTE_EPOCH},
    verdict::{Step, Verdict},
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Looks up the route from `src` to `dst` for an IP packet of `tot_len`
/// bytes, as if forwarded from the receiving interface. On `Ok(None)` the
/// route (egress ifindex, MACs, next hop) is in `p`; `Ok(Some(mtu))` means
/// the packet exceeds the egress MTU.
#[inline(always)]
pub fn lookup(
    ctx: &XdpContext,
    p: &mut FibParams,
    family: u8,
    tot_len: u16,
    src: &[u8; 16],
    dst: &[u8; 16],
) -> Step<Option<u16>> {
    p.l4_protocol = 0;
    p.sport = 0;
    p.dport = 0;
    p.ifindex = ctx.ingress_ifindex() as u32;
    p.__bindgen_anon_1.tot_len = tot_len;
    p.__bindgen_anon_2.flowinfo = 0;
    if family == FAMILY_V4 {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes([src[0], src[1], src[2], src[3]]);
        p.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes([dst[0], dst[1], dst[2], dst[3]]);
    } else {
        p.family = AF_INET6;
        p.__bindgen_anon_3.ipv6_src = unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*src) };
        p.__bindgen_anon_4.ipv6_dst = unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*dst) };
    }
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), p, size_of::<FibParams>() as i32, 0) } as u32;
    match rc {
        BPF_FIB_LKUP_RET_SUCCESS => Ok(None),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Ok(Some(unsafe { p.__bindgen_anon_1.mtu_result })),
        // XDP cannot ARP; the daemon keeps backends' neighbours resolved.
        // Passing the packet instead would have the kernel, which has no
        // route to the VIP, send the client "network unreachable".
        BPF_FIB_LKUP_RET_NO_NEIGH => Err(Verdict::drop(Outcome::DropNoNeigh)),
        BPF_FIB_LKUP_RET_FWD_DISABLED => Err(Verdict::drop(Outcome::DropFwdDisabled)),
        _ => Err(Verdict::drop(Outcome::DropNoRoute)),
    }
}

/// Whether the route found goes straight to `addr` (no gateway between).
#[inline(always)]
pub fn is_direct(p: &FibParams, family: u8, addr: &[u8; 16]) -> bool {
    if family == FAMILY_V4 {
        unsafe { p.__bindgen_anon_4.ipv4_dst }.to_ne_bytes() == [addr[0], addr[1], addr[2], addr[3]]
    } else {
        let n: [u64; 2] = unsafe { core::mem::transmute(p.__bindgen_anon_4.ipv6_dst) };
        let a: [u64; 2] = unsafe { core::mem::transmute(*addr) };
        n[0] == a[0] && n[1] == a[1]
    }
}

/// Where a packet of a given length goes next.
pub enum Hop {
    /// This CPU's cache entry (valid for the rest of the program run).
    Via(&'static NextHop),
    /// Too big for the egress MTU, given here.
    TooBig(u16),
}

/// The route to backend `backend_id` (address `dst`) for an IP packet of
/// `tot_len` bytes: from this CPU's cache while it was looked up in the
/// current route epoch, for the same receiving interface, and a packet at
/// least this long fitted; else from `bpf_fib_lookup`, which refreshes the
/// cache. Failures (no route, no neighbour yet) are never cached.
#[inline(always)]
pub fn next_hop(
    ctx: &XdpContext,
    p: &mut FibParams,
    backend_id: u32,
    tot_len: u16,
    src: &[u8; 16],
    dst: &[u8; 16],
    family: u8,
) -> Step<Hop> {
    let internal = Verdict::drop(Outcome::DropInternal);
    let c = unsafe { &mut *XLB_NEXTHOPS.get_ptr_mut(backend_id).ok_or(internal)? };
    // Read before the lookup: a change the daemon reports meanwhile moves
    // the epoch past the one stored, and the next packet looks again.
    let epoch = XLB_ROUTE_EPOCH.get(0).map_or(0, |e| *e);
    let ingress = ctx.ingress_ifindex() as u32;
    let fresh = c.epoch == epoch && c.in_ifindex == ingress;
    if fresh && tot_len <= c.fits {
        return Ok(Hop::Via(c));
    }
    if let Some(mtu) = lookup(ctx, p, family, tot_len, src, dst)? {
        return Ok(Hop::TooBig(mtu));
    }
    if !fresh {
        c.epoch = epoch;
        c.in_ifindex = ingress;
        c.fits = 0;
    }
    c.out_ifindex = p.ifindex;
    c.smac = p.smac;
    c.dmac = p.dmac;
    c.direct = is_direct(p, family, dst) as u8;
    if tot_len > c.fits {
        c.fits = tot_len;
    }
    Ok(Hop::Via(c))
}
