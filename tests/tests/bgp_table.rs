//! The `bgp` announce mode's contract with the node's routing daemon,
//! without one: `xlb run` keeps one blackhole route per announceable VIP
//! address in its table (4243, protocol 178), withdraws it when no backend
//! takes new flows, every backend fails its health checks, or the node is
//! drained, leaves it through a kill -9 and
//! a restart, and `xlb stop` removes it. (`bgp.rs` runs real bird2 and ECMP
//! on top of this.)

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use xlb_tests::{
    netns::{PinDir, privileged},
    topology::{Ns, Topology, VIP4, VIP6, lb_config, start_lb, workspace_bin},
    vm::patience,
};

const ANNOUNCE: &str = "\n[announce]\nmode = \"bgp\"\n";
/// A check every backend fails at once: nothing listens on port 9.
const HEALTH_FAILING: &str = "\n[health]\nkind = \"tcp\"\nvia = \"direct\"\nport = 9\n\
                              interval_ms = 200\ntimeout_ms = 100\nfall = 1\n";

/// The addresses routed in table 4243 by protocol 178, as blackholes.
fn table(t: &Topology) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for family in ["-4", "-6"] {
        let (code, json, err) = t.run_in(
            Ns::Lb(0),
            "ip",
            &["-j", family, "route", "show", "table", "4243"],
        );
        assert_eq!(code, 0, "ip route: {err}");
        let routes: serde_json::Value =
            serde_json::from_str(if json.trim().is_empty() { "[]" } else { &json }).unwrap();
        for r in routes.as_array().unwrap() {
            assert_eq!(r["type"], "blackhole", "{r}");
            assert_eq!(r["protocol"], "178", "{r}");
            out.insert(r["dst"].as_str().unwrap().to_owned());
        }
    }
    out
}

fn both() -> BTreeSet<String> {
    [VIP4.to_string(), VIP6.to_string()].into_iter().collect()
}

fn wait_table(t: &Topology, want: &BTreeSet<String>, what: &str) {
    let deadline = Instant::now() + patience(Duration::from_secs(15));
    loop {
        let now = table(t);
        if &now == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: table 4243 has {now:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn xlb(t: &Topology, args: &[&str]) -> String {
    let (code, out, err) = t.run_in(Ns::Lb(0), workspace_bin("lb-userspace", "xlb"), args);
    assert_eq!(code, 0, "xlb {args:?}: {out}{err}");
    out
}

#[test]
fn the_route_table_follows_backends_drain_and_stop_but_not_restarts() {
    if !privileged("the_route_table_follows_backends_drain_and_stop_but_not_restarts") {
        return;
    }
    let mut t = Topology::new(1, 3);
    t.start_backends(true);
    let pins = PinDir::new();
    let state = t.dir.join("state");
    let state = state.to_str().unwrap();
    let status_args = [
        "status",
        "--pin-path",
        pins.path.to_str().unwrap(),
        "--state-dir",
        state,
    ];
    let cfg = lb_config(&t, &pins, "ipip", &[1, 1, 1], "generic", ANNOUNCE);
    let lb = start_lb(&t, 0, &cfg, "lb.log");
    wait_table(&t, &both(), "after start");

    // Every backend drained: nothing takes new flows, nothing is announced.
    lb_config(&t, &pins, "ipip", &[0, 0, 0], "generic", ANNOUNCE);
    wait_table(&t, &BTreeSet::new(), "all backends drained");
    let status = xlb(&t, &status_args);
    assert!(status.contains("withheld: no active backend"), "{status}");
    lb_config(&t, &pins, "ipip", &[1, 1, 1], "generic", ANNOUNCE);
    wait_table(&t, &both(), "backends back");

    // Every backend failing its health checks (nothing listens on port 9):
    // fail_open keeps them serving, but the VIPs are withdrawn, unless
    // announce_fail_open says otherwise.
    let failing = format!("{ANNOUNCE}{HEALTH_FAILING}");
    lb_config(&t, &pins, "ipip", &[1, 1, 1], "generic", &failing);
    wait_table(&t, &BTreeSet::new(), "every backend failing its checks");
    let status = xlb(&t, &status_args);
    assert!(
        status.contains("withheld: all backends failing health checks"),
        "{status}"
    );
    let kept = format!("{failing}\n[announce.bgp]\nannounce_fail_open = true\n");
    lb_config(&t, &pins, "ipip", &[1, 1, 1], "generic", &kept);
    wait_table(&t, &both(), "announce_fail_open");
    lb_config(&t, &pins, "ipip", &[1, 1, 1], "generic", ANNOUNCE);
    wait_table(&t, &both(), "no checks");

    // A drain withdraws everything, and says so.
    let out = xlb(&t, &["drain", "--state-dir", state]);
    assert!(out.contains("drained"), "{out}");
    assert_eq!(
        table(&t),
        BTreeSet::new(),
        "xlb drain returned before the withdrawal"
    );
    let status = xlb(&t, &status_args);
    assert!(status.contains("DRAINING"), "{status}");
    xlb(&t, &["undrain", "--state-dir", state]);
    wait_table(&t, &both(), "undrained");

    // kill -9, then a restart: the routes never leave.
    let mut lb = lb;
    lb.kill().unwrap();
    lb.wait().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(table(&t), both(), "a killed daemon's routes stay");
    let lb = start_lb(&t, 0, &cfg, "lb-term0.log");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(table(&t), both(), "a restart keeps them");
    assert!(
        !t.log("lb-term0.log").contains("withdrawn"),
        "{}",
        t.log("lb-term0.log")
    );

    // SIGTERM alone (an upgrade, a reboot of the pod) withdraws nothing;
    // stopped for good (`xlb stop`), everything. Several times, at
    // different points of the announcer's 200 ms pass: a pass under way
    // when the reconciler stops gets no answer, which once read as
    // "detached" and withdrew everything.
    let mut lb = lb;
    for (i, after_ms) in [0u64, 70, 130, 190, 260].into_iter().enumerate() {
        std::thread::sleep(Duration::from_millis(after_ms));
        unsafe { libc::kill(lb.id() as i32, libc::SIGTERM) };
        lb.wait().unwrap();
        let log = format!("lb-term{i}.log");
        assert_eq!(table(&t), both(), "SIGTERM {i} keeps the routes");
        assert!(!t.log(&log).contains("withdrawn"), "{}", t.log(&log));
        if i < 4 {
            lb = start_lb(&t, 0, &cfg, &format!("lb-term{}.log", i + 1));
            wait_table(&t, &both(), "restarted");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let out = xlb(
        &t,
        &[
            "stop",
            "--pin-path",
            pins.path.to_str().unwrap(),
            "--state-dir",
            state,
        ],
    );
    assert!(out.contains("withdrew the BGP route"), "{out}");
    assert_eq!(table(&t), BTreeSet::new(), "xlb stop withdraws");
}
