//! `cargo xtask bench k8s`: the Kubernetes source end to end. The real
//! `xlb run` (release build, XDP on a veth in its own namespace) watches the
//! test harness's API server (`kube_api`, real HTTP, started in the daemon's
//! namespace); the bench writes objects into that server and reads the
//! daemon's pinned maps.
//!
//! ```text
//!  peer ns: c0 10.0.0.2 ──veth── lb0 10.0.0.1 (LB ns: xlb run, XDP; API server on 127.0.0.1)
//!  backends 10.128.0.0/9 via 10.0.0.2 (a permanent neighbour: none of them exists)
//! ```
//!
//! One case per size N in [`CASES`] (1 to 50,000 LoadBalancer Services,
//! each with VIPs from a pool and one EndpointSlice of [`ENDPOINTS`] ready
//! endpoints; every case at the same Maglev size [`M`]):
//!
//! 1. Initial sync, timed from the daemon's start: both lists done (its
//!    "watches synced" line), every VIP in the maps, then settled (every
//!    status written and every VIP's bucket Lease held). The daemon's
//!    memory (VmRSS, VmHWM) once every VIP is in the maps and once settled.
//! 2. Idle: the daemon's CPU and API requests per second over [`IDLE`].
//! 3. EndpointSlice event -> data plane: slice writes one at a time, each
//!    on another Service (`k * 7 mod N`), alternately adding a ready
//!    endpoint and turning one not-ready. Each is timed from just before
//!    the `apply` that makes the API server emit the watch event until the
//!    pinned maps show it: for an added endpoint, an active backend entry of
//!    that VIP with its address named by the VIP's Maglev row; for a
//!    not-ready one, no slot of the row naming it. Only that VIP is read
//!    (VIP map -> vip_id -> its row -> the few backend entries the row
//!    names), in a loop that yields the CPU between reads.
//! 4. In this process, once the daemon has stopped, on the objects the API
//!    server holds: the translation's cost per slice event (incremental),
//!    per Service change (the plan of every Service is made again), and
//!    from scratch (a re-list).
//!
//! Every row is compared with the 1-Service row of the same run.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use lb_common::{BACKEND_ACTIVE, NO_BACKEND, PROTO_TCP, VipKey};
use lb_userspace::{
    vip::Vip,
    xdp::{Maps, reconcile::backend_addr},
};
use serde_json::{Value, json};

use crate::procfs::{Memory, cpu_time, mb, memory};
use crate::{
    daemon::{Daemon, free_port},
    k8s_objects,
    kube_api::KubeApi,
    netns::{NetNs, PinDir},
};

/// Services per case, and how many slice events are timed in it.
const CASES: [(usize, usize); 4] = [(1, 1_000), (1_000, 1_000), (10_000, 1_000), (50_000, 200)];
/// Ready endpoints each Service starts with.
const ENDPOINTS: u32 = 10;
/// Maglev size of every case: > 100 x the backends of a VIP (Maglev's 1%
/// disruption bound); 50,000 rows of it are 408 MB of kernel memory.
const M: u32 = 1_021;
/// How long a case may take to settle (50,000 statuses written).
const SETTLE: Duration = Duration::from_secs(300);
const POOL: &str = "10.200.0.0/16";
const PORT: u16 = 80;
/// Pause between two events, so one event's tail (status sync, state
/// save) is not the next one's queue.
const GAP: Duration = Duration::from_millis(5);
/// How long the daemon's idle CPU is sampled: two Lease rounds.
const IDLE: Duration = Duration::from_secs(4);
/// Longest wait for one event before the bench gives up.
const EVENT_LIMIT: Duration = Duration::from_secs(10);
/// Targets of the Kubernetes-at-scale issue: event p99 at 10,000 and
/// 50,000 Services, idle API requests/s, RSS at 10,000 x 10.
const P99_TARGET_10K: f64 = 10.0;
const P99_TARGET_50K: f64 = 20.0;
const IDLE_REQUESTS_TARGET: f64 = 20.0;
const RSS_TARGET_10K: f64 = 100.0;

