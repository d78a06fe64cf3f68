//! The translation on objects written as the Kubernetes API reference
//! defines them (JSON, as the API server sends them).

use std::{
    collections::{BTreeMap, BTreeSet},
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
    pools::Pools,
    translate::{ObjKey, Outcome, Settings, translate},
};
use crate::{
    config::{AddressPool, BackendTarget},
    vip::Vip,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn settings(target: BackendTarget) -> Settings {
    Settings {
        class: "xlb.io/xlb".into(),
        announce: crate::config::AnnounceMode::None,
        service_modes: crate::config::Announce::default().service_modes,
        include_unclassed: false,
        target,
        pools: Pools::new(vec![
            AddressPool {
                first: ip("10.99.200.1"),
                last: ip("10.99.200.3"),
                announce: None,
            },
            AddressPool {
                first: ip("fd00:99::1"),
                last: ip("fd00:99::2"),
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

/// A LoadBalancer Service of xlb's class; `extra` is merged into it.
fn service(name: &str, created: &str, extra: Value) -> Arc<Service> {
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": format!("uid-{name}"),
            "creationTimestamp": created,
            "resourceVersion": "1"
        },
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "xlb.io/xlb",
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080 }],
            "selector": { "app": name },
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack"
        }
    });
    merge(&mut v, extra);
    Arc::new(serde_json::from_value(v).unwrap())
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn slice(service: &str, family: &str, endpoints: Value) -> Arc<EndpointSlice> {
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": format!("{service}-{}", family.to_lowercase()),
                "namespace": "default",
                "labels": { "kubernetes.io/service-name": service }
            },
            "addressType": family,
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
            "endpoints": endpoints
        }))
        .unwrap(),
    )
}

fn node(name: &str, addrs: &[&str]) -> Arc<Node> {
    let addresses: Vec<Value> = addrs
        .iter()
        .map(|a| json!({ "type": "InternalIP", "address": a }))
        .chain([json!({ "type": "Hostname", "address": name })])
        .collect();
    Arc::new(
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": { "name": name },
            "status": { "addresses": addresses }
        }))
        .unwrap(),
    )
}

fn vip(addr: &str, port: u16) -> Vip {
    Vip {
        address: ip(addr),
        port,
        protocol: 6,
    }
}

fn run(services: &[Arc<Service>], slices: &[Arc<EndpointSlice>], s: &Settings) -> Outcome {
    translate(services, slices, &[], &BTreeSet::new(), s)
}

fn backends(o: &Outcome, v: Vip) -> BTreeMap<IpAddr, u32> {
    o.services
        .get(&v)
        .unwrap_or_else(|| panic!("{v} not served: {o:#?}"))
        .backends
        .iter()
        .map(|(address, weight)| (*address, *weight))
        .collect()
}

fn key(name: &str) -> ObjKey {
    ObjKey {
        namespace: "default".into(),
        name: name.into(),
    }
}

#[test]
fn only_load_balancers_of_our_class_are_served() {
    let s = settings(BackendTarget::Pod);
    let other = service(
        "other",
        "2026-01-01T00:00:00Z",
        json!({ "spec": { "loadBalancerClass": "example.com/lb" } }),
    );
    let unclassed = service(
        "unclassed",
        "2026-01-01T00:00:01Z",
        json!({ "spec": { "loadBalancerClass": null } }),
    );
    let cluster_ip = service(
        "internal",
        "2026-01-01T00:00:02Z",
        json!({ "spec": { "type": "ClusterIP" } }),
    );
    let ours = service("web", "2026-01-01T00:00:03Z", json!({}));
    let all = [other, unclassed, cluster_ip, ours];
    let o = run(&all, &[], &s);
    assert_eq!(o.addresses.keys().collect::<Vec<_>>(), [&key("web")]);
    assert_eq!(o.addresses[&key("web")], [ip("10.99.200.1")]);

    let mut s = s;
    s.include_unclassed = true;
    let o = run(&all, &[], &s);
    assert_eq!(
        o.addresses.keys().collect::<Vec<_>>(),
        [&key("unclassed"), &key("web")]
    );
}

#[test]
fn the_announce_annotation_chooses_over_the_default() {
    use crate::config::AnnounceMode;
    let mut s = settings(BackendTarget::Pod);
    s.announce = AnnounceMode::L2;
    let quiet = service(
        "quiet",
        "2026-01-01T00:00:00Z",
        json!({ "metadata": { "annotations": { "xlb.io/announce": "none" } } }),
    );
    let plain = service("plain", "2026-01-01T00:00:01Z", json!({}));
    let o = run(&[quiet, plain], &[], &s);
    let mode = |name: &str| {
        let a = o.addresses[&key(name)][0];
        o.services
            .iter()
            .find(|(v, _)| v.address == a)
            .map(|(_, spec)| spec.announce.mode())
    };
    assert_eq!(mode("quiet"), Some(AnnounceMode::None));
    assert_eq!(mode("plain"), Some(AnnounceMode::L2));
}

