//! VIP ownership on a shared link (`announce = "l2"`), end to end: two real
//! `xlb` daemons elect a leader through Leases on the harness API server,
//! the leader's XDP program answers ARP and neighbour solicitations for the
//! VIPs, and a client's HTTP load follows the VIP through kill -9 takeovers.
//!
//! ```text
//!   client 10.0.0.2 / fd00::2 ─┐
//!   router a 10.0.0.1 (ra0) ───┤
//!   router b 10.0.0.3 (rb0) ───┼── br0 (own namespace; the capture runs here)
//!   backend 10.0.0.17 ─────────┤      VIPs 10.0.0.100, fd00::100 (on the
//!   API server 10.0.0.50 ──────┘      backend's loopback: L2 DSR)
//! ```
//!
//! Every ARP reply, neighbour advertisement and gratuitous announcement
//! for a VIP seen on the bridge is recorded: at no time may two MACs claim
//! one VIP, and a takeover is timed from the kill to the new owner's first
//! word on the wire.

use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use xlb_tests::{
    daemon::{Daemon, free_port, http_get, metric},
    kube_api::KubeApi,
    netns::{NetNs, PinDir, privileged},
    vm::patience,
};

const VIP4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);
const LEASE_MS: u64 = 3000;
const BOUND_MS: u64 = 2000;
/// The gate test's timings: a bound long enough for a restart on a busy
/// machine.
const GATE_LEASE_MS: u64 = 12_000;
const GATE_BOUND_MS: u64 = 8_000;
const TAKEOVERS: usize = 10;
/// A request's connect timeout (a connection through the lab takes about a
/// millisecond).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);

struct Router {
    name: &'static str,
    ns: NetNs,
    iface: &'static str,
    mac: [u8; 6],
    config: PathBuf,
    metrics: u16,
    _pins: PinDir,
}

