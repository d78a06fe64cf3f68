//! Flow-table behaviour: stickiness across backend-set changes, agreement
//! between separately loaded balancers, ICMP errors following the flow
//! table, and RSTs never creating flows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{Backend, Encap, FlowKey, FlowValue, PROTO_TCP, hash::flow_hash};
use lb_userspace::{
    maglev::{self, Weighted, addr_bytes},
    xdp::Balancer,
};
use xlb_tests::{
    lab::{self, CLIENT_MAC, CLIENT_V4, LB0_MAC, Lab, Vip, v4, v6},
    netns::privileged,
    packet::*,
};

const XDP_TX: u32 = 3;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd99, 1, 0, 0, 0, 0, 0, 1);

fn be(n: u8) -> IpAddr {
    v4(10, 0, 0, n)
}

/// A VIP over the lab's three on-link backends (ids 21-23), IPIP.
fn multi(id: u32, addr: IpAddr, backends: &[(u32, IpAddr)]) -> Vip {
    lab::vip(id, addr, 80, PROTO_TCP, Encap::Ipip, backends)
}

fn syn(client: Ipv4Addr, sport: u16, flags: u8) -> Vec<u8> {
    lab::tcp_frame(IpAddr::V4(client), sport, IpAddr::V4(VIP), 80, flags, &[])
}

fn syn6(client: Ipv6Addr, sport: u16) -> Vec<u8> {
    lab::tcp_frame(
        IpAddr::V6(client),
        sport,
        IpAddr::V6(VIP6),
        80,
        TCP_SYN,
        &[],
    )
}

fn send(b: &Balancer, frame: &[u8]) -> IpAddr {
    let (action, out) = lab::run(b.program(), lab::ifindex("lb0"), frame);
    assert_eq!(action, XDP_TX, "frame was not forwarded");
    lab::outer_dst(&out)
}

fn key4(client: Ipv4Addr, sport: u16) -> FlowKey {
    FlowKey {
        src: addr_bytes(IpAddr::V4(client)),
        dst: addr_bytes(IpAddr::V4(VIP)),
        sport,
        dport: 80,
        proto: PROTO_TCP,
        family: lb_common::FAMILY_V4,
        _pad: [0; 2],
    }
}

/// Which backend userspace Maglev says a flow gets.
fn expected(backends: &[(u32, IpAddr)], key: &FlowKey, m: u32) -> IpAddr {
    let w: Vec<Weighted> = backends
        .iter()
        .map(|&(_, a)| Weighted { addr: a, weight: 1 })
        .collect();
    let table = maglev::build(&w, m).unwrap();
    w[table[(flow_hash(key) % m) as usize] as usize].addr
}

fn client(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xc633_6400 + i) // 198.51.100.0 + i
}

#[test]
fn flows_keep_their_backend_when_the_set_changes() {
    if !privileged("flows_keep_their_backend_when_the_set_changes") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&lab::settings()).expect("load");
        let m = b.settings.maglev_size;
        let old = [(21, be(0x11)), (22, be(0x12)), (23, be(0x13))];
        lab::program(&mut b, &[multi(1, IpAddr::V4(VIP), &old)]);
        let flows: Vec<(Ipv4Addr, u16)> = (0..300)
            .map(|i| (client(i % 50), 30_000 + i as u16))
            .collect();
        let first: Vec<IpAddr> = flows
            .iter()
            .map(|&(c, p)| send(&b, &syn(c, p, TCP_SYN)))
            .collect();
        for (&(c, p), got) in flows.iter().zip(&first) {
            assert_eq!(
                *got,
                expected(&old, &key4(c, p), m),
                "flow {c}:{p} did not follow Maglev"
            );
        }
        let on_12 = first.iter().filter(|&&a| a == be(0x12)).count();
        assert!(on_12 > 50, "only {on_12} of 300 flows on backend .0x12");

        // 10.0.0.0x12 leaves the table (drains: still active for its flows)
        // and 10.2.0.5, behind the gateway, joins.
        let new = [(21, be(0x11)), (23, be(0x13)), (24, v4(10, 2, 0, 5))];
        lab::program(&mut b, &[multi(1, IpAddr::V4(VIP), &new)]);
        for (&(c, p), want) in flows.iter().zip(&first) {
            assert_eq!(
                send(&b, &syn(c, p, TCP_ACK)),
                *want,
                "established flow {c}:{p} moved"
            );
        }
        let mut seen_new = 0;
        for i in 0..300u16 {
            let (c, p) = (client(100 + u32::from(i % 50)), 50_000 + i);
            let got = send(&b, &syn(c, p, TCP_SYN));
            assert_eq!(
                got,
                expected(&new, &key4(c, p), m),
                "new flow {c}:{p} ignored the new table"
            );
            assert_ne!(
                got,
                be(0x12),
                "new flow {c}:{p} went to the draining backend"
            );
            seen_new += usize::from(got == v4(10, 2, 0, 5));
        }
        assert!(
            seen_new > 50,
            "only {seen_new} of 300 new flows on the added backend"
        );

        // Removed for good (inactive): its flows are re-hashed onto the table.
        b.maps
            .set_backend(
                22,
                &Backend {
                    addr: addr_bytes(be(0x12)),
                    family: lb_common::FAMILY_V4,
                    flags: 0,
                    encap: Encap::Ipip as u8,
                    _pad: 0,
                    vip_id: 1,
                    weight: 0,
                    tag: lab::tag(1),
                },
            )
            .unwrap();
        for (&(c, p), was) in flows.iter().zip(&first) {
            let now = send(&b, &syn(c, p, TCP_ACK));
            if *was == be(0x12) {
                assert_eq!(
                    now,
                    expected(&new, &key4(c, p), m),
                    "flow of a removed backend not re-hashed"
                );
            } else {
                assert_eq!(now, *was, "flow {c}:{p} moved although its backend stayed");
            }
        }
    });
}

