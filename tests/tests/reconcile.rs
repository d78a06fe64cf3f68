//! Desired-state diffs applied to real maps: the maps end up holding exactly
//! the desired state, and only the entries that had to change were written
//! (checked against a dump of every map before and after, not against the
//! reconciler's own report alone).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use lb_common::{BACKEND_ACTIVE, Backend, Encap, NO_BACKEND, VipKey};
use lb_userspace::{
    desired::{Desired, ServiceSpec},
    maglev::{self, Weighted},
    vip::Vip,
    xdp::{
        Balancer, Maps, Settings,
        reconcile::{Applied, Report, backend_addr},
    },
};
use xlb_tests::{
    dump::{changed, dump},
    lab::Lab,
    netns::privileged,
};

const M: u32 = 251;

fn settings(max_vips: u32, max_backends: u32) -> Settings {
    Settings {
        maglev_size: M,
        maglev_slots: lb_userspace::xdp::loader::default_maglev_slots(max_vips, M),
        max_vips,
        max_backends,
        flow_table_size: 4096,
        ..Settings::default()
    }
}

fn svc(i: u32, port: u16) -> Vip {
    Vip {
        address: IpAddr::V4(Ipv4Addr::from(0x0a63_0000 + i)),
        port,
        protocol: 6,
    }
}

fn be(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))
}

fn spec(encap: Encap, backends: &[(u32, u32)]) -> ServiceSpec {
    ServiceSpec {
        scheduler: "mh".into(),
        encap,
        backends: std::sync::Arc::new(backends.iter().map(|&(b, w)| (be(b), w)).collect()),
        announce: Default::default(),
        health: None,
        table: Default::default(),
    }
}

fn desired(services: Vec<(Vip, ServiceSpec)>) -> Desired {
    Desired {
        services: services.into_iter().collect(),
        ipip_source_v4: Some(Ipv4Addr::new(10, 0, 0, 1)),
        ipip_source_v6: None,
    }
}

/// The maps hold exactly `d`: one VIP entry per service, one active backend
/// entry per (service, backend) with its weight, Maglev rows as Maglev
/// builds them from the weighted backends, nothing else active.
fn assert_holds(m: &Maps, d: &Desired) {
    let dm = dump(m);
    let keys: BTreeSet<VipKey> = d.services.keys().map(|&v| VipKey::from(v)).collect();
    assert_eq!(
        dm.vips.keys().copied().collect::<BTreeSet<_>>(),
        keys,
        "VIP map keys"
    );
    let mut active = 0;
    // Active backend entries by the VIP they serve, gathered once.
    let mut by_vip: BTreeMap<u32, Vec<(u32, Backend)>> = BTreeMap::new();
    for (id, b) in &dm.backends {
        if b.flags & BACKEND_ACTIVE != 0 {
            by_vip.entry(b.vip_id).or_default().push((*id, *b));
        }
    }
    for (s, spec) in &d.services {
        let info = dm.vips[&VipKey::from(*s)];
        assert_eq!(Encap::from_u8(info.encap), Some(spec.encap), "{s}: encap");
        let entries = by_vip.get(&info.vip_id).map_or(&[][..], Vec::as_slice);
        let mine: BTreeMap<IpAddr, (u32, u32)> = entries
            .iter()
            .map(|(id, b)| (backend_addr(b), (*id, b.weight)))
            .collect();
        active += mine.len();
        for (id, b) in entries {
            assert_eq!(b.encap, info.encap, "{s}: backend {id} encap");
            assert_eq!(b.tag, info.tag, "{s}: backend {id} tag");
        }
        assert_ne!(info.tag, 0, "{s}: tag");
        let bit = m.filter.bit(&VipKey::from(*s).addr);
        assert!(m.filter.is_set(bit), "{s}: VIP filter bit {bit} clear");
        let want: lb_userspace::desired::Backends =
            mine.iter().map(|(a, (_, w))| (*a, *w)).collect();
        assert_eq!(want, *spec.backends, "{s}: backends and weights");
        let list: Vec<Weighted> = mine
            .iter()
            .map(|(a, (_, w))| Weighted {
                addr: *a,
                weight: *w,
            })
            .collect();
        let ids: Vec<u32> = mine.values().map(|(id, _)| *id).collect();
        assert_eq!(
            info.maglev_size,
            maglev::table_size(spec.backends.len(), M),
            "{s}: table size"
        );
        let row: Vec<u32> = maglev::build(&list, info.maglev_size)
            .unwrap()
            .iter()
            .map(|&i| {
                if i == maglev::EMPTY {
                    NO_BACKEND
                } else {
                    ids[i as usize]
                }
            })
            .collect();
        assert_eq!(m.read_maglev(&info).unwrap(), row, "{s}: Maglev row");
    }
    let all_active = dm
        .backends
        .values()
        .filter(|b| b.flags & BACKEND_ACTIVE != 0)
        .count();
    assert_eq!(all_active, active, "stray active backend entries");
}

