//! End to end: real TCP from a client namespace through `xlb run` on a veth
//! to DSR backends in their own namespaces (see `xlb_tests::topology`).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpStream},
    process::Child,
    time::Duration,
};

use lb_common::Outcome;
use lb_userspace::xdp::Maps;
use xlb_tests::{
    netns::{PinDir, privileged},
    topology::{
        Ns, Topology, VIP4, VIP6, capture_replies, captured, curl, curl_with, lb_config, start_lb,
        stop_lb, workspace_bin,
    },
};

/// Each backend's share within 5 standard deviations of its weight's share.
fn assert_shares(seen: &BTreeMap<String, usize>, weights: &[u32], what: &str) {
    let n: usize = seen.values().sum();
    let total: u32 = weights.iter().sum();
    for (i, &w) in weights.iter().enumerate() {
        let got = seen.get(&format!("be{i}")).copied().unwrap_or(0) as f64;
        let p = f64::from(w) / f64::from(total);
        let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
        assert!(
            (got - mean).abs() <= 5.0 * sd.max(1.0),
            "{what}: be{i} (weight {w}) answered {got} of {n}, expected {mean:.0} ± {:.0}: {seen:?}",
            5.0 * sd
        );
    }
}

#[test]
fn http_through_both_dsr_modes_ipv4_and_ipv6() {
    if !privileged("http_through_both_dsr_modes_ipv4_and_ipv6") {
        return;
    }
    let mut t = Topology::new(1, 3);
    t.start_backends(true);
    let weights = [1, 1, 2];
    for encap in ["ipip", "l2"] {
        let pins = PinDir::new();
        let cfg = lb_config(&t, &pins, encap, &weights, "generic", "");
        let lb = start_lb(&t, 0, &cfg, &format!("lb-{encap}.log"));
        let cap = capture_replies(&t, 0);
        let v4 = curl(&t, IpAddr::V4(VIP4), 1000);
        let v6 = curl(&t, IpAddr::V6(VIP6), 1000);
        let replies = captured(&t, 0, cap);
        assert_shares(&v4, &weights, &format!("{encap} IPv4"));
        assert_shares(&v6, &weights, &format!("{encap} IPv6"));
        assert!(
            replies.is_empty(),
            "{encap}: {} replies crossed the LB, e.g. {:?}",
            replies.len(),
            &replies[..replies.len().min(3)]
        );
        let m = Maps::open_pinned(&pins.path).unwrap();
        let tx = m.outcome(Outcome::Tx).unwrap();
        let vip_packets = m.vip_counters(0).unwrap().packets + m.vip_counters(1).unwrap().packets;
        assert_eq!(
            tx, vip_packets,
            "{encap}: every client->VIP packet forwarded, nothing else"
        );
        assert!(
            tx >= 2000 * 3,
            "{encap}: at least SYN, ACK, request, FIN per connection: {tx}"
        );
        assert_eq!(
            m.outcome(Outcome::DropNoNeigh).unwrap(),
            0,
            "{encap}: neighbours unresolved"
        );
        eprintln!("{encap}: v4 {v4:?} v6 {v6:?}; {tx} packets forwarded, 0 replies through the LB");
        stop_lb(&t, 0, lb, &pins);
    }
}

/// An HTTP/1.1 keep-alive connection to a VIP: every request on it shows
/// which backend the flow is on.
struct Held {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Held {
    fn open(vip: IpAddr) -> Self {
        let c = TcpStream::connect_timeout(&SocketAddr::new(vip, 80), Duration::from_secs(3))
            .unwrap_or_else(|e| {
                let routes =
                    std::fs::read_to_string("/proc/thread-self/net/route").unwrap_or_default();
                let ns = std::fs::read_link("/proc/thread-self/ns/net")
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                panic!("connect to {vip}: {e}; this thread's namespace {ns}, routes:\n{routes}")
            });
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        Self {
            w: c.try_clone().unwrap(),
            r: BufReader::new(c),
        }
    }

