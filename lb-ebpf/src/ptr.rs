//! The one way to touch packet memory: bounds-checked against `data_end`
//! right before use, which is the shape the verifier can follow.

use aya_ebpf::programs::XdpContext;

/// Headers the programs touch all start within this many bytes.
pub const MAX_HEADER_OFF: usize = 512;

/// A pointer to a `T` at `off` bytes into the packet, if it fits.
#[inline(always)]
pub fn at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    // Offsets kept in the scratch map come back unbounded; the verifier
    // needs a known range before it will add one to a packet pointer.
    if off > MAX_HEADER_OFF {
        return None;
    }
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// Reads a `T` at `off`, unaligned (IP options and VLAN tags shift headers
/// off their natural alignment).
#[inline(always)]
pub fn read<T: Copy>(ctx: &XdpContext, off: usize) -> Option<T> {
    at::<T>(ctx, off).map(|p| unsafe { p.read_unaligned() })
}

/// Writes a `T` at `off`; false when it does not fit.
#[inline(always)]
pub fn write<T>(ctx: &XdpContext, off: usize, v: T) -> bool {
    match at::<T>(ctx, off) {
        Some(p) => {
            unsafe { p.write_unaligned(v) };
            true
        }
        None => false,
    }
}

/// Frame length as the program sees it.
#[inline(always)]
pub fn frame_len(ctx: &XdpContext) -> usize {
    ctx.data_end() - ctx.data()
}

/// Loads a `T` (`u16`, `u32`, `u64`) from `addr` in one instruction.
///
/// Header fields sit wherever the frame puts them (an IPv4 address is only
/// 2-byte aligned behind a 14-byte Ethernet header), and LLVM's BPF backend
/// splits a `read_unaligned` into single-byte loads and shifts, several
/// instructions per byte on every packet. The machines XDP runs on (x86-64,
/// arm64) load unaligned words at full speed, and the verifier checks
/// alignment only when a program asks it to (`BPF_F_STRICT_ALIGNMENT`), so
/// one word-sized load is what a C program's `iph->saddr` compiles to; this
/// is the same.
///
/// # Safety
/// `addr..addr + size_of::<T>()` must be readable: packet memory bounded
/// by [`at`], or map memory. Never the stack, whose accesses the verifier
/// requires to be aligned.
#[inline(always)]
pub unsafe fn load<T: Copy>(addr: usize) -> T {
    unsafe { core::ptr::read(addr as *const T) }
}

/// Stores a `T` at `addr` in one instruction; see [`load`].
///
/// # Safety
/// As for [`load`], writable.
#[inline(always)]
pub unsafe fn store<T>(addr: usize, v: T) {
    unsafe { core::ptr::write(addr as *mut T, v) }
}
