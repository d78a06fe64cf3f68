//! The probe path: health-check probes sent the way the balancer sends a
//! client's packets, so a passing check proves the backend works *through*
//! DSR (the IPIP decapsulation, the VIP on its loopback, its direct
//! return), not only that its own address answers.
//!
//! The daemon opens the probe's socket on this node, bound to one of the
//! node's own addresses, marked `tag | id`, and connects it to VIP:port. A
//! policy-routing rule sends packets with that tag to the probe device, on
//! whose egress this program runs: it finds the probe's path by `id`,
//! encapsulates the packet for the backend (or leaves it as it is for
//! `l2`), and redirects it towards the backend with
//! `bpf_redirect_neigh`, which makes the kernel resolve the next hop's MAC
//! (unlike XDP, tc can wait for ARP/NDP). The backend answers from the VIP
//! straight to the node's address, as it answers clients.
//!
//! A tc program and not the XDP balancer: a probe is a local socket's
//! packet, which never crosses XDP on its way out, and keeping it out of
//! the balancer keeps the fast path as it is.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, TC_ACT_REDIRECT, TC_ACT_SHOT,
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup as FibParams, bpf_redir_neigh,
    },
    btf_maps::{HashMap, PerCpuArray},
    helpers::{bpf_fib_lookup, bpf_redirect_neigh, bpf_skb_adjust_room},
    macros::btf_map,
    programs::TcContext,
};
use lb_common::{
    DEFAULT_MAX_PROBES, Encap, FAMILY_V4, FAMILY_V6, IPIP4_OVERHEAD, IPIP6_OVERHEAD, PROBE_ID_MASK,
    ProbePath, stats::ProbeOutcome,
};

use crate::{
    addr,
    encap::{Ipip4, TTL},
    fib,
    parse::{ETH_LEN, ETH_P_IP, ETH_P_IPV6, PROTO_IPV6},
    ptr,
};

/// Probe id (`mark & PROBE_ID_MASK`) -> where its packets go.
#[btf_map]
pub static XLB_PROBE_PATHS: HashMap<u32, ProbePath, { DEFAULT_MAX_PROBES as usize }> =
    HashMap::new();

#[btf_map]
pub static XLB_PROBE_STATS: PerCpuArray<u64, { ProbeOutcome::COUNT as usize }> = PerCpuArray::new();

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

type Step<T> = Result<T, ProbeOutcome>;

#[inline(always)]
pub fn count(outcome: ProbeOutcome) {
    if let Some(c) = XLB_PROBE_STATS.get_ptr_mut(outcome as u32) {
        unsafe { *c += 1 };
    }
}

/// The tc action for an outcome: the packet left (redirect) or is dropped.
/// Nothing but probes is routed to the probe device, so there is nothing
/// to pass on.
#[inline(always)]
pub fn action(outcome: ProbeOutcome) -> i32 {
    if outcome.redirected() {
        TC_ACT_REDIRECT
    } else {
        TC_ACT_SHOT
    }
}

/// The address of a `T` at `off` bytes into the packet's linear data, if
/// it is there. The headers of a locally built packet always are.
#[inline(always)]
fn at<T>(ctx: &TcContext, off: usize) -> Option<usize> {
    let start = ctx.data();
    if start + off + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(start + off)
}

/// What the program needs of the probe's own IP header. Aligned, the
/// address first: `addr` moves it as 64-bit words, and the verifier
/// refuses misaligned stack access.
#[repr(C, align(8))]
struct Inner {
    /// Source address, for the route lookup of an `l2` path: the probe's,
    /// or unspecified for one `bpf_fib_lookup` refuses (see `parse`).
    src: addr::Addr,
    /// IP total length (IPv4 `tot_len`; IPv6 40 + payload length).
    len: u16,
    /// IPv4 TOS / IPv6 traffic class, copied to the outer header as the
    /// balancer does.
    tos: u8,
    /// IPv4: 1 when DF is set, copied to the outer header.
    df: u8,
    /// IPv6 flow label (the socket's), copied to the outer header: routers
    /// between here and the backend then spread the probe's tunnel packets
    /// as they spread its other packets.
    label: u32,
}

#[inline(always)]
pub fn run(ctx: &TcContext) -> ProbeOutcome {
    match try_run(ctx) {
        Ok(o) | Err(o) => o,
    }
}

