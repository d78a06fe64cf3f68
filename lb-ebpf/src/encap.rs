//! Direct Server Return: IPIP encapsulation or a MAC rewrite, and the way out.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_redirect, bpf_xdp_adjust_head},
    programs::XdpContext,
};
use lb_common::{IPIP4_OVERHEAD, IPIP6_OVERHEAD, NextHop, Outcome};

use crate::{
    addr::{self, Addr},
    csum,
    parse::{ETH_LEN, ETH_P_IP, ETH_P_IPV6, PROTO_IPIP, PROTO_IPV6, Packet},
    ptr,
    verdict::{Step, Verdict},
};

/// Hop limit of headers this program originates.
pub const TTL: u8 = 64;

const INTERNAL: Verdict = Verdict::drop(Outcome::DropInternal);

/// A MAC address in two words (first four bytes, last two), as loaded from
/// memory: moved in two loads and two stores.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mac(u32, u16);

impl Mac {
    /// The MAC at `at`: packet or map memory, never the stack (the
    /// verifier refuses unaligned stack access).
    #[inline(always)]
    pub fn load(at: usize) -> Self {
        unsafe { Self(ptr::load::<u32>(at), ptr::load::<u16>(at + 4)) }
    }

    #[inline(always)]
    pub fn of(mac: &[u8; 6]) -> Self {
        Self::load(mac.as_ptr() as usize)
    }

    /// Writes the MAC at `at` (packet memory, bounded by the caller).
    ///
    /// # Safety
    /// As for [`ptr::store`].
    #[inline(always)]
    pub unsafe fn store(self, at: usize) {
        unsafe {
            ptr::store::<u32>(at, self.0);
            ptr::store::<u16>(at + 4, self.1);
        }
    }

    #[inline(always)]
    pub fn is_broadcast(&self) -> bool {
        self.0 == u32::MAX && self.1 == u16::MAX
    }

    /// A station's own address: the group bit clear, not all zeros.
    #[inline(always)]
    pub fn is_unicast(&self) -> bool {
        self.0 as u8 & 1 == 0 && (self.0 != 0 || self.1 != 0)
    }

    /// The Ethernet group of the IPv6 multicast address at `at` (RFC 2464:
    /// 33:33 and its last four bytes).
    #[inline(always)]
    pub fn multicast_v6(at: usize) -> Self {
        let w = unsafe { ptr::load::<u32>(at + 12) };
        Self(0x3333 | (w << 16), (w >> 16) as u16)
    }

    /// 33:33:00:00:00:01, the group of ff02::1 (all nodes).
    #[inline(always)]
    pub fn multicast_v6_all_nodes() -> Self {
        Self(
            u32::from_ne_bytes([0x33, 0x33, 0, 0]),
            u16::from_ne_bytes([0, 1]),
        )
    }
}

