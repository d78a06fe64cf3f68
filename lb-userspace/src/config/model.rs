//! The validated configuration: what the rest of the daemon codes against,
//! and, through serde, the shape of the file itself.
//!
//! A key is declared once: its field here (with the check its value must
//! pass, in `deserialize_with`, which also says what the key takes when
//! serde's type name would not) and its default in the `Default` impl. `Serialize`
//! writes the file's shape back, so the effective config reads as a config
//! file (TOML) or as JSON with the same names.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use lb_common::Encap;
use serde::{Deserialize, Deserializer, Serialize};

use super::check;
use super::health::{self, Health, HealthCheck, VipHealth};

/// `Default` is the documented defaults with no VIPs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Config {
    pub dataplane: Dataplane,
    pub metrics: Metrics,
    #[serde(rename = "vip")]
    pub vips: Vec<Vip>,
    pub kubernetes: Kubernetes,
    pub announce: Announce,
    pub health: Health,
}

/// The file as written: [`Config`] but for VIPs, whose encap and scheduler
/// default to the data plane's, so they are resolved after reading. A file
/// read in parts (see `read`) is one of these per part, merged: a table
/// left out is `None`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct File {
    #[serde(deserialize_with = "check::table_option")]
    pub(super) dataplane: Option<Dataplane>,
    #[serde(deserialize_with = "check::table_option")]
    pub(super) metrics: Option<Metrics>,
    pub(super) vip: Vec<VipEntry>,
    #[serde(deserialize_with = "check::table_option")]
    pub(super) kubernetes: Option<Kubernetes>,
    #[serde(deserialize_with = "check::table_option")]
    pub(super) announce: Option<Announce>,
    #[serde(deserialize_with = "check::table_option")]
    pub(super) health: Option<Health>,
}

impl File {
    /// This part and a later one, which sets none of the tables this one
    /// sets (but `vip`).
    pub(super) fn merge(&mut self, later: Self) {
        fn take<T>(this: &mut Option<T>, later: Option<T>) {
            debug_assert!(this.is_none() || later.is_none());
            *this = this.take().or(later);
        }
        take(&mut self.dataplane, later.dataplane);
        take(&mut self.metrics, later.metrics);
        take(&mut self.kubernetes, later.kubernetes);
        take(&mut self.announce, later.announce);
        take(&mut self.health, later.health);
        self.vip.extend(later.vip);
    }

