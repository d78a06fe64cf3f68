//! The `xlb` daemon as an operator runs it: in a namespace, attached to a
//! veth, with real UDP traffic from a client namespace.
//!
//! ```text
//!  client ns: c0 10.0.0.2 ──veth── lb0 10.0.0.1 (LB ns, xlb run, XDP)
//!  route 10.99.0.0/24 via 10.0.0.1          backends 10.0.0.17/.18 (static neighbours)
//! ```

use std::{
    net::UdpSocket,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use lb_common::Outcome;
use lb_userspace::xdp::Maps;
use xlb_tests::{
    daemon::{Daemon, free_port, http_get, metric, xlb_bin},
    dump::dump,
    netns::{NetNs, PinDir, privileged},
};

struct Topo {
    lb: NetNs,
    client: NetNs,
    pins: PinDir,
    dir: tempdir::Dir,
    port: u16,
}

mod tempdir {
    /// A directory under /tmp removed on drop.
    pub(crate) struct Dir(pub(crate) std::path::PathBuf);
    impl Dir {
        pub(crate) fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("xlbt-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("temp dir");
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn topo(tag: &str) -> Topo {
    let lb = NetNs::new();
    let client = NetNs::new();
    lb.ip(&["link", "add", "lb0", "type", "veth", "peer", "name", "c0"]);
    lb.ip(&["link", "set", "c0", "netns", &client.name]);
    lb.ip(&["addr", "add", "10.0.0.1/24", "dev", "lb0"]);
    lb.ip(&["link", "set", "lb0", "up"]);
    client.ip(&["addr", "add", "10.0.0.2/24", "dev", "c0"]);
    client.ip(&["link", "set", "c0", "up"]);
    client.ip(&["route", "add", "10.99.0.0/24", "via", "10.0.0.1"]);
    lb.static_neighbours(
        "lb0",
        &[
            ("10.0.0.17", "02:00:00:00:00:11"),
            ("10.0.0.18", "02:00:00:00:00:12"),
        ],
    );
    lb.sysctl("net.ipv4.ip_forward", "1");
    Topo {
        lb,
        client,
        pins: PinDir::new(),
        dir: tempdir::Dir::new(tag),
        port: free_port(),
    }
}

fn config(t: &Topo, backends: &str) -> String {
    format!(
        r#"[dataplane]
interfaces = ["lb0"]
xdp_mode = "native"
pin_path = "{pins}"
state_dir = "{state}"
maglev_table_size = 251
max_vips = 8
max_backends = 64
flow_table_size = 4096
ipip_source_v4 = "10.0.0.1"

[metrics]
listen = "127.0.0.1:{port}"

[[vip]]
address = "10.99.0.1"
port = 53
protocol = "udp"
backends = [{backends}]
"#,
        pins = t.pins.path.display(),
        state = std::env::temp_dir()
            .join(t.pins.path.file_name().unwrap())
            .display(),
        port = t.port
    )
}

const TWO: &str = r#"{ address = "10.0.0.17" }, { address = "10.0.0.18", weight = 2 }"#;

fn write_config(t: &Topo, text: &str) -> PathBuf {
    let p = t.dir.0.join("xlb.toml");
    let tmp = t.dir.0.join("xlb.toml.tmp");
    std::fs::write(&tmp, text).expect("write config");
    std::fs::rename(&tmp, &p).expect("rename config");
    p
}

fn start(t: &Topo, cfg: &Path, extra: &[&str], log: &str) -> Daemon {
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    let mut d = Daemon::spawn(&t.lb, &args, &t.dir.0.join(log));
    d.wait_for_log("reconciled", Duration::from_secs(20));
    d
}

fn maps(t: &Topo) -> Maps {
    Maps::open_pinned(&t.pins.path).expect("pinned maps")
}

/// Sends UDP datagrams of one flow to the VIP from the client namespace
/// every `every` until stopped; returns how many were sent.
fn sender(
    t: &Topo,
    every: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> std::thread::JoinHandle<()> {
    let path = format!("/var/run/netns/{}", t.client.name);
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        assert_eq!(
            unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) },
            0
        );
        let s = UdpSocket::bind("10.0.0.2:40053").expect("bind client socket");
        while !stop.load(Ordering::Relaxed) {
            if s.send_to(b"ping", "10.99.0.1:53").is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
            std::thread::sleep(every);
        }
    })
}

fn xlb(ns: &NetNs, args: &[&str]) -> (i32, String, String) {
    let out = ns.command(xlb_bin()).args(args).output().expect("run xlb");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn tx(t: &Topo) -> u64 {
    maps(t).outcome(Outcome::Tx).unwrap()
}

/// Waits until the data plane has counted `n` forwarded packets.
fn await_tx(t: &Topo, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = tx(t);
        if got >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_9_and_restart_lose_no_packet_and_keep_the_flow() {
    if !privileged("kill_9_and_restart_lose_no_packet_and_keep_the_flow") {
        return;
    }
    let t = topo("restart");
    let cfg = write_config(&t, &config(&t, TWO));
    let mut d = start(&t, &cfg, &[], "first.log");

    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let s = sender(&t, Duration::from_millis(1), stop.clone(), sent.clone());
    std::thread::sleep(Duration::from_millis(400));
    let flow_before: Vec<_> = maps(&t).flows.iter().map(|e| e.unwrap()).collect();
    assert_eq!(
        flow_before.len(),
        1,
        "one UDP flow expected, got {flow_before:?}"
    );

    d.kill9();
    std::thread::sleep(Duration::from_millis(500));
    let while_dead = tx(&t);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        tx(&t) > while_dead,
        "the pinned program stopped forwarding when the daemon died"
    );

    let mut d = start(&t, &cfg, &[], "second.log");
    assert!(
        d.log_text().contains("adopted pinned maps"),
        "second daemon did not adopt: {}",
        d.log_text()
    );
    assert!(
        d.log_text()
            .contains("swapped the new program into the pinned link"),
        "{}",
        d.log_text()
    );
    std::thread::sleep(Duration::from_millis(400));
    stop.store(true, Ordering::Relaxed);
    s.join().unwrap();

    let sent = sent.load(Ordering::Relaxed);
    let forwarded = await_tx(&t, sent);
    assert_eq!(
        forwarded, sent,
        "sent {sent} datagrams, the data plane forwarded {forwarded}"
    );
    let m = maps(&t);
    for o in [
        Outcome::DropNoNeigh,
        Outcome::DropNoBackend,
        Outcome::DropInternal,
    ] {
        assert_eq!(m.outcome(o).unwrap(), 0, "{o:?}");
    }
    let flow_after: Vec<_> = m.flows.iter().map(|e| e.unwrap()).collect();
    assert_eq!(
        flow_after, flow_before,
        "the flow table did not survive the restart"
    );
    assert_eq!(
        m.outcome(Outcome::FlowMiss).unwrap(),
        1,
        "the flow was looked up anew after the restart"
    );

    // SIGTERM: a clean exit that leaves the data plane forwarding.
    assert_eq!(d.terminate(), Some(0), "log:\n{}", d.log_text());
    let before = tx(&t);
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let s = sender(&t, Duration::from_millis(2), stop.clone(), sent.clone());
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    s.join().unwrap();
    let n = sent.load(Ordering::Relaxed);
    assert_eq!(
        await_tx(&t, before + n),
        before + n,
        "not forwarding after SIGTERM"
    );

    // `xlb stop` detaches and removes the pins.
    let (code, out, err) = xlb(
        &t.lb,
        &["stop", "--pin-path", t.pins.path.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("detached from lb0"), "{out}");
    assert!(!t.pins.path.join(lb_common::names::VIPS).exists());
    let link = std::process::Command::new("ip")
        .args(["-n", &t.lb.name, "link", "show", "lb0"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&link.stdout).contains("xdp"),
        "still attached after xlb stop"
    );
}

#[test]
fn bad_reload_keeps_maps_byte_for_byte_and_counts_the_error() {
    if !privileged("bad_reload_keeps_maps_byte_for_byte_and_counts_the_error") {
        return;
    }
    let t = topo("reload");
    let cfg = write_config(&t, &config(&t, TWO));
    let mut d = start(&t, &cfg, &["--watch-interval-ms", "3600000"], "reload.log");
    let before = dump(&maps(&t));

    write_config(
        &t,
        &config(&t, r#"{ address = "10.0.0.17", weight = 70000 }"#),
    );
    d.signal(libc::SIGHUP);
    d.wait_for_log("config rejected", Duration::from_secs(10));
    assert!(
        d.log_text().contains("xlb.toml:"),
        "the rejection names the file and line: {}",
        d.log_text()
    );
    assert_eq!(
        dump(&maps(&t)),
        before,
        "a rejected config changed the maps"
    );
    let (code, body) = http_get(&t.lb, t.port, "/metrics");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        metric(&body, "xlb_config_reload_errors_total"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(metric(&body, "xlb_reconciles_total"), Some(1.0), "{body}");

    // A good config is applied on the next SIGHUP.
    write_config(&t, &config(&t, r#"{ address = "10.0.0.18", weight = 2 }"#));
    d.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.log_text().matches("reconciled").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "second config not applied: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
    let after = dump(&maps(&t));
    assert_eq!(after.backends.values().filter(|b| b.flags != 0).count(), 1);
    assert_eq!(d.terminate(), Some(0));
    let _ = xlb(
        &t.lb,
        &["stop", "--pin-path", t.pins.path.to_str().unwrap()],
    );
}

#[test]
fn file_change_reloads_and_status_json_reports_the_state() {
    if !privileged("file_change_reloads_and_status_json_reports_the_state") {
        return;
    }
    let t = topo("status");
    let cfg = write_config(&t, &config(&t, TWO));
    let mut d = start(&t, &cfg, &["--watch-interval-ms", "100"], "status.log");
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let s = sender(&t, Duration::from_millis(5), stop.clone(), sent.clone());
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    s.join().unwrap();
    let n = sent.load(Ordering::Relaxed);
    await_tx(&t, n);

    // Drain 10.0.0.17 by editing the file: no signal needed.
    write_config(
        &t,
        &config(
            &t,
            r#"{ address = "10.0.0.17", weight = 0 }, { address = "10.0.0.18", weight = 2 }"#,
        ),
    );
    d.wait_for_log("changed: reloading", Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.log_text().matches("reconciled").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "edited config not applied: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }

    let (code, out, err) = xlb(
        &t.lb,
        &[
            "status",
            "--json",
            "--pin-path",
            t.pins.path.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status --json is JSON");
    assert_eq!(v["dataplane"], "xdp");
    assert_eq!(
        v["interfaces"],
        serde_json::json!([{ "iface": "lb0", "mode": "native" }])
    );
    let vip = &v["vips"][0];
    assert_eq!(
        (
            vip["vip"].as_str(),
            vip["encap"].as_str(),
            vip["packets"].as_u64()
        ),
        (Some("10.99.0.1:53/udp"), Some("ipip"), Some(n))
    );
    let b = vip["backends"].as_array().expect("backends");
    let summary: Vec<(String, u64, String)> = b
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().to_string(),
                b["weight"].as_u64().unwrap(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("10.0.0.17".into(), 0, "draining".into()),
            ("10.0.0.18".into(), 2, "active".into())
        ]
    );
    let per_backend: u64 = b.iter().map(|b| b["packets"].as_u64().unwrap()).sum();
    assert_eq!(per_backend, n, "per-backend packets add up to the VIP's");
    assert_eq!(v["outcomes"]["tx"].as_u64(), Some(n));
    assert_eq!(v["flow_entries"].as_u64(), Some(1));

    let (code, table, _) = xlb(
        &t.lb,
        &["status", "--pin-path", t.pins.path.to_str().unwrap()],
    );
    assert_eq!(code, 0);
    assert!(
        table.contains("10.99.0.1:53/udp")
            && table.contains("draining")
            && table.contains("lb0 (XDP native)"),
        "{table}"
    );
    assert_eq!(d.terminate(), Some(0));
    let _ = xlb(
        &t.lb,
        &["stop", "--pin-path", t.pins.path.to_str().unwrap()],
    );
}

/// Runs `xlb ARGS` in the LB namespace with every capability but `keep`
/// dropped from the bounding and effective sets (capsh).
fn xlb_with_caps(t: &Topo, keep: &[&str], args: &[&str]) -> Option<(i32, String)> {
    if std::process::Command::new("capsh")
        .arg("--help")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIPPED capability part: capsh not installed (cargo xtask setup installs libcap2-bin)"
        );
        return None;
    }
    let print = std::process::Command::new("capsh")
        .arg("--print")
        .output()
        .expect("capsh --print");
    let text = String::from_utf8_lossy(&print.stdout);
    let all = text
        .lines()
        .find_map(|l| l.strip_prefix("Bounding set ="))
        .expect("bounding set");
    let drop: Vec<&str> = all
        .split(',')
        .map(str::trim)
        .filter(|c| !keep.contains(c))
        .collect();
    let mut line = xlb_bin().display().to_string();
    for a in args {
        line.push(' ');
        line.push_str(a);
    }
    let out =
        t.lb.command("capsh")
            .arg(format!("--drop={}", drop.join(",")))
            .args(["--", "-c", &format!("timeout -s INT 3 {line}")])
            .output()
            .expect("capsh");
    Some((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn capabilities_are_exactly_bpf_net_admin_perfmon() {
    if !privileged("capabilities_are_exactly_bpf_net_admin_perfmon") {
        return;
    }
    let t = topo("caps");
    let cfg = write_config(&t, &config(&t, TWO));
    let cfg = cfg.to_str().unwrap();
    let Some((code, err)) =
        xlb_with_caps(&t, &["cap_bpf", "cap_net_admin"], &["run", "--config", cfg])
    else {
        return;
    };
    assert_eq!(code, 1, "{err}");
    // `auto` then tries IPVS, which this kernel lacks: both reasons.
    assert!(
        err.contains("XDP: missing capabilities CAP_PERFMON") && err.contains("IPVS: "),
        "{err}"
    );
    assert!(
        !t.pins.path.join(lb_common::names::VIPS).exists(),
        "nothing may be half set up"
    );

    // With exactly the three it loads, attaches, reconciles, and stops on
    // SIGINT (from timeout) leaving the data plane in place.
    let (code, err) = xlb_with_caps(
        &t,
        &["cap_bpf", "cap_net_admin", "cap_perfmon"],
        &["run", "--config", cfg],
    )
    .unwrap();
    assert!(
        err.contains("reconciled") && err.contains("stopping"),
        "exit {code}: {err}"
    );
    assert!(
        t.pins.path.join("links/lb0@native").exists(),
        "not attached:\n{err}"
    );
    let _ = xlb(
        &t.lb,
        &["stop", "--pin-path", t.pins.path.to_str().unwrap()],
    );
}

#[test]
fn check_reports_file_line_column_and_exits_1() {
    let dir = tempdir::Dir::new("check");
    let bad = dir.0.join("bad.toml");
    std::fs::write(&bad, "[dataplane]\nmaglev_table_size = 65536\n").unwrap();
    let out = std::process::Command::new(xlb_bin())
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("{}:2:21: ", bad.display())) && err.contains("prime"),
        "{err}"
    );
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/xlb.toml");
    let out = std::process::Command::new(xlb_bin())
        .args(["check", "--config"])
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (2 VIPs, 5 backends)"));
}

#[test]
fn pins_from_an_incompatible_build_are_replaced_with_a_reason() {
    if !privileged("pins_from_an_incompatible_build_are_replaced_with_a_reason") {
        return;
    }
    let t = topo("stale");
    let cfg = write_config(&t, &config(&t, TWO));
    let mut d = start(&t, &cfg, &[], "stale1.log");
    assert_eq!(d.terminate(), Some(0));
    // Another Maglev array size changes its shape: not adoptable.
    let cfg = write_config(
        &t,
        &config(&t, TWO).replace(
            "maglev_table_size = 251",
            "maglev_table_size = 251\nmaglev_slots = 3000",
        ),
    );
    let mut d = start(&t, &cfg, &["--log-format", "json"], "stale2.log");
    let log = d.log_text();
    assert!(
        log.contains("replacing pinned maps from an incompatible xlb: XLB_MAGLEV is Array key 4 value 8 max 2048, this build wants Array key 4 value 8 max 1500"),
        "{log}"
    );
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("--log-format json line is not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    assert_eq!(
        Maps::open_pinned(&t.pins.path)
            .expect("new pins")
            .maglev_slots(),
        3000
    );
    assert_eq!(d.terminate(), Some(0));
    let _ = xlb(
        &t.lb,
        &["stop", "--pin-path", t.pins.path.to_str().unwrap()],
    );
}

/// Polls `/healthz` until it answers `code` with a body containing `want`.
fn await_health(t: &Topo, d: &Daemon, code: u16, want: &str) {
    let limit = xlb_tests::vm::patience(Duration::from_secs(15));
    let deadline = Instant::now() + limit;
    let mut last = (0, String::new());
    while Instant::now() < deadline {
        last = http_get(&t.lb, t.port, "/healthz");
        if last.0 == code && last.1.contains(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "/healthz never answered {code} with {want:?} within {limit:?}; last {last:?}; log:\n{}",
        d.log_text()
    );
}

#[test]
fn healthz_is_ready_only_while_attached_and_reconciled() {
    if !privileged("healthz_is_ready_only_while_attached_and_reconciled") {
        return;
    }
    let t = topo("health");
    let good = config(&t, TWO);
    let cfg = write_config(&t, &good);
    let mut d = start(&t, &cfg, &["--watch-interval-ms", "3600000"], "health.log");
    await_health(&t, &d, 200, "ok");

    // A VIP the data plane cannot take (IPIP to an IPv6 backend, but lb0
    // has no global IPv6 address to send from): the reconcile fails, the
    // rest keeps serving, and the probe says why it is not ready.
    let v6 = format!(
        "{good}\n[[vip]]\naddress = \"2001:db8:99::1\"\nport = 53\nprotocol = \"udp\"\nbackends = [{{ address = \"2001:db8::17\" }}]\n"
    );
    write_config(&t, &v6);
    d.signal(libc::SIGHUP);
    await_health(&t, &d, 503, "the last reconcile failed");
    await_health(&t, &d, 503, "no v6 source address for IPIP");
    let (_, body) = http_get(&t.lb, t.port, "/metrics");
    assert!(
        metric(&body, "xlb_config_reload_errors_total").is_some_and(|n| n >= 1.0),
        "{body}"
    );

    // Back to a config it can apply: ready again.
    write_config(&t, &good);
    d.signal(libc::SIGHUP);
    await_health(&t, &d, 200, "ok");

    // The program detached behind the daemon's back. (`ip link set dev lb0
    // xdp off` cannot do it: the kernel refuses to replace a bpf_link.)
    let link = t.pins.path.join("links").join("lb0@native");
    let out = std::process::Command::new("bpftool")
        .args(["link", "detach", "pinned", link.to_str().unwrap()])
        .output()
        .expect("bpftool");
    assert!(
        out.status.success(),
        "bpftool link detach: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    await_health(&t, &d, 503, "XDP is no longer attached to lb0");
    assert_eq!(d.terminate(), Some(0), "{}", d.log_text());
    let _ = xlb(
        &t.lb,
        &["stop", "--pin-path", t.pins.path.to_str().unwrap()],
    );
}
