//! Per-packet working state in a per-CPU array instead of on the stack: the
//! verifier allows 512 bytes of stack along a whole call chain, and the
//! parsed packet, flow key and FIB parameters alone would take half of it.
//! One per-CPU array lookup per packet (inlined by the verifier) buys that.

use aya_ebpf::{bindings::bpf_fib_lookup as FibParams, btf_maps::PerCpuArray, macros::btf_map};
use lb_common::FlowKey;

/// IPv4 fragmentation state of a packet.
pub const FRAG_NONE: u8 = 0;
/// Offset 0 with more fragments: carries the L4 header.
pub const FRAG_FIRST: u8 = 1;
/// Offset > 0: no L4 header.
pub const FRAG_LATER: u8 = 2;

/// What the balancer needs of a parsed packet. Plain integers only: this
/// lands in map BTF, which has no notion of Rust enums. Aligned to 8 so the
/// addresses move as words (`addr`).
#[repr(C, align(8))]
pub struct Packet {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// 14, or 18 with an 802.1Q tag (decapsulator only).
    pub l2_len: u32,
    pub l4_off: u32,
    /// IP total length (header included), from the header, not the frame:
    /// Ethernet padding is not part of it.
    pub ip_len: u16,
    pub family: u8,
    pub proto: u8,
    /// IPv4 TOS or IPv6 traffic class.
    pub tos: u8,
    /// IPv4 DF bit (1 for IPv6, which routers never fragment).
    pub df: u8,
    /// `FRAG_*`.
    pub fragment: u8,
    /// IPv4 TTL or IPv6 hop limit.
    pub ttl: u8,
    /// IP header length in bytes (IPv4 options included; 40 for IPv6).
    pub ip_hdr_len: u8,
    pub _pad: [u8; 3],
}

#[repr(C)]
pub struct Scratch {
    pub pkt: Packet,
    pub key: FlowKey,
    pub fib: FibParams,
}

#[btf_map]
pub static XLB_SCRATCH: PerCpuArray<Scratch, 1> = PerCpuArray::new();

impl Packet {
    pub const fn zeroed() -> Self {
        Self {
            src: [0; 16],
            dst: [0; 16],
            l2_len: 0,
            l4_off: 0,
            ip_len: 0,
            family: 0,
            proto: 0,
            tos: 0,
            df: 0,
            fragment: 0,
            ttl: 0,
            ip_hdr_len: 0,
            _pad: [0; 3],
        }
    }
}
