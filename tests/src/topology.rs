//! The end-to-end topology: a client, load balancers and three backends,
//! each in its own namespace, joined by a bridge in a namespace of its own
//! (never the host's interfaces or routes).
//!
//! ```text
//!                      ┌──────────── bridge ns: br0 ────────────┐
//!   client ns ── p-c ──┤ p-l0   p-l1   p-b0      p-b1      p-b2  │
//!   eth0 10.77.0.10    └──┬──────┬──────┬─────────┬─────────┬────┘
//!   route VIP via LB(s)   │      │      │         │         │
//!                   lb0 ns eth0  lb1    be0 ns    be1 ns    be2 ns
//!                   10.77.0.2    .3     10.77.0.21 .22      .23
//!                   xlb run (XDP)       VIPs on lo, arp_ignore/announce,
//!                                       xlb decap (IPIP), xlb-backend HTTP :80, sink :9000
//! ```
//! IPv6 mirrors it: fd77::10 (client), fd77::2/3 (LBs), fd77::21-23
//! (backends); VIPs 10.99.0.1 and fd99::1. Backends reply to the client
//! directly: replies never cross a load balancer.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    netns::{NetNs, PinDir},
    vm::patience,
};

pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 10);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x10);

pub fn lb4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 2 + i as u8)
}
pub fn lb6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2 + i as u16)
}
pub fn backend4(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, 0, 21 + i as u8)
}
pub fn backend6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x21 + i as u16)
}

/// A binary of this workspace, built (or brought up to date) once per
/// process and found next to the running executable; or, when
/// `XLB_BIN_DIR` is set (`cargo xtask vm-test`, whose guests run prebuilt
/// binaries and no cargo), taken from that directory as it is.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    use std::{collections::HashMap, sync::Mutex};
    if let Some(dir) = std::env::var_os("XLB_BIN_DIR") {
        let path = Path::new(&dir).join(bin);
        assert!(
            path.is_file(),
            "XLB_BIN_DIR has no {bin}: {} (cargo build -p {package} --bin {bin} makes it)",
            path.display()
        );
        return path;
    }
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let map = built.get_or_insert_with(HashMap::new);
    if let Some(p) = map.get(bin) {
        return p.clone();
    }
    // Inside a VM guest (`cargo xtask vm-test`) the workspace is read-only
    // and the binaries were built beforehand on the host.
    if let Some(dir) = std::env::var_os("XLB_BIN_DIR") {
        let path = PathBuf::from(dir).join(bin);
        assert!(path.exists(), "XLB_BIN_DIR has no {}", path.display());
        map.insert(bin.to_string(), path.clone());
        return path;
    }
    let exe = std::env::current_exe().expect("executable path");
    let mut dir = exe.parent().expect("executable dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["build", "-q", "-p", package, "--bin", bin]);
    // Cargo runs this test with the variables it sets for a crate
    // (CARGO_MANIFEST_DIR=tests/, CARGO_PKG_NAME=xlb-tests, OUT_DIR, ...),
    // and ring's build script reruns when CARGO_MANIFEST_DIR or OUT_DIR
    // differ from the last build's: passed on, they rebuilt ring and
    // everything above it (rustls, kube, the AWS SDK, xlb) here, and again
    // in the next `cargo test`, minutes each time.
    for (k, _) in std::env::vars_os() {
        if k.to_str().is_some_and(set_by_cargo_for_a_crate) {
            c.env_remove(k);
        }
    }
    if dir.ends_with("release") {
        c.arg("--release");
    }
    let ok = c.status().is_ok_and(|s| s.success());
    let path = dir.join(bin);
    assert!(
        ok && path.exists(),
        "could not build {bin} at {}",
        path.display()
    );
    map.insert(bin.to_string(), path.clone());
    path
}

/// The variables cargo sets for a crate's build and for `cargo test`'s
/// run of it (not those configuring cargo itself, like CARGO_TARGET_DIR).
fn set_by_cargo_for_a_crate(name: &str) -> bool {
    name == "OUT_DIR"
        || name == "CARGO_CRATE_NAME"
        || name == "CARGO_BIN_NAME"
        || name == "CARGO_PRIMARY_PACKAGE"
        || name == "CARGO_TARGET_TMPDIR"
        || name == "CARGO_RUSTC_CURRENT_DIR"
        || name.starts_with("CARGO_MANIFEST_")
        || name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
}