    pub(super) fn into_config(self) -> Config {
        let dataplane = self.dataplane.unwrap_or_default();
        let announce = self.announce.unwrap_or_default();
        let health = self.health.unwrap_or_default();
        Config {
            vips: self
                .vip
                .into_iter()
                .map(|v| v.resolve(&dataplane, &announce, &health))
                .collect(),
            dataplane,
            metrics: self.metrics.unwrap_or_default(),
            kubernetes: self.kubernetes.unwrap_or_default(),
            announce,
            health,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Dataplane {
    pub mode: DataplaneMode,
    #[serde(deserialize_with = "check::interfaces")]
    pub interfaces: Vec<String>,
    pub xdp_mode: XdpMode,
    /// Pins are looked up from other processes (xlb status, bpftool), so a
    /// path relative to wherever the daemon started is a trap.
    #[serde(deserialize_with = "check::absolute")]
    pub pin_path: PathBuf,
    /// Small state files: which data plane runs and why, the IPVS services
    /// the daemon owns. Absolute, like `pin_path`.
    #[serde(deserialize_with = "check::absolute")]
    pub state_dir: PathBuf,
    /// Used by every VIP that does not set its own.
    #[serde(with = "EncapName")]
    pub encap: Encap,
    /// The IPVS scheduler of every VIP that does not set its own. Only the
    /// IPVS data plane reads it; XDP always uses Maglev.
    #[serde(deserialize_with = "check::scheduler")]
    pub scheduler: String,
    /// The largest Maglev table a VIP gets: each VIP's is chosen from its
    /// backend count (about 100 slots per backend), up to this.
    #[serde(deserialize_with = "check::prime")]
    pub maglev_table_size: u32,
    /// Slots of the Maglev array, which holds every VIP's table (4 bytes
    /// of kernel memory each); unset, 512 per VIP of `max_vips` and at
    /// least two of the largest tables.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "check::range_option::<_, 2, { crate::xdp::loader::MAX_MAGLEV_SLOTS }>"
    )]
    pub maglev_slots: Option<u32>,
    #[serde(deserialize_with = "check::range::<_, 1, { 1 << 28 }>")]
    pub flow_table_size: u32,
    #[serde(deserialize_with = "check::max_vips")]
    pub max_vips: u32,
    /// Backend id 0 means "no backend", so one backend needs two entries.
    #[serde(deserialize_with = "check::range::<_, 2, { 1 << 24 }>")]
    pub max_backends: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipip_source_v4: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipip_source_v6: Option<Ipv6Addr>,
    #[serde(deserialize_with = "check::range::<_, 1, 60_000>")]
    pub nexthop_ttl_ms: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum DataplaneMode {
    /// XDP when the kernel and driver allow it, IPVS otherwise.
    Auto,
    Xdp,
    Ipvs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    Native,
    Generic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    #[serde(deserialize_with = "check::socket_address")]
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Vip {
    pub address: IpAddr,
    /// 0 balances every port of `address` for `protocol`.
    pub port: u16,
    pub protocol: Protocol,
    /// Already resolved against `dataplane.encap`.
    #[serde(with = "EncapName")]
    pub encap: Encap,
    /// The IPVS scheduler name, already resolved against
    /// `dataplane.scheduler`. Checked for syntax only: the kernel knows
    /// which schedulers are loaded.
    pub scheduler: String,
    /// Already resolved against `announce.mode`; written back as the
    /// `announce` and `allocation_id` keys.
    #[serde(flatten)]
    pub announce: Announcement,
    pub backends: Vec<Backend>,
    /// `[vip.health]` resolved over `[health]`; `None`: not checked.
    /// Written back as a `health` table of every key, or `kind = "none"`.
    #[serde(serialize_with = "health::serialize_vip")]
    pub health: Option<HealthCheck>,
    /// This VIP's Maglev table size (a prime), instead of the one chosen
    /// from its backend count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maglev_table_size: Option<u32>,
}

/// A `[[vip]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table, written [[vip]]")]
pub(super) struct VipEntry {
    address: IpAddr,
    #[serde(default, deserialize_with = "check::port")]
    port: u16,
    #[serde(default)]
    protocol: Protocol,
    #[serde(default, deserialize_with = "encap_option")]
    encap: Option<Encap>,
    #[serde(default, deserialize_with = "check::scheduler_option")]
    scheduler: Option<String>,
    #[serde(default)]
    announce: Option<AnnounceMode>,
    /// The Elastic IP of an `aws` VIP (relations.rs refuses it elsewhere).
    #[serde(default)]
    allocation_id: Option<AllocationId>,
    #[serde(default)]
    backends: Vec<Backend>,
    #[serde(default, deserialize_with = "check::table")]
    health: VipHealth,
    #[serde(default, deserialize_with = "check::prime_option")]
    maglev_table_size: Option<u32>,
}

impl VipEntry {
    pub(super) fn resolve(
        self,
        dataplane: &Dataplane,
        announce: &Announce,
        health: &Health,
    ) -> Vip {
        Vip {
            address: self.address,
            port: self.port,
            protocol: self.protocol,
            encap: self.encap.unwrap_or(dataplane.encap),
            scheduler: self
                .scheduler
                .unwrap_or_else(|| dataplane.scheduler.clone()),
            announce: Announcement::new(self.announce.unwrap_or(announce.mode), self.allocation_id),
            backends: self.backends,
            health: self.health.over(health).defaults(),
            maglev_table_size: self.maglev_table_size,
        }
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    #[default]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a backend such as { address = \"10.0.0.1\", weight = 1 }"
)]
pub struct Backend {
    pub address: IpAddr,
    /// 0 drains the backend: it gets no new flows but keeps its established ones.
    #[serde(default = "one", deserialize_with = "check::weight")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Kubernetes {
    pub enabled: bool,
    /// Services of type LoadBalancer with this `spec.loadBalancerClass` are ours.
    #[serde(deserialize_with = "check::class")]
    pub load_balancer_class: String,
    /// Also take LoadBalancer Services that set no class at all (only one
    /// controller in a cluster should).
    pub include_unclassed: bool,
    /// A kubeconfig file; `None` infers the config the usual way (in-cluster
    /// service account, then `$KUBECONFIG`, then `~/.kube/config`). Kept as
    /// written: a relative path is relative to where the daemon runs, as
    /// with kubectl's --kubeconfig.
    #[serde(
        deserialize_with = "check::kubeconfig",
        skip_serializing_if = "Option::is_none"
    )]
    pub kubeconfig: Option<PathBuf>,
    /// What a Service's backends are: its pods, or the nodes hosting them.
    pub backend_target: BackendTarget,
    /// Addresses VIPs are allocated from, in order, when a Service names
    /// none; each may set how its addresses are announced.
    pub pools: Vec<AddressPool>,
    /// Where the Leases live (the DaemonSet's own namespace).
    #[serde(deserialize_with = "check::dns_label")]
    pub lease_namespace: String,
    /// This node's identity in Leases; `None` takes `$NODE_NAME`, then the
    /// host name.
    #[serde(
        deserialize_with = "check::dns_subdomain",
        skip_serializing_if = "Option::is_none"
    )]
    pub node_name: Option<String>,
    /// How long a Lease is valid without renewal.
    #[serde(deserialize_with = "check::lease_timing")]
    pub lease_duration_ms: u32,
    /// A leader that has not renewed for this long says (once) that it
    /// leads fail-static, without the API server; shorter than the lease.
    #[serde(deserialize_with = "check::lease_timing")]
    pub renew_deadline_ms: u32,
    /// How often Leases are renewed or tried.
    #[serde(deserialize_with = "check::lease_timing")]
    pub retry_period_ms: u32,
    /// VIPs are grouped into this many buckets, one Lease each: the API
    /// load of the election does not grow with the number of VIPs.
    #[serde(deserialize_with = "check::range::<_, 1, 1024>")]
    pub lease_buckets: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTarget {
    /// Pod IPs: each pod must accept the VIP's traffic itself.
    Pod,
    /// Node IPs of nodes with a ready endpoint (externalTrafficPolicy: Local).
    Node,
}