#[test]
fn the_aws_allocation_id_annotation_gives_an_aws_vip_its_elastic_ip() {
    use crate::config::{AllocationId, AnnounceMode, Announcement};
    let eip = "eipalloc-0123456789abcdef0";
    let with = |name: &str, created: &str, annotations: Value| {
        service(
            name,
            created,
            json!({ "metadata": { "annotations": annotations } }),
        )
    };
    let announced = |o: &Outcome, name: &str| {
        let a = o.addresses[&key(name)][0];
        o.services
            .iter()
            .find(|(v, _)| v.address == a)
            .map(|(_, spec)| spec.announce.clone())
    };
    let s = settings(BackendTarget::Pod);
    let o = run(
        &[
            with(
                "public",
                "2026-01-01T00:00:00Z",
                json!({ "xlb.io/announce": "aws", "xlb.io/aws-allocation-id": eip }),
            ),
            with(
                "private",
                "2026-01-01T00:00:01Z",
                json!({ "xlb.io/announce": "aws" }),
            ),
        ],
        &[],
        &s,
    );
    assert!(o.refusals.is_empty(), "{:?}", o.refusals);
    assert_eq!(
        announced(&o, "public"),
        Some(Announcement::Aws {
            eip: AllocationId::parse(eip)
        })
    );
    assert_eq!(
        announced(&o, "private"),
        Some(Announcement::Aws { eip: None }),
        "no annotation: reached inside the VPC only"
    );
    // With aws as the config's default, the annotation alone suffices.
    let mut aws = settings(BackendTarget::Pod);
    aws.announce = AnnounceMode::Aws;
    let o = run(
        &[with(
            "public",
            "2026-01-01T00:00:00Z",
            json!({ "xlb.io/aws-allocation-id": eip }),
        )],
        &[],
        &aws,
    );
    assert_eq!(
        announced(&o, "public"),
        Some(Announcement::Aws {
            eip: AllocationId::parse(eip)
        })
    );

    let not_for_this_mode = "annotation xlb.io/aws-allocation-id: an Elastic IP is for VIPs \
        announced with \"aws\" (annotation xlb.io/announce, its pool, or the config's \
        announce.mode)";
    let refused = [
        (
            "a malformed id",
            json!({ "xlb.io/announce": "aws", "xlb.io/aws-allocation-id": "eipalloc-XYZ" }),
            "annotation xlb.io/aws-allocation-id: \"eipalloc-XYZ\" is not an Elastic IP \
             allocation id such as \"eipalloc-0123456789abcdef0\"",
        ),
        (
            "a public IP, not its allocation",
            json!({ "xlb.io/announce": "aws", "xlb.io/aws-allocation-id": "203.0.113.7" }),
            "annotation xlb.io/aws-allocation-id: \"203.0.113.7\" is not an Elastic IP \
             allocation id such as \"eipalloc-0123456789abcdef0\"",
        ),
        (
            "an l2 Service",
            json!({ "xlb.io/announce": "l2", "xlb.io/aws-allocation-id": eip }),
            not_for_this_mode,
        ),
        (
            "a Service of the default mode, none",
            json!({ "xlb.io/aws-allocation-id": eip }),
            not_for_this_mode,
        ),
    ];
    for (what, annotations, message) in refused {
        let o = run(&[with("bad", "2026-01-01T00:00:00Z", annotations)], &[], &s);
        assert!(o.services.is_empty(), "{what}: served");
        assert_eq!(o.refusals.len(), 1, "{what}");
        assert_eq!(
            (o.refusals[0].reason, o.refusals[0].message.as_str()),
            ("InvalidAnnotation", message),
            "{what}"
        );
        assert!(
            !o.addresses.contains_key(&key("bad")),
            "{what}: a refused Service holds no address"
        );
    }
}

/// The mode each VIP of `name` is announced with, by address.
fn modes(o: &Outcome, name: &str) -> Vec<(IpAddr, crate::config::AnnounceMode)> {
    o.addresses[&key(name)]
        .iter()
        .map(|a| {
            let spec = o.services.iter().find(|(v, _)| v.address == *a).unwrap().1;
            (*a, spec.announce.mode())
        })
        .collect()
}

