//! The BGP topology: a client behind an upstream router that learns the
//! VIPs over BGP from the router nodes and spreads the client's flows over
//! them (ECMP, hashing on L4), and DSR backends that answer the client
//! through the upstream, never through a router node.
//!
//! ```text
//!   client ns                upstream ns (bird2, forwarding,
//!   eth0 10.78.0.10 ──────── eth1 10.78.0.1    fib_multipath_hash_policy=1)
//!   fd78::10                 fd78::1
//!   default via upstream     eth0 10.77.0.1 fd77::1   AS 65000
//!                              │
//!                 ┌────────────┴──── bridge ns: br0 ──────────────────────┐
//!                 │ p-u      p-n0      p-n1      p-b0      p-b1      p-b2  │
//!                 └──────────┬─────────┬─────────┬─────────┬─────────┬────┘
//!                       node0 ns   node1 ns   be0 ns    be1 ns    be2 ns
//!                       10.77.0.2  .3         10.77.0.21 .22      .23
//!                       fd77::2    ::3        fd77::21  ::22      ::23
//!                       AS 65001 (both)       VIPs on lo, arp_ignore/announce,
//!                       bird2 (+ xlb run)     xlb-backend HTTP :80, sink :9000,
//!                                             default via the upstream
//! ```
//! The VIPs are the end-to-end topology's: 10.99.0.1 and fd99::1. Each
//! node has one BGP session per family with the upstream (`upstream4`,
//! `upstream6` on the node; `node{i}_4`, `node{i}_6` on the upstream).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::{
    bird::{self, Bird, Session, Timers},
    netns::NetNs,
    topology::{self, workspace_bin},
    vm::patience,
};

pub use crate::topology::{VIP4, VIP6, backend4, backend6};

pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 10);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 0x10);
/// The upstream's address on the client's link: the client's gateway.
pub const UPSTREAM_CLIENT_SIDE4: Ipv4Addr = Ipv4Addr::new(10, 78, 0, 1);
pub const UPSTREAM_CLIENT_SIDE6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 1);
/// The upstream's address on the router nodes' segment: their BGP
/// neighbor, and the backends' gateway.
pub const UPSTREAM4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
pub const UPSTREAM6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
pub const UPSTREAM_AS: u32 = 65000;
/// Every router node's AS: one AS for the load balancer, so that the
/// upstream's routes through any node have equal AS paths and merge.
pub const NODE_AS: u32 = 65001;

/// Router node `i`'s address on the segment (the end-to-end topology's
/// load balancer addresses).
pub fn node4(i: usize) -> Ipv4Addr {
    topology::lb4(i)
}
pub fn node6(i: usize) -> Ipv6Addr {
    topology::lb6(i)
}

