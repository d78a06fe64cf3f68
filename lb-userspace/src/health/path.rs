//! The probe path: health-check connections that reach a backend the way
//! clients' connections do, through DSR.
//!
//! A probe is a TCP (or UDP) socket on this node, bound to one of the
//! node's own addresses, marked `tag | id` (`SO_MARK`, [`ProbePaths::mark`])
//! and connected to VIP:port. The pieces set up here send its packets to
//! backend `id`, encapsulated as the balancer would:
//!
//! ```text
//!   socket (mark tag|id) ─▶ rule `fwmark tag/0xff000000 lookup TABLE pref PRIO`
//!     ─▶ TABLE: `default dev xlbprobe0` ─▶ xlbprobe0 egress: xlb-probe (tc)
//!     ─▶ IPIP to the backend / the backend's MAC ─▶ bpf_redirect_neigh out of
//!        the interface the FIB gives for the backend
//!   backend ─▶ answers from the VIP straight to the node's address (DSR)
//! ```
//!
//! The probe device is a `dummy` (NOARP: frames carry an Ethernet header
//! with the device's own MAC, and never an ARP request), or an `ifb`, which
//! is the same for this purpose, on kernels built without the dummy driver.
//! Nothing but probes is routed to it, and the program drops what it has
//! no path for, so a probe whose path is missing fails rather than leaves
//! by the normal route.
//!
//! The program looks the backend's route up with `bpf_fib_lookup` from the
//! probe device, which the kernel allows only where forwarding is enabled:
//! it is enabled on the probe device alone (`net.ipv{4,6}.conf.DEV.forwarding`,
//! which nothing arrives on), never globally.
//!
//! Replies come from the VIP to the node's address. With strict reverse-path
//! filtering (`rp_filter=1`) on the interface they arrive on, the kernel
//! drops them unless the node's route to the VIP points out of that
//! interface; loose mode (2) needs some route to the VIP; 0 needs none.
//!
//! This serves the XDP data plane. The IPVS one makes each VIP a `local`
//! route, whose rule (priority 0) precedes the probe rule: a probe to the
//! VIP would stay on this node.
//!
//! Everything here belongs to the network namespace of the thread that
//! calls [`ProbePaths::open`]: its netlink socket, the sysctls it writes
//! and the device it makes.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, MapError, PerCpuArray},
    programs::{SchedClassifier, TcAttachType, tc},
};
use lb_common::{
    Encap, FAMILY_V4, FAMILY_V6, PROBE_ID_MASK, ProbePath, names, stats::ProbeOutcome,
};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    link::{
        AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoKind, LinkAttribute, LinkFlags, LinkInfo,
        LinkMessage,
    },
    route::{RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType},
    rule::{RuleAction, RuleAttribute, RuleMessage},
};
use tokio::net::{TcpSocket, TcpStream};

use crate::{ipvs::vip_routes::RTPROT_XLB, maglev::addr_bytes, netlink::Channel, xdp::objects};

/// The probe program's name in its object.
pub const PROBE_PROGRAM: &str = "xlb_probe";
pub const DEFAULT_DEVICE: &str = "xlbprobe0";
/// The defaults of `[health] table` and `rule_priority`.
pub const DEFAULT_TABLE: u32 = 4242;
/// Ahead of `main` (32766) and of the rules distributions install by
/// default; behind `local` (0), so the node's own addresses stay local.
pub const DEFAULT_RULE_PRIORITY: u32 = 90;
/// The bits of a mark the rule matches: the tag's.
pub const TAG_MASK: u32 = !PROBE_ID_MASK;
/// MTU of the probe device: a probe packet plus the larger tunnel header
/// (IPv6, 40 bytes) fits a 1500-byte network. TCP probes take their MSS
/// from it; a packet that does not fit the egress MTU once encapsulated is
/// dropped (`too_big`), as nothing can fragment it on the way here.
pub const DEVICE_MTU: u32 = 1500 - lb_common::IPIP6_OVERHEAD as u32;

/// Where probes are routed: the mark's tag, the routing table and rule,
/// the device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathSettings {
    /// The tag: bits outside [`PROBE_ID_MASK`] only, not zero.
    pub mark: u32,
    /// A table of its own (not 0, nor `default`, `main`, `local`).
    pub table: u32,
    pub rule_priority: u32,
    pub device: String,
}

