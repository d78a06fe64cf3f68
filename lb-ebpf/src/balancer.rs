//! The balancer: the story of one packet from parse to the wire.

use aya_ebpf::programs::XdpContext;
use lb_common::{
    BACKEND_ACTIVE, Backend, CONFIG_WILDCARDS, Encap, FAMILY_V4, FlowKey, FlowValue,
    IPIP4_OVERHEAD, IPIP6_OVERHEAD, NO_BACKEND, Outcome, PROTO_TCP, PROTO_UDP, VipInfo, VipKey,
    maglev_slot,
};

use crate::{
    addr, csum,
    encap::{self, Mac},
    fib::{self, Hop},
    filter, icmp,
    maps::{
        XLB_BACKENDS, XLB_BE_STATS, XLB_CONFIG, XLB_FLOWS, XLB_MAGLEV, XLB_VIP_STATS, XLB_VIPS,
        add, bench_stop, count, stop,
    },
    neighbour,
    parse::{self, ETH_LEN, ETH_P_IP, ETH_P_IPV6, FRAG_LATER, FRAG_NONE, PROTO_ICMP, PROTO_ICMPV6},
    ptr,
    scratch::{Packet, Scratch, XLB_SCRATCH},
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
    parse::frame(ctx, &mut s.pkt)?;
    if bench_stop(stop::PARSED) {
        return Ok(Verdict::tx(Outcome::Tx));
    }
    let pkt = &s.pkt;
    // A solicitation goes to a multicast group or to the address asked
    // about, VIP or not: it is decided before the VIP filter, on ICMPv6
    // only, so other traffic pays one comparison.
    if pkt.proto == PROTO_ICMPV6 && neighbour::is_solicitation(ctx, pkt) {
        return Err(match neighbour::solicitation(ctx, pkt) {
            Ok(v) | Err(v) => v,
        });
    }
    // Most traffic through a router is not for a VIP: one array read sends
    // it on its way before anything else is looked at.
    if !filter::may_be_vip(&pkt.dst) {
        return Err(Verdict::pass(Outcome::PassNotVip));
    }
    if !parse::for_us(ctx) {
        return Err(Verdict::pass(Outcome::PassOtherHost));
    }
    if pkt.family == FAMILY_V4 {
        if pkt.fragment == FRAG_LATER {
            return Err(later_fragment(pkt));
        }
        match pkt.proto {
            PROTO_TCP | PROTO_UDP => flow(ctx, s),
            PROTO_ICMP => icmp_error(ctx, s),
            // No VIP has another protocol.
            _ => Err(Verdict::pass(Outcome::PassNotVip)),
        }
    } else {
        match pkt.proto {
            PROTO_TCP | PROTO_UDP => flow(ctx, s),
            PROTO_ICMPV6 => icmp_error(ctx, s),
            // Extension headers (hop-by-hop, routing, fragment, ...) are
            // rare on VIP traffic; walking them costs verifier complexity
            // on every packet. Left to the kernel, counted.
            _ => Err(Verdict::pass(Outcome::PassUnsupported)),
        }
    }
}

/// A later IPv4 fragment: no ports, so only a port-0 wildcard VIP of its
/// protocol can claim it; then it is dropped, as every fragment of VIP
/// traffic: without reassembly it cannot be tied to its flow's backend
/// (see docs/architecture.md).
#[inline(never)]
fn later_fragment(pkt: &Packet) -> Verdict {
    let vip = if (pkt.proto == PROTO_TCP || pkt.proto == PROTO_UDP) && wildcards() {
        find_vip(&pkt.dst, 0, pkt.proto, pkt.family)
    } else {
        None
    };
    match vip {
        Some(vip) => Verdict::drop(Outcome::DropFragment).for_vip(vip.vip_id),
        None => Verdict::pass(Outcome::PassNotVip),
    }
}

/// What VIP traffic must be before anything is looked up or remembered for
/// it: not a fragment, no IPv4 options, a right IPv4 header checksum, a
/// TTL / hop limit left, a source that can be a client. Each failure is a
/// drop with its own counter (the kernel's forwarding path drops them too).
#[inline(always)]
fn vet(ctx: &XdpContext, pkt: &Packet) -> Step<()> {
    if pkt.family == FAMILY_V4 {
        if pkt.fragment != FRAG_NONE {
            return Err(Verdict::drop(Outcome::DropFragment));
        }
        if pkt.ip_hdr_len != 20 {
            return Err(Verdict::drop(Outcome::DropIpOptions));
        }
        let h = ptr::at::<[u8; 20]>(ctx, ETH_LEN).ok_or(INTERNAL)?;
        if !csum::ipv4_header_ok(h as usize) {
            return Err(Verdict::drop(Outcome::DropBadChecksum));
        }
    }
    if pkt.ttl == 0 {
        return Err(Verdict::drop(Outcome::DropTtlZero));
    }
    if martian(pkt) {
        return Err(Verdict::drop(Outcome::DropMartian));
    }
    Ok(())
}

