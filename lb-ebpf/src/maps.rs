//! The balancer's maps. BTF-defined so `bpftool map dump` prints field
//! names; sizes here are defaults that the loader overrides per config.

use aya_ebpf::{
    Global,
    bindings::BPF_F_MMAPABLE,
    btf_maps::{Array, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use lb_common::{
    Backend, Config, Counters, DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_IFACES,
    DEFAULT_MAX_OWNED, DEFAULT_MAX_VIPS, FlowKey, FlowValue, IFACES_LOW, Iface, Liveness, NextHop,
    Outcome, Owned, OwnedKey, VipInfo, VipKey,
};

/// Non-zero to log every verdict through aya-log (debugging only). Frozen
/// in `.rodata` like the table size: when zero the verifier proves the
/// logging branch dead and removes it, so the fast path does not pay for it.
#[unsafe(no_mangle)]
pub static XLB_LOG: Global<u8> = Global::new(0);

/// Benchmark instrumentation: a non-zero stage makes the program stop there
/// and return XDP_TX, so `xlb-bench` can time each stage of the real
/// program. Frozen `.rodata` like `XLB_LOG`: at 0 the verifier removes the
/// checks, and production loads never set it.
#[unsafe(no_mangle)]
pub static XLB_BENCH_STOP: Global<u8> = Global::new(0);

/// Stages for [`XLB_BENCH_STOP`].
pub mod stop {
    pub const PARSED: u8 = 1;
    /// Past the VIP filter, the MAC check, `vet`, the flow key built.
    pub const VETTED: u8 = 2;
    pub const BACKEND_CHOSEN: u8 = 3;
    pub const ROUTED: u8 = 4;
}

/// Whether the benchmark asked the program to stop at `stage`.
#[inline(always)]
pub fn bench_stop(stage: u8) -> bool {
    XLB_BENCH_STOP.load() == stage
}

#[btf_map]
pub static XLB_VIPS: HashMap<VipKey, VipInfo, { DEFAULT_MAX_VIPS as usize }> = HashMap::new();

#[btf_map]
pub static XLB_BACKENDS: Array<Backend, { DEFAULT_MAX_BACKENDS as usize }> = Array::new();

/// Every VIP's Maglev lookup table of backend ids, one after another: a
/// VIP's table is `VipInfo::maglev_size` slots from `maglev_start`. One
/// flat array, as in Katran: one lookup per new flow, no map-in-map. Two
/// slots per entry ([`lb_common::MAGLEV_SLOTS_PER_ENTRY`]): the kernel
/// spaces entries 8 bytes apart, and the tables are most of the balancer's
/// kernel memory. The loader sizes it; userspace writes tables through an
/// mmap (stores, not one update syscall per slot).
#[btf_map]
pub static XLB_MAGLEV: Array<[u32; 2], 1, { BPF_F_MMAPABLE as usize }> = Array::new();

/// The flow table: one LRU hash shared by all CPUs, so every CPU sees every
/// flow (an RSS change, or an ICMP error hashed to another queue, still
/// finds it; a per-CPU hash, Katran's choice, would lose flows whenever the
/// NIC moves them between queues). One common LRU list, not per-CPU lists
/// (`BPF_F_NO_COMMON_LRU`): measured, a new flow costs 100-200 ns less, and
/// per-CPU lists would split the capacity by the number of *possible*
/// CPUs, far more than the online ones on many cloud VMs.
#[btf_map]
pub static XLB_FLOWS: LruHashMap<FlowKey, FlowValue, { DEFAULT_FLOW_TABLE_SIZE as usize }> =
    LruHashMap::new();

/// The VIP filter: bit `vip_filter_hash(address) >> XLB_FILTER_SHIFT` is
/// set for every VIP address (set before the VIP appears, cleared after it
/// is gone). A clear bit lets non-VIP traffic go with one array read; a
/// set bit only means "look further". The loader sizes it.
/// Mmapable: the daemon sets and clears bits with plain stores.
#[btf_map]
pub static XLB_VIP_FILTER: Array<u64, 1024, { BPF_F_MMAPABLE as usize }> = Array::new();

/// 32 - log2(bits in `XLB_VIP_FILTER`), fixed at load time (frozen
/// `.rodata`, so the shift is a constant to the verifier).
#[unsafe(no_mangle)]
pub static XLB_FILTER_SHIFT: Global<u8> = Global::new(16);

/// The route epoch: cached routes (`XLB_NEXTHOPS`) looked up under another
/// one are looked up again. The daemon moves it (one store through an
/// mmap) on every route, neighbour or link change it is told of, and
/// periodically; the program reads no clock.
#[btf_map]
pub static XLB_ROUTE_EPOCH: Array<u64, 1, { BPF_F_MMAPABLE as usize }> = Array::new();

/// Per CPU, so an entry is only ever written by the CPU that reads it:
/// no torn MAC pairs, no cross-CPU cache-line traffic.
#[btf_map]
pub static XLB_NEXTHOPS: PerCpuArray<NextHop, { DEFAULT_MAX_BACKENDS as usize }> =
    PerCpuArray::new();

/// The interfaces the program runs on, by ifindex, with their MACs: only
/// frames addressed to the receiving interface's own MAC are balanced. The
/// daemon fills it as it attaches.
#[btf_map]
pub static XLB_IFACES: HashMap<u32, Iface, { DEFAULT_MAX_IFACES as usize }> = HashMap::new();

/// The same for ifindexes below `IFACES_LOW` (every interface but on hosts
/// that have created a thousand): an array read instead of a hash lookup.
#[btf_map]
pub static XLB_IFACES_LOW: Array<Iface, { IFACES_LOW as usize }> = Array::new();

#[btf_map]
pub static XLB_CONFIG: Array<Config, 1> = Array::new();

/// The addresses this node claims on its links: ARP requests and neighbour
/// solicitations for them are answered here (`neighbour`). Only the VIP's
/// elected announcer fills it; the kernel never holds these addresses.
#[btf_map]
pub static XLB_OWNED: HashMap<OwnedKey, Owned, { DEFAULT_MAX_OWNED as usize }> = HashMap::new();

/// The daemon's heartbeat, which gates every answer for `XLB_OWNED`.
#[btf_map]
pub static XLB_LIVENESS: Array<Liveness, 1> = Array::new();

#[btf_map]
pub static XLB_STATS: PerCpuArray<u64, { Outcome::COUNT as usize }> = PerCpuArray::new();

#[btf_map]
pub static XLB_VIP_STATS: PerCpuArray<Counters, { DEFAULT_MAX_VIPS as usize }> = PerCpuArray::new();

#[btf_map]
pub static XLB_BE_STATS: PerCpuArray<Counters, { DEFAULT_MAX_BACKENDS as usize }> =
    PerCpuArray::new();

/// Adds one to a global outcome counter.
#[inline(always)]
pub fn count(outcome: Outcome) {
    if let Some(c) = XLB_STATS.get_ptr_mut(outcome as u32) {
        unsafe { *c += 1 };
    }
}

#[inline(always)]
pub fn add(counters: Option<*mut Counters>, bytes: u64) {
    if let Some(c) = counters {
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
