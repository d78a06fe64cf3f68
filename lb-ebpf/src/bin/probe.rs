//! The probe path's tc egress entry point (see `lb_ebpf::probe`).
#![no_std]
#![no_main]

use aya_ebpf::{macros::classifier, programs::TcContext};
use lb_ebpf::probe;

#[classifier]
fn xlb_probe(ctx: TcContext) -> i32 {
    let outcome = probe::run(&ctx);
    probe::count(outcome);
    probe::action(outcome)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