struct Lab {
    seg: NetNs,
    client: NetNs,
    backend: NetNs,
    api_ns: NetNs,
    api: KubeApi,
    routers: [Router; 2],
    dir: PathBuf,
    stop: Arc<AtomicBool>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if std::thread::panicking() {
            eprintln!("kept {} (configs, daemon logs)", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn mac_of(n: u8) -> [u8; 6] {
    [0x02, 0, 0, 0, 0xaa, n]
}

fn mac_text(m: [u8; 6]) -> String {
    m.map(|b| format!("{b:02x}")).join(":")
}

/// Plugs a veth named `name` into `ns` and its peer into the bridge.
fn plug(seg: &NetNs, ns: &NetNs, name: &str, mac: [u8; 6], v4: &str, v6: &str) {
    let peer = format!("p-{name}");
    seg.ip(&["link", "add", &peer, "type", "veth", "peer", "name", name]);
    seg.ip(&["link", "set", name, "netns", &ns.name]);
    seg.ip(&["link", "set", &peer, "master", "br0", "up"]);
    ns.ip(&["link", "set", name, "address", &mac_text(mac)]);
    ns.ip(&["addr", "add", v4, "dev", name]);
    ns.ip(&["addr", "add", v6, "dev", name, "nodad"]);
    ns.ip(&["link", "set", name, "up"]);
}

fn lab(tag: &str, lease_ms: u64, bound_ms: u64) -> Lab {
    let seg = NetNs::new();
    seg.ip(&["link", "add", "br0", "type", "bridge"]);
    seg.ip(&["link", "set", "br0", "up"]);
    let (client, backend, api_ns) = (NetNs::new(), NetNs::new(), NetNs::new());
    plug(&seg, &client, "c0", mac_of(2), "10.0.0.2/24", "fd00::2/64");
    plug(
        &seg,
        &backend,
        "b0",
        mac_of(17),
        "10.0.0.17/24",
        "fd00::17/64",
    );
    plug(
        &seg,
        &api_ns,
        "k0",
        mac_of(50),
        "10.0.0.50/24",
        "fd00::50/64",
    );
    // The backend serves the VIPs from its loopback (DSR) and must not
    // answer ARP for them itself.
    backend.ip(&["addr", "add", "10.0.0.100/32", "dev", "lo"]);
    backend.ip(&["addr", "add", "fd00::100/128", "dev", "lo"]);
    backend.sysctl("net.ipv4.conf.all.arp_ignore", "1");
    backend.sysctl("net.ipv4.conf.all.arp_announce", "2");
    let dir = std::env::temp_dir().join(format!("xlbt-announce-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let api = KubeApi::serve(api_ns.run(|| TcpListener::bind("10.0.0.50:0").unwrap()));
    api.write_kubeconfig(&dir.join("kubeconfig"));
    let router = |name: &'static str, iface: &'static str, n: u8| {
        let ns = NetNs::new();
        plug(
            &seg,
            &ns,
            iface,
            mac_of(n),
            &format!("10.0.0.{n}/24"),
            &format!("fd00::{n}/64"),
        );
        ns.sysctl("net.ipv4.ip_forward", "1");
        ns.sysctl("net.ipv6.conf.all.forwarding", "1");
        // The node-failure rounds take the link down and up: its IPv6
        // addresses must survive that, as on a router that reboots with
        // its configuration.
        ns.sysctl("net.ipv6.conf.all.keep_addr_on_down", "1");
        let pins = PinDir::new();
        let metrics = free_port();
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            r#"[dataplane]
interfaces = ["{iface}"]
xdp_mode = "generic"
pin_path = "{pins}"
state_dir = "{state}"
maglev_table_size = 251
max_vips = 16
max_backends = 64
flow_table_size = 4096
encap = "l2"

[metrics]
listen = "127.0.0.1:{metrics}"

[[vip]]
address = "{VIP4}"
port = 80
backends = [{{ address = "10.0.0.17" }}]

[[vip]]
address = "{VIP6}"
port = 80
backends = [{{ address = "fd00::17" }}]

[kubernetes]
enabled = true
kubeconfig = "{kubeconfig}"
lease_namespace = "xlb-system"
node_name = "{name}"
lease_duration_ms = {lease_ms}
renew_deadline_ms = {renew_ms}
retry_period_ms = 300
lease_buckets = 1

[announce]
mode = "l2"
liveness_bound_ms = {bound_ms}
gratuitous_count = 3
gratuitous_interval_ms = 500
"#,
            pins = pins.path.display(),
            state = dir.join(format!("state-{name}")).display(),
            kubeconfig = dir.join("kubeconfig").display(),
            renew_ms = lease_ms / 2,
        );
        std::fs::write(&config, text).unwrap();
        Router {
            name,
            ns,
            iface,
            mac: mac_of(n),
            config,
            metrics,
            _pins: pins,
        }
    };
    let routers = [router("router-a", "ra0", 1), router("router-b", "rb0", 3)];
    Lab {
        seg,
        client,
        backend,
        api_ns,
        api,
        routers,
        dir,
        stop: Arc::new(AtomicBool::new(false)),
    }
}

fn start(l: &Lab, r: &Router, log: &str) -> Daemon {
    let mut d = Daemon::spawn(
        &r.ns,
        &["--config", r.config.to_str().unwrap()],
        &l.dir.join(log),
    );
    d.wait_for_log("reconciled", patience(Duration::from_secs(20)));
    d
}

/// Runs `f` on a new thread inside `ns` (a loop that outlives this call).
fn spawn_in(ns: &NetNs, f: impl FnOnce() + Send + 'static) -> std::thread::JoinHandle<()> {
    let path = format!("/var/run/netns/{}", ns.name);
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap();
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0
        );
        f()
    })
}

/// A minimal HTTP server on the backend: one response per connection.
fn serve_http(l: &Lab) {
    let v4 = l.backend.run(|| TcpListener::bind((VIP4, 80)).unwrap());
    let v6 = l.backend.run(|| TcpListener::bind((VIP6, 80)).unwrap());
    for listener in [v4, v6] {
        std::thread::spawn(move || {
            for mut s in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 1024];
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
                });
            }
        });
    }
}

