//! The balancer: the story of one packet from parse to the wire.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    BACKEND_ACTIVE, Backend, CONFIG_WILDCARDS, Encap, FAMILY_V4, FlowKey, FlowValue,
    IPIP4_OVERHEAD, IPIP6_OVERHEAD, NO_BACKEND, Outcome, PROTO_TCP, PROTO_UDP, VipInfo, VipKey,
};

use crate::{
    encap,
    fib::{self, Hop},
    icmp,
    maps::{
        XLB_BACKENDS, XLB_BE_STATS, XLB_CONFIG, XLB_FLOWS, XLB_MAGLEV, XLB_MAGLEV_SIZE,
        XLB_VIP_STATS, XLB_VIPS, add, bench_stop, count, stop,
    },
    parse::{self, ETH_P_IP, ETH_P_IPV6, FRAG_FIRST, FRAG_LATER, PROTO_ICMP, PROTO_ICMPV6},
    scratch::{Scratch, XLB_SCRATCH},
    verdict::{NONE, Step, Verdict},
};

const INTERNAL: Verdict = Verdict::drop(Outcome::DropInternal);

/// Decides what happens to the packet in `ctx` (and rewrites it if it goes
/// to a backend or back to the client).
#[inline(always)]
pub fn balance(ctx: &XdpContext) -> Verdict {
    let Some(s) = XLB_SCRATCH.get_ptr_mut(0) else {
        return INTERNAL;
    };
    match run(ctx, unsafe { &mut *s }) {
        Ok(v) | Err(v) => v,
    }
}

/// Counts a verdict: its outcome, its VIP (every packet that matched one),
/// its backend (every packet sent there).
#[inline(always)]
pub fn account(v: &Verdict, bytes: u64) {
    count(v.outcome);
    if v.vip_id != NONE {
        add(XLB_VIP_STATS.get_ptr_mut(v.vip_id), bytes);
    }
    if v.backend_id != NONE && matches!(v.outcome, Outcome::Tx | Outcome::Redirect) {
        add(XLB_BE_STATS.get_ptr_mut(v.backend_id), bytes);
    }
}

#[inline(always)]
fn run(ctx: &XdpContext, s: &mut Scratch) -> Step<Verdict> {
    parse::packet(ctx, &mut s.pkt)?;
    if bench_stop(stop::PARSED) {
        return Ok(Verdict::tx(Outcome::Tx));
    }
    match (s.pkt.proto, s.pkt.family == FAMILY_V4) {
        (PROTO_TCP | PROTO_UDP, _) => flow(ctx, s),
        (PROTO_ICMP, true) | (PROTO_ICMPV6, false) => icmp_error(ctx, s),
        _ => Err(Verdict::pass(Outcome::PassNotVip)),
    }
}

/// A TCP or UDP packet: to a VIP's backend, or not ours.
#[inline(always)]
fn flow(ctx: &XdpContext, s: &mut Scratch) -> Step<Verdict> {
    let pkt = &s.pkt;
    if pkt.fragment == FRAG_LATER {
        // No ports in a later fragment: only a wildcard VIP can claim it.
        // Fragments of VIP traffic are dropped: without reassembly they
        // cannot be tied to their flow's backend (see docs/architecture.md).
        let vip = if wildcards() {
            find_vip(&pkt.dst, 0, pkt.proto, pkt.family)
        } else {
            None
        };
        return match vip {
            Some(vip) => Err(Verdict::drop(Outcome::DropFragment).for_vip(vip.vip_id)),
            None => Err(Verdict::pass(Outcome::PassNotVip)),
        };
    }
    let ports = parse::ports(ctx, pkt.l4_off as usize, pkt.proto)
        .ok_or(Verdict::pass(Outcome::PassMalformed))?;
    let vip = find_vip(&pkt.dst, ports.dst, pkt.proto, pkt.family)
        .ok_or(Verdict::pass(Outcome::PassNotVip))?;
    if bench_stop(stop::VIP_FOUND) {
        return Ok(Verdict::tx(Outcome::Tx));
    }
    if pkt.fragment == FRAG_FIRST {
        return Err(Verdict::drop(Outcome::DropFragment).for_vip(vip.vip_id));
    }
    s.key = FlowKey {
        src: pkt.src,
        dst: pkt.dst,
        sport: ports.src,
        dport: ports.dst,
        proto: pkt.proto,
        family: pkt.family,
        _pad: [0; 2],
    };
    // A RST never opens a flow: it would pin a backend for a connection
    // that is already over.
    let track = if ports.rst {
        Track::Lookup
    } else {
        Track::Insert
    };
    let backend_id = pick_backend(&s.key, &vip, track).map_err(|v| v.for_vip(vip.vip_id))?;
    if bench_stop(stop::BACKEND_CHOSEN) {
        return Ok(Verdict::tx(Outcome::Tx));
    }
    // The ICMP answer is built here, not inside `deliver`: the two frames
    // never stack, which keeps the deepest call chain under 512 bytes.
    let v = match deliver(ctx, s, vip.encap, backend_id) {
        Ok(Sent::Out(v)) | Err(v) => v,
        Ok(Sent::TooBig(mtu)) => match icmp::too_big(ctx, &s.pkt, mtu) {
            Ok(v) | Err(v) => v,
        },
    };
    Ok(v.for_vip(vip.vip_id).to_backend(backend_id))
}

