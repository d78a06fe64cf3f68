//! The validated configuration: what the rest of the daemon codes against.
//!
//! Every value here has passed its checks, so consumers never re-validate.
//! `Serialize` exists for printing the effective config as JSON; reading
//! goes through [`super::parse`], never through serde, because serde would
//! lose the positions that error messages need.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use lb_common::Encap;
use serde::{Serialize, Serializer};

/// `Default` is the documented defaults with no VIPs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Config {
    pub dataplane: Dataplane,
    pub metrics: Metrics,
    pub vips: Vec<Vip>,
    pub kubernetes: Kubernetes,
    pub announce: Announce,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dataplane {
    pub mode: DataplaneMode,
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    pub pin_path: PathBuf,
    /// Small state files: which data plane runs and why, the IPVS services
    /// the daemon owns. Absolute.
    pub state_dir: PathBuf,
    /// Used by every VIP that does not set its own.
    #[serde(serialize_with = "serialize_name")]
    pub encap: Encap,
    /// The IPVS scheduler of every VIP that does not set its own. Only the
    /// IPVS data plane reads it; XDP always uses Maglev.
    pub scheduler: String,
    pub maglev_table_size: u32,
    pub flow_table_size: u32,
    pub max_vips: u32,
    pub max_backends: u32,
    pub ipip_source_v4: Option<Ipv4Addr>,
    pub ipip_source_v6: Option<Ipv6Addr>,
    pub nexthop_ttl_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataplaneMode {
    /// XDP when the kernel and driver allow it, IPVS otherwise.
    Auto,
    Xdp,
    Ipvs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpMode {
    Native,
    Generic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metrics {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vip {
    pub address: IpAddr,
    /// 0 balances every port of `address` for `protocol`.
    pub port: u16,
    pub protocol: Protocol,
    /// Already resolved against `dataplane.encap`.
    #[serde(serialize_with = "serialize_name")]
    pub encap: Encap,
    /// The IPVS scheduler name, already resolved against
    /// `dataplane.scheduler`. Checked for syntax only: the kernel knows
    /// which schedulers are loaded.
    pub scheduler: String,
    pub backends: Vec<Backend>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The IP protocol number, as the data plane's keys store it.
    pub const fn number(self) -> u8 {
        match self {
            Self::Tcp => lb_common::PROTO_TCP,
            Self::Udp => lb_common::PROTO_UDP,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Backend {
    pub address: IpAddr,
    /// 0 drains the backend: it gets no new flows but keeps its established ones.
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kubernetes {
    pub enabled: bool,
    /// Services of type LoadBalancer with this `spec.loadBalancerClass` are ours.
    pub load_balancer_class: String,
    /// Also take LoadBalancer Services that set no class at all (only one
    /// controller in a cluster should).
    pub include_unclassed: bool,
    /// A kubeconfig file; `None` infers the config the usual way (in-cluster
    /// service account, then `$KUBECONFIG`, then `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// What a Service's backends are: its pods, or the nodes hosting them.
    pub backend_target: BackendTarget,
    /// Addresses VIPs are allocated from, in order, when a Service names none.
    pub pools: Vec<AddressPool>,
    /// Where the per-VIP Leases live (the DaemonSet's own namespace).
    pub lease_namespace: String,
    /// This node's identity in Leases; `None` takes `$NODE_NAME`, then the
    /// host name.
    pub node_name: Option<String>,
    /// How long a Lease is valid without renewal.
    pub lease_duration_ms: u32,
    /// A leader that has not renewed for this long steps down; shorter than
    /// the lease, so it is no longer leading before anyone can take over.
    pub renew_deadline_ms: u32,
    /// How often Leases are renewed or tried.
    pub retry_period_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendTarget {
    /// Pod IPs: each pod must accept the VIP's traffic itself.
    Pod,
    /// Node IPs of nodes with a ready endpoint (externalTrafficPolicy: Local).
    Node,
}

/// An inclusive range of one family, written as a CIDR (`10.0.0.0/24`) or
/// `first-last`. A v4 CIDR of /30 or wider leaves out its network and
/// broadcast addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressPool {
    pub first: IpAddr,
    pub last: IpAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Announce {
    pub mode: AnnounceMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnnounceMode {
    None,
    Arp,
    AwsEip,
}

impl Default for Dataplane {
    fn default() -> Self {
        Self {
            mode: DataplaneMode::Auto,
            interfaces: Vec::new(),
            xdp_mode: XdpMode::Native,
            pin_path: PathBuf::from("/sys/fs/bpf/xlb"),
            state_dir: PathBuf::from("/run/xlb"),
            encap: Encap::Ipip,
            scheduler: "mh".to_owned(),
            maglev_table_size: lb_common::DEFAULT_MAGLEV_SIZE,
            flow_table_size: lb_common::DEFAULT_FLOW_TABLE_SIZE,
            max_vips: lb_common::DEFAULT_MAX_VIPS,
            max_backends: lb_common::DEFAULT_MAX_BACKENDS,
            ipip_source_v4: None,
            ipip_source_v6: None,
            // lb-common keeps the data plane's unit (ns); the config speaks ms.
            nexthop_ttl_ms: (lb_common::DEFAULT_NEXTHOP_TTL_NS / 1_000_000) as u32,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9810)),
        }
    }
}

impl Default for Kubernetes {
    fn default() -> Self {
        Self {
            enabled: false,
            load_balancer_class: "xlb.io/xlb".to_owned(),
            include_unclassed: false,
            kubeconfig: None,
            backend_target: BackendTarget::Pod,
            pools: Vec::new(),
            lease_namespace: "xlb-system".to_owned(),
            node_name: None,
            lease_duration_ms: 15_000,
            renew_deadline_ms: 10_000,
            retry_period_ms: 2_000,
        }
    }
}

impl Default for Announce {
    fn default() -> Self {
        Self {
            mode: AnnounceMode::None,
        }
    }
}

/// An enum spelled in the config as one of a fixed set of strings. One list
/// per enum serves parsing, the "expected one of" messages, JSON and
/// [`super::to_toml`], so they cannot drift apart.
pub(crate) trait Named: Copy + PartialEq + 'static {
    const ALL: &'static [(&'static str, Self)];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, v)| *v == self)
            .map(|(n, _)| *n)
            .expect("every variant is listed in ALL")
    }

    fn from_name(name: &str) -> Option<Self> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// `one of "a", "b", "c"`, for error messages.
    fn one_of() -> String {
        let names: Vec<String> = Self::ALL.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        format!("one of {}", names.join(", "))
    }
}

impl Named for DataplaneMode {
    const ALL: &'static [(&'static str, Self)] = &[
        ("auto", Self::Auto),
        ("xdp", Self::Xdp),
        ("ipvs", Self::Ipvs),
    ];
}

impl Named for XdpMode {
    const ALL: &'static [(&'static str, Self)] =
        &[("native", Self::Native), ("generic", Self::Generic)];
}

impl Named for Protocol {
    const ALL: &'static [(&'static str, Self)] = &[("tcp", Self::Tcp), ("udp", Self::Udp)];
}

impl Named for BackendTarget {
    const ALL: &'static [(&'static str, Self)] = &[("pod", Self::Pod), ("node", Self::Node)];
}

impl Serialize for BackendTarget {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_name(self, serializer)
    }
}

impl Named for AnnounceMode {
    const ALL: &'static [(&'static str, Self)] = &[
        ("none", Self::None),
        ("arp", Self::Arp),
        ("aws-eip", Self::AwsEip),
    ];
}

// lb-common stays free of serde; the config owns Encap's spelling.
impl Named for Encap {
    const ALL: &'static [(&'static str, Self)] = &[("ipip", Self::Ipip), ("l2", Self::L2)];
}

fn serialize_name<T: Named, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value.name())
}

impl Serialize for DataplaneMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_name(self, serializer)
    }
}

impl Serialize for XdpMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_name(self, serializer)
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_name(self, serializer)
    }
}

impl Serialize for AnnounceMode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_name(self, serializer)
    }
}
