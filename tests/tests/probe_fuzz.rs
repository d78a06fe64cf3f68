//! Seeded property test of the probe-path program (`xlb-probe`, tc):
//! random, valid and mutated frames with random marks, pushed through the
//! real program with `BPF_PROG_TEST_RUN` as if leaving the probe device,
//! each judged by an oracle written here from the program's contract, not
//! from its code:
//!
//! - the action is TC_ACT_REDIRECT only when the mark's id has a path, the
//!   frame is an untagged IP packet of that path's family whose length
//!   fields match the frame, the backend has a route, the packet fits the
//!   egress MTU (encapsulated), and, for `l2`, the backend is on a
//!   connected network, whatever the packet's source address;
//!   TC_ACT_SHOT otherwise, and the counter of the reason the oracle
//!   expects is the one that moves (checked frame by frame);
//! - an IPIP redirect's output is the input with the destination MAC
//!   zeroed and exactly the outer header the balancer would write inserted
//!   after the MAC header (its checksum verified independently); an `l2`
//!   redirect's is the input with the destination MAC zeroed; the mark is
//!   cleared.
//!
//! `bpf_fib_lookup` answers from this test's namespace, whose routes and
//! permanent neighbours the oracle knows. `bpf_redirect_neigh` only records
//! its target in a test run, so the frame is judged as it would be sent.
//!
//! `XLB_SEED` sets the seed (printed; random otherwise), `XLB_FUZZ_FRAMES`
//! the number of frames.

// The balancer fuzzer's generator, shared (it also has what this one
// does not use).
#[allow(dead_code)]
#[path = "fuzz/rng.rs"]
mod rng;

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::programs::{TestRun as _, TestRunOptions};
use lb_common::{Encap, PROBE_ID_MASK, stats::ProbeOutcome};
use lb_userspace::health::path::{PathSettings, ProbePaths, ProbeRoute};
use xlb_tests::{
    netns::{NetNs, privileged},
    packet::{self, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6, V4, V6},
    rng::env_u64,
};

use crate::rng::Rng;

const DEFAULT_FRAMES: u64 = 200_000;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;
/// Offsets in `struct __sk_buff` (linux/bpf.h), stable since they were
/// added: the fields BPF_PROG_TEST_RUN takes in and gives back.
const SKB_MARK: usize = 8;
const SKB_IFINDEX: usize = 40;
/// The context passed in stops after `ifindex`; the kernel zero-fills the
/// rest. The one given back is the whole structure (192 bytes on 6.x).
const CTX_IN: usize = 44;
const CTX_OUT: usize = 256;
/// What fits the lab's egress (veth, MTU 1500) by the helper's rule: the
/// MTU plus the Ethernet header plus one VLAN tag (`is_skb_forwardable`).
const EGRESS_FRAME_MAX: usize = 1500 + 14 + 4;

const TAG: u32 = lb_common::DEFAULT_PROBE_MARK;
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x92, 0x99];
const DEV_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x92, 0x98];

const ROUTER4: Ipv4Addr = Ipv4Addr::new(10, 92, 0, 1);
const ROUTER6: Ipv6Addr = Ipv6Addr::new(0xfd92, 0, 0, 0, 0, 0, 0, 1);
const VIP4: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd99, 1, 0, 0, 0, 0, 0, 1);

/// A path of the lab, and what its backend is to the FIB.
#[derive(Clone, Copy, Debug)]
struct Path {
    id: u32,
    route: ProbeRoute,
    reach: Reach,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// On lab0's network, neighbour known.
    OnLink,
    /// Behind the gateway.
    ViaGateway,
    /// No route at all.
    None,
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(segs: [u16; 8]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(segs))
}

