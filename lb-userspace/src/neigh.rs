//! Keeps the kernel's neighbour entries for backends' next hops resolved.
//!
//! XDP cannot ARP or solicit: `bpf_fib_lookup` only reads the neighbour
//! table (an entry in a `NUD_VALID` state: reachable, stale, delay, probe,
//! permanent or noarp) and answers NO_NEIGH otherwise, and the packets it
//! forwards never refresh an entry. So the daemon does it, all over
//! rtnetlink, for IPv4 and IPv6 alike:
//!
//! - `RTM_GETROUTE` for each backend gives the route the kernel would use:
//!   its output interface and gateway. The neighbour `bpf_fib_lookup` needs
//!   is that gateway, or the backend itself when it is on a connected
//!   network. No route, or an `unreachable`/`prohibit`/`blackhole` one,
//!   makes the backend [`Unreachable`] (the data plane's `drop_no_route`).
//! - An empty datagram to the discard port (9) of one backend per next hop,
//!   sent through the stack, makes the kernel resolve that next hop (an
//!   absent or failed entry) or confirm it (a stale one) and mark it used,
//!   which keeps it from garbage collection. xlb never writes the table:
//!   `RTM_NEWNEIGH` with `NTF_USE` would do the same without a packet, but
//!   it is an administrative update that turns a permanent entry into a
//!   dynamic one and clears the flags of entries another control plane
//!   learned (`NTF_EXT_LEARNED`, `NTF_MANAGED`).
//! - [`resolve`] then waits for every next hop to be usable: it subscribes
//!   to neighbour notifications (`RTNLGRP_NEIGH`) before asking, dumps the
//!   table (`RTM_GETNEIGH`) after, and reads notifications until each next
//!   hop is usable or the deadline passes. A next hop still unresolved then
//!   is reported as not answering (the data plane's `drop_no_neigh`).
//!
//! [`touch`], every few seconds, reports a next hop whose entry the kernel
//! gave up on (`FAILED`) since the previous call: it must be called less
//! often than ARP/NDP takes to give up (3 probes 1 s apart by default).
//!
//! The requests are blocking netlink calls and run in `spawn_blocking`; the
//! notifications are read from a non-blocking socket on the runtime. Every
//! socket is opened on the calling thread, so they all belong to the
//! caller's network namespace whatever thread later uses them.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteMessage, RouteType, RouteVia},
};
use netlink_sys::constants::NETLINK_ROUTE;

use crate::netlink::{Channel, Notifications, groups};

/// Why the data plane cannot send a backend its flows from this node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unreachable {
    #[error("no route to it")]
    NoRoute,
    #[error("its route is an `unreachable` route")]
    UnreachableRoute,
    #[error("its route is a `prohibit` route")]
    Prohibited,
    #[error("its route is a `blackhole` route")]
    Blackhole,
    #[error("its route is of type {0}, not unicast")]
    NotUnicast(String),
    #[error("looking up its route failed: {}", io::Error::from_raw_os_error(*errno))]
    Lookup { errno: i32 },
    #[error("its next hop {next_hop} on {iface} does not answer ARP/NDP")]
    NoAnswer { next_hop: IpAddr, iface: String },
}

impl Unreachable {
    /// The data plane's counter that its dropped flows go to.
    pub fn counter(&self) -> &'static str {
        match self {
            Self::NoAnswer { .. } => "drop_no_neigh",
            _ => "drop_no_route",
        }
    }

    /// The reason for a failed `RTM_GETROUTE`: the errno the kernel gives
    /// each kind of refusal (`fib_props` for IPv4, `ip6_route_*` for IPv6).
    fn from_errno(errno: i32) -> Self {
        match errno {
            libc::ENETUNREACH => Self::NoRoute,
            libc::EHOSTUNREACH => Self::UnreachableRoute,
            libc::EACCES | libc::EPERM => Self::Prohibited,
            // A well-formed lookup fails this way only on a blackhole route.
            libc::EINVAL => Self::Blackhole,
            errno => Self::Lookup { errno },
        }
    }
}

/// A failure of the netlink conversation itself (not of one backend).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening an rtnetlink socket for neighbour resolution: {0}")]
    Open(io::Error),
    #[error("{what} over rtnetlink: {source}")]
    Netlink {
        what: &'static str,
        source: io::Error,
    },
    #[error("the neighbour resolution thread stopped: {0}")]
    Thread(#[from] tokio::task::JoinError),
}

fn netlink(what: &'static str) -> impl FnOnce(io::Error) -> Error {
    move |source| Error::Netlink { what, source }
}