impl Default for PathSettings {
    fn default() -> Self {
        Self {
            mark: lb_common::DEFAULT_PROBE_MARK,
            table: DEFAULT_TABLE,
            rule_priority: DEFAULT_RULE_PRIORITY,
            device: DEFAULT_DEVICE.into(),
        }
    }
}

impl PathSettings {
    pub fn validate(&self) -> Result<(), ProbePathError> {
        let bad = |why: String| Err(ProbePathError::Settings(why));
        if self.mark == 0 || self.mark & PROBE_ID_MASK != 0 {
            return bad(format!(
                "mark {:#010x}: the tag must be non-zero and use only the bits {TAG_MASK:#010x} (the others carry the probe id)",
                self.mark
            ));
        }
        if matches!(self.table, 0 | 253..=255) {
            return bad(format!(
                "table {}: probes need a table of their own (not unspec, default, main or local)",
                self.table
            ));
        }
        // The rule must come after `local` (priority 0): the node's own
        // addresses are reached without a probe path.
        if self.rule_priority == 0 {
            return bad("rule priority 0 would precede the local table's rule".into());
        }
        if self.device.is_empty()
            || self.device.len() > 15
            || self.device.contains(['/', ' ', '\0'])
            || self.device == "."
            || self.device == ".."
        {
            return bad(format!(
                "device name {:?}: 1 to 15 characters, no '/' or spaces",
                self.device
            ));
        }
        Ok(())
    }
}

/// Where probe `id`'s packets go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeRoute {
    pub backend: IpAddr,
    /// The outer source of IPIP packets (the balancer's `ipip_source_v4`
    /// or `_v6`); required for [`Encap::Ipip`], ignored for [`Encap::L2`].
    pub outer_source: Option<IpAddr>,
    pub encap: Encap,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbePathError {
    #[error("probe path settings: {0}")]
    Settings(String),
    #[error("opening an rtnetlink socket for the probe path: {0}")]
    Netlink(io::Error),
    #[error("{action} probe device {device}: {source}")]
    Device {
        device: String,
        action: &'static str,
        source: io::Error,
    },
    #[error(
        "probe device {device} exists and is a {kind} device, not one xlb made: remove it or choose another device name"
    )]
    NotOurs { device: String, kind: String },
    #[error("{action} the {family} default route of table {table} (dev {device}): {source}")]
    Table {
        table: u32,
        device: String,
        family: &'static str,
        action: &'static str,
        source: io::Error,
    },
    #[error(
        "{action} the {family} rule `fwmark {mark:#x}/{TAG_MASK:#x} lookup {table} pref {priority}`: {source}"
    )]
    Rule {
        mark: u32,
        table: u32,
        priority: u32,
        family: &'static str,
        action: &'static str,
        source: io::Error,
    },
    #[error("writing {path} (bpf_fib_lookup needs forwarding on the probe device): {source}")]
    Sysctl { path: String, source: io::Error },
    #[error("loading the probe program: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("the probe program's object has no {0}: was it built from this version of xlb?")]
    Missing(&'static str),
    #[error("the probe program on {device}: {source}")]
    Program {
        device: String,
        source: aya::programs::ProgramError,
    },
    #[error("adding the clsact qdisc to probe device {device}: {source}")]
    Qdisc {
        device: String,
        source: aya::programs::tc::TcError,
    },
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("probe {id} to backend {backend}: {reason}")]
    Route {
        id: u32,
        backend: IpAddr,
        reason: String,
    },
    #[error("probe id {0}: ids are 1 to {PROBE_ID_MASK} (0 is the id of every unmarked packet)")]
    Id(u32),
}

/// The probe device, its program, table and rules, and the paths.
pub struct ProbePaths {
    settings: PathSettings,
    chan: Channel,
    ifindex: u32,
    kind: &'static str,
    ipv6: bool,
    paths: HashMap<MapData, u32, ProbePath>,
    stats: PerCpuArray<MapData, u64>,
    /// The program and its tc attachment: dropped, a tcx link (6.6+)
    /// detaches, while a netlink filter (older kernels) stays on the
    /// device until the device goes.
    ebpf: Ebpf,
}

/// The families the probe path serves, with their names in messages.
const FAMILIES: [(AddressFamily, &str); 2] = [
    (AddressFamily::Inet, "IPv4"),
    (AddressFamily::Inet6, "IPv6"),
];