/// One HTTP request's fate.
#[derive(Clone, Copy, Debug)]
struct Sample {
    at: Instant,
    ok: bool,
}

/// 20 requests/s to `vip` from the client until `stop`; every outcome kept.
fn load(l: &Lab, vip: IpAddr) -> Arc<Mutex<Vec<Sample>>> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let (out, stop) = (samples.clone(), l.stop.clone());
    spawn_in(&l.client, move || {
        while !stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            let ok = request(SocketAddr::new(vip, 80));
            out.lock().unwrap().push(Sample { at, ok });
            std::thread::sleep(Duration::from_millis(50).saturating_sub(at.elapsed()));
        }
    });
    samples
}

fn request(to: SocketAddr) -> bool {
    // A short connect timeout: a SYN lost during a takeover is given up
    // at once rather than retransmitted a second later, so the gaps are
    // measured to about REQUEST_TIMEOUT.
    let Ok(mut s) = TcpStream::connect_timeout(&to, REQUEST_TIMEOUT) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut r = String::new();
    s.read_to_string(&mut r).is_ok() && r.ends_with("ok")
}

/// Who claimed a VIP on the wire: an ARP reply or gratuitous ARP naming
/// it as sender, or a neighbour advertisement for it.
#[derive(Clone, Copy, Debug)]
struct Claim {
    at: Instant,
    vip: IpAddr,
    mac: [u8; 6],
    /// Sent unasked: a gratuitous ARP (sender == target) or an unsolicited
    /// NA (to all nodes, Solicited clear).
    gratuitous: bool,
}

/// Records every claim seen on the bridge until `stop`.
fn capture(l: &Lab) -> Arc<Mutex<Vec<Claim>>> {
    let sock = l.seg.run(|| {
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                (libc::ETH_P_ALL as u16).to_be() as i32,
            )
        };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let index = xlb_tests::lab::ifindex("br0");
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        addr.sll_ifindex = index as i32;
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as u32,
            )
        };
        sock
    });
    let claims = Arc::new(Mutex::new(Vec::new()));
    let (out, stop) = (claims.clone(), l.stop.clone());
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                continue;
            }
            if let Some((vip, mac, gratuitous)) = claim_in(&buf[..n as usize]) {
                out.lock().unwrap().push(Claim {
                    at: Instant::now(),
                    vip,
                    mac,
                    gratuitous,
                });
            }
        }
    });
    claims
}

/// The VIP a frame claims, for which MAC (its Ethernet source), and
/// whether unasked.
fn claim_in(f: &[u8]) -> Option<(IpAddr, [u8; 6], bool)> {
    let src: [u8; 6] = f.get(6..12)?.try_into().ok()?;
    match u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) {
        0x0806 => {
            let spa: [u8; 4] = f.get(28..32)?.try_into().ok()?;
            let op = u16::from_be_bytes([f[20], f[21]]);
            let tpa: [u8; 4] = f.get(38..42)?.try_into().ok()?;
            // Replies naming the VIP as sender, and announcements.
            let gratuitous = op == 1 && spa == tpa;
            (Ipv4Addr::from(spa) == VIP4 && (op == 2 || gratuitous)).then_some((
                VIP4.into(),
                src,
                gratuitous,
            ))
        }
        0x86dd if f.get(20) == Some(&58) && f.get(54) == Some(&136) => {
            let target: [u8; 16] = f.get(62..78)?.try_into().ok()?;
            let all_nodes = f.get(38..54)? == frames_all_nodes();
            let gratuitous = all_nodes && f.get(58)? & 0x40 == 0;
            (Ipv6Addr::from(target) == VIP6).then_some((VIP6.into(), src, gratuitous))
        }
        _ => None,
    }
}

fn frames_all_nodes() -> [u8; 16] {
    Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets()
}

