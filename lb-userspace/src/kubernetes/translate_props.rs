//! Property tests of the incremental translation: random sequences of
//! Service, EndpointSlice, Node, status and config-file changes (seeded,
//! reproducible), where after every settle the incremental [`Translator`]
//! must equal a translation of the same objects from scratch, and the
//! outcome must keep invariants checked here without the translator's
//! code: no VIP served twice, no pool address given to two Services, the
//! config file's VIPs never served from a Service, every Service of ours
//! either served or refused, backends only from its own slices. And two
//! translators told the same final objects in different orders (with
//! settles in between) end equal.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use lb_common::Encap;
use serde_json::{Value, json};

use super::{
    objects::{self, ObjKey, ServiceInfo, SliceInfo, key_of},
    pools::Pools,
    translate::{Outcome, Settings, Translator, translate},
};
use crate::{
    config::{AddressPool, BackendTarget},
    vip::Vip,
};

/// splitmix64: small, seeded, good enough to pick test cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, from: &'a [T]) -> &'a T {
        &from[self.below(from.len())]
    }
}

const POOL_V4: [&str; 4] = ["10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4"];
const POOL_V6: [&str; 2] = ["fd09::1", "fd09::2"];
const NAMES: [&str; 7] = ["a", "b", "c", "d", "e", "f", "g"];
const NAMESPACES: [&str; 2] = ["default", "team"];
const NODES: [&str; 3] = ["n1", "n2", "n3"];

fn settings(target: BackendTarget) -> Settings {
    Settings {
        class: "xlb.io/xlb".into(),
        announce: crate::config::AnnounceMode::None,
        service_modes: crate::config::Announce::default().service_modes,
        include_unclassed: false,
        target,
        pools: Pools::new(vec![
            AddressPool {
                first: POOL_V4[0].parse().unwrap(),
                last: POOL_V4[3].parse().unwrap(),
                announce: None,
            },
            AddressPool {
                first: POOL_V6[0].parse().unwrap(),
                last: POOL_V6[1].parse().unwrap(),
                announce: None,
            },
        ]),
        encap: Encap::Ipip,
        scheduler: "mh".into(),
        // An IPv4 source only: IPv6 Services asking for a check through
        // the data plane are refused.
        health: crate::config::Health {
            source_v4: Some(std::net::Ipv4Addr::new(10, 0, 0, 254)),
            ..crate::config::Health::default()
        },
    }
}

/// Addresses a Service may name or hold: in the pools, outside, invalid.
fn some_address(r: &mut Rng) -> String {
    (*r.pick(&[
        "10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.9", "fd09::1", "fd09::2",
        "fd09::9", "10.8.0.1", "bogus",
    ]))
    .to_owned()
}

fn random_service(r: &mut Rng, ns: &str, name: &str) -> Service {
    let ports: Vec<Value> = (0..1 + r.below(3))
        .map(|_| {
            let (port, proto) = *r.pick(&[(80, "TCP"), (443, "TCP"), (53, "UDP"), (9, "SCTP")]);
            json!({
                "name": *r.pick(&["http", "web", "dns", ""]),
                "port": port,
                "protocol": proto,
                "targetPort": 8080
            })
        })
        .collect();
    let families: Value = match r.below(4) {
        0 => json!(["IPv6"]),
        1 => json!(["IPv4", "IPv6"]),
        2 => json!(["IPv6", "IPv4"]),
        _ => json!(["IPv4"]),
    };
    let mut annotations = serde_json::Map::new();
    if r.chance(20) {
        let v = if r.chance(30) {
            format!("{},{}", some_address(r), some_address(r))
        } else {
            some_address(r)
        };
        annotations.insert("xlb.io/vip".into(), v.into());
    }
    if r.chance(15) {
        annotations.insert(
            "xlb.io/encap".into(),
            (*r.pick(&["ipip", "l2", "gre"])).into(),
        );
    }
    // Settings have an IPv4 probe source only: IPv6 Services with a check
    // are refused, and so are bad kinds and paths.
    if r.chance(15) {
        annotations.insert(
            "xlb.io/health-check".into(),
            (*r.pick(&["tcp", "http", "none", "ping"])).into(),
        );
    }
    if r.chance(10) {
        annotations.insert(
            "xlb.io/health-check-path".into(),
            (*r.pick(&["/healthz", "healthz"])).into(),
        );
    }
    let mut spec = json!({
        "type": *r.pick(&["LoadBalancer", "LoadBalancer", "LoadBalancer", "ClusterIP"]),
        "ports": ports,
        "ipFamilies": families,
        "ipFamilyPolicy": *r.pick(&["SingleStack", "PreferDualStack", "RequireDualStack"]),
    });
    match r.below(10) {
        0 => {}
        1 => spec["loadBalancerClass"] = "other.io/lb".into(),
        _ => spec["loadBalancerClass"] = "xlb.io/xlb".into(),
    }
    if r.chance(10) {
        spec["loadBalancerIP"] = some_address(r).into();
    }
    let ingress: Vec<Value> = (0..r.below(3))
        .map(|_| json!({ "ip": some_address(r), "ipMode": "VIP" }))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "uid": format!("uid-{ns}-{name}-{}", r.below(2)),
            // Ties on purpose: the name breaks them.
            "creationTimestamp": format!("2026-01-01T00:00:0{}Z", r.below(4)),
            "annotations": annotations,
        },
        "spec": spec,
        "status": { "loadBalancer": { "ingress": ingress } }
    }))
    .unwrap()
}

