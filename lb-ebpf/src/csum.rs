//! Internet checksums (RFC 1071).

use aya_ebpf::helpers::bpf_csum_diff;

#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Checksum of a 20-byte IPv4 header held on the stack (checksum field zero).
#[inline(always)]
pub fn ipv4_header(h: &[u8; 20]) -> u16 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < 20 {
        sum += u16::from_be_bytes([h[i], h[i + 1]]) as u64;
        i += 2;
    }
    fold(sum)
}

/// Whether the 20-byte IPv4 header at packet address `h` (bounded by the
/// caller) carries a right checksum: its whole one's-complement sum folds
/// to 0xffff, the kernel's own test (`ip_fast_csum`). Five 32-bit loads, no
/// helper call: this runs on every VIP packet. The sum is byte-order
/// independent.
#[inline(always)]
pub fn ipv4_header_ok(h: usize) -> bool {
    fold(words_sum(h, 5)) == 0
}

/// Sum of `n` 32-bit words at `at` (packet memory, bounded by the caller).
#[inline(always)]
pub fn words_sum(at: usize, n: usize) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    while i < n {
        sum += unsafe { crate::ptr::load::<u32>(at + 4 * i) } as u64;
        i += 1;
    }
    sum
}

/// One's-complement sum of `len` bytes at `p` (packet or stack memory; `len`
/// a multiple of 4 and at most 512, the helper's limit), added to `seed`.
/// The result is in the byte order of the data, as the helper computes it.
#[inline(always)]
pub fn partial(p: *const u8, len: u32, seed: u32) -> Option<u32> {
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p as *mut u32, len, seed) };
    if r < 0 { None } else { Some(r as u32) }
}

/// Final checksum from a helper partial sum, written in network order.
#[inline(always)]
pub fn finish(partial: u32) -> [u8; 2] {
    // The helper sums 32-bit words as loaded on this little-endian target;
    // folding to 16 bits and complementing gives the checksum in memory order.
    fold(partial as u64).to_ne_bytes()
}