/// Runs every case and prints their tables; skips (Ok) without root.
pub fn run() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        println!(
            "\nSKIPPED the Kubernetes benchmark: it needs root (network namespaces, BPF, XDP)"
        );
        return Ok(());
    }
    // Built before any clock starts (cargo, release profile like this binary).
    let bin = crate::daemon::xlb_bin();
    println!(
        "\n## Kubernetes source (xlb run {}, API server: tests/src/kube_api.rs in the bench process)",
        bin.display()
    );
    let started = Instant::now();
    let mut cases = Vec::new();
    // XLB_BENCH_K8S_SIZES=1,10000 runs only those sizes.
    let only: Option<Vec<usize>> = std::env::var("XLB_BENCH_K8S_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    for (n, events) in CASES
        .into_iter()
        .filter(|(n, _)| only.as_ref().is_none_or(|o| o.contains(n)))
    {
        let c = case(n, events).with_context(|| format!("{n} Services"))?;
        eprintln!(
            "k8s bench: {n} Services: event median {:.2} ms, p99 {:.2} ms ({:.0} s so far)",
            c.m.lat.median,
            c.m.lat.p99,
            started.elapsed().as_secs_f64()
        );
        cases.push(c);
    }
    eprintln!(
        "k8s bench: done in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    print(&cases);
    Ok(())
}

/// The time from `xlb run`'s start until every one of `n` LoadBalancer
/// Services (`endpoints` ready endpoints each, written before the start)
/// has its VIP in the maps: what the peers benchmark sets beside
/// kube-proxy's rule load times. Needs root.
pub fn sync_time(n: usize, endpoints: u32) -> Result<Duration> {
    let (max_vips, max_backends) = map_sizes(n, endpoints);
    let mut l = lab(&format!("sync{n}"));
    populate(&l.api, n, endpoints);
    let cfg = config(&l, M, max_vips, max_backends);
    let spawned = Instant::now();
    start(&mut l, &cfg);
    open_maps(&mut l)?;
    poll(
        &mut l,
        "every VIP in the maps",
        SETTLE,
        Duration::from_millis(5),
        |l| (vip_count(l) == n).then_some(()),
    )?;
    let synced = spawned.elapsed();
    l.done = true;
    Ok(synced)
}

/// `max_vips` and `max_backends` for `n` Services of `endpoints` each:
/// room for the endpoints events add, in whole KiB, never tiny.
fn map_sizes(n: usize, endpoints: u32) -> (u32, u32) {
    let max_vips = (n as u32).max(1_024).next_multiple_of(1_024);
    let max_backends = (n as u32 * (endpoints + 2))
        .max(8_192)
        .next_multiple_of(1_024);
    (max_vips, max_backends)
}

/// One namespace pair, the API server and a scratch directory; the daemon
/// (when any) is stopped before the rest goes.
struct Lab {
    daemon: Option<Daemon>,
    maps: Option<Maps>,
    api: KubeApi,
    pins: PinDir,
    lb: NetNs,
    _peer: NetNs,
    dir: PathBuf,
    /// Measured to the end: the scratch directory can go.
    done: bool,
}

impl Drop for Lab {
    fn drop(&mut self) {
        // SIGKILL: a SIGTERM would hand back every Lease one by one.
        self.daemon.take();
        self.maps.take();
        if !self.done || std::thread::panicking() {
            eprintln!("kept {} (config, daemon log)", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn lab(tag: &str) -> Lab {
    let lb = NetNs::new();
    let peer = NetNs::new();
    lb.ip(&["link", "add", "lb0", "type", "veth", "peer", "name", "c0"]);
    lb.ip(&["link", "set", "c0", "netns", &peer.name]);
    lb.ip(&["addr", "add", "10.0.0.1/24", "dev", "lb0"]);
    lb.ip(&["link", "set", "lb0", "up"]);
    peer.ip(&["addr", "add", "10.0.0.2/24", "dev", "c0"]);
    peer.ip(&["link", "set", "c0", "up"]);
    lb.static_neighbours("lb0", &[("10.0.0.2", "02:00:00:00:00:02")]);
    // The daemon probes every backend's neighbour (neigh.rs): one gateway
    // keeps 100,000 backends from filling the neighbour table.
    lb.ip(&[
        "route",
        "add",
        "10.128.0.0/9",
        "via",
        "10.0.0.2",
        "dev",
        "lb0",
    ]);
    lb.sysctl("net.ipv4.ip_forward", "1");
    let api = lb.run(KubeApi::start);
    let dir = std::env::temp_dir().join(format!("xlb-bench-k8s-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench scratch directory");
    api.write_kubeconfig(&dir.join("kubeconfig"));
    Lab {
        daemon: None,
        maps: None,
        api,
        pins: PinDir::new(),
        lb,
        _peer: peer,
        dir,
        done: false,
    }
}

/// Writes the daemon's config: XDP on lb0, the Kubernetes source with the
/// default Lease timings, maps of the given sizes.
fn config(l: &Lab, m: u32, max_vips: u32, max_backends: u32) -> PathBuf {
    let text = format!(
        r#"[dataplane]
interfaces = ["lb0"]
xdp_mode = "native"
pin_path = "{pins}"
state_dir = "{state}"
maglev_table_size = {m}
max_vips = {max_vips}
max_backends = {max_backends}
flow_table_size = 4096
ipip_source_v4 = "10.0.0.1"

[metrics]
listen = "127.0.0.1:{metrics}"

[kubernetes]
enabled = true
kubeconfig = "{kubeconfig}"
pools = ["{POOL}"]
node_name = "router-a"
"#,
        pins = l.pins.path.display(),
        state = l.dir.join("state").display(),
        metrics = free_port(),
        kubeconfig = l.dir.join("kubeconfig").display(),
    );
    let path = l.dir.join("xlb.toml");
    std::fs::write(&path, text).expect("write the bench config");
    path
}

fn start(l: &mut Lab, config: &Path) {
    let d = Daemon::spawn(
        &l.lb,
        &["--config", config.to_str().expect("UTF-8 path")],
        &l.dir.join("xlb.log"),
    );
    l.daemon = Some(d);
}

fn name(i: usize) -> String {
    format!("svc-{i:05}")
}

fn service(i: usize) -> Value {
    let name = name(i);
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": "default", "labels": { "app": name } },
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "xlb.io/xlb",
            "selector": { "app": name },
            "ports": [{ "name": "http", "port": PORT, "protocol": "TCP", "targetPort": 8080 }],
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "externalTrafficPolicy": "Cluster",
            "sessionAffinity": "None"
        }
    })
}

/// Service `i`'s slice; not-ready endpoints are neither ready nor serving
/// (a failing readiness probe).
fn slice(i: usize, endpoints: &[(Ipv4Addr, bool)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(a, ready)| {
            let node = format!("worker-{}", u32::from(*a) % 50);
            k8s_objects::endpoint(&a.to_string(), &node, *ready, *ready, false)
        })
        .collect();
    k8s_objects::slice(&name(i), ("http", 8080, "TCP"), endpoints)
}

/// Endpoint `j` of Service `i` as first written: 10.128.0.0/9, 16 per Service.
fn pod(i: usize, j: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a80_0000 + (i as u32) * 16 + j)
}

/// The `k`-th endpoint added by an event: 10.192.0.0/10, apart from `pod`.
fn fresh_pod(k: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0ac0_0000 + k as u32)
}

fn populate(api: &KubeApi, n: usize, endpoints: u32) -> Vec<Vec<(Ipv4Addr, bool)>> {
    let mut all = Vec::with_capacity(n);
    for i in 0..n {
        let eps: Vec<(Ipv4Addr, bool)> = (0..endpoints).map(|j| (pod(i, j), true)).collect();
        api.apply(service(i));
        api.apply(slice(i, &eps));
        all.push(eps);
    }
    // Nothing watches yet, so no watch will resume from before now: the
    // history of these writes (a copy of every object) can go.
    api.compact();
    all
}

fn daemon_alive(l: &mut Lab) -> Result<()> {
    let d = l.daemon.as_mut().context("no daemon")?;
    if let Ok(Some(s)) = d.child.try_wait() {
        bail!("xlb exited ({s}); log:\n{}", d.log_text());
    }
    Ok(())
}

/// Polls `f` every `every` until it returns `Some`, for at most `limit`.
fn poll<T>(
    l: &mut Lab,
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut(&Lab) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f(l) {
            return Ok(v);
        }
        daemon_alive(l)?;
        ensure!(
            Instant::now() < deadline,
            "{what}: not within {limit:?} (see {})",
            l.dir.join("xlb.log").display()
        );
        std::thread::sleep(every);
    }
}

