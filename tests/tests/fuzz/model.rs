//! What the oracle knows of the world: the VIPs the test configures, where
//! each backend's packets leave (from the lab's routes and neighbours), and
//! the flow hash and Maglev tables, written here from their definitions
//! (lb-common's hash.rs, lb-userspace's maglev.rs) rather than called, so
//! that a bug there shows up as a disagreement with this model.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb_common::{Encap, PROTO_TCP, PROTO_UDP};
use xlb_tests::lab::{GATEWAY_MAC, LB0_MAC, LB1_MAC, Vip, backend_mac};

pub(crate) const XDP_ABORTED: u32 = 0;
pub(crate) const XDP_DROP: u32 = 1;
pub(crate) const XDP_PASS: u32 = 2;
pub(crate) const XDP_TX: u32 = 3;
pub(crate) const XDP_REDIRECT: u32 = 4;

/// Maglev table size: prime and small, so the model builds it instantly.
pub(crate) const MAGLEV_SIZE: u32 = 1021;
/// MTU of the lab's veth interfaces (the kernel's default).
pub(crate) const MTU: usize = 1500;

/// The 5-tuple of a client flow towards a VIP, addresses in the maps'
/// 16-byte form (IPv4 in the first four bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Tuple {
    pub(crate) src: [u8; 16],
    pub(crate) dst: [u8; 16],
    pub(crate) sport: u16,
    pub(crate) dport: u16,
    pub(crate) proto: u8,
}

/// Where packets to one backend address leave the lab's balancer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hop {
    pub(crate) action: u32,
    pub(crate) smac: [u8; 6],
    pub(crate) dmac: [u8; 6],
    /// On a connected network (an `l2` VIP may use it).
    pub(crate) direct: bool,
}

pub(crate) struct Model {
    pub(crate) vips: Vec<Vip>,
    /// Per VIP (same index), each Maglev slot's index into its backends.
    tables: Vec<Vec<usize>>,
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(net: u16, host: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(net, 0, 0, 0, 0, 0, 0, host))
}

/// VIP addresses of the fuzz configuration.
pub(crate) const VIP4_A: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 1);
pub(crate) const VIP4_B: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 2);
pub(crate) const VIP6_A: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);
pub(crate) const VIP6_B: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 2);

/// The addresses `lab::claim_owned` claims: the program answers ARP and
/// neighbour solicitations for these (one v6 is also a VIP, the v4 is not,
/// so ownership is tested apart from the VIP map).
pub(crate) const OWNED_V4: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
pub(crate) const OWNED_V6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1);

/// v4 and v6, TCP and UDP, exact ports and port-0 wildcards (with an exact
/// port on a wildcard address, which must win), ipip and l2, backends on
/// lb0 (XDP_TX), on lb1 (XDP_REDIRECT) and behind the gateway, weights.
fn fuzz_vips() -> Vec<Vip> {
    use Encap::{Ipip, L2};
    let a4 = IpAddr::V4(VIP4_A);
    let b4 = IpAddr::V4(VIP4_B);
    let a6 = IpAddr::V6(VIP6_A);
    let b6 = IpAddr::V6(VIP6_B);
    let mut next_id = 0;
    let mut vip = |id: u32, addr, port, proto, encap, backends: &[(IpAddr, u32)]| Vip {
        id,
        addr,
        port,
        proto,
        encap,
        backends: backends
            .iter()
            .map(|&(a, w)| {
                next_id += 1;
                (next_id, a, w)
            })
            .collect(),
    };
    let lb0 = |h| v4(10, 0, 0, h);
    let lb0_6 = |h| v6(0xfd00, h);
    vec![
        vip(
            1,
            a4,
            80,
            PROTO_TCP,
            Ipip,
            &[
                (lb0(0x11), 1),
                (lb0(0x12), 1),
                (lb0(0x13), 1),
                (v4(10, 1, 0, 0x21), 1),
                (v4(10, 2, 0, 5), 1),
            ],
        ),
        vip(
            2,
            a4,
            53,
            PROTO_UDP,
            L2,
            &[(lb0(0x11), 1), (lb0(0x12), 1), (v4(10, 1, 0, 0x21), 1)],
        ),
        vip(3, b4, 0, PROTO_TCP, Ipip, &[(lb0(0x11), 1), (lb0(0x13), 1)]),
        vip(4, b4, 0, PROTO_UDP, Ipip, &[(lb0(0x12), 2), (lb0(0x13), 1)]),
        vip(5, b4, 443, PROTO_TCP, L2, &[(lb0(0x11), 1), (lb0(0x12), 1)]),
        vip(
            6,
            a6,
            80,
            PROTO_TCP,
            Ipip,
            &[
                (lb0_6(0x11), 1),
                (lb0_6(0x12), 1),
                (lb0_6(0x13), 1),
                (v6(0xfd01, 0x21), 1),
                (v6(0xfd02, 5), 1),
            ],
        ),
        vip(
            7,
            a6,
            53,
            PROTO_UDP,
            L2,
            &[(lb0_6(0x11), 1), (lb0_6(0x12), 1)],
        ),
        vip(
            8,
            b6,
            0,
            PROTO_TCP,
            Ipip,
            &[(lb0_6(0x13), 1), (v6(0xfd01, 0x21), 1)],
        ),
        vip(
            9,
            b6,
            0,
            PROTO_UDP,
            L2,
            &[(lb0_6(0x11), 3), (lb0_6(0x12), 1)],
        ),
    ]
}

