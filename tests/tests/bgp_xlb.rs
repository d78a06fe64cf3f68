//! xlb announcing over BGP, end to end: two router nodes each run bird2
//! and `xlb run` with `announce = "bgp"`; the upstream router learns the
//! VIPs from both over eBGP (BFD on) and spreads the client's flows over
//! them with an L4 ECMP hash; Maglev makes both nodes pick the same
//! backend. Real HTTP, IPv4 and IPv6: keep-alive connections that must
//! survive every event on the same backend, and new connections at a
//! bounded rate through every event.
//!
//! Times are printed, and asserted only loosely (a hard failure with BFD
//! on is routed around within 2.5 s, where the hold timer takes 3 s).
//! `XLB_BGP_RUNS` repeats every phase (default 1), and a summary of every phase over the runs is
//! printed at the end; `XLB_BGP_BFD=off` runs without BFD (the hard failure
//! is then found by the 3 s hold timer).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
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
/// A hard failure with BFD (100 ms x 3) must be routed around well before
/// the 3 s hold timer would: this catches BFD not working.
const BFD_BOUND: Duration = Duration::from_millis(2_500);

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

fn vip_label(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("{a}:80/tcp"),
        IpAddr::V6(a) => format!("[{a}]:80/tcp"),
    }
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
            .map(|vip| self.wait_vip_hops(vip, nodes, since))
            .max()
            .unwrap()
    }

    fn wait_vip_hops(&self, vip: IpAddr, nodes: &[usize], since: Instant) -> Duration {
        bird::wait_next_hops(
            &self.t.upstream,
            &bird::host_prefix(vip),
            &hops(vip, nodes),
            since,
            PATIENCE,
        )
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

    fn state(&self, i: usize) -> &str {
        self.nodes[i].state.to_str().unwrap()
    }

    fn vip_packets(&self, i: usize, vip: IpAddr) -> f64 {
        let (_, body) = http_get(&self.t.nodes[i], self.nodes[i].metrics, "/metrics");
        metric(
            &body,
            &format!("xlb_vip_packets_total{{vip=\"{}\"}}", vip_label(vip)),
        )
        .unwrap_or(0.0)
    }

    /// Runs `event` under new-connection load on both VIPs (started 300 ms
    /// before it, kept `after` beyond it): what it returned, and how the
    /// connections fared.
    fn loaded<T: Send>(&self, after: Duration, event: impl FnOnce() -> T + Send) -> (T, Tally) {
        let (l4, l6) = (Load::default(), Load::default());
        let out = std::thread::scope(|s| {
            s.spawn(|| self.t.client.run(|| l4.run(to(IpAddr::V4(VIP4)))));
            s.spawn(|| self.t.client.run(|| l6.run(to(IpAddr::V6(VIP6)))));
            std::thread::sleep(Duration::from_millis(300));
            let out = event();
            std::thread::sleep(after);
            l4.stop.store(true, Ordering::Relaxed);
            l6.stop.store(true, Ordering::Relaxed);
            out
        });
        (
            out,
            Tally {
                v4: l4.summary(),
                v6: l6.summary(),
            },
        )
    }

    /// Which node each held connection goes through now, checking it
    /// still answers from its backend: node 0's packet counter for the
    /// VIP, read before and after one request on the connection (no other
    /// traffic runs meanwhile).
    fn routers(&self, held: &mut [Held], what: &str) -> Vec<usize> {
        let mut out = Vec::with_capacity(held.len());
        for (k, h) in held.iter_mut().enumerate() {
            let before = self.vip_packets(0, h.vip);
            self.t.client.run(|| {
                // The ACK of the answer goes out at once, not 40 ms later
                // into the next connection's count.
                h.quick_ack();
                let got = h
                    .get()
                    .unwrap_or_else(|e| panic!("{what}: held connection {k} failed: {e}"));
                assert_eq!(got, h.backend, "{what}: held connection {k} moved backend");
            });
            std::thread::sleep(Duration::from_millis(3));
            out.push(usize::from(self.vip_packets(0, h.vip) <= before));
        }
        out
    }
}

fn to(vip: IpAddr) -> SocketAddr {
    SocketAddr::new(vip, 80)
}

fn node_config(t: &BgpTopology, i: usize) -> Node {
    let n = Node {
        pins: PinDir::new(),
        state: t.dir.join(format!("state-{i}")),
        metrics: free_port(),
        config: t.dir.join(format!("xlb-{i}.toml")),
    };
    write_config(&n, i, 1);
    n
}

