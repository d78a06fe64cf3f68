//! `cargo xtask bench`: ns/packet of the balancer by BPF_PROG_TEST_RUN, beside
//! two floors measured in the same run, and Maglev table build times
//! (`xdp`); then the Kubernetes source end to end (`k8s`,
//! `xlb_tests::bench_k8s`); then what the number of VIPs costs, from 1 to
//! 1,000,000 (`scale`, `xlb_tests::bench_scale`). Naming parts runs only
//! those.
//!
//! Each class is timed as `xlb_tests::test_run` says: many calls with
//! repeat=1 on fresh copies of the frame, the median of the kernel's
//! per-call duration (~30 ns of timer overhead included, floors too).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Instant,
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{include_bytes_aligned, programs::Xdp};
use lb_common::{Encap, FlowKey, FlowValue, Outcome, PROTO_TCP, PROTO_UDP, names};
use lb_userspace::{
    maglev::{self, Weighted},
    xdp::{Balancer, LoadError, Settings, loader::load_simple, objects},
};
use xlb_tests::{
    lab::{self, Lab, v4, v6},
    packet::*,
    test_run::{
        FrameFor, Subject, XDP_PASS, XDP_TX, measure, new_client, subject, tcp4_frame, tcp6_frame,
    },
};

/// The targets of the data plane v2 issue, as ratios to the floors:
/// Katran's own ratios on this machine kind, times 0.8.
const ESTABLISHED_TARGET: f64 = 2.3;
const NON_VIP_TARGET: f64 = 1.5;
const NEW_FLOW_TARGET: f64 = 5.0;
/// Many VIPs cost what one does: within 10%.
const FLAT_TARGET: f64 = 1.1;
/// VIPs in the scale rows.
const MANY_VIPS: u32 = 100_000;

// The benchmark's own programs, built by this package's build.rs (lb-ebpf's
// `bench` feature) and kept out of the `xlb` binary.
/// The balancer with logging compiled out.
static BALANCER_NOLOG: &[u8] =
    include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-balancer-nolog"));
/// Floor: returns XDP_PASS.
static FLOOR_PASS: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-floor-pass"));
/// Floor: parses to L4, swaps MACs, returns XDP_TX.
static FLOOR_SWAP: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-floor-swap"));

/// The production balancer, stopped after `stage` (`XLB_BENCH_STOP`, a
/// `.rodata` constant only the benchmark sets; 0 runs it whole).
fn load_stopped(settings: &Settings, stage: u8) -> Result<Balancer, LoadError> {
    Balancer::load_object(
        objects::BALANCER,
        settings,
        &[(names::GLOBAL_BENCH_STOP, stage)],
    )
}

struct Args {
    calls: usize,
    /// The parts to run: the data plane (`xdp`), the Kubernetes source
    /// (`k8s`), the number of VIPs (`scale`); all when none is named.
    xdp: bool,
    k8s: bool,
    scale: bool,
    /// xlb beside kube-proxy's modes and the direct floor (`peers`).
    peers: bool,
    /// `peers --quick`: the smoke run (every path verified, briefly driven).
    quick: bool,
    /// Where `peers` writes its SVG charts.
    charts: std::path::PathBuf,
}