/// A veth from `ns` (as eth0, with MAC `mac` and addresses `v4` and `v6`,
/// prefix lengths included) to port `port` of the bridge `br0` in `bridge`.
pub fn plug(bridge: &NetNs, ns: &NetNs, port: &str, mac: &str, v4: &str, v6: &str) {
    bridge.ip(&[
        "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
    ]);
    bridge.ip(&["link", "set", port, "master", "br0", "up"]);
    ns.ip(&["link", "set", "eth0", "address", mac]);
    ns.ip(&["addr", "add", v4, "dev", "eth0"]);
    ns.ip(&["addr", "add", v6, "dev", "eth0", "nodad"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    checksums_in_software(ns, "eth0");
}

/// veth "offloads" transmit checksums: the frame carries only the
/// pseudo-header sum and the peer is told not to check. XDP forwards the
/// bytes as they are, so the backend would see a bad checksum. Real NICs
/// put the real checksum on the wire; so must these.
pub fn checksums_in_software(ns: &NetNs, dev: &str) {
    ns.exec(&["ethtool", "-K", dev, "tx", "off"]);
}

/// Native XDP_TX on a veth delivers only if the peer (`port`, in `ns`) runs
/// NAPI, which it does once GRO is *requested*: GRO is on by default
/// without being requested, so turn it off and on again.
pub fn request_gro(ns: &NetNs, port: &str) {
    ns.exec(&["ethtool", "-K", port, "gro", "off"]);
    ns.exec(&["ethtool", "-K", port, "gro", "on"]);
}

/// Makes `be` a DSR backend: both VIPs on lo, and ARP answered only for
/// eth0's own address, never the VIP.
pub fn dsr_backend(be: &NetNs) {
    be.ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"]);
    be.ip(&["addr", "add", &format!("{VIP6}/128"), "dev", "lo"]);
    for k in ["all", "eth0"] {
        be.sysctl(&format!("net.ipv4.conf.{k}.arp_ignore"), "1");
        be.sysctl(&format!("net.ipv4.conf.{k}.arp_announce"), "2");
    }
}

pub struct Topology {
    pub bridge: NetNs,
    pub client: NetNs,
    pub lbs: Vec<NetNs>,
    pub backends: Vec<NetNs>,
    children: Vec<(String, Child)>,
    pub dir: PathBuf,
}

/// The namespace holding a topology's bridge `br0` (multicast snooping
/// off: every port sees neighbour solicitations), and a directory for the
/// topology's logs named after it.
pub fn bridge(kind: &str) -> (NetNs, PathBuf) {
    let bridge = NetNs::new();
    bridge.ip(&[
        "link",
        "add",
        "br0",
        "type",
        "bridge",
        "mcast_snooping",
        "0",
    ]);
    bridge.ip(&["link", "set", "br0", "up"]);
    let dir = std::env::temp_dir().join(format!("{}-{kind}", bridge.name));
    std::fs::create_dir_all(&dir).expect("topology dir");
    (bridge, dir)
}

impl Topology {
    /// Builds `lbs` load balancers and `backends` backends, with the client
    /// routing the VIPs through load balancer 0.
    pub fn new(lbs: usize, backends: usize) -> Self {
        let (bridge, dir) = bridge("e2e");
        let t = Self {
            client: NetNs::new(),
            lbs: (0..lbs).map(|_| NetNs::new()).collect(),
            backends: (0..backends).map(|_| NetNs::new()).collect(),
            bridge,
            children: Vec::new(),
            dir,
        };
        t.plug(
            &t.client,
            "p-c",
            "02:77:00:00:00:10",
            &format!("{CLIENT4}/24"),
            &format!("{CLIENT6}/64"),
        );
        for (i, lb) in t.lbs.iter().enumerate() {
            t.plug(
                lb,
                &format!("p-l{i}"),
                &format!("02:77:00:00:00:{:02x}", 2 + i),
                &format!("{}/24", lb4(i)),
                &format!("{}/64", lb6(i)),
            );
            request_gro(&t.bridge, &format!("p-l{i}"));
        }
        for (i, be) in t.backends.iter().enumerate() {
            t.plug(
                be,
                &format!("p-b{i}"),
                &format!("02:77:00:00:00:{:02x}", 0x21 + i),
                &format!("{}/24", backend4(i)),
                &format!("{}/64", backend6(i)),
            );
            dsr_backend(be);
        }
        t.route_via(&[0]);
        t
    }

    fn plug(&self, ns: &NetNs, port: &str, mac: &str, v4: &str, v6: &str) {
        plug(&self.bridge, ns, port, mac, v4, v6);
    }

    /// Routes the client's traffic for the VIPs through these load
    /// balancers (several: an ECMP route hashing on L4, as routers do).
    pub fn route_via(&self, lbs: &[usize]) {
        for (vip, family, lb) in [
            (
                format!("{VIP4}/32"),
                "-4",
                lbs.iter().map(|&i| lb4(i).to_string()).collect::<Vec<_>>(),
            ),
            (
                format!("{VIP6}/128"),
                "-6",
                lbs.iter().map(|&i| lb6(i).to_string()).collect(),
            ),
        ] {
            let mut args: Vec<String> = vec![family.into(), "route".into(), "replace".into(), vip];
            if lb.len() == 1 {
                args.extend(["via".into(), lb[0].clone()]);
            } else {
                for hop in lb {
                    args.extend(["nexthop".into(), "via".into(), hop]);
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            self.client.ip(&args);
        }
        self.client
            .sysctl("net.ipv4.fib_multipath_hash_policy", "1");
        self.client
            .sysctl("net.ipv6.fib_multipath_hash_policy", "1");
    }

    /// Starts each backend's servers (and `xlb decap` for IPIP VIPs).
    pub fn start_backends(&mut self, decap: bool) {
        let backend = workspace_bin("xlb-tests", "xlb-backend");
        let xlb = workspace_bin("lb-userspace", "xlb");
        for i in 0..self.backends.len() {
            let name = format!("be{i}");
            let c = self.spawn_in(
                Ns::Backend(i),
                &backend,
                &[&name],
                &format!("{name}-http.log"),
            );
            self.children.push((format!("{name} servers"), c));
            let c = self.spawn_in(
                Ns::Backend(i),
                Path::new("iperf3"),
                &["-s"],
                &format!("{name}-iperf3.log"),
            );
            self.children.push((format!("{name} iperf3"), c));
            if decap {
                let vip4 = VIP4.to_string();
                let vip6 = VIP6.to_string();
                let args = [
                    "decap",
                    "--iface",
                    "eth0",
                    "--vip",
                    vip4.as_str(),
                    "--vip",
                    vip6.as_str(),
                ];
                let c = self.spawn_in(Ns::Backend(i), &xlb, &args, &format!("{name}-decap.log"));
                self.children.push((format!("{name} decap"), c));
            }
        }
        for i in 0..self.backends.len() {
            self.wait_log(&format!("be{i}-http.log"), "http on");
            if decap {
                self.wait_log(&format!("be{i}-decap.log"), "decapsulating");
            }
        }
    }

    /// Starts on every backend a second HTTP server on `port` (its sink
    /// on `sink`), adopted as `be<i> http <port>`, and waits until each
    /// listens: a port to check, or to serve, apart from the usual one.
    pub fn serve_http_on_backends(&mut self, port: u16, sink: u16) {
        let backend = workspace_bin("xlb-tests", "xlb-backend");
        let (port, sink) = (port.to_string(), sink.to_string());
        for i in 0..self.backends.len() {
            let name = format!("be{i}");
            let log = format!("{name}-http-{port}.log");
            let c = self.spawn_in(
                Ns::Backend(i),
                &backend,
                &[&name, "--http", &port, "--sink", &sink],
                &log,
            );
            self.adopt(&format!("{name} http {port}"), c);
            self.wait_log(&log, "http on");
        }
    }

    pub fn ns(&self, which: Ns) -> &NetNs {
        match which {
            Ns::Client => &self.client,
            Ns::Lb(i) => &self.lbs[i],
            Ns::Backend(i) => &self.backends[i],
            Ns::Bridge => &self.bridge,
        }
    }

    /// Runs a program in a namespace in the background, stderr to a log in
    /// the topology's directory; killed when the topology is dropped.
    pub fn spawn_in(&self, which: Ns, prog: &Path, args: &[&str], log: &str) -> Child {
        let out = std::fs::File::create(self.dir.join(log)).expect("log file");
        self.ns(which)
            .command(prog)
            .args(args)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", prog.display()))
    }

    pub fn adopt(&mut self, what: &str, c: Child) {
        self.children.push((what.into(), c));
    }

    /// Kills the background program adopted or started as `what` (e.g.
    /// `"be1 servers"`, `"be2 decap"`) and waits for it to end.
    pub fn stop(&mut self, what: &str) {
        let mut c = self.take(what);
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Hands over the background program adopted or started as `what`:
    /// the caller stops it, when it chooses.
    pub fn take(&mut self, what: &str) -> Child {
        let i = self
            .children
            .iter()
            .position(|(w, _)| w == what)
            .unwrap_or_else(|| panic!("no background program {what:?}"));
        self.children.remove(i).1
    }

    /// Starts backend `i`'s HTTP server and sink again (after [`Self::stop`]).
    pub fn start_backend_servers(&mut self, i: usize) {
        let name = format!("be{i}");
        let log = format!("{name}-http-{}.log", self.children.len());
        let backend = workspace_bin("xlb-tests", "xlb-backend");
        let c = self.spawn_in(Ns::Backend(i), &backend, &[&name], &log);
        self.children.push((format!("{name} servers"), c));
        self.wait_log(&log, "http on");
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

    /// Runs a command in a namespace to completion: (exit code, stdout, stderr).
    pub fn run_in(
        &self,
        which: Ns,
        prog: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
    ) -> (i32, String, String) {
        let out = self
            .ns(which)
            .command(prog)
            .args(args)
            .output()
            .expect("run command");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The NetNs guards delete the namespaces (and their veths) next.
    }
}

/// The daemon's config for LB `lb`: both VIPs on every port, one encap.
pub fn lb_config(
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
state_dir = "{state}"
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
        state = t.dir.join("state").display(),
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
pub fn start_lb(t: &Topology, i: usize, cfg: &Path, log: &str) -> Child {
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

pub fn stop_lb(t: &Topology, i: usize, mut c: Child, pins: &PinDir) {
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
pub fn curl(t: &Topology, vip: IpAddr, n: usize) -> BTreeMap<String, usize> {
    curl_port(t, vip, 80, n)
}

/// [`curl`] to another port of the VIP.
pub fn curl_port(t: &Topology, vip: IpAddr, port: u16, n: usize) -> BTreeMap<String, usize> {
    curl_with(t, vip, port, n, &[])
}

/// [`curl_port`] with further curl arguments (e.g. `--local-port`).
pub fn curl_with(
    t: &Topology,
    vip: IpAddr,
    port: u16,
    n: usize,
    extra: &[&str],
) -> BTreeMap<String, usize> {
    let host = match vip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let list = t
        .dir
        .join(format!("urls-{host}-{port}.txt").replace([':', '[', ']'], "_"));
    let max_time = patience(Duration::from_secs(5)).as_secs().to_string();
    let urls: String = (0..n)
        .map(|i| format!("url = \"http://{host}:{port}/?r={i}\"\n"))
        .collect();
    std::fs::write(&list, urls).unwrap();
    let (code, out, err) = t.run_in(
        Ns::Client,
        "curl",
        &[
            "-sS",
            "-g",
            "--max-time",
            &max_time,
            "-H",
            "Connection: close",
            "-K",
            list.to_str().unwrap(),
        ]
        .into_iter()
        .chain(extra.iter().copied())
        .collect::<Vec<_>>(),
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

/// tcpdump on the LB's bridge port: every frame with a VIP as IP source,
/// i.e. a reply crossing the load balancer.
pub fn capture_replies(t: &Topology, lb: usize) -> Child {
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

pub fn captured(t: &Topology, lb: usize, mut c: Child) -> Vec<String> {
    // Time for the last frames to reach tcpdump's output.
    std::thread::sleep(patience(Duration::from_millis(300)));
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let _ = c.wait();
    t.log(&format!("capture-{lb}.txt"))
        .lines()
        .filter(|l| l.contains(" > "))
        .map(String::from)
        .collect()
}

#[derive(Clone, Copy, Debug)]
pub enum Ns {
    Client,
    Lb(usize),
    Backend(usize),
    Bridge,
}
