//! The Kubernetes source end to end: the real `xlb` daemon, its real kube-rs
//! client and real XDP maps, against the test harness's API server
//! (`xlb_tests::kube_api`, real HTTP with list/watch, bookmarks and 410).
//!
//! ```text
//!  client ns: c0 10.0.0.2 ──veth── lb0 10.0.0.1 (LB ns: xlb run, XDP; API server on 127.0.0.1)
//!  route 10.99.0.0/24 via 10.0.0.1     endpoints 10.0.0.17/.18 (static neighbours)
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, UdpSocket},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use lb_common::BACKEND_ACTIVE;
use lb_userspace::xdp::{Maps, reconcile::backend_addr};
use serde_json::{Value, json};
use xlb_tests::{
    daemon::{Daemon, free_port, http_get, metric},
    dump::{Dump, dump},
    k8s_objects,
    kube_api::KubeApi,
    netns::{NetNs, PinDir, privileged},
    vm::patience,
};

const M: u32 = 251;
const VIP: &str = "10.99.0.100";

struct Router {
    pins: PinDir,
    state: PathBuf,
    metrics: u16,
    config: PathBuf,
}

struct Lab {
    lb: NetNs,
    client: NetNs,
    api: KubeApi,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        // A failed test keeps its configs and daemon logs to look at.
        if std::thread::panicking() {
            eprintln!("kept {} (configs, daemon logs)", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The LB namespace with `links` veths (lb0, lb1, ...) to one client
/// namespace, and the API server listening on the LB namespace's loopback.
fn lab(tag: &str, links: usize) -> Lab {
    let lb = NetNs::new();
    let client = NetNs::new();
    for i in 0..links {
        let (l, c) = (format!("lb{i}"), format!("c{i}"));
        lb.ip(&["link", "add", &l, "type", "veth", "peer", "name", &c]);
        lb.ip(&["link", "set", &c, "netns", &client.name]);
        lb.ip(&["addr", "add", &format!("10.0.{i}.1/24"), "dev", &l]);
        lb.ip(&["link", "set", &l, "up"]);
        client.ip(&["addr", "add", &format!("10.0.{i}.2/24"), "dev", &c]);
        client.ip(&["link", "set", &c, "up"]);
    }
    client.ip(&["route", "add", "10.99.0.0/24", "via", "10.0.0.1"]);
    lb.static_neighbours(
        "lb0",
        &[
            ("10.0.0.17", "02:00:00:00:00:11"),
            ("10.0.0.18", "02:00:00:00:00:12"),
        ],
    );
    lb.sysctl("net.ipv4.ip_forward", "1");
    let api = lb.run(KubeApi::start);
    let dir = std::env::temp_dir().join(format!("xlbt-k8s-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    api.write_kubeconfig(&dir.join("kubeconfig"));
    Lab {
        lb,
        client,
        api,
        dir,
    }
}

/// A router's config: XDP on `iface`, the Kubernetes source on, short
/// Lease timings.
fn router(l: &Lab, name: &str, iface: &str, extra: &str) -> Router {
    let pins = PinDir::new();
    let state = l.dir.join(format!("state-{name}"));
    let metrics = free_port();
    let text = format!(
        r#"[dataplane]
interfaces = ["{iface}"]
xdp_mode = "native"
pin_path = "{pins}"
state_dir = "{state}"
maglev_table_size = {M}
max_vips = 256
max_backends = 512
flow_table_size = 4096
ipip_source_v4 = "10.0.0.1"

[metrics]
listen = "127.0.0.1:{metrics}"

[kubernetes]
enabled = true
kubeconfig = "{kubeconfig}"
pools = ["{VIP}-10.99.0.103"]
lease_namespace = "xlb-system"
node_name = "{name}"
lease_duration_ms = 3000
renew_deadline_ms = 1500
retry_period_ms = 300
{extra}
"#,
        pins = pins.path.display(),
        state = state.display(),
        kubeconfig = l.dir.join("kubeconfig").display(),
    );
    let config = l.dir.join(format!("{name}.toml"));
    std::fs::write(&config, text).unwrap();
    Router {
        pins,
        state,
        metrics,
        config,
    }
}

fn start(l: &Lab, r: &Router, log: &str) -> Daemon {
    let mut d = Daemon::spawn(
        &l.lb,
        &["--config", r.config.to_str().unwrap()],
        &l.dir.join(log),
    );
    d.wait_for_log("reconciled", patience(Duration::from_secs(20)));
    d
}

fn service(name: &str, port: u16, protocol: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": "default", "annotations": annotations },
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "xlb.io/xlb",
            "selector": { "app": name },
            "ports": [{ "name": "dns", "port": port, "protocol": protocol, "targetPort": port }],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "externalTrafficPolicy": "Cluster"
        }
    })
}

fn endpoint(addr: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    k8s_objects::endpoint(addr, "worker-1", ready, serving, terminating)
}

fn slice(service: &str, endpoints: Vec<Value>) -> Value {
    k8s_objects::slice(service, ("dns", 53, "UDP"), endpoints)
}

type Served = BTreeMap<(IpAddr, u16, u8), BTreeMap<IpAddr, u32>>;

/// What the maps serve: VIP -> active backend -> weight; an error when a
/// Maglev row does not name exactly its VIP's backends of weight > 0. A
/// dump taken while the daemon is mid-reconcile can show that (new entries
/// are written before the row, old ones retired after it), so callers
/// poll until it settles and fail only if it never does.
fn served(d: &Dump) -> Result<Served, String> {
    let mut out = Served::new();
    for (k, info) in &d.vips {
        let backends: BTreeMap<u32, (IpAddr, u32)> = d
            .backends
            .iter()
            .filter(|(_, b)| b.vip_id == info.vip_id && b.flags & BACKEND_ACTIVE != 0)
            .map(|(id, b)| (*id, (backend_addr(b), b.weight)))
            .collect();
        let in_row: BTreeSet<u32> = d
            .rows
            .get(&info.vip_id)
            .map(|r| r.iter().copied().collect())
            .unwrap_or_default();
        let weighted: BTreeSet<u32> = backends
            .iter()
            .filter(|(_, (_, w))| *w > 0)
            .map(|(id, _)| *id)
            .collect();
        if in_row != weighted {
            return Err(format!(
                "Maglev row of VIP id {} names {in_row:?}, its weighted backends are {weighted:?}",
                info.vip_id
            ));
        }
        let svc = lb_userspace::vip::Vip::from(k);
        out.insert(
            (svc.address, svc.port, svc.protocol),
            backends.into_values().collect(),
        );
    }
    Ok(out)
}

fn maps(r: &Router) -> Maps {
    Maps::open_pinned(&r.pins.path).expect("pinned maps")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn backends(pairs: &[(&str, u32)]) -> BTreeMap<IpAddr, u32> {
    pairs.iter().map(|(a, w)| (ip(a), *w)).collect()
}

/// Waits until the maps serve `want` for VIP:53/udp (None: not at all).
fn await_served(r: &Router, want: Option<BTreeMap<IpAddr, u32>>, what: &str) {
    let key = (ip(VIP), 53, 17);
    let deadline = Instant::now() + patience(Duration::from_secs(10));
    loop {
        let now = served(&dump(&maps(r)));
        if now.as_ref().is_ok_and(|n| n.get(&key) == want.as_ref()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the maps serve {:?} for {VIP}:53/udp, want {want:?}",
            now.map(|n| n.get(&key).cloned())
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + patience(limit);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `n` datagrams of one flow (fixed source port) from the client.
fn send(l: &Lab, sport: u16, n: usize) {
    l.client.run(|| {
        let s = UdpSocket::bind(("10.0.0.2", sport)).expect("bind client socket");
        for _ in 0..n {
            s.send_to(b"ping", (VIP, 53)).expect("send");
        }
    });
}

fn backend_packets(l: &Lab, r: &Router, backend: &str) -> f64 {
    let (_, body) = http_get(&l.lb, r.metrics, "/metrics");
    metric(
        &body,
        &format!("xlb_backend_packets_total{{vip=\"{VIP}:53/udp\",backend=\"{backend}\"}}"),
    )
    .unwrap_or(0.0)
}

/// A write that none of the daemon's watches selects (a Pod): versions
/// move past what the client has seen, so after a compaction resuming its
/// watch gets 410 Gone.
fn unwatched_write(l: &Lab, name: &str) {
    l.api.apply(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": { "containers": [{ "name": "c", "image": "example" }] }
    }));
}

fn ingress(l: &Lab, name: &str) -> Value {
    l.api
        .get("v1", "Service", Some("default"), name)
        .and_then(|s| s.pointer("/status/loadBalancer/ingress").cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn services_and_endpoint_slices_drive_the_maps() {
    if !privileged("services_and_endpoint_slices_drive_the_maps") {
        return;
    }
    let l = lab("maps", 1);
    l.api.apply(service("dns", 53, "UDP", json!({})));
    l.api
        .apply(slice("dns", vec![endpoint("10.0.0.17", true, true, false)]));
    let r = router(&l, "router-a", "lb0", "");
    let d = start(&l, &r, "xlb.log");

    // A Service appears: its VIP is programmed with its ready endpoint, and
    // the VIP goes back into its status.
    await_served(&r, Some(backends(&[("10.0.0.17", 1)])), "first sync");
    wait_until("the status write", Duration::from_secs(10), || {
        ingress(&l, "dns") == json!([{ "ip": VIP, "ipMode": "VIP" }])
    });

    // One established flow, to the only backend.
    send(&l, 40001, 20);
    wait_until("the flow's packets", Duration::from_secs(5), || {
        backend_packets(&l, &r, "10.0.0.17") >= 20.0
    });

    // A new endpoint joins; the old one starts terminating: it drains.
    l.api.apply(slice(
        "dns",
        vec![
            endpoint("10.0.0.17", false, true, true),
            endpoint("10.0.0.18", true, true, false),
        ],
    ));
    await_served(
        &r,
        Some(backends(&[("10.0.0.17", 0), ("10.0.0.18", 1)])),
        "terminating endpoint drains",
    );
    let (old17, old18) = (
        backend_packets(&l, &r, "10.0.0.17"),
        backend_packets(&l, &r, "10.0.0.18"),
    );
    send(&l, 40001, 10); // the established flow stays where it was
    send(&l, 40002, 10); // a new flow goes to the ready endpoint
    wait_until("drain counters", Duration::from_secs(5), || {
        backend_packets(&l, &r, "10.0.0.17") == old17 + 10.0
            && backend_packets(&l, &r, "10.0.0.18") == old18 + 10.0
    });

    // Unready: out. Removed: out.
    l.api.apply(slice(
        "dns",
        vec![
            endpoint("10.0.0.17", false, false, true),
            endpoint("10.0.0.18", true, true, false),
        ],
    ));
    await_served(
        &r,
        Some(backends(&[("10.0.0.18", 1)])),
        "not serving: removed",
    );
    l.api.apply(slice(
        "dns",
        vec![
            endpoint("10.0.0.17", true, true, false),
            endpoint("10.0.0.18", false, false, false),
        ],
    ));
    await_served(&r, Some(backends(&[("10.0.0.17", 1)])), "unready: removed");

    // A disconnect, then a disconnect the client can only recover from by
    // listing again (410 Gone): the maps never change.
    let before = dump(&maps(&r));
    let watches = l.api.watch_count();
    let reconciles = d.log_text().matches("reconciled").count();
    let relists = || {
        l.api
            .requests()
            .iter()
            .filter(|q| q.verb == "list" && q.resource == "endpointslices")
            .count()
    };
    l.api.disconnect_watches();
    l.api
        .wait_watches(watches, patience(Duration::from_secs(10)));
    assert_eq!(
        relists(),
        1,
        "a plain disconnect resumes the watch without a list"
    );
    unwatched_write(&l, "a");
    l.api.compact();
    l.api.disconnect_watches();
    wait_until(
        "the re-list after 410 Gone",
        Duration::from_secs(15),
        || relists() == 2,
    );
    l.api
        .wait_watches(watches, patience(Duration::from_secs(10)));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        dump(&maps(&r)),
        before,
        "maps changed across watch restarts"
    );
    assert_eq!(
        d.log_text().matches("reconciled").count(),
        reconciles,
        "a resync applied something"
    );

    // A change made while the client was away arrives with the re-list.
    unwatched_write(&l, "b");
    l.api.compact();
    l.api.disconnect_watches();
    l.api.apply(slice(
        "dns",
        vec![
            endpoint("10.0.0.17", true, true, false),
            endpoint("10.0.0.18", true, true, false),
        ],
    ));
    await_served(
        &r,
        Some(backends(&[("10.0.0.17", 1), ("10.0.0.18", 1)])),
        "change across a 410",
    );

    // A second Service asking for the same VIP and port is refused with an
    // Event; the first keeps serving, untouched.
    let before = dump(&maps(&r));
    l.api
        .apply(service("intruder", 53, "UDP", json!({ "xlb.io/vip": VIP })));
    wait_until("the conflict Event", Duration::from_secs(10), || {
        l.api
            .list("v1", "Event")
            .iter()
            .any(|e| e["involvedObject"]["name"] == "intruder" && e["reason"] == "VIPConflict")
    });
    let ev = l
        .api
        .list("v1", "Event")
        .into_iter()
        .find(|e| e["involvedObject"]["name"] == "intruder")
        .unwrap();
    assert_eq!(ev["type"], "Warning");
    assert_eq!(
        ev["message"],
        format!(
            "VIP {VIP}:53/udp is already used by Service default/dns; this Service is not served"
        )
    );
    assert_eq!(ev["involvedObject"]["kind"], "Service");
    assert_eq!(dump(&maps(&r)), before, "the first Service was touched");
    assert_eq!(ingress(&l, "intruder"), Value::Null);
    assert!(
        d.log_text().contains("VIPConflict"),
        "the refusal is logged too"
    );

    // The Service goes: so do its VIP and every backend entry.
    l.api.delete("v1", "Service", Some("default"), "intruder");
    l.api.delete("v1", "Service", Some("default"), "dns");
    await_served(&r, None, "Service deleted");
    let d2 = dump(&maps(&r));
    assert!(
        d2.vips.is_empty() && d2.backends.is_empty(),
        "stale entries: {d2:?}"
    );
    drop(d);
}

#[test]
fn a_restart_keeps_kubernetes_vips_while_the_api_server_is_down() {
    if !privileged("a_restart_keeps_kubernetes_vips_while_the_api_server_is_down") {
        return;
    }
    let l = lab("restart", 1);
    l.api.apply(service("dns", 53, "UDP", json!({})));
    l.api
        .apply(slice("dns", vec![endpoint("10.0.0.17", true, true, false)]));
    let r = router(&l, "router-a", "lb0", "");
    let mut d = start(&l, &r, "first.log");
    await_served(&r, Some(backends(&[("10.0.0.17", 1)])), "first sync");
    send(&l, 40001, 5);
    // The remembered state is written on the daemon's next tick.
    wait_until("the remembered VIPs", Duration::from_secs(5), || {
        r.state.join("kubernetes.json").exists()
    });
    d.terminate();

    let before = dump(&maps(&r));
    l.api.set_unavailable(true);
    let d = start(&l, &r, "second.log");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(dump(&maps(&r)), before, "the restart changed the maps");
    assert!(
        d.log_text()
            .contains("serving the Kubernetes VIPs applied before the restart"),
        "{}",
        d.log_text()
    );
    l.api.set_unavailable(false);
    wait_until("the watches", Duration::from_secs(15), || {
        l.api.watch_count() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(dump(&maps(&r)), before, "the sync changed the maps");
}

fn leader_metric(l: &Lab, r: &Router, holder: &str) -> Option<f64> {
    let (_, body) = http_get(&l.lb, r.metrics, "/metrics");
    metric(
        &body,
        &format!("xlb_vip_leader{{vip=\"{VIP}\",holder=\"{holder}\"}}"),
    )
}

/// The holder of the one bucket Lease of the two-router test
/// (`lease_buckets = 1`: every VIP and every Service in it).
fn lease_holder(l: &Lab) -> Option<String> {
    use lb_userspace::kubernetes::lease::{bucket_lease, bucket_of};
    l.api
        .get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("xlb-system"),
            &bucket_lease(bucket_of(VIP.parse().unwrap(), 1)),
        )
        .and_then(|v| v["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

#[test]
fn two_routers_one_leader_per_vip_and_rbac_covers_exactly_the_calls() {
    if !privileged("two_routers_one_leader_per_vip_and_rbac_covers_exactly_the_calls") {
        return;
    }
    let l = lab("leases", 2);
    l.api.apply(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": "worker-1" },
        "status": { "addresses": [{ "type": "InternalIP", "address": "10.0.0.17" }] }
    }));
    l.api.apply(service("dns", 53, "UDP", json!({})));
    l.api.apply(slice(
        "dns",
        vec![endpoint("10.244.0.5", true, true, false)],
    ));
    // One bucket: one Lease, one leader of every VIP.
    let extra = "backend_target = \"node\"\nlease_buckets = 1";
    let a = router(&l, "router-a", "lb0", extra);
    let b = router(&l, "router-b", "lb1", extra);
    let mut da = start(&l, &a, "a.log");
    let mut db = start(&l, &b, "b.log");
    // The node target: the node hosting the ready pod is the backend.
    await_served(&a, Some(backends(&[("10.0.0.17", 1)])), "router a");
    await_served(&b, Some(backends(&[("10.0.0.17", 1)])), "router b");

    // Exactly one leader, and both routers agree who it is.
    wait_until("a leader", Duration::from_secs(10), || {
        lease_holder(&l).is_some()
    });
    let first = lease_holder(&l).unwrap();
    wait_until("both routers agreeing", Duration::from_secs(10), || {
        leader_metric(&l, &a, &first).is_some() && leader_metric(&l, &b, &first).is_some()
    });

    // A conflicting Service, so the Event call is made too. Both routers
    // log the refusal; one posts it, once, into one Event object (found
    // against a real API server: one object per router and restart). Which
    // router reports on a Service is a hash of its name and the routers';
    // the name is picked so that it is the Lease holder, killed below.
    let reporter = |name: &str| {
        let both = ["router-a", "router-b"].map(str::to_owned);
        lb_userspace::kubernetes::Leadership {
            identity: first.clone(),
            routers: both.into(),
            ..Default::default()
        }
        .reports(&format!("default/{name}"))
    };
    let intruder = (0..)
        .map(|i| format!("intruder-{i}"))
        .find(|n| reporter(n))
        .unwrap();
    l.api
        .apply(service(&intruder, 53, "UDP", json!({ "xlb.io/vip": VIP })));
    let intruder_events = || {
        l.api
            .list("v1", "Event")
            .into_iter()
            .filter(|e| e["involvedObject"]["name"] == intruder.as_str())
            .collect::<Vec<_>>()
    };
    let conflict = "is already used by Service default/dns";
    wait_until(
        "both routers logging the refusal",
        Duration::from_secs(10),
        || da.log_text().contains(conflict) && db.log_text().contains(conflict),
    );
    wait_until("the conflict Event", Duration::from_secs(10), || {
        !intruder_events().is_empty()
    });
    let events = intruder_events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0]["count"], 1, "{events:#?}");
    assert_eq!(
        events[0]["reportingInstance"],
        first.as_str(),
        "{events:#?}"
    );
    let leads = |r: &Router| leader_metric(&l, r, &first) == Some(1.0);
    assert!(
        leads(&a) ^ leads(&b),
        "exactly one leader: a {:?}, b {:?}",
        leader_metric(&l, &a, &first),
        leader_metric(&l, &b, &first)
    );
    let (leader, dl, follower, df, second) = if first == "router-a" {
        (&a, &mut da, &b, &mut db, "router-b")
    } else {
        (&b, &mut db, &a, &mut da, "router-a")
    };
    let status =
        l.lb.command(xlb_tests::daemon::xlb_bin())
            .args(["status", "--pin-path"])
            .arg(&leader.pins.path)
            .arg("--state-dir")
            .arg(&leader.state)
            .output()
            .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(VIP) && l.contains(&first) && l.ends_with("leads")),
        "xlb status:\n{text}"
    );

    // The leader dies without a word: the follower takes over, but only
    // once the Lease has expired (3 s, seen on its own clock).
    dl.kill9();
    let killed = Instant::now();
    wait_until("the takeover", Duration::from_secs(15), || {
        lease_holder(&l).as_deref() == Some(second)
    });
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "taken after {took:?}, before the 3 s Lease expired"
    );
    wait_until("the follower leading", Duration::from_secs(5), || {
        leader_metric(&l, follower, second) == Some(1.0)
    });
    // The survivor reports the refusal it inherits once the killed
    // router's member Lease has expired: one more on the same object.
    wait_until("the Event counted again", Duration::from_secs(10), || {
        intruder_events().iter().any(|e| e["count"] == 2)
    });
    assert_eq!(intruder_events().len(), 1, "{:#?}", intruder_events());

    // The new leader loses the API server for three Lease durations: it
    // keeps leading throughout (fail-static: no router announcing the VIP
    // would be an outage), says so once, and is still the one holder when
    // the API server is back.
    l.api.set_unavailable(true);
    let lost = Instant::now();
    while lost.elapsed() < Duration::from_secs(9) {
        assert_eq!(
            leader_metric(&l, follower, second),
            Some(1.0),
            "stopped leading {:?} into the API outage",
            lost.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        df.log_text().contains("fail-static"),
        "no word of it in the log"
    );
    l.api.set_unavailable(false);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(leader_metric(&l, follower, second), Some(1.0));
    assert_eq!(lease_holder(&l).as_deref(), Some(second));

    // On SIGTERM it hands its Leases back rather than leaving them to
    // expire.
    assert_eq!(df.terminate(), Some(0));
    assert_eq!(lease_holder(&l), None, "the Lease was not released");
    assert!(df.log_text().contains("released the Lease"));

    // RBAC: the calls made are exactly the ones deploy/rbac.yaml grants.
    let used: BTreeSet<(String, String, String)> = l
        .api
        .requests()
        .iter()
        .filter(|q| q.code != 503)
        .map(|q| (q.group.clone(), q.resource.clone(), q.verb.clone()))
        .collect();
    let granted = granted_by(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac.yaml"));
    assert_eq!(
        used, granted,
        "calls made (left) and deploy/rbac.yaml grants (right) differ"
    );
}

/// (apiGroup, resource, verb) for every rule of the Roles and ClusterRoles
/// in a manifest.
fn granted_by(path: &Path) -> BTreeSet<(String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeSet::new();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).expect("deploy/rbac.yaml parses");
    for doc in docs {
        if !matches!(doc["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        for rule in doc["rules"].as_array().into_iter().flatten() {
            for g in rule["apiGroups"].as_array().into_iter().flatten() {
                for r in rule["resources"].as_array().into_iter().flatten() {
                    for v in rule["verbs"].as_array().into_iter().flatten() {
                        out.insert((
                            g.as_str().unwrap().to_owned(),
                            r.as_str().unwrap().to_owned(),
                            v.as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
        }
    }
    out
}

/// Holders of the bucket Leases, by bucket.
fn bucket_holders(l: &Lab) -> BTreeMap<u32, Option<String>> {
    l.api
        .list("coordination.k8s.io/v1", "Lease")
        .iter()
        .filter_map(|lease| {
            let name = lease["metadata"]["name"].as_str()?;
            let bucket = name.strip_prefix("xlb-bucket-")?.parse().ok()?;
            let holder = lease["spec"]["holderIdentity"].as_str().map(str::to_owned);
            Some((bucket, holder))
        })
        .collect()
}

#[test]
fn three_routers_share_the_buckets_with_a_flat_lease_load() {
    use std::fmt::Write as _;
    if !privileged("three_routers_share_the_buckets_with_a_flat_lease_load") {
        return;
    }
    let l = lab("buckets", 3);
    // 200 VIPs from the config file: elected like the Kubernetes ones.
    let mut vips = String::new();
    let mut in_use = BTreeSet::new();
    for i in 0..200u32 {
        let vip = format!("10.99.{}.{}", 1 + i / 200, 1 + i % 200);
        in_use.insert(lb_userspace::kubernetes::lease::bucket_of(
            vip.parse().unwrap(),
            32,
        ));
        let _ = write!(
            vips,
            "\n[[vip]]\naddress = \"{vip}\"\nport = 80\nprotocol = \"tcp\"\nbackends = [{{ address = \"10.0.0.17\" }}]\n"
        );
    }
    let names = ["router-a", "router-b", "router-c"];
    let routers: Vec<Router> = names
        .iter()
        .enumerate()
        .map(|(i, n)| router(&l, n, &format!("lb{i}"), &vips))
        .collect();
    let mut daemons: Vec<Daemon> = routers
        .iter()
        .zip(names)
        .map(|(r, n)| start(&l, r, &format!("{n}.log")))
        .collect();

    // Steady state: every bucket in use has one holder, and the three
    // share them: ceil(32 / 3) = 11 at most each.
    let share = in_use.len().div_ceil(3);
    let spread = |holders: &BTreeMap<u32, Option<String>>, alive: &[&str]| {
        let held: Vec<usize> = alive
            .iter()
            .map(|n| {
                in_use
                    .iter()
                    .filter(|b| holders.get(b).and_then(|h| h.as_deref()) == Some(*n))
                    .count()
            })
            .collect();
        (held.iter().sum::<usize>() == in_use.len(), held)
    };
    wait_until(
        "the buckets shared by three",
        Duration::from_secs(30),
        || {
            let (all, held) = spread(&bucket_holders(&l), &names);
            all && held.iter().all(|&n| n >= 1 && n <= share)
        },
    );

    // The election's API load per round does not depend on the 200 VIPs:
    // per router, one list, its own Lease and the buckets it holds.
    l.api.clear_requests();
    let window = Duration::from_secs(6);
    std::thread::sleep(window);
    let lease_calls = l
        .api
        .requests()
        .iter()
        .filter(|q| q.resource == "leases")
        .count();
    let rounds = window.as_millis() as f64 / 300.0;
    let per_router_round = lease_calls as f64 / 3.0 / rounds;
    assert!(
        per_router_round <= (2 + share + 1) as f64,
        "{per_router_round:.1} Lease calls per router per round for {} buckets in use \
         (one list, one member Lease, at most {share} buckets)",
        in_use.len()
    );

    // A router dies without a word: its buckets move to the two others,
    // once their Leases have expired (3 s, seen on their own clocks).
    daemons[0].kill9();
    let killed = Instant::now();
    wait_until(
        "the dead router's buckets taken over",
        Duration::from_secs(20),
        || spread(&bucket_holders(&l), &names[1..]).0,
    );
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(2500),
        "taken after {took:?}, before the 3 s Leases expired"
    );
    for d in &mut daemons[1..] {
        assert_eq!(d.terminate(), Some(0));
    }
    assert!(
        bucket_holders(&l).values().all(Option::is_none),
        "Leases left held after both routers stopped: {:?}",
        bucket_holders(&l)
    );
}

/// The pool address of a Service's status, if it has one.
fn status_ip(l: &Lab, name: &str) -> Option<String> {
    ingress(l, name)
        .pointer("/0/ip")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Found against a real API server: a Service that was served and is then
/// refused kept its VIP in its status, and since an address in a status is
/// reserved, the pool leaked it. Now its status is emptied and the address
/// goes to the next Service that needs one.
#[test]
fn a_refused_service_gives_its_pool_address_back() {
    if !privileged("a_refused_service_gives_its_pool_address_back") {
        return;
    }
    let l = lab("refused", 1);
    let a = router(&l, "router-a", "lb0", "");
    let _d = start(&l, &a, "a.log");
    // The pool has four addresses: four Services take them all.
    let names = ["s0", "s1", "s2", "s3"];
    for n in names {
        l.api.apply(service(n, 53, "UDP", json!({})));
        l.api
            .apply(slice(n, vec![endpoint("10.244.0.5", true, true, false)]));
    }
    wait_until("four statuses", Duration::from_secs(20), || {
        names.iter().all(|n| status_ip(&l, n).is_some())
    });
    l.api.apply(service("s4", 53, "UDP", json!({})));
    l.api
        .apply(slice("s4", vec![endpoint("10.244.0.5", true, true, false)]));
    wait_until(
        "s4 refused for want of an address",
        Duration::from_secs(20),
        || {
            l.api
                .list("v1", "Event")
                .iter()
                .any(|e| e["involvedObject"]["name"] == "s4" && e["reason"] == "NoAddress")
        },
    );
    assert_eq!(status_ip(&l, "s4"), None);

    // s1 becomes refused (an annotation that is no address): its metadata
    // changes, its status stays as it was, as with a real API server.
    let freed = status_ip(&l, "s1").unwrap();
    let mut s1 = l.api.get("v1", "Service", Some("default"), "s1").unwrap();
    s1["metadata"]["annotations"] = json!({ "xlb.io/vip": "not-an-address" });
    // What was stored, not a later read: the daemon may already have
    // emptied the status by then.
    let stored = l.api.apply(s1);
    assert_eq!(
        stored.pointer("/status/loadBalancer/ingress/0/ip"),
        Some(&json!(freed))
    );
    wait_until("s1's status emptied", Duration::from_secs(20), || {
        status_ip(&l, "s1").is_none()
    });
    wait_until("s1's address given to s4", Duration::from_secs(20), || {
        status_ip(&l, "s4").as_deref() == Some(freed.as_str())
    });
}

/// Found against a real API server: after a 40 s outage the watches took
/// about 30 s to come back (kube's default backoff, and its client's own
/// retries). A change made once the API server is back reaches the maps
/// within 5 s.
#[test]
fn the_cluster_is_followed_again_within_seconds_of_a_40_s_outage() {
    if !privileged("the_cluster_is_followed_again_within_seconds_of_a_40_s_outage") {
        return;
    }
    let l = lab("outage", 1);
    l.api.apply(service("dns", 53, "UDP", json!({})));
    l.api
        .apply(slice("dns", vec![endpoint("10.0.0.17", true, true, false)]));
    let r = router(&l, "router-a", "lb0", "");
    let _d = start(&l, &r, "a.log");
    await_served(&r, Some(backends(&[("10.0.0.17", 1)])), "before the outage");
    l.api.set_unavailable(true);
    std::thread::sleep(Duration::from_secs(40));
    l.api.set_unavailable(false);
    let back = Instant::now();
    l.api.apply(slice(
        "dns",
        vec![
            endpoint("10.0.0.17", true, true, false),
            endpoint("10.0.0.18", true, true, false),
        ],
    ));
    let want = Some(backends(&[("10.0.0.17", 1), ("10.0.0.18", 1)]));
    let key = (ip(VIP), 53, 17);
    while served(&dump(&maps(&r)))
        .ok()
        .and_then(|s| s.get(&key).cloned())
        != want
    {
        assert!(
            back.elapsed() < patience(Duration::from_secs(5)),
            "the change had not reached the maps {:?} after the API server came back",
            back.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Found against a real API server: a Lease namespace that does not exist
/// gave a 404 warning per VIP every round. It is said once, with the fix,
/// while the data plane serves on; once the namespace exists the Leases
/// are taken.
#[test]
fn a_missing_lease_namespace_is_said_once_and_serving_goes_on() {
    if !privileged("a_missing_lease_namespace_is_said_once_and_serving_goes_on") {
        return;
    }
    let l = lab("nons", 1);
    l.api.set_namespace_missing("xlb-system", true);
    l.api.apply(service("dns", 53, "UDP", json!({})));
    l.api
        .apply(slice("dns", vec![endpoint("10.0.0.17", true, true, false)]));
    let r = router(&l, "router-a", "lb0", "");
    let d = start(&l, &r, "xlb.log");
    await_served(
        &r,
        Some(backends(&[("10.0.0.17", 1)])),
        "served without Leases",
    );
    let refused_creates = || {
        l.api
            .requests()
            .iter()
            .filter(|q| q.verb == "create" && q.resource == "leases" && q.code == 404)
            .count()
    };
    // Five rounds of refused creates (one every 300 ms), counted at the
    // server rather than timed.
    wait_until("five refused rounds", Duration::from_secs(30), || {
        refused_creates() >= 5
    });
    let said = |d: &Daemon| {
        d.log_text()
            .matches("the Lease namespace does not exist")
            .count()
    };
    assert_eq!(said(&d), 1, "log:\n{}", d.log_text());
    assert!(
        d.log_text().contains("kubernetes.lease_namespace"),
        "the line names the fix"
    );

    l.api.set_namespace_missing("xlb-system", false);
    wait_until("the member Lease held", Duration::from_secs(20), || {
        l.api
            .list("coordination.k8s.io/v1", "Lease")
            .iter()
            .any(|x| x["spec"]["holderIdentity"] == "router-a")
    });
    assert_eq!(said(&d), 1, "log:\n{}", d.log_text());
}

/// A Service that asks for a health check (`xlb.io/health-check`) is gated
/// on it in addition to readiness: of two ready endpoints, the one whose
/// probe fails is not served; when both fail, both are kept (fail open).
/// A Service without the annotation is not checked at all.
#[test]
fn a_health_check_annotation_gates_ready_endpoints_on_their_probes() {
    if !privileged("a_health_check_annotation_gates_ready_endpoints_on_their_probes") {
        return;
    }
    let l = lab("health", 1);
    // The client's namespace plays a live backend: TCP 53 answers there;
    // 10.0.0.17 is a neighbour that never answers.
    let bin = xlb_tests::topology::workspace_bin("xlb-tests", "xlb-backend");
    let log = std::fs::File::create(l.dir.join("backend.log")).unwrap();
    let mut live = l
        .client
        .command(&bin)
        .args(["live", "--http", "53", "--sink", "9053"])
        .stderr(log)
        .spawn()
        .expect("xlb-backend");
    wait_until("the backend listening", Duration::from_secs(10), || {
        std::fs::read_to_string(l.dir.join("backend.log")).is_ok_and(|t| t.contains("http on"))
    });
    l.api.apply(service(
        "dns",
        53,
        "UDP",
        json!({ "xlb.io/health-check": "tcp" }),
    ));
    let both = vec![
        endpoint("10.0.0.2", true, true, false),
        endpoint("10.0.0.17", true, true, false),
    ];
    l.api.apply(slice("dns", both));
    let r = router(
        &l,
        "router-a",
        "lb0",
        "[health]\nvia = \"direct\"\ninterval_ms = 300\ntimeout_ms = 200\nrise = 1\nfall = 2\n",
    );
    let d = start(&l, &r, "xlb.log");
    await_served(
        &r,
        Some(backends(&[("10.0.0.2", 1)])),
        "the dead endpoint is out",
    );
    let health = || -> Value {
        std::fs::read_to_string(r.state.join("health.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    let h = health();
    let states: BTreeMap<String, String> = h["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["backend"].as_str().unwrap().into(),
                b["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(states["10.0.0.17"], "down", "{h:#}");
    assert_eq!(states["10.0.0.2"], "up", "{h:#}");

    // Both fail: both are kept, and that is said.
    let _ = live.kill();
    let _ = live.wait();
    await_served(
        &r,
        Some(backends(&[("10.0.0.2", 1), ("10.0.0.17", 1)])),
        "every endpoint down: fail open",
    );
    wait_until("fail_open in the status", Duration::from_secs(10), || {
        health()["fail_open"] == json!([format!("{VIP}:53/udp")])
    });
    drop(d);
}

/// The same annotation through the DSR path, on the veth topology with real
/// DSR backends (`xlb decap`, the VIP on their loopback): a backend whose
/// DSR set-up breaks (the VIP gone from its loopback) while its
/// EndpointSlice still says ready is gated out by the check, which probes
/// the VIP through the tunnel; repaired, it is served again. Readiness
/// alone could not see this: the pod and its own address are fine.
#[test]
fn a_health_check_annotation_through_the_dsr_path_gates_a_broken_dsr_backend() {
    use xlb_tests::topology::{Topology, VIP4, backend4, curl, lb4, start_lb};
    if !privileged("a_health_check_annotation_through_the_dsr_path_gates_a_broken_dsr_backend") {
        return;
    }
    let mut t = Topology::new(1, 2);
    t.start_backends(true);
    let api = t.lbs[0].run(KubeApi::start);
    let kubeconfig = t.dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    api.apply(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "annotations": {
                "xlb.io/health-check": "http",
                "xlb.io/health-check-path": "/healthz"
            }
        },
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "xlb.io/xlb",
            "selector": { "app": "web" },
            "ports": [{ "name": "http", "port": 80, "protocol": "TCP", "targetPort": 80 }],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "externalTrafficPolicy": "Cluster"
        }
    }));
    let ready: Vec<Value> = (0..2)
        .map(|i| endpoint(&backend4(i).to_string(), true, true, false))
        .collect();
    api.apply(k8s_objects::slice("web", ("http", 80, "TCP"), ready));
    let pins = PinDir::new();
    let state = t.dir.join("state");
    let metrics = free_port();
    let text = format!(
        r#"[dataplane]
interfaces = ["eth0"]
xdp_mode = "generic"
pin_path = "{pins}"
state_dir = "{state}"
encap = "ipip"
maglev_table_size = {M}
max_vips = 16
max_backends = 64
flow_table_size = 4096

[metrics]
listen = "127.0.0.1:{metrics}"

[health]
source_v4 = "{source}"
interval_ms = 300
timeout_ms = 200
rise = 1
fall = 2

[kubernetes]
enabled = true
kubeconfig = "{kubeconfig}"
pools = ["{VIP4}-{VIP4}"]
lease_namespace = "xlb-system"
node_name = "router-a"
lease_duration_ms = 3000
renew_deadline_ms = 1500
retry_period_ms = 300
"#,
        pins = pins.path.display(),
        state = state.display(),
        kubeconfig = kubeconfig.display(),
        source = lb4(0),
    );
    let config = t.dir.join("xlb.toml");
    std::fs::write(&config, text).unwrap();
    let lb = start_lb(&t, 0, &config, "lb.log");
    t.adopt("lb", lb);
    let key = (IpAddr::V4(VIP4), 80, lb_common::PROTO_TCP);
    let served_now = || -> Option<BTreeSet<IpAddr>> {
        let m = Maps::open_pinned(&pins.path).ok()?;
        served(&dump(&m))
            .ok()?
            .get(&key)
            .map(|b| b.keys().copied().collect())
    };
    let health = || -> Value {
        std::fs::read_to_string(state.join("health.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or(Value::Null)
    };
    let entry = |backend: IpAddr| -> Value {
        health()["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|b| b["backend"].as_str() == Some(&backend.to_string()))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let both: BTreeSet<IpAddr> = (0..2).map(|i| IpAddr::V4(backend4(i))).collect();
    let be1 = IpAddr::V4(backend4(1));
    wait_until(
        "both endpoints up, through the DSR path",
        Duration::from_secs(15),
        || both.iter().all(|b| entry(*b)["state"] == "up") && served_now().as_ref() == Some(&both),
    );
    let e = entry(be1);
    assert_eq!(e["via"], "dsr", "{e:#}");
    assert_eq!(
        e["target"],
        format!("{VIP4}:80"),
        "probes go to the VIP: {e:#}"
    );
    assert_eq!(e["kind"], "http", "{e:#}");

    // be1 loses the VIP on its loopback: its pod, its own address and its
    // EndpointSlice are all fine, its DSR service is not.
    t.backends[1].ip(&["addr", "del", &format!("{VIP4}/32"), "dev", "lo"]);
    let be0_only: BTreeSet<IpAddr> = [IpAddr::V4(backend4(0))].into();
    wait_until("be1 gated out", Duration::from_secs(10), || {
        served_now().as_ref() == Some(&be0_only)
    });
    // The status file follows the data plane within 100 ms.
    wait_until("be1 down in the status", Duration::from_secs(2), || {
        entry(be1)["state"] == "down"
    });
    let e = entry(be1);
    assert_eq!(e["last_failure"]["failure"], "timeout", "{e:#}");
    let seen = curl(&t, IpAddr::V4(VIP4), 20);
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["be0"], "{seen:?}");

    // Repaired: served again, the EndpointSlice never having changed.
    t.backends[1].ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"]);
    wait_until("be1 restored", Duration::from_secs(10), || {
        served_now().as_ref() == Some(&both)
    });
    wait_until("be1 up in the status", Duration::from_secs(2), || {
        entry(be1)["state"] == "up"
    });
    std::thread::sleep(Duration::from_millis(200));
    let seen = curl(&t, IpAddr::V4(VIP4), 40);
    assert!(seen.contains_key("be1"), "be1 serves again: {seen:?}");
}