fn args() -> Result<Args> {
    let mut calls = 100_000;
    let (mut xdp, mut k8s, mut scale, mut peers, mut quick) = (false, false, false, false, false);
    let mut charts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "xdp" => xdp = true,
            "k8s" => k8s = true,
            "scale" => scale = true,
            "peers" => peers = true,
            "--quick" => quick = true,
            "--charts" => charts = it.next().context("--charts needs a directory")?.into(),
            "--calls" => {
                calls = it
                    .next()
                    .context("--calls needs a number")?
                    .parse()
                    .context("--calls")?
            }
            "-h" | "--help" => {
                println!(
                    "xlb-bench [xdp] [k8s] [scale] [peers [--quick] [--charts DIR]] [--calls N]\n\
                     parts: the XDP program, the Kubernetes source, 1 to 1,000,000 VIPs, xlb beside\n\
                     kube-proxy's iptables and nftables modes (charts into DIR, default docs/);\n\
                     default all, 100000 calls per class; needs root"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if !xdp && !k8s && !scale && !peers {
        (xdp, k8s, scale, peers) = (true, true, true, true);
    }
    Ok(Args {
        calls,
        xdp,
        k8s,
        scale,
        peers,
        quick,
        charts,
    })
}

/// The same backends under other ids (+10).
fn renumber(set: &[(u32, IpAddr)]) -> Vec<(u32, IpAddr)> {
    set.iter().map(|&(id, a)| (id + 10, a)).collect()
}

struct Row {
    class: &'static str,
    ns: f64,
    floor: &'static str,
    floor_ns: f64,
    target: Option<f64>,
}

fn main() -> Result<()> {
    let args = args()?;
    if args.xdp {
        xdp(&args)?;
    } else {
        println!("\n{}", machine());
    }
    if args.k8s {
        xlb_tests::bench_k8s::run()?;
    }
    if args.scale {
        xlb_tests::bench_scale::run(args.calls)?;
    }
    if args.peers {
        peers(&args)?;
    }
    Ok(())
}

/// The `peers` part: the run, its Markdown on stdout, its charts.
fn peers(args: &Args) -> Result<()> {
    use xlb_tests::peers::{self, Options, report};
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the benchmark needs root (network namespaces, BPF, netfilter)"
    );
    let (options, command) = if args.quick {
        (Options::quick(), "cargo xtask bench peers --quick")
    } else {
        (Options::full(), "cargo xtask bench peers")
    };
    let r = peers::run(&options, command)?;
    println!(
        "\n## xlb beside kube-proxy (peers)\n\n{}",
        report::markdown(&r)
    );
    std::fs::create_dir_all(&args.charts)
        .with_context(|| format!("create {}", args.charts.display()))?;
    for f in report::charts(&r, &args.charts)? {
        println!("chart: {}", f.display());
    }
    Ok(())
}

/// A broadcast ARP request from the lab's client for `vip`.
fn arp_request(vip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4, 0, 1];
    a.extend_from_slice(&lab::CLIENT_MAC);
    a.extend_from_slice(&lab::CLIENT_V4.octets());
    a.extend_from_slice(&[0; 6]);
    a.extend_from_slice(&vip.octets());
    eth([0xff; 6], lab::CLIENT_MAC, ETH_P_ARP, &a)
}

/// A neighbour solicitation for `vip` to its solicited-node group, with
/// the client's link-layer address.
fn solicitation(client: Ipv6Addr, vip: Ipv6Addr) -> Vec<u8> {
    let o = vip.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    );
    let mut body = o.to_vec();
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&lab::CLIENT_MAC);
    let msg = icmp6(client, group, 135, 0, [0; 4], &body);
    let mut h = V6::new(client, group, 58);
    h.hop = 255;
    let g = group.octets();
    eth(
        [0x33, 0x33, g[12], g[13], g[14], g[15]],
        lab::CLIENT_MAC,
        ETH_P_IPV6,
        &ipv6(&h, &msg),
    )
}