/// Sources no client can have: unspecified, loopback, multicast, the
/// reserved IPv4 class E (broadcast included), IPv4-mapped IPv6, and the
/// destination itself (a LAND-style loop).
#[inline(always)]
fn martian(pkt: &Packet) -> bool {
    let s = &pkt.src;
    if addr::eq(s, &pkt.dst) {
        return true;
    }
    if pkt.family == FAMILY_V4 {
        return s[0] == 0 || s[0] == 127 || s[0] >= 224;
    }
    let w = s.as_ptr().cast::<u64>();
    let (hi, lo) = unsafe { (w.read(), u64::from_be(w.add(1).read())) };
    s[0] == 0xff || (hi == 0 && (lo <= 1 || lo >> 32 == 0xffff))
}

/// A TCP or UDP packet: to a VIP's backend, or not ours.
#[inline(always)]
fn flow(ctx: &XdpContext, s: &mut Scratch) -> Step<Verdict> {
    let pkt = &s.pkt;
    let ports = parse::ports(ctx, pkt.l4_off as usize, pkt.proto, parse::ip_end(pkt))
        .ok_or(Verdict::pass(Outcome::PassBadL4))?;
    let key = &mut s.key;
    addr::copy(&mut key.src, &pkt.src);
    addr::copy(&mut key.dst, &pkt.dst);
    key.sport = ports.src;
    key.dport = ports.dst;
    key.proto = pkt.proto;
    key.family = pkt.family;
    key._pad = [0; 2];
    let vetted = match vet(ctx, pkt) {
        Ok(()) if ports.valid => Ok(()),
        Ok(()) => Err(Verdict::pass(Outcome::PassBadL4)),
        Err(v) => Err(v),
    };
    if let Err(v) = vetted {
        return Err(refused(&s.key, v));
    }
    if bench_stop(stop::VETTED) {
        return Ok(Verdict::tx(Outcome::Tx));
    }
    // A RST never opens a flow: it would pin a backend for a connection
    // that is already over.
    let track = if ports.rst {
        Track::Lookup
    } else {
        Track::Insert
    };
    let to = choose(&s.key, track)?;
    if bench_stop(stop::BACKEND_CHOSEN) {
        return Ok(Verdict::tx(Outcome::Tx));
    }
    // The ICMP answer is built here, not inside `deliver`: the two frames
    // never stack, which keeps the deepest call chain under 512 bytes.
    let v = match deliver(ctx, s, to.backend_id) {
        Ok(Sent::Out(v)) | Err(v) => v,
        // RFC 1191: frag-needed is for packets that forbid fragmenting;
        // XDP cannot fragment the others, and their senders do no PMTUD.
        Ok(Sent::TooBig(_)) if s.pkt.df == 0 => Verdict::drop(Outcome::DropTooBigNoDf),
        Ok(Sent::TooBig(mtu)) => match icmp::too_big(ctx, &s.pkt, mtu) {
            Ok(v) | Err(v) => v,
        },
    };
    Ok(v.for_vip(to.vip_id).to_backend(to.backend_id))
}

/// A packet that failed `vet` (or has a bad L4 header) ends with that
/// verdict if it is VIP traffic, and is passed as not ours otherwise. Out
/// of line: rare, and the VIP lookup it needs stays off the fast path.
#[inline(never)]
fn refused(key: &FlowKey, v: Verdict) -> Verdict {
    match find_vip(&key.dst, key.dport, key.proto, key.family) {
        Some(vip) => v.for_vip(vip.vip_id),
        None => Verdict::pass(Outcome::PassNotVip),
    }
}

