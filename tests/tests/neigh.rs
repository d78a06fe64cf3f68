//! The daemon's neighbour keeper (lb-userspace `neigh`) against a real
//! kernel: a balancer namespace with one veth to a peer namespace that
//! holds two backends' addresses (v4 and v6) and a gateway's, with routes
//! through that gateway, a blackhole, and on-link addresses nobody owns.
//! What the kernel's neighbour table says is read with `ip -j neigh`,
//! independently of the code under test.

use std::{
    future::Future,
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lb_userspace::neigh::{self, Unreachable};
use xlb_tests::netns::{NetNs, privileged};

/// The balancer's side of the veth.
const DEV: &str = "xn0";
const V4: &str = "10.77.0.2";
const V6: &str = "fd77::2";
const GW4: &str = "10.77.0.3";
const GW6: &str = "fd77::3";
/// Behind the gateways (nothing there: only the gateways must answer).
const BEHIND4: &str = "10.78.0.9";
const BEHIND6: &str = "fd78::9";
/// On the link, owned by no one: ARP/NDP gets no answer.
const SILENT4: &str = "10.77.0.99";
const SILENT6: &str = "fd77::99";
const NO_ROUTE: &str = "10.200.0.1";
/// Permanent entries an operator made (no host behind them): xlb must
/// leave them as they are.
const STATIC4: &str = "10.77.0.50";
const STATIC6: &str = "fd77::50";
const BLACKHOLE: &str = "10.79.0.1";

struct Lab {
    lb: NetNs,
    _peer: NetNs,
}

fn lab() -> Lab {
    let lb = NetNs::new();
    let peer = NetNs::new();
    for ns in [&lb, &peer] {
        // Addresses usable at once: NDP from a tentative address waits.
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
    }
    lb.ip(&[
        "link", "add", DEV, "type", "veth", "peer", "name", "xn1", "netns", &peer.name,
    ]);
    lb.ip(&["addr", "add", "10.77.0.1/24", "dev", DEV]);
    lb.ip(&["addr", "add", "fd77::1/64", "dev", DEV, "nodad"]);
    lb.ip(&["link", "set", DEV, "up"]);
    for a in ["10.77.0.2/24", "10.77.0.3/24"] {
        peer.ip(&["addr", "add", a, "dev", "xn1"]);
    }
    for a in ["fd77::2/64", "fd77::3/64"] {
        peer.ip(&["addr", "add", a, "dev", "xn1", "nodad"]);
    }
    peer.ip(&["link", "set", "xn1", "up"]);
    lb.ip(&["route", "add", "10.78.0.0/24", "via", GW4]);
    lb.ip(&["-6", "route", "add", "fd78::/64", "via", GW6]);
    lb.ip(&["route", "add", "blackhole", "10.79.0.0/24"]);
    lb.static_neighbours(
        DEV,
        &[
            (STATIC4, "02:00:00:00:00:50"),
            (STATIC6, "02:00:00:00:00:56"),
        ],
    );
    Lab { lb, _peer: peer }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// Runs `f`'s future on a single-threaded runtime made inside `ns`: a
/// call that blocked its thread would stop every other task there.
fn in_ns<T: Send, F: Future<Output = T>>(ns: &NetNs, f: impl FnOnce() -> F + Send) -> T {
    ns.run(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(f())
    })
}

/// The state of `addr`'s entry in `ns`'s neighbour table, as `ip` says.
fn neigh_state(ns: &NetNs, addr: &str) -> Option<String> {
    let out = ns
        .command("ip")
        .args(["-j", "neigh", "show", "to", addr, "dev", DEV])
        .output()
        .expect("run ip neigh");
    assert!(
        out.status.success(),
        "ip neigh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("ip -j neigh: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let e = v.as_array()?.iter().find(|e| e["dst"] == addr)?;
    let state: Vec<&str> = e["state"]
        .as_array()
        .map(|s| s.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let lladdr = e.get("lladdr").is_some();
    Some(format!(
        "{}{}",
        state.join(","),
        if lladdr { " lladdr" } else { "" }
    ))
}

/// What `bpf_fib_lookup` accepts: a link-layer address, and a valid state.
fn usable(state: Option<&str>) -> bool {
    state.is_some_and(|s| {
        s.ends_with(" lladdr")
            && ["REACHABLE", "STALE", "DELAY", "PROBE", "PERMANENT"]
                .iter()
                .any(|ok| s.contains(ok))
    })
}

#[test]
fn direct_backends_of_both_families_resolve_before_the_deadline_and_static_entries_stay() {
    if !privileged(
        "direct_backends_of_both_families_resolve_before_the_deadline_and_static_entries_stay",
    ) {
        return;
    }
    let lab = lab();
    let deadline = Duration::from_secs(10);
    let (got, took) = in_ns(&lab.lb, || async move {
        let started = Instant::now();
        let addrs = [V4, V6, STATIC4, STATIC6].map(ip);
        let got = neigh::resolve(&addrs, deadline).await;
        let took = started.elapsed();
        let touched = neigh::touch(&addrs).await;
        (got.and_then(|g| touched.map(|t| [g, t].concat())), took)
    });
    let got = got.expect("resolve and touch");
    assert!(got.is_empty(), "every next hop is usable, yet: {got:?}");
    for a in [V4, V6] {
        let s = neigh_state(&lab.lb, a);
        assert!(usable(s.as_deref()), "{a}'s neighbour entry is {s:?}");
    }
    for a in [STATIC4, STATIC6] {
        assert_eq!(
            neigh_state(&lab.lb, a).as_deref(),
            Some("PERMANENT lladdr"),
            "an operator's permanent entry for {a} stays permanent"
        );
    }
    assert!(
        took < deadline / 2,
        "resolve returned after {took:?}: it must return once the entries are usable, not at its deadline ({deadline:?})"
    );
}

#[test]
fn a_backend_behind_a_gateway_gets_the_gateways_entry_resolved() {
    if !privileged("a_backend_behind_a_gateway_gets_the_gateways_entry_resolved") {
        return;
    }
    let lab = lab();
    let deadline = Duration::from_secs(10);
    let (got, took) = in_ns(&lab.lb, || async move {
        let started = Instant::now();
        let got = neigh::resolve(&[ip(BEHIND4), ip(BEHIND6)], deadline).await;
        (got, started.elapsed())
    });
    let got = got.expect("resolve");
    assert!(got.is_empty(), "the gateways answer, yet: {got:?}");
    for gw in [GW4, GW6] {
        let s = neigh_state(&lab.lb, gw);
        assert!(
            usable(s.as_deref()),
            "gateway {gw}'s neighbour entry is {s:?}"
        );
    }
    for b in [BEHIND4, BEHIND6] {
        assert_eq!(
            neigh_state(&lab.lb, b),
            None,
            "{b} is not on the link: no neighbour entry of its own"
        );
    }
    assert!(took < deadline / 2, "resolve returned after {took:?}");
}

#[test]
fn unroutable_and_silent_backends_are_reported_without_blocking_the_runtime() {
    if !privileged("unroutable_and_silent_backends_are_reported_without_blocking_the_runtime") {
        return;
    }
    let lab = lab();
    let deadline = Duration::from_secs(2);
    let ticks = Arc::new(AtomicU64::new(0));
    let counted = ticks.clone();
    let (got, took) = in_ns(&lab.lb, || async move {
        let ticker = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        let started = Instant::now();
        let addrs = [NO_ROUTE, BLACKHOLE, SILENT4, SILENT6, V4].map(ip);
        let got = neigh::resolve(&addrs, deadline).await;
        let took = started.elapsed();
        ticker.abort();
        (got, took)
    });
    let mut got = got.expect("resolve");
    got.sort_by_key(|(a, _)| *a);
    let silent = |a: &str| Unreachable::NoAnswer {
        next_hop: ip(a),
        iface: DEV.to_string(),
    };
    let mut want = vec![
        (ip(NO_ROUTE), Unreachable::NoRoute),
        (ip(BLACKHOLE), Unreachable::Blackhole),
        (ip(SILENT4), silent(SILENT4)),
        (ip(SILENT6), silent(SILENT6)),
    ];
    want.sort_by_key(|(a, _)| *a);
    assert_eq!(got, want, "{V4} answers; the others cannot be sent to");
    assert!(
        took >= deadline - Duration::from_millis(50) && took < deadline + Duration::from_secs(3),
        "with silent next hops resolve waits for its deadline ({deadline:?}), no longer: took {took:?}"
    );
    let ticks = ticks.load(Ordering::Relaxed);
    // 200 ticks of 10 ms fit in 2 s; a blocked thread would allow ~none.
    assert!(
        ticks >= 40,
        "a task on the same single-threaded runtime ticked {ticks} times while resolve waited {took:?}: resolve blocked it"
    );
    assert!(
        usable(neigh_state(&lab.lb, V4).as_deref()),
        "{V4} resolved alongside"
    );
}

#[test]
fn touch_reports_next_hops_that_failed_to_answer_and_unroutable_backends() {
    if !privileged("touch_reports_next_hops_that_failed_to_answer_and_unroutable_backends") {
        return;
    }
    let lab = lab();
    let addrs = [SILENT4, V6, NO_ROUTE].map(ip);
    let first = in_ns(&lab.lb, || async move { neigh::touch(&addrs).await }).expect("touch");
    assert_eq!(
        first,
        vec![(ip(NO_ROUTE), Unreachable::NoRoute)],
        "the first touch only asks: no answer is known yet"
    );
    // The kernel gives up after its probes (3 s by default).
    let until = Instant::now() + Duration::from_secs(30);
    while neigh_state(&lab.lb, SILENT4).as_deref() != Some("FAILED") {
        assert!(
            Instant::now() < until,
            "{SILENT4} is still {:?} after 30 s",
            neigh_state(&lab.lb, SILENT4)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let until = Instant::now() + Duration::from_secs(30);
    while !usable(neigh_state(&lab.lb, V6).as_deref()) {
        assert!(Instant::now() < until, "{V6} never resolved after touch");
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut second = in_ns(&lab.lb, || async move { neigh::touch(&addrs).await }).expect("touch");
    second.sort_by_key(|(a, _)| *a);
    assert_eq!(
        second,
        vec![
            (
                ip(SILENT4),
                Unreachable::NoAnswer {
                    next_hop: ip(SILENT4),
                    iface: DEV.to_string()
                }
            ),
            (ip(NO_ROUTE), Unreachable::NoRoute),
        ]
    );
    assert_ne!(
        neigh_state(&lab.lb, SILENT4).as_deref(),
        Some("FAILED"),
        "touch asks again for a failed next hop"
    );
}