fn lab_paths() -> Vec<Path> {
    let r4 = Some(IpAddr::V4(ROUTER4));
    let r6 = Some(IpAddr::V6(ROUTER6));
    let p = |id, backend, outer_source, encap, reach| Path {
        id,
        route: ProbeRoute {
            backend,
            outer_source,
            encap,
        },
        reach,
    };
    use Encap::{Ipip, L2};
    use Reach::{None as Unrouted, OnLink, ViaGateway};
    vec![
        p(1, v4(10, 92, 0, 11), r4, Ipip, OnLink),
        p(2, v4(10, 92, 0, 12), r4, L2, OnLink),
        p(3, v6([0xfd92, 0, 0, 0, 0, 0, 0, 0x11]), r6, Ipip, OnLink),
        p(4, v6([0xfd92, 0, 0, 0, 0, 0, 0, 0x12]), r6, L2, OnLink),
        p(5, v4(10, 93, 0, 5), r4, Ipip, ViaGateway),
        p(6, v4(10, 93, 0, 6), r4, L2, ViaGateway),
        p(7, v6([0xfd93, 0, 0, 0, 0, 0, 0, 5]), r6, Ipip, ViaGateway),
        p(8, v6([0xfd93, 0, 0, 0, 0, 0, 0, 6]), r6, L2, ViaGateway),
        p(9, v4(192, 0, 2, 50), r4, Ipip, Unrouted),
        p(10, v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 50]), r6, L2, Unrouted),
        // The largest id, and a second outer source.
        p(
            PROBE_ID_MASK,
            v4(10, 92, 0, 13),
            Some(v4(10, 92, 0, 200)),
            Ipip,
            OnLink,
        ),
    ]
}

/// The namespace: lab0 (veth, up) on 10.92.0.0/24 and fd92::/64 with
/// permanent neighbours for the on-link backends and the gateway, which
/// leads to 10.93.0.0/24 and fd93::/64; nothing else is routed.
fn lab() -> NetNs {
    let ns = NetNs::new();
    ns.ip(&[
        "link", "add", "lab0", "type", "veth", "peer", "name", "lab1",
    ]);
    ns.ip(&["addr", "add", "10.92.0.1/24", "dev", "lab0"]);
    ns.ip(&["addr", "add", "fd92::1/64", "dev", "lab0", "nodad"]);
    ns.ip(&["link", "set", "lab0", "up"]);
    ns.ip(&["link", "set", "lab1", "up"]);
    let mut mac = 0x10;
    for addr in [
        "10.92.0.11",
        "10.92.0.12",
        "10.92.0.13",
        "10.92.0.254",
        "fd92::11",
        "fd92::12",
        "fd92::fe",
    ] {
        mac += 1;
        ns.ip(&[
            "neigh",
            "replace",
            addr,
            "lladdr",
            &format!("02:00:00:00:92:{mac:02x}"),
            "dev",
            "lab0",
            "nud",
            "permanent",
        ]);
    }
    ns.ip(&["route", "add", "10.93.0.0/24", "via", "10.92.0.254"]);
    ns.ip(&["-6", "route", "add", "fd93::/64", "via", "fd92::fe"]);
    ns
}

/// The probe path, opened in the current namespace, with `paths` set.
fn open(paths: &[Path]) -> ProbePaths {
    let mut probe = ProbePaths::open(&PathSettings::default()).expect("the probe path opens");
    for p in paths {
        probe.set(p.id, &p.route).unwrap();
    }
    probe
}

#[test]
fn fuzz_probe_path() {
    if !privileged("fuzz_probe_path") {
        return;
    }
    let frames = env_u64("XLB_FUZZ_FRAMES").unwrap_or(DEFAULT_FRAMES);
    let seed = xlb_tests::rng::seed();
    eprintln!("probe fuzz: seed {seed:#018x}, {frames} frames (replay: XLB_SEED={seed:#x})");
    let ns = lab();
    let paths = lab_paths();
    ns.run(|| {
        let probe = open(&paths);
        let before = counters(&probe);
        let mut fuzz = Fuzz::new(&paths, &probe);
        for index in 0..frames {
            let mut rng = Rng::for_frame(seed, index);
            let frame = generate(&mut rng);
            let mark = mark(&mut rng, &paths);
            fuzz.one(&probe, index, &frame, mark);
            assert!(
                fuzz.failures.len() < 20,
                "seed {seed:#x}: {}",
                fuzz.failures.join("\n")
            );
        }
        assert!(
            fuzz.failures.is_empty(),
            "seed {seed:#x}: {} frames judged wrong:\n{}",
            fuzz.failures.len(),
            fuzz.failures.join("\n")
        );
        // The program's own counters agree with the oracle's reasons.
        for (o, b) in ProbeOutcome::ALL.iter().zip(&before) {
            let got = probe.count(*o).unwrap() - b;
            let want = fuzz.expected.get(o.name()).copied().unwrap_or(0);
            assert_eq!(got, want, "seed {seed:#x}: counter {}", o.name());
        }
        eprintln!("probe fuzz: outcomes {:?}", fuzz.expected);
        // Every outcome but the impossible one was reached.
        for o in ProbeOutcome::ALL {
            if o != ProbeOutcome::Internal && frames >= 50_000 {
                assert!(
                    fuzz.expected.contains_key(o.name()),
                    "seed {seed:#x}: no frame ended {}",
                    o.name()
                );
            }
        }
        // IPIP without DF: the outer ID is random, non-zero (checked per
        // frame), and not one value.
        if frames >= 50_000 {
            assert!(
                fuzz.ipip4_ids.len() > 100,
                "{} outer IDs",
                fuzz.ipip4_ids.len()
            );
        }
        probe.close().unwrap();
    });
}