#[test]
fn two_balancers_agree_on_10000_random_flows() {
    if !privileged("two_balancers_agree_on_10000_random_flows") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let backends4 = [(21, be(0x11)), (22, be(0x12)), (23, be(0x13))];
        let fd00 = |h| v6([0xfd00, 0, 0, 0, 0, 0, 0, h]);
        let backends6 = [(31, fd00(0x11)), (32, fd00(0x12)), (33, fd00(0x13))];
        let mut a = Balancer::load(&lab::settings()).expect("load a");
        lab::program(
            &mut a,
            &[
                multi(1, IpAddr::V4(VIP), &backends4),
                multi(2, IpAddr::V6(VIP6), &backends6),
            ],
        );
        // The second node listed its backends in another order and gave
        // them other ids and VIP slots: only addresses may matter.
        let mut b = Balancer::load(&lab::settings()).expect("load b");
        let rev4: Vec<_> = backends4.iter().rev().map(|&(i, a)| (i + 20, a)).collect();
        let rev6: Vec<_> = backends6.iter().rev().map(|&(i, a)| (i + 20, a)).collect();
        lab::program(
            &mut b,
            &[
                multi(7, IpAddr::V6(VIP6), &rev6),
                multi(5, IpAddr::V4(VIP), &rev4),
            ],
        );

        let mut rng = 0x5eed_u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut per_backend = std::collections::HashMap::new();
        for i in 0..10_000 {
            let r = next();
            let frame = if i % 2 == 0 {
                // Clients in 10.0.0.0/8: a random address may be a
                // martian source (0/8, 127/8, 224/4, 240/4), which the
                // balancer drops.
                let client = Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0x00ff_ffff));
                syn(client, (r >> 32) as u16 | 1024, TCP_SYN)
            } else {
                let mut o = [0u8; 16];
                o[..2].copy_from_slice(&[0x20, 0x01]);
                o[8..].copy_from_slice(&r.to_be_bytes());
                syn6(Ipv6Addr::from(o), (r >> 48) as u16 | 1024)
            };
            let (x, y) = (send(&a, &frame), send(&b, &frame));
            assert_eq!(x, y, "flow {i}: node A chose {x}, node B {y}");
            *per_backend.entry(x).or_insert(0u32) += 1;
        }
        assert_eq!(per_backend.len(), 6, "flows reached only {per_backend:?}");
        for (addr, n) in &per_backend {
            assert!((1_300..2_050).contains(n), "{addr} got {n} of ~1667 flows");
        }
    });
}