#[inline(always)]
fn try_run(ctx: &TcContext) -> Step<ProbeOutcome> {
    let mark = unsafe { (*ctx.skb.skb).mark };
    let path = unsafe { XLB_PROBE_PATHS.get(mark & PROBE_ID_MASK) }.ok_or(ProbeOutcome::NoPath)?;
    let inner = parse(ctx, path.family)?;
    // The probe rule matched on the mark; the route lookups after this one
    // (`bpf_redirect_neigh`'s, for the tunnel's next hop) must not match it
    // again, or they would send the packet back here.
    ctx.set_mark(0);
    match Encap::from_u8(path.encap) {
        Some(Encap::Ipip) => {
            if path.family == FAMILY_V4 {
                ipip4(ctx, path, &inner)?;
            } else {
                ipip6(ctx, path, &inner)?;
            }
            let ifindex = route(ctx, path.family, &path.outer_src, &path.backend)?.ifindex;
            // No next hop given: the kernel routes the outer destination
            // (the backend) itself and resolves that route's neighbour.
            let rc = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
            redirected(rc, ProbeOutcome::Ipip)
        }
        Some(Encap::L2) => {
            let p = route(ctx, path.family, &inner.src, &path.backend)?;
            // As the balancer: l2 reaches only a backend on a connected
            // network, the frame's MAC being the backend's own.
            if !fib::is_direct(&p, path.family, &path.backend) {
                return Err(ProbeOutcome::NotOnLink);
            }
            // The IP destination stays the VIP; the next hop whose MAC the
            // frame goes to is the backend (the helper has taken one
            // since it arrived, in 5.10: Debian 11's kernel runs this).
            let mut nh: bpf_redir_neigh = unsafe { core::mem::zeroed() };
            if path.family == FAMILY_V4 {
                nh.nh_family = AF_INET as u32;
                nh.__bindgen_anon_1.ipv4_nh = addr::v4_word(&path.backend);
            } else {
                nh.nh_family = AF_INET6 as u32;
                nh.__bindgen_anon_1.ipv6_nh =
                    unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(path.backend) };
            }
            let rc = unsafe {
                bpf_redirect_neigh(p.ifindex, &mut nh, size_of::<bpf_redir_neigh>() as i32, 0)
            };
            redirected(rc, ProbeOutcome::L2)
        }
        None => Err(ProbeOutcome::Internal),
    }
}

#[inline(always)]
fn redirected(rc: i64, outcome: ProbeOutcome) -> Step<ProbeOutcome> {
    if rc == TC_ACT_REDIRECT as i64 {
        Ok(outcome)
    } else {
        Err(ProbeOutcome::Internal)
    }
}

/// The frame: untagged Ethernet carrying an IP packet of `family` whose
/// length fields agree with the packet's. The destination MAC is zeroed
/// on the way: `bpf_redirect_neigh` drops frames whose destination is a
/// multicast MAC (it checks before it writes the next hop's), and on a
/// NOARP device the kernel writes the device's own or, for a multicast IP
/// destination, a group address.
#[inline(always)]
fn parse(ctx: &TcContext, family: u8) -> Step<Inner> {
    let malformed = ProbeOutcome::Malformed;
    let eth = at::<[u8; ETH_LEN]>(ctx, 0).ok_or(malformed)?;
    let ether_type = u16::from_be(unsafe { ptr::load::<u16>(eth + 12) });
    let frame_family = match ether_type {
        ETH_P_IP => FAMILY_V4,
        ETH_P_IPV6 => FAMILY_V6,
        _ => return Err(malformed),
    };
    // bpf_skb_adjust_room and bpf_redirect_neigh go by skb->protocol, not
    // by the frame: both must say the same.
    if u16::from_be(ctx.skb.protocol() as u16) != ether_type {
        return Err(malformed);
    }
    if frame_family != family {
        return Err(ProbeOutcome::WrongFamily);
    }
    let ip_len = (ctx.len() as usize).wrapping_sub(ETH_LEN);
    let mut inner = Inner {
        len: 0,
        tos: 0,
        df: 0,
        label: 0,
        src: [0; 16],
    };
    if family == FAMILY_V4 {
        let h = at::<[u8; 20]>(ctx, ETH_LEN).ok_or(malformed)?;
        let (vihl, tos) = unsafe { (ptr::load::<u8>(h), ptr::load::<u8>(h + 1)) };
        let tot_len = u16::from_be(unsafe { ptr::load::<u16>(h + 2) });
        let frag = u16::from_be(unsafe { ptr::load::<u16>(h + 6) });
        let hl = ((vihl & 0x0f) as usize) * 4;
        if vihl >> 4 != 4 || hl < 20 || (tot_len as usize) < hl || tot_len as usize != ip_len {
            return Err(malformed);
        }
        inner.len = tot_len;
        inner.tos = tos;
        inner.df = ((frag & 0x4000) != 0) as u8;
        addr::set_v4(&mut inner.src, unsafe { ptr::load::<u32>(h + 12) });
    } else {
        let h = at::<[u8; 40]>(ctx, ETH_LEN).ok_or(malformed)?;
        let w0 = u32::from_be(unsafe { ptr::load::<u32>(h) });
        let payload = u16::from_be(unsafe { ptr::load::<u16>(h + 4) }) as usize;
        if w0 >> 28 != 6 || payload + 40 != ip_len {
            return Err(malformed);
        }
        // The whole inner packet is the outer payload, whose length field
        // has 16 bits.
        if ip_len > u16::MAX as usize {
            return Err(ProbeOutcome::TooBig);
        }
        inner.len = ip_len as u16;
        inner.tos = (w0 >> 20) as u8;
        inner.label = w0 & 0x000f_ffff;
        addr::set_v6_from(&mut inner.src, h + 8);
        // bpf_fib_lookup answers "not forwarded" for a multicast,
        // link-local or loopback IPv6 source (a router forwards from none),
        // but a probe is a local packet, which the kernel routes whatever
        // its source: such a source is left out of the lookup, so the
        // probe goes as any other on its path (only rules and routes that
        // select by source would have told it apart), and a backend that
        // has a route is not counted `no_route`. The IPv4 helper refuses
        // no source.
        if addr::is_v6_never_forwarded(&inner.src) {
            addr::clear(&mut inner.src);
        }
    }
    unsafe {
        ptr::store::<u32>(eth, 0);
        ptr::store::<u16>(eth + 4, 0);
    }
    Ok(inner)
}

