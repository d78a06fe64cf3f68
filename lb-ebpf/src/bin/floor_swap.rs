//! Benchmark floor: parse Ethernet, IP and the L4 ports with the balancer's
//! own parser, swap the MACs and bounce the frame. The least a forwarding
//! XDP program does.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_PASS, XDP_TX},
    macros::xdp,
    programs::XdpContext,
};
use lb_ebpf::{parse, ptr};

#[xdp]
fn xlb_floor_swap(ctx: XdpContext) -> u32 {
    let mut pkt = parse::Packet::zeroed();
    if parse::packet(&ctx, &mut pkt).is_err() {
        return XDP_PASS;
    }
    let Some(ports) = parse::ports(&ctx, pkt.l4_off as usize, pkt.proto, parse::ip_end(&pkt))
    else {
        return XDP_PASS;
    };
    let Some(macs) = ptr::read::<[u8; 12]>(&ctx, 0) else {
        return XDP_PASS;
    };
    let swapped = [
        macs[6], macs[7], macs[8], macs[9], macs[10], macs[11], macs[0], macs[1], macs[2], macs[3],
        macs[4], macs[5],
    ];
    if ports.dst == 0 || !ptr::write(&ctx, 0, swapped) {
        return XDP_PASS;
    }
    XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
