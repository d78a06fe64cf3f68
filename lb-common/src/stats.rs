//! What happened to a packet: the index of the global per-CPU counters.

/// The final outcome of one packet (exactly one per packet), followed by
/// events that are counted in addition to it (flow hit/miss, ICMP steering).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...).
    PassNotIp = 0,
    /// IP traffic for an address/port/protocol that is no VIP.
    PassNotVip,
    /// Truncated or inconsistent IP header (version, header or total length
    /// against the frame): left to the kernel, which drops them.
    PassMalformed,
    /// IPv6 whose next header is not TCP, UDP or ICMPv6 (extension headers,
    /// IPv6 fragments, tunnels): not parsed, left to the kernel.
    PassUnsupported,
    /// The next hop's MAC is not known yet. Dropped, not passed: the
    /// kernel, which owns no route to the VIP, would answer the client with
    /// "network unreachable" and fail its connection; dropped, the client
    /// retransmits once the daemon has had the neighbour resolved.
    DropNoNeigh,
    /// Sent back out of the receiving interface.
    Tx,
    /// Redirected to another interface.
    Redirect,
    /// An ICMP fragmentation-needed / packet-too-big was sent to the client.
    IcmpTooBigSent,
    /// IPv4 fragment addressed to a VIP (first fragments by their ports,
    /// later ones only through a port-0 wildcard VIP).
    DropFragment,
    /// The VIP has no backend for a new flow.
    DropNoBackend,
    /// The FIB has no forwarding route to the backend.
    DropNoRoute,
    /// IP forwarding is disabled on the receiving interface.
    DropFwdDisabled,
    /// `l2` VIP whose backend is not on a directly connected network.
    DropNotOnLink,
    /// The backend's address family differs from the VIP's.
    DropFamilyMismatch,
    /// Too big for the egress MTU and no ICMP can be sent for it (it is an
    /// ICMP error itself, or too short to quote).
    DropTooBig,
    /// A helper failed (adjust_head, map lookup): should never count.
    DropInternal,
    /// Established flow found in the flow table.
    FlowHit,
    /// New flow: backend chosen by Maglev.
    FlowMiss,
    /// An ICMP error quoting a VIP flow, forwarded to the flow's backend.
    IcmpErrorSteered,
    /// The destination MAC is not the receiving interface's own (another
    /// host's unicast, broadcast, multicast), or the interface is unknown to
    /// the program: not ours to route.
    PassOtherHost,
    /// 802.1Q / 802.1ad tagged: the kernel's VLAN device routes it.
    PassVlan,
    /// VIP traffic whose TCP, UDP or ICMP-error header is cut short by the
    /// IP length or inconsistent (TCP data offset, UDP length, quoted header).
    PassBadL4,
    /// IPv4 with options (IHL > 5) to a VIP.
    DropIpOptions,
    /// IPv4 header checksum wrong, on VIP traffic.
    DropBadChecksum,
    /// TTL / hop limit 0 on VIP traffic.
    DropTtlZero,
    /// Martian source address on VIP traffic (unspecified, loopback,
    /// multicast, reserved, v4-mapped, or the destination itself).
    DropMartian,
    /// IPv4 without DF too big for the egress MTU once encapsulated: XDP
    /// cannot fragment, and RFC 1191 sends frag-needed only for DF packets.
    DropTooBigNoDf,
    /// An ARP request for an owned VIP, answered (XDP_TX).
    ArpReplied,
    /// A neighbour solicitation for an owned VIP, answered with a
    /// neighbour advertisement (XDP_TX).
    NdpAdvertised,
    /// An ARP request or neighbour solicitation for an owned VIP while the
    /// daemon's heartbeat is older than the liveness bound: not answered,
    /// passed (the kernel, which does not have the address, ignores it).
    PassOwnerStale,
}

impl Outcome {
    pub const COUNT: u32 = Self::PassOwnerStale as u32 + 1;

    pub const ALL: [Outcome; Self::COUNT as usize] = [
        Self::PassNotIp,
        Self::PassNotVip,
        Self::PassMalformed,
        Self::PassUnsupported,
        Self::DropNoNeigh,
        Self::Tx,
        Self::Redirect,
        Self::IcmpTooBigSent,
        Self::DropFragment,
        Self::DropNoBackend,
        Self::DropNoRoute,
        Self::DropFwdDisabled,
        Self::DropNotOnLink,
        Self::DropFamilyMismatch,
        Self::DropTooBig,
        Self::DropInternal,
        Self::FlowHit,
        Self::FlowMiss,
        Self::IcmpErrorSteered,
        Self::PassOtherHost,
        Self::PassVlan,
        Self::PassBadL4,
        Self::DropIpOptions,
        Self::DropBadChecksum,
        Self::DropTtlZero,
        Self::DropMartian,
        Self::DropTooBigNoDf,
        Self::ArpReplied,
        Self::NdpAdvertised,
        Self::PassOwnerStale,
    ];

