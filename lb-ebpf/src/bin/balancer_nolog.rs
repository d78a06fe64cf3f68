//! The balancer with logging compiled out: built only so the benchmark can
//! show that the runtime-disabled logging of `xlb-balancer` costs nothing.
#![no_std]
#![no_main]

use aya_ebpf::{macros::xdp, programs::XdpContext};
use lb_ebpf::{balancer, ptr};

#[xdp]
fn xlb_balancer(ctx: XdpContext) -> u32 {
    let bytes = ptr::frame_len(&ctx) as u64;
    let v = balancer::balance(&ctx);
    balancer::account(&v, bytes);
    v.action
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