fn random_slice(r: &mut Rng, ns: &str, name: &str) -> EndpointSlice {
    let v4 = r.chance(60);
    let endpoints: Vec<Value> = (0..r.below(4))
        .map(|_| {
            let host = 1 + r.below(5);
            let address = if v4 {
                format!("10.1.0.{host}")
            } else {
                format!("fd01::{host}")
            };
            let (ready, serving, terminating) = *r.pick(&[
                (true, true, false),
                (false, true, true),
                (false, false, false),
            ]);
            let mut e = json!({
                "addresses": [address],
                "nodeName": *r.pick(&NODES),
                "conditions": { "ready": ready, "serving": serving, "terminating": terminating }
            });
            if r.chance(10) {
                e["conditions"] = json!({});
            }
            e
        })
        .collect();
    let ports: Vec<Value> = (0..1 + r.below(2))
        .map(|_| {
            json!({
                "name": *r.pick(&["http", "web", "dns", ""]),
                "port": 8080,
                "protocol": *r.pick(&["TCP", "UDP"])
            })
        })
        .collect();
    // The Service it belongs to may change: a slice moves.
    let service = *r.pick(&NAMES);
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": { "kubernetes.io/service-name": service }
        },
        "addressType": if v4 { "IPv4" } else { "IPv6" },
        "ports": ports,
        "endpoints": endpoints
    }))
    .unwrap()
}

fn random_node(r: &mut Rng, name: &str) -> Node {
    let mut addresses = vec![json!({ "type": "Hostname", "address": name })];
    if r.chance(80) {
        addresses
            .push(json!({ "type": "InternalIP", "address": format!("10.2.0.{}", 1 + r.below(4)) }));
    }
    if r.chance(50) {
        addresses
            .push(json!({ "type": "InternalIP", "address": format!("fd02::{}", 1 + r.below(4)) }));
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": name },
        "status": { "addresses": addresses }
    }))
    .unwrap()
}

/// The objects as an API server would hold them.
#[derive(Clone, Default)]
struct Cluster {
    services: BTreeMap<ObjKey, Service>,
    slices: BTreeMap<ObjKey, EndpointSlice>,
    nodes: BTreeMap<String, Node>,
    statics: BTreeSet<Vip>,
}

impl Cluster {
    fn translated(&self, s: &Settings) -> Outcome {
        let arcs = |v: Vec<Service>| v.into_iter().map(Arc::new).collect::<Vec<_>>();
        translate(
            &arcs(self.services.values().cloned().collect()),
            &self
                .slices
                .values()
                .cloned()
                .map(Arc::new)
                .collect::<Vec<_>>(),
            &self
                .nodes
                .values()
                .cloned()
                .map(Arc::new)
                .collect::<Vec<_>>(),
            &self.statics,
            s,
        )
    }
}

/// One change, as the watches would report it.
#[derive(Clone)]
enum Step {
    Service(ObjKey, Option<Box<Service>>),
    Slice(ObjKey, Option<Box<EndpointSlice>>),
    Node(String, Option<Box<Node>>),
    Statics(BTreeSet<Vip>),
}

fn tell(t: &mut Translator, c: &mut Cluster, step: Step) {
    let class = t.settings().class();
    match step {
        Step::Service(k, svc) => {
            t.service(
                k.clone(),
                svc.as_ref().and_then(|s| ServiceInfo::of(s, &class)),
            );
            match svc {
                Some(s) => c.services.insert(k, *s),
                None => c.services.remove(&k),
            };
        }
        Step::Slice(k, sl) => {
            t.slice(k.clone(), sl.as_deref().and_then(SliceInfo::of));
            match sl {
                Some(s) => c.slices.insert(k, *s),
                None => c.slices.remove(&k),
            };
        }
        Step::Node(n, node) => {
            t.node(n.clone(), node.as_deref().map(objects::node_addresses));
            match node {
                Some(x) => c.nodes.insert(n, *x),
                None => c.nodes.remove(&n),
            };
        }
        Step::Statics(s) => {
            t.set_statics(s.clone());
            c.statics = s;
        }
    }
}