#[test]
fn a_pool_s_mode_is_its_addresses_unless_the_annotation_chooses() {
    use crate::config::AnnounceMode::{Bgp, L2, None};
    let mut s = settings(BackendTarget::Pod);
    s.announce = Bgp;
    s.pools = Pools::new(vec![
        AddressPool {
            first: ip("10.99.200.1"),
            last: ip("10.99.200.5"),
            announce: Some(L2),
        },
        AddressPool {
            first: ip("fd00:99::1"),
            last: ip("fd00:99::2"),
            announce: Option::None,
        },
    ]);
    let dual =
        json!({ "spec": { "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack" } });
    let o = run(
        &[
            service("pooled", "2026-01-01T00:00:00Z", json!({})),
            service("dual", "2026-01-01T00:00:01Z", dual.clone()),
            service(
                "chosen",
                "2026-01-01T00:00:02Z",
                json!({ "metadata": { "annotations": { "xlb.io/announce": "none" } } }),
            ),
            // Named outside every pool: the config's mode.
            service(
                "named",
                "2026-01-01T00:00:03Z",
                json!({ "metadata": { "annotations": { "xlb.io/vip": "192.0.2.10" } } }),
            ),
            // Named inside a pool: the pool's.
            service(
                "named-in-pool",
                "2026-01-01T00:00:04Z",
                json!({ "metadata": { "annotations": { "xlb.io/vip": "10.99.200.5" } } }),
            ),
        ],
        &[],
        &s,
    );
    assert!(o.refusals.is_empty(), "{:?}", o.refusals);
    assert_eq!(modes(&o, "pooled"), [(ip("10.99.200.1"), L2)]);
    assert_eq!(
        modes(&o, "dual"),
        [(ip("10.99.200.2"), L2), (ip("fd00:99::1"), Bgp)],
        "each address its own pool's mode, or the config's where the pool sets none"
    );
    assert_eq!(modes(&o, "chosen"), [(ip("10.99.200.3"), None)]);
    assert_eq!(modes(&o, "named"), [(ip("192.0.2.10"), Bgp)]);
    assert_eq!(modes(&o, "named-in-pool"), [(ip("10.99.200.5"), L2)]);
}

#[test]
fn an_elastic_ip_annotation_is_enough_in_a_pool_announced_with_aws() {
    use crate::config::{AllocationId, AnnounceMode, Announcement};
    let eip = "eipalloc-0123456789abcdef0";
    let mut s = settings(BackendTarget::Pod);
    s.announce = AnnounceMode::L2;
    s.pools = Pools::new(vec![AddressPool {
        first: ip("10.99.200.1"),
        last: ip("10.99.200.3"),
        announce: Some(AnnounceMode::Aws),
    }]);
    let o = run(
        &[service(
            "public",
            "2026-01-01T00:00:00Z",
            json!({ "metadata": { "annotations": { "xlb.io/aws-allocation-id": eip } } }),
        )],
        &[],
        &s,
    );
    assert!(o.refusals.is_empty(), "{:?}", o.refusals);
    let spec = o.services.values().next().unwrap();
    assert_eq!(
        spec.announce,
        Announcement::Aws {
            eip: AllocationId::parse(eip)
        }
    );
}

#[test]
fn a_service_may_choose_only_the_modes_the_config_allows() {
    use crate::config::AnnounceMode::{Aws, L2, None};
    let mut s = settings(BackendTarget::Pod);
    s.announce = L2;
    s.service_modes = vec![None, L2];
    let asks = |name: &str, created: &str, mode: &str| {
        service(
            name,
            created,
            json!({ "metadata": { "annotations": { "xlb.io/announce": mode } } }),
        )
    };
    let o = run(
        &[
            asks("eip", "2026-01-01T00:00:00Z", "aws"),
            asks("quiet", "2026-01-01T00:00:01Z", "none"),
        ],
        &[],
        &s,
    );
    assert_eq!(o.refusals.len(), 1, "{:?}", o.refusals);
    assert_eq!(
        (o.refusals[0].reason, o.refusals[0].message.as_str()),
        (
            "InvalidAnnotation",
            "annotation xlb.io/announce: \"aws\" is not allowed for Services by the config's \
             announce.service_modes (\"none\", \"l2\"); remove the annotation to take the \
             pool's or the config's mode"
        )
    );
    assert_eq!(o.refusals[0].service, key("eip"));
    assert!(!o.addresses.contains_key(&key("eip")));
    // The refused Service took no address: the next one has the first.
    assert_eq!(modes(&o, "quiet"), [(ip("10.99.200.1"), None)]);
    // The config's own choices are not limited by the list.
    s.announce = Aws;
    s.service_modes = Vec::new();
    let o = run(
        &[service("plain", "2026-01-01T00:00:00Z", json!({}))],
        &[],
        &s,
    );
    assert_eq!(modes(&o, "plain"), [(ip("10.99.200.1"), Aws)]);
    let o = run(&[asks("any", "2026-01-01T00:00:00Z", "aws")], &[], &s);
    assert_eq!(
        o.refusals[0].message,
        "annotation xlb.io/announce: \"aws\" is not allowed for Services by the config's \
         announce.service_modes (none: Services may not choose); remove the annotation to take \
         the pool's or the config's mode"
    );
}