fn step(
    a: &mut Applied,
    b: &mut Balancer,
    d: &Desired,
    want: (usize, usize, usize, usize),
) -> Report {
    let before = dump(&b.maps);
    let r = a.reconcile(&mut b.maps, d).expect("reconcile");
    let after = dump(&b.maps);
    assert_holds(&b.maps, d);
    assert_eq!(
        changed(&before, &after),
        want,
        "(vip, backend, row, config) entries changed; report {r:?}"
    );
    r
}

#[test]
fn diffs_touch_only_what_changed() {
    if !privileged("diffs_touch_only_what_changed") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&settings(16, 256)).expect("load");
        let mut a = Applied::empty(&settings(16, 256));
        let (s1, s2, s3) = (svc(1, 80), svc(2, 80), svc(3, 0));
        let base = vec![
            (s1, spec(Encap::Ipip, &[(11, 1), (12, 1), (13, 1)])),
            (s2, spec(Encap::L2, &[(21, 1), (22, 2)])),
            (s3, spec(Encap::Ipip, &[(31, 1)])),
        ];
        let d = desired(base.clone());
        let r = step(&mut a, &mut b, &d, (3, 6, 3, 1));
        assert_eq!((r.vips_added, r.writes()), (3, 13));
        step(&mut a, &mut b, &d, (0, 0, 0, 0));

        // Remove a backend: its entry retired; two backends take a smaller
        // table (211 slots, not 251), so a new row and the VIP entry
        // pointing at it.
        let mut v = base.clone();
        v[0].1 = spec(Encap::Ipip, &[(11, 1), (13, 1)]);
        let d = desired(v.clone());
        step(&mut a, &mut b, &d, (1, 1, 1, 0));
        // Add one back (a new entry, the larger table again) and reweight
        // another.
        v[0].1 = spec(Encap::Ipip, &[(11, 3), (13, 1), (14, 1)]);
        step(&mut a, &mut b, &desired(v.clone()), (1, 2, 1, 0));
        // Reweight only: the same size, the row rewritten in place.
        v[0].1 = spec(Encap::Ipip, &[(11, 2), (13, 1), (14, 1)]);
        step(&mut a, &mut b, &desired(v.clone()), (0, 1, 1, 0));
        // Drain: weight 0 keeps the entry active, leaves the row.
        v[0].1 = spec(Encap::Ipip, &[(11, 2), (13, 0), (14, 1)]);
        step(&mut a, &mut b, &desired(v.clone()), (0, 1, 1, 0));
        // Encap change: the VIP entry and its two backend entries, which
        // carry the encapsulation for established flows; no row.
        v[1].1.encap = Encap::Ipip;
        step(&mut a, &mut b, &desired(v.clone()), (1, 2, 0, 0));
        // Add a VIP, remove another.
        v.remove(2);
        v.push((svc(4, 443), spec(Encap::L2, &[(41, 1), (42, 1)])));
        assert_eq!(
            b.maps.config().unwrap().flags,
            lb_common::CONFIG_WILDCARDS,
            "a port-0 VIP raises the wildcard flag"
        );
        // (Rows are read through the VIP entries: the gone VIP's row no
        // longer shows, the new one's does.)
        step(&mut a, &mut b, &desired(v.clone()), (2, 3, 2, 1));
        assert_eq!(
            b.maps.config().unwrap().flags,
            0,
            "the last port-0 VIP gone lowers it"
        );
        // A new source address is one config write.
        let mut d = desired(v.clone());
        d.ipip_source_v4 = Some(Ipv4Addr::new(10, 0, 0, 9));
        step(&mut a, &mut b, &d, (0, 0, 0, 1));

        // A restarted daemon reads the same state back and writes nothing.
        let mut adopted = Applied::read(&b.maps, &settings(16, 256)).expect("read back");
        let before = dump(&b.maps);
        let r = adopted.reconcile(&mut b.maps, &d).unwrap();
        assert_eq!((r.writes(), dump(&b.maps)), (0, before));
    });
}

