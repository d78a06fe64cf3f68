//! The backend-side IPIP decapsulator's XDP entry point.
#![no_std]
#![no_main]

use aya_ebpf::{bindings::xdp_action::XDP_PASS, macros::xdp, programs::XdpContext};
use lb_ebpf::decap;

#[xdp]
fn xlb_decap(ctx: XdpContext) -> u32 {
    decap::count(decap::decap(&ctx));
    XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