/// An inclusive range of one family, written as a CIDR (`10.0.0.0/24`) or
/// `first-last`, alone or as the `range` of a table that also sets the
/// pool's `announce` mode. A v4 CIDR of /30 or wider leaves out its network
/// and broadcast addresses. Serialized as `first-last` (in a table when
/// `announce` is set), which reads back to the same addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPool {
    pub first: IpAddr,
    pub last: IpAddr,
    /// How VIPs with an address of this pool are announced unless their
    /// Service's annotation says otherwise; `None`: `announce.mode`.
    pub announce: Option<AnnounceMode>,
}

/// How this node claims its VIPs on the network (see docs/announce.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Announce {
    /// The default for every VIP; a `[[vip]]` may choose its own.
    pub mode: AnnounceMode,
    /// Without Kubernetes there is no election: `true` makes this node the
    /// announcer of every VIP (a single router), `false` of none. Several
    /// routers without Kubernetes announce over BGP instead. Ignored when
    /// `kubernetes.enabled`: the Leases decide.
    pub static_leader: bool,
    /// How long the data plane keeps answering for owned VIPs after the
    /// daemon's last heartbeat: a daemon that died stops claiming them
    /// within this, before another router can take its Leases over; a
    /// restart quicker than this loses nothing. Default: half of
    /// `lease_duration_ms - retry_period_ms` with Kubernetes, 5000 without.
    #[serde(
        deserialize_with = "check::liveness_bound",
        skip_serializing_if = "Option::is_none"
    )]
    pub liveness_bound_ms: Option<u32>,
    /// Gratuitous ARP / unsolicited neighbour advertisements sent when this
    /// node takes a VIP over: one at once, then this many more in all...
    #[serde(deserialize_with = "check::range::<_, 1, 100>")]
    pub gratuitous_count: u32,
    /// ...this far apart.
    #[serde(deserialize_with = "check::range::<_, 10, 60_000>")]
    pub gratuitous_interval_ms: u32,
    /// Then again every this often while it owns the VIP (0: never), for
    /// switches and hosts that age entries out.
    #[serde(deserialize_with = "check::range::<_, 0, 3_600_000>")]
    pub refresh_interval_ms: u32,
    /// The modes a Kubernetes Service may ask for with the `xlb.io/announce`
    /// annotation; a Service asking for another is refused. The config's
    /// own choices (`mode`, a pool's `announce`) are not limited by it.
    #[serde(deserialize_with = "check::announce_modes")]
    pub service_modes: Vec<AnnounceMode>,
    /// The `aws` mode's settings (see docs/aws.md).
    #[serde(deserialize_with = "check::table")]
    pub aws: Aws,
    /// The `bgp` mode's settings (see docs/bgp.md).
    #[serde(deserialize_with = "check::table")]
    pub bgp: Bgp,
}

