//! The packet lab: a namespace whose FIB and neighbour table the balancer's
//! `bpf_fib_lookup` consults, the balancer loaded with a known set of VIPs,
//! and `BPF_PROG_TEST_RUN` to push frames through the real program.
//!
//! ```text
//!   client MAC 02:..:02 ──frames──▶ lb0 (10.0.0.1, fd00::1, MAC 02:..:01) ─┬─ backends 10.0.0.0x11-0x13, fd00::11-13 (static neighbours)
//!                                                                          ├─ gateway 10.0.0.254 / fd00::fe ─▶ 10.2.0.0/24, fd02::/64
//!                                   lb1 (10.1.0.1, fd01::1, MAC 02:..:03) ──┴─ backend 10.1.0.0x21 / fd01::21 (redirect)
//!
//! (IPv4 host parts are written in hex to match the MACs 02:00:00:00:NN:HH.)
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use lb_common::{
    BACKEND_ACTIVE, Backend, Config, Encap, FAMILY_V4, FAMILY_V6, Outcome, PROTO_TCP, PROTO_UDP,
    VipInfo, VipKey,
};
use lb_userspace::{
    maglev::{Weighted, addr_bytes},
    xdp::{Balancer, Settings, slots::Row},
};

use crate::netns::NetNs;

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const LB0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const LB1_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x03];
pub const GATEWAY_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

/// MAC of a backend neighbour: 02:00:00:00:<net>:<host>.
pub const fn backend_mac(net: u8, host: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, net, host]
}

pub const LB0_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const LB0_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
pub const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);

pub fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

pub fn v6(segs: [u16; 8]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(segs))
}

/// The namespace with its interfaces, routes and neighbours.
pub struct Lab {
    pub ns: NetNs,
}

impl Lab {
    pub fn new() -> Self {
        let ns = NetNs::new();
        for (lb, peer, mac, v4, v6) in [
            (
                "lb0",
                "peer0",
                "02:00:00:00:00:01",
                "10.0.0.1/24",
                "fd00::1/64",
            ),
            (
                "lb1",
                "peer1",
                "02:00:00:00:00:03",
                "10.1.0.1/24",
                "fd01::1/64",
            ),
        ] {
            ns.ip(&["link", "add", lb, "type", "veth", "peer", "name", peer]);
            ns.ip(&["link", "set", lb, "address", mac]);
            ns.ip(&["addr", "add", v4, "dev", lb]);
            ns.ip(&["addr", "add", v6, "dev", lb, "nodad"]);
            ns.ip(&["link", "set", lb, "up"]);
            ns.ip(&["link", "set", peer, "up"]);
        }
        let neigh = |addr: &str, mac: &str, dev: &str| {
            ns.ip(&[
                "neigh",
                "replace",
                addr,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        };
        for host in [0x11u8, 0x12, 0x13] {
            let mac = format!("02:00:00:00:00:{host:02x}");
            neigh(&Ipv4Addr::new(10, 0, 0, host).to_string(), &mac, "lb0");
            neigh(&format!("fd00::{host:x}"), &mac, "lb0");
        }
        neigh("10.0.0.254", "02:00:00:00:00:fe", "lb0");
        neigh("fd00::fe", "02:00:00:00:00:fe", "lb0");
        neigh(
            &Ipv4Addr::new(10, 1, 0, 0x21).to_string(),
            "02:00:00:00:01:21",
            "lb1",
        );
        neigh("fd01::21", "02:00:00:00:01:21", "lb1");
        ns.ip(&["route", "add", "10.2.0.0/24", "via", "10.0.0.254"]);
        ns.ip(&["-6", "route", "add", "fd02::/64", "via", "fd00::fe"]);
        ns.sysctl("net.ipv4.ip_forward", "1");
        ns.sysctl("net.ipv6.conf.all.forwarding", "1");
        Self { ns }
    }
}

impl Default for Lab {
    fn default() -> Self {
        Self::new()
    }
}

pub fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("interface name");
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(i, 0, "no interface {name} in this namespace");
    i
}

/// Runs one frame through the program as if received on `ifindex`.
/// Returns the XDP action and the frame as the program left it.
pub fn run(prog: &Xdp, ifindex: u32, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; 4096];
    let ctx = xdp_md(ifindex, frame.len());
    let r = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })
        .unwrap_or_else(|e| {
            // Before 5.14 the kernel takes no xdp_md for an XDP test run
            // and refuses every call with EINVAL (Debian 11's 5.10 does).
            panic!(
                "BPF_PROG_TEST_RUN ({} bytes): {e} (an xdp_md context needs Linux 5.14 or later)",
                frame.len()
            )
        });
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// The backend an IPIP-encapsulated frame was sent to (its outer
/// destination).
pub fn outer_dst(frame: &[u8]) -> IpAddr {
    use crate::packet::{ETH_P_IP, ETH_P_IPV6};
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_IP => IpAddr::V4(Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33])),
        ETH_P_IPV6 => IpAddr::V6(std::net::Ipv6Addr::from(
            <[u8; 16]>::try_from(&frame[38..54]).expect("an IPv6 header"),
        )),
        t => panic!("not an IP frame: ethertype {t:#x}"),
    }
}