impl ProbePaths {
    /// Creates (or replaces a leftover) probe device, up, NOARP, with
    /// forwarding on; clsact and the xlb-probe program on its egress;
    /// `default dev DEVICE table TABLE` and the rule `fwmark
    /// MARK/0xff000000 lookup TABLE pref PRIORITY` for IPv4 and IPv6.
    /// Idempotent after a crash (kill -9): what an earlier run left is
    /// removed first. IPv6 is skipped where the kernel has none.
    pub fn open(settings: &PathSettings) -> Result<Self, ProbePathError> {
        settings.validate()?;
        let mut chan = Channel::open(netlink_sys::constants::NETLINK_ROUTE)
            .map_err(ProbePathError::Netlink)?;
        remove_rules(&mut chan, settings)?;
        remove_device(&mut chan, &settings.device)?;
        let kind = create_device(&mut chan, &settings.device)?;
        match set_up(&mut chan, settings) {
            Ok(parts) => Ok(Self {
                settings: settings.clone(),
                chan,
                ifindex: parts.ifindex,
                kind,
                ipv6: parts.ipv6,
                paths: parts.paths,
                stats: parts.stats,
                ebpf: parts.ebpf,
            }),
            Err(e) => {
                // Nothing half made stays behind (the next open would
                // clear it, but an operator looking meanwhile would not
                // know what it is).
                let _ = remove_rules(&mut chan, settings);
                let _ = remove_device(&mut chan, &settings.device);
                Err(e)
            }
        }
    }

    /// Sends probe `id`'s packets to `route.backend`.
    pub fn set(&mut self, id: u32, route: &ProbeRoute) -> Result<(), ProbePathError> {
        check_id(id)?;
        let family = if route.backend.is_ipv4() {
            FAMILY_V4
        } else {
            FAMILY_V6
        };
        let refuse = |reason: String| ProbePathError::Route {
            id,
            backend: route.backend,
            reason,
        };
        if route.backend.is_unspecified() || route.backend.is_multicast() {
            return Err(refuse("not a unicast address".into()));
        }
        if family == FAMILY_V6 && !self.ipv6 {
            return Err(refuse("this kernel has no IPv6".into()));
        }
        let outer_src = match route.encap {
            Encap::Ipip => match route.outer_source {
                Some(src) if src.is_ipv4() == route.backend.is_ipv4() => addr_bytes(src),
                Some(src) => {
                    return Err(refuse(format!(
                        "outer source {src} is not of the backend's family"
                    )));
                }
                None => {
                    return Err(refuse(format!(
                        "IPIP needs an outer source (set dataplane.ipip_source_{})",
                        if family == FAMILY_V4 { "v4" } else { "v6" }
                    )));
                }
            },
            Encap::L2 => [0; 16],
        };
        let value = ProbePath {
            backend: addr_bytes(route.backend),
            outer_src,
            family,
            encap: route.encap as u8,
            _pad: [0; 6],
        };
        self.paths
            .insert(id, value, 0)
            .map_err(|source| ProbePathError::Map {
                name: names::PROBE_PATHS,
                source,
            })
    }

    /// Forgets probe `id`'s path: its packets are dropped from now on.
    /// Removing an id that has no path is no error.
    pub fn remove(&mut self, id: u32) -> Result<(), ProbePathError> {
        check_id(id)?;
        match self.paths.remove(&id) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(source) => Err(ProbePathError::Map {
                name: names::PROBE_PATHS,
                source,
            }),
        }
    }

    /// The mark for probe `id`'s socket (`SO_MARK`): the tag and the id.
    pub fn mark(&self, id: u32) -> u32 {
        self.settings.mark | (id & PROBE_ID_MASK)
    }

    /// Removes the rules, the routes and the device (with its program).
    pub fn close(mut self) -> Result<(), ProbePathError> {
        remove_rules(&mut self.chan, &self.settings)?;
        for (family, name) in FAMILIES {
            if family == AddressFamily::Inet6 && !self.ipv6 {
                continue;
            }
            let route = default_route(&self.settings, self.ifindex, family);
            match self
                .chan
                .request(RouteNetlinkMessage::DelRoute(route), 0, false)
            {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                Err(source) => return Err(table_error(&self.settings, name, "removing", source)),
            }
        }
        let device = self.settings.device.clone();
        remove_device(&mut self.chan, &device)
    }

    pub fn settings(&self) -> &PathSettings {
        &self.settings
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// `dummy`, or `ifb` on a kernel without the dummy driver.
    pub fn device_kind(&self) -> &'static str {
        self.kind
    }

    /// The loaded program (tests run frames through it).
    pub fn program(&self) -> &SchedClassifier {
        self.ebpf
            .program(PROBE_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in ProbePaths::open")
    }

    /// Packets per outcome, summed over CPUs.
    pub fn count(&self, outcome: ProbeOutcome) -> Result<u64, ProbePathError> {
        let values =
            self.stats
                .get(&(outcome as u32), 0)
                .map_err(|source| ProbePathError::Map {
                    name: names::PROBE_STATS,
                    source,
                })?;
        Ok(values.iter().sum())
    }
}