fn open_maps(l: &mut Lab) -> Result<()> {
    let maps = poll(
        l,
        "pinned maps",
        Duration::from_secs(30),
        Duration::from_millis(10),
        |l| Maps::open_pinned(&l.pins.path).ok(),
    )?;
    l.maps = Some(maps);
    Ok(())
}

fn vip_count(l: &Lab) -> usize {
    l.maps
        .as_ref()
        .map_or(0, |m| m.vips.keys().filter(Result::is_ok).count())
}

/// Every Service's VIP from its status, once all `n` have one.
fn statuses(api: &KubeApi, n: usize) -> Option<BTreeMap<String, Ipv4Addr>> {
    let vips: BTreeMap<String, Ipv4Addr> = api
        .list("v1", "Service")
        .iter()
        .filter_map(|s| {
            let ip = s.pointer("/status/loadBalancer/ingress/0/ip")?.as_str()?;
            Some((s["metadata"]["name"].as_str()?.to_owned(), ip.parse().ok()?))
        })
        .collect();
    (vips.len() == n).then_some(vips)
}

/// Whether the bucket Lease of every VIP in `vips` is held (32 buckets,
/// the default).
fn buckets_held(api: &KubeApi, vips: &BTreeMap<String, Ipv4Addr>) -> bool {
    use lb_userspace::kubernetes::lease::{bucket_lease, bucket_of};
    let held: std::collections::BTreeSet<String> = api
        .list("coordination.k8s.io/v1", "Lease")
        .iter()
        .filter(|l| l["spec"]["holderIdentity"].as_str().is_some())
        .filter_map(|l| l["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    vips.values()
        .all(|v| held.contains(&bucket_lease(bucket_of(IpAddr::V4(*v), 32))))
}

/// Kernel memory of the pinned maps (`memlock` of each map's fdinfo).
fn map_bytes(pins: &Path) -> u64 {
    let Ok(dir) = std::fs::read_dir(pins) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|e| aya::maps::MapData::from_pin(e.path()).ok())
        .filter_map(|m| {
            use std::os::fd::{AsFd as _, AsRawFd as _};
            let fd = m.fd().as_fd().as_raw_fd();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .sum()
}

/// The daemon's own timings of its map writes: `seconds=` of each
/// "reconciled" log line after the first `skip` lines.
fn reconcile_seconds(log: &str, skip: usize) -> Vec<f64> {
    log.lines()
        .skip(skip)
        .filter(|l| l.contains(" reconciled "))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("seconds="))
                .and_then(|v| v.parse().ok())
        })
        .collect()
}