#[test]
fn ten_thousand_vips() {
    if !privileged("ten_thousand_vips") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let n = 10_000u32;
        let mut b = Balancer::load(&settings(n, 3 * n + 1)).expect("load");
        let mut a = Applied::empty(&settings(n, 3 * n + 1));
        let all: Vec<(Vip, ServiceSpec)> = (0..n)
            .map(|i| {
                (
                    svc(i, 80),
                    spec(
                        Encap::Ipip,
                        &[(3 * i + 1, 1), (3 * i + 2, 1), (3 * i + 3, 2)],
                    ),
                )
            })
            .collect();
        let d = desired(all.clone());
        let r = a.reconcile(&mut b.maps, &d).expect("reconcile 10,000 VIPs");
        assert_eq!(
            (r.vips_added, r.vip_writes, r.backend_writes, r.maglev_rows),
            (10_000, 10_000, 30_000, 10_000)
        );
        assert_holds(&b.maps, &d);
        // One backend of one VIP removed among 10,000: two entries written.
        let mut v = all;
        v[5_000].1 = spec(Encap::Ipip, &[(15_001, 1), (15_003, 2)]);
        let before = dump(&b.maps);
        let r = a.reconcile(&mut b.maps, &desired(v.clone())).unwrap();
        // Two backends take a smaller table (211 slots, not 251): a new
        // row, and the VIP entry pointing at it.
        assert_eq!(r.writes(), 3);
        assert_eq!(changed(&before, &dump(&b.maps)), (1, 1, 1, 0));
        assert_holds(&b.maps, &desired(v.clone()));
        // A weight change keeps the size: the row is rewritten in place.
        v[6_000].1 = spec(Encap::Ipip, &[(18_001, 1), (18_002, 1), (18_003, 1)]);
        let before = dump(&b.maps);
        let r = a.reconcile(&mut b.maps, &desired(v.clone())).unwrap();
        assert_eq!(r.writes(), 2);
        assert_eq!(changed(&before, &dump(&b.maps)), (0, 1, 1, 0));
        assert_holds(&b.maps, &desired(v));
    });
}

