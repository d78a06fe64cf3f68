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
