//! `cargo xtask bench peers`: xlb side by side with what users would pick
//! instead, in one run on one machine: kube-proxy's iptables mode (legacy
//! and nft back-ends), kube-proxy's nftables mode, and the client straight
//! to a backend (the floor), at 1 to 10,000 configured Services.
//!
//! The parts: [`kube_proxy`] writes the rules kube-proxy would write for a
//! set of Services; [`bed`] builds the namespaces and puts one
//! configuration in charge of the balancer namespace at a time; [`load`]
//! drives the traffic and reads the clocks; [`report`] turns the rows into
//! the Markdown table and the SVG charts of docs/benchmarks.md.

pub mod bed;
pub mod kube_proxy;
pub mod load;
pub mod report;

use std::{
    fmt,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};

/// What carries the client's traffic in one measured configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Path {
    /// The client connects to a backend's own address: no balancer at all.
    Direct,
    /// xlb's XDP program on the balancer's interface, Direct Server Return.
    Xlb { mode: XdpMode, encap: Encap },
    /// kube-proxy's iptables mode: DNAT on the balancer, SNAT so replies
    /// come back through it.
    Iptables(IptablesBackend),
    /// kube-proxy's nftables mode (verdict maps), NAT like iptables.
    Nftables,
    /// xlb's IPVS data plane (the kernel's IPVS, programmed by xlb over
    /// netlink): DR for `l2`, TUN for `ipip`. Measured only inside the VM
    /// harness: the host kernel has no IPVS.
    Ipvs(Encap),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum XdpMode {
    Generic,
    Native,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Encap {
    Ipip,
    L2,
}

/// Which iptables binary loads the rules: the same rules, two kernels'
/// worth of matching (x_tables walked rule by rule, or nf_tables).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IptablesBackend {
    Legacy,
    Nft,
}

impl Path {
    /// Every configuration, in the order the tables list them.
    pub const ALL: [Path; 10] = [
        Path::HOST[0],
        Path::HOST[1],
        Path::HOST[2],
        Path::HOST[3],
        Path::HOST[4],
        Path::Ipvs(Encap::L2),
        Path::Ipvs(Encap::Ipip),
        Path::HOST[5],
        Path::HOST[6],
        Path::HOST[7],
    ];

    /// Every configuration this machine's kernel runs (no IPVS).
    pub const HOST: [Path; 8] = [
        Path::Direct,
        Path::Xlb {
            mode: XdpMode::Native,
            encap: Encap::Ipip,
        },
        Path::Xlb {
            mode: XdpMode::Native,
            encap: Encap::L2,
        },
        Path::Xlb {
            mode: XdpMode::Generic,
            encap: Encap::Ipip,
        },
        Path::Xlb {
            mode: XdpMode::Generic,
            encap: Encap::L2,
        },
        Path::Iptables(IptablesBackend::Legacy),
        Path::Iptables(IptablesBackend::Nft),
        Path::Nftables,
    ];

    /// Whether replies cross the balancer (NAT) or go straight to the
    /// client (DSR, and the direct floor).
    pub fn replies_via_balancer(self) -> bool {
        matches!(self, Path::Iptables(_) | Path::Nftables)
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Direct => "direct (floor)",
            Path::Xlb {
                mode: XdpMode::Native,
                encap: Encap::Ipip,
            } => "xlb native ipip",
            Path::Xlb {
                mode: XdpMode::Native,
                encap: Encap::L2,
            } => "xlb native l2",
            Path::Xlb {
                mode: XdpMode::Generic,
                encap: Encap::Ipip,
            } => "xlb generic ipip",
            Path::Xlb {
                mode: XdpMode::Generic,
                encap: Encap::L2,
            } => "xlb generic l2",
            Path::Iptables(IptablesBackend::Legacy) => "iptables (legacy)",
            Path::Iptables(IptablesBackend::Nft) => "iptables (nft)",
            Path::Nftables => "nftables (kube-proxy)",
            Path::Ipvs(Encap::L2) => "IPVS DR (xlb ipvs l2)",
            Path::Ipvs(Encap::Ipip) => "IPVS TUN (xlb ipvs ipip)",
        })
    }
}

/// The median and the 99th percentile of a series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Quantiles {
    pub median: f64,
    pub p99: f64,
}

impl Quantiles {
    /// Of `samples` (sorted here); zeros for an empty series.
    pub fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Self {
            median: at(0.5),
            p99: at(0.99),
        }
    }
}

/// HTTP requests at a fixed concurrency, over kept-alive connections.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Http {
    pub requests_per_s: f64,
    /// Per request, in milliseconds.
    pub latency_ms: Quantiles,
}

/// One configuration at one number of Services.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub path: Path,
    /// Services configured (one carries the traffic, the rest are decoys
    /// with 3 endpoints each).
    pub services: usize,
    /// Time to load the rules (iptables-restore, nft -f) or for xlb to
    /// have every VIP in its maps from the config file; none for the floor.
    pub load: Option<Duration>,
    /// TCP connect time (SYN sent to SYN-ACK received), in microseconds.
    pub connect_us: Quantiles,
    pub http: Http,
    /// UDP datagrams per second reaching the backends, the sender flat out.
    pub udp_pps: f64,
    /// Kernel CPU time of the whole machine per million datagrams
    /// delivered, at a fixed offered load, in milliseconds, less the same
    /// machine's kernel time over as long with no traffic; the median of
    /// several such rounds (the floor's share included: the sender and
    /// receivers run on the same machine).
    pub cpu_ms_per_mpkt: f64,
}