/// Writes the Ethernet header at the start of the frame, in five stores.
#[inline(always)]
pub fn write_l2(ctx: &XdpContext, dst: Mac, src: Mac, ether_type: u16) -> Step<()> {
    let eth = ptr::at::<[u8; ETH_LEN]>(ctx, 0).ok_or(INTERNAL)? as usize;
    unsafe {
        ptr::store::<u32>(eth, dst.0);
        ptr::store::<u16>(eth + 4, dst.1);
        ptr::store::<u32>(eth + 6, src.0);
        ptr::store::<u16>(eth + 10, src.1);
        ptr::store::<u16>(eth + 12, ether_type.to_be());
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

/// A 32-bit word of header bytes `[a, b, c, d]` as stored in memory.
#[inline(always)]
const fn bytes4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_ne_bytes([a, b, c, d])
}

/// IPv4-in-IPv4: a new outer header from `src` to `dst` in front of the
/// untouched inner packet. TOS and DF are copied from the inner header.
/// Without DF the outer packet may be fragmented on the way, and then its
/// ID must tell its fragments from others' (RFC 791): a random non-zero
/// one per packet. With DF the ID is 0 (RFC 6864: atomic datagrams).
#[inline(always)]
pub fn ipip4(ctx: &XdpContext, pkt: &Packet, hop: &NextHop, src: &Addr, dst: &Addr) -> Step<()> {
    grow_head(ctx, IPIP4_OVERHEAD as i32)?;
    write_l2(ctx, Mac::of(&hop.dmac), Mac::of(&hop.smac), ETH_P_IP)?;
    let h = ptr::at::<[u8; 20]>(ctx, ETH_LEN).ok_or(INTERNAL)? as usize;
    let outer = Ipip4 {
        tos: pkt.tos,
        len: pkt.ip_len + IPIP4_OVERHEAD,
        df: pkt.df,
    };
    // SAFETY: `h` is 20 bytes of packet, checked just above.
    unsafe { outer.store(h, src, dst) };
    Ok(())
}

/// The outer IPv4 header of IPv4-in-IPv4, as the balancer and the probe
/// path both write it.
pub struct Ipip4 {
    /// Copied from the inner header.
    pub tos: u8,
    /// Total length, outer header included.
    pub len: u16,
    /// 1 when the inner header has DF (copied).
    pub df: u8,
}

impl Ipip4 {
    /// Writes the header, checksum included, at `h`.
    ///
    /// # Safety
    /// `h` must be the start of 20 writable bytes of packet the verifier
    /// knows to be in bounds.
    #[inline(always)]
    pub unsafe fn store(&self, h: usize, src: &Addr, dst: &Addr) {
        let id = if self.df == 0 {
            let r = unsafe { bpf_get_prandom_u32() } as u16;
            (r | (r == 0) as u16).to_be_bytes()
        } else {
            [0, 0]
        };
        let len = self.len.to_be_bytes();
        let w = [
            bytes4(0x45, self.tos, len[0], len[1]),
            bytes4(id[0], id[1], self.df << 6, 0),
            bytes4(TTL, PROTO_IPIP, 0, 0),
            addr::v4_word(src),
            addr::v4_word(dst),
        ];
        // The one's-complement sum is byte-order independent: summed as
        // loaded, folded, it is the checksum as it lies in memory.
        let sum = w[0] as u64 + w[1] as u64 + w[2] as u64 + w[3] as u64 + w[4] as u64;
        let w2 = w[2] | ((csum::fold(sum) as u32) << 16);
        unsafe {
            ptr::store::<u32>(h, w[0]);
            ptr::store::<u32>(h + 4, w[1]);
            ptr::store::<u32>(h + 8, w2);
            ptr::store::<u32>(h + 12, w[3]);
            ptr::store::<u32>(h + 16, w[4]);
        }
    }
}

/// IPv6-in-IPv6. The flow label carries a hash of the flow, so routers
/// between the balancer and the backend spread tunnels by flow (RFC 6438).
#[inline(always)]
pub fn ipip6(
    ctx: &XdpContext,
    pkt: &Packet,
    hop: &NextHop,
    src: &Addr,
    dst: &Addr,
    label: u32,
) -> Step<()> {
    grow_head(ctx, IPIP6_OVERHEAD as i32)?;
    write_l2(ctx, Mac::of(&hop.dmac), Mac::of(&hop.smac), ETH_P_IPV6)?;
    let h = ptr::at::<[u8; 40]>(ctx, ETH_LEN).ok_or(INTERNAL)? as usize;
    let label = label & 0x000f_ffff;
    let len = pkt.ip_len.to_be_bytes();
    unsafe {
        ptr::store::<u32>(
            h,
            bytes4(
                0x60 | (pkt.tos >> 4),
                (pkt.tos << 4) | (label >> 16) as u8,
                (label >> 8) as u8,
                label as u8,
            ),
        );
        ptr::store::<u32>(h + 4, bytes4(len[0], len[1], PROTO_IPV6, TTL));
    }
    addr::store_v6(h + 8, src);
    addr::store_v6(h + 24, dst);
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
