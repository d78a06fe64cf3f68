//! xlb beside IPVS, the seed design's data plane, in one guest of the VM
//! harness (`cargo xtask vm-test --kernel 6.1 --test peers_ipvs`): the
//! host's kernel has no IPVS. The peers benchmark's bed and method (see
//! `xlb_tests::peers`), with xlb's own IPVS data plane (DR and TUN)
//! beside its XDP one, at 1,000 Services. The guest's CPUs are emulated
//! (QEMU without KVM), so only ratios between rows mean anything; the
//! table is printed for docs/benchmarks.md and every row is checked to
//! have carried traffic, never timed against a bound.

use std::{io::Write as _, time::Duration};

use xlb_tests::{
    peers::{self, Encap, IptablesBackend, Options, Path, XdpMode, bed::Effort, report},
    vm::needs_ipvs,
};

#[test]
fn xlb_beside_ipvs_in_one_guest() {
    if !needs_ipvs("xlb_beside_ipvs_in_one_guest") {
        return;
    }
    let xlb = |mode, encap| Path::Xlb { mode, encap };
    let o = Options {
        services: vec![1_000],
        paths: vec![
            Path::Direct,
            xlb(XdpMode::Native, Encap::Ipip),
            xlb(XdpMode::Native, Encap::L2),
            xlb(XdpMode::Generic, Encap::Ipip),
            xlb(XdpMode::Generic, Encap::L2),
            Path::Ipvs(Encap::L2),
            Path::Ipvs(Encap::Ipip),
            Path::Iptables(IptablesBackend::Legacy),
        ],
        effort: Effort {
            connects: 500,
            http: Duration::from_secs(2),
            http_connections: 8,
            udp: Duration::from_secs(1),
            paced_pps: 5_000,
            cpu_rounds: 3,
            cpu_window: Duration::from_millis(500),
            flows: 16,
        },
        k8s_sync: Vec::new(),
        quick: false,
    };
    let r = peers::run(&o, "cargo xtask vm-test --kernel 6.1 --test peers_ipvs")
        .expect("xlb and IPVS in one guest");
    // Straight to the output, past the test harness's capture: the table
    // is what this test is for, and it passes.
    let _ = std::io::stdout().write_all(
        format!(
            "\n## xlb beside IPVS (emulated guest)\n\n{}\n",
            report::markdown(&r)
        )
        .as_bytes(),
    );
    for row in &r.rows {
        assert!(
            row.connect_us.median > 0.0 && row.http.requests_per_s > 0.0 && row.udp_pps > 0.0,
            "{}: every measurement carried traffic: {row:?}",
            row.path
        );
    }
}