/// An ICMP error to a VIP goes where the flow it quotes goes. Out of line:
/// rare, and it should not weigh on the TCP/UDP path.
#[inline(never)]
fn icmp_error(ctx: &XdpContext, s: &mut Scratch) -> Step<Verdict> {
    icmp::quoted_flow(ctx, &s.pkt, &mut s.key)?;
    let key = &s.key;
    let vip = find_vip(&key.dst, key.dport, key.proto, key.family)
        .ok_or(Verdict::pass(Outcome::PassNotVip))?;
    let backend_id = pick_backend(key, &vip, Track::Quiet).map_err(|v| v.for_vip(vip.vip_id))?;
    count(Outcome::IcmpErrorSteered);
    // No ICMP is ever sent about an ICMP error (RFC 1122 3.2.2).
    let v = match deliver(ctx, s, vip.encap, backend_id) {
        Ok(Sent::Out(v)) | Err(v) => v,
        Ok(Sent::TooBig(_)) => Verdict::drop(Outcome::DropTooBig),
    };
    Ok(v.for_vip(vip.vip_id).to_backend(backend_id))
}

/// Whether any wildcard VIP exists (an array read, far cheaper than the
/// hash lookup it saves).
#[inline(always)]
fn wildcards() -> bool {
    XLB_CONFIG
        .get(0)
        .is_some_and(|c| c.flags & CONFIG_WILDCARDS != 0)
}