/// What `open` makes once the device exists.
struct Parts {
    ifindex: u32,
    ipv6: bool,
    paths: HashMap<MapData, u32, ProbePath>,
    stats: PerCpuArray<MapData, u64>,
    ebpf: Ebpf,
}

/// The new device configured and up, the program on its egress, the
/// routes and rules in place.
fn set_up(chan: &mut Channel, settings: &PathSettings) -> Result<Parts, ProbePathError> {
    let dev = settings.device.as_str();
    let device_error = |action, source| ProbePathError::Device {
        device: dev.into(),
        action,
        source,
    };
    let ifindex = link_index(chan, dev)?
        .ok_or_else(|| device_error("finding the new", io::ErrorKind::NotFound.into()))?;
    // No link-local address: the device would otherwise send MLD and
    // router solicitations, counted as packets without a path.
    let ipv6 = match set_link(
        chan,
        ifindex,
        LinkFlags::empty(),
        vec![LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )])],
    ) {
        Ok(()) => true,
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => false,
        Err(source) => {
            return Err(device_error(
                "turning off IPv6 address generation on",
                source,
            ));
        }
    };
    forwarding(dev, "ipv4")?;
    if ipv6 {
        forwarding(dev, "ipv6")?;
    }
    set_link(chan, ifindex, LinkFlags::Up, Vec::new())
        .map_err(|source| device_error("bringing up", source))?;

    let mut ebpf = EbpfLoader::new().load(objects::PROBE)?;
    let program = |source| ProbePathError::Program {
        device: dev.into(),
        source,
    };
    let prog: &mut SchedClassifier = ebpf
        .program_mut(PROBE_PROGRAM)
        .ok_or(ProbePathError::Missing(PROBE_PROGRAM))?
        .try_into()
        .map_err(program)?;
    prog.load().map_err(program)?;
    // Needed before Linux 6.6, where aya attaches through netlink (a tcx
    // link from 6.6 on needs none, and is not hindered by one).
    match tc::qdisc_add_clsact(dev) {
        Ok(()) | Err(tc::TcError::AlreadyAttached) => {}
        Err(source) => {
            return Err(ProbePathError::Qdisc {
                device: dev.into(),
                source,
            });
        }
    }
    prog.attach(dev, TcAttachType::Egress).map_err(program)?;
    let map = |ebpf: &mut Ebpf, name: &'static str| {
        ebpf.take_map(name).ok_or(ProbePathError::Missing(name))
    };
    let map_error = |name| move |source| ProbePathError::Map { name, source };
    let paths = HashMap::try_from(map(&mut ebpf, names::PROBE_PATHS)?)
        .map_err(map_error(names::PROBE_PATHS))?;
    let stats = PerCpuArray::try_from(map(&mut ebpf, names::PROBE_STATS)?)
        .map_err(map_error(names::PROBE_STATS))?;

    for (family, name) in FAMILIES {
        if family == AddressFamily::Inet6 && !ipv6 {
            continue;
        }
        chan.request(
            RouteNetlinkMessage::NewRoute(default_route(settings, ifindex, family)),
            NLM_F_CREATE | NLM_F_REPLACE,
            false,
        )
        .map_err(|source| table_error(settings, name, "adding", source))?;
        chan.request(
            RouteNetlinkMessage::NewRule(rule(settings, family)),
            NLM_F_CREATE | NLM_F_EXCL,
            false,
        )
        .map_err(|source| rule_error(settings, name, "adding", source))?;
    }
    Ok(Parts {
        ifindex,
        ipv6,
        paths,
        stats,
        ebpf,
    })
}

fn default_route(settings: &PathSettings, ifindex: u32, family: AddressFamily) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family;
    m.header.destination_prefix_length = 0;
    m.header.table = short_table(settings.table);
    m.header.protocol = RouteProtocol::Other(RTPROT_XLB);
    m.header.scope = RouteScope::Link;
    m.header.kind = RouteType::Unicast;
    m.attributes = vec![
        RouteAttribute::Table(settings.table),
        RouteAttribute::Oif(ifindex),
    ];
    m
}