/// `struct xdp_md` for BPF_PROG_TEST_RUN: data 0, data_end = len, no
/// metadata, the receiving interface, queue 0.
pub fn xdp_md(ifindex: u32, len: usize) -> [u8; 24] {
    let mut c = [0u8; 24];
    c[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    c[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    c
}

/// A VIP of the lab configuration.
#[derive(Clone, Debug)]
pub struct Vip {
    pub id: u32,
    pub addr: IpAddr,
    pub port: u16,
    pub proto: u8,
    pub encap: Encap,
    /// (backend id, address, weight)
    pub backends: Vec<(u32, IpAddr, u32)>,
}

impl Vip {
    pub fn key(&self) -> VipKey {
        VipKey {
            addr: addr_bytes(self.addr),
            port: self.port,
            proto: self.proto,
            family: family(self.addr),
        }
    }
}

pub fn family(a: IpAddr) -> u8 {
    if a.is_ipv4() { FAMILY_V4 } else { FAMILY_V6 }
}

/// Registers the lab's interfaces that exist in the current namespace
/// (lb0, lb1) with their MACs, as the daemon does when it attaches: the
/// program balances only frames addressed to the receiving interface.
pub fn register_ifaces(b: &mut Balancer) {
    for (name, mac) in [("lb0", LB0_MAC), ("lb1", LB1_MAC)] {
        let c = std::ffi::CString::new(name).expect("interface name");
        let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
        if index != 0 {
            b.maps.set_iface(index, mac).expect("interface map");
        }
    }
}

/// Writes VIPs (with their backends and Maglev rows) and the global config,
/// and registers the lab's interfaces.
pub fn program(b: &mut Balancer, vips: &[Vip]) {
    register_ifaces(b);
    b.maps
        .set_config(&Config {
            ipip_src_v4: addr_bytes(IpAddr::V4(LB0_V4)),
            ipip_src_v6: LB0_V6.octets(),
            layout: lb_common::LAYOUT_VERSION,
            flags: if vips.iter().any(|v| v.port == 0) {
                lb_common::CONFIG_WILDCARDS
            } else {
                0
            },
        })
        .expect("config");
    for vip in vips {
        let mut weighted = Vec::new();
        for &(id, addr, weight) in &vip.backends {
            b.maps
                .set_backend(
                    id,
                    &Backend {
                        addr: addr_bytes(addr),
                        family: family(addr),
                        flags: BACKEND_ACTIVE,
                        encap: vip.encap as u8,
                        _pad: 0,
                        vip_id: vip.id,
                        weight,
                        tag: tag(vip.id),
                    },
                )
                .expect("backend");
            weighted.push((id, Weighted { addr, weight }));
        }
        let row = row(b, vip.id);
        b.maps.program_maglev(row, &weighted).expect("maglev row");
        b.maps
            .set_vip(
                &vip.key(),
                &VipInfo {
                    vip_id: vip.id,
                    encap: vip.encap as u8,
                    _pad: [0; 3],
                    tag: tag(vip.id),
                    maglev_start: row.start,
                    maglev_size: row.size,
                },
            )
            .expect("vip");
    }
}

/// Claims the lab's first VIP addresses (10.99.0.1 and fd99::1) on every
/// interface, with a heartbeat that stays fresh for an hour: the owned
/// map's writer, as the announcer is in the daemon.
pub fn claim_owned(b: &mut Balancer) -> lb_userspace::xdp::Claims {
    let mut c = lb_userspace::xdp::Claims::take(&mut b.ebpf).expect("claims maps");
    c.claim(v4(10, 99, 0, 1), 0).expect("claim v4");
    c.claim(v6([0xfd99, 0, 0, 0, 0, 0, 0, 1]), 0)
        .expect("claim v6");
    c.beat(std::time::Duration::from_secs(3600))
        .expect("heartbeat");
    c
}

/// The lab's tag for VIP `id` (`Backend::tag`): one incarnation per id, so
/// programming a VIP again keeps its flows, as the daemon does.
pub fn tag(vip_id: u32) -> u32 {
    vip_id + 1
}

/// The lab's VIPs all have tables of the largest size (the default,
/// 65,537 slots unless a test sets another), VIP `id`'s from slot `id * M`.
pub fn row(b: &Balancer, vip_id: u32) -> Row {
    let size = b.settings.maglev_size;
    Row {
        start: vip_id * size,
        size,
    }
}

/// Settings used by the lab: the default table size, a small VIP array,
/// and a Maglev array holding a largest table for each.
pub fn settings() -> Settings {
    Settings {
        maglev_slots: 32 * lb_common::DEFAULT_MAGLEV_SIZE,
        max_vips: 32,
        max_backends: 64,
        flow_table_size: 65_536,
        ..Settings::default()
    }
}

pub fn vip(
    id: u32,
    addr: IpAddr,
    port: u16,
    proto: u8,
    encap: Encap,
    backends: &[(u32, IpAddr)],
) -> Vip {
    Vip {
        id,
        addr,
        port,
        proto,
        encap,
        backends: backends.iter().map(|&(i, a)| (i, a, 1)).collect(),
    }
}

/// The packet tests' configuration; every VIP exercises one path.
pub fn standard_vips() -> Vec<Vip> {
    use Encap::{Ipip, L2};
    let fd00 = |h: u16| v6([0xfd00, 0, 0, 0, 0, 0, 0, h]);
    let fd99 = |h: u16| v6([0xfd99, 0, 0, 0, 0, 0, 0, h]);
    vec![
        vip(
            1,
            v4(10, 99, 0, 1),
            80,
            PROTO_TCP,
            Ipip,
            &[(1, v4(10, 0, 0, 0x11))],
        ),
        vip(
            2,
            v4(10, 99, 0, 1),
            53,
            PROTO_UDP,
            L2,
            &[(2, v4(10, 0, 0, 0x12))],
        ),
        vip(
            3,
            v4(10, 99, 0, 2),
            0,
            PROTO_TCP,
            Ipip,
            &[(3, v4(10, 0, 0, 0x13))],
        ),
        vip(
            4,
            v4(10, 99, 0, 2),
            0,
            PROTO_UDP,
            Ipip,
            &[(16, v4(10, 0, 0, 0x13))],
        ),
        vip(5, fd99(1), 80, PROTO_TCP, Ipip, &[(4, fd00(0x11))]),
        vip(6, fd99(1), 53, PROTO_UDP, L2, &[(5, fd00(0x12))]),
        vip(
            7,
            v4(10, 99, 0, 3),
            80,
            PROTO_TCP,
            Ipip,
            &[(6, v4(10, 1, 0, 0x21))],
        ),
        vip(
            8,
            v4(10, 99, 0, 4),
            80,
            PROTO_TCP,
            L2,
            &[(7, v4(10, 2, 0, 5))],
        ),
        vip(
            9,
            v4(10, 99, 0, 5),
            80,
            PROTO_TCP,
            Ipip,
            &[(8, v4(192, 0, 2, 50))],
        ),
        vip(
            10,
            v4(10, 99, 0, 6),
            80,
            PROTO_TCP,
            Ipip,
            &[(9, v4(10, 0, 0, 77))],
        ),
        vip(11, v4(10, 99, 0, 7), 80, PROTO_TCP, Ipip, &[]),
        vip(
            12,
            v4(10, 99, 0, 8),
            80,
            PROTO_TCP,
            Ipip,
            &[(10, fd00(0x13))],
        ),
        vip(
            13,
            v4(10, 99, 0, 9),
            80,
            PROTO_TCP,
            Ipip,
            &[(17, v4(10, 2, 0, 5))],
        ),
        vip(
            14,
            fd99(3),
            80,
            PROTO_TCP,
            Ipip,
            &[(11, v6([0xfd01, 0, 0, 0, 0, 0, 0, 0x21]))],
        ),
        vip(15, fd99(2), 0, PROTO_TCP, Ipip, &[(12, fd00(0x12))]),
    ]
}

/// Sum of the global outcome counters, read from the maps.
pub fn outcomes(b: &Balancer) -> Vec<u64> {
    b.maps.outcomes().expect("read outcome counters")
}

pub fn delta(before: &[u64], after: &[u64]) -> Vec<(Outcome, u64)> {
    Outcome::ALL
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|(o, (b, a))| (*o, a - b))
        .collect()
}

/// A client's TCP segment to `dst:dport` as it arrives on lb0 (IPv4 or
/// IPv6 by the addresses' family; default header fields).
pub fn tcp_frame(
    src: IpAddr,
    sport: u16,
    dst: IpAddr,
    dport: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    use crate::packet::{ETH_P_IP, ETH_P_IPV6, V4, V6, eth, ipv4, ipv6, tcp};
    let seg = tcp(src, dst, sport, dport, flags, payload);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth(
            LB0_MAC,
            CLIENT_MAC,
            ETH_P_IP,
            &ipv4(&V4::new(s, d, 6), &seg),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth(
            LB0_MAC,
            CLIENT_MAC,
            ETH_P_IPV6,
            &ipv6(&V6::new(s, d, 6), &seg),
        ),
        _ => panic!("tcp_frame: {src} and {dst} are of different families"),
    }
}

/// A client's UDP datagram to `dst:dport` as it arrives on lb0.
pub fn udp_frame(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Vec<u8> {
    use crate::packet::{ETH_P_IP, ETH_P_IPV6, V4, V6, eth, ipv4, ipv6, udp};
    let dgram = udp(src, dst, sport, dport, payload);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth(
            LB0_MAC,
            CLIENT_MAC,
            ETH_P_IP,
            &ipv4(&V4::new(s, d, PROTO_UDP), &dgram),
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth(
            LB0_MAC,
            CLIENT_MAC,
            ETH_P_IPV6,
            &ipv6(&V6::new(s, d, PROTO_UDP), &dgram),
        ),
        _ => panic!("udp_frame: {src} and {dst} are of different families"),
    }
}
