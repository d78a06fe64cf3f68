//! SIGTERM at any moment of start-up ends in the clean shutdown: exit 0 and
//! the shutdown log line, never death by the signal's default action (a pod
//! deleted while xlb starts must still hand its Leases back).
//!
//! ```text
//!  client ns: c0 10.0.0.2 ──veth── lb0 10.0.0.1 (LB ns: xlb run, XDP; API server on 127.0.0.1)
//! ```
//!
//! Each run waits for the daemon's first log line (logged right after the
//! handlers are installed: before it, the signal's default action is the
//! only possible one), then signals it at a point of start-up: a named
//! step (seen in the log), or a random delay drawn from a seeded generator
//! over the measured start-up time. The seed is printed; `XLB_SEED=N`
//! replays a run.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use serde_json::json;
use xlb_tests::{
    daemon::{Daemon, free_port},
    k8s_objects,
    kube_api::KubeApi,
    netns::{NetNs, PinDir, privileged},
};

const CLEAN: &str = "stopping; the pinned data plane keeps forwarding";
const FIRST_LINE: &str = "starting";

struct Lab {
    lb: NetNs,
    _client: NetNs,
    api: KubeApi,
    dir: PathBuf,
    pins: PinDir,
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (configs, daemon logs)", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn lab() -> Lab {
    let lb = NetNs::new();
    let client = NetNs::new();
    lb.ip(&["link", "add", "lb0", "type", "veth", "peer", "name", "c0"]);
    lb.ip(&["link", "set", "c0", "netns", &client.name]);
    lb.ip(&["addr", "add", "10.0.0.1/24", "dev", "lb0"]);
    lb.ip(&["link", "set", "lb0", "up"]);
    client.ip(&["addr", "add", "10.0.0.2/24", "dev", "c0"]);
    client.ip(&["link", "set", "c0", "up"]);
    lb.static_neighbours("lb0", &[("10.0.0.17", "02:00:00:00:00:11")]);
    let api = lb.run(KubeApi::start);
    let dir = std::env::temp_dir().join(format!("xlbt-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    api.write_kubeconfig(&dir.join("kubeconfig"));
    api.apply(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "dns", "namespace": "default" },
        "spec": {
            "type": "LoadBalancer",
            "loadBalancerClass": "xlb.io/xlb",
            "ports": [{ "name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53 }],
            "ipFamilies": ["IPv4"],
        }
    }));
    api.apply(k8s_objects::slice(
        "dns",
        ("dns", 53, "UDP"),
        vec![k8s_objects::endpoint(
            "10.0.0.17",
            "worker-1",
            true,
            true,
            false,
        )],
    ));
    Lab {
        lb,
        _client: client,
        api,
        dir,
        pins: PinDir::new(),
    }
}

/// A config with the static VIP, and the Kubernetes source when `k8s`.
fn config(l: &Lab, k8s: bool) -> PathBuf {
    let kubernetes = if k8s {
        format!(
            r#"
[kubernetes]
enabled = true
kubeconfig = "{}"
pools = ["10.99.0.100-10.99.0.103"]
lease_namespace = "xlb-system"
node_name = "router-a"
lease_duration_ms = 3000
renew_deadline_ms = 1500
retry_period_ms = 300
"#,
            l.dir.join("kubeconfig").display()
        )
    } else {
        String::new()
    };
    let text = format!(
        r#"[dataplane]
interfaces = ["lb0"]
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
backends = [{{ address = "10.0.0.17" }}]
{kubernetes}"#,
        pins = l.pins.path.display(),
        state = l.dir.join("state").display(),
        port = free_port(),
    );
    let path = l.dir.join(if k8s { "k8s.toml" } else { "file.toml" });
    std::fs::write(&path, text).unwrap();
    path
}

/// When to send SIGTERM, counted from the first log line.
#[derive(Clone, Debug)]
enum Moment {
    /// As soon as the daemon has logged this.
    After(&'static str),
    /// This long after the first line.
    Delay(Duration),
}

/// One daemon signalled at `moment`; panics unless it exits 0 with the
/// clean-shutdown line.
fn run_once(l: &Lab, cfg: &Path, moment: &Moment, n: usize) -> Duration {
    let log = l.dir.join(format!("run-{n}.log"));
    let mut d = Daemon::spawn(&l.lb, &["--config", cfg.to_str().unwrap()], &log);
    d.wait_for_log(FIRST_LINE, Duration::from_secs(20));
    let first = Instant::now();
    match moment {
        Moment::After(needle) => d.wait_for_log(needle, Duration::from_secs(30)),
        Moment::Delay(t) => std::thread::sleep(*t),
    }
    let code = d.terminate();
    let text = d.log_text();
    assert_eq!(
        code,
        Some(0),
        "run {n} ({moment:?}, {}): SIGTERM did not end in a clean exit (None: killed by the signal); log:\n{text}",
        cfg.display()
    );
    assert!(
        text.contains(CLEAN),
        "run {n} ({moment:?}): no clean-shutdown line; log:\n{text}"
    );
    first.elapsed()
}

/// A small deterministic generator (xorshift64*), so a failing run replays
/// from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn sigterm_at_any_point_of_start_up_is_a_clean_shutdown() {
    if !privileged("sigterm_at_any_point_of_start_up_is_a_clean_shutdown") {
        return;
    }
    let l = lab();
    let plain = config(&l, false);
    let k8s = config(&l, true);
    let seed = std::env::var("XLB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("SIGTERM start-up test: XLB_SEED={seed}");
    let mut rng = Rng(seed);

    // Named steps of start-up, with and without the Kubernetes source.
    let steps: [(&Path, &'static str); 8] = [
        (&plain, FIRST_LINE),
        (&plain, "data plane ready"),
        (&plain, "reconciled"),
        (&plain, "serving metrics"),
        (&k8s, FIRST_LINE),
        (&k8s, "Kubernetes source started"),
        (&k8s, "data plane ready"),
        (&k8s, "serving metrics"),
    ];
    let mut n = 0;
    let mut full = Duration::ZERO;
    for (cfg, needle) in steps {
        let took = run_once(&l, cfg, &Moment::After(needle), n);
        if needle == "serving metrics" {
            full = full.max(took);
        }
        n += 1;
    }
    // Random moments over the whole start-up (and a little past it).
    let span = (full.as_millis() as u64 * 5 / 4).max(50);
    for i in 0..16 {
        let cfg = if i % 2 == 0 { &plain } else { &k8s };
        let delay = Duration::from_millis(rng.next() % span);
        run_once(&l, cfg, &Moment::Delay(delay), n);
        n += 1;
    }
    // The Kubernetes runs handed back whatever Lease they took.
    let holders: Vec<_> = l
        .api
        .list("coordination.k8s.io/v1", "Lease")
        .iter()
        .filter_map(|lease| lease["spec"]["holderIdentity"].as_str().map(str::to_owned))
        .filter(|h| !h.is_empty())
        .collect();
    assert!(
        holders.is_empty(),
        "Leases still held after every daemon stopped: {holders:?}"
    );
}