/// A frame with a named expectation.
struct Case {
    name: &'static str,
    mark: u32,
    frame: Vec<u8>,
    want: ProbeOutcome,
}

/// A TCP probe of `payload` bytes from `src` to the VIP of its family.
fn probe_frame(src: IpAddr, payload: usize) -> Vec<u8> {
    let data = vec![0x5a; payload];
    match src {
        IpAddr::V4(s) => {
            let l4 = packet::tcp(src, IpAddr::V4(VIP4), 40_000, 80, packet::TCP_SYN, &data);
            let ip = packet::ipv4(&V4::new(s, VIP4, 6), &l4);
            packet::eth(DEV_MAC, SRC_MAC, ETH_P_IP, &ip)
        }
        IpAddr::V6(s) => {
            let l4 = packet::tcp(src, IpAddr::V6(VIP6), 40_000, 80, packet::TCP_SYN, &data);
            let ip = packet::ipv6(&V6::new(s, VIP6, 6), &l4);
            packet::eth(DEV_MAC, SRC_MAC, ETH_P_IPV6, &ip)
        }
    }
}

/// Probes from sources no router forwards from (IPv6 multicast,
/// link-local, loopback, which `bpf_fib_lookup` refuses; their IPv4
/// likes, which it does not): the contract does not set them apart, so
/// each is redirected, or dropped for the reason, as from any source. The
/// first has the path and source of the frame the fuzzer found counted
/// `no_route` for `not_on_link` (seed 0x18ecbc5ebeb0776a, frame 147692,
/// before `mutate` wrote such sources on purpose).
fn source_cases() -> Vec<Case> {
    use ProbeOutcome::{Ipip, L2, NoRoute, NotOnLink, TooBig};
    // What ("gw": the backend is behind the gateway), path id (see
    // lab_paths), source, TCP payload bytes, outcome.
    let cases = [
        ("l2 gw, v6 multicast", 8, "ff92:dd:13::1", 1403, NotOnLink),
        ("l2 gw, v6 link-local", 8, "fe80::1", 10, NotOnLink),
        ("l2 gw, v6 loopback", 8, "::1", 10, NotOnLink),
        ("l2 on link, v6 multicast", 4, "ff02::1", 10, L2),
        ("l2 on link, v6 link-local", 4, "fe80::1", 10, L2),
        ("l2 on link, v6 loopback", 4, "::1", 10, L2),
        ("l2 on link, v6 unspecified", 4, "::", 10, L2),
        ("l2 on link, v6 link-local, big", 4, "fe80::1", 1460, TooBig),
        ("l2 unrouted, v6 link-local", 10, "fe80::1", 10, NoRoute),
        ("ipip, v6 multicast inner", 3, "ff02::1", 10, Ipip),
        ("l2 on link, v4 loopback", 2, "127.0.0.1", 10, L2),
        ("l2 on link, v4 multicast", 2, "224.0.0.1", 10, L2),
        ("l2 on link, v4 link-local", 2, "169.254.0.1", 10, L2),
        ("l2 on link, v4 unspecified", 2, "0.0.0.0", 10, L2),
        ("l2 gw, v4 broadcast", 6, "255.255.255.255", 10, NotOnLink),
    ];
    cases
        .into_iter()
        .map(|(name, id, src, payload, want)| Case {
            name,
            mark: TAG | id,
            frame: probe_frame(src.parse().unwrap(), payload),
            want,
        })
        .collect()
}