/// The time for xlb's Kubernetes source to have N Services in the maps
/// from the daemon's start (harness API server, 3 endpoints each).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct K8sSync {
    pub services: usize,
    pub synced: Duration,
}

/// A whole run: what was measured, and on what.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// CPU model and count, memory.
    pub machine: String,
    /// `uname -r`.
    pub kernel: String,
    /// UTC, YYYY-MM-DD.
    pub date: String,
    /// The command that made it, e.g. `cargo xtask bench peers`.
    pub command: String,
    /// `--quick`: few samples, one N (smoke, not a measurement).
    pub quick: bool,
    pub rows: Vec<Row>,
    pub k8s_sync: Vec<K8sSync>,
}

/// What a run measures, and how much.
#[derive(Clone, Debug)]
pub struct Options {
    /// Numbers of Services, each a round of every path.
    pub services: Vec<usize>,
    pub paths: Vec<Path>,
    pub effort: bed::Effort,
    /// Numbers of Services xlb's Kubernetes source syncs, timed.
    pub k8s_sync: Vec<usize>,
    pub quick: bool,
}

impl Options {
    /// The measurement: 1, 1,000 and 10,000 Services (about 12 minutes,
    /// 4 of them iptables-nft-restore and nft loading 10,000 Services).
    pub fn full() -> Self {
        Self {
            services: vec![1, 1_000, 10_000],
            paths: Path::HOST.to_vec(),
            effort: bed::Effort {
                connects: 3_000,
                http: Duration::from_secs(3),
                http_connections: 16,
                udp: Duration::from_secs(2),
                paced_pps: 50_000,
                cpu_rounds: 5,
                cpu_window: Duration::from_millis(800),
                flows: 64,
            },
            k8s_sync: vec![1, 1_000, 10_000],
            quick: false,
        }
    }

    /// The smoke run of `cargo xtask test`: every path verified at 1,000
    /// Services and briefly driven; numbers, but no measurement.
    pub fn quick() -> Self {
        Self {
            services: vec![1_000],
            paths: Path::HOST.to_vec(),
            effort: bed::Effort {
                connects: 200,
                http: Duration::from_secs(1),
                http_connections: 4,
                udp: Duration::from_millis(300),
                paced_pps: 20_000,
                cpu_rounds: 3,
                cpu_window: Duration::from_millis(100),
                flows: 16,
            },
            k8s_sync: Vec::new(),
            quick: true,
        }
    }
}

/// Builds the bed, then for each number of Services puts each path in
/// charge in turn: install (timed), verify, measure, uninstall. Fails on
/// the first path that does not forward as it should.
pub fn run(o: &Options, command: &str) -> Result<Report> {
    bed::prebuild();
    let bed = bed::Bed::build();
    let started = Instant::now();
    let mut rows = Vec::new();
    for &n in &o.services {
        let services = bed::services(n);
        for &path in &o.paths {
            let (installed, load) = bed::install(&bed, path, &services)
                .with_context(|| format!("{path}, {n} Services: set-up"))?;
            let measured = bed::verify(&bed, path)
                .and_then(|()| bed::measure(&bed, path, n, load, &o.effort))
                .with_context(|| format!("{path}, {n} Services"));
            bed::uninstall(&bed, installed).with_context(|| format!("{path}: tear-down"))?;
            let row = measured?;
            eprintln!(
                "peers bench: {n} Services, {path}: load {}, connect p50 {:.1} us, {:.0} req/s, {:.0} kpps, {:.0} ms CPU/Mpkt ({:.0} s so far)",
                load.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64())),
                row.connect_us.median,
                row.http.requests_per_s,
                row.udp_pps / 1e3,
                row.cpu_ms_per_mpkt,
                started.elapsed().as_secs_f64()
            );
            rows.push(row);
        }
    }
    drop(bed);
    let mut k8s_sync = Vec::new();
    for &n in &o.k8s_sync {
        let synced = crate::bench_k8s::sync_time(n, 3)
            .with_context(|| format!("xlb's Kubernetes source, {n} Services"))?;
        eprintln!(
            "peers bench: xlb's Kubernetes source synced {n} Services in {:.2} s",
            synced.as_secs_f64()
        );
        k8s_sync.push(K8sSync {
            services: n,
            synced,
        });
    }
    Ok(Report {
        machine: machine(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        date: today(),
        command: command.to_owned(),
        quick: o.quick,
        rows,
        k8s_sync,
    })
}

/// CPU model, cores and memory, from /proc.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb = m.lines().find(|l| l.starts_with("MemTotal:"))?;
            kb.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    format!("{cpu}, {cores} cores, {mem_gb:.0} GB")
}

/// Today's UTC date, YYYY-MM-DD.
fn today() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