    /// Stable snake_case name, used for metric labels and `xlb status`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::PassNotIp => "pass_not_ip",
            Self::PassNotVip => "pass_not_vip",
            Self::PassMalformed => "pass_malformed",
            Self::PassUnsupported => "pass_unsupported",
            Self::DropNoNeigh => "drop_no_neigh",
            Self::Tx => "tx",
            Self::Redirect => "redirect",
            Self::IcmpTooBigSent => "icmp_too_big_sent",
            Self::DropFragment => "drop_fragment",
            Self::DropNoBackend => "drop_no_backend",
            Self::DropNoRoute => "drop_no_route",
            Self::DropFwdDisabled => "drop_fwd_disabled",
            Self::DropNotOnLink => "drop_not_on_link",
            Self::DropFamilyMismatch => "drop_family_mismatch",
            Self::DropTooBig => "drop_too_big",
            Self::DropInternal => "drop_internal",
            Self::FlowHit => "flow_hit",
            Self::FlowMiss => "flow_miss",
            Self::IcmpErrorSteered => "icmp_error_steered",
            Self::PassOtherHost => "pass_other_host",
            Self::PassVlan => "pass_vlan",
            Self::PassBadL4 => "pass_bad_l4",
            Self::DropIpOptions => "drop_ip_options",
            Self::DropBadChecksum => "drop_bad_checksum",
            Self::DropTtlZero => "drop_ttl_zero",
            Self::DropMartian => "drop_martian",
            Self::DropTooBigNoDf => "drop_too_big_no_df",
            Self::ArpReplied => "arp_replied",
            Self::NdpAdvertised => "ndp_advertised",
            Self::PassOwnerStale => "pass_owner_stale",
        }
    }
}

/// Outcomes of the decapsulator, indexing its per-CPU counter array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapOutcome {
    /// Not an IPIP packet for a local VIP: untouched.
    Pass = 0,
    /// Outer header stripped, inner packet passed up.
    Decapsulated,
    /// IPIP packet with a truncated inner header: left to the kernel.
    Malformed,
}

impl DecapOutcome {
    pub const COUNT: u32 = Self::Malformed as u32 + 1;
}

/// Outcomes of the probe-path program (`xlb-probe`), indexing its per-CPU
/// counter array `XLB_PROBE_STATS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// Encapsulated (IPv4-in-IPv4, IPv6-in-IPv6) and redirected towards
    /// the backend.
    Ipip = 0,
    /// Redirected unchanged to the backend's MAC.
    L2,
    /// The mark's id has no path: dropped (unmarked packets, the ids of
    /// removed paths).
    NoPath,
    /// Not an untagged IPv4/IPv6 frame whose IP lengths match the packet's.
    Malformed,
    /// The packet's family is not its path's.
    WrongFamily,
    /// No forwarding route to the backend (or forwarding disabled on the
    /// probe device, which `bpf_fib_lookup` needs as its input interface).
    NoRoute,
    /// An `l2` path whose backend is behind a gateway.
    NotOnLink,
    /// Larger than the egress MTU once encapsulated.
    TooBig,
    /// A helper failed (adjust_room, redirect): should never count.
    Internal,
}

impl ProbeOutcome {
    pub const COUNT: u32 = Self::Internal as u32 + 1;

    pub const ALL: [ProbeOutcome; Self::COUNT as usize] = [
        Self::Ipip,
        Self::L2,
        Self::NoPath,
        Self::Malformed,
        Self::WrongFamily,
        Self::NoRoute,
        Self::NotOnLink,
        Self::TooBig,
        Self::Internal,
    ];

    /// Stable snake_case name, for logs and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipip => "ipip",
            Self::L2 => "l2",
            Self::NoPath => "no_path",
            Self::Malformed => "malformed",
            Self::WrongFamily => "wrong_family",
            Self::NoRoute => "no_route",
            Self::NotOnLink => "not_on_link",
            Self::TooBig => "too_big",
            Self::Internal => "internal",
        }
    }

    /// Whether the packet left towards its backend.
    pub const fn redirected(self) -> bool {
        matches!(self, Self::Ipip | Self::L2)
    }
}
