//! The data plane, packet by packet: tables of frames run through the
//! verifier-accepted balancer with BPF_PROG_TEST_RUN, each case with the
//! XDP action, the exact output frame and the outcome counter it must bump.
//!
//! One module per area, each a table of named cases; this file holds the
//! case type and the one runner every table goes through. All tables share
//! one loaded balancer and the lab's VIPs (`lab::standard_vips`): every VIP
//! there has a single backend, so a case's output does not depend on the
//! flows earlier cases left in the flow table.

mod drops;
mod fragments;
mod frames;
mod icmp;
mod malformed;
mod mtu;
mod neighbour;
mod non_vip;
mod v4_ipip;
mod v4_l2;
mod v6;
mod validation;
mod vlan;

use lb_common::Outcome;
use lb_userspace::xdp::Balancer;
use xlb_tests::{
    lab::{self, Lab},
    netns::privileged,
};

/// One frame through the program and what must come of it.
pub(crate) struct Case {
    name: &'static str,
    /// The frame as it arrives on lb0.
    frame: Vec<u8>,
    action: u32,
    /// The one outcome counter that must move, by one (flow hit/miss and
    /// ICMP steering are counted beside it and not checked here).
    outcome: Outcome,
    /// The frame as the program must leave it.
    out: Vec<u8>,
    /// The output is IPv4-in-IPv4 whose outer ID must be non-zero (DF clear:
    /// random), so `out` is compared with the ID (and checksum) it got.
    random_outer_id: bool,
    /// The flow table must not grow (the packet must not open a flow).
    no_new_flow: bool,
}

impl Case {
    pub(crate) fn random_outer_id(mut self) -> Self {
        self.random_outer_id = true;
        self
    }

    pub(crate) fn no_new_flow(mut self) -> Self {
        self.no_new_flow = true;
        self
    }
}

/// A case whose frame must leave the program byte for byte as it came.
pub(crate) fn unchanged(name: &'static str, frame: Vec<u8>, action: u32, outcome: Outcome) -> Case {
    Case {
        name,
        out: frame.clone(),
        frame,
        action,
        outcome,
        random_outer_id: false,
        no_new_flow: false,
    }
}