/// The neighbour entry a backend's packets need: the next hop on the
/// route's output interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct NextHop {
    ifindex: u32,
    addr: IpAddr,
}

impl NextHop {
    fn unanswered(self) -> Unreachable {
        Unreachable::NoAnswer {
            next_hop: self.addr,
            iface: iface_name(self.ifindex),
        }
    }
}

/// What the route to a backend asks of the neighbour table.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// The address is this node's own: nothing to resolve.
    Local,
    Via(NextHop),
}

/// Reads the answer to `RTM_GETROUTE` for `dst`.
fn route_of(dst: IpAddr, m: &RouteMessage) -> Result<Route, Unreachable> {
    match m.header.kind {
        RouteType::Unicast => {}
        RouteType::Local => return Ok(Route::Local),
        RouteType::Unreachable => return Err(Unreachable::UnreachableRoute),
        RouteType::Prohibit => return Err(Unreachable::Prohibited),
        RouteType::BlackHole => return Err(Unreachable::Blackhole),
        kind => return Err(Unreachable::NotUnicast(format!("{kind:?}").to_lowercase())),
    }
    let mut ifindex = None;
    let mut gateway = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Oif(i) => ifindex = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(IpAddr::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => gateway = Some(IpAddr::V6(*g)),
            // An IPv4 route through an IPv6 gateway (RFC 5549).
            RouteAttribute::Via(RouteVia::Inet(g)) => gateway = Some(IpAddr::V4(*g)),
            RouteAttribute::Via(RouteVia::Inet6(g)) => gateway = Some(IpAddr::V6(*g)),
            _ => {}
        }
    }
    let ifindex = ifindex.ok_or(Unreachable::NoRoute)?;
    Ok(Route::Via(NextHop {
        ifindex,
        addr: gateway.unwrap_or(dst),
    }))
}

/// The next hop an `RTM_NEWNEIGH`/`RTM_DELNEIGH` entry is about.
fn entry_of(m: &NeighbourMessage) -> Option<NextHop> {
    let addr = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })?;
    Some(NextHop {
        ifindex: m.header.ifindex,
        addr,
    })
}

/// Whether `bpf_fib_lookup` uses an entry in this state (`NUD_VALID`).
fn usable(state: NeighbourState) -> bool {
    matches!(
        state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    )
}

/// The neighbour changes in one datagram from the notification socket: a
/// deleted entry counts as state `None`.
fn changes(data: &[u8]) -> Vec<(NextHop, NeighbourState)> {
    let mut out = Vec::new();
    for msg in crate::netlink::messages::<RouteNetlinkMessage>(data).map_while(Result::ok) {
        let (m, deleted) = match msg.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => (m, false),
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(m)) => (m, true),
            _ => continue,
        };
        if let Some(hop) = entry_of(&m) {
            let state = if deleted {
                NeighbourState::None
            } else {
                m.header.state
            };
            out.push((hop, state));
        }
    }
    out
}

fn family(addr: IpAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn iface_name(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname writes at most.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("interface index {ifindex}");
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Each backend's next hop, or why it has none.
#[derive(Debug, Default)]
struct Plan {
    hops: BTreeMap<IpAddr, NextHop>,
    unreachable: Vec<(IpAddr, Unreachable)>,
}

impl Plan {
    fn make(chan: &mut Channel, addrs: &[IpAddr]) -> Self {
        let mut plan = Self::default();
        for &dst in addrs {
            let mut req = RouteMessage::default();
            req.header.address_family = family(dst);
            req.header.destination_prefix_length = if dst.is_ipv4() { 32 } else { 128 };
            req.attributes = vec![RouteAttribute::Destination(dst.into())];
            let route = match chan.request(RouteNetlinkMessage::GetRoute(req), 0, false) {
                Ok(replies) => replies
                    .iter()
                    .find_map(|r| match r {
                        RouteNetlinkMessage::NewRoute(m) => Some(route_of(dst, m)),
                        _ => None,
                    })
                    .unwrap_or(Err(Unreachable::NoRoute)),
                Err(e) => Err(Unreachable::from_errno(e.raw_os_error().unwrap_or(0))),
            };
            match route {
                Ok(Route::Via(hop)) => {
                    plan.hops.insert(dst, hop);
                }
                Ok(Route::Local) => {}
                Err(why) => plan.unreachable.push((dst, why)),
            }
        }
        plan
    }

    fn next_hops(&self) -> BTreeSet<NextHop> {
        self.hops.values().copied().collect()
    }
}

/// UDP sockets to send the datagrams that make the kernel resolve next
/// hops, opened on the caller's thread (its network namespace).
struct Kick {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Kick {
    fn open() -> Self {
        // Either family may be missing on a node (IPv6 disabled); the other
        // family's backends are still served.
        Self {
            v4: UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok(),
            v6: UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0)).ok(),
        }
    }

    /// Sends one empty datagram to the discard port of one backend per
    /// next hop: the kernel resolves the next hop to send it, or confirms
    /// a stale entry, and marks the entry used. A send that fails leaves
    /// the next hop unresolved, which is what gets reported.
    fn send(&self, plan: &Plan) {
        let mut done = BTreeSet::new();
        for (addr, hop) in &plan.hops {
            if !done.insert(*hop) {
                continue;
            }
            let sock = if addr.is_ipv4() { &self.v4 } else { &self.v6 };
            let sent = sock
                .as_ref()
                .map(|s| s.send_to(&[], SocketAddr::new(*addr, 9)));
            if let Some(Err(e)) = sent {
                tracing::debug!(backend = %addr, next_hop = %hop.addr, "sending the datagram that resolves a next hop: {e}");
            }
        }
    }
}

/// The state of every IPv4 and IPv6 neighbour entry.
fn table(chan: &mut Channel) -> Result<BTreeMap<NextHop, NeighbourState>, Error> {
    let mut out = BTreeMap::new();
    for f in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut req = NeighbourMessage::default();
        req.header.family = f;
        let replies = chan
            .request(RouteNetlinkMessage::GetNeighbour(req), 0, true)
            .map_err(netlink("dumping the neighbour table"))?;
        for r in replies {
            if let RouteNetlinkMessage::NewNeighbour(m) = r
                && let Some(hop) = entry_of(&m)
            {
                out.insert(hop, m.header.state);
            }
        }
    }
    Ok(out)
}

