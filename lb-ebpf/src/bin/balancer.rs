//! The load balancer's XDP entry point.
#![no_std]
#![no_main]

use aya_ebpf::{macros::xdp, programs::XdpContext};
use aya_log_ebpf::debug;
use lb_ebpf::{balancer, maps::XLB_LOG, ptr};

#[xdp]
fn xlb_balancer(ctx: XdpContext) -> u32 {
    let bytes = ptr::frame_len(&ctx) as u64;
    let v = balancer::balance(&ctx);
    balancer::account(&v, bytes);
    if XLB_LOG.load() != 0 {
        debug!(
            &ctx,
            "xlb: action={} outcome={} vip={} backend={}",
            v.action,
            v.outcome as u32,
            v.vip_id,
            v.backend_id
        );
    }
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
