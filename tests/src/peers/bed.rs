//! The test bed of the peers benchmark: the end-to-end topology (client,
//! one balancer, three DSR backends on a bridge; see
//! [`crate::topology`]), with one configuration at a time in charge of the
//! balancer namespace, verified before it is measured.
//!
//! The Services are the same for every configuration: the one that
//! carries the traffic (load-balancer IP [`VIP4`], TCP 80 and UDP
//! [`UDP_PORT`], the three backends) and N - 1 decoys with 3 endpoints
//! each, which no packet reaches. For kube-proxy's rules the carrying
//! Service sits in the middle of the list: kube-proxy writes Services in
//! Go's map order, so the middle is where it lands on average.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    process::Child,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{
    Encap, IptablesBackend, Path, Quantiles, Row, XdpMode,
    kube_proxy::{self, Backend, Protocol, Service, ServicePort},
    load::{self, Rate, UdpCounters},
};
use crate::{
    daemon::xlb_bin,
    netns::PinDir,
    topology::{Ns, Topology, VIP4, backend4, capture_replies, captured, curl_port, workspace_bin},
    vm::patience,
};

/// The UDP port of the carrying Service (no socket listens on it: the
/// backends' UDP layer counts the datagrams, and nothing in userspace
/// competes for the CPU).
pub const UDP_PORT: u16 = 7000;
/// Pod CIDR of the decoys' endpoints (kube-proxy's `--cluster-cidr`;
/// [`kube_proxy::decoys`] puts them in 10.200.0.0/16); the balancer routes
/// it to a gateway so that xlb has one neighbour to keep.
const POD_CIDR: &str = "10.128.0.0/9";
/// Longest wait for xlb to serve 10,000 Services.
const START_LIMIT: Duration = Duration::from_secs(120);

/// The topology with its backends serving.
pub struct Bed {
    pub t: Topology,
}

impl Bed {
    pub fn build() -> Self {
        let mut t = Topology::new(1, 3);
        t.start_backends(true);
        let lb = &t.lbs[0];
        // The NAT configurations forward; replies to the client leave by
        // the interface they came in on, which is no reason for a redirect.
        lb.sysctl("net.ipv4.ip_forward", "1");
        lb.sysctl("net.ipv4.conf.all.send_redirects", "0");
        lb.sysctl("net.ipv4.conf.eth0.send_redirects", "0");
        lb.ip(&["route", "add", POD_CIDR, "via", &backend4(0).to_string()]);
        Self { t }
    }
}

/// The Services: [`kube_proxy::decoys`] with the carrying one inserted at
/// index `n / 2`.
pub fn services(n: usize) -> Vec<Service> {
    assert!(n >= 1, "at least the carrying Service");
    let mut all = kube_proxy::decoys(n - 1);
    let port = |name: &str, protocol, port| ServicePort {
        name: name.into(),
        protocol,
        port,
        // Below the decoys' node ports, which start at 32768.
        node_port: 30_000,
        target_port: port,
    };
    all.insert(
        n / 2,
        Service {
            namespace: "bench".into(),
            name: "carrier".into(),
            cluster_ip: Ipv4Addr::new(10, 96, 0, 1),
            load_balancer_ip: VIP4,
            ports: vec![
                port("http", Protocol::Tcp, 80),
                port("udp", Protocol::Udp, UDP_PORT),
            ],
            endpoints: (0..3).map(backend4).collect(),
        },
    );
    all
}

/// What tears a configuration down: the xlb daemon and its pins, or the
/// loaded rules.
pub enum Installed {
    Nothing,
    Xlb {
        daemon: Running,
        pins: PinDir,
        /// Native mode's XDP program on the veth peer (see [`peer_napi`]).
        peer: Option<Running>,
    },
    Rules(Backend),
}

/// A program the bed started, killed when dropped: a run that fails
/// half-way (a panic in a check included) leaves no daemon behind.
pub struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Puts `path` in charge of the balancer with `services`; how long the
/// rules took to load or xlb to serve them all (none for the floor).
pub fn install(
    bed: &Bed,
    path: Path,
    services: &[Service],
) -> Result<(Installed, Option<Duration>)> {
    let lb = &bed.t.lbs[0];
    Ok(match path {
        Path::Direct => (Installed::Nothing, None),
        Path::Xlb { mode, encap } => {
            let peer = (mode == XdpMode::Native).then(|| peer_napi(bed));
            let (daemon, pins, took) = start_xlb(bed, Engine::Xdp(mode), encap, services)?;
            (Installed::Xlb { daemon, pins, peer }, Some(took))
        }
        Path::Ipvs(encap) => {
            let (daemon, pins, took) = start_xlb(bed, Engine::Ipvs, encap, services)?;
            let installed = Installed::Xlb {
                daemon,
                pins,
                peer: None,
            };
            (installed, Some(took))
        }
        Path::Iptables(_) | Path::Nftables => {
            let backend = match path {
                Path::Iptables(IptablesBackend::Legacy) => Backend::IptablesLegacy,
                Path::Iptables(IptablesBackend::Nft) => Backend::IptablesNft,
                _ => Backend::Nftables,
            };
            let took = kube_proxy::load(lb, backend, &backend.rules(services, POD_CIDR))?;
            (Installed::Rules(backend), Some(took))
        }
    })
}

