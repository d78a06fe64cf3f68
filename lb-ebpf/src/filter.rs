//! The VIP filter (`XLB_VIP_FILTER`): may this address be a VIP?

use crate::maps::{XLB_FILTER_SHIFT, XLB_VIP_FILTER};

/// False when no VIP has this address; true when one may (a VIP lookup
/// then decides). Map missing or out of range: true, never a lost VIP.
#[inline(always)]
pub fn may_be_vip(addr: &[u8; 16]) -> bool {
    let bit = lb_common::hash::vip_filter_hash(addr) >> XLB_FILTER_SHIFT.load();
    match XLB_VIP_FILTER.get(bit >> 6) {
        Some(w) => *w & (1u64 << (bit & 63)) != 0,
        None => true,
    }
}