/// The node-side and upstream-side protocol names of node `i`'s sessions,
/// IPv4 then IPv6.
pub fn node_sessions(i: usize) -> [(&'static str, String); 2] {
    [
        ("upstream4", format!("node{i}_4")),
        ("upstream6", format!("node{i}_6")),
    ]
}

pub struct BgpTopology {
    pub bridge: NetNs,
    pub client: NetNs,
    pub upstream: NetNs,
    pub nodes: Vec<NetNs>,
    pub backends: Vec<NetNs>,
    /// Logs and configs of what runs in the topology.
    pub dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl BgpTopology {
    /// Builds the client, the upstream, `nodes` router nodes and `backends`
    /// DSR backends, addressed and routed; nothing runs yet.
    pub fn new(nodes: usize, backends: usize) -> Self {
        let (bridge, dir) = crate::topology::bridge("bgp");
        let t = Self {
            client: NetNs::new(),
            upstream: NetNs::new(),
            nodes: (0..nodes).map(|_| NetNs::new()).collect(),
            backends: (0..backends).map(|_| NetNs::new()).collect(),
            bridge,
            dir,
            children: Vec::new(),
        };

        // The client's link: a veth straight to the upstream.
        t.upstream.ip(&[
            "link",
            "add",
            "eth1",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &t.client.name,
        ]);
        for (ns, dev, mac, v4, v6) in [
            (&t.client, "eth0", "02:78:00:00:00:10", CLIENT4, CLIENT6),
            (
                &t.upstream,
                "eth1",
                "02:78:00:00:00:01",
                UPSTREAM_CLIENT_SIDE4,
                UPSTREAM_CLIENT_SIDE6,
            ),
        ] {
            ns.ip(&["link", "set", dev, "address", mac]);
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev]);
            ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            ns.ip(&["link", "set", dev, "up"]);
            topology::checksums_in_software(ns, dev);
        }
        t.client.ip(&[
            "route",
            "add",
            "default",
            "via",
            &UPSTREAM_CLIENT_SIDE4.to_string(),
        ]);
        t.client.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &UPSTREAM_CLIENT_SIDE6.to_string(),
        ]);

        topology::plug(
            &t.bridge,
            &t.upstream,
            "p-u",
            "02:77:00:00:00:01",
            &format!("{UPSTREAM4}/24"),
            &format!("{UPSTREAM6}/64"),
        );
        t.upstream.sysctl("net.ipv4.ip_forward", "1");
        t.upstream.sysctl("net.ipv6.conf.all.forwarding", "1");
        // Spread flows over the ECMP next hops by their ports too, as a
        // load balancer's upstream must: by addresses alone one client's
        // flows would all take one node.
        t.upstream.sysctl("net.ipv4.fib_multipath_hash_policy", "1");
        t.upstream.sysctl("net.ipv6.fib_multipath_hash_policy", "1");

        for (i, node) in t.nodes.iter().enumerate() {
            let port = format!("p-n{i}");
            topology::plug(
                &t.bridge,
                node,
                &port,
                &format!("02:77:00:00:00:{:02x}", 2 + i),
                &format!("{}/24", node4(i)),
                &format!("{}/64", node6(i)),
            );
            topology::request_gro(&t.bridge, &port);
            t.default_via_upstream(node);
        }
        for (i, be) in t.backends.iter().enumerate() {
            topology::plug(
                &t.bridge,
                be,
                &format!("p-b{i}"),
                &format!("02:77:00:00:00:{:02x}", 0x21 + i),
                &format!("{}/24", backend4(i)),
                &format!("{}/64", backend6(i)),
            );
            topology::dsr_backend(be);
            // DSR: replies go to the client through the upstream.
            t.default_via_upstream(be);
        }
        t
    }

    fn default_via_upstream(&self, ns: &NetNs) {
        ns.ip(&["route", "add", "default", "via", &UPSTREAM4.to_string()]);
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &UPSTREAM6.to_string(),
        ]);
    }

    /// Router node `i`'s bird config: sessions to the upstream in both
    /// families, announcing kernel table 4243's routes of protocol 178.
    /// Change `table` and `protocol` to match another `[announce.bgp]`.
    pub fn node_config(&self, i: usize, bfd: bool) -> bird::RouterNode {
        let [(v4, _), (v6, _)] = node_sessions(i);
        bird::RouterNode {
            router_id: node4(i).into(),
            local_as: NODE_AS,
            sessions: vec![
                Session {
                    name: v4.into(),
                    local: node4(i).into(),
                    neighbor: UPSTREAM4.into(),
                    neighbor_as: UPSTREAM_AS,
                },
                Session {
                    name: v6.into(),
                    local: node6(i).into(),
                    neighbor: UPSTREAM6.into(),
                    neighbor_as: UPSTREAM_AS,
                },
            ],
            bfd,
            timers: Timers::FAST,
            table: bird::TABLE,
            protocol: bird::PROTOCOL,
        }
    }

    /// The upstream's bird config: sessions to every node in both families.
    pub fn upstream_config(&self, bfd: bool) -> bird::Upstream {
        let sessions = (0..self.nodes.len())
            .flat_map(|i| {
                let [(_, v4), (_, v6)] = node_sessions(i);
                [
                    Session {
                        name: v4,
                        local: UPSTREAM4.into(),
                        neighbor: node4(i).into(),
                        neighbor_as: NODE_AS,
                    },
                    Session {
                        name: v6,
                        local: UPSTREAM6.into(),
                        neighbor: node6(i).into(),
                        neighbor_as: NODE_AS,
                    },
                ]
            })
            .collect();
        bird::Upstream {
            router_id: UPSTREAM4.into(),
            local_as: UPSTREAM_AS,
            sessions,
            bfd,
            timers: Timers::FAST,
        }
    }

    pub fn start_upstream_bird(&self, bfd: bool) -> Bird {
        Bird::start(
            &self.upstream,
            "upstream",
            &self.upstream_config(bfd).render(),
        )
    }

    pub fn start_node_bird(&self, i: usize, bfd: bool) -> Bird {
        Bird::start(
            &self.nodes[i],
            &format!("node{i}"),
            &self.node_config(i, bfd).render(),
        )
    }

    /// Waits until node `i`'s sessions are established on both ends.
    pub fn wait_sessions(&self, upstream: &Bird, node: &Bird, i: usize, timeout: Duration) {
        for (on_node, on_upstream) in node_sessions(i) {
            node.wait_established(on_node, timeout);
            upstream.wait_established(&on_upstream, timeout);
        }
    }

    /// Takes node `i`'s bridge port down: the node vanishes from the
    /// segment without a word, as a dead machine or a cut cable would. The
    /// upstream's own link stays up; only BFD or the hold timer tell it.
    pub fn cut_link(&self, i: usize) {
        self.bridge.ip(&["link", "set", &format!("p-n{i}"), "down"]);
    }

    /// Undoes [`Self::cut_link`].
    pub fn restore_link(&self, i: usize) {
        self.bridge.ip(&["link", "set", &format!("p-n{i}"), "up"]);
    }

    /// Starts each backend's servers (`xlb-backend beI`), and `xlb decap`
    /// for VIPs that reach them in IPIP tunnels.
    pub fn start_backends(&mut self, decap: bool) {
        let backend = workspace_bin("xlb-tests", "xlb-backend");
        let xlb = decap.then(|| workspace_bin("lb-userspace", "xlb"));
        for i in 0..self.backends.len() {
            let name = format!("be{i}");
            let c = self.spawn_in(
                &self.backends[i],
                &backend,
                &[&name],
                &format!("{name}-http.log"),
            );
            self.adopt(&format!("{name} servers"), c);
            if let Some(xlb) = &xlb {
                let (vip4, vip6) = (VIP4.to_string(), VIP6.to_string());
                let args = ["decap", "--iface", "eth0", "--vip", &vip4, "--vip", &vip6];
                let c = self.spawn_in(&self.backends[i], xlb, &args, &format!("{name}-decap.log"));
                self.adopt(&format!("{name} decap"), c);
            }
        }
        for i in 0..self.backends.len() {
            self.wait_log(&format!("be{i}-http.log"), "http on");
            if decap {
                self.wait_log(&format!("be{i}-decap.log"), "decapsulating");
            }
        }
    }

    /// Runs `prog` in `ns` in the background, stderr to `log` in the
    /// topology's directory. Hand it to [`Self::adopt`] to have it killed
    /// with the topology.
    pub fn spawn_in(&self, ns: &NetNs, prog: &Path, args: &[&str], log: &str) -> Child {
        let out = std::fs::File::create(self.dir.join(log)).expect("log file");
        ns.command(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", prog.display()))
    }

    pub fn adopt(&mut self, what: &str, c: Child) {
        self.children.push((what.into(), c));
    }

    /// Kills the background program adopted as `what` and waits for it.
    pub fn stop(&mut self, what: &str) {
        let i = self
            .children
            .iter()
            .position(|(w, _)| w == what)
            .unwrap_or_else(|| panic!("no background program {what:?}"));
        let (_, mut c) = self.children.remove(i);
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Sends SIGKILL to the background program adopted as `what` and
    /// returns once it is dead (a zombie until [`Self::stop`] reaps it).
    pub fn kill(&self, what: &str) {
        let (_, c) = self
            .children
            .iter()
            .find(|(w, _)| w == what)
            .unwrap_or_else(|| panic!("no background program {what:?}"));
        let pid = c.id();
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let deadline = Instant::now() + patience(Duration::from_secs(10));
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state follows the name, which is in parentheses.
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            if matches!(state, None | Some(Some('Z' | 'X'))) {
                return;
            }
            assert!(Instant::now() < deadline, "{what} ({pid}) did not die");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    pub fn wait_log(&self, name: &str, needle: &str) {
        let deadline = Instant::now() + patience(Duration::from_secs(20));
        while !self.log(name).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{name} never said {needle:?}:\n{}",
                self.log(name)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// An HTTP GET from the client to `addr`: the answering backend's
    /// name.
    pub fn http_get(&self, addr: IpAddr) -> String {
        let host = match addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        let max_time = patience(Duration::from_secs(5)).as_secs().to_string();
        let out = self
            .client
            .command("curl")
            .args(["-sS", "-g", "--max-time", &max_time])
            .arg(format!("http://{host}/"))
            .output()
            .expect("running curl");
        assert!(
            out.status.success(),
            "curl http://{host}/ from the client: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for BgpTopology {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
