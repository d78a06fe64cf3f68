//! xlb announcing over BGP, end to end: two router nodes each run bird2
//! and `xlb run` with `announce = "bgp"`; the upstream router learns the
//! VIPs from both over eBGP (BFD on) and spreads the client's flows over
//! them with an L4 ECMP hash; Maglev makes both nodes pick the same
//! backend. Real HTTP: keep-alive connections that must survive every
//! event on the same backend, and new connections at a bounded rate.
//!
//! Times are printed, never asserted. `XLB_BGP_RUNS` repeats the drain and
//! the hard failure (default 1); `XLB_BGP_BFD=off` runs without BFD (the
//! hard failure is then found by the 3 s hold timer).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::PathBuf,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use xlb_tests::{
    bgp_topology::{BgpTopology, VIP4, VIP6, backend4, backend6, node4, node6},
    bird::{self, Bird},
    daemon::{free_port, http_get, metric},
    netns::{PinDir, privileged},
    topology::workspace_bin,
};

const PATIENCE: Duration = Duration::from_secs(60);

fn hops(vip: IpAddr, nodes: &[usize]) -> Vec<IpAddr> {
    nodes
        .iter()
        .map(|&i| {
            if vip.is_ipv4() {
                IpAddr::V4(node4(i))
            } else {
                IpAddr::V6(node6(i))
            }
        })
        .collect()
}

struct Node {
    pins: PinDir,
    state: PathBuf,
    metrics: u16,
    config: PathBuf,
}

struct Lab {
    t: BgpTopology,
    upstream: Bird,
    birds: Vec<Bird>,
    nodes: Vec<Node>,
}

impl Lab {
    fn new(bfd: bool) -> Self {
        let mut t = BgpTopology::new(2, 3);
        t.start_backends(true);
        let nodes: Vec<Node> = (0..2).map(|i| node_config(&t, i)).collect();
        for (i, n) in nodes.iter().enumerate() {
            start_xlb(&mut t, n, i, "xlb.log");
        }
        let upstream = t.start_upstream_bird(bfd);
        let birds: Vec<Bird> = (0..2).map(|i| t.start_node_bird(i, bfd)).collect();
        for (i, b) in birds.iter().enumerate() {
            t.wait_sessions(&upstream, b, i, PATIENCE);
        }
        let lab = Self {
            t,
            upstream,
            birds,
            nodes,
        };
        lab.wait_hops(&[0, 1], Instant::now());
        lab
    }

    /// Until the upstream routes both VIPs through exactly `nodes`.
    fn wait_hops(&self, nodes: &[usize], since: Instant) -> Duration {
        [IpAddr::V4(VIP4), IpAddr::V6(VIP6)]
            .into_iter()
            .map(|vip| {
                bird::wait_next_hops(
                    &self.t.upstream,
                    &bird::host_prefix(vip),
                    &hops(vip, nodes),
                    since,
                    PATIENCE,
                )
            })
            .max()
            .unwrap()
    }