fn table_error(
    settings: &PathSettings,
    family: &'static str,
    action: &'static str,
    source: io::Error,
) -> ProbePathError {
    ProbePathError::Table {
        table: settings.table,
        device: settings.device.clone(),
        family,
        action,
        source,
    }
}

fn check_id(id: u32) -> Result<(), ProbePathError> {
    if id == 0 || id > PROBE_ID_MASK {
        return Err(ProbePathError::Id(id));
    }
    Ok(())
}

/// The header's 8-bit table field: the table itself when it fits,
/// `RT_TABLE_UNSPEC` otherwise (the 32-bit attribute says which), as
/// iproute2 does.
fn short_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(0)
}

fn rule(settings: &PathSettings, family: AddressFamily) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family;
    m.header.table = short_table(settings.table);
    m.header.action = RuleAction::ToTable;
    m.attributes = vec![
        RuleAttribute::Priority(settings.rule_priority),
        RuleAttribute::FwMark(settings.mark),
        RuleAttribute::FwMask(TAG_MASK),
        RuleAttribute::Table(settings.table),
        RuleAttribute::Protocol(RouteProtocol::Other(RTPROT_XLB)),
    ];
    m
}

fn rule_error(
    settings: &PathSettings,
    family: &'static str,
    action: &'static str,
    source: io::Error,
) -> ProbePathError {
    ProbePathError::Rule {
        mark: settings.mark,
        table: settings.table,
        priority: settings.rule_priority,
        family,
        action,
        source,
    }
}

/// Removes xlb's probe rules: those xlb made (protocol 177) that match the
/// tag's bits and carry this priority or this tag, so a leftover of a run
/// with other settings goes too, while rules of other software, and other
/// xlb rules, stay.
fn remove_rules(chan: &mut Channel, settings: &PathSettings) -> Result<(), ProbePathError> {
    for (family, name) in FAMILIES {
        let mut req = RuleMessage::default();
        req.header.family = family;
        let rules = match chan.request(RouteNetlinkMessage::GetRule(req), 0, true) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => continue,
            Err(source) => return Err(rule_error(settings, name, "listing rules for", source)),
        };
        for r in rules {
            let RouteNetlinkMessage::NewRule(m) = r else {
                continue;
            };
            let mut ours = false;
            let (mut prio, mut mark, mut mask) = (0, 0, 0);
            for a in &m.attributes {
                match a {
                    RuleAttribute::Protocol(RouteProtocol::Other(RTPROT_XLB)) => ours = true,
                    RuleAttribute::Priority(p) => prio = *p,
                    RuleAttribute::FwMark(v) => mark = *v,
                    RuleAttribute::FwMask(v) => mask = *v,
                    _ => {}
                }
            }
            if !ours
                || mask != TAG_MASK
                || (prio != settings.rule_priority && mark != settings.mark)
            {
                continue;
            }
            match chan.request(RouteNetlinkMessage::DelRule(m), 0, false) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(source) => return Err(rule_error(settings, name, "removing", source)),
            }
        }
    }
    Ok(())
}

/// The index and kind of interface `name`, if it exists.
fn link(chan: &mut Channel, name: &str) -> io::Result<Option<(u32, Option<InfoKind>)>> {
    let mut req = LinkMessage::default();
    req.attributes.push(LinkAttribute::IfName(name.into()));
    let replies = match chan.request(RouteNetlinkMessage::GetLink(req), 0, false) {
        Ok(r) => r,
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(replies.into_iter().find_map(|r| match r {
        RouteNetlinkMessage::NewLink(m) => {
            let kind = m.attributes.iter().find_map(|a| match a {
                LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.clone()),
                    _ => None,
                }),
                _ => None,
            });
            Some((m.header.index, kind))
        }
        _ => None,
    }))
}

fn link_index(chan: &mut Channel, name: &str) -> Result<Option<u32>, ProbePathError> {
    link(chan, name)
        .map(|l| l.map(|(index, _)| index))
        .map_err(|source| ProbePathError::Device {
            device: name.into(),
            action: "looking up",
            source,
        })
}