fn xdp(args: &Args) -> Result<()> {
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the benchmark needs root (network namespace, BPF)"
    );
    let lab = Lab::new();
    let calls = args.calls;
    type Profile = Vec<(&'static str, f64, f64)>;
    let rows = lab.ns.run(|| -> Result<(Vec<Row>, Profile)> {
        let settings = Settings {
            flow_table_size: 1 << 21,
            ..lab::settings()
        };
        let mut b = Balancer::load(&settings)?;
        let mut nolog = Balancer::load_object(BALANCER_NOLOG, &settings, &[])?;
        let set4 = [
            (1, v4(10, 0, 0, 0x11)),
            (2, v4(10, 0, 0, 0x12)),
            (3, v4(10, 0, 0, 0x13)),
        ];
        let fd00 = |h| v6([0xfd00, 0, 0, 0, 0, 0, 0, h]);
        let set6 = [(4, fd00(0x11)), (5, fd00(0x12)), (6, fd00(0x13))];
        let (vip4, vip4l2) = (Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 11));
        let (vip6, vip6l2) = (
            Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 1),
            Ipv6Addr::new(0xfd99, 0, 0, 0, 0, 0, 0, 0x11),
        );
        let vips = [
            lab::vip(1, IpAddr::V4(vip4), 80, PROTO_TCP, Encap::Ipip, &set4),
            // One backend entry per (VIP, backend): the L2 VIPs get their own ids.
            lab::vip(
                2,
                IpAddr::V4(vip4l2),
                80,
                PROTO_TCP,
                Encap::L2,
                &renumber(&set4),
            ),
            lab::vip(3, IpAddr::V6(vip6), 80, PROTO_TCP, Encap::Ipip, &set6),
            lab::vip(
                4,
                IpAddr::V6(vip6l2),
                80,
                PROTO_TCP,
                Encap::L2,
                &renumber(&set6),
            ),
            lab::vip(
                5,
                IpAddr::V4(vip4),
                53,
                PROTO_UDP,
                Encap::Ipip,
                &renumber(&renumber(&set4)),
            ),
            lab::vip(
                6,
                IpAddr::V6(vip6),
                53,
                PROTO_UDP,
                Encap::Ipip,
                &renumber(&renumber(&set6)),
            ),
        ];
        lab::program(&mut b, &vips);
        lab::program(&mut nolog, &vips);
        let pass = load_simple(FLOOR_PASS, "xlb_floor_pass")?;
        let swap = load_simple(FLOOR_SWAP, "xlb_floor_swap")?;
        let pass_prog: &Xdp = pass
            .program("xlb_floor_pass")
            .context("floor pass")?
            .try_into()?;
        let swap_prog: &Xdp = swap
            .program("xlb_floor_swap")
            .context("floor swap")?
            .try_into()?;
        let ifx = lab::ifindex("lb0");
        let client4 = Ipv4Addr::new(198, 51, 100, 7);
        let client6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7);
        let nonvip = tcp4_frame(client4, 40_000, Ipv4Addr::new(10, 0, 0, 1));
        let fixed = |f: Vec<u8>| move |_: usize, buf: &mut Vec<u8>| buf.clone_from(&f);

        let est4 = tcp4_frame(client4, 40_000, vip4);
        let swap_floor = || subject(swap_prog, XDP_TX, fixed(est4.clone()));
        let m = measure(
            ifx,
            calls,
            &mut [
                subject(pass_prog, XDP_PASS, fixed(nonvip.clone())),
                subject(b.program(), XDP_PASS, fixed(nonvip.clone())),
            ],
        )?;
        let mut rows = vec![Row {
            class: "non-VIP pass (v4)",
            ns: m[1],
            floor: "XDP_PASS",
            floor_ns: m[0],
            target: Some(NON_VIP_TARGET),
        }];
        let misses_before = b.maps.outcome(Outcome::FlowMiss)?;
        let mut new_classes = 0;
        for (class, frame, n) in [
            ("new flow v4 ipip", tcp4_frame(client4, 40_000, vip4), 1u8),
            ("new flow v4 l2", tcp4_frame(client4, 40_000, vip4l2), 2),
            ("new flow v6 ipip", tcp6_frame(client6, 40_000, vip6), 3),
            ("new flow v6 l2", tcp6_frame(client6, 40_000, vip6l2), 4),
        ] {
            let m = measure(
                ifx,
                calls,
                &mut [
                    swap_floor(),
                    subject(b.program(), XDP_TX, |i, buf| {
                        buf.clone_from(&frame);
                        new_client(buf, i, n);
                    }),
                ],
            )?;
            new_classes += 1;
            rows.push(Row {
                class,
                ns: m[1],
                floor: "parse+swap",
                floor_ns: m[0],
                target: Some(NEW_FLOW_TARGET),
            });
        }
        let misses = b.maps.outcome(Outcome::FlowMiss)? - misses_before;
        ensure!(
            misses == (new_classes * calls) as u64,
            "{misses} flow misses in new-flow classes, expected {}",
            new_classes * calls
        );
        let hits_before = b.maps.outcome(Outcome::FlowHit)?;
        let udp = |src: IpAddr, dst: IpAddr| lab::udp_frame(src, 40_000, dst, 53, &[0x61; 64]);
        for (class, frame) in [
            ("established v4 ipip", tcp4_frame(client4, 40_000, vip4)),
            ("established v4 l2", tcp4_frame(client4, 40_000, vip4l2)),
            ("established v6 ipip", tcp6_frame(client6, 40_000, vip6)),
            ("established v6 l2", tcp6_frame(client6, 40_000, vip6l2)),
            (
                "established UDP v4 ipip",
                udp(IpAddr::V4(client4), IpAddr::V4(vip4)),
            ),
            (
                "established UDP v6 ipip",
                udp(IpAddr::V6(client6), IpAddr::V6(vip6)),
            ),
        ] {
            let m = measure(
                ifx,
                calls,
                &mut [swap_floor(), subject(b.program(), XDP_TX, fixed(frame))],
            )?;
            rows.push(Row {
                class,
                ns: m[1],
                floor: "parse+swap",
                floor_ns: m[0],
                target: Some(ESTABLISHED_TARGET),
            });
        }
        let hits = b.maps.outcome(Outcome::FlowHit)? - hits_before;
        ensure!(
            hits + 6 >= (6 * calls) as u64,
            "only {hits} flow hits in established classes"
        );
        // Answering for a claimed VIP (the l2 announcement), which never
        // reaches the flow path.
        let _claims = lab::claim_owned(&mut b);
        let answered_before = (
            b.maps.outcome(Outcome::ArpReplied)?,
            b.maps.outcome(Outcome::NdpAdvertised)?,
        );
        for (class, frame) in [
            ("ARP request for a claimed VIP, answered", arp_request(vip4)),
            (
                "neighbour solicitation for a claimed VIP, answered",
                solicitation(client6, vip6),
            ),
        ] {
            let m = measure(
                ifx,
                calls,
                &mut [swap_floor(), subject(b.program(), XDP_TX, fixed(frame))],
            )?;
            rows.push(Row {
                class,
                ns: m[1],
                floor: "parse+swap",
                floor_ns: m[0],
                target: None,
            });
        }
        ensure!(
            b.maps.outcome(Outcome::ArpReplied)? - answered_before.0 >= calls as u64
                && b.maps.outcome(Outcome::NdpAdvertised)? - answered_before.1 >= calls as u64,
            "requests for claimed VIPs went unanswered"
        );
        let m = measure(
            ifx,
            calls,
            &mut [
                subject(nolog.program(), XDP_TX, fixed(est4.clone())),
                subject(b.program(), XDP_TX, fixed(est4.clone())),
            ],
        )?;
        rows.push(Row {
            class: "established v4 ipip, logging off",
            ns: m[1],
            floor: "logging compiled out",
            floor_ns: m[0],
            target: None,
        });

        // Where the nanoseconds go: the same program stopped after each
        // stage (XLB_BENCH_STOP), all stages and both floors interleaved.
        let stages = [
            (1u8, "parse (+ scratch map, counters)"),
            (2, "+ VIP filter, MAC, checks, flow key"),
            (3, "+ flow table (hit) / VIP + Maglev + insert (new)"),
            (4, "+ next hop"),
            (0, "+ encapsulate, send (full)"),
        ];
        let mut stopped = Vec::new();
        for (stage, _) in stages {
            let mut p = load_stopped(&settings, stage)?;
            lab::program(&mut p, &vips);
            stopped.push(p);
        }
        let floors = || {
            [
                subject(pass_prog, XDP_PASS, fixed(nonvip.clone())),
                swap_floor(),
            ]
        };
        let mut est: Vec<Subject<'_>> = floors().into_iter().collect();
        est.extend(
            stopped
                .iter()
                .map(|p| subject(p.program(), XDP_TX, fixed(est4.clone()))),
        );
        let est = measure(ifx, calls / 2, &mut est)?;
        let mut new: Vec<Subject<'_>> = floors().into_iter().collect();
        new.extend(stopped.iter().enumerate().map(|(k, p)| {
            let frame = est4.clone();
            subject(p.program(), XDP_TX, move |i, buf| {
                buf.clone_from(&frame);
                new_client(buf, i, 10 + k as u8);
            })
        }));
        let new = measure(ifx, calls / 2, &mut new)?;
        let mut profile = vec![
            ("XDP_PASS floor", est[0], new[0]),
            ("parse+swap floor", est[1], new[1]),
        ];
        for (k, (_, name)) in stages.iter().enumerate() {
            profile.push((*name, est[k + 2], new[k + 2]));
        }
        rows.extend(many_vips(ifx, calls, &set4)?);
        Ok((rows, profile))
    })?;
    let (rows, profile) = rows;

    println!("\n{}", machine());
    println!("\n| class | ns/packet (median) | floor | floor ns | ratio | target |");
    println!("|---|---:|---|---:|---:|---|");
    let mut missed = Vec::new();
    for r in &rows {
        let ratio = r.ns / r.floor_ns;
        let target = r.target.map_or("-".to_owned(), |t| format!("<= {t}x"));
        println!(
            "| {} | {:.0} | {} | {:.0} | {:.2}x | {} |",
            r.class, r.ns, r.floor, r.floor_ns, ratio, target
        );
        if r.target.is_some_and(|t| ratio > t) {
            missed.push(r.class);
        }
    }
    println!(
        "\nStage profile: the same program stopped after each stage (counters included), interleaved"
    );
    println!("\n| stage | established v4 ipip ns | new flow v4 ipip ns |");
    println!("|---|---:|---:|");
    for (name, est, new) in &profile {
        println!("| {name} | {est:.0} | {new:.0} |");
    }
    println!(
        "\nflow-table entry: key {} + value {} = {} bytes (target <= 64)",
        size_of::<FlowKey>(),
        size_of::<FlowValue>(),
        size_of::<FlowKey>() + size_of::<FlowValue>()
    );

    println!("\n| Maglev build, M = 65537 | median of 5 |");
    println!("|---|---:|");
    for n in [10usize, 100, 1000] {
        let backends: Vec<Weighted> = (0..n)
            .map(|i| Weighted {
                addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i as u32)),
                weight: 1,
            })
            .collect();
        let mut t: Vec<f64> = (0..5)
            .map(|_| {
                let s = Instant::now();
                std::hint::black_box(maglev::build(&backends, 65_537).expect("prime"));
                s.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        t.sort_by(f64::total_cmp);
        println!("| N = {n} | {:.2} ms |", t[2]);
    }
    let r = lab.ns.run(reconcile_bench)?;
    println!("\n| control plane | median | p99 |");
    println!("|---|---:|---:|");
    println!(
        "| config change -> maps updated (1,000 VIPs x 10 backends, one backend removed; parse + diff + write, {} changes) | {:.2} ms | {:.2} ms |",
        r.changes, r.change_median_ms, r.change_p99_ms
    );
    println!(
        "| full sync, 10,000 VIPs x 10 backends into empty maps (M = {}) | {:.0} ms | - |",
        RECONCILE_M, r.full_sync_ms
    );
    if !missed.is_empty() {
        println!("\ntargets missed: {}", missed.join(", "));
    }
    Ok(())
}

