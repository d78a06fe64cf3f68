//! The IPVS data plane against a real kernel's IPVS: `xlb run --dataplane
//! ipvs` (and `auto` without BPF) in the demo topology, with real HTTP
//! through DR and TUN, `ipvsadm -Ln` as the independent witness.
//!
//! This machine's kernel has no IPVS, so these run inside Debian kernels
//! booted by `cargo xtask vm-test` (which sets XLB_IN_VM=1: there a kernel
//! without IPVS is a failure, not a skip). The one test that needs a kernel
//! *without* IPVS runs on the host.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Child, Command},
    time::{Duration, Instant},
};

use xlb_tests::{
    daemon::{http_get, metric},
    netns::privileged,
    topology::{Ns, Topology, VIP4, VIP6, backend4, backend6, curl_port, lb4, lb6, workspace_bin},
    vm::{ipvs_available, needs_ipvs},
};

/// A service someone else made by hand; xlb must never touch it.
const FOREIGN: &str = "10.99.0.99:8080";

struct Vip<'a> {
    address: IpAddr,
    port: u16,
    encap: &'a str,
    scheduler: &'a str,
    /// Backend indices with weights.
    backends: &'a [(usize, u32)],
}

fn config(t: &Topology, name: &str, mode: &str, vips: &[Vip<'_>]) -> PathBuf {
    let mut text = format!(
        "[dataplane]\nmode = \"{mode}\"\ninterfaces = [\"eth0\"]\nxdp_mode = \"generic\"\nstate_dir = \"{}\"\npin_path = \"/sys/fs/bpf/{}\"\nmaglev_table_size = 4099\nmax_vips = 8\nmax_backends = 64\nflow_table_size = 4096\n\n[metrics]\nlisten = \"127.0.0.1:9810\"\n\n[announce]\nmode = \"l2\"\n",
        t.dir.join("state").display(),
        t.dir.file_name().unwrap().to_string_lossy(),
    );
    for v in vips {
        let list: Vec<String> = v
            .backends
            .iter()
            .map(|(i, w)| {
                let a = if v.address.is_ipv4() {
                    backend4(*i).to_string()
                } else {
                    backend6(*i).to_string()
                };
                format!("{{ address = \"{a}\", weight = {w} }}")
            })
            .collect();
        text.push_str(&format!(
            "\n[[vip]]\naddress = \"{}\"\nport = {}\nprotocol = \"tcp\"\nencap = \"{}\"\nscheduler = \"{}\"\nbackends = [{}]\n",
            v.address,
            v.port,
            v.encap,
            v.scheduler,
            list.join(", ")
        ));
    }
    let path = t.dir.join(name);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    path
}

/// The demo's VIPs on IPVS: port 80 by direct routing (mh), port 8080
/// through IPIP tunnels (wrr).
fn demo_vips(weights: [u32; 3]) -> Vec<Vip<'static>> {
    let all: &'static [(usize, u32)] = Box::leak(
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| (i, *w))
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let mut v = Vec::new();
    for address in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
        v.push(Vip {
            address,
            port: 80,
            encap: "l2",
            scheduler: "mh",
            backends: all,
        });
        v.push(Vip {
            address,
            port: 8080,
            encap: "ipip",
            scheduler: "wrr",
            backends: all,
        });
    }
    v
}

/// Backends answer on 80 (DR) and 8080 (TUN), and decapsulate IPIP and
/// IP6IP6 with the kernel's own tunnel modules.
fn start_backends(t: &mut Topology) {
    for m in ["ipip", "ip6_tunnel"] {
        let ok = Command::new("modprobe")
            .arg(m)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "modprobe {m}");
    }
    t.start_backends(false);
    for be in &t.backends {
        be.ip(&["link", "set", "tunl0", "up"]);
        be.ip(&["link", "set", "ip6tnl0", "up"]);
        for k in ["all", "default", "tunl0", "eth0"] {
            be.sysctl(&format!("net.ipv4.conf.{k}.rp_filter"), "0");
        }
    }
    t.serve_http_on_backends(8080, 9001);
}