impl Model {
    pub(crate) fn new() -> Self {
        let vips = fuzz_vips();
        for v in &vips {
            if v.encap == Encap::L2 {
                for &(_, a, _) in &v.backends {
                    assert!(
                        hop(a).direct,
                        "fuzz topology: l2 VIP {} has backend {a} behind a gateway",
                        v.addr
                    );
                }
            }
        }
        let tables = vips
            .iter()
            .map(|v| maglev(&v.backends, MAGLEV_SIZE))
            .collect();
        Self { vips, tables }
    }

    /// The VIP for (address, port, protocol): the exact port first, then
    /// the address's port-0 wildcard.
    pub(crate) fn lookup(&self, addr: &[u8; 16], v4: bool, port: u16, proto: u8) -> Option<usize> {
        let find = |port: u16| {
            self.vips.iter().position(|v| {
                v.port == port
                    && v.proto == proto
                    && v.addr.is_ipv4() == v4
                    && bytes(v.addr) == *addr
            })
        };
        find(port).or_else(|| if port != 0 { find(0) } else { None })
    }

    /// A wildcard VIP for (address, protocol), which claims any port.
    pub(crate) fn wildcard(&self, addr: &[u8; 16], v4: bool, proto: u8) -> Option<usize> {
        self.lookup(addr, v4, 0, proto)
    }

    /// Whether some VIP has this address (any port, any protocol).
    pub(crate) fn is_vip_address(&self, addr: &[u8; 16], v4: bool) -> bool {
        self.vips
            .iter()
            .any(|v| v.addr.is_ipv4() == v4 && bytes(v.addr) == *addr)
    }

    /// The backend Maglev gives this flow of VIP `vip` (index), with the
    /// flow hash.
    pub(crate) fn backend(&self, vip: usize, t: &Tuple) -> (IpAddr, u32) {
        let h = flow_hash(t);
        let slot = (h % MAGLEV_SIZE) as usize;
        (self.vips[vip].backends[self.tables[vip][slot]].1, h)
    }
}

/// The 16-byte map form of an address.
pub(crate) fn bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

/// Where the lab routes each backend address (see `xlb_tests::lab`).
pub(crate) fn hop(backend: IpAddr) -> Hop {
    let (net, host) = match backend {
        IpAddr::V4(a) => {
            let o = a.octets();
            (o[1], if o[1] == 2 { 0 } else { u16::from(o[3]) })
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            ((s[0] & 0xff) as u8, if s[0] == 0xfd02 { 0 } else { s[7] })
        }
    };
    match net {
        0 => Hop {
            action: XDP_TX,
            smac: LB0_MAC,
            dmac: backend_mac(0, host as u8),
            direct: true,
        },
        1 => Hop {
            action: XDP_REDIRECT,
            smac: LB1_MAC,
            dmac: backend_mac(1, host as u8),
            direct: true,
        },
        _ => Hop {
            action: XDP_TX,
            smac: LB0_MAC,
            dmac: GATEWAY_MAC,
            direct: false,
        },
    }
}

// MurmurHash3 (x86, 32-bit) over the flow key's ten little-endian words,
// as lb-common's hash.rs defines the flow hash.
const SEED_FLOW: u32 = 0x786c_6231;
const SEED_MAGLEV_OFFSET: u32 = 0x6f66_6673;
const SEED_MAGLEV_SKIP: u32 = 0x736b_6970;

