//! The `aws` announce mode end to end, against a real moto server: real
//! `xlb` daemons (Leases on the harness API server elect the leader, or a
//! static leader), an EC2 API that is moto behind a recording proxy, and
//! an IMDSv2 responder per router (the one double; moto has no IMDS).
//!
//! ```text
//!   router a 10.0.0.1 (ra0) ──┐
//!   router b 10.0.0.3 (rb0) ──┼── br0 ── cloud 10.0.0.50: EC2 proxy -> moto (host 127.0.0.1),
//!                             │          IMDS per router, Kubernetes API
//! ```
//!
//! What moto cannot show (docs/testing.md): it never removes a reassigned
//! private IP from the old ENI, never moves an Elastic IP with its private
//! IP, and binds an association to the ENI's primary address whatever
//! PrivateIpAddress says. So the tests assert what moto does show: the
//! calls and their parameters (at the proxy), the VIP among the new ENI's
//! addresses, DescribeAddresses' NetworkInterfaceId, the ENI's
//! SourceDestCheck; and the daemons run with `check_private_ip = false`.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use lb_userspace::announce::aws::status::AwsStatus;
use xlb_tests::{
    aws::{Ec2Proxy, Imds, Moto, ec2, ec2_as, shipped_policy_as_moto_checks_it},
    daemon::{Daemon, free_port, http_get, metric, xlb_bin},
    kube_api::KubeApi,
    netns::{NetNs, PinDir, privileged},
    vm::patience,
};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 200);
const REGION: &str = "us-east-1";

/// What moto holds for a test: two router instances and a backend one in
/// 10.0.1.0/24, and an Elastic IP.
struct World {
    enis: [String; 3],
    macs: [String; 3],
    ips: [Ipv4Addr; 3],
    eip: String,
}

async fn world(c: &aws_sdk_ec2::Client) -> World {
    let vpc = c
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .unwrap();
    let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    let sub = c
        .create_subnet()
        .vpc_id(&vpc)
        .cidr_block("10.0.1.0/24")
        .send()
        .await
        .unwrap();
    let subnet = sub.subnet().unwrap().subnet_id().unwrap().to_owned();
    let run = c
        .run_instances()
        .image_id("ami-12c6146b")
        .min_count(3)
        .max_count(3)
        .subnet_id(&subnet)
        .send()
        .await
        .unwrap();
    let ni = |i: usize| run.instances()[i].network_interfaces()[0].clone();
    let enis = [0, 1, 2].map(|i| ni(i).network_interface_id().unwrap().to_owned());
    let macs = [0, 1, 2].map(|i| {
        ni(i)
            .mac_address()
            .unwrap_or("02:00:00:00:00:0a")
            .to_owned()
    });
    let ips = [0, 1, 2].map(|i| ni(i).private_ip_address().unwrap().parse().unwrap());
    let eip = c
        .allocate_address()
        .domain(aws_sdk_ec2::types::DomainType::Vpc)
        .send()
        .await
        .unwrap();
    World {
        enis,
        macs,
        ips,
        eip: eip.allocation_id().unwrap().to_owned(),
    }
}

struct Router {
    ns: NetNs,
    config: PathBuf,
    state: PathBuf,
    metrics: u16,
    _imds: Imds,
    _pins: PinDir,
}

