//! Layouts of the balancer's and decapsulator's maps.

use bytemuck::{Pod, Zeroable};

/// Address family tag stored in keys. Not `AF_INET`/`AF_INET6`: these values
/// read naturally in `bpftool` output.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Default largest Maglev table a VIP gets (prime), as in the Maglev
/// paper. Each VIP's own size is chosen from its backend count, up to this.
pub const DEFAULT_MAGLEV_SIZE: u32 = 65_537;
/// Maglev slots per element of `XLB_MAGLEV`: the kernel stores an array's
/// elements 8 bytes apart, so a u32 slot alone would waste half of each.
pub const MAGLEV_SLOTS_PER_ENTRY: u32 = 2;
/// Default capacity of the VIP map and of the per-VIP arrays.
pub const DEFAULT_MAX_VIPS: u32 = 64;
/// The most entries the kernel gives a BPF hash map (the VIP and owned
/// maps): `htab_map_alloc` rounds max_entries up to a power of two of
/// 16-byte buckets and refuses with E2BIG a bucket array whose size does
/// not fit in 32 bits, so 2^27 is the largest that loads (checked on 6.18
/// with `bpftool map create ... type hash ... flags 1`: 2^27 loads, 2^27 + 1
/// fails with E2BIG; 5.10's hashtab.c has the same check).
pub const MAX_HASH_ENTRIES: u32 = 1 << 27;
/// Default capacity of the backend array (id 0 is reserved for "none").
pub const DEFAULT_MAX_BACKENDS: u32 = 4096;
/// Capacity of the interface map (interfaces the program runs on).
pub const DEFAULT_MAX_IFACES: u32 = 64;
/// Interfaces with an ifindex below this are found by index in an array
/// (`XLB_IFACES_LOW`), a few nanoseconds; the others in the hash map.
pub const IFACES_LOW: u32 = 1024;
/// Default flow-table capacity.
pub const DEFAULT_FLOW_TABLE_SIZE: u32 = 1 << 20;

/// Backend id 0 is never assigned: a Maglev slot holding 0 means the VIP has
/// no backend to give a new flow.
pub const NO_BACKEND: u32 = 0;

/// Bytes added by IPv4-in-IPv4 and IPv6-in-IPv6 encapsulation.
pub const IPIP4_OVERHEAD: u16 = 20;
pub const IPIP6_OVERHEAD: u16 = 40;

/// Names of the maps (at most 15 bytes: the kernel's object-name limit) and
/// of their pins; the daemon, `xlb status` and the tests use these.
pub mod names {
    pub const VIPS: &str = "XLB_VIPS";
    pub const BACKENDS: &str = "XLB_BACKENDS";
    pub const MAGLEV: &str = "XLB_MAGLEV";
    pub const FLOWS: &str = "XLB_FLOWS";
    pub const CONFIG: &str = "XLB_CONFIG";
    pub const STATS: &str = "XLB_STATS";
    pub const VIP_STATS: &str = "XLB_VIP_STATS";
    pub const BACKEND_STATS: &str = "XLB_BE_STATS";
    pub const NEXTHOPS: &str = "XLB_NEXTHOPS";
    pub const IFACES: &str = "XLB_IFACES";
    pub const IFACES_LOW: &str = "XLB_IFACES_LOW";
    pub const VIP_FILTER: &str = "XLB_VIP_FILTER";
    pub const ROUTE_EPOCH: &str = "XLB_ROUTE_EPOCH";
    pub const OWNED: &str = "XLB_OWNED";
    pub const LIVENESS: &str = "XLB_LIVENESS";
    pub const DECAP_VIPS: &str = "XLB_DECAP_VIPS";
    pub const DECAP_STATS: &str = "XLB_DECAP_STATS";
    pub const PROBE_PATHS: &str = "XLB_PROBE_PATHS";
    pub const PROBE_STATS: &str = "XLB_PROBE_STATS";
    /// Load-time constants (`.rodata`), set with `EbpfLoader::override_global`.
    pub const GLOBAL_LOG: &str = "XLB_LOG";
    pub const GLOBAL_BENCH_STOP: &str = "XLB_BENCH_STOP";
    pub const GLOBAL_FILTER_SHIFT: &str = "XLB_FILTER_SHIFT";
}

/// How a VIP's packets reach its backends.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encap {
    /// IPv4-in-IPv4 / IPv6-in-IPv6 to the backend's address.
    Ipip = 0,
    /// Destination MAC rewritten to the backend's; the IP packet is untouched.
    L2 = 1,
}

impl Encap {
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Ipip),
            1 => Some(Self::L2),
            _ => None,
        }
    }
}

/// Key of the VIP map. `port` 0 is the per-address wildcard.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Pod, Zeroable)]
pub struct VipKey {
    /// IPv4 in the first four bytes, the rest zero.
    pub addr: [u8; 16],
    /// Host byte order, so `bpftool` prints the port number.
    pub port: u16,
    pub proto: u8,
    pub family: u8,
}