#[test]
fn an_ipv6_service_announced_with_aws_is_refused() {
    use crate::config::AnnounceMode::{Aws, L2};
    let v6 = json!({ "spec": { "ipFamilies": ["IPv6"] } });
    let dual_aws = json!({
        "metadata": { "annotations": { "xlb.io/announce": "aws" } },
        "spec": { "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack" }
    });
    let mut by_default = settings(BackendTarget::Pod);
    by_default.announce = Aws;
    let mut by_pool = settings(BackendTarget::Pod);
    by_pool.announce = L2;
    let cases = [
        (
            "the config's mode",
            &by_default,
            v6.clone(),
            "VIP fd00:99::1 is IPv6 but announce mode \"aws\" (from the config's \
             announce.mode) moves IPv4 secondary private addresses and Elastic IPs only; make \
             the Service IPv4 only (spec.ipFamilies) or choose another mode with annotation \
             xlb.io/announce",
        ),
        (
            "the annotation, dual-stack",
            &by_pool,
            dual_aws,
            "VIP fd00:99::1 is IPv6 but announce mode \"aws\" (from annotation \
             xlb.io/announce) moves IPv4 secondary private addresses and Elastic IPs only; make \
             the Service IPv4 only (spec.ipFamilies) or choose another mode with annotation \
             xlb.io/announce",
        ),
    ];
    for (what, s, spec, message) in cases {
        let o = run(
            &[
                service("v6", "2026-01-01T00:00:00Z", spec),
                service("next", "2026-01-01T00:00:01Z", v6.clone()),
            ],
            &[],
            s,
        );
        let refused: Vec<_> = o
            .refusals
            .iter()
            .filter(|r| r.service == key("v6"))
            .map(|r| (r.reason, r.message.as_str()))
            .collect();
        assert_eq!(refused, [("UnsupportedAnnounce", message)], "{what}");
        assert!(!o.addresses.contains_key(&key("v6")), "{what}");
        assert!(
            o.services.keys().all(|v| v.address != ip("10.99.200.1")),
            "{what}: the refused Service's IPv4 address is not served"
        );
    }
    // Announced otherwise, the same Service is served.
    let o = run(&[service("v6", "2026-01-01T00:00:00Z", v6)], &[], &by_pool);
    assert_eq!(modes(&o, "v6"), [(ip("fd00:99::1"), L2)]);
}

#[test]
fn vip_from_annotation_then_load_balancer_ip_then_pool() {
    let s = settings(BackendTarget::Pod);
    let a = service(
        "a",
        "2026-01-01T00:00:00Z",
        json!({ "metadata": { "annotations": { "xlb.io/vip": "10.99.200.1" } } }),
    );
    let b = service(
        "b",
        "2026-01-01T00:00:01Z",
        json!({ "spec": { "loadBalancerIP": "192.0.2.7" } }),
    );
    // Created first, but .1 is asked for by name: the pool skips it.
    let c = service("c", "2025-12-31T00:00:00Z", json!({}));
    let o = run(&[a, b, c], &[], &s);
    assert_eq!(o.addresses[&key("a")], [ip("10.99.200.1")]);
    assert_eq!(o.addresses[&key("b")], [ip("192.0.2.7")]);
    assert_eq!(o.addresses[&key("c")], [ip("10.99.200.2")]);
    assert!(o.refusals.is_empty(), "{:?}", o.refusals);
    assert_eq!(o.services.len(), 3);
}

#[test]
fn the_status_address_is_kept_so_allocation_is_stable() {
    let s = settings(BackendTarget::Pod);
    let status = json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "10.99.200.3", "ipMode": "VIP" }] } } });
    let old = service("old", "2026-01-02T00:00:00Z", status);
    let new = service("new", "2026-01-01T00:00:00Z", json!({}));
    let o = run(&[old, new], &[], &s);
    assert_eq!(o.addresses[&key("old")], [ip("10.99.200.3")]);
    assert_eq!(o.addresses[&key("new")], [ip("10.99.200.1")]);
}