fn random_step(r: &mut Rng, c: &Cluster, last: &Outcome) -> Step {
    let key = |r: &mut Rng| ObjKey {
        namespace: (*r.pick(&NAMESPACES)).into(),
        name: (*r.pick(&NAMES)).into(),
    };
    match r.below(100) {
        0..25 => {
            let k = key(r);
            Step::Service(
                k.clone(),
                Some(Box::new(random_service(r, &k.namespace, &k.name))),
            )
        }
        25..32 => Step::Service(key(r), None),
        32..60 => {
            let k = ObjKey {
                name: format!("{}-{}", r.pick(&NAMES), r.below(2)).into(),
                ..key(r)
            };
            Step::Slice(
                k.clone(),
                Some(Box::new(random_slice(r, &k.namespace, &k.name))),
            )
        }
        60..66 => match c.slices.keys().nth(r.below(c.slices.len().max(1))) {
            Some(k) => Step::Slice(k.clone(), None),
            None => Step::Statics(c.statics.clone()),
        },
        66..72 => {
            let n = (*r.pick(&NODES)).to_owned();
            let node = (!r.chance(20)).then(|| Box::new(random_node(r, &n)));
            Step::Node(n, node)
        }
        72..76 => {
            let statics = (0..r.below(3))
                .map(|_| Vip {
                    address: some_address(r)
                        .parse()
                        .unwrap_or(IpAddr::from([10, 9, 0, 2])),
                    port: *r.pick(&[80, 443]),
                    protocol: lb_common::PROTO_TCP,
                })
                .collect();
            Step::Statics(statics)
        }
        // The status writer: one pending status written back, as the
        // watch brings it (the commonest event of a settling cluster).
        _ => {
            // (The outcome may predate the latest changes.)
            let pending: Vec<(&ObjKey, &Vec<IpAddr>)> = last
                .statuses
                .iter()
                .filter(|(k, _)| c.services.contains_key(*k))
                .collect();
            if pending.is_empty() {
                let k = key(r);
                return Step::Service(
                    k.clone(),
                    Some(Box::new(random_service(r, &k.namespace, &k.name))),
                );
            }
            let (k, want) = pending[r.below(pending.len())];
            let mut svc = c.services[k].clone();
            let ingress: Vec<Value> = want
                .iter()
                .map(|a| json!({ "ip": a.to_string(), "ipMode": "VIP" }))
                .collect();
            let status = json!({ "loadBalancer": { "ingress": ingress } });
            svc.status = Some(serde_json::from_value(status).unwrap());
            Step::Service(k.clone(), Some(Box::new(svc)))
        }
    }
}