struct Lab {
    _seg: NetNs,
    cloud: NetNs,
    moto: Moto,
    proxy: Ec2Proxy,
    api: Option<KubeApi>,
    dir: PathBuf,
    rt: tokio::runtime::Runtime,
    ec2: aws_sdk_ec2::Client,
    w: World,
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

fn plug(seg: &NetNs, ns: &NetNs, name: &str, v4: &str) {
    let peer = format!("p-{name}");
    seg.ip(&["link", "add", &peer, "type", "veth", "peer", "name", name]);
    seg.ip(&["link", "set", name, "netns", &ns.name]);
    seg.ip(&["link", "set", &peer, "master", "br0", "up"]);
    ns.ip(&["addr", "add", v4, "dev", name]);
    ns.ip(&["link", "set", name, "up"]);
}

fn lab(tag: &str, kubernetes: bool) -> Lab {
    let seg = NetNs::new();
    seg.ip(&["link", "add", "br0", "type", "bridge"]);
    seg.ip(&["link", "set", "br0", "up"]);
    let cloud = NetNs::new();
    plug(&seg, &cloud, "k0", "10.0.0.50/24");
    let moto = Moto::start();
    let proxy = Ec2Proxy::serve(
        cloud.run(|| TcpListener::bind("10.0.0.50:0").unwrap()),
        moto.addr,
    );
    let api =
        kubernetes.then(|| KubeApi::serve(cloud.run(|| TcpListener::bind("10.0.0.50:0").unwrap())));
    let dir = std::env::temp_dir().join(format!("xlbt-aws-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(api) = &api {
        api.write_kubeconfig(&dir.join("kubeconfig"));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ec2 = rt.block_on(ec2(&moto));
    let w = rt.block_on(world(&ec2));
    Lab {
        _seg: seg,
        cloud,
        moto,
        proxy,
        api,
        dir,
        rt,
        ec2,
        w,
    }
}

/// Router `n` (0: a, 1: b) of the lab, on instance `n`'s ENI (from its
/// IMDS); `vips` are `[[vip]]` tables.
fn router(l: &Lab, seg: &NetNs, n: usize, vips: &str) -> Router {
    let name = ["router-a", "router-b"][n];
    let iface = ["ra0", "rb0"][n];
    let ns = NetNs::new();
    plug(seg, &ns, iface, &format!("10.0.0.{}/24", 1 + 2 * n));
    // The backends are moto's instances: routed on the link, never answered.
    ns.ip(&["route", "add", "10.0.1.0/24", "dev", iface]);
    ns.sysctl("net.ipv4.ip_forward", "1");
    let imds = Imds::serve(
        l.cloud.run(|| TcpListener::bind("10.0.0.50:0").unwrap()),
        REGION,
        &l.w.macs[n],
        &l.w.enis[n],
    );
    let pins = PinDir::new();
    let metrics = free_port();
    let state = l.dir.join(format!("state-{name}"));
    let kubernetes = match &l.api {
        Some(_) => format!(
            "[kubernetes]\nenabled = true\nkubeconfig = \"{}\"\nlease_namespace = \"xlb-system\"\n\
             node_name = \"{name}\"\nlease_duration_ms = 3000\nrenew_deadline_ms = 1500\n\
             retry_period_ms = 300\nlease_buckets = 1\n",
            l.dir.join("kubeconfig").display()
        ),
        None => String::new(),
    };
    let text = format!(
        r#"[dataplane]
interfaces = ["{iface}"]
xdp_mode = "generic"
pin_path = "{pins}"
state_dir = "{state}"
maglev_table_size = 251
max_vips = 16
max_backends = 64
flow_table_size = 4096

[metrics]
listen = "127.0.0.1:{metrics}"

{vips}
{kubernetes}
[announce]
mode = "aws"

[announce.aws]
endpoint_url = "{endpoint}"
imds_url = "{imds}"
reconcile_interval_ms = 1000
check_private_ip = false
"#,
        pins = pins.path.display(),
        state = state.display(),
        endpoint = l.proxy.url(),
        imds = imds.url(),
    );
    let config = l.dir.join(format!("{name}.toml"));
    std::fs::write(&config, text).unwrap();
    Router {
        ns,
        config,
        state,
        metrics,
        _imds: imds,
        _pins: pins,
    }
}

fn vip_table(address: Ipv4Addr, backend: Ipv4Addr, eip: Option<&str>) -> String {
    let eip = eip.map_or(String::new(), |e| format!("allocation_id = \"{e}\"\n"));
    format!(
        "[[vip]]\naddress = \"{address}\"\nport = 80\n{eip}backends = [{{ address = \"{backend}\" }}]\n"
    )
}

fn start(l: &Lab, r: &Router, log: &str, keys: (&str, &str)) -> Daemon {
    let log = l.dir.join(log);
    let child =
        r.ns.command(xlb_bin())
            .args(["run", "--config", r.config.to_str().unwrap()])
            .env("AWS_ACCESS_KEY_ID", keys.0)
            .env("AWS_SECRET_ACCESS_KEY", keys.1)
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/nonexistent")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn xlb run");
    let mut d = Daemon { child, log };
    d.wait_for_log("reconciled", patience(Duration::from_secs(20)));
    d
}

fn status(r: &Router) -> AwsStatus {
    AwsStatus::read(&r.state).unwrap_or_default()
}

/// Polls `f` every 50 ms until it holds; panics with `what` after `limit`.
#[track_caller]
fn wait(limit: Duration, what: &str, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    let limit = patience(limit);
    while !f() {
        assert!(t0.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}

impl Lab {
    /// The ENI DescribeAddresses says the Elastic IP is on.
    fn eip_on(&self, alloc: &str) -> Option<String> {
        let out = self
            .rt
            .block_on(self.ec2.describe_addresses().allocation_ids(alloc).send())
            .unwrap();
        out.addresses()[0]
            .network_interface_id()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }

    fn eni(&self, id: &str) -> aws_sdk_ec2::types::NetworkInterface {
        let out = self
            .rt
            .block_on(
                self.ec2
                    .describe_network_interfaces()
                    .network_interface_ids(id)
                    .send(),
            )
            .unwrap();
        out.network_interfaces()[0].clone()
    }

    fn secondary_ips(&self, id: &str) -> Vec<String> {
        self.eni(id)
            .private_ip_addresses()
            .iter()
            .filter(|p| p.primary() != Some(true))
            .filter_map(|p| p.private_ip_address().map(str::to_owned))
            .collect()
    }
}

fn metrics_text(r: &Router) -> String {
    http_get(&r.ns, r.metrics, "/metrics").1
}

/// Two routers elected through Leases: the leader assigns the VIP and
/// associates the EIP, its source/destination check goes off; the other
/// takes over when it stops; a move made by hand is repaired.
#[test]
fn the_leader_moves_the_vip_and_its_elastic_ip_and_repairs_drift() {
    if !privileged("aws leader") {
        return;
    }
    let mut l = lab("leader", true);
    // The routers run as a principal holding deploy/aws/iam-policy.json
    // (as far as moto checks it: its actions), so a policy lacking an
    // action the daemon calls fails this test; the harness has ec2:*.
    let xlb = l
        .moto
        .iam_user_with_policy("xlb", &shipped_policy_as_moto_checks_it());
    let harness = l.moto.iam_user("harness", &["ec2:*"]);
    l.moto.enforce_iam();
    l.ec2 = l.rt.block_on(ec2_as(&l.moto, &harness.0, &harness.1));
    let keys = (xlb.0.as_str(), xlb.1.as_str());
    let seg = &l._seg;
    let vips = vip_table(VIP, l.w.ips[2], Some(&l.w.eip));
    let (a, b) = (router(&l, seg, 0, &vips), router(&l, seg, 1, &vips));
    let (eni_a, eni_b) = (l.w.enis[0].clone(), l.w.enis[1].clone());
    let mut da = start(&l, &a, "a.log", keys);
    let first = wait(Duration::from_secs(20), "router a places the VIP", || {
        status(&a).vips.get(&VIP).is_some_and(|v| v.in_place)
    });
    // What EC2 (moto) shows, not what xlb says.
    assert!(l.secondary_ips(&eni_a).contains(&VIP.to_string()));
    assert_eq!(l.eip_on(&l.w.eip).as_deref(), Some(eni_a.as_str()));
    let ni = l.eni(&eni_a);
    assert_eq!(ni.source_dest_check(), Some(false), "source/dest check off");
    assert!(
        ni.tag_set()
            .iter()
            .any(|t| t.key() == Some("xlb.io/router"))
    );
    // The calls, with the parameters that make them moves without a gap.
    let assign = l.proxy.calls_of("AssignPrivateIpAddresses");
    assert_eq!(assign.len(), 1, "{assign:?}");
    assert_eq!(assign[0].param("NetworkInterfaceId"), Some(eni_a.as_str()));
    assert_eq!(assign[0].param("PrivateIpAddress.1"), Some("10.0.1.200"));
    assert_eq!(assign[0].param("AllowReassignment"), Some("true"));
    let assoc = l.proxy.calls_of("AssociateAddress");
    assert_eq!(assoc.len(), 1, "{assoc:?}");
    assert_eq!(assoc[0].param("AllocationId"), Some(l.w.eip.as_str()));
    assert_eq!(assoc[0].param("NetworkInterfaceId"), Some(eni_a.as_str()));
    assert_eq!(assoc[0].param("PrivateIpAddress"), Some("10.0.1.200"));
    assert_eq!(assoc[0].param("AllowReassociation"), Some("true"));
    let modify = l.proxy.calls_of("ModifyNetworkInterfaceAttribute");
    assert_eq!(modify[0].param("SourceDestCheck.Value"), Some("false"));
    // The backend instance still checks: reported.
    let s = status(&a);
    assert!(
        s.backends_with_source_dest_check
            .iter()
            .any(|c| c.address == l.w.ips[2]),
        "{s:?}"
    );
    let owner = |r: &Router| metric(&metrics_text(r), &format!("xlb_vip_owner{{vip=\"{VIP}\"}}"));
    assert_eq!(owner(&a), Some(1.0), "a owns the VIP: {}", metrics_text(&a));
    // Router b follows, leads nothing, calls nothing.
    let before_b = l.proxy.calls().len();
    let mut db = start(&l, &b, "b.log", keys);
    wait(
        Duration::from_secs(10),
        "router b sees the VIP led elsewhere",
        || status(&b).vips.get(&VIP).is_some_and(|v| !v.leads),
    );
    // A few of b's reconcile intervals (1 s) while it follows: no EC2
    // write from anyone (a is settled), nothing about b's ENI at all.
    std::thread::sleep(Duration::from_millis(2500));
    let following = l.proxy.calls()[before_b..].to_vec();
    assert!(
        following.iter().all(|c| c.action().starts_with("Describe")),
        "a write while b followed: {following:?}"
    );
    assert!(
        following
            .iter()
            .all(|c| c.param("NetworkInterfaceId") != Some(eni_b.as_str())
                && c.param("NetworkInterfaceId.1") != Some(eni_b.as_str())),
        "b called EC2 about its ENI while following: {following:?}"
    );
    assert_eq!(owner(&b), None, "b, following, owns nothing");
    // Takeover: a hands its Lease back on SIGTERM.
    assert_eq!(da.terminate(), Some(0));
    let stopped = Instant::now();
    let calls_at_stop = l.proxy.calls().len();
    let takeover = wait(Duration::from_secs(20), "the EIP reaches router b", || {
        l.eip_on(&l.w.eip).as_deref() == Some(eni_b.as_str())
    });
    assert!(l.secondary_ips(&eni_b).contains(&VIP.to_string()));
    wait(Duration::from_secs(10), "router b confirms", || {
        status(&b).vips.get(&VIP).is_some_and(|v| v.in_place)
    });
    wait(
        Duration::from_secs(5),
        "b's metrics say it owns the VIP",
        || {
            owner(&b) == Some(1.0)
                && metric(&metrics_text(&b), "xlb_announce_transitions_total")
                    .is_some_and(|n| n >= 1.0)
        },
    );
    let writes_after: Vec<_> = l.proxy.calls()[calls_at_stop..]
        .iter()
        .filter(|c| !c.action().starts_with("Describe"))
        .cloned()
        .collect();
    assert!(
        writes_after
            .iter()
            .all(|c| c.param("NetworkInterfaceId") != Some(eni_a.as_str())),
        "a write for a's ENI after a stopped: {writes_after:?}"
    );
    assert!(
        writes_after
            .iter()
            .any(|c| c.action() == "AssignPrivateIpAddresses"
                && c.param("NetworkInterfaceId") == Some(eni_b.as_str())
                && c.param("AllowReassignment") == Some("true")),
        "{writes_after:?}"
    );
    // Drift: the EIP moved back to a's ENI by hand; b's reconcile repairs it.
    l.rt.block_on(
        l.ec2
            .associate_address()
            .allocation_id(&l.w.eip)
            .network_interface_id(&eni_a)
            .allow_reassociation(true)
            .send(),
    )
    .unwrap();
    let moved = Instant::now();
    let repair = wait(
        Duration::from_secs(10),
        "the reconcile repairs the hand move",
        || l.eip_on(&l.w.eip).as_deref() == Some(eni_b.as_str()),
    );
    let bs = status(&b);
    let all = l.proxy.calls();
    assert!(
        !all.iter()
            .any(|c| c.action() == "DisassociateAddress"
                || c.action() == "UnassignPrivateIpAddresses")
    );
    let repairs: Vec<_> = l
        .proxy
        .calls_of("AssociateAddress")
        .into_iter()
        .filter(|c| c.at > moved && c.param("NetworkInterfaceId") == Some(eni_b.as_str()))
        .collect();
    assert_eq!(
        repairs.len(),
        1,
        "one AssociateAddress repairs it: {repairs:?}"
    );
    assert_eq!(repairs[0].param("AllowReassociation"), Some("true"));
    // Drift of the private IP: taken off b's ENI by hand (what AWS does
    // to the old ENI when an address is reassigned; moto does not).
    l.rt.block_on(
        l.ec2
            .unassign_private_ip_addresses()
            .network_interface_id(&eni_b)
            .private_ip_addresses(VIP.to_string())
            .send(),
    )
    .unwrap();
    assert!(!l.secondary_ips(&eni_b).contains(&VIP.to_string()));
    let unassigned = Instant::now();
    let ip_repair = wait(
        Duration::from_secs(10),
        "the reconcile puts the private IP back",
        || l.secondary_ips(&eni_b).contains(&VIP.to_string()),
    );
    let reassigns: Vec<_> = l
        .proxy
        .calls_of("AssignPrivateIpAddresses")
        .into_iter()
        .filter(|c| c.at > unassigned)
        .collect();
    assert_eq!(reassigns.len(), 1, "{reassigns:?}");
    assert_eq!(
        reassigns[0].param("NetworkInterfaceId"),
        Some(eni_b.as_str())
    );
    assert_eq!(reassigns[0].param("AllowReassignment"), Some("true"));
    // The metrics follow at the end of b's pass.
    wait(Duration::from_secs(5), "b counts both associations", || {
        let body = metrics_text(&b);
        metric(
            &body,
            "xlb_aws_api_calls_total{operation=\"AssociateAddress\",result=\"ok\"}",
        ) == Some(2.0)
            && metric(&body, "xlb_aws_moves_confirmed_total").is_some_and(|n| n >= 1.0)
    });
    eprintln!(
        "aws: first placement {first:?}; takeover (SIGTERM of a to the EIP on b in moto) \
         {takeover:?} (b's own confirm {:?} s); repair of a hand move {repair:?}, of a \
         hand-removed private IP {ip_repair:?} (reconcile interval 1 s); calls before b \
         started {before_b}, while b followed {} (all Describe*), in all {} ({:?} since the \
         stop, {:?} since the hand move)",
        bs.last_confirm_seconds,
        following.len(),
        all.len(),
        stopped.elapsed(),
        moved.elapsed()
    );
    assert_eq!(db.terminate(), Some(0));
}

/// Router a killed with SIGKILL hands nothing back: router b takes the
/// VIP and the Elastic IP once a's Lease expires (3 s, renewed every
/// 0.3 s), not before, and within a pass of winning it.
#[test]
fn a_killed_leader_is_replaced_when_its_lease_expires() {
    if !privileged("aws kill -9") {
        return;
    }
    let l = lab("kill", true);
    let seg = &l._seg;
    let vips = vip_table(VIP, l.w.ips[2], Some(&l.w.eip));
    let (a, b) = (router(&l, seg, 0, &vips), router(&l, seg, 1, &vips));
    let eni_b = l.w.enis[1].clone();
    let mut da = start(&l, &a, "a.log", ("testing", "testing"));
    wait(Duration::from_secs(20), "router a places the VIP", || {
        status(&a).vips.get(&VIP).is_some_and(|v| v.in_place)
    });
    let mut db = start(&l, &b, "b.log", ("testing", "testing"));
    wait(
        Duration::from_secs(10),
        "router b sees the VIP led elsewhere",
        || status(&b).vips.get(&VIP).is_some_and(|v| !v.leads),
    );
    // Long enough for b to have seen a renew the Lease several times.
    std::thread::sleep(Duration::from_secs(1));
    da.kill9();
    let killed = Instant::now();
    let calls_at_kill = l.proxy.calls().len();
    let takeover = wait(Duration::from_secs(20), "the EIP reaches router b", || {
        l.eip_on(&l.w.eip).as_deref() == Some(eni_b.as_str())
    });
    assert!(l.secondary_ips(&eni_b).contains(&VIP.to_string()));
    let confirmed = wait(Duration::from_secs(10), "router b confirms", || {
        status(&b).vips.get(&VIP).is_some_and(|v| v.in_place)
    }) + takeover;
    // a's last renewal was at most a retry period (0.3 s, plus its round)
    // before the kill, and b counts the 3 s from when it saw it.
    assert!(
        takeover >= Duration::from_millis(2500),
        "b moved the EIP {takeover:?} after the kill, before a's Lease could expire"
    );
    let calls = l.proxy.calls();
    let moves: Vec<_> = calls[calls_at_kill..]
        .iter()
        .filter(|c| !c.action().starts_with("Describe"))
        .collect();
    assert!(
        moves
            .iter()
            .all(|c| c.at >= killed + Duration::from_millis(2500)),
        "a write before a's Lease expired: {moves:?}"
    );
    assert!(
        moves
            .iter()
            .any(|c| c.action() == "AssignPrivateIpAddresses"
                && c.param("NetworkInterfaceId") == Some(eni_b.as_str())
                && c.param("AllowReassignment") == Some("true")),
        "{moves:?}"
    );
    assert!(
        moves.iter().any(|c| c.action() == "AssociateAddress"
            && c.param("NetworkInterfaceId") == Some(eni_b.as_str())
            && c.param("AllowReassociation") == Some("true")),
        "{moves:?}"
    );
    eprintln!(
        "aws: kill -9 of the leader to the EIP on b in moto {takeover:?}, to b's confirm \
         {confirmed:?} (Lease 3 s, retry period 0.3 s, reconcile interval 1 s); {} writes",
        moves.len()
    );
    assert_eq!(db.terminate(), Some(0));
}

/// EC2 throttles AssignPrivateIpAddresses three times: retried after a
/// backoff, then done.
#[test]
fn throttling_is_retried_with_backoff() {
    if !privileged("aws throttling") {
        return;
    }
    let l = lab("throttle", false);
    let r = router(&l, &l._seg, 0, &vip_table(VIP, l.w.ips[2], Some(&l.w.eip)));
    l.proxy.throttle("AssignPrivateIpAddresses", 3);
    let mut d = start(&l, &r, "a.log", ("testing", "testing"));
    wait(
        Duration::from_secs(30),
        "the VIP placed despite throttling",
        || status(&r).vips.get(&VIP).is_some_and(|v| v.in_place),
    );
    let tries = l.proxy.calls_of("AssignPrivateIpAddresses");
    assert_eq!(
        tries.iter().map(|c| c.throttled).collect::<Vec<_>>(),
        [true, true, true, false],
        "three throttled, then through"
    );
    let gaps: Vec<Duration> = tries.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(l.secondary_ips(&l.w.enis[0]).contains(&VIP.to_string()));
    let body = metrics_text(&r);
    assert_eq!(
        metric(&body, "xlb_aws_api_throttles_total"),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        metric(
            &body,
            "xlb_aws_api_calls_total{operation=\"AssignPrivateIpAddresses\",result=\"throttled\"}"
        ),
        Some(3.0)
    );
    eprintln!("aws: throttled retries {gaps:?} apart (full jitter below 0.2, 0.4, 0.8 s)");
    assert!(gaps.iter().all(|g| *g < Duration::from_secs(2)), "{gaps:?}");
    assert_eq!(d.terminate(), Some(0));
}

/// A principal whose policy lacks ec2:AssignPrivateIpAddresses: the error
/// names that action.
#[test]
fn a_missing_permission_is_named() {
    if !privileged("aws iam") {
        return;
    }
    let l = lab("iam", false);
    let r = router(&l, &l._seg, 0, &vip_table(VIP, l.w.ips[2], Some(&l.w.eip)));
    let (id, secret) = l.moto.iam_user(
        "xlb",
        &[
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSubnets",
            "ec2:DescribeAddresses",
            "ec2:AssociateAddress",
            "ec2:ModifyNetworkInterfaceAttribute",
            "ec2:CreateTags",
        ],
    );
    l.moto.enforce_iam();
    let mut d = start(&l, &r, "a.log", (&id, &secret));
    wait(
        Duration::from_secs(20),
        "the denial reported on the VIP",
        || {
            status(&r)
                .vips
                .get(&VIP)
                .and_then(|v| v.error.clone())
                .is_some_and(|e| e.contains("ec2:AssignPrivateIpAddresses"))
        },
    );
    let e = status(&r).vips[&VIP].error.clone().unwrap();
    assert!(
        e.contains("AccessDenied") && e.contains("lacks `ec2:AssignPrivateIpAddresses`"),
        "{e}"
    );
    assert!(d.log_text().contains("ec2:AssignPrivateIpAddresses"));
    let body = metrics_text(&r);
    assert!(
        metric(
            &body,
            "xlb_aws_api_calls_total{operation=\"AssignPrivateIpAddresses\",result=\"denied\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{body}"
    );
    assert_eq!(
        metric(&body, "xlb_aws_vip_error{vip=\"10.0.1.200\"}"),
        Some(1.0)
    );
    assert_eq!(d.terminate(), Some(0));
}

/// Bad VIPs next to a good one: each refused with its reason, the good
/// one announced. moto accepts all of these itself; xlb checks.
#[test]
fn bad_vips_are_refused_and_the_others_announced() {
    if !privileged("aws bad input") {
        return;
    }
    let l = lab("bad", false);
    let backend = l.w.ips[2];
    let outside = Ipv4Addr::new(10, 0, 9, 5);
    let unknown_eip = Ipv4Addr::new(10, 0, 1, 201);
    let foreign = Ipv4Addr::new(10, 0, 1, 77);
    // 10.0.1.77 belongs to the backend instance's ENI (no router tag).
    l.rt.block_on(
        l.ec2
            .assign_private_ip_addresses()
            .network_interface_id(&l.w.enis[2])
            .private_ip_addresses(foreign.to_string())
            .send(),
    )
    .unwrap();
    let vips = [
        vip_table(VIP, backend, Some(&l.w.eip)),
        vip_table(outside, backend, None),
        vip_table(unknown_eip, backend, Some("eipalloc-0123456789abcdef0")),
        vip_table(foreign, backend, None),
    ]
    .concat();
    let r = router(&l, &l._seg, 0, &vips);
    let mut d = start(&l, &r, "a.log", ("testing", "testing"));
    wait(
        Duration::from_secs(20),
        "the good VIP placed, the bad ones refused",
        || {
            let s = status(&r);
            s.vips.get(&VIP).is_some_and(|v| v.in_place)
                && [outside, unknown_eip, foreign]
                    .iter()
                    .all(|a| s.vips.get(a).is_some_and(|v| v.error.is_some()))
        },
    );
    let s = status(&r);
    let err = |a: Ipv4Addr| s.vips[&a].error.clone().unwrap();
    assert!(
        err(outside).contains("outside subnet 10.0.1.0/24"),
        "{}",
        err(outside)
    );
    assert!(
        err(unknown_eip).contains("eipalloc-0123456789abcdef0 does not exist"),
        "{}",
        err(unknown_eip)
    );
    assert!(
        err(foreign).contains(&l.w.enis[2]) && err(foreign).contains("not an xlb router"),
        "{}",
        err(foreign)
    );
    assert_eq!(
        l.secondary_ips(&l.w.enis[0]),
        [VIP.to_string()],
        "only the good VIP on our ENI"
    );
    assert_eq!(l.eip_on(&l.w.eip).as_deref(), Some(l.w.enis[0].as_str()));
    let body = metrics_text(&r);
    for a in [outside, unknown_eip, foreign] {
        assert_eq!(
            metric(&body, &format!("xlb_aws_vip_error{{vip=\"{a}\"}}")),
            Some(1.0),
            "{body}"
        );
    }
    assert_eq!(
        metric(&body, "xlb_aws_vip_error{vip=\"10.0.1.200\"}"),
        Some(0.0)
    );
    assert_eq!(d.terminate(), Some(0));
}