#[test]
fn full_tables_are_refused_with_the_vip_named() {
    if !privileged("full_tables_are_refused_with_the_vip_named") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&settings(2, 8)).expect("load");
        let mut a = Applied::empty(&settings(2, 8));
        let d = desired(
            (0..3)
                .map(|i| (svc(i, 80), spec(Encap::L2, &[(i, 1)])))
                .collect(),
        );
        let e = a.reconcile(&mut b.maps, &d).unwrap_err().to_string();
        assert!(
            e.contains("10.99.0.2:80/tcp") && e.contains("max_vips 2"),
            "{e}"
        );
        assert_eq!(dump(&b.maps).vips.len(), 2, "the VIPs that fit are in");
        // A table the Maglev array cannot hold refuses that VIP alone: the
        // ones after it still come in.
        let small = Settings {
            maglev_slots: 300,
            ..settings(4, 64)
        };
        let mut a = Applied::empty(&small);
        let mut b = Balancer::load(&small).expect("load");
        let d = desired(vec![
            (svc(0, 80), spec(Encap::L2, &[(1, 1)])),
            (
                svc(1, 80),
                spec(Encap::L2, &[(2, 1), (3, 1), (4, 1), (5, 1), (6, 1)]),
            ),
            (svc(2, 80), spec(Encap::L2, &[(7, 1)])),
        ]);
        let e = a.reconcile(&mut b.maps, &d).unwrap_err().to_string();
        assert!(
            e.contains("1 VIPs left out")
                && e.contains("10.99.0.1:80/tcp")
                && e.contains("251 slots")
                && e.contains("dataplane.maglev_slots"),
            "{e}"
        );
        let vips = dump(&b.maps).vips;
        assert_eq!(vips.len(), 2, "the VIPs before and after it are in");
        assert!(!vips.contains_key(&VipKey::from(svc(1, 80))));
        let d = desired(vec![(
            svc(0, 80),
            spec(Encap::L2, &(1..=9).map(|i| (i, 1)).collect::<Vec<_>>()),
        )]);
        let mut a = Applied::empty(&settings(2, 8));
        let mut b = Balancer::load(&settings(2, 8)).expect("load");
        let e = a.reconcile(&mut b.maps, &d).unwrap_err().to_string();
        assert!(e.contains("max_backends 8"), "{e}");
        assert!(
            dump(&b.maps).vips.is_empty(),
            "a refused VIP must not become reachable"
        );
    });
}

/// A VIP removed leaves nothing its old flows can follow: its filter bit is
/// cleared once no VIP has its address, and when its VIP id and backend id
/// are reused by another VIP on the same address, the old flow entry (still
/// in the table, naming that reused backend) is not honoured: the tag of
/// the VIP's incarnation differs.
#[test]
fn a_removed_vip_leaves_nothing_for_its_flows() {
    use lb_common::{FlowKey, Outcome};
    use xlb_tests::{lab, packet::TCP_SYN};
    const XDP_PASS: u32 = 2;
    if !privileged("a_removed_vip_leaves_nothing_for_its_flows") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        // One VIP id and one backend id (1): every VIP reuses them.
        let mut b = Balancer::load(&settings(1, 2)).expect("load");
        lab::register_ifaces(&mut b);
        let ifx = lab::ifindex("lb0");
        let mut a = Applied::empty(&settings(1, 2));
        let (http, https) = (svc(1, 80), svc(1, 443));
        let client = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let frame = |port| lab::tcp_frame(client, 40_000, http.address, port, TCP_SYN, &[]);
        let send = |b: &Balancer, port| {
            let before = lab::outcomes(b);
            let (action, _) = lab::run(b.program(), ifx, &frame(port));
            (action, lab::delta(&before, &lab::outcomes(b)))
        };
        let bit = b.maps.filter.bit(&VipKey::from(http).addr);

        a.reconcile(
            &mut b.maps,
            &desired(vec![(http, spec(Encap::Ipip, &[(0x11, 1)]))]),
        )
        .expect("reconcile");
        let (action, _) = send(&b, 80);
        assert_ne!(action, XDP_PASS, "the VIP's first packet was not forwarded");
        let key = FlowKey {
            src: lb_userspace::maglev::addr_bytes(client),
            dst: VipKey::from(http).addr,
            sport: 40_000,
            dport: 80,
            proto: 6,
            family: lb_common::FAMILY_V4,
            _pad: [0; 2],
        };
        let old = b.maps.flows.get(&key, 0).expect("flow entry");

        a.reconcile(&mut b.maps, &desired(vec![]))
            .expect("reconcile");
        assert!(!b.maps.filter.is_set(bit), "filter bit left set");
        assert_eq!(send(&b, 80), (XDP_PASS, vec![(Outcome::PassNotVip, 1)]));

        // Same address, another port: the same VIP id and backend id again.
        a.reconcile(
            &mut b.maps,
            &desired(vec![(https, spec(Encap::Ipip, &[(0x12, 1)]))]),
        )
        .expect("reconcile");
        let reused = b.maps.backend(old.backend_id).expect("backend");
        assert_eq!(
            (reused.flags & BACKEND_ACTIVE, reused.vip_id),
            (BACKEND_ACTIVE, old.vip_id),
            "the test needs the old flow's backend id reused by the new VIP"
        );
        assert_ne!(reused.tag, old.tag);
        assert_eq!(b.maps.flows.get(&key, 0).expect("old entry"), old);
        assert_eq!(
            send(&b, 80),
            (XDP_PASS, vec![(Outcome::PassNotVip, 1)]),
            "an old flow followed its entry to another VIP's backend"
        );
        assert_ne!(send(&b, 443).0, XDP_PASS, "the new VIP is not forwarded");

        // Two VIPs share the address's bit: it goes with the last one.
        let mut two = Applied::empty(&settings(2, 8));
        let mut b = Balancer::load(&settings(2, 8)).expect("load");
        let both = vec![
            (http, spec(Encap::Ipip, &[(0x11, 1)])),
            (https, spec(Encap::Ipip, &[(0x12, 1)])),
        ];
        two.reconcile(&mut b.maps, &desired(both.clone()))
            .expect("reconcile");
        two.reconcile(&mut b.maps, &desired(both[1..].to_vec()))
            .expect("reconcile");
        assert!(b.maps.filter.is_set(bit), "bit cleared while a VIP has it");
        two.reconcile(&mut b.maps, &desired(vec![]))
            .expect("reconcile");
        assert!(!b.maps.filter.is_set(bit), "bit left after the last VIP");
    });
}