/// A 32-bit word of header bytes `[a, b, c, d]` as stored in memory.
#[inline(always)]
const fn bytes4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_ne_bytes([a, b, c, d])
}

/// Makes room for the outer header between the MAC header and the probe's
/// IP header. The ENCAP flag tells the kernel the inner headers' offsets
/// (`skb->inner_*`, `encapsulation`, an IPXIP GSO type), so checksum and
/// segmentation offloads still find the probe's TCP header behind the
/// tunnel; without it a GSO probe would be segmented as plain IP.
#[inline(always)]
fn grow(ctx: &TcContext, len: u16, flag: u32) -> Step<()> {
    let rc = unsafe { bpf_skb_adjust_room(ctx.skb.skb, len as i32, BPF_ADJ_ROOM_MAC, flag as u64) };
    if rc != 0 {
        return Err(ProbeOutcome::Internal);
    }
    Ok(())
}

/// IPv4-in-IPv4 as the balancer builds it (`encap::ipip4`): TOS and DF
/// from the inner header, a random non-zero ID when DF is clear (its
/// fragments must be told from others'), 0 with DF (RFC 6864), TTL 64.
#[inline(always)]
fn ipip4(ctx: &TcContext, path: &ProbePath, inner: &Inner) -> Step<()> {
    let len = inner.len.wrapping_add(IPIP4_OVERHEAD);
    if len < inner.len {
        return Err(ProbeOutcome::TooBig);
    }
    grow(ctx, IPIP4_OVERHEAD, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)?;
    // Every packet pointer is invalid after adjust_room: found again.
    let h = at::<[u8; 20]>(ctx, ETH_LEN).ok_or(ProbeOutcome::Internal)?;
    let outer = Ipip4 {
        tos: inner.tos,
        len,
        df: inner.df,
    };
    // SAFETY: `h` is 20 bytes of packet, checked just above.
    unsafe { outer.store(h, &path.outer_src, &path.backend) };
    Ok(())
}

/// IPv6-in-IPv6: traffic class and flow label from the inner header, hop
/// limit 64.
#[inline(always)]
fn ipip6(ctx: &TcContext, path: &ProbePath, inner: &Inner) -> Step<()> {
    grow(ctx, IPIP6_OVERHEAD, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6)?;
    let h = at::<[u8; 40]>(ctx, ETH_LEN).ok_or(ProbeOutcome::Internal)?;
    let len = inner.len.to_be_bytes();
    let label = inner.label;
    unsafe {
        ptr::store::<u32>(
            h,
            bytes4(
                0x60 | (inner.tos >> 4),
                (inner.tos << 4) | (label >> 16) as u8,
                (label >> 8) as u8,
                label as u8,
            ),
        );
        ptr::store::<u32>(h + 4, bytes4(len[0], len[1], PROTO_IPV6, TTL));
    }
    addr::store_v6(h + 8, &path.outer_src);
    addr::store_v6(h + 24, &path.backend);
    Ok(())
}

/// The kernel's route from `src` to `dst`, looked up as if forwarded from
/// the probe device (which must have forwarding enabled: the daemon sets
/// it). A missing neighbour is no failure here: `bpf_redirect_neigh`
/// resolves it. Without `tot_len` the helper checks the packet as it is
/// now (encapsulated, GSO allowed) against the egress MTU.
#[inline(always)]
fn route(ctx: &TcContext, family: u8, src: &addr::Addr, dst: &addr::Addr) -> Step<FibParams> {
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.ifindex = unsafe { (*ctx.skb.skb).ifindex };
    if family == FAMILY_V4 {
        p.family = AF_INET;
        p.__bindgen_anon_3.ipv4_src = addr::v4_word(src);
        p.__bindgen_anon_4.ipv4_dst = addr::v4_word(dst);
    } else {
        p.family = AF_INET6;
        p.__bindgen_anon_3.ipv6_src = unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*src) };
        p.__bindgen_anon_4.ipv6_dst = unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*dst) };
    }
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), &mut p, size_of::<FibParams>() as i32, 0) };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS | BPF_FIB_LKUP_RET_NO_NEIGH => Ok(p),
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Err(ProbeOutcome::TooBig),
        _ => Err(ProbeOutcome::NoRoute),
    }
}