fn log_lines(l: &Lab) -> usize {
    l.daemon
        .as_ref()
        .map_or(0, |d| d.log_text().lines().count())
}

/// One GET to the harness API server; the response body.
fn get(addr: SocketAddr, token: &str, path: &str) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(addr).context("connect to the API server")?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )?;
    let mut r = Vec::new();
    s.read_to_end(&mut r)?;
    let head = r
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of the response head")?;
    ensure!(r.starts_with(b"HTTP/1.1 200"), "GET {path}: not 200");
    Ok(r.split_off(head + 4))
}

/// How long the harness API server takes to serve the lists the daemon's
/// watchers make at start (500 objects a page, as kube's watcher asks):
/// its share of the initial sync, which a real API server serves from its
/// watch cache.
fn list_time(l: &Lab) -> Result<Duration> {
    let (addr, token) = (l.api.addr(), l.api.token().to_owned());
    l.lb.run(move || {
        let t = Instant::now();
        for path in [
            "/api/v1/services?limit=500",
            "/apis/discovery.k8s.io/v1/endpointslices?labelSelector=kubernetes.io%2Fservice-name&limit=500",
        ] {
            let mut next = String::new();
            loop {
                let body = get(addr, &token, &format!("{path}{next}"))?;
                // The token only, not the whole page: the client's parsing
                // is not the server's time.
                let text = String::from_utf8_lossy(&body);
                let token = text
                    .split_once(r#""continue":""#)
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map(|(t, _)| t.to_owned());
                match token {
                    Some(t) if !t.is_empty() => {
                        let enc: String = t
                            .bytes()
                            .map(|b| {
                                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                                    char::from(b).to_string()
                                } else {
                                    format!("%{b:02X}")
                                }
                            })
                            .collect();
                        next = format!("&continue={enc}");
                    }
                    _ => break,
                }
            }
        }
        Ok(t.elapsed())
    })
}

/// The translation's costs, timed in this process on the objects the API
/// server holds (statuses included) with the daemon's settings, each
/// followed by the copy of the outcome the daemon publishes.
struct TranslateCost {
    /// One EndpointSlice changed (incremental): median and p99, in µs.
    slice_us: (f64, f64),
    /// One new Service (the plan of every Service made again), in ms.
    replan_ms: f64,
    /// Every Service from scratch (a re-list), in ms.
    full_ms: f64,
}

