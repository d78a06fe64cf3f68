//! End to end: real TCP from a client namespace through `xlb run` on a veth
//! to DSR backends in their own namespaces (see `xlb_tests::topology`).

use std::{collections::BTreeMap, net::IpAddr, path::PathBuf, process::Child, time::Duration};

use lb_common::Outcome;
use lb_userspace::xdp::Maps;
use xlb_tests::{
    netns::{PinDir, privileged},
    topology::{Ns, Topology, VIP4, VIP6, backend4, backend6, workspace_bin},
};

/// The daemon's config for LB `lb`: both VIPs on every port, one encap.
fn config(
    t: &Topology,
    pins: &PinDir,
    encap: &str,
    weights: &[u32],
    xdp_mode: &str,
    extra_vip: &str,
) -> PathBuf {
    let list = |v6: bool| -> String {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let a = if v6 {
                    backend6(i).to_string()
                } else {
                    backend4(i).to_string()
                };
                format!("{{ address = \"{a}\", weight = {w} }}")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = format!(
        r#"[dataplane]
interfaces = ["eth0"]
xdp_mode = "{xdp_mode}"
pin_path = "{pins}"
encap = "{encap}"
maglev_table_size = 4099
max_vips = 8
max_backends = 64
flow_table_size = 65536

[metrics]
listen = "127.0.0.1:9810"

[[vip]]
address = "{VIP4}"
port = 0
protocol = "tcp"
backends = [{b4}]

[[vip]]
address = "{VIP6}"
port = 0
protocol = "tcp"
backends = [{b6}]
{extra_vip}"#,
        pins = pins.path.display(),
        b4 = list(false),
        b6 = list(true),
    );
    let path = t.dir.join(format!(
        "xlb-{}.toml",
        pins.path.file_name().unwrap().to_string_lossy()
    ));
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// Starts `xlb run` in LB `i` and waits for its first reconcile.
fn start_lb(t: &Topology, i: usize, cfg: &PathBuf, log: &str) -> Child {
    let xlb = workspace_bin("lb-userspace", "xlb");
    let c = t.spawn_in(
        Ns::Lb(i),
        &xlb,
        &["run", "--config", cfg.to_str().unwrap()],
        log,
    );
    t.wait_log(log, "reconciled");
    c
}

fn stop_lb(t: &Topology, i: usize, mut c: Child, pins: &PinDir) {
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let _ = c.wait();
    let xlb = workspace_bin("lb-userspace", "xlb");
    let (code, out, err) = t.run_in(
        Ns::Lb(i),
        &xlb,
        &["stop", "--pin-path", pins.path.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
}

/// `n` HTTP requests from the client with curl, each on a new connection;
/// the backend names that answered, counted.
fn curl(t: &Topology, vip: IpAddr, n: usize) -> BTreeMap<String, usize> {
    let host = match vip {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("[{a}]"),
    };
    let list = t
        .dir
        .join(format!("urls-{host}.txt").replace([':', '[', ']'], "_"));
    let urls: String = (0..n)
        .map(|i| format!("url = \"http://{host}/?r={i}\"\n"))
        .collect();
    std::fs::write(&list, urls).unwrap();
    let (code, out, err) = t.run_in(
        Ns::Client,
        "curl",
        &[
            "-sS",
            "-g",
            "--max-time",
            "5",
            "-H",
            "Connection: close",
            "-K",
            list.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "curl failed: {err}");
    let mut seen = BTreeMap::new();
    for line in out.lines() {
        *seen.entry(line.to_string()).or_default() += 1;
    }
    assert_eq!(
        seen.values().sum::<usize>(),
        n,
        "{n} requests, answers: {seen:?} {err}"
    );
    seen
}

/// Each backend's share within 5 standard deviations of its weight's share.
fn assert_shares(seen: &BTreeMap<String, usize>, weights: &[u32], what: &str) {
    let n: usize = seen.values().sum();
    let total: u32 = weights.iter().sum();
    for (i, &w) in weights.iter().enumerate() {
        let got = seen.get(&format!("be{i}")).copied().unwrap_or(0) as f64;
        let p = f64::from(w) / f64::from(total);
        let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
        assert!(
            (got - mean).abs() <= 5.0 * sd.max(1.0),
            "{what}: be{i} (weight {w}) answered {got} of {n}, expected {mean:.0} ± {:.0}: {seen:?}",
            5.0 * sd
        );
    }
}

/// tcpdump on the LB's bridge port: every frame with a VIP as IP source,
/// i.e. a reply crossing the load balancer.
fn capture_replies(t: &Topology, lb: usize) -> Child {
    let port = format!("p-l{lb}");
    let filter = format!("src host {VIP4} or src host {VIP6}");
    let c = t
        .bridge
        .command("tcpdump")
        .args(["-i", &port, "-n", "-l", "-p", &filter])
        .stdout(std::fs::File::create(t.dir.join(format!("capture-{lb}.txt"))).unwrap())
        .stderr(std::fs::File::create(t.dir.join(format!("capture-{lb}.err"))).unwrap())
        .spawn()
        .expect("tcpdump");
    t.wait_log(&format!("capture-{lb}.err"), "listening on");
    c
}

fn captured(t: &Topology, lb: usize, mut c: Child) -> Vec<String> {
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let _ = c.wait();
    t.log(&format!("capture-{lb}.txt"))
        .lines()
        .filter(|l| l.contains(" > "))
        .map(String::from)
        .collect()
}

#[test]
fn http_through_both_dsr_modes_ipv4_and_ipv6() {
    if !privileged("http_through_both_dsr_modes_ipv4_and_ipv6") {
        return;
    }
    let mut t = Topology::new(1, 3);
    t.start_backends(true);
    let weights = [1, 1, 2];
    for encap in ["ipip", "l2"] {
        let pins = PinDir::new();
        let cfg = config(&t, &pins, encap, &weights, "generic", "");
        let lb = start_lb(&t, 0, &cfg, &format!("lb-{encap}.log"));
        let cap = capture_replies(&t, 0);
        let v4 = curl(&t, IpAddr::V4(VIP4), 1000);
        let v6 = curl(&t, IpAddr::V6(VIP6), 1000);
        let replies = captured(&t, 0, cap);
        assert_shares(&v4, &weights, &format!("{encap} IPv4"));
        assert_shares(&v6, &weights, &format!("{encap} IPv6"));
        assert!(
            replies.is_empty(),
            "{encap}: {} replies crossed the LB, e.g. {:?}",
            replies.len(),
            &replies[..replies.len().min(3)]
        );
        let m = Maps::open_pinned(&pins.path, 4099).unwrap();
        let tx = m.outcome(Outcome::Tx).unwrap();
        let vip_packets = m.vip_counters(0).unwrap().packets + m.vip_counters(1).unwrap().packets;
        assert_eq!(
            tx, vip_packets,
            "{encap}: every client->VIP packet forwarded, nothing else"
        );
        assert!(
            tx >= 2000 * 3,
            "{encap}: at least SYN, ACK, request, FIN per connection: {tx}"
        );
        assert_eq!(
            m.outcome(Outcome::PassNoNeigh).unwrap(),
            0,
            "{encap}: neighbours unresolved"
        );
        eprintln!("{encap}: v4 {v4:?} v6 {v6:?}; {tx} packets forwarded, 0 replies through the LB");
        stop_lb(&t, 0, lb, &pins);
    }
}