/// Each desired state derived from the previous one, as the daemon's are
/// (the same persistent map, a few VIPs changed), so reconciles take the
/// diff path; now and then a state built afresh with equal contents, or a
/// new IPIP source, which take the full walk. After every reconcile the
/// maps hold exactly the desired state (`assert_holds`, from a dump of
/// the maps), and a second reconcile of the same state writes nothing.
#[test]
fn derived_states_take_the_diff_and_the_maps_follow() {
    if !privileged("derived_states_take_the_diff_and_the_maps_follow") {
        return;
    }
    // Seeded: the same sequence every run.
    let mut rng = xlb_tests::rng::SplitMix64(0x5eed);
    let mut next = move |n: u64| rng.next_u64() % n;
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&settings(256, 2048)).expect("load");
        let mut a = Applied::empty(&settings(256, 2048));
        let mut d = desired(Vec::new());
        for round in 0..300 {
            match next(20) {
                // Afresh, same contents: no sharing with the last state.
                0 => d = desired(d.services.iter().map(|(k, v)| (*k, v.clone())).collect()),
                1 => {
                    d.ipip_source_v4 = Some(Ipv4Addr::new(10, 0, 0, 1 + next(3) as u8));
                }
                _ => {
                    for _ in 0..1 + next(4) {
                        let vip = svc(next(48) as u32, [80, 443, 0][next(3) as usize]);
                        if next(4) == 0 {
                            d.services.remove(&vip);
                        } else {
                            let encap = if next(3) == 0 { Encap::L2 } else { Encap::Ipip };
                            let backends: Vec<(u32, u32)> = (0..next(6))
                                .map(|_| (next(40) as u32, next(3) as u32))
                                .collect();
                            d.services.insert(vip, spec(encap, &backends));
                        }
                    }
                }
            }
            a.reconcile(&mut b.maps, &d)
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_holds(&b.maps, &d);
            let before = dump(&b.maps);
            let r = a.reconcile(&mut b.maps, &d).unwrap();
            assert_eq!((r.writes(), dump(&b.maps)), (0, before), "round {round}");
        }
    });
}