/// A case whose output is `expect` of its input frame.
pub(crate) fn rewritten(
    name: &'static str,
    frame: Vec<u8>,
    action: u32,
    outcome: Outcome,
    expect: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Case {
    Case {
        name,
        out: expect(&frame),
        frame,
        action,
        outcome,
        random_outer_id: false,
        no_new_flow: false,
    }
}

/// An area's name and its table.
type Area = (&'static str, fn() -> Vec<Case>);

/// Every table, in the order they run.
const AREAS: &[Area] = &[
    ("v4 ipip", v4_ipip::cases),
    ("v4 l2", v4_l2::cases),
    ("vlan", vlan::cases),
    ("not a vip", non_vip::cases),
    ("malformed", malformed::cases),
    ("fragments", fragments::cases),
    ("drops", drops::cases),
    ("mtu", mtu::cases),
    ("icmp", icmp::cases),
    ("v6", v6::cases),
    ("validation", validation::cases),
    ("neighbour", neighbour::cases),
];

/// What went wrong with one case, if anything.
fn check(b: &Balancer, lb0: u32, c: &Case) -> Vec<String> {
    let before = lab::outcomes(b);
    let flows_before = b.maps.flow_entries();
    let (action, out) = lab::run(b.program(), lb0, &c.frame);
    let counted = lab::delta(&before, &lab::outcomes(b));
    let mut problems = Vec::new();
    if c.no_new_flow && b.maps.flow_entries() != flows_before {
        problems.push(format!(
            "the flow table went from {flows_before} to {} entries",
            b.maps.flow_entries()
        ));
    }
    let mut want = c.out.clone();
    if c.random_outer_id {
        match outer_id(&out) {
            Some(0) => problems.push("outer IPv4 ID 0 with DF clear".into()),
            Some(id) if want.len() >= 34 => {
                want[18..20].copy_from_slice(&id.to_be_bytes());
                want[24..26].fill(0);
                let c = xlb_tests::packet::checksum(&[&want[14..34]]);
                want[24..26].copy_from_slice(&c.to_be_bytes());
            }
            _ => problems.push("no outer IPv4 header to read an ID from".into()),
        }
    }
    if action != c.action {
        problems.push(format!("action {action}, want {}", c.action));
    }
    let final_outcomes: Vec<_> = counted
        .iter()
        .filter(|(o, _)| {
            !matches!(
                o,
                Outcome::FlowHit | Outcome::FlowMiss | Outcome::IcmpErrorSteered
            )
        })
        .collect();
    if final_outcomes != [&(c.outcome, 1)] {
        problems.push(format!(
            "outcome counters moved {counted:?}, want {:?} +1",
            c.outcome
        ));
    }
    if out != want {
        problems.push(diff(&out, &want));
    }
    problems
}

/// The ID of the (outer) IPv4 header of an untagged frame.
fn outer_id(frame: &[u8]) -> Option<u16> {
    (frame.len() >= 34 && frame[12..14] == [0x08, 0x00])
        .then(|| u16::from_be_bytes([frame[18], frame[19]]))
}

/// Where two frames part, with the bytes around it.
fn diff(got: &[u8], want: &[u8]) -> String {
    let at = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let from = at.saturating_sub(8);
    let show = |f: &[u8]| format!("{:02x?}", &f[from.min(f.len())..(at + 24).min(f.len())]);
    format!(
        "output differs at byte {at} (lengths {} / {}):\n    got  [{from}..] {}\n    want [{from}..] {}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    )
}

#[test]
fn packet_table() {
    if !privileged("packet_table") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&lab::settings()).expect("balancer loads through the verifier");
        lab::program(&mut b, &lab::standard_vips());
        let _claims = lab::claim_owned(&mut b);
        let lb0 = lab::ifindex("lb0");
        let mut total = 0;
        let mut failures = Vec::new();
        for (area, cases) in AREAS {
            let cases = cases();
            assert!(!cases.is_empty(), "the {area} table is empty");
            total += cases.len();
            for c in &cases {
                let problems = check(&b, lb0, c);
                if !problems.is_empty() {
                    failures.push(format!("[{area}: {}] {}", c.name, problems.join("; ")));
                }
            }
        }
        assert!(total >= 40, "only {total} cases");
        assert!(
            failures.is_empty(),
            "{} of {total} cases failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
        eprintln!("{total} packet cases passed in {} areas", AREAS.len());
    });
}

/// Frames shorter than an Ethernet header never reach an XDP program: the
/// kernel refuses them (BPF_PROG_TEST_RUN mirrors the driver's minimum).
#[test]
fn runt_frames_are_refused_before_the_program() {
    if !privileged("runt_frames_are_refused_before_the_program") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let b = Balancer::load(&lab::settings()).expect("load");
        for len in [0usize, 13] {
            let frame = vec![0u8; len];
            let mut out = vec![0u8; 64];
            let ctx = lab::xdp_md(lab::ifindex("lb0"), len);
            let r = aya::programs::TestRun::test_run(
                b.program(),
                aya::programs::TestRunOptions {
                    data_in: Some(&frame),
                    data_out: Some(&mut out),
                    ctx_in: Some(&ctx),
                    ..aya::programs::TestRunOptions::new()
                },
            );
            assert!(r.is_err(), "{len}-byte frame was accepted: {r:?}");
        }
    });
}

/// Without DF the outer IPv4 header of an IPIP packet gets a non-zero ID
/// that changes from packet to packet (its fragments, if a router makes
/// any, must not be mixed with another packet's).
#[test]
fn outer_ids_without_df_are_non_zero_and_vary() {
    if !privileged("outer_ids_without_df_are_non_zero_and_vary") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&lab::settings()).expect("load");
        lab::program(&mut b, &lab::standard_vips());
        let lb0 = lab::ifindex("lb0");
        let frame = frames::tcp4(frames::VIP1, 80, xlb_tests::packet::TCP_ACK, 10, |h| {
            h.frag = 0;
        });
        let ids: Vec<u16> = (0..8)
            .map(|_| {
                let (action, out) = lab::run(b.program(), lb0, &frame);
                assert_eq!(action, frames::XDP_TX, "DF-clear packet not sent");
                outer_id(&out).expect("an IPIP frame")
            })
            .collect();
        assert!(!ids.contains(&0), "outer ID 0 without DF: {ids:?}");
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert!(distinct.len() > 1, "the same outer ID every time: {ids:?}");
        let with_df = frames::tcp4(frames::VIP1, 80, xlb_tests::packet::TCP_ACK, 10, |_| {});
        let (_, out) = lab::run(b.program(), lb0, &with_df);
        assert_eq!(outer_id(&out), Some(0), "outer ID with DF set");
    });
}