#[test]
fn dual_stack_services_get_one_vip_per_family() {
    let s = settings(BackendTarget::Pod);
    let svc = service(
        "ds",
        "2026-01-01T00:00:00Z",
        json!({ "spec": { "ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack" } }),
    );
    let v4 = slice(
        "ds",
        "IPv4",
        json!([{ "addresses": ["10.244.1.5"], "conditions": { "ready": true } }]),
    );
    let v6 = slice(
        "ds",
        "IPv6",
        json!([{ "addresses": ["fd00:244::5"], "conditions": { "ready": true } }]),
    );
    let o = run(&[svc], &[v4, v6], &s);
    assert_eq!(
        o.addresses[&key("ds")],
        [ip("fd00:99::1"), ip("10.99.200.1")]
    );
    assert_eq!(
        backends(&o, vip("10.99.200.1", 80)),
        BTreeMap::from([(ip("10.244.1.5"), 1)])
    );
    assert_eq!(
        backends(&o, vip("fd00:99::1", 80)),
        BTreeMap::from([(ip("fd00:244::5"), 1)])
    );
}

#[test]
fn exhausted_pools_refuse_with_a_reason() {
    let mut s = settings(BackendTarget::Pod);
    s.pools = Pools::new(vec![AddressPool {
        first: ip("10.99.200.1"),
        last: ip("10.99.200.1"),
        announce: None,
    }]);
    let a = service("a", "2026-01-01T00:00:00Z", json!({}));
    let b = service("b", "2026-01-01T00:00:01Z", json!({}));
    let o = run(&[a, b], &[], &s);
    assert_eq!(o.addresses[&key("a")], [ip("10.99.200.1")]);
    assert_eq!(o.refusals.len(), 1);
    assert_eq!(o.refusals[0].service, key("b"));
    assert_eq!(o.refusals[0].reason, "NoAddress");
    assert_eq!(
        o.refusals[0].message,
        "no free IPv4 address in kubernetes.pools; set one with the xlb.io/vip annotation or add a pool"
    );
}

#[test]
fn the_later_of_two_services_on_one_vip_and_port_is_refused() {
    let s = settings(BackendTarget::Pod);
    let ann = json!({ "metadata": { "annotations": { "xlb.io/vip": "192.0.2.10" } } });
    let first = service("first", "2026-01-01T00:00:00Z", ann.clone());
    let second = service("second", "2026-01-01T00:00:05Z", ann.clone());
    let mut other_port = ann;
    merge(
        &mut other_port,
        json!({ "spec": { "ports": [{ "name": "dns", "port": 53, "protocol": "UDP" }] } }),
    );
    let third = service("third", "2026-01-01T00:00:09Z", other_port);
    // Input order does not matter: creation time decides.
    let o = run(&[third, second, first], &[], &s);
    assert!(o.addresses.contains_key(&key("first")));
    assert!(!o.addresses.contains_key(&key("second")));
    assert!(
        o.addresses.contains_key(&key("third")),
        "another port on the same VIP is fine"
    );
    assert_eq!(o.refusals.len(), 1);
    let r = &o.refusals[0];
    assert_eq!(
        (r.service.clone(), r.uid.as_str(), r.reason),
        (key("second"), "uid-second", "VIPConflict")
    );
    assert_eq!(
        r.message,
        "VIP 192.0.2.10:80/tcp is already used by Service default/first; this Service is not served"
    );
}

#[test]
fn the_config_file_wins_over_a_service() {
    let s = settings(BackendTarget::Pod);
    let svc = service(
        "web",
        "2026-01-01T00:00:00Z",
        json!({ "metadata": { "annotations": { "xlb.io/vip": "10.99.100.1" } } }),
    );
    let statics = BTreeSet::from([vip("10.99.100.1", 80)]);
    let o = translate(&[svc], &[], &[], &statics, &s);
    assert!(o.services.is_empty());
    assert_eq!(o.refusals[0].reason, "VIPConflict");
    assert!(o.refusals[0].message.contains("the static config"));
}

#[test]
fn bad_annotations_are_refused_by_name() {
    let s = settings(BackendTarget::Pod);
    let cases = [
        (
            json!({ "xlb.io/vip": "10.0.0.300" }),
            "InvalidVIP",
            "annotation xlb.io/vip: \"10.0.0.300\" is not an IP address",
        ),
        (
            json!({ "xlb.io/vip": "10.0.0.1,10.0.0.2" }),
            "InvalidVIP",
            "annotation xlb.io/vip: \"10.0.0.1,10.0.0.2\" names two addresses of one family (one IPv4 and one IPv6 at most)",
        ),
        (
            json!({ "xlb.io/encap": "gre" }),
            "InvalidAnnotation",
            "annotation xlb.io/encap: \"gre\" is not one of \"ipip\", \"l2\"",
        ),
        (
            json!({ "xlb.io/announce": "arp" }),
            "InvalidAnnotation",
            "annotation xlb.io/announce: \"arp\" is not one of \"none\", \"l2\", \"aws\", \"bgp\"",
        ),
        (
            json!({ "xlb.io/health-check": "icmp" }),
            "InvalidAnnotation",
            "annotation xlb.io/health-check: \"icmp\" is not one of \"tcp\", \"http\", \"none\"",
        ),
    ];
    for (annotations, reason, message) in cases {
        let svc = service(
            "bad",
            "2026-01-01T00:00:00Z",
            json!({ "metadata": { "annotations": annotations } }),
        );
        let o = run(&[svc], &[], &s);
        assert!(o.services.is_empty());
        assert_eq!(o.refusals.len(), 1);
        assert_eq!(
            (o.refusals[0].reason, o.refusals[0].message.as_str()),
            (reason, message)
        );
    }
}