#[test]
fn probe_path_sources() {
    if !privileged("probe_path_sources") {
        return;
    }
    let ns = lab();
    let paths = lab_paths();
    ns.run(|| {
        let probe = open(&paths);
        let mut fuzz = Fuzz::new(&paths, &probe);
        for (index, case) in source_cases().iter().enumerate() {
            // The oracle first: the case says what the contract says.
            assert_eq!(
                judge(&paths, &case.frame, case.mark).outcome(),
                case.want,
                "{}: the oracle",
                case.name
            );
            let before = fuzz.failures.len();
            fuzz.one(&probe, index as u64, &case.frame, case.mark);
            for f in &mut fuzz.failures[before..] {
                *f = format!("{}: {f}", case.name);
            }
        }
        assert!(
            fuzz.failures.is_empty(),
            "{} cases judged wrong:\n{}",
            fuzz.failures.len(),
            fuzz.failures.join("\n")
        );
        probe.close().unwrap();
    });
}

struct Fuzz<'p> {
    paths: &'p [Path],
    ifindex: u32,
    /// Outcome name -> frames the oracle gave it.
    expected: BTreeMap<&'static str, u64>,
    /// Outer IPv4 IDs of DF-clear encapsulations.
    ipip4_ids: BTreeMap<u16, u64>,
    /// The program's counters after the last frame, in `ProbeOutcome`
    /// order.
    counters: Vec<u64>,
    failures: Vec<String>,
}

/// The program's counters, in `ProbeOutcome` order.
fn counters(probe: &ProbePaths) -> Vec<u64> {
    ProbeOutcome::ALL
        .iter()
        .map(|o| probe.count(*o).expect("the probe counters read"))
        .collect()
}

impl<'p> Fuzz<'p> {
    fn new(paths: &'p [Path], probe: &ProbePaths) -> Self {
        Self {
            paths,
            ifindex: probe.ifindex(),
            expected: BTreeMap::new(),
            ipip4_ids: BTreeMap::new(),
            counters: counters(probe),
            failures: Vec::new(),
        }
    }

    /// Whether this frame moved the counter of `want`, and by one: the
    /// reason of a drop is judged per frame, so a mismatch names its
    /// frame. One lookup when it did; all the counters, to say which
    /// moved, when it did not. (A second counter moving as well is left
    /// to the totals at the end.)
    fn counted(&mut self, probe: &ProbePaths, want: ProbeOutcome) -> Result<(), String> {
        let i = want as usize;
        let now = probe.count(want).expect("the probe counters read");
        if now == self.counters[i] + 1 {
            self.counters[i] = now;
            return Ok(());
        }
        let now = counters(probe);
        let moved: Vec<String> = ProbeOutcome::ALL
            .iter()
            .zip(now.iter().zip(&self.counters))
            .filter(|(_, (n, b))| n != b)
            .map(|(o, (n, b))| format!("{} +{}", o.name(), n - b))
            .collect();
        self.counters = now;
        Err(format!(
            "counted {}, want {} +1",
            if moved.is_empty() {
                "nothing".to_owned()
            } else {
                moved.join(", ")
            },
            want.name()
        ))
    }

