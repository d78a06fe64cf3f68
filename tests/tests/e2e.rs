//! End to end: real TCP from a client namespace through `xlb run` on a veth
//! to DSR backends in their own namespaces (see `xlb_tests::topology`).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Child,
    time::Duration,
};

use lb_common::Outcome;
use lb_userspace::xdp::Maps;
use xlb_tests::{
    netns::{PinDir, privileged},
    topology::{Ns, Topology, VIP4, VIP6, backend4, backend6, workspace_bin},
};

/// The daemon's config for LB `lb`: both VIPs on every port, one encap.
fn config(
    t: &Topology,
    pins: &PinDir,
    encap: &str,
    weights: &[u32],
    xdp_mode: &str,
    extra_vip: &str,
) -> PathBuf {
    let list = |v6: bool| -> String {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let a = if v6 {
                    backend6(i).to_string()
                } else {
                    backend4(i).to_string()
                };
                format!("{{ address = \"{a}\", weight = {w} }}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        r#"[dataplane]
interfaces = ["eth0"]
xdp_mode = "{xdp_mode}"
pin_path = "{pins}"
encap = "{encap}"
maglev_table_size = 4099
max_vips = 8
max_backends = 64
flow_table_size = 65536

[metrics]
listen = "127.0.0.1:9810"

[[vip]]
address = "{VIP4}"
port = 0
protocol = "tcp"
backends = [{b4}]

[[vip]]
address = "{VIP6}"
port = 0
protocol = "tcp"
backends = [{b6}]
{extra_vip}"#,
        pins = pins.path.display(),
        b4 = list(false),
        b6 = list(true),
    );
    let path = t.dir.join(format!(
        "xlb-{}.toml",
        pins.path.file_name().unwrap().to_string_lossy()
    ));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// Starts `xlb run` in LB `i` and waits for its first reconcile.
fn start_lb(t: &Topology, i: usize, cfg: &Path, log: &str) -> Child {
    let xlb = workspace_bin("lb-userspace", "xlb");
    let c = t.spawn_in(
        Ns::Lb(i),
        &xlb,
        &["run", "--config", cfg.to_str().unwrap()],
        log,
    );
    t.wait_log(log, "reconciled");
    c
}

fn stop_lb(t: &Topology, i: usize, mut c: Child, pins: &PinDir) {
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let _ = c.wait();
    let xlb = workspace_bin("lb-userspace", "xlb");
    let (code, out, err) = t.run_in(
        Ns::Lb(i),
        &xlb,
        &["stop", "--pin-path", pins.path.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// `n` HTTP requests from the client with curl, each on a new connection;
/// the backend names that answered, counted.
fn curl(t: &Topology, vip: IpAddr, n: usize) -> BTreeMap<String, usize> {
    let host = match vip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let list = t
        .dir
        .join(format!("urls-{host}.txt").replace([':', '[', ']'], "_"));
    let urls: String = (0..n)
        .map(|i| format!("url = \"http://{host}/?r={i}\"\n"))
        .collect();
    std::fs::write(&list, urls).unwrap();
    let (code, out, err) = t.run_in(
        Ns::Client,
        "curl",
        &[
            "-sS",
            "-g",
            "--max-time",
            "5",
            "-H",
            "Connection: close",
            "-K",
            list.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "curl failed: {err}");
    let mut seen = BTreeMap::new();
    for line in out.lines() {
        *seen.entry(line.to_string()).or_default() += 1;
    }
    assert_eq!(
        seen.values().sum::<usize>(),
        n,
        "{n} requests, answers: {seen:?} {err}"
    );
    seen
}

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

/// tcpdump on the LB's bridge port: every frame with a VIP as IP source,
/// i.e. a reply crossing the load balancer.
fn capture_replies(t: &Topology, lb: usize) -> Child {
    let port = format!("p-l{lb}");
    let filter = format!("src host {VIP4} or src host {VIP6}");
    let c = t
        .bridge
        .command("tcpdump")
        .args(["-i", &port, "-n", "-l", "-p", &filter])
        .stdout(std::fs::File::create(t.dir.join(format!("capture-{lb}.txt"))).unwrap())
        .stderr(std::fs::File::create(t.dir.join(format!("capture-{lb}.err"))).unwrap())
        .spawn()
        .expect("tcpdump");
    t.wait_log(&format!("capture-{lb}.err"), "listening on");
    c
}

fn captured(t: &Topology, lb: usize, mut c: Child) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let _ = c.wait();
    t.log(&format!("capture-{lb}.txt"))
        .lines()
        .filter(|l| l.contains(" > "))
        .map(String::from)
        .collect()
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
        let cfg = config(&t, &pins, encap, &weights, "generic", "");
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
        let m = Maps::open_pinned(&pins.path, 4099).unwrap();
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
            m.outcome(Outcome::PassNoNeigh).unwrap(),
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
            .expect("connect to the VIP");
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
    let cfg = config(&t, &pins, "ipip", &[1, 1, 0], "generic", "");
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
            drop(config(&t, &pins, "ipip", &w, "generic", ""))
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
            drop(config(&t, &pins, "ipip", &w, "generic", ""))
        });
        for _ in 0..5 {
            assert_eq!(
                held.ask(),
                first,
                "a draining backend's established flow moved"
            );
        }
        let new = curl(&t, IpAddr::V4(VIP4), 200);
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
    let cfg = config(&t, &pins, "ipip", &[1, 1, 1], "generic", "");
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
