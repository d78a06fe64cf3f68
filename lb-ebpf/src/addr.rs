//! 16-byte address fields (IPv4 in the first four bytes, the rest zero),
//! moved and compared as two 64-bit words.
//!
//! Written naively (`[a, b, c, d, 0, ...]`, `copy_from_slice`, `==`), these
//! become byte-wise `memset`/`memmove`/`bcmp` sub-function calls in BPF:
//! tens of instructions per address on every packet. Every field these
//! functions touch is 8-byte aligned: map values are, and the structs that
//! hold addresses (`Packet`, `FlowKey`, `Backend`) put them at multiples of 8
//! (asserted where they are defined).

use crate::ptr;

pub type Addr = [u8; 16];

#[inline(always)]
fn words(a: &Addr) -> *const u64 {
    a.as_ptr().cast()
}

/// `a` := the IPv4 address whose four bytes, in network order, are `w` as
/// loaded from memory.
#[inline(always)]
pub fn set_v4(a: &mut Addr, w: u32) {
    let p = a.as_mut_ptr().cast::<u64>();
    unsafe {
        p.write(w as u64);
        p.add(1).write(0);
    }
}

/// `a` := the 16 bytes at packet address `at` (bounded by the caller).
#[inline(always)]
pub fn set_v6_from(a: &mut Addr, at: usize) {
    let p = a.as_mut_ptr().cast::<u64>();
    unsafe {
        p.write(ptr::load::<u64>(at));
        p.add(1).write(ptr::load::<u64>(at + 8));
    }
}

/// `a` := `b`.
#[inline(always)]
pub fn copy(a: &mut Addr, b: &Addr) {
    let p = a.as_mut_ptr().cast::<u64>();
    unsafe {
        p.write(words(b).read());
        p.add(1).write(words(b).add(1).read());
    }
}

#[inline(always)]
pub fn eq(a: &Addr, b: &Addr) -> bool {
    unsafe {
        words(a).read() == words(b).read() && words(a).add(1).read() == words(b).add(1).read()
    }
}

/// Whether IPv6 address `a` is multicast (ff00::/8), link-local
/// (fe80::/10) or loopback (::1): the addresses a router forwards neither
/// to nor from, which `bpf_fib_lookup` refuses (`rt6_need_strict`).
#[inline(always)]
pub fn is_v6_never_forwarded(a: &Addr) -> bool {
    let loopback = u64::from_ne_bytes([0, 0, 0, 0, 0, 0, 0, 1]);
    a[0] == 0xff
        || (a[0] == 0xfe && a[1] & 0xc0 == 0x80)
        || unsafe { words(a).read() == 0 && words(a).add(1).read() == loopback }
}

/// `a` := the unspecified address (`::`, or 0.0.0.0).
#[inline(always)]
pub fn clear(a: &mut Addr) {
    let p = a.as_mut_ptr().cast::<u64>();
    unsafe {
        p.write(0);
        p.add(1).write(0);
    }
}

/// The first four bytes as one word, as loaded from memory (network order
/// in memory, so storing it back writes the IPv4 address unchanged).
#[inline(always)]
pub fn v4_word(a: &Addr) -> u32 {
    unsafe { a.as_ptr().cast::<u32>().read() }
}

/// Writes the 16 bytes of `a` at packet address `at` (bounded by the
/// caller).
#[inline(always)]
pub fn store_v6(at: usize, a: &Addr) {
    unsafe {
        ptr::store::<u64>(at, words(a).read());
        ptr::store::<u64>(at + 8, words(a).add(1).read());
    }
}