/// `[announce.bgp]`: where the VIP routes the node's routing daemon
/// exports are written. No `ip rule` points at the table, so the node's
/// own forwarding never sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Bgp {
    /// The kernel routing table (not 0, nor the kernel's 253-255).
    #[serde(deserialize_with = "check::route_table")]
    pub table: u32,
    /// The route protocol number that marks xlb's routes in it (what the
    /// routing daemon may filter on; not one of the kernel's own, 0-4).
    #[serde(deserialize_with = "check::range::<_, 5, 255>")]
    pub protocol: u32,
    /// Announce a VIP whose every backend fails its health checks and that
    /// `fail_open` keeps in rotation. Off: it is withdrawn, so routers
    /// whose checks pass take its traffic (and if every router's fail, the
    /// VIP is unreachable); on: it keeps being announced, which serves
    /// what still works if the checks themselves are wrong.
    pub announce_fail_open: bool,
}

impl Default for Bgp {
    fn default() -> Self {
        Self {
            table: 4243,
            protocol: 178,
            announce_fail_open: false,
        }
    }
}

/// `[announce.aws]`. Everything left out is found the way an EC2 instance
/// finds it: the region and ENI from the instance metadata (IMDSv2),
/// credentials from the SDK's default chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Aws {
    /// The EC2 API endpoint (other partitions, VPC endpoints, tests);
    /// `None`: the region's own, or `$AWS_ENDPOINT_URL`.
    #[serde(
        deserialize_with = "check::url",
        skip_serializing_if = "Option::is_none"
    )]
    pub endpoint_url: Option<String>,
    /// The instance metadata service; `None`: the SDK's default
    /// (169.254.169.254, or `$AWS_EC2_METADATA_SERVICE_ENDPOINT`).
    #[serde(
        deserialize_with = "check::url",
        skip_serializing_if = "Option::is_none"
    )]
    pub imds_url: Option<String>,
    /// `None`: the instance's region, from IMDS.
    #[serde(
        deserialize_with = "check::aws_region",
        skip_serializing_if = "Option::is_none"
    )]
    pub region: Option<String>,
    /// The ENI that takes the VIPs; `None`: the instance's primary ENI
    /// (the one of IMDS's `mac`).
    #[serde(
        deserialize_with = "check::eni_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub network_interface_id: Option<String>,
    /// How often the leader compares what EC2 reports with what it leads
    /// and repairs the difference (someone moved an address by hand, a
    /// call failed).
    #[serde(deserialize_with = "check::range::<_, 200, 3_600_000>")]
    pub reconcile_interval_ms: u32,
    /// Whether an Elastic IP counts as in place only when EC2 reports it
    /// on the VIP's own private IP (not merely on the right ENI). `false`
    /// is for API emulators that ignore AssociateAddress's
    /// PrivateIpAddress (moto binds the EIP to the ENI's primary address);
    /// never for AWS itself, where an EIP on another private IP of the ENI
    /// does not reach the VIP.
    pub check_private_ip: bool,
}

impl Default for Aws {
    fn default() -> Self {
        Self {
            endpoint_url: None,
            imds_url: None,
            region: None,
            network_interface_id: None,
            reconcile_interval_ms: 30_000,
            check_private_ip: true,
        }
    }
}
impl Announce {
    /// The liveness bound in effect, given the Lease timings when
    /// Kubernetes elects.
    pub fn liveness_bound(&self, k: &Kubernetes) -> std::time::Duration {
        let ms = self.liveness_bound_ms.unwrap_or(if k.enabled {
            k.lease_duration_ms.saturating_sub(k.retry_period_ms) / 2
        } else {
            5_000
        });
        std::time::Duration::from_millis(u64::from(ms))
    }
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum AnnounceMode {
    /// Routing to the VIPs is done elsewhere (static routes, a cloud).
    #[default]
    None,
    /// ARP and IPv6 neighbour discovery, answered in XDP by the elected
    /// router.
    L2,
    /// An AWS secondary private IP and Elastic IP, moved by the elected
    /// router.
    Aws,
    /// A route in a kernel table that the node's routing daemon exports
    /// over BGP: every healthy router announces (no election).
    Bgp,
}

/// How one VIP is announced: the mode with what that mode needs, so an
/// Elastic IP exists only for an `aws` VIP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub enum Announcement {
    #[default]
    None,
    L2,
    /// A secondary private IP of the leader's ENI, with this Elastic IP
    /// (`None`: none, the VIP is reached inside the VPC only) associated
    /// to it.
    Aws {
        eip: Option<AllocationId>,
    },
    Bgp,
}

