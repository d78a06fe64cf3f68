//! The smoke run of `cargo xtask bench peers --quick`: every configuration
//! of the peers benchmark (the direct floor, xlb in both XDP modes and both
//! DSR modes, kube-proxy's iptables mode on both back-ends and its nftables
//! mode) set up beside 1,000 Services, verified to forward (every backend
//! reached, replies by the expected path, every UDP datagram delivered),
//! and driven briefly. Its numbers are printed, never compared: timing is
//! the benchmark's job.

use xlb_tests::{
    netns::privileged,
    peers::{self, Options, Path, report},
};

#[test]
fn every_configuration_forwards_beside_a_thousand_services() {
    if !privileged("every_configuration_forwards_beside_a_thousand_services") {
        return;
    }
    let o = Options::quick();
    let r = peers::run(&o, "cargo test --test peers").expect("the quick peers run");
    let measured: Vec<Path> = r.rows.iter().map(|row| row.path).collect();
    assert_eq!(measured, Path::HOST.to_vec(), "a row per configuration");
    for row in &r.rows {
        assert!(
            row.connect_us.median > 0.0 && row.http.requests_per_s > 0.0 && row.udp_pps > 0.0,
            "{}: every measurement carried traffic: {row:?}",
            row.path
        );
        assert_eq!(row.load.is_some(), row.path != Path::Direct, "{row:?}");
    }
    // The report renders from a real run, charts included.
    let dir = std::env::temp_dir().join(format!("xlb-peers-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let md = report::markdown(&r);
    let charts = report::charts(&r, &dir).expect("charts");
    let _ = std::fs::remove_dir_all(&dir);
    println!("{md}");
    assert!(!charts.is_empty());
    for p in Path::HOST {
        assert!(md.contains(&p.to_string()), "{p} in the table:\n{md}");
    }
}