/// What must hold of any outcome, checked from the objects alone.
fn invariants(o: &Outcome, c: &Cluster, s: &Settings, ctx: &str) {
    let class = s.class();
    let ours: BTreeSet<ObjKey> = c
        .services
        .iter()
        .filter(|(_, svc)| ServiceInfo::of(svc, &class).is_some())
        .map(|(k, _)| k.clone())
        .collect();
    let refused: BTreeSet<&ObjKey> = o.refusals.iter().map(|r| &r.service).collect();
    for k in &ours {
        assert!(
            o.addresses.contains_key(k) || refused.contains(k),
            "{ctx}: {k} is ours but neither served nor refused"
        );
    }
    let mut pool_owner: HashMap<IpAddr, &ObjKey> = HashMap::new();
    let mut vip_owner: HashMap<Vip, &ObjKey> = HashMap::new();
    for (k, addrs) in o.addresses.iter() {
        assert!(ours.contains(k), "{ctx}: {k} served but not ours");
        let svc = &c.services[k];
        let explicit = svc
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("xlb.io/vip"))
            || svc
                .spec
                .as_ref()
                .and_then(|s| s.load_balancer_ip.as_deref())
                .is_some_and(|ip| !ip.is_empty());
        for a in addrs {
            if !explicit {
                assert!(s.pools.contains(*a), "{ctx}: {k} got {a} outside the pools");
                if let Some(other) = pool_owner.insert(*a, k) {
                    panic!("{ctx}: pool address {a} given to {other} and {k}");
                }
            }
        }
        let ports = svc
            .spec
            .as_ref()
            .and_then(|s| s.ports.clone())
            .unwrap_or_default();
        for a in addrs {
            for p in &ports {
                let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                    "TCP" => lb_common::PROTO_TCP,
                    "UDP" => lb_common::PROTO_UDP,
                    _ => continue,
                };
                let vip = Vip {
                    address: *a,
                    port: p.port as u16,
                    protocol: proto,
                };
                assert!(
                    !c.statics.contains(&vip),
                    "{ctx}: {vip} of the config file served for {k}"
                );
                assert!(
                    o.services.contains_key(&vip),
                    "{ctx}: {vip} of {k} not served"
                );
                if let Some(other) = vip_owner.insert(vip, k) {
                    assert_eq!(other, k, "{ctx}: {vip} served for {other} and {k}");
                }
            }
        }
    }
    assert_eq!(
        vip_owner.len(),
        o.services.len(),
        "{ctx}: a VIP served for no Service"
    );
    // Backends: only addresses (pod target) of slices labelled with the
    // VIP's Service, of the VIP's family.
    if s.target == BackendTarget::Pod {
        for (vip, spec) in &o.services {
            let owner = vip_owner[vip];
            let possible: BTreeSet<IpAddr> = c
                .slices
                .values()
                .filter(|sl| {
                    key_of(&sl.metadata).namespace == owner.namespace
                        && sl
                            .metadata
                            .labels
                            .as_ref()
                            .and_then(|l| l.get("kubernetes.io/service-name"))
                            .map(String::as_str)
                            == Some(&*owner.name)
                })
                .flat_map(|sl| sl.endpoints.iter())
                .filter_map(|e| e.addresses.first()?.parse().ok())
                .collect();
            for b in spec.backends.keys() {
                assert!(
                    possible.contains(b),
                    "{ctx}: {b} of {vip} is not an endpoint of {owner}"
                );
                assert_eq!(
                    b.is_ipv4(),
                    vip.address.is_ipv4(),
                    "{ctx}: {b} serves {vip}"
                );
            }
        }
    }
    // A status to write only where the status differs from it.
    for (k, want) in o.statuses.iter() {
        let have = objects::ingress_ips(&c.services[k]);
        assert_ne!(&have, want, "{ctx}: status of {k} pending though written");
    }
}

fn run(seed: u64, steps: usize, target: BackendTarget) {
    let s = settings(target);
    let mut r = Rng(seed);
    let mut t = Translator::new(s.clone());
    let mut c = Cluster::default();
    t.settle();
    for i in 0..steps {
        let step = random_step(&mut r, &c, t.outcome());
        tell(&mut t, &mut c, step);
        // Sometimes several changes arrive before the translator runs.
        if r.chance(70) {
            t.settle();
            let ctx = format!("seed {seed} step {i}");
            let full = c.translated(&s);
            let o = t.outcome();
            assert_eq!(o.addresses, full.addresses, "{ctx}: addresses differ");
            assert_eq!(o.refusals, full.refusals, "{ctx}: refusals differ");
            assert_eq!(o.statuses, full.statuses, "{ctx}: statuses differ");
            assert_eq!(o.services, full.services, "{ctx}: services differ");
            invariants(&full, &c, &s, &ctx);
        }
    }
}

#[test]
fn incremental_equals_full_translation_for_random_event_sequences() {
    for seed in 0..24 {
        run(seed, 600, BackendTarget::Pod);
    }
}

#[test]
fn incremental_equals_full_translation_with_node_targets() {
    for seed in 100..108 {
        run(seed, 600, BackendTarget::Node);
    }
}

#[test]
fn the_same_objects_in_any_order_give_the_same_vips() {
    let s = settings(BackendTarget::Pod);
    for seed in 0..40u64 {
        let mut r = Rng(1000 + seed);
        // A cluster reached by random changes (statuses written back).
        let mut t = Translator::new(s.clone());
        let mut c = Cluster::default();
        for _ in 0..80 {
            let step = random_step(&mut r, &c, t.outcome());
            tell(&mut t, &mut c, step);
            t.settle();
        }
        let mut steps: Vec<Step> = c
            .services
            .iter()
            .map(|(k, v)| Step::Service(k.clone(), Some(Box::new(v.clone()))))
            .chain(
                c.slices
                    .iter()
                    .map(|(k, v)| Step::Slice(k.clone(), Some(Box::new(v.clone())))),
            )
            .chain([Step::Statics(c.statics.clone())])
            .collect();
        let mut outcomes = Vec::new();
        for order in 0..3 {
            // Fisher-Yates, a different order each time.
            for i in (1..steps.len()).rev() {
                steps.swap(i, r.below(i + 1));
            }
            let mut u = Translator::new(s.clone());
            let mut scratch = Cluster::default();
            for step in &steps {
                tell(&mut u, &mut scratch, step.clone());
                if r.chance(30) {
                    u.settle();
                }
            }
            u.settle();
            let o = u.outcome().clone();
            assert_eq!(
                o.addresses,
                t.outcome().addresses,
                "seed {seed} order {order}: other VIPs"
            );
            outcomes.push(o);
        }
        assert!(outcomes.windows(2).all(|w| w[0] == w[1]), "seed {seed}");
    }
}