/// Takes the configuration out of the balancer namespace.
pub fn uninstall(bed: &Bed, installed: Installed) -> Result<()> {
    let lb = &bed.t.lbs[0];
    match installed {
        Installed::Nothing => Ok(()),
        Installed::Rules(b) => kube_proxy::flush(lb, b),
        Installed::Xlb {
            mut daemon,
            pins,
            peer,
        } => {
            drop(peer);
            // SAFETY: signalling our own child.
            unsafe { libc::kill(daemon.0.id() as i32, libc::SIGTERM) };
            daemon.0.wait().context("wait for xlb")?;
            // Detaches XDP and removes the pins, or deletes the IPVS
            // services xlb made.
            let out = lb
                .command(xlb_bin())
                .args(["stop", "--pin-path"])
                .arg(&pins.path)
                .arg("--state-dir")
                .arg(state_dir(bed))
                .output()
                .context("xlb stop")?;
            ensure!(
                out.status.success(),
                "xlb stop: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        }
    }
}

/// Native XDP_TX on a veth reaches the peer only when the peer runs NAPI,
/// which an XDP program on the peer guarantees (requesting GRO, which
/// [`Topology::new`] does, is not always enough: connections stalled
/// without it). The program is xlb's decapsulator for an address no packet
/// carries, so it passes every frame: what a native-mode user of veths
/// needs, and only for native mode.
fn peer_napi(bed: &Bed) -> Running {
    let c = bed.t.spawn_in(
        Ns::Bridge,
        &xlb_bin(),
        &["decap", "--iface", "p-l0", "--vip", "192.0.2.99"],
        "peer-xdp.log",
    );
    let c = Running(c);
    bed.t.wait_log("peer-xdp.log", "decapsulating");
    c
}

/// Which of xlb's data planes runs a path.
#[derive(Clone, Copy)]
enum Engine {
    Xdp(XdpMode),
    Ipvs,
}

fn state_dir(bed: &Bed) -> PathBuf {
    bed.t.dir.join("state")
}

fn start_xlb(
    bed: &Bed,
    engine: Engine,
    encap: Encap,
    services: &[Service],
) -> Result<(Running, PinDir, Duration)> {
    let pins = PinDir::new();
    let config = xlb_config(bed, &pins, engine, encap, services)?;
    let name = config.file_stem().unwrap_or_default().to_string_lossy();
    let log = format!("{name}.log");
    let started = Instant::now();
    let mut daemon = Running(bed.t.spawn_in(
        Ns::Lb(0),
        &xlb_bin(),
        &["run", "--config", config.to_str().context("UTF-8 path")?],
        &log,
    ));
    let vips = services.iter().map(|s| s.ports.len()).sum::<usize>();
    let line = loop {
        let text = bed.t.log(&log);
        if let Some(l) = text.lines().find(|l| l.contains(" reconciled ")) {
            break l.to_owned();
        }
        if let Ok(Some(status)) = daemon.0.try_wait() {
            bail!("xlb exited ({status}) before serving; log:\n{text}");
        }
        if started.elapsed() > patience(START_LIMIT) {
            bail!("xlb not serving within {START_LIMIT:?}; log:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = started.elapsed();
    ensure!(
        line.contains(&format!("vips={vips} ")),
        "xlb's first reconcile did not serve all {vips} VIPs: {line}"
    );
    Ok((daemon, pins, took))
}

/// The daemon's config: one VIP per Service port, the same backends.
fn xlb_config(
    bed: &Bed,
    pins: &PinDir,
    engine: Engine,
    encap: Encap,
    services: &[Service],
) -> Result<PathBuf> {
    let vips: usize = services.iter().map(|s| s.ports.len()).sum();
    let backends: usize = services
        .iter()
        .map(|s| s.ports.len() * s.endpoints.len())
        .sum();
    let (dataplane, mode) = match engine {
        Engine::Xdp(XdpMode::Generic) => ("xdp", "generic"),
        Engine::Xdp(XdpMode::Native) => ("xdp", "native"),
        Engine::Ipvs => ("ipvs", "generic"),
    };
    let encap = match encap {
        Encap::Ipip => "ipip",
        Encap::L2 => "l2",
    };
    let mut text = format!(
        r#"[dataplane]
mode = "{dataplane}"
interfaces = ["eth0"]
xdp_mode = "{mode}"
pin_path = "{pins}"
state_dir = "{state}"
encap = "{encap}"
max_vips = {max_vips}
max_backends = {max_backends}
flow_table_size = 65536

[metrics]
listen = "127.0.0.1:9810"
"#,
        pins = pins.path.display(),
        state = state_dir(bed).display(),
        max_vips = (vips + 8).next_multiple_of(1024),
        max_backends = (backends + 8).next_multiple_of(1024),
    );
    for s in services {
        for p in &s.ports {
            let protocol = match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            let list: Vec<String> = s
                .endpoints
                .iter()
                .map(|a| format!("{{ address = \"{a}\" }}"))
                .collect();
            text.push_str(&format!(
                "\n[[vip]]\naddress = \"{}\"\nport = {}\nprotocol = \"{protocol}\"\nbackends = [{}]\n",
                s.load_balancer_ip,
                p.port,
                list.join(", ")
            ));
        }
    }
    let path = bed.t.dir.join(format!(
        "xlb-{dataplane}-{mode}-{encap}-{}.toml",
        services.len()
    ));
    std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Where the client sends a path's traffic: the VIP, or for the floor the
/// backends' own addresses in turn.
pub fn targets(path: Path, port: u16) -> Vec<SocketAddr> {
    match path {
        Path::Direct => (0..3)
            .map(|i| SocketAddr::new(IpAddr::V4(backend4(i)), port))
            .collect(),
        _ => vec![SocketAddr::new(IpAddr::V4(VIP4), port)],
    }
}

/// Checks that `path` forwards as it should before anything is timed:
/// new TCP connections reach every backend (the floor: each backend its
/// own), replies cross the balancer only under NAT, and UDP datagrams all
/// arrive, on every backend, with good checksums.
pub fn verify(bed: &Bed, path: Path) -> Result<()> {
    let t = &bed.t;
    let capture = capture_replies(t, 0);
    // Per backend asked by its own address (the floor), or the VIP's.
    let answered: Vec<(Option<usize>, _)> = match path {
        Path::Direct => (0..3)
            .map(|i| (Some(i), curl_port(t, IpAddr::V4(backend4(i)), 80, 5)))
            .collect(),
        _ => vec![(None, curl_port(t, IpAddr::V4(VIP4), 80, 60))],
    };
    let via_lb = captured(t, 0, capture);
    for (i, got) in &answered {
        if let Some(i) = i {
            ensure!(
                got.keys().eq([format!("be{i}")].iter()),
                "backend {i}'s own address answered as {got:?}"
            );
        }
    }
    let answered: std::collections::BTreeSet<&String> =
        answered.iter().flat_map(|(_, got)| got.keys()).collect();
    ensure!(
        answered.len() == 3,
        "{path}: the connections reached {answered:?}, not all three backends"
    );
    if path.replies_via_balancer() {
        ensure!(
            !via_lb.is_empty(),
            "{path}: no reply crossed the balancer, yet NAT must return through it"
        );
    } else {
        ensure!(
            via_lb.is_empty(),
            "{path}: replies crossed the balancer ({} frames, e.g. {:?}); DSR must not",
            via_lb.len(),
            via_lb.first()
        );
    }
    let before = quiet_udp_counters(bed)?;
    let sent = load::udp_send(
        &t.client,
        &targets(path, UDP_PORT),
        30,
        Rate::PerSecond(3_000),
        Duration::from_millis(100),
    )?;
    let after = settle_udp(bed, before.iter().map(|c| c.arrived).sum::<u64>() + sent)?;
    let per: Vec<UdpCounters> = after.iter().zip(&before).map(|(a, b)| *a - *b).collect();
    let arrived: u64 = per.iter().map(|c| c.arrived).sum();
    ensure!(
        arrived == sent,
        "{path}: {sent} UDP datagrams sent, {arrived} arrived ({per:?})"
    );
    ensure!(
        per.iter().all(|c| c.arrived > 0 && c.bad_checksum == 0),
        "{path}: UDP per backend {per:?} (every backend some, no bad checksum)"
    );
    Ok(())
}

fn udp_counters(bed: &Bed) -> Result<Vec<UdpCounters>> {
    bed.t.backends.iter().map(load::udp_counters).collect()
}

/// The backends' counters once they stand still: the last measurement's
/// datagrams can still be on their way (in an emulated guest, for
/// seconds), and a check that counts every datagram must not count them.
fn quiet_udp_counters(bed: &Bed) -> Result<Vec<UdpCounters>> {
    let deadline = Instant::now() + patience(Duration::from_secs(5));
    let mut last = udp_counters(bed)?;
    loop {
        std::thread::sleep(patience(Duration::from_millis(100)));
        let now = udp_counters(bed)?;
        if now == last {
            return Ok(now);
        }
        ensure!(
            Instant::now() < deadline,
            "UDP datagrams still arriving at the backends: {now:?}"
        );
        last = now;
    }
}

/// Datagrams arrived at the backends so far, all together.
fn arrived(bed: &Bed) -> Result<u64> {
    Ok(udp_counters(bed)?.iter().map(|c| c.arrived).sum())
}

/// Datagrams arrived since `before` (a count of [`arrived`]) once `sent`
/// more have or none is in flight any longer.
fn arrived_since(bed: &Bed, before: u64, sent: u64) -> Result<u64> {
    let now: u64 = settle_udp(bed, before + sent)?
        .iter()
        .map(|c| c.arrived)
        .sum();
    Ok(now - before)
}

/// The backends' counters once `total` datagrams have arrived, or after
/// a second (in flight no longer).
fn settle_udp(bed: &Bed, total: u64) -> Result<Vec<UdpCounters>> {
    let deadline = Instant::now() + patience(Duration::from_secs(1));
    loop {
        let now = udp_counters(bed)?;
        if now.iter().map(|c| c.arrived).sum::<u64>() >= total || Instant::now() > deadline {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How much a measurement does.
#[derive(Clone, Copy, Debug)]
pub struct Effort {
    /// TCP connects timed.
    pub connects: usize,
    /// wrk's run, and its connections.
    pub http: Duration,
    pub http_connections: u32,
    /// The UDP run flat out.
    pub udp: Duration,
    /// The fixed offered load of the CPU measurement, its rounds, and the
    /// length of each of a round's two windows (traffic, then none).
    pub paced_pps: u64,
    pub cpu_rounds: u32,
    pub cpu_window: Duration,
    /// UDP flows (source ports) of every UDP run.
    pub flows: usize,
}

/// Times `path`, already installed and verified beside `services`
/// Services after `load` (see [`install`]): its row of the report.
pub fn measure(
    bed: &Bed,
    path: Path,
    services: usize,
    load: Option<Duration>,
    e: &Effort,
) -> Result<Row> {
    let t = &bed.t;
    let http_targets = targets(path, 80);
    let connect_us = Quantiles::of(load::connect_times(&t.client, &http_targets, e.connects)?);
    let url = format!("http://{}/", http_targets[0]);
    let http = load::wrk(&t.client, &url, e.http_connections, e.http)?;
    let udp = targets(path, UDP_PORT);

    let before = arrived(bed)?;
    let t0 = Instant::now();
    let sent = load::udp_send(&t.client, &udp, e.flows, Rate::FlatOut, e.udp)?;
    let took = t0.elapsed();
    let udp_pps = arrived_since(bed, before, sent)? as f64 / took.as_secs_f64();

    // Windows with the traffic alternate with windows as long without it:
    // the second are what the rest of the machine spends anyway, taken
    // off. The median over the rounds keeps a burst of other work in one
    // window out of the figure.
    let (mut per_mpkt, mut sent, mut delivered) = (Vec::new(), 0, 0);
    for _ in 0..e.cpu_rounds {
        let cpu0 = load::kernel_cpu()?;
        std::thread::sleep(e.cpu_window);
        let background = load::kernel_cpu()? - cpu0;
        let before = arrived(bed)?;
        let cpu0 = load::kernel_cpu()?;
        let n = load::udp_send(
            &t.client,
            &udp,
            e.flows,
            Rate::PerSecond(e.paced_pps),
            e.cpu_window,
        )?;
        let busy = load::kernel_cpu()? - cpu0;
        let got = arrived_since(bed, before, n)?;
        ensure!(got > 0, "{path}: no datagram arrived at the fixed rate");
        per_mpkt.push(busy.saturating_sub(background).as_secs_f64() * 1e3 / (got as f64 / 1e6));
        sent += n;
        delivered += got;
    }
    if delivered * 100 < sent * 95 {
        eprintln!(
            "peers bench: {path}: only {delivered} of {sent} datagrams arrived at {} pps",
            e.paced_pps
        );
    }
    Ok(Row {
        path,
        services,
        load,
        connect_us,
        http,
        udp_pps,
        cpu_ms_per_mpkt: Quantiles::of(per_mpkt).median,
    })
}

/// Builds (or brings up to date) the backends' server and the daemon
/// before any clock starts.
pub fn prebuild() {
    let _ = workspace_bin("xlb-tests", "xlb-backend");
    let _ = xlb_bin();
}