impl Announcement {
    /// `eip` is kept for `aws` only: the other modes have no use for one.
    pub fn new(mode: AnnounceMode, eip: Option<AllocationId>) -> Self {
        match mode {
            AnnounceMode::None => Self::None,
            AnnounceMode::L2 => Self::L2,
            AnnounceMode::Aws => Self::Aws { eip },
            AnnounceMode::Bgp => Self::Bgp,
        }
    }

    pub fn mode(&self) -> AnnounceMode {
        match self {
            Self::None => AnnounceMode::None,
            Self::L2 => AnnounceMode::L2,
            Self::Aws { .. } => AnnounceMode::Aws,
            Self::Bgp => AnnounceMode::Bgp,
        }
    }

    pub fn eip(&self) -> Option<&AllocationId> {
        match self {
            Self::Aws { eip } => eip.as_ref(),
            _ => None,
        }
    }
}

/// Written as a `[[vip]]`'s keys: `announce` and, for `aws` with an
/// Elastic IP, `allocation_id`.
impl Serialize for Announcement {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let eip = self.eip();
        let mut m = serializer.serialize_map(Some(1 + usize::from(eip.is_some())))?;
        m.serialize_entry("announce", &self.mode())?;
        if let Some(eip) = eip {
            m.serialize_entry("allocation_id", eip)?;
        }
        m.end()
    }
}

/// An Elastic IP's allocation id, `eipalloc-` and hex digits: checked
/// where it is read (config, annotation), so a typo is refused there and
/// not found at the first EC2 call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AllocationId(std::sync::Arc<str>);

impl Serialize for AllocationId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl AllocationId {
    pub const EXPECTED: &str = "an Elastic IP allocation id such as \"eipalloc-0123456789abcdef0\"";

    pub fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("eipalloc-")?;
        let ok = (8..=32).contains(&hex.len())
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AllocationId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for AllocationId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| {
            serde::de::Error::invalid_value(serde::de::Unexpected::Str(&s), &Self::EXPECTED)
        })
    }
}

/// lb-common stays free of serde; the config owns Encap's spelling.
#[derive(Clone, Copy, Serialize, Deserialize, clap::ValueEnum)]
#[serde(remote = "Encap", rename_all = "kebab-case")]
pub(super) enum EncapName {
    Ipip,
    L2,
}

fn encap_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Encap>, D::Error> {
    EncapName::deserialize(d).map(Some)
}

impl Dataplane {
    /// Slots of the Maglev array: `maglev_slots`, or its default.
    pub fn maglev_slots(&self) -> u32 {
        self.maglev_slots.unwrap_or_else(|| {
            crate::xdp::loader::default_maglev_slots(self.max_vips, self.maglev_table_size)
        })
    }
}

impl Vip {
    /// The slots of this VIP's Maglev table, as the data plane sizes it
    /// (its own size, or the one chosen from its backends up to
    /// `largest`).
    pub fn maglev_table_size(&self, largest: u32) -> u32 {
        self.maglev_table_size
            .unwrap_or_else(|| crate::maglev::table_size(self.backends.len(), largest))
    }
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
            maglev_slots: None,
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
            lease_buckets: 32,
        }
    }
}

impl Default for Announce {
    fn default() -> Self {
        Self {
            mode: AnnounceMode::None,
            static_leader: true,
            liveness_bound_ms: None,
            gratuitous_count: 5,
            gratuitous_interval_ms: 1_000,
            refresh_interval_ms: 0,
            service_modes: vec![
                AnnounceMode::None,
                AnnounceMode::L2,
                AnnounceMode::Aws,
                AnnounceMode::Bgp,
            ],
            aws: Aws::default(),
            bgp: Bgp::default(),
        }
    }
}

impl Serialize for AddressPool {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let range = format!("{}-{}", self.first, self.last);
        match self.announce {
            None => serializer.serialize_str(&range),
            Some(mode) => {
                let mut m = serializer.serialize_map(Some(2))?;
                m.serialize_entry("range", &range)?;
                m.serialize_entry("announce", &mode)?;
                m.end()
            }
        }
    }
}

impl AnnounceMode {
    /// As the config and the annotation write it.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::L2 => "l2",
            Self::Aws => "aws",
            Self::Bgp => "bgp",
        }
    }
}