fn translate_cost(api: &KubeApi, config: &Path, stride: usize) -> Result<TranslateCost> {
    use std::sync::Arc;

    use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
    use lb_userspace::kubernetes::{
        objects::{ServiceInfo, SliceInfo, key_of},
        pools::Pools,
        translate::{self, Translator},
    };

    let cfg = lb_userspace::config::load(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = translate::Settings {
        class: cfg.kubernetes.load_balancer_class.clone(),
        include_unclassed: cfg.kubernetes.include_unclassed,
        target: cfg.kubernetes.backend_target,
        pools: Pools::new(cfg.kubernetes.pools.clone()),
        encap: cfg.dataplane.encap,
        scheduler: cfg.dataplane.scheduler.clone(),
        announce: cfg.announce.mode,
        service_modes: cfg.announce.service_modes.clone(),
        health: cfg.health.with_probe_sources(&cfg.dataplane),
    };
    let services: Vec<Arc<Service>> = api
        .list("v1", "Service")
        .into_iter()
        .map(|o| serde_json::from_value(o).map(Arc::new))
        .collect::<Result<_, _>>()
        .context("a Service as kube reads it")?;
    let slices: Vec<Arc<EndpointSlice>> = api
        .list("discovery.k8s.io/v1", "EndpointSlice")
        .into_iter()
        .map(|o| serde_json::from_value(o).map(Arc::new))
        .collect::<Result<_, _>>()
        .context("an EndpointSlice as kube reads it")?;
    let none = Default::default();
    let mut full: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let o = translate::translate(&services, &slices, &[], &none, &settings);
            std::hint::black_box(&o);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    full.sort_by(f64::total_cmp);

    let class = settings.class();
    let mut t = Translator::new(settings);
    for s in &services {
        t.service(key_of(&s.metadata), ServiceInfo::of(s, &class));
    }
    for s in &slices {
        t.slice(key_of(&s.metadata), SliceInfo::of(s));
    }
    t.settle();
    ensure!(
        t.outcome().services.len() == services.len(),
        "the in-process translation serves {} of {} Services",
        t.outcome().services.len(),
        services.len()
    );
    let n = slices.len();
    let mut slice_us: Vec<f64> = (0..200)
        .map(|k| {
            let mut s = (*slices[(k * stride) % n]).clone();
            // Apart from every address the events used; no conditions: ready.
            let mut extra = s.endpoints[0].clone();
            extra.addresses = vec![Ipv4Addr::from(0x0a60_0000 + k as u32).to_string()];
            extra.conditions = None;
            s.endpoints.push(extra);
            let t0 = Instant::now();
            t.slice(key_of(&s.metadata), SliceInfo::of(&s));
            assert!(t.settle(), "a new endpoint changes the outcome");
            std::hint::black_box(Arc::new(t.outcome().clone()));
            t0.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    slice_us.sort_by(f64::total_cmp);
    let mut replan_ms: Vec<f64> = (0..9)
        .map(|k| {
            let svc: Service = serde_json::from_value(service(1_000_000 + k)).expect("a Service");
            let t0 = Instant::now();
            t.service(key_of(&svc.metadata), ServiceInfo::of(&svc, &class));
            t.settle();
            std::hint::black_box(Arc::new(t.outcome().clone()));
            t0.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    replan_ms.sort_by(f64::total_cmp);
    let at = |v: &[f64], q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    Ok(TranslateCost {
        slice_us: (at(&slice_us, 0.5), at(&slice_us, 0.99)),
        replan_ms: at(&replan_ms, 0.5),
        full_ms: at(&full, 0.5),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Added(Ipv4Addr),
    Unready(Ipv4Addr),
}

/// Whether the maps show `change` for the VIP `key`, reading only that VIP.
fn visible(maps: &Maps, key: &VipKey, change: Change) -> bool {
    let Ok(info) = maps.vips.get(key, 0) else {
        return false;
    };
    let Ok(row) = maps.read_maglev(&info) else {
        return false;
    };
    let mut ids: Vec<u32> = Vec::new();
    let mut last = NO_BACKEND;
    for &id in &row {
        if id != last && id != NO_BACKEND && !ids.contains(&id) {
            ids.push(id);
        }
        last = id;
    }
    let (Change::Added(addr) | Change::Unready(addr)) = change;
    let named = ids.iter().any(|&id| {
        maps.backend(id).is_ok_and(|b| {
            backend_addr(&b) == IpAddr::V4(addr)
                && b.vip_id == info.vip_id
                && (b.flags & BACKEND_ACTIVE != 0 || matches!(change, Change::Unready(_)))
        })
    });
    match change {
        Change::Added(_) => named,
        Change::Unready(_) => !named,
    }
}

#[derive(Clone, Copy, Default)]
struct Latency {
    median: f64,
    p90: f64,
    p99: f64,
    max: f64,
}

fn latency(mut ms: Vec<f64>) -> Latency {
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    Latency {
        median: at(0.5),
        p90: at(0.9),
        p99: at(0.99),
        max: ms[ms.len() - 1],
    }
}

/// What one case measured.
struct Case {
    services: usize,
    events: usize,
    max_vips: u32,
    max_backends: u32,
    /// The harness API server's time to serve the initial lists.
    list_serve: Duration,
    /// From the daemon's start: both lists done, every VIP in the maps,
    /// settled (every status written, every bucket Lease held).
    listed: Duration,
    synced: Duration,
    settled: Duration,
    /// The daemon's memory once every VIP is in the maps, and settled.
    at_sync: Memory,
    at_settle: Memory,
    /// The daemon's largest map-write pass of the initial sync (its log).
    sync_reconcile_s: f64,
    map_bytes: u64,
    /// Idle, then the events.
    m: Measured,
    translate: TranslateCost,
    elapsed: Duration,
}

fn case(n: usize, events: usize) -> Result<Case> {
    let t = Instant::now();
    let (max_vips, max_backends) = map_sizes(n, ENDPOINTS);
    let mut l = lab(&format!("n{n}"));
    let mut eps = populate(&l.api, n, ENDPOINTS);
    let list_serve = list_time(&l)?;
    let cfg = config(&l, M, max_vips, max_backends);
    let spawned = Instant::now();
    start(&mut l, &cfg);
    wait_log(&mut l, "Kubernetes watches synced", SETTLE)?;
    let listed = spawned.elapsed();
    open_maps(&mut l)?;
    let every = Duration::from_millis(20);
    poll(&mut l, "every VIP in the maps", SETTLE, every, |l| {
        (vip_count(l) == n).then_some(())
    })?;
    let synced = spawned.elapsed();
    let pid = l.daemon.as_ref().context("daemon")?.pid();
    let at_sync = memory(pid);
    let sync_reconcile_s = reconcile_seconds(&l.daemon.as_ref().context("daemon")?.log_text(), 0)
        .into_iter()
        .fold(0.0, f64::max);
    let every = Duration::from_millis(250);
    let vips = poll(&mut l, "every Service's status", SETTLE, every, |l| {
        statuses(&l.api, n)
    })?;
    poll(
        &mut l,
        "every VIP's bucket Lease held",
        SETTLE,
        every,
        |l| buckets_held(&l.api, &vips).then_some(()),
    )?;
    let settled = spawned.elapsed();
    let at_settle = memory(pid);
    let keys = vip_keys(&vips, n)?;
    // 7 is prime to every N here: each Service once, neighbours far apart.
    let m = measure_events(&mut l, &keys, &mut eps, events, 7)?;
    // On a machine the daemon no longer shares.
    l.daemon.take();
    let translate = translate_cost(&l.api, &cfg, 7)?;
    l.done = true;
    Ok(Case {
        services: n,
        events,
        max_vips,
        max_backends,
        list_serve,
        listed,
        synced,
        settled,
        at_sync,
        at_settle,
        sync_reconcile_s,
        map_bytes: map_bytes(&l.pins.path),
        m,
        translate,
        elapsed: t.elapsed(),
    })
}

/// What one series of events measured.
struct Measured {
    lat: Latency,
    added: Latency,
    unready: Latency,
    /// The daemon's CPU while no event comes (Lease rounds every 2 s), in %
    /// of one core, and its API requests per second meanwhile.
    idle_cpu: f64,
    idle_requests: f64,
    /// Daemon CPU time per event over the event phase, less the idle rate.
    cpu_per_event_ms: f64,
    /// The daemon's own "reconciled" timings of the events' map writes.
    reconcile: Latency,
}

/// `count` slice writes on Services `k * stride % n`, alternately adding a
/// ready endpoint and turning the last ready one not-ready, each timed
/// until the maps show it (see the module docs).
fn measure_events(
    l: &mut Lab,
    keys: &[VipKey],
    eps: &mut [Vec<(Ipv4Addr, bool)>],
    count: usize,
    stride: usize,
) -> Result<Measured> {
    let n = keys.len();
    let pid = l.daemon.as_ref().context("daemon")?.pid();
    let idle0 = cpu_time(pid);
    l.api.clear_requests();
    std::thread::sleep(IDLE);
    let idle_cpu = (cpu_time(pid) - idle0).as_secs_f64() / IDLE.as_secs_f64();
    let idle_requests = l.api.requests().len() as f64 / IDLE.as_secs_f64();
    let skip = log_lines(l);
    let maps = l.maps.as_ref().context("maps")?;
    let (mut all, mut added, mut unready) = (Vec::new(), Vec::new(), Vec::new());
    let (cpu0, phase) = (cpu_time(pid), Instant::now());
    for k in 0..count {
        let i = (k * stride) % n;
        let e = &mut eps[i];
        let change = if k % 2 == 0 {
            e.retain(|(_, ready)| *ready);
            e.push((fresh_pod(k), true));
            Change::Added(fresh_pod(k))
        } else {
            let last = e
                .iter_mut()
                .rev()
                .find(|(_, ready)| *ready)
                .context("no ready endpoint left")?;
            last.1 = false;
            Change::Unready(last.0)
        };
        let object = slice(i, e);
        let t0 = Instant::now();
        l.api.apply(object);
        while !visible(maps, &keys[i], change) {
            if t0.elapsed() > EVENT_LIMIT {
                bail!("event {k} ({change:?} on {}) not in the maps", name(i));
            }
            std::thread::yield_now();
        }
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        all.push(ms);
        match change {
            Change::Added(_) => added.push(ms),
            Change::Unready(_) => unready.push(ms),
        }
        std::thread::sleep(GAP);
    }
    let cpu = (cpu_time(pid) - cpu0).as_secs_f64() - idle_cpu * phase.elapsed().as_secs_f64();
    daemon_alive(l)?;
    let log = l.daemon.as_ref().context("daemon")?.log_text();
    let writes = reconcile_seconds(&log, skip);
    ensure!(
        writes.len() >= count,
        "{} reconciles logged for {count} events",
        writes.len()
    );
    Ok(Measured {
        lat: latency(all),
        added: latency(added),
        unready: latency(unready),
        idle_cpu: idle_cpu * 100.0,
        idle_requests,
        cpu_per_event_ms: cpu * 1e3 / count as f64,
        reconcile: latency(writes.iter().map(|s| s * 1e3).collect()),
    })
}

/// VIP map keys of Services 0..n, from their statuses.
fn vip_keys(vips: &BTreeMap<String, Ipv4Addr>, n: usize) -> Result<Vec<VipKey>> {
    (0..n)
        .map(|i| {
            let address = vips.get(&name(i)).context("a Service without a VIP")?;
            Ok(VipKey::from(Vip {
                address: IpAddr::V4(*address),
                port: PORT,
                protocol: PROTO_TCP,
            }))
        })
        .collect()
}

fn wait_log(l: &mut Lab, needle: &str, limit: Duration) -> Result<()> {
    poll(l, needle, limit, Duration::from_millis(5), |l| {
        l.daemon
            .as_ref()
            .is_some_and(|d| d.log_text().contains(needle))
            .then_some(())
    })
}

fn print(cases: &[Case]) {
    // Ratios are to the smallest size run (1 Service unless limited).
    let Some(one) = cases.iter().min_by_key(|c| c.services) else {
        return;
    };
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "-".to_owned()
        }
    };
    println!(
        "\nEndpointSlice event -> maps updated: events one at a time, each on another Service \
         (alternately a new ready endpoint / one endpoint not-ready), timed from just before the \
         API server's write until the VIP's Maglev row and backend entries show it; \
         {ENDPOINTS} ready endpoints per Service, M = {M}; default Lease timings (32 bucket \
         Leases and one member Lease renewed every 2 s meanwhile)"
    );
    println!(
        "\n| Services | events | median | p90 | p99 | max | median vs 1 Service | p99 vs 1 Service |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in cases {
        println!(
            "| {} | {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} |",
            c.services,
            c.events,
            c.m.lat.median,
            c.m.lat.p90,
            c.m.lat.p99,
            c.m.lat.max,
            ratio(c.m.lat.median, one.m.lat.median),
            ratio(c.m.lat.p99, one.m.lat.p99),
        );
    }
    println!(
        "\n| Services | added: median / p99 | not-ready: median / p99 | daemon's map writes (its log): median / p99 | translation in-process: slice event median / p99, new Service (re-plan), from scratch | daemon CPU per event (idle rate subtracted) | daemon idle: CPU, API requests/s | events took |"
    );
    println!("|---:|---|---|---|---|---:|---|---:|");
    for c in cases {
        let t = &c.translate;
        println!(
            "| {} | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.3} / {:.3} ms | {:.0} / {:.0} µs, {:.1} ms, {:.0} ms | {:.2} ms | {:.0}% of a core, {:.1}/s ({}) | {:.0} s |",
            c.services,
            c.m.added.median,
            c.m.added.p99,
            c.m.unready.median,
            c.m.unready.p99,
            c.m.reconcile.median,
            c.m.reconcile.p99,
            t.slice_us.0,
            t.slice_us.1,
            t.replan_ms,
            t.full_ms,
            c.m.cpu_per_event_ms,
            c.m.idle_cpu,
            c.m.idle_requests,
            ratio(c.m.idle_requests, one.m.idle_requests),
            c.elapsed.as_secs_f64(),
        );
    }
    println!(
        "\nInitial sync and memory, from the daemon's start (the harness API server's own time to \
         serve the lists is shown apart: a real API server serves them from its watch cache)"
    );
    println!(
        "\n| Services | max_vips / max_backends | lists served by the harness | lists done | every VIP in the maps (largest map-write pass) | settled: statuses written, Leases held | VmRSS / VmHWM at sync | settled: VmRSS = RssAnon + RssFile | RssAnon vs 1 Service | map memory (kernel) |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in cases {
        println!(
            "| {} | {} / {} | {:.2} s | {:.2} s | {:.2} s ({:.2} s) | {:.1} s | {:.1} / {:.1} MB | {:.1} = {:.1} + {:.1} MB | {} | {:.0} MB |",
            c.services,
            c.max_vips,
            c.max_backends,
            c.list_serve.as_secs_f64(),
            c.listed.as_secs_f64(),
            c.synced.as_secs_f64(),
            c.sync_reconcile_s,
            c.settled.as_secs_f64(),
            mb(c.at_sync.rss),
            mb(c.at_sync.hwm),
            mb(c.at_settle.rss),
            mb(c.at_settle.anon),
            mb(c.at_settle.file),
            ratio(c.at_settle.anon as f64, one.at_settle.anon as f64),
            mb(c.map_bytes),
        );
    }
    println!(
        "\nRssFile holds the binary and the pages of the Maglev array the daemon maps to write \
         rows (max_vips x M x 8 bytes once touched): kernel memory, counted in the map memory \
         column too. RssAnon is the daemon's own memory."
    );
    let p99 = |n: usize| cases.iter().find(|c| c.services == n).map(|c| c.m.lat.p99);
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!();
    if let Some(p) = p99(10_000) {
        println!(
            "target p99 <= {P99_TARGET_10K} ms at 10,000 Services: {} ({p:.2} ms)",
            verdict(p <= P99_TARGET_10K)
        );
    }
    if let Some(p) = p99(50_000) {
        println!(
            "target p99 <= {P99_TARGET_50K} ms at 50,000 Services: {} ({p:.2} ms)",
            verdict(p <= P99_TARGET_50K)
        );
    }
    let worst = cases.iter().map(|c| c.m.idle_requests).fold(0.0, f64::max);
    println!(
        "target idle API requests <= {IDLE_REQUESTS_TARGET}/s per router at every size: {} (at most {worst:.1}/s)",
        verdict(worst <= IDLE_REQUESTS_TARGET)
    );
    if let Some(c) = cases.iter().find(|c| c.services == 10_000) {
        let (rss, anon) = (mb(c.at_settle.rss), mb(c.at_settle.anon));
        println!(
            "target RSS <= {RSS_TARGET_10K} MB at 10,000 Services x {ENDPOINTS} endpoints: {} for the daemon's own memory (RssAnon {anon:.1} MB); VmRSS with the mapped Maglev rows {rss:.1} MB",
            verdict(anon <= RSS_TARGET_10K)
        );
    }
}