    fn one(&mut self, probe: &ProbePaths, index: u64, frame: &[u8], mark: u32) {
        let prog = probe.program();
        let mut ctx = [0u8; CTX_IN];
        ctx[SKB_MARK..SKB_MARK + 4].copy_from_slice(&mark.to_ne_bytes());
        ctx[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&self.ifindex.to_ne_bytes());
        let mut out = vec![0u8; 4096];
        let mut ctx_out = [0u8; CTX_OUT];
        let r = match prog.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::new()
        }) {
            Ok(r) => r,
            // Recent kernels (and stable updates of older ones) refuse to
            // build an skb whose EtherType announces IP but whose header is
            // shorter than IP's; older ones hand it to the program.
            Err(e) if short_ip(frame) && is_einval(&e) => {
                *self.expected.entry("refused by the kernel").or_default() += 1;
                return;
            }
            Err(e) => panic!(
                "frame {index} (mark {mark:#x}): BPF_PROG_TEST_RUN: {e:?}\n  in {}",
                hex(frame)
            ),
        };
        out.truncate(r.data_size_out as usize);
        let out_mark = u32::from_ne_bytes(ctx_out[SKB_MARK..SKB_MARK + 4].try_into().unwrap());
        let expect = judge(self.paths, frame, mark);
        *self.expected.entry(expect.outcome().name()).or_default() += 1;
        let fail = |why: String| {
            format!(
                "frame {index} (mark {mark:#x}, {} bytes): {why}\n  in  {}\n  out {}",
                frame.len(),
                hex(frame),
                hex(&out)
            )
        };
        if let Err(why) = self.counted(probe, expect.outcome()) {
            self.failures.push(fail(why));
        }
        let action = r.return_value;
        match expect {
            Expect::Shot(o) => {
                if action != TC_ACT_SHOT {
                    self.failures
                        .push(fail(format!("action {action}, want SHOT ({})", o.name())));
                }
            }
            Expect::Ipip(path) => {
                if action != TC_ACT_REDIRECT {
                    self.failures
                        .push(fail(format!("action {action}, want REDIRECT (IPIP)")));
                    return;
                }
                if out_mark != 0 {
                    self.failures.push(fail(format!("mark {out_mark:#x} left")));
                }
                match check_ipip(frame, &out, &path.route) {
                    Ok(Some(id)) => *self.ipip4_ids.entry(id).or_default() += 1,
                    Ok(None) => {}
                    Err(why) => self.failures.push(fail(why)),
                }
            }
            Expect::L2 => {
                if action != TC_ACT_REDIRECT {
                    self.failures
                        .push(fail(format!("action {action}, want REDIRECT (l2)")));
                    return;
                }
                if out_mark != 0 {
                    self.failures.push(fail(format!("mark {out_mark:#x} left")));
                }
                let mut want = frame.to_vec();
                want[..6].fill(0);
                if out != want {
                    self.failures
                        .push(fail("l2: not the input with a zero destination MAC".into()));
                }
            }
        }
    }
}

/// An IPv4 or IPv6 EtherType followed by less than that header.
fn short_ip(frame: &[u8]) -> bool {
    match be16(frame, 12) as u16 {
        ETH_P_IP => frame.len() < 14 + 20,
        ETH_P_IPV6 => frame.len() < 14 + 40,
        _ => false,
    }
}

fn is_einval(e: &aya::programs::ProgramError) -> bool {
    matches!(e, aya::programs::ProgramError::SyscallError(s) if s.io_error.raw_os_error() == Some(libc::EINVAL))
}

enum Expect {
    Shot(ProbeOutcome),
    Ipip(Path),
    L2,
}

impl Expect {
    fn outcome(&self) -> ProbeOutcome {
        match self {
            Self::Shot(o) => *o,
            Self::Ipip(_) => ProbeOutcome::Ipip,
            Self::L2 => ProbeOutcome::L2,
        }
    }
}

fn be16(b: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([b[at], b[at + 1]]))
}

/// The contract, from the frame and the lab's paths alone.
fn judge(paths: &[Path], frame: &[u8], mark: u32) -> Expect {
    use ProbeOutcome::*;
    let Some(path) = paths.iter().find(|p| p.id == mark & PROBE_ID_MASK) else {
        return Expect::Shot(NoPath);
    };
    let family_v6 = match be16(frame, 12) as u16 {
        ETH_P_IP => false,
        ETH_P_IPV6 => true,
        _ => return Expect::Shot(Malformed),
    };
    if family_v6 != path.route.backend.is_ipv6() {
        return Expect::Shot(WrongFamily);
    }
    let ip = &frame[14..];
    let well_formed = if family_v6 {
        ip.len() >= 40 && ip[0] >> 4 == 6 && be16(ip, 4) + 40 == ip.len()
    } else {
        let hl = usize::from(ip.first().map_or(0, |b| b & 0x0f)) * 4;
        ip.len() >= 20
            && ip[0] >> 4 == 4
            && hl >= 20
            && be16(ip, 2) >= hl
            && be16(ip, 2) == ip.len()
    };
    if !well_formed {
        return Expect::Shot(Malformed);
    }
    let overhead = match (path.route.encap, family_v6) {
        (Encap::L2, _) => 0,
        (Encap::Ipip, false) => 20,
        (Encap::Ipip, true) => 40,
    };
    match path.reach {
        Reach::None => return Expect::Shot(NoRoute),
        // The neighbours of the lab are all known: the helper's MTU check
        // (made only on a complete answer) applies.
        Reach::OnLink | Reach::ViaGateway if frame.len() + overhead > EGRESS_FRAME_MAX => {
            return Expect::Shot(TooBig);
        }
        _ => {}
    }
    match path.route.encap {
        Encap::Ipip => Expect::Ipip(*path),
        Encap::L2 if path.reach == Reach::OnLink => Expect::L2,
        Encap::L2 => Expect::Shot(NotOnLink),
    }
}