/// An ICMP error to a VIP goes where the flow it quotes goes. Out of line:
/// rare, and it should not weigh on the TCP/UDP path.
#[inline(never)]
fn icmp_error(ctx: &XdpContext, s: &mut Scratch) -> Step<Verdict> {
    icmp::quoted_flow(ctx, &s.pkt, &mut s.key)?;
    let to = choose(&s.key, Track::Quiet)?;
    vet(ctx, &s.pkt).map_err(|v| v.for_vip(to.vip_id))?;
    count(Outcome::IcmpErrorSteered);
    let v = match deliver(ctx, s, to.backend_id) {
        Ok(Sent::Out(v)) | Err(v) => v,
        Ok(Sent::TooBig(_)) if s.pkt.df == 0 => Verdict::drop(Outcome::DropTooBigNoDf),
        // No ICMP is ever sent about an ICMP error (RFC 1122 3.2.2).
        Ok(Sent::TooBig(_)) => Verdict::drop(Outcome::DropTooBig),
    };
    Ok(v.for_vip(to.vip_id).to_backend(to.backend_id))
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

/// Where a flow goes.
struct Chosen {
    backend_id: u32,
    vip_id: u32,
}

/// The flow's backend: from the flow table while that entry names an
/// active backend of the same incarnation of the VIP (no VIP lookup: the
/// established fast path); else, when the destination is a VIP, from its
/// Maglev table.
#[inline(always)]
fn choose(key: &FlowKey, track: Track) -> Step<Chosen> {
    if let Some(flow) = unsafe { XLB_FLOWS.get(key) } {
        let (id, tag) = (flow.backend_id, flow.tag);
        if XLB_BACKENDS
            .get(id)
            .is_some_and(|b| b.flags & BACKEND_ACTIVE != 0 && b.tag == tag)
        {
            if track != Track::Quiet {
                count(Outcome::FlowHit);
            }
            return Ok(Chosen {
                backend_id: id,
                vip_id: flow.vip_id,
            });
        }
    }
    new_flow(key, track)
}

/// A flow the table does not hold (or whose backend is gone): to a VIP, a
/// backend from its Maglev table, remembered unless `track` says not to.
#[inline(always)]
fn new_flow(key: &FlowKey, track: Track) -> Step<Chosen> {
    let vip = find_vip(&key.dst, key.dport, key.proto, key.family)
        .ok_or(Verdict::pass(Outcome::PassNotVip))?;
    if track != Track::Quiet {
        count(Outcome::FlowMiss);
    }
    let id = maglev(&vip, flow_hash(key)).map_err(|v| v.for_vip(vip.vip_id))?;
    if track == Track::Insert {
        // A failed insert only means the next packet is hashed again, to
        // the same backend while the table is unchanged.
        let _ = XLB_FLOWS.insert(
            key,
            FlowValue {
                backend_id: id,
                vip_id: vip.vip_id,
                tag: vip.tag,
            },
            0,
        );
    }
    Ok(Chosen {
        backend_id: id,
        vip_id: vip.vip_id,
    })
}

#[inline(always)]
fn maglev(vip: &VipInfo, hash: u32) -> Step<u32> {
    if vip.maglev_size == 0 {
        return Err(Verdict::drop(Outcome::DropNoBackend));
    }
    let slot = vip
        .maglev_start
        .wrapping_add(maglev_slot(hash, vip.maglev_size));
    let pair = XLB_MAGLEV.get(slot >> 1).ok_or(INTERNAL)?;
    let id = if slot & 1 == 0 { pair[0] } else { pair[1] };
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
fn deliver(ctx: &XdpContext, s: &mut Scratch, backend_id: u32) -> Step<Sent> {
    let be = XLB_BACKENDS.get(backend_id).ok_or(INTERNAL)?;
    if be.family != s.pkt.family {
        return Err(Verdict::drop(Outcome::DropFamilyMismatch));
    }
    match Encap::from_u8(be.encap) {
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
        (&cfg.ipip_src_v4, IPIP4_OVERHEAD)
    } else {
        (&cfg.ipip_src_v6, IPIP6_OVERHEAD)
    };
    let len = pkt.ip_len.saturating_add(overhead);
    let hop = match fib::next_hop(ctx, &mut s.fib, id, len, src, &be.addr, pkt.family)? {
        Hop::Via(hop) => hop,
        Hop::TooBig(mtu) => return Ok(Sent::TooBig(mtu.saturating_sub(overhead))),
    };
    if bench_stop(stop::ROUTED) {
        return Ok(Sent::Out(Verdict::tx(Outcome::Tx)));
    }
    if v4 {
        encap::ipip4(ctx, pkt, hop, src, &be.addr)?;
    } else {
        encap::ipip6(
            ctx,
            pkt,
            hop,
            src,
            &be.addr,
            lb_common::hash::flow_label(&s.key),
        )?;
    }
    Ok(Sent::Out(encap::send(ctx, hop)))
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
    encap::write_l2(ctx, Mac::of(&hop.dmac), Mac::of(&hop.smac), ether_type)?;
    Ok(Sent::Out(encap::send(ctx, hop)))
}

/// The shared flow hash, out of line: its ten mixing rounds would otherwise
/// spill registers into the caller's frame.
#[inline(never)]
fn flow_hash(key: &FlowKey) -> u32 {
    lb_common::hash::flow_hash(key)
}