/// `announce = "l2"` on IPVS: the client reaches the VIPs on its own link
/// (no route through the director), resolves them to the director's MAC
/// (answered by the daemon's responder; the kernel was told not to), and
/// real IPVS serves them.
fn l2_through_ipvs(t: &Topology) {
    // The topology's MAC for LB 0 (sysfs here would show the host's).
    let mac = "02:77:00:00:00:02";
    let (_, ignore, _) = t.run_in(Ns::Lb(0), "sysctl", &["-n", "net.ipv4.conf.all.arp_ignore"]);
    assert_eq!(
        ignore.trim(),
        "1",
        "the kernel still answers ARP for local VIPs"
    );
    for (vip, len) in [(IpAddr::V4(VIP4), 32), (IpAddr::V6(VIP6), 128)] {
        let on_link = format!("{vip}/{len}");
        t.ns(Ns::Client)
            .ip(&["route", "replace", &on_link, "dev", "eth0"]);
        assert_eq!(
            resolve(t, vip).as_deref(),
            Some(mac),
            "{vip} not resolved to the director"
        );
        let seen = curl_port(t, vip, 80, 30);
        assert!(!seen.is_empty(), "{vip} on-link: {seen:?}");
    }
    t.route_via(&[0]);
}

/// The MAC the client resolves `vip` to afresh, if any answers.
fn resolve(t: &Topology, vip: IpAddr) -> Option<String> {
    let (_, _, _) = t.run_in(Ns::Client, "ip", &["neigh", "flush", "dev", "eth0"]);
    let url = match vip {
        IpAddr::V4(a) => format!("http://{a}:80/"),
        IpAddr::V6(a) => format!("http://[{a}]:80/"),
    };
    let _ = t.run_in(Ns::Client, "curl", &["-sS", "-g", "--max-time", "2", &url]);
    let (_, out, _) = t.run_in(
        Ns::Client,
        "ip",
        &["neigh", "show", &vip.to_string(), "dev", "eth0"],
    );
    let mut words = out.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_owned)
}

fn xlb() -> PathBuf {
    workspace_bin("lb-userspace", "xlb")
}

fn run_lb(t: &Topology, cfg: &Path, log: &str, extra: &[&str]) -> Child {
    let xlb = xlb();
    let mut args = vec!["run", "--config", cfg.to_str().unwrap()];
    args.extend(extra);
    t.spawn_in(Ns::Lb(0), &xlb, &args, log)
}

/// `ipvsadm -Ln` in the LB's namespace, normalised: service lines as
/// `TCP addr:port sched [flags]`, destinations as `-> addr:port Method
/// weight` (connection counts dropped: they move with traffic).
fn ipvsadm(t: &Topology) -> Vec<String> {
    let (code, out, err) = t.run_in(Ns::Lb(0), "ipvsadm", &["-Ln"]);
    assert_eq!(code, 0, "ipvsadm -Ln: {err}");
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            match f.first() {
                Some(&"TCP" | &"UDP") => Some(f.join(" ")),
                Some(&"->") if f.get(1) != Some(&"RemoteAddress:Port") => {
                    Some(f[..4.min(f.len())].join(" "))
                }
                _ => None,
            }
        })
        .collect()
}