/// Checks an IPIP output against the input; the outer IPv4 ID when it is
/// random (DF clear).
fn check_ipip(input: &[u8], out: &[u8], route: &ProbeRoute) -> Result<Option<u16>, String> {
    let inner = &input[14..];
    let v6 = route.backend.is_ipv6();
    let outer_len = if v6 { 40 } else { 20 };
    if out.len() != input.len() + outer_len {
        return Err(format!(
            "{} bytes out, want {}",
            out.len(),
            input.len() + outer_len
        ));
    }
    if out[..6] != [0; 6] || out[6..14] != input[6..14] {
        return Err("MAC header: not the input's with a zero destination".into());
    }
    if out[14 + outer_len..] != *inner {
        return Err("the inner packet changed".into());
    }
    let h = &out[14..14 + outer_len];
    let addr = |a: IpAddr| match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let src = addr(route.outer_source.expect("IPIP paths have one"));
    let dst = addr(route.backend);
    if v6 {
        let tclass_label = u32::from_be_bytes(inner[0..4].try_into().unwrap()) & 0x0fff_ffff;
        let mut want = ((6u32 << 28) | tclass_label).to_be_bytes().to_vec();
        want.extend_from_slice(&(inner.len() as u16).to_be_bytes());
        want.extend_from_slice(&[41, 64]);
        want.extend_from_slice(&src);
        want.extend_from_slice(&dst);
        if h != want.as_slice() {
            return Err(format!("outer IPv6 header {}, want {}", hex(h), hex(&want)));
        }
        return Ok(None);
    }
    if !packet::verify(&[h]) {
        return Err(format!("outer IPv4 header checksum wrong: {}", hex(h)));
    }
    let df = inner[6] & 0x40 != 0;
    let id = u16::from_be_bytes([h[4], h[5]]);
    if df && id != 0 || !df && id == 0 {
        return Err(format!("outer ID {id:#06x} with DF {df}"));
    }
    let mut want = vec![0x45, inner[1]];
    want.extend_from_slice(&((inner.len() + 20) as u16).to_be_bytes());
    want.extend_from_slice(&h[4..6]);
    want.extend_from_slice(&[if df { 0x40 } else { 0 }, 0, 64, 4]);
    want.extend_from_slice(&h[10..12]);
    want.extend_from_slice(&src);
    want.extend_from_slice(&dst);
    if h != want.as_slice() {
        return Err(format!("outer IPv4 header {}, want {}", hex(h), hex(&want)));
    }
    Ok((!df).then_some(id))
}

/// A mark: mostly a lab path's id with the tag, else ids without paths,
/// other tags, random words, none.
fn mark(rng: &mut Rng, paths: &[Path]) -> u32 {
    match rng.below(10) {
        0..=4 => TAG | rng.pick(paths).id,
        5 => TAG | rng.below(16) as u32,
        6 => rng.pick(paths).id | (rng.next() as u32 & !PROBE_ID_MASK),
        7 => rng.next() as u32,
        8 => 0,
        _ => TAG | (rng.next() as u32 & PROBE_ID_MASK),
    }
}

/// A frame at least 14 bytes long (BPF_PROG_TEST_RUN takes no shorter
/// one for tc): a well-formed probe packet, a mutation of one, or noise.
fn generate(rng: &mut Rng) -> Vec<u8> {
    let mut f = match rng.below(10) {
        0..=4 => valid(rng),
        5..=8 => {
            let mut f = valid(rng);
            mutate(rng, &mut f);
            f
        }
        _ => {
            let mut f = vec![0; rng.range(14, 120)];
            rng.fill(&mut f);
            if rng.chance(50) {
                let t = if rng.chance(50) { ETH_P_IP } else { ETH_P_IPV6 };
                f[12..14].copy_from_slice(&t.to_be_bytes());
            }
            f
        }
    };
    if f.len() < 14 {
        f.resize(14, 0);
    }
    f
}