/// Removes the probe device left by an earlier run (with the routes
/// through it and a netlink-attached program), if there is one. A device
/// of that name of another kind is someone else's and stays.
fn remove_device(chan: &mut Channel, name: &str) -> Result<(), ProbePathError> {
    let found = link(chan, name).map_err(|source| ProbePathError::Device {
        device: name.into(),
        action: "looking up",
        source,
    })?;
    let Some((index, kind)) = found else {
        return Ok(());
    };
    match kind {
        Some(InfoKind::Dummy | InfoKind::Ifb) => {}
        other => {
            return Err(ProbePathError::NotOurs {
                device: name.into(),
                kind: other.map_or_else(|| "kind-less".into(), |k| k.to_string()),
            });
        }
    }
    let mut m = LinkMessage::default();
    m.header.index = index;
    match chan.request(RouteNetlinkMessage::DelLink(m), 0, false) {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
        Err(source) => Err(ProbePathError::Device {
            device: name.into(),
            action: "removing",
            source,
        }),
    }
}

/// Creates the device down: a `dummy`, or an `ifb` where the kernel has no
/// dummy driver (and cannot load its module). Both are Ethernet devices
/// with NOARP whose transmit drops what reaches it; the program runs
/// before that.
fn create_device(chan: &mut Channel, name: &str) -> Result<&'static str, ProbePathError> {
    let mut last = None;
    for (kind, label) in [(InfoKind::Dummy, "dummy"), (InfoKind::Ifb, "ifb")] {
        let mut m = LinkMessage::default();
        m.header.flags = LinkFlags::Noarp;
        m.header.change_mask = LinkFlags::Noarp;
        m.attributes = vec![
            LinkAttribute::IfName(name.into()),
            LinkAttribute::Mtu(DEVICE_MTU),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]),
        ];
        match chan.request(
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
            false,
        ) {
            Ok(_) => return Ok(label),
            // "Unknown device type": no such driver in this kernel.
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => last = Some(e),
            Err(source) => {
                return Err(ProbePathError::Device {
                    device: name.into(),
                    action: "creating",
                    source,
                });
            }
        }
    }
    Err(ProbePathError::Device {
        device: name.into(),
        action: "creating (the kernel has neither the dummy nor the ifb driver)",
        source: last.unwrap_or_else(|| io::ErrorKind::Unsupported.into()),
    })
}

fn set_link(
    chan: &mut Channel,
    index: u32,
    flags: LinkFlags,
    attributes: Vec<LinkAttribute>,
) -> io::Result<()> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.flags = flags;
    m.header.change_mask = flags;
    m.attributes = attributes;
    chan.request(RouteNetlinkMessage::SetLink(m), 0, false)
        .map(drop)
}

/// `net.<family>.conf.<device>.forwarding = 1`: `bpf_fib_lookup` answers
/// only for an input interface that forwards, and the program looks up
/// from the probe device.
fn forwarding(device: &str, family: &str) -> Result<(), ProbePathError> {
    let path = format!("/proc/sys/net/{family}/conf/{device}/forwarding");
    std::fs::write(&path, "1").map_err(|source| ProbePathError::Sysctl { path, source })
}

/// Opens a TCP connection from `source` (an address of this node) to
/// `target` with `SO_MARK = mark` (`ProbePaths::mark`), failing with
/// `TimedOut` after `timeout`. The socket belongs to the calling thread's
/// network namespace.
pub async fn connect_marked(
    source: IpAddr,
    target: SocketAddr,
    mark: u32,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    set_mark(&socket, mark)?;
    socket.bind(SocketAddr::new(source, 0))?;
    match tokio::time::timeout(timeout, socket.connect(target)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "connecting from {source} to {target} (mark {mark:#x}): no answer in {timeout:?}"
            ),
        )),
    }
}

/// `setsockopt(SO_MARK)`, which needs CAP_NET_ADMIN.
pub fn set_mark(socket: &impl std::os::fd::AsRawFd, mark: u32) -> io::Result<()> {
    // SAFETY: a valid fd and a pointer to a u32 of the length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&raw const mark).cast(),
            size_of::<u32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        assert!(PathSettings::default().validate().is_ok());
        for bad in [
            PathSettings {
                mark: 0,
                ..PathSettings::default()
            },
            PathSettings {
                mark: 0x5800_0001,
                ..PathSettings::default()
            },
            PathSettings {
                table: 254,
                ..PathSettings::default()
            },
            PathSettings {
                table: 0,
                ..PathSettings::default()
            },
            PathSettings {
                rule_priority: 0,
                ..PathSettings::default()
            },
            PathSettings {
                device: "a-name-too-long-x".into(),
                ..PathSettings::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} passed");
        }
    }

    #[test]
    fn tables_beyond_255_go_in_the_attribute_only() {
        assert_eq!(short_table(88), 88);
        assert_eq!(short_table(1000), 0);
    }
}