/// Frames are balanced only on interfaces the interface map names: one it
/// does not (never registered, or forgotten when the daemon left it) is
/// another host's business, even for a VIP.
#[test]
fn interfaces_missing_from_the_map_balance_nothing() {
    if !privileged("interfaces_missing_from_the_map_balance_nothing") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&lab::settings()).expect("load");
        lab::program(&mut b, &lab::standard_vips());
        let frame = frames::tcp4(frames::VIP1, 80, xlb_tests::packet::TCP_SYN, 0, |_| {});
        let lb0 = lab::ifindex("lb0");
        let peer0 = lab::ifindex("peer0");
        let expect_other_host = |b: &Balancer, ifindex: u32, why: &str| {
            let before = lab::outcomes(b);
            let (action, out) = lab::run(b.program(), ifindex, &frame);
            assert_eq!(action, frames::XDP_PASS, "{why}: not passed");
            assert_eq!(out, frame, "{why}: frame changed");
            assert_eq!(
                lab::delta(&before, &lab::outcomes(b)),
                [(Outcome::PassOtherHost, 1)],
                "{why}: counters"
            );
        };
        expect_other_host(&b, peer0, "unregistered interface");
        assert_eq!(lab::run(b.program(), lb0, &frame).0, frames::XDP_TX);
        b.maps.retain_ifaces(&[peer0]).expect("forget lb0");
        expect_other_host(&b, lb0, "interface forgotten");
    });
}

/// The liveness gate: an owned VIP is answered only while the daemon's
/// heartbeat is younger than its bound; a stale or zero heartbeat, or a
/// released address, leaves requests to the kernel, which has no such
/// address and stays silent.
#[test]
fn owned_vips_are_answered_only_under_a_fresh_heartbeat() {
    if !privileged("owned_vips_are_answered_only_under_a_fresh_heartbeat") {
        return;
    }
    let lab = Lab::new();
    lab.ns.run(|| {
        let mut b = Balancer::load(&lab::settings()).expect("load");
        lab::program(&mut b, &lab::standard_vips());
        let mut claims = lab::claim_owned(&mut b);
        let lb0 = lab::ifindex("lb0");
        let request = xlb_tests::packet::eth(
            [0xff; 6],
            lab::CLIENT_MAC,
            xlb_tests::packet::ETH_P_ARP,
            &neighbour::arp(
                1,
                lab::CLIENT_MAC,
                lab::CLIENT_V4.octets(),
                [0; 6],
                frames::VIP1.octets(),
            ),
        );
        let expect = |b: &Balancer, action: u32, outcome: Outcome, why: &str| {
            let before = lab::outcomes(b);
            let (got, out) = lab::run(b.program(), lb0, &request);
            assert_eq!(got, action, "{why}: action");
            assert_eq!(
                lab::delta(&before, &lab::outcomes(b)),
                [(outcome, 1)],
                "{why}: counters"
            );
            if action == frames::XDP_PASS {
                assert_eq!(out, request, "{why}: frame changed");
            }
        };
        expect(&b, frames::XDP_TX, Outcome::ArpReplied, "fresh heartbeat");
        let now = lb_userspace::xdp::claims::monotonic_ns();
        claims
            .set_liveness(lb_common::Liveness {
                stamp_ns: now - 2_000_000_000,
                bound_ns: 1_000_000_000,
            })
            .expect("stale heartbeat");
        expect(
            &b,
            frames::XDP_PASS,
            Outcome::PassOwnerStale,
            "heartbeat 2 s old, bound 1 s",
        );
        claims.silence().expect("silence");
        expect(&b, frames::XDP_PASS, Outcome::PassOwnerStale, "silenced");
        claims
            .beat(std::time::Duration::from_secs(60))
            .expect("heartbeat");
        expect(&b, frames::XDP_TX, Outcome::ArpReplied, "heartbeat again");
        claims
            .release(std::net::IpAddr::V4(frames::VIP1))
            .expect("release");
        expect(&b, frames::XDP_PASS, Outcome::PassNotIp, "released");
        assert!(
            !claims
                .claimed()
                .contains(&std::net::IpAddr::V4(frames::VIP1)),
            "the released address is still listed"
        );
    });
}