#[test]
fn ready_serve_terminating_drains_the_rest_are_left_out() {
    let s = settings(BackendTarget::Pod);
    let svc = service(
        "web",
        "2026-01-01T00:00:00Z",
        json!({ "metadata": { "annotations": { "xlb.io/encap": "l2" } } }),
    );
    let sl = slice(
        "web",
        "IPv4",
        json!([
            { "addresses": ["10.244.0.1"], "conditions": { "ready": true, "serving": true, "terminating": false } },
            // nil conditions mean ready, as the API reference says
            { "addresses": ["10.244.0.2"] },
            { "addresses": ["10.244.0.3"], "conditions": { "ready": false, "serving": true, "terminating": true } },
            { "addresses": ["10.244.0.4"], "conditions": { "ready": false, "serving": false, "terminating": true } },
            { "addresses": ["10.244.0.5"], "conditions": { "ready": false } }
        ]),
    );
    let o = run(&[svc], &[sl], &s);
    let spec = &o.services[&vip("10.99.200.1", 80)];
    assert_eq!(spec.encap, Encap::L2);
    assert_eq!(
        *spec.backends,
        crate::desired::Backends::from([
            (ip("10.244.0.1"), 1),
            (ip("10.244.0.2"), 1),
            (ip("10.244.0.3"), 0)
        ])
    );
}

#[test]
fn slices_serve_the_ports_they_name() {
    let s = settings(BackendTarget::Pod);
    let svc = service(
        "multi",
        "2026-01-01T00:00:00Z",
        json!({ "spec": { "ports": [
            { "name": "http", "port": 80, "protocol": "TCP" },
            { "name": "https", "port": 443, "protocol": "TCP" }
        ] } }),
    );
    // Slices of another Service, or of another namespace, never count.
    let http = slice("multi", "IPv4", json!([{ "addresses": ["10.244.0.1"] }]));
    let foreign = slice("other", "IPv4", json!([{ "addresses": ["10.244.9.9"] }]));
    let o = run(&[svc], &[http, foreign], &s);
    assert_eq!(
        backends(&o, vip("10.99.200.1", 80)),
        BTreeMap::from([(ip("10.244.0.1"), 1)])
    );
    assert!(backends(&o, vip("10.99.200.1", 443)).is_empty());
}

#[test]
fn node_target_weights_nodes_by_their_ready_endpoints() {
    let s = settings(BackendTarget::Node);
    let svc = service(
        "web",
        "2026-01-01T00:00:00Z",
        json!({ "spec": { "externalTrafficPolicy": "Local" } }),
    );
    let sl = slice(
        "web",
        "IPv4",
        json!([
            { "addresses": ["10.244.1.1"], "nodeName": "n1" },
            { "addresses": ["10.244.1.2"], "nodeName": "n1" },
            { "addresses": ["10.244.2.1"], "nodeName": "n2", "conditions": { "ready": false, "serving": true, "terminating": true } },
            { "addresses": ["10.244.3.1"], "nodeName": "n3", "conditions": { "ready": false } },
            { "addresses": ["10.244.4.1"], "nodeName": "unknown" }
        ]),
    );
    let nodes = [
        node("n1", &["192.168.0.1", "fd00:1::1"]),
        node("n2", &["192.168.0.2"]),
        node("n3", &["192.168.0.3"]),
    ];
    let o = translate(&[svc], &[sl], &nodes, &BTreeSet::new(), &s);
    assert_eq!(
        backends(&o, vip("10.99.200.1", 80)),
        BTreeMap::from([(ip("192.168.0.1"), 2), (ip("192.168.0.2"), 0)])
    );
}

#[test]
fn unsupported_protocols_are_reported_and_the_rest_served() {
    let s = settings(BackendTarget::Pod);
    let svc = service(
        "sctp",
        "2026-01-01T00:00:00Z",
        json!({ "spec": { "ports": [
            { "name": "http", "port": 80, "protocol": "TCP" },
            { "name": "sig", "port": 3868, "protocol": "SCTP" }
        ] } }),
    );
    let o = run(&[svc], &[], &s);
    assert_eq!(
        o.services.keys().copied().collect::<Vec<_>>(),
        [vip("10.99.200.1", 80)]
    );
    assert_eq!(o.refusals[0].reason, "UnsupportedProtocol");
    assert_eq!(
        o.refusals[0].message,
        "port 3868: protocol SCTP is not balanced (TCP and UDP are)"
    );
}

