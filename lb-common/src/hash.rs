//! The flow hash. It must be bit-for-bit the same in the XDP program and in
//! userspace (tests, `xlb status`), and on every node, so that a flow moved
//! by ECMP to another load balancer picks the same Maglev slot. That rules
//! out per-boot random seeds and `bpf_get_hash_recalc`-style kernel hashes.

use crate::FlowKey;

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

/// Fixed seed of the flow hash (any change reshuffles every new flow).
pub const FLOW_SEED: u32 = 0x786c_6231; // "xlb1"

#[inline(always)]
const fn mix(h: u32, w: u32) -> u32 {
    let k = w.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

#[inline(always)]
const fn finish(mut h: u32, len: u32) -> u32 {
    h ^= len;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

#[inline(always)]
const fn word(b: &[u8; 16], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// MurmurHash3-style hash of the 5-tuple (both addresses, both ports, the
/// protocol). Unrolled by hand: the verifier then sees straight-line code.
#[inline(always)]
pub const fn flow_hash(k: &FlowKey) -> u32 {
    let mut h = FLOW_SEED;
    h = mix(h, word(&k.src, 0));
    h = mix(h, word(&k.src, 4));
    h = mix(h, word(&k.src, 8));
    h = mix(h, word(&k.src, 12));
    h = mix(h, word(&k.dst, 0));
    h = mix(h, word(&k.dst, 4));
    h = mix(h, word(&k.dst, 8));
    h = mix(h, word(&k.dst, 12));
    h = mix(h, ((k.sport as u32) << 16) | k.dport as u32);
    h = mix(h, k.proto as u32);
    finish(h, 40)
}

/// Hash of a backend address with a seed: Maglev's offset and skip.
pub const fn addr_hash(addr: &[u8; 16], seed: u32) -> u32 {
    let mut h = seed;
    h = mix(h, word(addr, 0));
    h = mix(h, word(addr, 4));
    h = mix(h, word(addr, 8));
    h = mix(h, word(addr, 12));
    finish(h, 16)
}

/// Position of an address in the VIP filter, the bit array the program
/// tests before anything else: a clear bit means no VIP has this address.
/// Cheap on purpose (it runs on every packet, VIP or not): the four words
/// folded, then a multiplicative hash whose top bits index the array.
#[inline(always)]
pub const fn vip_filter_hash(addr: &[u8; 16]) -> u32 {
    let folded = word(addr, 0) ^ word(addr, 4) ^ word(addr, 8) ^ word(addr, 12);
    folded.wrapping_mul(0x9e37_79b1)
}

/// The IPv6 flow label of an encapsulated packet (RFC 6438): stable per
/// flow, spread over 20 bits. Not the Maglev hash, which a flow-table hit
/// does not compute.
#[inline(always)]
pub const fn flow_label(k: &FlowKey) -> u32 {
    let w = word(&k.src, 0)
        ^ word(&k.src, 4)
        ^ word(&k.src, 8)
        ^ word(&k.src, 12)
        ^ word(&k.dst, 12)
        ^ (((k.sport as u32) << 16) | k.dport as u32);
    w.wrapping_mul(0x9e37_79b1) >> 12
}
