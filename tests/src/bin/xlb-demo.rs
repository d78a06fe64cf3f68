//! `cargo xtask run`: xlb balancing real HTTP in a veth topology.
//!
//! Builds the topology (a client, one load balancer and three DSR backends
//! in their own namespaces on a bridge; see `xlb_tests::topology`), starts
//! `xlb run` on the load balancer with the embedded config below, sends a
//! few hundred HTTP requests with curl, and prints where they went, the
//! balancer's counters, and a capture showing that no reply crossed the
//! balancer. Then it stays up, printing commands to try by hand, until
//! Ctrl-C (or exits at once with `--once`). Everything it made is removed
//! on the way out; a run killed outright is cleaned up by the next one.

use std::{
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Result, bail, ensure};
use xlb_tests::{
    netns::PinDir,
    topology::{
        Ns, Topology, VIP4, VIP6, capture_replies, captured, curl, start_lb, stop_lb, workspace_bin,
    },
};

/// The demo's configuration: one IPv4 and one IPv6 VIP on port 80, three
/// backends each, IPIP to the backends (which run `xlb decap`); and iperf3's
/// port on one backend in L2 mode (iperf3's control and data connections
/// must reach the same server). Generic XDP:
/// on a veth, native XDP_TX only reaches a peer that runs NAPI, which the
/// demo's bridge ports need not.
const CONFIG: &str = r#"[dataplane]
interfaces = ["eth0"]
xdp_mode = "generic"
pin_path = "@PINS@"
encap = "ipip"

[metrics]
listen = "127.0.0.1:9810"

[[vip]]
address = "10.99.0.1"
port = 80
protocol = "tcp"
backends = [{ address = "10.77.0.21" }, { address = "10.77.0.22" }, { address = "10.77.0.23" }]

[[vip]]
address = "10.99.0.1"
port = 5201
protocol = "tcp"
encap = "l2"
backends = [{ address = "10.77.0.21" }]

[[vip]]
address = "fd99::1"
port = 80
protocol = "tcp"
backends = [{ address = "fd77::21" }, { address = "fd77::22" }, { address = "fd77::23" }]
"#;

const REQUESTS: usize = 300;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() -> Result<()> {
    let once = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--once") => true,
        Some(other) => bail!("unknown argument {other:?}; usage: xlb-demo [--once]"),
    };
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "the demo needs root: it makes network namespaces and loads XDP programs"
    );
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    println!("building the topology: client, load balancer, 3 backends, bridge ...");
    let mut t = Topology::new(1, 3);
    t.start_backends(true);
    let pins = PinDir::new();
    let cfg = t.dir.join("xlb.toml");
    std::fs::write(
        &cfg,
        CONFIG.replace("@PINS@", &pins.path.display().to_string()),
    )?;
    println!("starting xlb run on the load balancer ...");
    let lb = start_lb(&t, 0, &cfg, "xlb.log");
    let cap = capture_replies(&t, 0);
    let v4 = curl(&t, IpAddr::V4(VIP4), REQUESTS);
    let v6 = curl(&t, IpAddr::V6(VIP6), REQUESTS);
    let replies = captured(&t, 0, cap);
    let (code, iperf, err) = t.run_in(
        Ns::Client,
        "iperf3",
        &["-c", &VIP4.to_string(), "-t", "2", "-J"],
    );
    let j: serde_json::Value = serde_json::from_str(&iperf).unwrap_or_default();
    let gbps = j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9;
    let retrans = j["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);

    println!(
        "\n{REQUESTS} HTTP requests to each VIP, each on a new connection (curl from the client namespace):\n"
    );
    println!(
        "  {:<16} {:<8} {:>8} {:>7}",
        "VIP", "backend", "requests", "share"
    );
    for (vip, seen) in [(format!("{VIP4}:80"), &v4), (format!("[{VIP6}]:80"), &v6)] {
        for (backend, n) in seen {
            println!(
                "  {vip:<16} {backend:<8} {n:>8} {:>6.1}%",
                100.0 * *n as f64 / REQUESTS as f64
            );
        }
    }
    let xlb = workspace_bin("lb-userspace", "xlb");
    let (_, status, _) = t.run_in(
        Ns::Lb(0),
        &xlb,
        &["status", "--pin-path", pins.path.to_str().unwrap_or("")],
    );
    println!("\nthe load balancer (xlb status):\n");
    for line in status.lines() {
        println!("  {line}");
    }
    println!(
        "\niperf3, 2 s through the balancer (L2 DSR to be0): {gbps:.2} Gbit/s, {retrans} retransmissions"
    );
    println!(
        "\nreplies that crossed the load balancer: {} (tcpdump on its bridge port, frames with a VIP as source);\n\
         the backends answered the client directly (DSR), the balancer only saw client -> VIP.",
        replies.len()
    );

    if !once {
        println!("\nTry it by hand (as root, in another terminal):");
        println!("  ip netns exec {} curl http://{VIP4}/", t.client.name);
        println!("  ip netns exec {} curl 'http://[{VIP6}]/'", t.client.name);
        println!(
            "  {} status --pin-path {}",
            xlb.display(),
            pins.path.display()
        );
        println!("  bpftool map dump pinned {}/XLB_VIPS", pins.path.display());
        println!(
            "  ip netns exec {} curl -s http://127.0.0.1:9810/metrics",
            t.lbs[0].name
        );
        println!("\nCtrl-C to stop and remove everything.");
        while !STOP.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("stopping");
    }
    stop_lb(&t, 0, lb, &pins);
    ensure!(
        code == 0,
        "iperf3 through the balancer failed: {err}{iperf}"
    );
    ensure!(
        replies.is_empty(),
        "{} replies crossed the load balancer",
        replies.len()
    );
    Ok(())
}