fn open() -> Result<Channel, Error> {
    Channel::open(NETLINK_ROUTE).map_err(Error::Open)
}

/// Asks for every backend's next hop and waits until each one's entry is
/// usable by `bpf_fib_lookup`, or `deadline` has passed. Returns the
/// backends the data plane cannot send to: no route, or a next hop that
/// has not answered by then. Backends whose address is this node's own
/// need nothing. Never blocks a runtime worker.
pub async fn resolve(
    addrs: &[IpAddr],
    deadline: Duration,
) -> Result<Vec<(IpAddr, Unreachable)>, Error> {
    let end = tokio::time::Instant::now() + deadline;
    // Subscribed before asking, so no change after the dump is missed.
    let watch = Notifications::open(&[groups::NEIGH])
        .map_err(netlink("subscribing to neighbour changes"))?;
    let mut chan = open()?;
    let kick = Kick::open();
    let addrs = addrs.to_vec();
    let (mut chan, plan, mut known) = tokio::task::spawn_blocking(move || {
        let plan = Plan::make(&mut chan, &addrs);
        kick.send(&plan);
        let known = table(&mut chan)?;
        Ok::<_, Error>((chan, plan, known))
    })
    .await??;
    let mut waiting: BTreeSet<NextHop> = plan
        .next_hops()
        .into_iter()
        .filter(|h| !known.get(h).is_some_and(|s| usable(*s)))
        .collect();
    while !waiting.is_empty() {
        let Ok(got) = tokio::time::timeout_at(end, watch.next()).await else {
            break;
        };
        match got {
            Ok(data) => {
                for (hop, state) in changes(&data) {
                    if usable(state) {
                        waiting.remove(&hop);
                    }
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                let again;
                (chan, again) = tokio::task::spawn_blocking(move || {
                    let t = table(&mut chan);
                    (chan, t)
                })
                .await?;
                known = again?;
                waiting.retain(|h| !known.get(h).is_some_and(|s| usable(*s)));
            }
            Err(e) => return Err(netlink("reading neighbour changes")(e)),
        }
    }
    let mut unreachable = plan.unreachable;
    unreachable.extend(
        plan.hops
            .iter()
            .filter(|(_, h)| waiting.contains(h))
            .map(|(a, h)| (*a, h.unanswered())),
    );
    Ok(unreachable)
}

/// The periodic refresh: looks up every backend's route again, reports
/// those with none and those whose next hop failed to answer the previous
/// refresh, then asks the kernel to resolve or confirm every next hop (the
/// answers are for the next call). Does not wait for the network.
pub async fn touch(addrs: &[IpAddr]) -> Result<Vec<(IpAddr, Unreachable)>, Error> {
    let mut chan = open()?;
    let kick = Kick::open();
    let addrs = addrs.to_vec();
    tokio::task::spawn_blocking(move || {
        let plan = Plan::make(&mut chan, &addrs);
        // Read before asking again: a failed entry restarts on the kick.
        let known = table(&mut chan)?;
        kick.send(&plan);
        let mut unreachable = plan.unreachable;
        unreachable.extend(
            plan.hops
                .iter()
                .filter(|(_, h)| known.get(h) == Some(&NeighbourState::Failed))
                .map(|(a, h)| (*a, h.unanswered())),
        );
        Ok(unreachable)
    })
    .await?
}

/// Which backends are unreachable from this node, as last checked, so that
/// only changes are logged, not every check.
#[derive(Debug, Default)]
pub struct Reachability {
    unreachable: BTreeMap<IpAddr, Unreachable>,
}

impl Reachability {
    /// Takes the outcome of checking `checked` (from [`resolve`] or
    /// [`touch`]): logs each backend that became unreachable, or is for
    /// another reason, and each one reachable again. Backends not in
    /// `checked` keep their state.
    pub fn update(&mut self, checked: &[IpAddr], unreachable: Vec<(IpAddr, Unreachable)>) {
        let mut now: BTreeMap<IpAddr, Unreachable> = unreachable.into_iter().collect();
        for addr in checked {
            match (self.unreachable.remove(addr), now.remove(addr)) {
                (before, Some(why)) => {
                    if before.as_ref() != Some(&why) {
                        tracing::warn!(backend = %addr, "backend unreachable from this node ({why}): its new flows are dropped ({}); other backends and VIPs keep serving", why.counter());
                    }
                    self.unreachable.insert(*addr, why);
                }
                (Some(_), None) => tracing::info!(backend = %addr, "backend reachable again"),
                (None, None) => {}
            }
        }
    }

    /// Forgets backends that are no longer configured.
    pub fn retain(&mut self, backends: &[IpAddr]) {
        self.unreachable.retain(|a, _| backends.contains(a));
    }

    /// The unreachable backends and why.
    pub fn unreachable(&self) -> impl Iterator<Item = (&IpAddr, &Unreachable)> {
        self.unreachable.iter()
    }
}

/// Turns on IP forwarding for `iface` (both families): `bpf_fib_lookup`
/// refuses to route for an interface that does not forward.
pub fn enable_forwarding(iface: &str) -> std::io::Result<()> {
    for path in [
        format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"),
        format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"),
    ] {
        if std::fs::read_to_string(&path)?.trim() != "1" {
            std::fs::write(&path, "1")?;
            tracing::info!(%iface, "enabled IP forwarding ({path})");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use netlink_packet_core::{NetlinkHeader, NetlinkMessage};

    use super::*;

    const V4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5));
    const GW: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    const V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 5));

    fn route(kind: RouteType, attributes: Vec<RouteAttribute>) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.kind = kind;
        m.attributes = attributes;
        m
    }

    #[test]
    fn next_hop_is_the_gateway_or_else_the_backend() {
        let direct = route(RouteType::Unicast, vec![RouteAttribute::Oif(4)]);
        assert_eq!(
            route_of(V4, &direct),
            Ok(Route::Via(NextHop {
                ifindex: 4,
                addr: V4
            }))
        );
        let gw = route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 0, 0, 1))),
                RouteAttribute::Oif(7),
            ],
        );
        assert_eq!(
            route_of(V4, &gw),
            Ok(Route::Via(NextHop {
                ifindex: 7,
                addr: GW
            }))
        );
        let v6_gw = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        let via = route(
            RouteType::Unicast,
            vec![
                RouteAttribute::Oif(3),
                RouteAttribute::Via(RouteVia::Inet6(v6_gw)),
            ],
        );
        assert_eq!(
            route_of(V4, &via),
            Ok(Route::Via(NextHop {
                ifindex: 3,
                addr: IpAddr::V6(v6_gw)
            })),
            "an IPv4 route via an IPv6 gateway needs the gateway's NDP entry"
        );
    }

    #[test]
    fn route_types_that_do_not_forward_are_unreachable() {
        assert_eq!(
            route_of(V6, &route(RouteType::Local, vec![])),
            Ok(Route::Local)
        );
        for (kind, why) in [
            (RouteType::Unreachable, Unreachable::UnreachableRoute),
            (RouteType::Prohibit, Unreachable::Prohibited),
            (RouteType::BlackHole, Unreachable::Blackhole),
            (
                RouteType::Broadcast,
                Unreachable::NotUnicast("broadcast".into()),
            ),
        ] {
            assert_eq!(route_of(V4, &route(kind, vec![])), Err(why), "{kind:?}");
        }
        assert_eq!(
            route_of(V4, &route(RouteType::Unicast, vec![])),
            Err(Unreachable::NoRoute),
            "a unicast route without an output interface"
        );
    }

    #[test]
    fn lookup_errors_name_the_route() {
        assert_eq!(
            Unreachable::from_errno(libc::ENETUNREACH),
            Unreachable::NoRoute
        );
        assert_eq!(
            Unreachable::from_errno(libc::EHOSTUNREACH),
            Unreachable::UnreachableRoute
        );
        assert_eq!(
            Unreachable::from_errno(libc::EACCES),
            Unreachable::Prohibited
        );
        assert_eq!(
            Unreachable::from_errno(libc::EINVAL),
            Unreachable::Blackhole
        );
        let other = Unreachable::from_errno(libc::ENOMEM);
        assert_eq!(
            other,
            Unreachable::Lookup {
                errno: libc::ENOMEM
            }
        );
        assert!(other.to_string().contains("memory"), "{other}");
        assert_eq!(Unreachable::NoRoute.counter(), "drop_no_route");
        let no_answer = Unreachable::NoAnswer {
            next_hop: GW,
            iface: "eth1".into(),
        };
        assert_eq!(no_answer.counter(), "drop_no_neigh");
        assert_eq!(
            no_answer.to_string(),
            "its next hop 10.0.0.1 on eth1 does not answer ARP/NDP"
        );
    }

    #[test]
    fn usable_means_nud_valid() {
        for s in [
            NeighbourState::Reachable,
            NeighbourState::Stale,
            NeighbourState::Delay,
            NeighbourState::Probe,
            NeighbourState::Permanent,
            NeighbourState::Noarp,
        ] {
            assert!(usable(s), "{s}");
        }
        for s in [
            NeighbourState::Incomplete,
            NeighbourState::Failed,
            NeighbourState::None,
        ] {
            assert!(!usable(s), "{s}");
        }
    }

    fn wire(msgs: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in msgs {
            let mut msg = NetlinkMessage::new(NetlinkHeader::default(), m.into());
            msg.finalize();
            let mut buf = vec![0; msg.buffer_len()];
            msg.serialize(&mut buf);
            out.extend_from_slice(&buf);
            out.resize(out.len().next_multiple_of(4), 0);
        }
        out
    }

    fn neighbour(addr: IpAddr, ifindex: u32, state: NeighbourState) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = family(addr);
        m.header.ifindex = ifindex;
        m.header.state = state;
        m.attributes = vec![
            NeighbourAttribute::Destination(addr.into()),
            NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 1]),
        ];
        m
    }

    #[test]
    fn notifications_parse_into_next_hop_states() {
        let data = wire(vec![
            RouteNetlinkMessage::NewNeighbour(neighbour(V4, 2, NeighbourState::Reachable)),
            RouteNetlinkMessage::DelNeighbour(neighbour(V6, 3, NeighbourState::Stale)),
            RouteNetlinkMessage::NewRoute(RouteMessage::default()),
            RouteNetlinkMessage::NewNeighbour(neighbour(V6, 3, NeighbourState::Incomplete)),
        ]);
        assert_eq!(
            changes(&data),
            vec![
                (
                    NextHop {
                        ifindex: 2,
                        addr: V4
                    },
                    NeighbourState::Reachable
                ),
                (
                    NextHop {
                        ifindex: 3,
                        addr: V6
                    },
                    NeighbourState::None
                ),
                (
                    NextHop {
                        ifindex: 3,
                        addr: V6
                    },
                    NeighbourState::Incomplete
                ),
            ]
        );
        assert!(changes(&data[..7]).is_empty(), "a truncated datagram");
    }

    #[test]
    fn reachability_remembers_until_a_check_says_otherwise() {
        let mut r = Reachability::default();
        r.update(&[V4, V6], vec![(V4, Unreachable::NoRoute)]);
        assert_eq!(
            r.unreachable().collect::<Vec<_>>(),
            vec![(&V4, &Unreachable::NoRoute)]
        );
        // A check of other backends says nothing about V4.
        r.update(&[V6], vec![]);
        assert_eq!(r.unreachable().count(), 1);
        r.update(&[V4], vec![(V4, Unreachable::Blackhole)]);
        assert_eq!(
            r.unreachable().collect::<Vec<_>>(),
            vec![(&V4, &Unreachable::Blackhole)],
            "a new reason replaces the old"
        );
        r.update(&[V4, V6], vec![]);
        assert_eq!(r.unreachable().count(), 0);
        r.update(&[V6], vec![(V6, Unreachable::NoRoute)]);
        r.retain(&[V4]);
        assert_eq!(r.unreachable().count(), 0, "V6 is no longer a backend");
    }
}
