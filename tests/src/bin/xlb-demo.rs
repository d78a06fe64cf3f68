//! `cargo xtask run`: the balancer on its default configuration, with real
//! packets through the real (verifier-accepted) program.
//!
//! It builds the packet lab (a network namespace whose FIB and neighbour
//! table the program consults), loads the balancer with its maps pinned,
//! programs one IPv4 VIP (IPIP) and one IPv6 VIP (L2 DSR) over three
//! backends each, pushes a few hundred TCP connections through
//! BPF_PROG_TEST_RUN and prints where they went. Then it stays up so the
//! pinned maps can be read with bpftool, until Ctrl-C (or `--once`).

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Result, bail, ensure};
use lb_common::{Encap, Outcome, PROTO_TCP, names};
use lb_userspace::xdp::{Balancer, Settings};
use xlb_tests::{
    lab::{self, Lab, v4, v6},
    netns::PinDir,
    packet::*,
};

const XDP_TX: u32 = 3;
const FLOWS: u16 = 300;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> Result<()> {
    let once = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--once") => true,
        Some(other) => bail!("unknown argument {other:?}; usage: xlb-demo [--once]"),
    };
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the demo needs root: it makes a network namespace and loads XDP programs"
    );
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }

    println!("xlb demo: building the lab namespace and loading the balancer ...");
    let lab = Lab::new();
    let pins = PinDir::new();
    let vip4 = Ipv4Addr::new(10, 99, 0, 1);
    let vip6 = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
    let fd00 = |h| v6([0xfd00, 0, 0, 0, 0, 0, 0, h]);
    let vips = [
        lab::vip(
            1,
            IpAddr::V4(vip4),
            80,
            PROTO_TCP,
            Encap::Ipip,
            &[
                (1, v4(10, 0, 0, 0x11)),
                (2, v4(10, 0, 0, 0x12)),
                (3, v4(10, 0, 0, 0x13)),
            ],
        ),
        lab::vip(
            2,
            IpAddr::V6(vip6),
            80,
            PROTO_TCP,
            Encap::L2,
            &[(4, fd00(0x11)), (5, fd00(0x12)), (6, fd00(0x13))],
        ),
    ];
    lab.ns.run(|| -> Result<()> {
        let mut b = Balancer::load(&Settings {
            pin_dir: Some(pins.path.clone()),
            ..lab::settings()
        })?;
        lab::program(&mut b, &vips);
        let ifx = lab::ifindex("lb0");
        let mut per_backend: BTreeMap<(u32, String), u32> = BTreeMap::new();
        let mut moved = 0;
        for i in 0..FLOWS {
            let client4 = Ipv4Addr::new(198, 51, 100, (i % 200) as u8 + 1);
            let client6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i + 1);
            for (vip, client, dst) in [
                (1, IpAddr::V4(client4), IpAddr::V4(vip4)),
                (2, IpAddr::V6(client6), IpAddr::V6(vip6)),
            ] {
                let frame = |flags| lab::tcp_frame(client, 30_000 + i, dst, 80, flags, &[]);
                let first = backend_of(&lab::run(b.program(), ifx, &frame(TCP_SYN)))?;
                let again = backend_of(&lab::run(b.program(), ifx, &frame(TCP_ACK)))?;
                moved += usize::from(first != again);
                *per_backend.entry((vip, first)).or_default() += 1;
            }
        }
        println!("\n{FLOWS} TCP connections to each VIP (SYN, then an ACK of the same flow):\n");
        println!(
            "  {:<22} {:<6} {:<24} {:>6} {:>7}",
            "VIP", "encap", "backend", "flows", "share"
        );
        for ((vip, backend), n) in &per_backend {
            let (addr, encap) = if *vip == 1 {
                (format!("{vip4}:80"), "ipip")
            } else {
                (format!("[{vip6}]:80"), "l2")
            };
            println!(
                "  {addr:<22} {encap:<6} {backend:<24} {n:>6} {:>6.1}%",
                100.0 * f64::from(*n) / f64::from(FLOWS)
            );
        }
        println!("\n  established packets that changed backend: {moved}");
        println!("\nbalancer counters (all CPUs):");
        for (o, n) in Outcome::ALL.iter().zip(b.maps.outcomes()?) {
            if n > 0 {
                println!("  {:<20} {n}", o.name());
            }
        }
        for v in &vips {
            let c = b.maps.vip_counters(v.id)?;
            println!(
                "  VIP {:<18} {} packets, {} bytes",
                v.addr.to_string(),
                c.packets,
                c.bytes
            );
        }
        Ok(())
    })?;

    if once {
        return Ok(());
    }
    println!("\nThe balancer's maps stay pinned while this runs. Try, in another terminal:");
    for map in [names::VIPS, names::BACKENDS, names::FLOWS, names::STATS] {
        println!("  bpftool map dump pinned {}/{map}", pins.path.display());
    }
    println!(
        "  ip -n {} neigh show        # the neighbours bpf_fib_lookup resolves backends with",
        lab.ns.name
    );
    println!("\nCtrl-C to stop (the namespace and the pins are removed).");
    while !STOP.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    println!("stopping");
    Ok(())
}

/// Where a forwarded frame goes: the IPIP outer destination, or for L2 DSR
/// the backend's MAC.
fn backend_of((action, out): &(u32, Vec<u8>)) -> Result<String> {
    ensure!(
        *action == XDP_TX,
        "a demo packet was not forwarded (action {action})"
    );
    Ok(match u16::from_be_bytes([out[12], out[13]]) {
        ETH_P_IP if out[23] == 4 => format!(
            "{} (ipip)",
            Ipv4Addr::new(out[30], out[31], out[32], out[33])
        ),
        _ => format!(
            "MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            out[0], out[1], out[2], out[3], out[4], out[5]
        ),
    })
}