    /// The backend answering a request on this same connection.
    fn ask(&mut self) -> String {
        self.w
            .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
            .expect("request on the held connection");
        let mut len = 0;
        loop {
            let mut line = String::new();
            self.r.read_line(&mut line).expect("response head");
            assert!(!line.is_empty(), "the held connection was closed");
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        self.r.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap().trim().to_string()
    }
}

/// Writes a new config and makes the daemon read it (SIGHUP), waiting for
/// the reconcile.
fn reconfigure(t: &Topology, lb: &Child, log: &str, write: impl FnOnce()) {
    let before = t.log(log).matches("reconciled").count();
    write();
    unsafe { libc::kill(lb.id() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.log(log).matches("reconciled").count() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "config not applied:\n{}",
            t.log(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Backends named in `seen` (curl's answers).
fn names(seen: &BTreeMap<String, usize>) -> Vec<String> {
    seen.keys().cloned().collect()
}

#[test]
fn held_connections_keep_their_backend_through_set_changes_and_drain() {
    if !privileged("held_connections_keep_their_backend_through_set_changes_and_drain") {
        return;
    }
    let mut t = Topology::new(1, 3);
    t.start_backends(true);
    let pins = PinDir::new();
    // Start with be0 and be1 only (be2 at weight 0 is not in the table).
    let cfg = lb_config(&t, &pins, "ipip", &[1, 1, 0], "generic", "");
    let lb = start_lb(&t, 0, &cfg, "lb.log");
    t.client.run(|| {
        let mut held = Held::open(IpAddr::V4(VIP4));
        let first = held.ask();
        assert!(first == "be0" || first == "be1", "{first}");
        let (x, other) = if first == "be0" { (0, 1) } else { (1, 0) };

        // Remove the other backend, add be2: the held flow stays on x.
        let mut w = [0u32; 3];
        w[x] = 1;
        w[2] = 1;
        reconfigure(&t, &lb, "lb.log", || {
            drop(lb_config(&t, &pins, "ipip", &w, "generic", ""))
        });
        for _ in 0..5 {
            assert_eq!(
                held.ask(),
                first,
                "the held connection moved after a backend set change"
            );
        }
        let new = curl(&t, IpAddr::V4(VIP4), 200);
        assert_eq!(
            names(&new),
            [format!("be{x}"), "be2".to_string()]
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>(),
            "new connections must use the new set (be{other} removed)"
        );

        // Drain x (weight 0): the held connection continues, new ones avoid x.
        w[x] = 0;
        reconfigure(&t, &lb, "lb.log", || {
            drop(lb_config(&t, &pins, "ipip", &w, "generic", ""))
        });
        for _ in 0..5 {
            assert_eq!(
                held.ask(),
                first,
                "a draining backend's established flow moved"
            );
        }
        // From source ports no earlier connection used: a reused port
        // would make the same 5-tuple as an earlier connection to x, which
        // the flow table rightly keeps on x (a drain keeps established
        // flows), and the backend closes first, so the client may reuse it.
        let new = curl_with(
            &t,
            IpAddr::V4(VIP4),
            80,
            200,
            &["--local-port", "61000-61999"],
        );
        assert_eq!(
            names(&new),
            ["be2".to_string()],
            "new connections reached a draining backend"
        );
    });
    stop_lb(&t, 0, lb, &pins);
}

#[test]
fn kill_9_mid_stream_loses_no_byte_and_resets_nothing() {
    if !privileged("kill_9_mid_stream_loses_no_byte_and_resets_nothing") {
        return;
    }
    let mut t = Topology::new(1, 3);
    t.start_backends(true);
    let pins = PinDir::new();
    let cfg = lb_config(&t, &pins, "ipip", &[1, 1, 1], "generic", "");
    let xlb = workspace_bin("lb-userspace", "xlb");
    let mut lb = start_lb(&t, 0, &cfg, "lb1.log");
    let retrans = || -> u64 {
        let snmp = t
            .client
            .run(|| std::fs::read_to_string("/proc/net/snmp").unwrap());
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (head, vals) = (tcp.next().unwrap(), tcp.next().unwrap());
        let i = head
            .split_whitespace()
            .position(|k| k == "RetransSegs")
            .unwrap();
        vals.split_whitespace().nth(i).unwrap().parse().unwrap()
    };
    let before = retrans();
    let (sent, counted) = t.client.run(|| {
        let mut c = TcpStream::connect_timeout(
            &SocketAddr::new(IpAddr::V4(VIP4), 9000),
            Duration::from_secs(3),
        )
        .expect("connect to the sink");
        let chunk = vec![0x5a_u8; 16 * 1024];
        let mut sent = 0u64;
        let start = std::time::Instant::now();
        let mut phase = 0;
        while start.elapsed() < Duration::from_millis(3000) {
            c.write_all(&chunk).expect("the stream broke (reset?)");
            sent += chunk.len() as u64;
            let ms = start.elapsed().as_millis();
            if phase == 0 && ms > 800 {
                unsafe { libc::kill(lb.id() as i32, libc::SIGKILL) };
                let _ = lb.wait();
                phase = 1;
            } else if phase == 1 && ms > 1500 {
                lb = t.spawn_in(
                    Ns::Lb(0),
                    &xlb,
                    &["run", "--config", cfg.to_str().unwrap()],
                    "lb2.log",
                );
                phase = 2;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        c.shutdown(Shutdown::Write).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut reply = String::new();
        c.read_to_string(&mut reply)
            .expect("the sink's count (a reset would fail here)");
        (sent, reply.trim().parse::<u64>().expect("a byte count"))
    });
    t.wait_log("lb2.log", "adopted pinned maps");
    let retransmitted = retrans() - before;
    assert_eq!(
        counted, sent,
        "the backend counted {counted} of {sent} bytes"
    );
    assert!(
        retransmitted <= 20,
        "{retransmitted} TCP retransmissions across the restart"
    );
    eprintln!("kill -9 mid-stream: {sent} bytes sent and counted, {retransmitted} retransmissions");
    stop_lb(&t, 0, lb, &pins);
}

#[test]
fn bad_interface_and_unreachable_backend_are_named_and_the_rest_keeps_serving() {
    if !privileged("bad_interface_and_unreachable_backend_are_named_and_the_rest_keeps_serving") {
        return;
    }
    let mut t = Topology::new(1, 3);
    t.start_backends(true);
    let pins = PinDir::new();
    let extra = "\n[[vip]]\naddress = \"10.99.0.2\"\nport = 80\nprotocol = \"tcp\"\nbackends = [{ address = \"192.0.2.50\" }]\n";
    let cfg = lb_config(&t, &pins, "ipip", &[1, 1, 1], "generic", extra);
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        r#"interfaces = ["eth0"]"#,
        r#"interfaces = ["eth0", "nosuch0"]"#,
    );
    std::fs::write(&cfg, text).unwrap();
    let lb = start_lb(&t, 0, &cfg, "lb.log");
    t.wait_log("lb.log", "backend unreachable");
    let log = t.log("lb.log");
    assert!(
        log.contains("not balancing on this interface")
            && log.contains("interface nosuch0 does not exist"),
        "{log}"
    );
    assert!(
        log.contains("192.0.2.50") && log.contains("drop_no_route"),
        "{log}"
    );
    let seen = curl(&t, IpAddr::V4(VIP4), 100);
    assert_eq!(
        seen.values().sum::<usize>(),
        100,
        "the good VIP kept serving: {seen:?}"
    );
    t.client
        .ip(&["route", "add", "10.99.0.2/32", "via", "10.77.0.2"]);
    let (code, _, _) = t.run_in(
        Ns::Client,
        "curl",
        &["-sS", "--max-time", "1", "http://10.99.0.2/"],
    );
    assert_ne!(
        code, 0,
        "a VIP whose only backend is unreachable cannot answer"
    );
    let m = Maps::open_pinned(&pins.path).unwrap();
    assert!(
        m.outcome(Outcome::DropNoRoute).unwrap() >= 1,
        "the unreachable backend's flow was counted as drop_no_route"
    );
    stop_lb(&t, 0, lb, &pins);
}

#[test]
fn ecmp_two_balancers_connections_survive_losing_one() {
    if !privileged("ecmp_two_balancers_connections_survive_losing_one") {
        return;
    }
    let mut t = Topology::new(2, 3);
    t.start_backends(true);
    t.route_via(&[0, 1]);
    let (p0, p1) = (PinDir::new(), PinDir::new());
    let c0 = lb_config(&t, &p0, "ipip", &[1, 1, 1], "generic", "");
    let c1 = lb_config(&t, &p1, "ipip", &[1, 1, 1], "generic", "");
    let lb0 = start_lb(&t, 0, &c0, "lb0.log");
    let lb1 = start_lb(&t, 1, &c1, "lb1.log");
    let (held, before) = t.client.run(|| {
        let mut held: Vec<Held> = (0..24)
            .map(|i| {
                Held::open(if i % 2 == 0 {
                    IpAddr::V4(VIP4)
                } else {
                    IpAddr::V6(VIP6)
                })
            })
            .collect();
        let before: Vec<String> = held.iter_mut().map(Held::ask).collect();
        (held, before)
    });
    let vip_packets = |p: &PinDir| {
        let m = Maps::open_pinned(&p.path).unwrap();
        m.vip_counters(0).unwrap().packets + m.vip_counters(1).unwrap().packets
    };
    let (n0, n1) = (vip_packets(&p0), vip_packets(&p1));
    assert!(
        n0 > 0 && n1 > 0,
        "ECMP used one balancer only: {n0} / {n1} packets"
    );

    // Take balancer 1 away: out of the route, program detached.
    t.route_via(&[0]);
    stop_lb(&t, 1, lb1, &p1);
    let mut held = held;
    let after: Vec<String> = t.client.run(|| held.iter_mut().map(Held::ask).collect());
    assert_eq!(
        after, before,
        "connections moved to another backend when their balancer went away"
    );
    eprintln!(
        "ECMP: {} connections ({n0} / {n1} packets over the two balancers) kept their backends on one",
        held.len()
    );
    stop_lb(&t, 0, lb0, &p0);
}

#[test]
fn native_xdp_passes_the_basic_test() {
    if !privileged("native_xdp_passes_the_basic_test") {
        return;
    }
    let mut t = Topology::new(1, 3);
    t.start_backends(true);
    // On a veth, native XDP_TX reaches the peer only when the peer runs
    // NAPI; an XDP program on the bridge port guarantees it (the
    // decapsulator passes everything not addressed to its VIP).
    let xlb = workspace_bin("lb-userspace", "xlb");
    let c = t.spawn_in(
        Ns::Bridge,
        &xlb,
        &["decap", "--iface", "p-l0", "--vip", "192.0.2.99"],
        "bridge-xdp.log",
    );
    t.adopt("bridge port XDP", c);
    t.wait_log("bridge-xdp.log", "decapsulating");
    let pins = PinDir::new();
    let cfg = lb_config(&t, &pins, "l2", &[1, 1, 1], "native", "");
    let lb = start_lb(&t, 0, &cfg, "lb.log");
    assert!(
        t.log("lb.log").contains(r#"mode="native""#),
        "{}",
        t.log("lb.log")
    );
    let v4 = curl(&t, IpAddr::V4(VIP4), 300);
    let v6 = curl(&t, IpAddr::V6(VIP6), 300);
    assert_shares(&v4, &[1, 1, 1], "native IPv4");
    assert_shares(&v6, &[1, 1, 1], "native IPv6");
    let (_, out, _) = t.run_in(
        Ns::Lb(0),
        &xlb,
        &[
            "status",
            "--json",
            "--pin-path",
            pins.path.to_str().unwrap(),
        ],
    );
    assert!(out.contains(r#""mode": "native""#), "{out}");
    stop_lb(&t, 0, lb, &pins);
}