#[test]
fn a_vip_already_held_is_kept_against_a_newer_claim_by_name() {
    let s = settings(BackendTarget::Pod);
    let held = json!({ "status": { "loadBalancer": { "ingress": [{ "ip": "10.99.200.1", "ipMode": "VIP" }] } } });
    let old = service("old", "2026-01-01T00:00:00Z", held);
    let claim = json!({ "metadata": { "annotations": { "xlb.io/vip": "10.99.200.1" } } });
    let same_port = service("same-port", "2026-01-02T00:00:00Z", claim.clone());
    let mut other = claim;
    merge(
        &mut other,
        json!({ "spec": { "ports": [{ "name": "https", "port": 443, "protocol": "TCP" }] } }),
    );
    let other_port = service("other-port", "2026-01-03T00:00:00Z", other);
    let fresh = service("fresh", "2026-01-04T00:00:00Z", json!({}));
    let o = run(&[fresh, other_port, same_port, old], &[], &s);
    assert_eq!(o.addresses[&key("old")], [ip("10.99.200.1")]);
    assert_eq!(o.addresses[&key("other-port")], [ip("10.99.200.1")]);
    assert_eq!(o.addresses[&key("fresh")], [ip("10.99.200.2")]);
    assert!(!o.addresses.contains_key(&key("same-port")));
    assert_eq!(o.refusals.len(), 1);
    assert_eq!(
        (o.refusals[0].service.clone(), o.refusals[0].reason),
        (key("same-port"), "VIPConflict")
    );
}

#[test]
fn the_health_check_annotations_choose_a_check_from_the_config_defaults() {
    use crate::config::{CheckKind, HealthCheck, Probe};
    let mut s = settings(BackendTarget::Pod);
    s.health.path = "/ready".into();
    s.health.interval_ms = 7_000;
    s.pools = Pools::new(vec![AddressPool {
        first: ip("10.99.200.1"),
        last: ip("10.99.200.9"),
        announce: None,
    }]);
    let with = |name: &str, created: &str, annotations: Value| {
        service(
            name,
            created,
            json!({ "metadata": { "annotations": annotations } }),
        )
    };
    let o = run(
        &[
            with("plain", "2026-01-01T00:00:00Z", json!({})),
            with(
                "off",
                "2026-01-01T00:00:01Z",
                json!({ "xlb.io/health-check": "none" }),
            ),
            with(
                "tcp",
                "2026-01-01T00:00:02Z",
                json!({ "xlb.io/health-check": "tcp" }),
            ),
            with(
                "http",
                "2026-01-01T00:00:03Z",
                json!({ "xlb.io/health-check": "http" }),
            ),
            with(
                "healthz",
                "2026-01-01T00:00:04Z",
                json!({ "xlb.io/health-check": "http", "xlb.io/health-check-path": "/healthz" }),
            ),
        ],
        &[],
        &s,
    );
    assert!(o.refusals.is_empty(), "{:?}", o.refusals);
    let check = |name: &str| -> Option<HealthCheck> {
        let a = o.addresses[&key(name)][0];
        let spec = &o.services[&Vip {
            address: a,
            port: 80,
            protocol: 6,
        }];
        spec.health.as_deref().cloned()
    };
    assert_eq!(check("plain"), None, "off unless asked: readiness decides");
    assert_eq!(check("off"), None);
    assert_eq!(check("tcp"), s.health.for_kind(CheckKind::Tcp, None));
    assert_eq!(
        check("tcp").unwrap().interval,
        std::time::Duration::from_secs(7)
    );
    assert_eq!(check("http"), s.health.for_kind(CheckKind::Http, None));
    let Some(Probe::Http(http)) = check("http").map(|c| c.probe) else {
        panic!("an http check");
    };
    assert_eq!(http.path, "/ready", "the config's health.path");
    assert_eq!(
        check("healthz"),
        s.health.for_kind(CheckKind::Http, Some("/healthz".into()))
    );
}

#[test]
fn a_services_check_covers_each_of_its_vips() {
    let s = settings(BackendTarget::Pod);
    let svc = service(
        "multi",
        "2026-01-01T00:00:00Z",
        json!({
            "metadata": { "annotations": { "xlb.io/health-check": "tcp" } },
            "spec": { "ports": [
                { "name": "http", "port": 80, "protocol": "TCP" },
                { "name": "dns", "port": 53, "protocol": "UDP" }
            ] }
        }),
    );
    let o = run(&[svc], &[], &s);
    assert!(o.refusals.is_empty(), "{:?}", o.refusals);
    let checks: Vec<_> = o
        .services
        .values()
        .map(|spec| spec.health.clone())
        .collect();
    assert_eq!(checks.len(), 2);
    assert!(checks[0].is_some());
    assert_eq!(checks[0], checks[1], "one check, shared");
}

