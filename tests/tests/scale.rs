//! Per-VIP Maglev table sizes, through the real reconciler and the real
//! program (`BPF_PROG_TEST_RUN`):
//!
//! - two balancers loaded separately, their maps filled in different
//!   orders (so every VIP's table sits at a different place, under other
//!   ids), send every flow of a 10,000-VIP config of mixed backend counts
//!   to the same backend; and that backend is the one userspace Maglev
//!   picks with the chosen table size (the size is part of the agreement);
//! - a backend change that changes a VIP's table size moves no established
//!   flow, and new flows follow the new table.

use std::net::{IpAddr, Ipv4Addr};

use lb_common::{Encap, FlowKey, PROTO_TCP, hash::flow_hash};
use lb_userspace::{
    desired::{Desired, ServiceSpec, Services},
    maglev::{self, Weighted, addr_bytes},
    vip::Vip,
    xdp::{Balancer, Settings, reconcile::Applied},
};
use xlb_tests::{
    lab::{self, Lab},
    netns::privileged,
    packet::{TCP_ACK, TCP_SYN},
};

const XDP_TX: u32 = 3;

/// (backends per VIP, VIPs with that many): 10,000 VIPs, most small, a
/// few large enough to reach the largest table.
const CLASSES: [(u32, u32); 8] = [
    (1, 2_000),
    (2, 2_000),
    (3, 3_000),
    (5, 1_500),
    (9, 1_000),
    (17, 400),
    (100, 90),
    (600, 10),
];

fn vip_addr(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a63_0000 + i) // 10.99.0.0 + i
}

/// Backends behind the lab's gateway (10.3.0.0/16 is routed there below),
/// so every one is reachable and the frame shows which was picked.
fn backend(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a03_0000 + i % 65_000 + 1))
}

fn spec(first: u32, n: u32) -> ServiceSpec {
    ServiceSpec {
        encap: Encap::Ipip,
        scheduler: "mh".into(),
        backends: std::sync::Arc::new((0..n).map(|b| (backend(first + b), 1)).collect()),
        announce: Default::default(),
        health: None,
        table: Default::default(),
    }
}

/// The lab, with every [`backend`] routed through its gateway.
fn lab() -> Lab {
    let lab = Lab::new();
    lab.ns
        .ip(&["route", "add", "10.3.0.0/16", "via", "10.0.0.254"]);
    lab
}

fn svc(i: u32) -> Vip {
    Vip {
        address: IpAddr::V4(vip_addr(i)),
        port: 80,
        protocol: PROTO_TCP,
    }
}

fn desired(services: Services) -> Desired {
    Desired {
        services,
        ipip_source_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ipip_source_v6: None,
    }
}

/// The 10,000 VIPs, and the class of each.
fn config() -> (Desired, Vec<(u32, Vec<u32>)>) {
    let mut services = Services::new();
    let mut classes = Vec::new();
    let mut i = 0;
    for (n, count) in CLASSES {
        let mut members = Vec::new();
        for _ in 0..count {
            services.insert(svc(i), spec(i * 7, n));
            members.push(i);
            i += 1;
        }
        classes.push((n, members));
    }
    (desired(services), classes)
}

fn settings() -> Settings {
    Settings {
        max_vips: 10_240,
        max_backends: 140_000,
        maglev_slots: 16 << 20,
        flow_table_size: 1 << 20,
        ..Settings::default()
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 32) as u32
    }
}

/// A random client in 198.18.0.0/15 (any address would do for Maglev, but
/// the program rightly drops multicast and other impossible sources).
fn client(rng: &mut Rng) -> Ipv4Addr {
    Ipv4Addr::from(0xc612_0000 | (rng.next() & 0x1_ffff))
}

fn send(b: &Balancer, client: Ipv4Addr, sport: u16, vip: Ipv4Addr, flags: u8) -> IpAddr {
    let frame = lab::tcp_frame(IpAddr::V4(client), sport, IpAddr::V4(vip), 80, flags, &[]);
    let (action, out) = lab::run(b.program(), lab::ifindex("lb0"), &frame);
    assert_eq!(action, XDP_TX, "{client}:{sport} -> {vip}: not forwarded");
    lab::outer_dst(&out)
}

fn key(client: Ipv4Addr, sport: u16, vip: Ipv4Addr) -> FlowKey {
    FlowKey {
        src: addr_bytes(IpAddr::V4(client)),
        dst: addr_bytes(IpAddr::V4(vip)),
        sport,
        dport: 80,
        proto: PROTO_TCP,
        family: lb_common::FAMILY_V4,
        _pad: [0; 2],
    }
}

/// The backend userspace Maglev gives `key` among `spec`'s backends in a
/// table of `m` slots.
fn maglev_pick(spec: &ServiceSpec, key: &FlowKey, m: u32) -> IpAddr {
    let w: Vec<Weighted> = spec
        .backends
        .iter()
        .map(|(a, w)| Weighted {
            addr: *a,
            weight: *w,
        })
        .collect();
    let table = maglev::build(&w, m).unwrap();
    w[table[(flow_hash(key) % m) as usize] as usize].addr
}