fn murmur3(seed: u32, words: &[u32]) -> u32 {
    let mut h = seed;
    for &w in words {
        let k = w
            .wrapping_mul(0xcc9e_2d51)
            .rotate_left(15)
            .wrapping_mul(0x1b87_3593);
        h = (h ^ k)
            .rotate_left(13)
            .wrapping_mul(5)
            .wrapping_add(0xe654_6b64);
    }
    h ^= (words.len() * 4) as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

fn le_words(b: &[u8; 16]) -> [u32; 4] {
    std::array::from_fn(|i| {
        u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]])
    })
}

pub(crate) fn flow_hash(t: &Tuple) -> u32 {
    let mut w = [0u32; 10];
    w[..4].copy_from_slice(&le_words(&t.src));
    w[4..8].copy_from_slice(&le_words(&t.dst));
    w[8] = (u32::from(t.sport) << 16) | u32::from(t.dport);
    w[9] = u32::from(t.proto);
    murmur3(SEED_FLOW, &w)
}

/// The outer IPv6 flow label (docs/architecture.md): the client address's
/// four little-endian words, the VIP's last, and the ports word, XORed;
/// times 0x9e3779b1; the top 20 bits.
pub(crate) fn flow_label(t: &Tuple) -> u32 {
    let s = le_words(&t.src);
    let d = le_words(&t.dst);
    let ports = (u32::from(t.sport) << 16) | u32::from(t.dport);
    (s[0] ^ s[1] ^ s[2] ^ s[3] ^ d[3] ^ ports).wrapping_mul(0x9e37_79b1) >> 12
}

/// Weighted Maglev (the paper's population loop; a backend of weight w
/// takes w turns per `max weight` of credit). Backends visit in address
/// order, so the table does not depend on the config's order.
fn maglev(backends: &[(u32, IpAddr, u32)], m: u32) -> Vec<usize> {
    let m = u64::from(m);
    let mut order: Vec<usize> = (0..backends.len()).filter(|&i| backends[i].2 > 0).collect();
    assert!(!order.is_empty(), "fuzz VIPs all have backends");
    order.sort_by_key(|&i| (bytes(backends[i].1), backends[i].2));
    let top = order
        .iter()
        .map(|&i| u64::from(backends[i].2))
        .max()
        .unwrap_or(1);
    // (offset, skip, next step, credit) per backend in `order`.
    let mut walk: Vec<(u64, u64, u64, u64)> = order
        .iter()
        .map(|&i| {
            let w = le_words(&bytes(backends[i].1));
            (
                u64::from(murmur3(SEED_MAGLEV_OFFSET, &w)) % m,
                u64::from(murmur3(SEED_MAGLEV_SKIP, &w)) % (m - 1) + 1,
                0,
                0,
            )
        })
        .collect();
    let mut table: Vec<Option<usize>> = vec![None; m as usize];
    let mut left = m;
    while left > 0 {
        for (k, &i) in order.iter().enumerate() {
            let (offset, skip, next, credit) = &mut walk[k];
            *credit += u64::from(backends[i].2);
            while *credit >= top && left > 0 {
                *credit -= top;
                loop {
                    let slot = ((*offset + *next * *skip) % m) as usize;
                    *next += 1;
                    if table[slot].is_none() {
                        table[slot] = Some(i);
                        left -= 1;
                        break;
                    }
                }
            }
            if left == 0 {
                break;
            }
        }
    }
    table
        .into_iter()
        .map(|s| s.expect("every slot filled"))
        .collect()
}

/// The model's Maglev spreads slots as Maglev must: every backend holds
/// some, equal weights within one slot of each other, weight 3 about three
/// times weight 1.
#[test]
fn model_maglev_spreads_by_weight() {
    let m = Model::new();
    for (v, table) in m.vips.iter().zip(&m.tables) {
        let mut counts = vec![0usize; v.backends.len()];
        for &s in table {
            counts[s] += 1;
        }
        let per_weight: Vec<f64> = counts
            .iter()
            .zip(&v.backends)
            .map(|(&c, b)| c as f64 / f64::from(b.2))
            .collect();
        let (lo, hi) = per_weight
            .iter()
            .fold((f64::MAX, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
        assert!(
            lo > 0.0 && hi - lo <= 0.02 * f64::from(MAGLEV_SIZE) + 1.0,
            "VIP {} {}: slots per weight {per_weight:?}",
            v.addr,
            v.port
        );
    }
}