/// Node `i`'s config, every IPv4 backend at `weight4` (0: the IPv4 VIP has
/// no active backend on this node).
fn write_config(n: &Node, i: usize, weight4: u32) {
    let list = |f: &dyn Fn(usize) -> String, w: u32| -> String {
        (0..3)
            .map(|b| format!("{{ address = \"{}\", weight = {w} }}", f(b)))
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
        pins = n.pins.path.display(),
        state = n.state.display(),
        metrics = n.metrics,
        n4 = node4(i),
        n6 = node6(i),
        b4 = list(&|b| backend4(b).to_string(), weight4),
        b6 = list(&|b| backend6(b).to_string(), 1),
    );
    // Written whole then renamed: the daemon's watcher never reads half.
    let tmp = n.config.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &n.config).unwrap();
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
    vip: IpAddr,
    stream: BufReader<TcpStream>,
    backend: String,
}

impl Held {
    fn open(vip: IpAddr) -> Self {
        let s = TcpStream::connect_timeout(&to(vip), Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut h = Self {
            vip,
            stream: BufReader::new(s),
            backend: String::new(),
        };
        h.backend = h.get().expect("first request");
        h
    }

    fn quick_ack(&self) {
        let one: libc::c_int = 1;
        unsafe {
            libc::setsockopt(
                self.stream.get_ref().as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_QUICKACK,
                (&raw const one).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
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
#[derive(Default)]
struct Load {
    results: Mutex<Vec<(Instant, Result<String, String>)>>,
    stop: AtomicBool,
}

/// How one family's new connections fared.
#[derive(Clone, Copy, Debug, Default)]
struct Fared {
    failed: usize,
    total: usize,
    /// The longest time between two successes.
    gap: Duration,
}

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    v4: Fared,
    v6: Fared,
}

impl Tally {
    fn failed(&self) -> usize {
        self.v4.failed + self.v6.failed
    }
    fn total(&self) -> usize {
        self.v4.total + self.v6.total
    }
    fn gap(&self) -> Duration {
        self.v4.gap.max(self.v6.gap)
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "new connections failed: v4 {} of {}, v6 {} of {}; longest gap {:.0} ms",
            self.v4.failed,
            self.v4.total,
            self.v6.failed,
            self.v6.total,
            self.gap().as_secs_f64() * 1e3
        )
    }
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

    fn summary(self) -> Fared {
        let results = self.results.into_inner().unwrap();
        let failed = results.iter().filter(|(_, r)| r.is_err()).count();
        let ok: Vec<Instant> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(at, _)| *at)
            .collect();
        let gap = ok.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
        Fared {
            failed,
            total: results.len(),
            gap,
        }
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

/// One phase of one run, for the summary.
struct Phase {
    name: &'static str,
    took: Duration,
    tally: Option<Tally>,
    /// Held connections ECMP moved to node 0 (all kept their backend),
    /// of how many.
    moved: Option<(usize, usize)>,
}

struct Record(Vec<Phase>);

impl Record {
    fn add(
        &mut self,
        name: &'static str,
        run: usize,
        took: Duration,
        tally: Option<Tally>,
        moved: Option<(usize, usize)>,
    ) {
        let mut line = format!("run {run}: {name}: {:.3} s", took.as_secs_f64());
        if let Some(t) = &tally {
            line += &format!("; {t}");
        }
        if let Some((m, of)) = moved {
            line += &format!(
                "; {m} of {of} held connections moved to node0 by ECMP, all on their backend"
            );
        }
        eprintln!("{line}");
        self.0.push(Phase {
            name,
            took,
            tally,
            moved,
        });
    }

    fn print(&self, runs: usize, bfd: bool) {
        eprintln!(
            "\nsummary over {runs} run(s), BFD {}: convergence = the event to the upstream's \
             route for both VIPs having its final next hops",
            if bfd { "on" } else { "off" }
        );
        let mut names: Vec<&str> = Vec::new();
        for p in &self.0 {
            if !names.contains(&p.name) {
                names.push(p.name);
            }
        }
        for name in names {
            let ps: Vec<&Phase> = self.0.iter().filter(|p| p.name == name).collect();
            let mut t: Vec<f64> = ps.iter().map(|p| p.took.as_secs_f64()).collect();
            t.sort_by(f64::total_cmp);
            let mean = t.iter().sum::<f64>() / t.len() as f64;
            let p50 = t[t.len() / 2];
            let max = t[t.len() - 1];
            let mut line = format!(
                "  {name:<28} n={:<2} mean {mean:.3} s  p50 {p50:.3} s  max {max:.3} s",
                t.len()
            );
            if ps.iter().any(|p| p.tally.is_some()) {
                let failed: Vec<String> = ps
                    .iter()
                    .map(|p| p.tally.map_or("-".into(), |t| t.failed().to_string()))
                    .collect();
                let total: usize = ps.iter().filter_map(|p| p.tally).map(|t| t.total()).sum();
                let gap = ps
                    .iter()
                    .filter_map(|p| p.tally)
                    .map(|t| t.gap())
                    .max()
                    .unwrap_or_default();
                let sum: usize = ps.iter().filter_map(|p| p.tally).map(|t| t.failed()).sum();
                line += &format!(
                    "  failed {sum} of {total} (per run: {}), longest gap {:.0} ms",
                    failed.join(" "),
                    gap.as_secs_f64() * 1e3
                );
            }
            let moved: Vec<(usize, usize)> = ps.iter().filter_map(|p| p.moved).collect();
            if !moved.is_empty() {
                let m: usize = moved.iter().map(|m| m.0).sum();
                let of: usize = moved.iter().map(|m| m.1).sum();
                line += &format!("  held connections moved {m} of {of}, all kept their backend");
            }
            eprintln!("{line}");
        }
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
    let (v4, v6) = (IpAddr::V4(VIP4), IpAddr::V6(VIP6));
    let mut rec = Record(Vec::new());

    // Connections from many source ports: ECMP spreads them over both
    // routers, and both carry traffic, for each family.
    let mut held: Vec<Held> = lab.t.client.run(|| {
        (0..24)
            .map(|_| Held::open(v4))
            .chain((0..8).map(|_| Held::open(v6)))
            .collect()
    });
    let per_backend = held
        .iter()
        .fold(BTreeMap::<String, usize>::new(), |mut m, h| {
            *m.entry(h.backend.clone()).or_default() += 1;
            m
        });
    assert!(per_backend.len() >= 2, "{per_backend:?}");
    let ((), warmup) = lab.loaded(Duration::from_millis(200), || ());
    assert_eq!(warmup.failed(), 0, "with both routers up: {warmup}");
    for vip in [v4, v6] {
        let (p0, p1) = (lab.vip_packets(0, vip), lab.vip_packets(1, vip));
        eprintln!("packets for {}: node0 {p0}, node1 {p1}", vip_label(vip));
        assert!(
            p0 > 0.0 && p1 > 0.0,
            "both routers carry {}: {p0} {p1}",
            vip_label(vip)
        );
    }
    let on0 = lab
        .routers(&mut held, "at the start")
        .iter()
        .filter(|r| **r == 0)
        .count();
    eprintln!("{on0} of {} held connections go through node0", held.len());

    let n = held.len();
    for run in 0..runs {
        // Graceful drain of node 0: withdrawn, the upstream drops it, and
        // nothing breaks, in either family.
        let (took, tally) = lab.loaded(Duration::from_millis(500), || {
            let start = Instant::now();
            let out = lab.xlb(0, &["drain", "--state-dir", lab.state(0)]);
            assert!(out.contains("drained"), "{out}");
            lab.wait_hops(&[1], start)
        });
        rec.add("drain", run, took, Some(tally), None);
        assert_eq!(tally.failed(), 0, "a graceful drain loses nothing: {tally}");
        lab.t
            .client
            .run(|| check_held(&mut held, "after the drain"));

        // Node 0 back: both again; no new connection fails, and the held
        // ones ECMP moves back keep their backend.
        let (took, tally) = lab.loaded(Duration::from_millis(300), || {
            let start = Instant::now();
            lab.xlb(0, &["undrain", "--state-dir", lab.state(0)]);
            lab.wait_hops(&[0, 1], start)
        });
        let moved = lab
            .routers(&mut held, "after the undrain")
            .iter()
            .filter(|r| **r == 0)
            .count();
        rec.add("undrain", run, took, Some(tally), Some((moved, n)));
        assert_eq!(
            tally.failed(),
            0,
            "the path set growing breaks nothing: {tally}"
        );

        // A node with no active backend for a VIP does not announce it:
        // node 0's IPv4 backends all at weight 0, its IPv6 VIP untouched.
        let start = Instant::now();
        write_config(&lab.nodes[0], 0, 0);
        let took = lab.wait_vip_hops(v4, &[1], start);
        assert_eq!(
            bird::next_hops(&lab.t.upstream, &bird::host_prefix(v6)),
            hops(v6, &[0, 1]),
            "the IPv6 VIP still has active backends on node0"
        );
        let status = lab.xlb(
            0,
            &[
                "status",
                "--pin-path",
                lab.nodes[0].pins.path.to_str().unwrap(),
                "--state-dir",
                lab.state(0),
            ],
        );
        assert!(status.contains("withheld: no active backend"), "{status}");
        rec.add("no active backend (v4)", run, took, None, None);
        let start = Instant::now();
        write_config(&lab.nodes[0], 0, 1);
        let took = lab.wait_vip_hops(v4, &[0, 1], start);
        rec.add("backends back (v4)", run, took, None, None);
        lab.t
            .client
            .run(|| check_held(&mut held, "after the backends came back"));

        // Hard failure: node 0 vanishes from the network.
        let (took, tally) = lab.loaded(Duration::from_millis(1_000), || {
            let start = Instant::now();
            lab.t.cut_link(0);
            lab.wait_hops(&[1], start)
        });
        rec.add(
            if bfd {
                "cut off (BFD on)"
            } else {
                "cut off (BFD off)"
            },
            run,
            took,
            Some(tally),
            None,
        );
        // In-flight ones may fail; TCP retransmits the rest.
        if bfd {
            assert!(
                took < BFD_BOUND,
                "BFD should find the cut in well under the hold time: {took:?}"
            );
            assert!(tally.failed() <= 10, "{tally}");
        }
        lab.t
            .client
            .run(|| check_held(&mut held, "after node0 vanished"));

        // Its link back: the sessions come up again, then the routes.
        let (took, tally) = lab.loaded(Duration::from_millis(300), || {
            let start = Instant::now();
            lab.t.restore_link(0);
            lab.wait_hops(&[0, 1], start)
        });
        let moved = lab
            .routers(&mut held, "after node0's link came back")
            .iter()
            .filter(|r| **r == 0)
            .count();
        rec.add("link back", run, took, Some(tally), Some((moved, n)));
        assert_eq!(
            tally.failed(),
            0,
            "the path set growing breaks nothing: {tally}"
        );
        lab.t
            .wait_sessions(&lab.upstream, &lab.birds[0], 0, PATIENCE);

        // Node 0's daemon killed (its routes and pinned data plane stay),
        // then stopped for good: withdrawn, its data plane kept a moment
        // for the upstream to converge, then removed.
        let (stopped, tally) = lab.loaded(Duration::from_millis(300), || {
            lab.t.kill("xlb0");
            // `xlb stop` returns only after its withdraw wait: the
            // upstream's route is watched meanwhile.
            let start = Instant::now();
            std::thread::scope(|s| {
                let stop = s.spawn(|| {
                    lab.xlb(
                        0,
                        &[
                            "stop",
                            "--pin-path",
                            lab.nodes[0].pins.path.to_str().unwrap(),
                            "--state-dir",
                            lab.state(0),
                        ],
                    )
                });
                let took = lab.wait_hops(&[1], start);
                let out = stop.join().unwrap();
                assert!(out.contains("withdrew the BGP route"), "{out}");
                took
            })
        });
        lab.t.stop("xlb0");
        rec.add("kill -9 + xlb stop", run, stopped, Some(tally), None);
        assert_eq!(
            tally.failed(),
            0,
            "kill -9 and xlb stop break nothing: {tally}"
        );

        // Started afresh (new pins): it announces only once its data plane
        // is programmed, and nothing breaks as the path set grows.
        let n0 = node_config(&lab.t, 0);
        let xlb = workspace_bin("lb-userspace", "xlb");
        let log = format!("node0-run{run}.log");
        let ((started, child), tally) = lab.loaded(Duration::from_millis(300), || {
            let start = Instant::now();
            let c = lab.t.spawn_in(
                &lab.t.nodes[0],
                &xlb,
                &["run", "--config", n0.config.to_str().unwrap()],
                &log,
            );
            loop {
                let routes = bird::table_routes(&lab.t.nodes[0], bird::TABLE);
                if !routes.is_empty() {
                    assert!(
                        lab.t.log(&log).contains("reconciled"),
                        "a route before the first reconcile: {}",
                        lab.t.log(&log)
                    );
                    break;
                }
                assert!(start.elapsed() < PATIENCE, "node0 never announced again");
                std::thread::sleep(Duration::from_millis(5));
            }
            (lab.wait_hops(&[0, 1], start), c)
        });
        lab.t.adopt("xlb0", child);
        lab.nodes[0] = n0;
        let moved = lab
            .routers(&mut held, "after node0 restarted")
            .iter()
            .filter(|r| **r == 0)
            .count();
        rec.add("restart", run, started, Some(tally), Some((moved, n)));
        assert_eq!(tally.failed(), 0, "a fresh start breaks nothing: {tally}");
    }

    let _ = &lab.birds;
    rec.print(runs, bfd);
}
