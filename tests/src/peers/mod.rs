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

pub mod kube_proxy;
pub mod report;

use std::{fmt, time::Duration};

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
    pub const ALL: [Path; 8] = [
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
    /// CPU time of the whole machine per million datagrams delivered, at a
    /// fixed offered load, in milliseconds (the floor's share included:
    /// the sender and receivers run on the same machine).
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