#[test]
fn health_check_annotations_that_cannot_be_served_are_refused() {
    let s = settings(BackendTarget::Pod);
    let udp = json!({ "spec": { "ports": [
        { "name": "http", "port": 80, "protocol": "TCP" },
        { "name": "dns", "port": 53, "protocol": "UDP" }
    ] } });
    let v6 = json!({ "spec": { "ipFamilies": ["IPv6"] } });
    let path_rule = "an HTTP path such as \"/healthz\": starting with /, of printable ASCII \
                     without spaces (percent-encode the rest)";
    let cases = [
        (
            json!({ "xlb.io/health-check": "HTTP" }),
            json!({}),
            "InvalidAnnotation",
            "annotation xlb.io/health-check: \"HTTP\" is not one of \"tcp\", \"http\", \"none\""
                .to_owned(),
        ),
        (
            json!({ "xlb.io/health-check-path": "/healthz" }),
            json!({}),
            "InvalidAnnotation",
            "annotation xlb.io/health-check-path: a path is for http checks \
             (xlb.io/health-check: \"http\")"
                .to_owned(),
        ),
        (
            json!({ "xlb.io/health-check": "tcp", "xlb.io/health-check-path": "/healthz" }),
            json!({}),
            "InvalidAnnotation",
            "annotation xlb.io/health-check-path: a path is for http checks \
             (xlb.io/health-check: \"http\")"
                .to_owned(),
        ),
        (
            json!({ "xlb.io/health-check": "http", "xlb.io/health-check-path": "healthz" }),
            json!({}),
            "InvalidAnnotation",
            format!("annotation xlb.io/health-check-path: \"healthz\" is not {path_rule}"),
        ),
        (
            json!({ "xlb.io/health-check": "http", "xlb.io/health-check-path": "/a b" }),
            json!({}),
            "InvalidAnnotation",
            format!("annotation xlb.io/health-check-path: \"/a b\" is not {path_rule}"),
        ),
        (
            json!({ "xlb.io/health-check": "http" }),
            udp,
            "InvalidAnnotation",
            "annotation xlb.io/health-check: http checks need TCP, but port 53 is UDP; use \
             \"tcp\" or \"none\""
                .to_owned(),
        ),
        (
            json!({ "xlb.io/health-check": "tcp" }),
            v6.clone(),
            "NoProbeSource",
            "health checks via \"dsr\" (the config's health.via) need a source address for \
             probes to its IPv6 VIP, and none is set: set health.source_v6 or \
             dataplane.ipip_source_v6 in the config, or health.via = \"direct\""
                .to_owned(),
        ),
        (
            json!({ "xlb.io/health-check": "tcp", "xlb.io/vip": "10.99.200.3,fd00::7" }),
            json!({}),
            "NoProbeSource",
            "health checks via \"dsr\" (the config's health.via) need a source address for \
             probes to its IPv6 VIP, and none is set: set health.source_v6 or \
             dataplane.ipip_source_v6 in the config, or health.via = \"direct\""
                .to_owned(),
        ),
    ];
    for (annotations, extra, reason, message) in cases {
        let mut extra = extra;
        merge(
            &mut extra,
            json!({ "metadata": { "annotations": annotations } }),
        );
        let o = run(&[service("bad", "2026-01-01T00:00:00Z", extra)], &[], &s);
        assert!(o.services.is_empty(), "{message}: served");
        assert_eq!(o.refusals.len(), 1, "{message}");
        assert_eq!(
            (o.refusals[0].reason, o.refusals[0].message.as_str()),
            (reason, message.as_str())
        );
        assert!(
            !o.addresses.contains_key(&key("bad")),
            "a refused Service holds no address"
        );
    }

    // The same IPv6 Service, probed directly or with an IPv6 source.
    let mut direct = settings(BackendTarget::Pod);
    direct.health.via = crate::config::Via::Direct;
    let mut sourced = settings(BackendTarget::Pod);
    sourced.health.source_v6 = Some("fd00::fe".parse().unwrap());
    let mut ann = v6;
    merge(
        &mut ann,
        json!({ "metadata": { "annotations": { "xlb.io/health-check": "tcp" } } }),
    );
    for s in [direct, sourced] {
        let o = run(
            &[service("v6", "2026-01-01T00:00:00Z", ann.clone())],
            &[],
            &s,
        );
        assert!(o.refusals.is_empty(), "{:?}", o.refusals);
        let spec = &o.services[&vip("fd00:99::1", 80)];
        assert!(spec.health.is_some());
    }
}