/// Value of the VIP map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct VipInfo {
    /// Index into the per-VIP counters.
    pub vip_id: u32,
    /// An [`Encap`] value.
    pub encap: u8,
    pub _pad: [u8; 3],
    /// This incarnation of the VIP, see [`Backend::tag`].
    pub tag: u32,
    /// The VIP's Maglev table: `maglev_size` slots from slot
    /// `maglev_start` of `XLB_MAGLEV` (slot `i` is half `i % 2` of entry
    /// `i / 2`). Each VIP has its own size (prime), so the array holds the
    /// sum of the VIPs' tables, not the largest table for every VIP.
    pub maglev_start: u32,
    /// 0: no table (no new flow is balanced).
    pub maglev_size: u32,
}

/// The slot of the Maglev table a flow with hash `hash` takes in a table of
/// `size` slots (the program's choice; tests predict it with this).
#[inline(always)]
pub const fn maglev_slot(hash: u32, size: u32) -> u32 {
    hash % size
}

/// Value of the backend array, indexed by backend id. One entry per (VIP,
/// backend address): its counters are that VIP's traffic to that backend,
/// and `xlb status` reads the whole configuration back from the maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend {
    pub addr: [u8; 16],
    pub family: u8,
    /// [`BACKEND_ACTIVE`] when established flows may still use it. A draining
    /// backend stays active but is absent from every Maglev table.
    pub flags: u8,
    /// The VIP's [`Encap`]: an established flow is sent from its flow entry
    /// and this one, without a VIP lookup.
    pub encap: u8,
    pub _pad: u8,
    /// The VIP this entry serves (its counters, its Maglev row).
    pub vip_id: u32,
    /// Maglev weight (0: draining). Informational for the program.
    pub weight: u32,
    /// The incarnation of the VIP this entry serves, never reused by another
    /// (VIP ids and backend ids are): a flow-table hit is honoured only
    /// when its `tag` is this one, so an entry reused by another VIP, or a
    /// VIP removed and added again, never inherits old flows. Non-zero.
    pub tag: u32,
}

pub const BACKEND_ACTIVE: u8 = 1;

/// Key of the flow table: the client's 5-tuple towards the VIP. Aligned to
/// 8 so the flow hash reads it in whole words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host byte order.
    pub sport: u16,
    /// Host byte order.
    pub dport: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

/// Value of the flow table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FlowValue {
    pub backend_id: u32,
    /// The VIP the flow belongs to, so a daemon can count flows per VIP.
    pub vip_id: u32,
    /// The VIP's [`Backend::tag`] when the flow was created.
    pub tag: u32,
}

/// Per-CPU cache of the route to a backend, indexed by backend id: the
/// result of `bpf_fib_lookup`, reused while the route epoch is the one it
/// was looked up in, so the fast path pays for neither a FIB and neighbour
/// lookup nor a clock read on every packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NextHop {
    /// `XLB_ROUTE_EPOCH` when this was looked up: the daemon moves the
    /// epoch on every route, neighbour and link change and every
    /// `nexthop_ttl_ms`, and the entry is looked up again.
    pub epoch: u64,
    /// Interface the packets arrived on when this was looked up.
    pub in_ifindex: u32,
    /// Egress interface.
    pub out_ifindex: u32,
    /// Largest IP packet (after encapsulation) known to fit the egress MTU.
    pub fits: u16,
    /// 1 when the backend is on a connected network (no gateway between).
    pub direct: u8,
    pub _pad: u8,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub _pad2: [u8; 8],
}

/// Default period of the route epoch when nothing changes: the longest a
/// cached route lives, should a change go unnoticed.
pub const DEFAULT_NEXTHOP_TTL_NS: u64 = 100_000_000;

/// Single-entry array: settings the daemon may change while traffic flows.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Config {
    /// Outer source of IPv6-in-IPv6 packets. First: 8-byte aligned, as the
    /// program reads it in words.
    pub ipip_src_v6: [u8; 16],
    /// Outer source of IPv4-in-IPv4 packets (first four bytes, the rest
    /// zero, as every address field).
    pub ipip_src_v4: [u8; 16],
    /// [`LAYOUT_VERSION`] of the daemon that wrote the maps: a daemon adopts
    /// pinned maps only when it is its own.
    pub layout: u32,
    /// `CONFIG_*` bits.
    pub flags: u32,
}

/// Some VIP is a port-0 wildcard: only then does a miss on the exact
/// (address, port, protocol) key cost a second lookup. Non-VIP traffic is
/// spared a hash lookup on every packet when no wildcard is configured.
pub const CONFIG_WILDCARDS: u32 = 1;

/// Bumped whenever a map's layout or meaning changes: pinned maps written
/// under another version are replaced, never reinterpreted.
pub const LAYOUT_VERSION: u32 = 6;

/// Value of the interface maps, by ifindex: what the program needs of an
/// interface it runs on. Only frames to `mac` are balanced.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Iface {
    pub mac: [u8; 6],
    /// 1 for an interface the program runs on: the array's other entries
    /// are zero, and a frame to MAC 00:00:00:00:00:00 is not for us.
    pub present: u8,
    pub _pad: u8,
}