fn expected(vips: &[Vip<'_>], foreign: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut sorted: Vec<&Vip<'_>> = vips.iter().collect();
    sorted.sort_by_key(|v| (v.address, v.port));
    for v in sorted {
        let host = match v.address {
            IpAddr::V4(a) => format!("{a}:{}", v.port),
            IpAddr::V6(a) => format!("[{a}]:{}", v.port),
        };
        let flags = match v.scheduler {
            "mh" => " (mh-port)",
            _ => "",
        };
        out.push(format!("TCP {host} {}{flags}", v.scheduler));
        let method = if v.encap == "l2" { "Route" } else { "Tunnel" };
        let mut dests: Vec<(IpAddr, u32)> = v
            .backends
            .iter()
            .map(|(i, w)| {
                let a = if v.address.is_ipv4() {
                    IpAddr::V4(backend4(*i))
                } else {
                    IpAddr::V6(backend6(*i))
                };
                (a, *w)
            })
            .collect();
        dests.sort();
        for (a, w) in dests {
            let addr = match a {
                IpAddr::V4(a) => format!("{a}:{}", v.port),
                IpAddr::V6(a) => format!("[{a}]:{}", v.port),
            };
            out.push(format!("-> {addr} {method} {w}"));
        }
    }
    if foreign {
        out.extend(foreign_lines());
    }
    out
}

fn foreign_lines() -> Vec<String> {
    vec![
        format!("TCP {FOREIGN} rr"),
        format!("-> {}:8080 Route 3", backend4(0)),
    ]
}

/// ipvsadm lists services in hash order: compare as sets, report as lists.
fn assert_ipvs(t: &Topology, want: &[String], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut got = ipvsadm(t);
        let mut w = want.to_vec();
        got.sort();
        w.sort();
        if got == w {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: ipvsadm -Ln shows\n{}\nwanted\n{}",
            got.join("\n"),
            w.join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn make_foreign(t: &Topology) {
    let real = format!("{}:8080", backend4(0));
    for args in [
        vec!["-A", "-t", FOREIGN, "-s", "rr"],
        vec!["-a", "-t", FOREIGN, "-r", &real, "-g", "-w", "3"],
    ] {
        let (code, _, err) = t.run_in(Ns::Lb(0), "ipvsadm", &args);
        assert_eq!(code, 0, "ipvsadm {args:?}: {err}");
    }
}

fn stop(mut lb: Child) {
    unsafe { libc::kill(lb.id() as i32, libc::SIGTERM) };
    let _ = lb.wait();
}

fn xlb_in_lb(t: &Topology, args: &[&str]) -> (i32, String, String) {
    t.run_in(Ns::Lb(0), xlb(), args)
}

#[test]
fn ipvs_serves_http_by_dr_and_tun_and_owns_only_its_services() {
    if !needs_ipvs("ipvs_serves_http_by_dr_and_tun_and_owns_only_its_services") {
        return;
    }
    let mut t = Topology::new(1, 3);
    start_backends(&mut t);
    make_foreign(&t);
    let vips = demo_vips([1, 1, 2]);
    let cfg = config(&t, "xlb.toml", "ipvs", &vips);
    let lb = run_lb(&t, &cfg, "lb.log", &[]);
    t.wait_log("lb.log", "reconciled");
    assert_ipvs(&t, &expected(&vips, true), "after start");

    for vip in [IpAddr::V4(VIP4), IpAddr::V6(VIP6)] {
        for port in [80, 8080] {
            let seen = curl_port(&t, vip, port, 200);
            assert_eq!(
                seen.len(),
                3,
                "{vip} port {port}: every backend answers: {seen:?}"
            );
        }
    }
    l2_through_ipvs(&t);
    let state_dir = t.dir.join("state");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = xlb_in_lb(
            &t,
            &[
                "status",
                "--json",
                "--state-dir",
                state_dir.to_str().unwrap(),
            ],
        );
        assert_eq!(code, 0, "status: {err}");
        let s: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(s["dataplane"], "ipvs");
        assert_eq!(s["reason"], "requested: ipvs");
        let v4_80 = s["vips"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["vip"] == format!("{VIP4}:80/tcp"))
            .expect("VIP4:80 in status")
            .clone();
        let backends = v4_80["backends"].as_array().unwrap();
        assert_eq!(backends.len(), 3, "{v4_80}");
        assert!(backends.iter().all(|b| b["forward"] == "dr"), "{v4_80}");
        // IPVS folds its per-CPU counters in every 2 s.
        if v4_80["connections"].as_u64().unwrap() >= 200 {
            break;
        }
        assert!(Instant::now() < deadline, "{v4_80}");
        std::thread::sleep(Duration::from_millis(500));
    }

    // Remove backend 1 from the DR VIPs: exactly those two destinations go.
    let mut fewer = demo_vips([1, 1, 2]);
    for v in &mut fewer {
        if v.port == 80 {
            v.backends = &[(0, 1), (2, 2)];
        }
    }
    config(&t, "xlb.toml", "ipvs", &fewer);
    t.wait_log("lb.log", "vips=4 added=0 removed=0 changed=2");
    assert_ipvs(
        &t,
        &expected(&fewer, true),
        "after removing be1 from port 80",
    );
    let seen = curl_port(&t, IpAddr::V4(VIP4), 80, 100);
    assert!(!seen.contains_key("be1"), "{seen:?}");

    // A daemon restart adopts its services: nothing is written.
    stop(lb);
    let lb = run_lb(&t, &cfg, "lb2.log", &[]);
    t.wait_log("lb2.log", "reconciled");
    // cfg was rewritten with `fewer` above.
    assert!(
        t.log("lb2.log")
            .contains("added=0 removed=0 changed=0 writes=0"),
        "{}",
        t.log("lb2.log")
    );
    stop(lb);
    // Stopped, the daemon answers nothing, and the kernel, though IPVS
    // still has the VIPs local, stays quiet.
    for (vip, len) in [(IpAddr::V4(VIP4), 32), (IpAddr::V6(VIP6), 128)] {
        t.ns(Ns::Client)
            .ip(&["route", "replace", &format!("{vip}/{len}"), "dev", "eth0"]);
        assert_eq!(resolve(&t, vip), None, "{vip} answered with no daemon");
    }
    t.route_via(&[0]);

    // `xlb stop` removes xlb's services and VIP routes, never the foreign one.
    let (code, out, err) = xlb_in_lb(&t, &["stop", "--state-dir", state_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "stop: {out}{err}");
    assert_ipvs(&t, &foreign_lines(), "after xlb stop");
    let (_, routes, _) = t.run_in(
        Ns::Lb(0),
        "ip",
        &["route", "show", "table", "local", "proto", "177"],
    );
    assert_eq!(routes.trim(), "", "VIP routes left behind");
}

#[test]
fn ipvs_refusals_leave_nothing_half_applied() {
    if !needs_ipvs("ipvs_refusals_leave_nothing_half_applied") {
        return;
    }
    let mut t = Topology::new(1, 3);
    start_backends(&mut t);
    make_foreign(&t);
    // A scheduler IPVS does not know, on the second of two VIPs: the first
    // one, created before the kernel refused, is taken back.
    let bad = [
        Vip {
            address: IpAddr::V4(VIP4),
            port: 80,
            encap: "l2",
            scheduler: "mh",
            backends: &[(0, 1)],
        },
        Vip {
            address: IpAddr::V4(VIP4),
            port: 8080,
            encap: "l2",
            scheduler: "nosuchsched",
            backends: &[(0, 1)],
        },
    ];
    let cfg = config(&t, "bad.toml", "ipvs", &bad);
    let mut lb = run_lb(&t, &cfg, "bad.log", &[]);
    let code = lb.wait().unwrap().code();
    let log = t.log("bad.log");
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&format!(
            "IPVS refused scheduler \"nosuchsched\" for {VIP4}:8080/tcp"
        )),
        "{log}"
    );
    assert_ipvs(&t, &foreign_lines(), "after a refused start");

    // Running: a reload with the bad scheduler keeps the running state.
    let good = demo_vips([1, 1, 1]);
    let cfg = config(&t, "xlb.toml", "ipvs", &good);
    let lb = run_lb(&t, &cfg, "lb.log", &[]);
    t.wait_log("lb.log", "reconciled");
    let before = ipvsadm(&t);
    let mut worse = demo_vips([1, 1, 1]);
    worse[3].scheduler = "nosuchsched";
    worse[0].backends = &[(0, 1)];
    config(&t, "xlb.toml", "ipvs", &worse);
    t.wait_log("lb.log", "applying the new config failed");
    assert_eq!(ipvsadm(&t), before, "a refused reload changed IPVS");

    // A VIP that someone else's service already holds is refused by name.
    let mut clash = demo_vips([1, 1, 1]);
    clash.push(Vip {
        address: IpAddr::V4(Ipv4Addr::new(10, 99, 0, 99)),
        port: 8080,
        encap: "l2",
        scheduler: "rr",
        backends: &[(1, 1)],
    });
    config(&t, "xlb.toml", "ipvs", &clash);
    t.wait_log(
        "lb.log",
        "10.99.0.99:8080/tcp already exists and was not created by xlb",
    );
    assert_eq!(ipvsadm(&t), before, "a refused reload changed IPVS");
    stop(lb);
}

#[test]
fn auto_falls_back_to_ipvs_without_bpf_capabilities() {
    if !needs_ipvs("auto_falls_back_to_ipvs_without_bpf_capabilities") {
        return;
    }
    let mut t = Topology::new(1, 3);
    start_backends(&mut t);
    let vips = demo_vips([1, 1, 1]);
    let cfg = config(&t, "xlb.toml", "auto", &vips);
    let xlb = xlb();
    let lb = t.spawn_in(
        Ns::Lb(0),
        Path::new("capsh"),
        &[
            "--drop=cap_bpf,cap_sys_admin,cap_perfmon",
            "--",
            "-c",
            &format!("exec {} run --config {}", xlb.display(), cfg.display()),
        ],
        "lb.log",
    );
    t.wait_log("lb.log", "reconciled");
    let log = t.log("lb.log");
    let why = "auto: XDP cannot be used (missing capabilities CAP_BPF, CAP_PERFMON";
    assert!(log.contains(why) && log.contains("using IPVS"), "{log}");
    assert_ipvs(&t, &expected(&vips, false), "auto fell back");
    let seen = curl_port(&t, IpAddr::V4(VIP4), 80, 60);
    assert_eq!(seen.len(), 3, "{seen:?}");
    // The exporter reads IPVS's own counters, which the kernel folds in
    // from its per-CPU copies every 2 s.
    let series = format!(r#"xlb_vip_packets_total{{vip="{VIP4}:80/tcp"}}"#);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = http_get(t.ns(Ns::Lb(0)), 9810, "/metrics");
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            metric(&body, r#"xlb_dataplane_info{dataplane="ipvs"}"#),
            Some(1.0),
            "{body}"
        );
        // At least SYN, ACK, request, FIN, ACK per connection.
        let packets = metric(&body, &series);
        if packets.is_some_and(|p| p >= 5.0 * 60.0) {
            break;
        }
        assert!(Instant::now() < deadline, "{packets:?}\n{body}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let state_dir = t.dir.join("state");
    let (code, out, err) = xlb_in_lb(&t, &["status", "--state-dir", state_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("dataplane  ipvs") && out.contains(why),
        "{out}"
    );
    stop(lb);
    let (code, out, err) = xlb_in_lb(&t, &["stop", "--state-dir", state_dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
}

/// On a kernel without IPVS (this host's): `--dataplane ipvs` and `auto`
/// without BPF fail with every reason named.
#[test]
fn no_ipvs_in_the_kernel_is_a_clear_error() {
    if !privileged("no_ipvs_in_the_kernel_is_a_clear_error") {
        return;
    }
    if ipvs_available() {
        eprintln!(
            "SKIPPED no_ipvs_in_the_kernel_is_a_clear_error: this kernel has IPVS (the host kernel, without it, runs this test)"
        );
        return;
    }
    let t = Topology::new(1, 1);
    let cfg = config(&t, "xlb.toml", "ipvs", &demo_vips([1, 1, 1])[..1]);
    let (code, _, err) = xlb_in_lb(&t, &["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("IPVS is not available: the kernel has no IPVS (generic netlink family IPVS"),
        "{err}"
    );
    let cfg = config(&t, "auto.toml", "auto", &demo_vips([1, 1, 1])[..1]);
    let out = t
        .ns(Ns::Lb(0))
        .command("capsh")
        .args([
            "--drop=cap_bpf,cap_sys_admin,cap_perfmon",
            "--",
            "-c",
            &format!("exec {} run --config {}", xlb().display(), cfg.display()),
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no data plane available: XDP: missing capabilities CAP_BPF, CAP_PERFMON")
            && err.contains("IPVS: IPVS is not available"),
        "{err}"
    );
}

/// A backend's state in the health checker's published status.
fn health_state(t: &Topology, vip: &str, backend: &str) -> Option<String> {
    let path = t.dir.join("state").join("health.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["backends"].as_array()?.iter().find_map(|b| {
        (b["vip"] == vip && b["backend"] == backend)
            .then(|| b["state"].as_str().unwrap().to_owned())
    })
}

fn wait_health(t: &Topology, vip: &str, backend: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while health_state(t, vip, backend).as_deref() != Some(state) {
        assert!(
            Instant::now() < deadline,
            "{vip} {backend} never {state}:\n{}",
            t.log("lb.log")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Health checks on IPVS: the same `[health]` config, the same states; a
/// backend whose server stops leaves the IPVS service and comes back. The
/// DSR path cannot carry probes here (IPVS owns the VIP locally), so the
/// checks run direct, and say so.
#[test]
fn ipvs_health_checks_take_a_dead_backend_out() {
    if !needs_ipvs("ipvs_health_checks_take_a_dead_backend_out") {
        return;
    }
    let mut t = Topology::new(1, 3);
    start_backends(&mut t);
    let vips = demo_vips([1, 1, 1]);
    let cfg = config(&t, "xlb.toml", "ipvs", &vips);
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    // `via` is left at its default (dsr): on IPVS the checks go direct.
    text.push_str(&format!(
        "\n[health]\nkind = \"http\"\nsource_v4 = \"{}\"\nsource_v6 = \"{}\"\ninterval_ms = 300\ntimeout_ms = 200\nrise = 1\nfall = 2\n",
        lb4(0),
        lb6(0)
    ));
    std::fs::write(&cfg, text).unwrap();
    let lb = run_lb(&t, &cfg, "lb.log", &[]);
    t.wait_log("lb.log", "reconciled");
    let health = t.dir.join("state").join("health.json");
    let vip80 = format!("{VIP4}:80/tcp");
    let be1 = backend4(1).to_string();
    wait_health(&t, &vip80, &be1, "up");
    let status: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&health).unwrap()).unwrap();
    assert!(
        status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["via"] == "direct"),
        "{status:#}"
    );
    t.stop("be1 servers");
    wait_health(&t, &vip80, &be1, "down");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines = ipvsadm(&t);
        let gone = !lines
            .iter()
            .any(|l| l.starts_with(&format!("-> {be1}:80 ")));
        if gone {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "be1 still an IPVS destination of :80: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = curl_port(&t, IpAddr::V4(VIP4), 80, 60);
    assert!(!seen.contains_key("be1"), "{seen:?}");
    t.start_backend_servers(1);
    wait_health(&t, &vip80, &be1, "up");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ipvsadm(&t)
        .iter()
        .any(|l| l.starts_with(&format!("-> {be1}:80 ")))
    {
        assert!(Instant::now() < deadline, "be1 never back in IPVS");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(lb);
    let (code, out, err) = xlb_in_lb(
        &t,
        &["stop", "--state-dir", t.dir.join("state").to_str().unwrap()],
    );
    assert_eq!(code, 0, "stop: {out}{err}");
}
