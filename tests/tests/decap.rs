//! The backend-side decapsulator, byte for byte.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::stats::DecapOutcome;
use lb_userspace::xdp::Decapsulator;
use xlb_tests::{
    lab::{self, Lab},
    netns::privileged,
    packet::*,
};

const XDP_PASS: u32 = 2;
const LB_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const BE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x11];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
const LB: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const BE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 0x11);
const LB6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const BE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x11);

fn inner4(dst: Ipv4Addr) -> Vec<u8> {
    let seg = tcp(
        IpAddr::V4(CLIENT),
        IpAddr::V4(dst),
        40_000,
        80,
        TCP_SYN,
        b"hello",
    );
    ipv4(&V4::new(CLIENT, dst, 6), &seg)
}

fn inner6() -> Vec<u8> {
    let seg = tcp(
        IpAddr::V6(CLIENT6),
        IpAddr::V6(VIP6),
        40_000,
        80,
        TCP_SYN,
        b"hello",
    );
    ipv6(&V6::new(CLIENT6, VIP6, 6), &seg)
}

fn ipip4(inner: &[u8]) -> Vec<u8> {
    eth(BE_MAC, LB_MAC, ETH_P_IP, &ipv4(&V4::new(LB, BE, 4), inner))
}

#[test]
fn decap_strips_the_outer_header_for_local_vips_only() {
    if !privileged("decap_strips_the_outer_header_for_local_vips_only") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut d = Decapsulator::load().expect("decap loads through the verifier");
        d.add_vip(IpAddr::V4(VIP)).unwrap();
        d.add_vip(IpAddr::V6(VIP6)).unwrap();
        let ifindex = lab::ifindex("lb0");

        let inner = inner4(VIP);
        let (action, out) = lab::run(d.program(), ifindex, &ipip4(&inner));
        assert_eq!(action, XDP_PASS);
        assert_eq!(
            out,
            eth(BE_MAC, LB_MAC, ETH_P_IP, &inner),
            "v4: not the inner frame byte for byte"
        );

        let inner = inner6();
        let outer = ipv6(&V6::new(LB6, BE6, 41), &inner);
        let (action, out) = lab::run(
            d.program(),
            ifindex,
            &eth(BE_MAC, LB_MAC, ETH_P_IPV6, &outer),
        );
        assert_eq!(action, XDP_PASS);
        assert_eq!(
            out,
            eth(BE_MAC, LB_MAC, ETH_P_IPV6, &inner),
            "v6: not the inner frame byte for byte"
        );

        let tagged = eth_vlan(
            BE_MAC,
            LB_MAC,
            7,
            ETH_P_IP,
            &ipv4(&V4::new(LB, BE, 4), &inner4(VIP)),
        );
        let (_, out) = lab::run(d.program(), ifindex, &tagged);
        assert_eq!(
            out,
            eth_vlan(BE_MAC, LB_MAC, 7, ETH_P_IP, &inner4(VIP)),
            "tagged frame"
        );
        assert_eq!(d.count(DecapOutcome::Decapsulated).unwrap(), 3);

        // Not for a local VIP, not IPIP, truncated inner: untouched.
        for frame in [
            ipip4(&inner4(Ipv4Addr::new(10, 99, 0, 200))),
            eth(BE_MAC, LB_MAC, ETH_P_IP, &inner4(VIP)),
            ipip4(&inner4(VIP)[..12]),
        ] {
            let (action, out) = lab::run(d.program(), ifindex, &frame);
            assert_eq!((action, &out), (XDP_PASS, &frame));
        }
        assert_eq!(d.count(DecapOutcome::Decapsulated).unwrap(), 3);
        assert_eq!(d.count(DecapOutcome::Malformed).unwrap(), 1);
        assert_eq!(d.count(DecapOutcome::Pass).unwrap(), 2);
    });
}