/// Not a test: `cargo test --release -p lb-userspace --lib scale_profile --
/// --ignored --nocapture` times the translation at 10,000 Services.
#[test]
#[ignore]
fn scale_profile() {
    let mut s = settings(BackendTarget::Pod);
    s.pools = Pools::new(vec![AddressPool {
        first: "10.200.0.0".parse().unwrap(),
        last: "10.200.255.255".parse().unwrap(),
        announce: None,
    }]);
    let n = 10_000;
    let mut services = Vec::new();
    let mut slices = Vec::new();
    for i in 0..n {
        let name = format!("svc-{i:05}");
        let ip = std::net::Ipv4Addr::from(0x0ac8_0000 + i as u32);
        services.push(Arc::new(
            serde_json::from_value::<Service>(json!({
                "metadata": { "name": name, "namespace": "default", "uid": name,
                              "creationTimestamp": "2026-01-01T00:00:00Z" },
                "spec": { "type": "LoadBalancer", "loadBalancerClass": "xlb.io/xlb",
                          "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }],
                          "ipFamilies": ["IPv4"] },
                "status": { "loadBalancer": { "ingress": [{ "ip": ip.to_string(), "ipMode": "VIP" }] } }
            }))
            .unwrap(),
        ));
        let eps: Vec<Value> = (0..10)
            .map(|j| json!({ "addresses": [format!("10.{}.{}.{}", 128 + i / 65536, (i / 256) % 256, j)], "conditions": { "ready": true } }))
            .collect();
        slices.push(Arc::new(
            serde_json::from_value::<EndpointSlice>(json!({
                "metadata": { "name": name, "namespace": "default",
                              "labels": { "kubernetes.io/service-name": name } },
                "addressType": "IPv4",
                "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
                "endpoints": eps
            }))
            .unwrap(),
        ));
    }
    let t0 = std::time::Instant::now();
    let o = translate(&services, &slices, &[], &BTreeSet::new(), &s);
    println!("full: {:?} ({} VIPs)", t0.elapsed(), o.services.len());
    drop(o);
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find(|l| l.starts_with("VmRSS"))
            .unwrap()
            .to_owned()
    };
    println!("before: {}", rss());
    let infos: Vec<(ObjKey, Option<ServiceInfo>)> = services
        .iter()
        .map(|svc| (key_of(&svc.metadata), ServiceInfo::of(svc, &s.class())))
        .collect();
    let sinfos: Vec<(ObjKey, Option<SliceInfo>)> = slices
        .iter()
        .map(|sl| (key_of(&sl.metadata), SliceInfo::of(sl)))
        .collect();
    drop(services);
    drop(slices);
    println!("objects dropped, infos kept: {}", rss());
    let mut t = Translator::new(s.clone());
    let class = s.class();
    for (k, i) in infos {
        t.service(k, i);
    }
    for (k, i) in sinfos {
        t.slice(k, i);
    }
    let t0 = std::time::Instant::now();
    t.settle();
    println!("settle: {:?}, {}", t0.elapsed(), rss());
    for k in 0..5 {
        let svc: Service = serde_json::from_value(json!({
            "metadata": { "name": format!("new-{k}"), "namespace": "default" },
            "spec": { "type": "LoadBalancer", "loadBalancerClass": "xlb.io/xlb",
                      "ports": [{ "name": "http", "port": 80, "protocol": "TCP" }] }
        }))
        .unwrap();
        let t0 = std::time::Instant::now();
        t.service(key_of(&svc.metadata), ServiceInfo::of(&svc, &class));
        t.settle();
        let a = t0.elapsed();
        let c = Arc::new(t.outcome().clone());
        println!("replan: {a:?}, clone {:?}", t0.elapsed() - a);
        std::hint::black_box(c);
    }
}