#[test]
fn separately_loaded_balancers_agree_at_every_table_size() {
    if !privileged("separately_loaded_balancers_agree_at_every_table_size") {
        return;
    }
    let lab = lab();
    lab.ns.run(|| {
        let (want, classes) = config();
        let s = settings();
        let mut one = Balancer::load(&s).expect("first balancer");
        let mut two = Balancer::load(&s).expect("second balancer");
        lab::register_ifaces(&mut one);
        lab::register_ifaces(&mut two);
        let t = std::time::Instant::now();
        Applied::empty(&s)
            .reconcile(&mut one.maps, &want)
            .expect("first reconcile");
        eprintln!(
            "10,000 VIPs reconciled into empty maps in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        // The second comes to the same state another way: first every VIP
        // with one backend more (other sizes for many), in reverse order of
        // ids, so tables, VIP ids and backend ids all land elsewhere.
        let mut a = Applied::empty(&s);
        let mut first = Services::new();
        for (i, (vip, spec)) in want.services.iter().enumerate().rev() {
            let n = spec.backends.len() as u32 + 1;
            first.insert(*vip, self::spec(i as u32 * 7 + 3, n));
        }
        a.reconcile(&mut two.maps, &desired(first))
            .expect("second balancer, first state");
        a.reconcile(&mut two.maps, &want)
            .expect("second balancer, final state");
        let mut moved = 0;
        for (n, members) in &classes {
            let vip0 = one.maps.vips.get(&svc(members[0]).into(), 0).unwrap();
            let vip0b = two.maps.vips.get(&svc(members[0]).into(), 0).unwrap();
            let m = maglev::table_size(*n as usize, s.maglev_size);
            assert_eq!(
                (vip0.maglev_size, vip0b.maglev_size),
                (m, m),
                "{n} backends: table sizes"
            );
            moved += usize::from(vip0.maglev_start != vip0b.maglev_start);
            let mut rng = Rng(u64::from(*n) * 0x9e37_79b9);
            for f in 0..10_000 {
                let i = members[rng.next() as usize % members.len()];
                let (client, sport) = (client(&mut rng), rng.next() as u16 | 1);
                let vip = vip_addr(i);
                let (a, b) = (
                    send(&one, client, sport, vip, TCP_SYN),
                    send(&two, client, sport, vip, TCP_SYN),
                );
                assert_eq!(
                    a, b,
                    "{n} backends, flow {client}:{sport} -> {vip}: the balancers disagree"
                );
                if f % 100 == 0 {
                    let spec = &want.services[&svc(i)];
                    assert_eq!(
                        a,
                        maglev_pick(spec, &key(client, sport, vip), m),
                        "{n} backends, flow {client}:{sport} -> {vip}: not Maglev's pick"
                    );
                }
            }
        }
        assert!(
            moved >= CLASSES.len() / 2,
            "the two balancers' tables mostly sit at the same places: the test proves little"
        );
    });
}

#[test]
fn a_table_size_change_moves_no_established_flow() {
    if !privileged("a_table_size_change_moves_no_established_flow") {
        return;
    }
    let lab = lab();
    lab.ns.run(|| {
        let s = Settings {
            max_vips: 16,
            max_backends: 64,
            maglev_slots: 4096,
            flow_table_size: 65_536,
            ..Settings::default()
        };
        let mut b = Balancer::load(&s).expect("balancer");
        lab::register_ifaces(&mut b);
        let mut a = Applied::empty(&s);
        let vip = vip_addr(1);
        let state = |n: u32| desired(Services::unit(svc(1), spec(0, n)));
        let size = |b: &Balancer| b.maps.vips.get(&svc(1).into(), 0).unwrap().maglev_size;
        a.reconcile(&mut b.maps, &state(3)).unwrap();
        assert_eq!(size(&b), 307);
        let mut rng = Rng(7);
        let flows: Vec<(Ipv4Addr, u16)> = (0..600)
            .map(|_| (client(&mut rng), rng.next() as u16 | 1))
            .collect();
        let first: Vec<IpAddr> = flows
            .iter()
            .map(|&(c, p)| send(&b, c, p, vip, TCP_SYN))
            .collect();
        // 3 -> 4 backends: 307 -> 401 slots, a new row; then 4 -> 2:
        // 211 slots, a new row again, two backends gone.
        for (n, m) in [(4, 401), (2, 211)] {
            a.reconcile(&mut b.maps, &state(n)).unwrap();
            assert_eq!(size(&b), m, "{n} backends");
            let kept = &state(n).services[&svc(1)];
            for (&(c, p), was) in flows.iter().zip(&first) {
                if kept.backends.contains_key(was) {
                    assert_eq!(
                        send(&b, c, p, vip, TCP_ACK),
                        *was,
                        "{n} backends: established flow {c}:{p} moved"
                    );
                }
            }
            for _ in 0..300 {
                let (c, p) = (client(&mut rng), rng.next() as u16 | 1);
                assert_eq!(
                    send(&b, c, p, vip, TCP_SYN),
                    maglev_pick(kept, &key(c, p, vip), m),
                    "{n} backends: new flow {c}:{p} did not follow the {m}-slot table"
                );
            }
        }
    });
}