    fn xlb(&self, i: usize, args: &[&str]) -> String {
        let out = self.t.nodes[i]
            .command(workspace_bin("lb-userspace", "xlb"))
            .args(args)
            .output()
            .expect("xlb");
        assert!(
            out.status.success(),
            "xlb {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn vip_packets(&self, i: usize) -> f64 {
        let (_, body) = http_get(&self.t.nodes[i], self.nodes[i].metrics, "/metrics");
        metric(
            &body,
            &format!("xlb_vip_packets_total{{vip=\"{VIP4}:80/tcp\"}}"),
        )
        .unwrap_or(0.0)
    }
}

fn node_config(t: &BgpTopology, i: usize) -> Node {
    let pins = PinDir::new();
    let state = t.dir.join(format!("state-{i}"));
    let metrics = free_port();
    let list = |f: &dyn Fn(usize) -> String| -> String {
        (0..3)
            .map(|b| format!("{{ address = \"{}\" }}", f(b)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        r#"[dataplane]
interfaces = ["eth0"]
xdp_mode = "generic"
pin_path = "{pins}"
state_dir = "{state}"
encap = "ipip"
maglev_table_size = 4099
max_vips = 8
max_backends = 64
flow_table_size = 65536
ipip_source_v4 = "{n4}"
ipip_source_v6 = "{n6}"

[metrics]
listen = "127.0.0.1:{metrics}"

[announce]
mode = "bgp"

[[vip]]
address = "{VIP4}"
port = 80
backends = [{b4}]

[[vip]]
address = "{VIP6}"
port = 80
backends = [{b6}]
"#,
        pins = pins.path.display(),
        state = state.display(),
        n4 = node4(i),
        n6 = node6(i),
        b4 = list(&|b| backend4(b).to_string()),
        b6 = list(&|b| backend6(b).to_string()),
    );
    let config = t.dir.join(format!("xlb-{i}.toml"));
    std::fs::write(&config, text).unwrap();
    Node {
        pins,
        state,
        metrics,
        config,
    }
}

fn start_xlb(t: &mut BgpTopology, n: &Node, i: usize, log: &str) {
    let xlb = workspace_bin("lb-userspace", "xlb");
    let log = format!("node{i}-{log}");
    let c = t.spawn_in(
        &t.nodes[i],
        &xlb,
        &["run", "--config", n.config.to_str().unwrap()],
        &log,
    );
    t.adopt(&format!("xlb{i}"), c);
    t.wait_log(&log, "reconciled");
}

/// A keep-alive connection and the backend that answers it.
struct Held {
    stream: BufReader<TcpStream>,
    backend: String,
}

impl Held {
    fn open(to: SocketAddr) -> Self {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut h = Self {
            stream: BufReader::new(s),
            backend: String::new(),
        };
        h.backend = h.get().expect("first request");
        h
    }

    /// One request on the held connection: the backend's name.
    fn get(&mut self) -> Result<String, String> {
        let s = self.stream.get_mut();
        write!(s, "GET / HTTP/1.1\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
        let mut len = 0;
        loop {
            let mut line = String::new();
            self.stream
                .read_line(&mut line)
                .map_err(|e| e.to_string())?;
            if line.is_empty() {
                return Err("closed".into());
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().map_err(|_| "bad length")?;
            }
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; len];
        self.stream
            .read_exact(&mut body)
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&body).trim().to_owned())
    }
}

/// New connections one after another until stopped: start times and
/// results.
struct Load {
    results: Mutex<Vec<(Instant, Result<String, String>)>>,
    stop: AtomicBool,
}

impl Load {
    fn run(&self, to: SocketAddr) {
        while !self.stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            let r = (|| {
                let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))
                    .map_err(|e| e.to_string())?;
                s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                write!(s, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .map_err(|e| e.to_string())?;
                let mut r = String::new();
                s.read_to_string(&mut r).map_err(|e| e.to_string())?;
                r.split("\r\n\r\n")
                    .nth(1)
                    .map(|b| b.trim().to_owned())
                    .ok_or_else(|| "no body".to_owned())
            })();
            self.results.lock().unwrap().push((at, r));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Failed requests, and the longest time between two successes.
    fn summary(self) -> (usize, usize, Duration) {
        let results = self.results.into_inner().unwrap();
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        let ok: Vec<Instant> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(at, _)| *at)
            .collect();
        let gap = ok.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
        (failed, results.len(), gap)
    }
}

/// Every held connection answers again, from the backend it had.
fn check_held(held: &mut [Held], what: &str) {
    for (k, h) in held.iter_mut().enumerate() {
        let got = h
            .get()
            .unwrap_or_else(|e| panic!("{what}: held connection {k} failed: {e}"));
        assert_eq!(got, h.backend, "{what}: held connection {k} moved backend");
    }
}

#[test]
fn two_xlb_routers_over_bgp_share_drain_and_fail_over_without_breaking_connections() {
    let test = "two_xlb_routers_over_bgp_share_drain_and_fail_over_without_breaking_connections";
    if !privileged(test) || !bird::available(test) {
        return;
    }
    let runs: usize = std::env::var("XLB_BGP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let bfd = std::env::var("XLB_BGP_BFD").as_deref() != Ok("off");
    let mut lab = Lab::new(bfd);
    let to4 = SocketAddr::new(IpAddr::V4(VIP4), 80);
    let to6 = SocketAddr::new(IpAddr::V6(VIP6), 80);

    // Connections from many source ports: ECMP spreads them over both
    // routers, and both carry traffic.
    let mut held: Vec<Held> = lab
        .t
        .client
        .run(|| (0..24).map(|_| Held::open(to4)).collect());
    let mut held6: Vec<Held> = lab
        .t
        .client
        .run(|| (0..8).map(|_| Held::open(to6)).collect());
    let per_backend = held
        .iter()
        .fold(BTreeMap::<String, usize>::new(), |mut m, h| {
            *m.entry(h.backend.clone()).or_default() += 1;
            m
        });
    assert!(per_backend.len() >= 2, "{per_backend:?}");
    let (p0, p1) = (lab.vip_packets(0), lab.vip_packets(1));
    eprintln!("packets for {VIP4}:80 at node0 {p0}, node1 {p1}");
    assert!(
        p0 > 0.0 && p1 > 0.0,
        "both routers carry traffic: {p0} {p1}"
    );

    for run in 0..runs {
        // Graceful drain of node 0: withdrawn, the upstream drops it, and
        // nothing breaks.
        let load = Load {
            results: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        };
        let drained = std::thread::scope(|s| {
            s.spawn(|| lab.t.client.run(|| load.run(to4)));
            std::thread::sleep(Duration::from_millis(300));
            let start = Instant::now();
            lab.xlb(
                0,
                &["drain", "--state-dir", lab.nodes[0].state.to_str().unwrap()],
            );
            let took = lab.wait_hops(&[1], start);
            std::thread::sleep(Duration::from_millis(500));
            load.stop.store(true, Ordering::Relaxed);
            took
        });
        let (failed, total, gap) = load.summary();
        eprintln!(
            "run {run}: drain of node0: the upstream routes through node1 only after {:.3} s; \
             {failed} of {total} new connections failed, longest gap {:.0} ms",
            drained.as_secs_f64(),
            gap.as_secs_f64() * 1e3
        );
        assert_eq!(failed, 0, "a graceful drain loses nothing");
        lab.t.client.run(|| {
            check_held(&mut held, "after the drain");
            check_held(&mut held6, "after the drain (IPv6)");
        });

        // Node 0 back: both again, no held connection breaks.
        let start = Instant::now();
        lab.xlb(
            0,
            &[
                "undrain",
                "--state-dir",
                lab.nodes[0].state.to_str().unwrap(),
            ],
        );
        let back = lab.wait_hops(&[0, 1], start);
        eprintln!(
            "run {run}: undrain: both next hops after {:.3} s",
            back.as_secs_f64()
        );
        // Which router the held connections reach now: each node's
        // packets for the VIP while every held connection makes one
        // request. ECMP moved about half of them back to node 0; every
        // one keeps its backend.
        let before = [lab.vip_packets(0), lab.vip_packets(1)];
        lab.t.client.run(|| {
            check_held(&mut held, "after the undrain");
            check_held(&mut held6, "after the undrain (IPv6)");
        });
        let moved = lab.vip_packets(0) - before[0];
        let stayed = lab.vip_packets(1) - before[1];
        eprintln!(
            "run {run}: after the undrain node0 carries {:.0}% of the held connections' packets \
             (moved back by ECMP), all on their backends",
            100.0 * moved / (moved + stayed).max(1.0)
        );

        // Hard failure: node 0 vanishes from the network (BFD on).
        let load = Load {
            results: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        };
        let cut = std::thread::scope(|s| {
            s.spawn(|| lab.t.client.run(|| load.run(to4)));
            std::thread::sleep(Duration::from_millis(300));
            let start = Instant::now();
            lab.t.cut_link(0);
            let took = lab.wait_hops(&[1], start);
            std::thread::sleep(Duration::from_millis(1_000));
            load.stop.store(true, Ordering::Relaxed);
            took
        });
        let (failed, total, gap) = load.summary();
        eprintln!(
            "run {run}: node0 cut off (BFD {}): one next hop after {:.3} s; {failed} of {total} \
             new connections failed, longest gap {:.0} ms",
            if bfd { "on" } else { "off" },
            cut.as_secs_f64(),
            gap.as_secs_f64() * 1e3
        );
        // In-flight ones may fail; TCP retransmits the rest.
        if bfd {
            assert!(failed <= 5, "{failed} failures");
        }
        lab.t
            .client
            .run(|| check_held(&mut held, "after node0 vanished"));
        lab.t.restore_link(0);
        lab.t
            .wait_sessions(&lab.upstream, &lab.birds[0], 0, PATIENCE);
        lab.wait_hops(&[0, 1], Instant::now());
        lab.t
            .client
            .run(|| check_held(&mut held, "after node0 came back"));
    }

    // A node that starts again announces only once its data plane is
    // programmed: stopped for good first (withdrawn), then started.
    lab.t.stop("xlb0");
    lab.xlb(
        0,
        &[
            "stop",
            "--pin-path",
            lab.nodes[0].pins.path.to_str().unwrap(),
            "--state-dir",
            lab.nodes[0].state.to_str().unwrap(),
        ],
    );
    lab.wait_hops(&[1], Instant::now());
    let n0 = node_config(&lab.t, 0);
    let started = Instant::now();
    let xlb = workspace_bin("lb-userspace", "xlb");
    let c = lab.t.spawn_in(
        &lab.t.nodes[0],
        &xlb,
        &["run", "--config", n0.config.to_str().unwrap()],
        "node0-again.log",
    );
    lab.t.adopt("xlb0", c);
    loop {
        let routes = bird::table_routes(&lab.t.nodes[0], bird::TABLE);
        if !routes.is_empty() {
            assert!(
                lab.t.log("node0-again.log").contains("reconciled"),
                "a route before the first reconcile: {}",
                lab.t.log("node0-again.log")
            );
            break;
        }
        assert!(started.elapsed() < PATIENCE, "node0 never announced again");
        std::thread::sleep(Duration::from_millis(5));
    }
    lab.wait_hops(&[0, 1], started);
    lab.t
        .client
        .run(|| check_held(&mut held, "after node0 restarted"));
    lab.nodes[0] = n0;
    let _ = &lab.birds;
}