/// The scale rows: the same classes on a balancer holding `MANY_VIPS`
/// VIPs and on one holding only the VIP under test, same settings, calls
/// interleaved. A small Maglev table (M = 13) keeps 100,000 rows in 10 MB;
/// the per-packet work does not depend on M.
fn many_vips(ifx: u32, calls: usize, set4: &[(u32, IpAddr)]) -> Result<Vec<Row>> {
    let settings = Settings {
        maglev_size: 13,
        maglev_slots: (MANY_VIPS + 1) * 14,
        max_vips: MANY_VIPS + 1,
        max_backends: MANY_VIPS + 16,
        flow_table_size: 1 << 20,
        ..lab::settings()
    };
    let vip4 = Ipv4Addr::new(10, 99, 0, 1);
    let under_test = [lab::vip(
        0,
        IpAddr::V4(vip4),
        80,
        PROTO_TCP,
        Encap::Ipip,
        set4,
    )];
    let mut one = Balancer::load(&settings)?;
    lab::program(&mut one, &under_test);
    let mut many = Balancer::load(&settings)?;
    lab::program(&mut many, &under_test);
    let t = Instant::now();
    for i in 1..MANY_VIPS {
        // 172.16.0.0/12: nothing else in the lab lives there.
        let addr = IpAddr::V4(Ipv4Addr::from(0xac10_0000 + i));
        let backend = 16 + i;
        many.maps.set_backend(
            backend,
            &lb_common::Backend {
                addr: lb_userspace::maglev::addr_bytes(set4[0].1),
                family: lb_common::FAMILY_V4,
                flags: lb_common::BACKEND_ACTIVE,
                encap: Encap::Ipip as u8,
                _pad: 0,
                vip_id: i,
                weight: 1,
                tag: lab::tag(i),
            },
        )?;
        let row = lb_userspace::xdp::slots::Row {
            start: i * 13,
            size: 13,
        };
        many.maps.program_maglev(
            row,
            &[(
                backend,
                Weighted {
                    addr: set4[0].1,
                    weight: 1,
                },
            )],
        )?;
        many.maps.set_vip(
            &lb_common::VipKey {
                addr: lb_userspace::maglev::addr_bytes(addr),
                port: 80,
                proto: PROTO_TCP,
                family: lb_common::FAMILY_V4,
            },
            &lb_common::VipInfo {
                vip_id: i,
                encap: Encap::Ipip as u8,
                _pad: [0; 3],
                tag: lab::tag(i),
                maglev_start: row.start,
                maglev_size: row.size,
            },
        )?;
    }
    eprintln!(
        "{MANY_VIPS} VIPs written in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let client4 = Ipv4Addr::new(198, 51, 100, 7);
    let est = tcp4_frame(client4, 40_000, vip4);
    let nonvip = tcp4_frame(client4, 40_000, Ipv4Addr::new(10, 0, 0, 1));
    let fixed = |f: Vec<u8>| move |_: usize, buf: &mut Vec<u8>| buf.clone_from(&f);
    let fresh = |class: u8| {
        let f = est.clone();
        move |i: usize, buf: &mut Vec<u8>| {
            buf.clone_from(&f);
            new_client(buf, i, class);
        }
    };
    let mut rows = Vec::new();
    for (class, want, one_frame, many_frame) in [
        (
            "established v4 ipip, 100,000 VIPs",
            XDP_TX,
            Box::new(fixed(est.clone())) as FrameFor<'_>,
            Box::new(fixed(est.clone())) as FrameFor<'_>,
        ),
        (
            "new flow v4 ipip, 100,000 VIPs",
            XDP_TX,
            Box::new(fresh(30)),
            Box::new(fresh(31)),
        ),
        (
            "non-VIP pass (v4), 100,000 VIPs",
            XDP_PASS,
            Box::new(fixed(nonvip.clone())),
            Box::new(fixed(nonvip.clone())),
        ),
    ] {
        let m = measure(
            ifx,
            calls,
            &mut [
                Subject {
                    prog: one.program(),
                    want,
                    frame_for: one_frame,
                },
                Subject {
                    prog: many.program(),
                    want,
                    frame_for: many_frame,
                },
            ],
        )?;
        rows.push(Row {
            class,
            ns: m[1],
            floor: "the same, 1 VIP",
            floor_ns: m[0],
            target: Some(FLAT_TARGET),
        });
    }
    Ok(rows)
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "machine: {}, kernel {}",
        xlb_tests::peers::machine(),
        kernel.trim()
    )
}