/// Per-CPU packet and byte counters (per VIP, per backend).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Counters {
    pub packets: u64,
    pub bytes: u64,
}

/// Key of the decapsulator's VIP set: an address the backend serves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct DecapKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 3],
}

/// Capacity of the owned-address map: the addresses this node answers ARP
/// and neighbour solicitations for (a VIP address counts once, whatever its
/// ports). Set by the loader to the VIP capacity.
pub const DEFAULT_MAX_OWNED: u32 = DEFAULT_MAX_VIPS;

/// Key of `XLB_OWNED`: an address this node claims on the link, in the
/// address layout of every key (IPv4 in the first four bytes). Aligned to
/// 8: the program builds it on its stack and moves the address as words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct OwnedKey {
    pub addr: [u8; 16],
    pub family: u8,
    pub _pad: [u8; 7],
}

/// Value of `XLB_OWNED`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Owned {
    /// The interface to answer on; 0 for every interface the balancer runs
    /// on.
    pub ifindex: u32,
    pub _pad: u32,
}

/// `XLB_LIVENESS`, one entry: the daemon's heartbeat. The program answers
/// for owned addresses only while `bpf_ktime_get_ns() - stamp_ns <
/// bound_ns`, so a daemon that died stops claiming its VIPs before another
/// node may take them over. `bound_ns == 0`: never answer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Liveness {
    /// CLOCK_MONOTONIC nanoseconds (the program's `bpf_ktime_get_ns`) of
    /// the daemon's last heartbeat.
    pub stamp_ns: u64,
    pub bound_ns: u64,
}

/// Health-check probes through the DSR path (`xlb-probe`, a tc egress
/// program on the probe device). A probe socket's mark is a tag in the
/// bits outside this mask, which a policy-routing rule matches to send the
/// packet to the probe device, and the probe's id in these bits, which
/// the program looks up in `XLB_PROBE_PATHS`.
pub const PROBE_ID_MASK: u32 = 0x00ff_ffff;
/// The default tag: an unassigned-looking top byte ('X'), so a probe's
/// mark is unlikely to collide with marks other software sets.
pub const DEFAULT_PROBE_MARK: u32 = 0x5800_0000;
/// Default capacity of `XLB_PROBE_PATHS`: one path per (VIP, backend)
/// being checked.
pub const DEFAULT_MAX_PROBES: u32 = 4096;

/// Value of `XLB_PROBE_PATHS`, keyed by probe id (`mark & PROBE_ID_MASK`):
/// where and how the probe's packets are sent, the way the balancer sends a
/// client's packets to that backend. Aligned to 8: the program moves the
/// addresses as words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct ProbePath {
    /// The backend (IPv4 in the first four bytes, the rest zero).
    pub backend: [u8; 16],
    /// Outer source of the IPIP header (the balancer's `ipip_source`);
    /// unused for [`Encap::L2`].
    pub outer_src: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`]: of the backend, the outer source and
    /// the probe's packets alike.
    pub family: u8,
    /// An [`Encap`] value.
    pub encap: u8,
    pub _pad: [u8; 6],
}

const _: () = {
    assert!(size_of::<ProbePath>() == 40);
    assert!(core::mem::offset_of!(ProbePath, outer_src) == 16);
    assert!(size_of::<OwnedKey>() == 24);
    assert!(size_of::<Owned>() == 8);
    assert!(size_of::<Liveness>() == 16);
    assert!(size_of::<VipKey>() == 20);
    assert!(size_of::<VipInfo>() == 20);
    assert!(size_of::<Backend>() == 32);
    assert!(size_of::<FlowKey>() == 40);
    assert!(size_of::<FlowValue>() == 12);
    // The program moves addresses as 64-bit words.
    assert!(core::mem::offset_of!(FlowKey, dst) == 16);
    assert!(core::mem::offset_of!(Backend, addr) == 0);
    assert!(core::mem::offset_of!(Config, ipip_src_v6) == 0);
    // The data-plane contract: a flow-table entry fits in a cache line.
    assert!(size_of::<FlowKey>() + size_of::<FlowValue>() <= 64);
    assert!(size_of::<Config>() == 40);
    assert!(size_of::<Counters>() == 16);
    assert!(size_of::<NextHop>() == 40);
    assert!(size_of::<DecapKey>() == 20);
    assert!(size_of::<Iface>() == 8);
};

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: each type is repr(C), padding-free (checked by bytemuck's Pod
    // derive), and valid for every bit pattern.
    unsafe impl aya::Pod for VipKey {}
    unsafe impl aya::Pod for VipInfo {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for FlowValue {}
    unsafe impl aya::Pod for Config {}
    unsafe impl aya::Pod for Counters {}
    unsafe impl aya::Pod for NextHop {}
    unsafe impl aya::Pod for DecapKey {}
    unsafe impl aya::Pod for Iface {}
    unsafe impl aya::Pod for OwnedKey {}
    unsafe impl aya::Pod for Owned {}
    unsafe impl aya::Pod for Liveness {}
    unsafe impl aya::Pod for ProbePath {}
}