/// A probe's packet as the stack hands it to the probe device: TCP or
/// UDP from the router to the VIP, sizes up to past the egress MTU.
fn valid(rng: &mut Rng) -> Vec<u8> {
    let v6 = rng.chance(50);
    let len = match rng.below(4) {
        0 => rng.range(0, 16),
        1 => rng.range(0, 200),
        2 => rng.range(1380, 1480),
        _ => rng.range(0, 1500),
    };
    let mut payload = vec![0; len];
    rng.fill(&mut payload);
    let (src, dst) = if v6 {
        (IpAddr::V6(ROUTER6), IpAddr::V6(VIP6))
    } else {
        (IpAddr::V4(ROUTER4), IpAddr::V4(VIP4))
    };
    let udp = rng.chance(30);
    let (proto, l4) = if udp {
        (17, packet::udp(src, dst, rng.u16(), 53, &payload))
    } else {
        let flags = *rng.pick(&[
            packet::TCP_SYN,
            packet::TCP_ACK,
            packet::TCP_ACK | packet::TCP_PSH,
        ]);
        (6, packet::tcp(src, dst, rng.u16(), 80, flags, &payload))
    };
    let ip = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut h = V4::new(s, d, proto);
            h.tos = rng.byte();
            h.id = rng.u16();
            h.frag = if rng.chance(70) { 0x4000 } else { 0 };
            if rng.chance(10) {
                h.options = vec![1; 4 * rng.range(1, 10)];
            }
            packet::ipv4(&h, &l4)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut h = V6::new(s, d, proto);
            h.tclass = rng.byte();
            h.flow = rng.next() as u32 & 0xf_ffff;
            packet::ipv6(&h, &l4)
        }
        _ => unreachable!(),
    };
    let ether_type = if v6 { ETH_P_IPV6 } else { ETH_P_IP };
    packet::eth(DEV_MAC, SRC_MAC, ether_type, &ip)
}

/// One to three changes where the program looks: the EtherType, the
/// version and header length, the length fields, the frame's end, random
/// header bytes, a VLAN tag, a multicast destination MAC, a source no
/// router forwards from.
fn mutate(rng: &mut Rng, f: &mut Vec<u8>) {
    for _ in 0..rng.range(1, 3) {
        match rng.below(9) {
            0 => {
                let other = rng.u16();
                let t = *rng.pick(&[ETH_P_IP, ETH_P_IPV6, 0x0806, 0x88cc, 0x0100, other]);
                f[12..14].copy_from_slice(&t.to_be_bytes());
            }
            1 if f.len() > 14 => f[14] = rng.byte(),
            2 if f.len() > 19 => {
                let at = if rng.chance(50) { 16 } else { 18 };
                let delta = *rng.pick(&[1u16, 2, 20, 40, 0xffff, 0xfffe, 0xffec]);
                let v = (be16(f, at) as u16).wrapping_add(delta);
                f[at..at + 2].copy_from_slice(&v.to_be_bytes());
            }
            3 => {
                let n = rng.range(14, f.len().max(14));
                f.truncate(n);
            }
            4 => f.extend(std::iter::repeat_n(0, rng.range(1, 8))),
            5 => {
                let n = rng.range(1, 4);
                for _ in 0..n {
                    let at = rng.range(0, f.len().min(74) - 1);
                    f[at] = rng.byte();
                }
            }
            6 => {
                let inner = f.split_off(12);
                let mut tag = ETH_P_8021Q.to_be_bytes().to_vec();
                tag.extend_from_slice(&[0, 7]);
                f.extend_from_slice(&tag);
                f.extend_from_slice(&inner);
            }
            7 => f[..6].copy_from_slice(&[0x01, 0x00, 0x5e, 0, 0, 1]),
            8 if be16(f, 12) as u16 == ETH_P_IPV6 && f.len() >= 38 => {
                // Multicast, link-local (both ends of fe80::/10), loopback.
                let first = *rng.pick(&[0xff02u16, 0xfe80, 0xfebf, 0]);
                f[22..38].fill(0);
                f[22..24].copy_from_slice(&first.to_be_bytes());
                f[37] = 1;
            }
            8 if be16(f, 12) as u16 == ETH_P_IP && f.len() >= 30 => {
                let src = rng.pick(&[
                    [127, 0, 0, 1],
                    [224, 0, 0, 1],
                    [169, 254, 0, 1],
                    [255, 255, 255, 255],
                    [0, 0, 0, 0],
                ]);
                f[26..30].copy_from_slice(src);
            }
            _ => {}
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().take(80).map(|x| format!("{x:02x}")).collect()
}