/// Exact (address, port, protocol) first, then the address's wildcard.
#[inline(always)]
fn find_vip(addr: &[u8; 16], port: u16, proto: u8, family: u8) -> Option<VipInfo> {
    let mut key = VipKey {
        addr: *addr,
        port,
        proto,
        family,
    };
    if let Some(v) = unsafe { XLB_VIPS.get(key) } {
        return Some(*v);
    }
    if port == 0 || !wildcards() {
        return None;
    }
    key.port = 0;
    unsafe { XLB_VIPS.get(key) }.copied()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Track {
    /// Remember a new flow.
    Insert,
    /// Use an existing flow, remember nothing (TCP RST).
    Lookup,
    /// As `Lookup`, and not counted as a flow hit or miss (ICMP errors).
    Quiet,
}

/// The flow's backend: from the flow table while that backend is active,
/// else from the VIP's Maglev table.
#[inline(always)]
fn pick_backend(key: &FlowKey, vip: &VipInfo, track: Track) -> Step<u32> {
    if let Some(flow) = unsafe { XLB_FLOWS.get(key) } {
        let id = flow.backend_id;
        if XLB_BACKENDS
            .get(id)
            .is_some_and(|b| b.flags & BACKEND_ACTIVE != 0 && b.vip_id == vip.vip_id)
        {
            if track != Track::Quiet {
                count(Outcome::FlowHit);
            }
            return Ok(id);
        }
    }
    if track != Track::Quiet {
        count(Outcome::FlowMiss);
    }
    let id = maglev(vip, flow_hash(key))?;
    if track == Track::Insert {
        // A failed insert only means the next packet is hashed again, to
        // the same backend while the table is unchanged.
        let _ = XLB_FLOWS.insert(
            key,
            FlowValue {
                backend_id: id,
                vip_id: vip.vip_id,
            },
            0,
        );
    }
    Ok(id)
}

#[inline(always)]
fn maglev(vip: &VipInfo, hash: u32) -> Step<u32> {
    let m = XLB_MAGLEV_SIZE.load();
    let slot = hash.checked_rem(m).ok_or(INTERNAL)?;
    let id = *XLB_MAGLEV
        .get(vip.vip_id.wrapping_mul(m).wrapping_add(slot))
        .ok_or(INTERNAL)?;
    if id == NO_BACKEND {
        return Err(Verdict::drop(Outcome::DropNoBackend));
    }
    Ok(id)
}

/// What `deliver` did.
enum Sent {
    /// Encapsulated (or rewritten) and on its way.
    Out(Verdict),
    /// Too big for the egress MTU once encapsulated; the client must be told
    /// this MTU.
    TooBig(u16),
}

/// Encapsulates (or rewrites) and sends the packet to the backend.
#[inline(never)]
fn deliver(ctx: &XdpContext, s: &mut Scratch, encap: u8, backend_id: u32) -> Step<Sent> {
    let be = XLB_BACKENDS.get(backend_id).ok_or(INTERNAL)?;
    if be.family != s.pkt.family {
        return Err(Verdict::drop(Outcome::DropFamilyMismatch));
    }
    match Encap::from_u8(encap) {
        Some(Encap::Ipip) => ipip(ctx, s, backend_id, be),
        Some(Encap::L2) => l2(ctx, s, backend_id, be),
        None => Err(INTERNAL),
    }
}

#[inline(always)]
fn ipip(ctx: &XdpContext, s: &mut Scratch, id: u32, be: &Backend) -> Step<Sent> {
    let cfg = XLB_CONFIG.get(0).ok_or(INTERNAL)?;
    let pkt = &s.pkt;
    let v4 = pkt.family == FAMILY_V4;
    let (src, overhead) = if v4 {
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&cfg.ipip_src_v4);
        (src, IPIP4_OVERHEAD)
    } else {
        (cfg.ipip_src_v6, IPIP6_OVERHEAD)
    };
    let len = pkt.ip_len.saturating_add(overhead);
    let hop = match fib::next_hop(ctx, &mut s.fib, id, len, &src, &be.addr, pkt.family)? {
        Hop::Via(hop) => hop,
        Hop::TooBig(mtu) => return Ok(Sent::TooBig(mtu.saturating_sub(overhead))),
    };
    if bench_stop(stop::ROUTED) {
        return Ok(Sent::Out(Verdict::tx(Outcome::Tx)));
    }
    if v4 {
        encap::ipip4(ctx, pkt, hop, &cfg.ipip_src_v4, &be.addr)?;
    } else {
        encap::ipip6(ctx, pkt, hop, &cfg.ipip_src_v6, &be.addr, flow_hash(&s.key))?;
    }
    Ok(Sent::Out(encap::send(ctx, pkt, hop)))
}

#[inline(always)]
fn l2(ctx: &XdpContext, s: &mut Scratch, id: u32, be: &Backend) -> Step<Sent> {
    let pkt = &s.pkt;
    let hop = match fib::next_hop(
        ctx, &mut s.fib, id, pkt.ip_len, &pkt.src, &be.addr, pkt.family,
    )? {
        Hop::Via(hop) => hop,
        Hop::TooBig(mtu) => return Ok(Sent::TooBig(mtu)),
    };
    if bench_stop(stop::ROUTED) {
        return Ok(Sent::Out(Verdict::tx(Outcome::Tx)));
    }
    // The frame keeps the VIP as destination: only a backend on the link
    // can take it. Behind a gateway it would come straight back to us.
    if hop.direct == 0 {
        return Err(Verdict::drop(Outcome::DropNotOnLink));
    }
    let ether_type = if pkt.family == FAMILY_V4 {
        ETH_P_IP
    } else {
        ETH_P_IPV6
    };
    encap::write_l2(ctx, pkt, &hop.dmac, &hop.smac, ether_type)?;
    Ok(Sent::Out(encap::send(ctx, pkt, hop)))
}

/// The shared flow hash, out of line: its ten mixing rounds would otherwise
/// spill registers into the caller's frame.
#[inline(never)]
fn flow_hash(key: &FlowKey) -> u32 {
    lb_common::hash::flow_hash(key)
}

/// Address equality in two 64-bit compares (no `bcmp` in BPF).
#[inline(always)]
pub fn same_addr(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let a: [u64; 2] = unsafe { core::mem::transmute(*a) };
    let b: [u64; 2] = unsafe { core::mem::transmute(*b) };
    a[0] == b[0] && a[1] == b[1]
}