#[test]
fn icmp_errors_follow_the_flow_table() {
    if !privileged("icmp_errors_follow_the_flow_table") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&lab::settings()).expect("load");
        let m = b.settings.maglev_size;
        let set = [(21, be(0x11)), (22, be(0x12)), (23, be(0x13))];
        lab::program(&mut b, &[multi(1, IpAddr::V4(VIP), &set)]);
        let k = key4(CLIENT_V4, 41_000);
        let maglev_pick = expected(&set, &k, m);
        // Pin the flow to a backend Maglev would not pick, as if the table
        // had changed since the flow began.
        let (owner_id, owner) = *set.iter().find(|(_, a)| *a != maglev_pick).unwrap();
        b.maps
            .flows
            .insert(
                k,
                FlowValue {
                    backend_id: owner_id,
                    vip_id: 1,
                    tag: lab::tag(1),
                },
                0,
            )
            .unwrap();

        let reply = tcp(
            IpAddr::V4(VIP),
            IpAddr::V4(CLIENT_V4),
            80,
            41_000,
            TCP_ACK,
            &[],
        );
        let quoted = ipv4(&V4::new(VIP, CLIENT_V4, 6), &reply);
        let router = Ipv4Addr::new(203, 0, 113, 9);
        let msg = icmp4(3, 4, [0, 0, 0x05, 0x00], &quoted);
        let frame = eth(
            LB0_MAC,
            CLIENT_MAC,
            ETH_P_IP,
            &ipv4(&V4::new(router, VIP, 1), &msg),
        );
        assert_eq!(
            send(&b, &frame),
            owner,
            "ICMP error not sent to the flow's backend"
        );
        assert_eq!(
            b.maps
                .outcome(lb_common::Outcome::IcmpErrorSteered)
                .unwrap(),
            1
        );

        // Without a flow entry it follows Maglev, and creates no entry.
        b.maps.flows.remove(&k).unwrap();
        assert_eq!(send(&b, &frame), maglev_pick);
        assert!(
            b.maps.flows.get(&k, 0).is_err(),
            "an ICMP error created a flow entry"
        );
    });
}

#[test]
fn rst_never_creates_a_flow() {
    if !privileged("rst_never_creates_a_flow") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&lab::settings()).expect("load");
        let set = [(21, be(0x11)), (22, be(0x12))];
        lab::program(&mut b, &[multi(1, IpAddr::V4(VIP), &set)]);
        let k = key4(CLIENT_V4, 42_000);
        let to = send(&b, &syn(CLIENT_V4, 42_000, TCP_RST | TCP_ACK));
        assert!(b.maps.flows.get(&k, 0).is_err(), "RST created a flow entry");
        assert_eq!(
            send(&b, &syn(CLIENT_V4, 42_000, TCP_SYN)),
            to,
            "SYN and RST disagree on the backend"
        );
        let v = b.maps.flows.get(&k, 0).expect("SYN creates the flow entry");
        assert_eq!(
            v,
            FlowValue {
                backend_id: set.iter().find(|(_, a)| *a == to).unwrap().0,
                vip_id: 1,
                tag: lab::tag(1),
            }
        );
        // An active backend id in the table keeps the entry through an RST.
        send(&b, &syn(CLIENT_V4, 42_000, TCP_RST));
        assert!(b.maps.flows.get(&k, 0).is_ok());
    });
}

#[test]
fn per_vip_and_per_backend_counters_count_packets_and_bytes() {
    if !privileged("per_vip_and_per_backend_counters_count_packets_and_bytes") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&lab::settings()).expect("load");
        lab::program(&mut b, &[multi(4, IpAddr::V4(VIP), &[(9, be(0x11))])]);
        let frames: Vec<Vec<u8>> = (0..3)
            .map(|i| syn(CLIENT_V4, 43_000 + i, TCP_SYN))
            .collect();
        for f in &frames {
            send(&b, f);
        }
        // A first fragment to the VIP counts for the VIP, not the backend.
        let mut h = V4::new(CLIENT_V4, VIP, 6);
        h.frag = 0x2000;
        let frag = eth(
            LB0_MAC,
            CLIENT_MAC,
            ETH_P_IP,
            &ipv4(
                &h,
                &tcp(
                    IpAddr::V4(CLIENT_V4),
                    IpAddr::V4(VIP),
                    1,
                    80,
                    TCP_ACK,
                    &[0; 32],
                ),
            ),
        );
        assert_eq!(
            lab::run(b.program(), lab::ifindex("lb0"), &frag).0,
            1,
            "fragment not dropped"
        );
        let sent: u64 = frames.iter().map(|f| f.len() as u64).sum();
        let vip = b.maps.vip_counters(4).unwrap();
        assert_eq!((vip.packets, vip.bytes), (4, sent + frag.len() as u64));
        let be = b.maps.backend_counters(9).unwrap();
        assert_eq!((be.packets, be.bytes), (3, sent));
        assert_eq!(b.maps.outcome(lb_common::Outcome::DropFragment).unwrap(), 1);
    });
}