/// Maglev table size for the control-plane benchmark: the default 65537
/// would need 5 GB of rows for 10,000 VIPs; 1021 > 100 x 10 backends keeps
/// Maglev's 1% disruption bound.
const RECONCILE_M: u32 = 1021;

struct ReconcileNumbers {
    changes: usize,
    change_median_ms: f64,
    change_p99_ms: f64,
    full_sync_ms: f64,
}

/// A config of `vips` VIPs with 10 backends each; VIP 0 has `first_backends`.
fn big_config(vips: u32, first_backends: u32) -> String {
    xlb_tests::many_vips::ManyVips {
        first_backends,
        ..xlb_tests::many_vips::ManyVips::new(vips, 10, RECONCILE_M)
    }
    .toml()
}

fn reconcile_bench() -> Result<ReconcileNumbers> {
    use lb_userspace::{config, desired::Desired, xdp::reconcile::Applied};
    // One backend removed from, then restored to, one VIP among 1,000.
    let (full, less) = (big_config(1_000, 10), big_config(1_000, 9));
    let cfg = config::parse(&full, "bench.toml").map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = lb_userspace::daemon::settings(&cfg, None);
    let mut b = Balancer::load(&Settings {
        pin_dir: None,
        ..settings
    })?;
    let mut a = Applied::empty(&b.settings);
    a.reconcile(&mut b.maps, &Desired::from_config(&cfg))?;
    let mut ms = Vec::new();
    for i in 0..100 {
        let text = if i % 2 == 0 { &less } else { &full };
        let t = Instant::now();
        let c = config::parse(text, "bench.toml").map_err(|e| anyhow::anyhow!("{e}"))?;
        let r = a.reconcile(&mut b.maps, &Desired::from_config(&c))?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
        ensure!(
            r.writes() == 2,
            "change {i} wrote {} entries, expected 2",
            r.writes()
        );
    }
    ms.sort_by(f64::total_cmp);
    drop(b);

    let cfg =
        config::parse(&big_config(10_000, 10), "bench.toml").map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = lb_userspace::daemon::settings(&cfg, None);
    let mut b = Balancer::load(&Settings {
        pin_dir: None,
        ..settings
    })?;
    let mut a = Applied::empty(&b.settings);
    let d = Desired::from_config(&cfg);
    let t = Instant::now();
    let r = a.reconcile(&mut b.maps, &d)?;
    let full_sync_ms = t.elapsed().as_secs_f64() * 1e3;
    ensure!(
        r.vips_added == 10_000 && r.backend_writes == 100_000,
        "full sync wrote {r:?}"
    );
    Ok(ReconcileNumbers {
        changes: ms.len(),
        change_median_ms: ms[ms.len() / 2],
        change_p99_ms: ms[ms.len() * 99 / 100],
        full_sync_ms,
    })
}