fn lease_holder(l: &Lab) -> Option<String> {
    l.api
        .list("coordination.k8s.io/v1", "Lease")
        .into_iter()
        .find(|x| x["metadata"]["name"] == "xlb-bucket-0")
        .and_then(|x| x["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let limit = patience(limit);
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The client's neighbour entry for `vip`, if it has a MAC.
fn client_neighbour(l: &Lab, vip: IpAddr) -> Option<String> {
    let out = l
        .client
        .command("ip")
        .args(["neigh", "show", &vip.to_string(), "dev", "c0"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_owned)
}

fn owner_metric(r: &Router, vip: IpAddr) -> bool {
    let (code, body) = http_get(&r.ns, r.metrics, "/metrics");
    code == 200 && metric(&body, &format!("xlb_vip_owner{{vip=\"{vip}\"}}")) == Some(1.0)
}

/// The claims are never two MACs' at once: per VIP, the runs of claims by
/// one MAC alternate only at kills, the n-th change after the n-th kill.
fn assert_one_claimant(claims: &[Claim], vip: IpAddr, kills: &[Instant]) {
    let mut runs: Vec<(Instant, [u8; 6])> = Vec::new();
    for c in claims.iter().filter(|c| c.vip == vip) {
        if runs.last().is_none_or(|(_, m)| *m != c.mac) {
            runs.push((c.at, c.mac));
        }
    }
    let text: Vec<String> = runs.iter().map(|(_, m)| mac_text(*m)).collect();
    assert!(
        runs.len() <= kills.len() + 1,
        "{vip}: {} changes of claimant for {} takeovers: {text:?}",
        runs.len() - 1,
        kills.len()
    );
    for (i, (at, mac)) in runs.iter().enumerate().skip(1) {
        assert!(
            *at > kills[i - 1],
            "{vip}: {} claimed it before takeover {i}",
            mac_text(*mac)
        );
    }
}

#[test]
fn l2_failover_follows_the_lease_and_only_the_leader_answers() {
    if !privileged("l2_failover_follows_the_lease_and_only_the_leader_answers") {
        return;
    }
    let l = lab("failover", LEASE_MS, BOUND_MS);
    let _ = &l.api_ns;
    serve_http(&l);
    let claims = capture(&l);
    let mut daemons = [
        Some(start(&l, &l.routers[0], "a-0.log")),
        Some(start(&l, &l.routers[1], "b-0.log")),
    ];
    wait_until("a leader", Duration::from_secs(15), || {
        lease_holder(&l).is_some()
    });
    let vips: [IpAddr; 2] = [VIP4.into(), VIP6.into()];
    let index_of = |name: &str| l.routers.iter().position(|r| r.name == name).unwrap();
    let mut leader = index_of(&lease_holder(&l).unwrap());
    for vip in vips {
        wait_until(&format!("{vip} owned"), Duration::from_secs(10), || {
            owner_metric(&l.routers[leader], vip)
        });
        assert!(
            !owner_metric(&l.routers[1 - leader], vip),
            "{vip}: two owners"
        );
        wait_until(&format!("{vip} answering"), Duration::from_secs(10), || {
            l.client.run(|| request(SocketAddr::new(vip, 80)))
        });
        assert_eq!(
            client_neighbour(&l, vip).as_deref(),
            Some(mac_text(l.routers[leader].mac).as_str()),
            "{vip}: the client's neighbour entry is not the leader's MAC"
        );
    }
    // Solicitations to the solicited-node group reach the program because
    // the leader joined the group (a NIC filters groups nobody joined).
    let groups = |r: &Router| {
        let out =
            r.ns.command("ip")
                .args(["maddr", "show", "dev", r.iface])
                .output()
                .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        groups(&l.routers[leader]).contains("33:33:ff:00:01:00"),
        "{}",
        groups(&l.routers[leader])
    );
    assert!(!groups(&l.routers[1 - leader]).contains("33:33:ff:00:01:00"));

    let loads = vips.map(|v| load(&l, v));
    let mut kills = Vec::new();
    let mut takeovers: Vec<(IpAddr, Duration)> = Vec::new();
    // Odd rounds take the whole node away (its link goes down with the
    // daemon), so its data plane cannot carry the VIP until the takeover:
    // what a real node failure costs. Even rounds kill the daemon only.
    for round in 0..TAKEOVERS {
        std::thread::sleep(Duration::from_millis(1000));
        let old = leader;
        let whole_node = round % 2 == 1;
        daemons[old].as_mut().unwrap().kill9();
        if whole_node {
            l.routers[old]
                .ns
                .ip(&["link", "set", l.routers[old].iface, "down"]);
        }
        let killed = Instant::now();
        kills.push(killed);
        let new = 1 - old;
        for vip in vips {
            wait_until(
                &format!("round {round}: {vip} taken over"),
                Duration::from_secs(15),
                || {
                    claims
                        .lock()
                        .unwrap()
                        .iter()
                        .any(|c| c.vip == vip && c.at > killed && c.mac == l.routers[new].mac)
                },
            );
            let first = claims
                .lock()
                .unwrap()
                .iter()
                .find(|c| c.vip == vip && c.at > killed && c.mac == l.routers[new].mac)
                .map(|c| c.at)
                .unwrap();
            takeovers.push((vip, first - killed));
        }
        assert_eq!(lease_holder(&l).as_deref(), Some(l.routers[new].name));
        // The client follows: the new owner's gratuitous ARP / unsolicited
        // NA (Override set) rewrites the entry it already has.
        let new_mac = mac_text(l.routers[new].mac);
        for vip in vips {
            wait_until(
                &format!("round {round}: the client's entry for {vip} at {new_mac}"),
                Duration::from_secs(5),
                || client_neighbour(&l, vip).as_deref() == Some(new_mac.as_str()),
            );
        }
        if whole_node {
            // Requests flow again through the new owner before the old
            // node comes back.
            for vip in vips {
                wait_until(
                    &format!("round {round}: {vip} served again"),
                    Duration::from_secs(10),
                    || l.client.run(|| request(SocketAddr::new(vip, 80))),
                );
            }
            l.routers[old]
                .ns
                .ip(&["link", "set", l.routers[old].iface, "up"]);
        }
        // The old leader comes back and does not take the VIPs back.
        daemons[old] = Some(start(
            &l,
            &l.routers[old],
            &format!("{}-{}.log", &l.routers[old].name, round + 1),
        ));
        leader = new;
    }
    std::thread::sleep(Duration::from_secs(2));
    for vip in vips {
        assert!(owner_metric(&l.routers[leader], vip));
        assert!(
            !owner_metric(&l.routers[1 - leader], vip),
            "{vip}: the restarted router took it back"
        );
    }
    // A clean stop hands the Lease back after going silent: the other
    // router answers well before a Lease would have expired.
    let stopped = Instant::now();
    assert_eq!(daemons[leader].as_mut().unwrap().terminate(), Some(0));
    kills.push(stopped);
    let other = l.routers[1 - leader].mac;
    for vip in vips {
        wait_until(
            &format!("{vip} taken over after SIGTERM"),
            Duration::from_secs(10),
            || {
                claims
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|c| c.vip == vip && c.at > stopped && c.mac == other)
            },
        );
    }
    let handover = stopped.elapsed();
    eprintln!("SIGTERM to the new owner's first claim: {handover:?}");
    assert!(
        handover < Duration::from_millis(LEASE_MS),
        "the takeover after a clean stop waited {handover:?}, as long as a Lease expiry"
    );
    l.stop.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(300));
    let claims = claims.lock().unwrap().clone();
    for vip in vips {
        assert_one_claimant(&claims, vip, &kills);
        // Each takeover is announced `gratuitous_count` (3) times by the
        // new owner, 500 ms apart, and by nobody else.
        for (round, w) in kills.windows(2).enumerate() {
            let sent: Vec<&Claim> = claims
                .iter()
                .filter(|c| c.vip == vip && c.gratuitous && c.at > w[0] && c.at < w[1])
                .collect();
            assert_eq!(
                sent.len(),
                3,
                "{vip}, takeover {round}: {} gratuitous announcements",
                sent.len()
            );
            assert!(
                sent.iter().all(|c| c.mac == sent[0].mac),
                "{vip}, takeover {round}: announced by two MACs"
            );
            let spread = sent[2].at - sent[0].at;
            assert!(
                spread >= Duration::from_millis(900),
                "{vip}, takeover {round}: 3 announcements within {spread:?}"
            );
        }
        let times: Vec<Duration> = takeovers
            .iter()
            .filter(|(v, _)| *v == vip)
            .map(|(_, d)| *d)
            .collect();
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        let worst = times.iter().max().unwrap();
        let samples = loads[vips.iter().position(|v| *v == vip).unwrap()]
            .lock()
            .unwrap()
            .clone();
        eprintln!(
            "{vip}: {} takeovers, kill to the new owner's first claim: mean {mean:?}, worst {worst:?}",
            times.len()
        );
        // Per round, from the last success before the kill to the first
        // one after it, and the requests that failed in between; rounds
        // alternate between the daemon dying and the whole node going.
        let mut failed_daemon_only = 0;
        let mut whole_node_rounds = Vec::new();
        for whole_node in [false, true] {
            let rounds: Vec<(Duration, usize)> = kills[..TAKEOVERS]
                .iter()
                .enumerate()
                .filter(|(round, _)| (round % 2 == 1) == whole_node)
                .filter_map(|(_, k)| {
                    let before = samples
                        .iter()
                        .filter(|s| s.ok && s.at < *k)
                        .map(|s| s.at)
                        .max()?;
                    let after = samples
                        .iter()
                        .filter(|s| s.ok && s.at >= *k)
                        .map(|s| s.at)
                        .min()?;
                    let failed = samples
                        .iter()
                        .filter(|s| !s.ok && s.at > before && s.at < after)
                        .count();
                    Some((after - before, failed))
                })
                .collect();
            let gaps: Vec<Duration> = rounds.iter().map(|r| r.0).collect();
            let failed: usize = rounds.iter().map(|r| r.1).sum();
            eprintln!("{vip}: per round (gap, failed requests): {rounds:?}");
            if whole_node {
                whole_node_rounds = rounds.clone();
            } else {
                failed_daemon_only = failed;
            }
            eprintln!(
                "{vip}: {}: {} rounds, longest gap between successful requests mean {:?}, worst {:?}; {failed} requests failed (20/s, sequential, {REQUEST_TIMEOUT:?} connect timeout)",
                if whole_node {
                    "whole node down"
                } else {
                    "daemon killed"
                },
                rounds.len(),
                gaps.iter().sum::<Duration>() / gaps.len().max(1) as u32,
                gaps.iter().max().copied().unwrap_or_default(),
            );
        }
        let failed = failed_daemon_only;
        // Lease 3 s: the takeover comes after its expiry and within it plus
        // two retry periods and the first announcement.
        assert!(
            *worst < Duration::from_millis(LEASE_MS + 2000),
            "{vip}: worst {worst:?}"
        );
        // When only the daemon dies, its data plane keeps forwarding until
        // the clients move: only a request in flight at a move may fail.
        assert!(failed <= TAKEOVERS / 2, "{vip}: {failed} failed requests");
        // When the whole node goes, every request in the gap fails, but
        // the load is sequential at 20/s with a connect timeout: no more
        // than the gap holds (one per 50 ms) and a few in flight. More
        // means requests failed while the new owner was answering.
        for (round, (gap, failed)) in whole_node_rounds.iter().enumerate() {
            let most = (gap.as_millis() / 50) as usize + 3;
            assert!(
                *failed <= most,
                "{vip}: whole-node round {round}: {failed} failed requests in a gap of {gap:?} \
                 (at most {most} fit)"
            );
        }
    }
    let _ = &l.backend;
}

/// kill -9 with no restart: the leader's XDP program keeps running (the
/// data plane is pinned) but stops answering within the liveness bound;
/// a restart within the bound keeps it answering throughout.
#[test]
fn the_liveness_gate_silences_a_dead_daemon_within_the_bound() {
    if !privileged("the_liveness_gate_silences_a_dead_daemon_within_the_bound") {
        return;
    }
    let l = lab("gate", GATE_LEASE_MS, GATE_BOUND_MS);
    // One router: nobody takes over, so silence is the gate's doing.
    let r = &l.routers[0];
    let mut d = start(&l, r, "a-0.log");
    wait_until("owned", Duration::from_secs(15), || {
        owner_metric(r, VIP4.into())
    });
    if !resolve(&l) {
        let (_, body) = http_get(&r.ns, r.metrics, "/metrics");
        let neigh = l.client.command("ip").args(["neigh"]).output().unwrap();
        panic!(
            "not answered while alive: client neighbours {}\n{}",
            String::from_utf8_lossy(&neigh.stdout),
            body.lines()
                .filter(|x| x.starts_with("xlb_packets"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    // A restart well within the bound: answering never stops, while the
    // new daemon starts (probed throughout) and after, and requests keep
    // being served.
    serve_http(&l);
    let requests = load(&l, VIP4.into());
    wait_until("requests served", Duration::from_secs(10), || {
        requests.lock().unwrap().iter().any(|s| s.ok)
    });
    d.kill9();
    let t = Instant::now();
    let mut d = Daemon::spawn(
        &r.ns,
        &["--config", r.config.to_str().unwrap()],
        &l.dir.join("a-1.log"),
    );
    let mut probes = 0;
    while !d.log_text().contains("this node now answers") {
        assert!(
            resolve(&l),
            "not answered {:?} into a restart (bound {GATE_BOUND_MS} ms)",
            t.elapsed()
        );
        probes += 1;
        assert!(
            t.elapsed() < Duration::from_millis(GATE_BOUND_MS),
            "the restart took {:?}, longer than the bound",
            t.elapsed()
        );
    }
    for _ in 0..10 {
        assert!(resolve(&l), "not answered after a restart within the bound");
        probes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let restart = t.elapsed();
    let served: Vec<Sample> = requests
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.at >= t)
        .copied()
        .collect();
    let failed = served.iter().filter(|s| !s.ok).count();
    eprintln!(
        "answered {probes} fresh ARP resolutions across a restart that took {restart:?}; {failed} of {} requests failed",
        served.len()
    );
    assert_eq!(
        failed, 0,
        "requests failed across a restart within the bound"
    );

    // kill -9 and stay dead: silent within the bound (plus a scheduling
    // margin), though the program is still attached.
    d.kill9();
    let dead = Instant::now();
    wait_until(
        "silence",
        Duration::from_millis(GATE_BOUND_MS + 2000),
        || !resolve(&l),
    );
    let silent_after = dead.elapsed();
    eprintln!(
        "the dead daemon's data plane went silent {silent_after:?} after kill -9 (bound {GATE_BOUND_MS} ms)"
    );
    // Not long before the bound: the last heartbeat was at most a quarter
    // of it before the kill.
    assert!(
        silent_after >= Duration::from_millis(GATE_BOUND_MS / 2),
        "silent too early: {silent_after:?}"
    );
}

/// Whether the client resolves the v4 VIP afresh (its entry flushed first).
fn resolve(l: &Lab) -> bool {
    let _ = l
        .client
        .command("ip")
        .args(["neigh", "flush", "dev", "c0"])
        .status();
    // A connection attempt makes the kernel ask (no ping here).
    let _ = l.client.run(|| {
        TcpStream::connect_timeout(
            &SocketAddr::new(VIP4.into(), 80),
            Duration::from_millis(500),
        )
    });
    client_neighbour(l, VIP4.into()).is_some()
}

/// On the IPVS data plane the VIPs are local routes, which the kernel
/// answers ARP for unless told not to, and no XDP program runs: the
/// daemon quiets the kernel (arp_ignore / arp_announce) and answers from
/// userspace, under the same claims and liveness gate. No IPVS is needed
/// to show this (a `local` route is what IPVS needs of a VIP).
#[test]
fn on_ipvs_the_kernel_is_quiet_and_the_userspace_responder_answers() {
    use lb_userspace::announce::{claimer::Claimer as _, responder};
    if !privileged("on_ipvs_the_kernel_is_quiet_and_the_userspace_responder_answers") {
        return;
    }
    let (router, client) = (NetNs::new(), NetNs::new());
    router.ip(&["link", "add", "ra0", "type", "veth", "peer", "name", "c0"]);
    router.ip(&["link", "set", "c0", "netns", &client.name]);
    for (ns, dev, n) in [(&router, "ra0", 1), (&client, "c0", 2)] {
        ns.ip(&["link", "set", dev, "address", &mac_text(mac_of(n))]);
        ns.ip(&["addr", "add", &format!("10.0.0.{n}/24"), "dev", dev]);
        ns.ip(&["addr", "add", &format!("fd00::{n}/64"), "dev", dev, "nodad"]);
        ns.ip(&["link", "set", dev, "up"]);
    }
    for vip in ["10.0.0.100", "fd00::100"] {
        router.ip(&["route", "add", "local", vip, "dev", "lo", "table", "local"]);
    }
    let resolves = |vip: IpAddr| {
        let _ = client
            .command("ip")
            .args(["neigh", "flush", "dev", "c0"])
            .status();
        let _ = client.run(|| {
            TcpStream::connect_timeout(&SocketAddr::new(vip, 80), Duration::from_millis(500))
        });
        let out = client
            .command("ip")
            .args(["neigh", "show", &vip.to_string(), "dev", "c0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&mac_text(mac_of(1)))
    };
    let (v4, v6): (IpAddr, IpAddr) = (VIP4.into(), VIP6.into());
    // The problem: with the defaults the kernel answers ARP for the VIP,
    // on every router at once.
    assert!(resolves(v4), "the kernel did not answer for a local route");
    let changed = router
        .run(|| responder::quiet_kernel(&["ra0".to_owned()]))
        .unwrap();
    assert!(
        changed.contains(&"net.ipv4.conf.all.arp_ignore=1".to_owned()),
        "{changed:?}"
    );
    assert!(!resolves(v4), "the kernel still answers ARP for the VIP");
    assert!(!resolves(v6), "the kernel answers NDP for a local route");

    let mut r = router
        .run(|| responder::Responder::start(&["ra0".to_owned()]))
        .unwrap();
    r.claim(v4).unwrap();
    r.claim(v6).unwrap();
    assert!(!resolves(v4), "answered before any heartbeat");
    let answered = r.answered();
    let counted = || {
        let o = answered.outcomes();
        assert_eq!((o[0].0, o[1].0), ("arp_replied", "ndp_advertised"));
        (o[0].1, o[1].1)
    };
    assert_eq!(counted(), (0, 0), "counted before answering");
    r.beat(Duration::from_secs(60)).unwrap();
    assert!(resolves(v4), "claimed v4 VIP not answered");
    assert!(resolves(v6), "claimed v6 VIP not answered");
    let (arp, ndp) = counted();
    eprintln!("answered: {arp} ARP, {ndp} NDP");
    assert!(
        arp >= 1 && ndp >= 1,
        "answers not counted: {arp} ARP, {ndp} NDP"
    );
    r.silence().unwrap();
    assert!(!resolves(v4) && !resolves(v6), "answered after silence");
    assert_eq!(counted(), (arp, ndp), "counted while silent");
    r.beat(Duration::from_millis(300)).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert!(!resolves(v4), "answered on a stale heartbeat");
    r.beat(Duration::from_secs(60)).unwrap();
    r.release(v6).unwrap();
    assert!(resolves(v4), "v4 not answered again");
    assert!(!resolves(v6), "released v6 VIP still answered");
}
