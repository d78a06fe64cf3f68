//! deploy/, the kustomization that runs xlb on a cluster, checked offline
//! (no API server can run here): every manifest validates strictly against
//! Kubernetes 1.33's schemas with kubernetes-validate, the ConfigMap's
//! xlb.toml passes `xlb check`, and the DaemonSets hold what the daemon
//! needs (and what xlb.toml names) and nothing more. The BGP component
//! (deploy/bgp) adds a bird2 container and changes nothing else; that
//! container, run with only its capabilities, holds BGP and BFD sessions.
//!
//! The YAML is read with python3's PyYAML, which kubernetes-validate
//! brings; without it these tests skip with the reason, except under CI
//! (`CI` set), where `cargo xtask setup` has installed it and they fail.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Container, PodSpec, Probe},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use lb_userspace::config::{self, Config};
use serde_json::Value;
use xlb_tests::topology::workspace_bin;

/// The API the manifests are validated against: the one k8s-openapi's
/// `v1_33` feature describes, which the daemon is built with.
const KUBERNETES_VERSION: &str = "1.33.0";
/// The router's capabilities: XDP needs the first three, IPVS
/// CAP_NET_ADMIN; VIP announcement (`l2`) CAP_NET_RAW.
const CAPABILITIES: [&str; 4] = ["BPF", "NET_ADMIN", "PERFMON", "NET_RAW"];
/// The backend's decapsulator: XDP, no announcement.
const DECAP_CAPABILITIES: [&str; 3] = ["BPF", "NET_ADMIN", "PERFMON"];
const NAMESPACE: &str = "xlb-system";

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Whether python3 can import `module`. A missing one skips `test` with
/// the reason, or fails it under CI.
fn python_has(test: &str, module: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let reason = format!(
            "python3 cannot import {module} (`cargo xtask setup` installs kubernetes-validate, which brings PyYAML)"
        );
        assert!(std::env::var_os("CI").is_none(), "{test}: {reason}");
        eprintln!("SKIPPED {test}: {reason}");
    }
    ok
}

/// Every YAML document in `path`, as JSON values (through PyYAML).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml\n\
             with open(sys.argv[1]) as f:\n    \
                 json.dump([d for d in yaml.safe_load_all(f) if d is not None], sys.stdout)",
        ])
        .arg(path)
        .output()
        .expect("running python3");
    assert!(
        out.status.success(),
        "{} is not valid YAML: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python's JSON")
}

fn kustomization() -> Value {
    let mut docs = yaml_documents(&deploy_dir().join("kustomization.yaml"));
    assert_eq!(docs.len(), 1, "kustomization.yaml holds one document");
    docs.remove(0)
}

/// The `resources:` of the kustomization.
fn resources() -> Vec<String> {
    kustomization()["resources"]
        .as_array()
        .expect("kustomization.yaml has a resources list")
        .iter()
        .map(|r| r.as_str().expect("a resource is a path").to_owned())
        .collect()
}

fn daemonset(file: &str) -> DaemonSet {
    let mut docs = yaml_documents(&deploy_dir().join(file));
    assert_eq!(docs.len(), 1, "{file} holds one DaemonSet");
    serde_json::from_value(docs.remove(0))
        .unwrap_or_else(|e| panic!("{file} is not a DaemonSet: {e}"))
}

fn pod_spec(ds: &DaemonSet) -> &PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("the DaemonSet has a pod template")
}

/// The pod's only main container.
fn container(ds: &DaemonSet) -> &Container {
    let spec = pod_spec(ds);
    assert_eq!(
        spec.containers.len(),
        1,
        "one container in {:?}",
        ds.metadata.name
    );
    &spec.containers[0]
}

fn init_script(ds: &DaemonSet) -> String {
    let inits = pod_spec(ds)
        .init_containers
        .as_deref()
        .expect("an init container sets the node's sysctls");
    assert_eq!(inits.len(), 1, "one init container");
    let c = &inits[0];
    assert_eq!(
        c.security_context.as_ref().and_then(|s| s.privileged),
        Some(true),
        "the init container writes /proc/sys, read-only unless privileged"
    );
    c.command
        .iter()
        .chain(c.args.iter())
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts the container is not privileged, cannot gain privileges, runs
/// as root on a read-only root, and holds exactly `capabilities`.
fn assert_unprivileged(c: &Container, capabilities: &[&str]) {
    let sc = c.security_context.as_ref().expect("a securityContext");
    assert_ne!(sc.privileged, Some(true), "{} is privileged", c.name);
    assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
    assert_eq!(sc.read_only_root_filesystem, Some(true), "{}", c.name);
    assert_eq!(
        sc.run_as_user,
        Some(0),
        "{}: capabilities are granted to root only",
        c.name
    );
    let caps = sc.capabilities.as_ref().expect("capabilities");
    assert_eq!(
        caps.drop.as_deref(),
        Some(&["ALL".to_owned()][..]),
        "{}",
        c.name
    );
    let added: BTreeSet<&str> = caps.add.iter().flatten().map(String::as_str).collect();
    assert_eq!(
        added,
        capabilities.iter().copied().collect(),
        "{}: exactly the daemon's capabilities",
        c.name
    );
    assert_eq!(
        caps.add.as_ref().map(Vec::len),
        Some(capabilities.len()),
        "{}: no capability twice",
        c.name
    );
}

fn assert_host_network(spec: &PodSpec, label: &str) {
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    let selector = spec.node_selector.as_ref().expect("a nodeSelector");
    assert_eq!(selector.get(label).map(String::as_str), Some("true"));
}

fn router_config() -> Config {
    config::load(&deploy_dir().join("xlb.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// The port a probe asks for, named ports resolved against `c`'s.
fn probe_port(c: &Container, probe: Option<&Probe>, which: &str) -> (String, u16) {
    let get = probe
        .and_then(|p| p.http_get.as_ref())
        .unwrap_or_else(|| panic!("{which}: an httpGet probe"));
    let port = match &get.port {
        IntOrString::Int(p) => *p,
        IntOrString::String(name) => {
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(name))
                .unwrap_or_else(|| panic!("{which}: no container port named {name}"))
                .container_port
        }
    };
    (
        get.path.clone().unwrap_or_default(),
        u16::try_from(port).expect("a port number"),
    )
}

fn env_from_field<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .iter()
        .flatten()
        .find(|e| e.name == name)?
        .value_from
        .as_ref()?
        .field_ref
        .as_ref()
        .map(|f| f.field_path.as_str())
}

/// Every address of the pools, in order (small pools only: xlb decap
/// takes each VIP as an argument).
fn pool_addresses(cfg: &Config) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for pool in &cfg.kubernetes.pools {
        let (first, last) = match (pool.first, pool.last) {
            (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b))),
            (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b)),
            _ => panic!("a pool of two families: {pool:?}"),
        };
        assert!(
            last - first < 4096,
            "pool {pool:?} is too large to list as --vip arguments"
        );
        for n in first..=last {
            out.push(match pool.first {
                IpAddr::V4(_) => Ipv4Addr::from(u32::try_from(n).expect("an IPv4 address")).into(),
                IpAddr::V6(_) => Ipv6Addr::from(n).into(),
            });
        }
    }
    out
}

#[test]
fn kustomization_lists_every_manifest() {
    if !python_has("kustomization_lists_every_manifest", "yaml") {
        return;
    }
    let dir = deploy_dir();
    let k = kustomization();
    assert_eq!(k["namespace"], NAMESPACE);
    let listed = resources();
    for r in &listed {
        assert!(
            dir.join(r).is_file(),
            "kustomization.yaml lists {r}, which does not exist"
        );
    }
    for entry in std::fs::read_dir(&dir).expect("reading deploy/") {
        let name = entry.expect("a directory entry").file_name();
        let name = name.to_string_lossy();
        if (name.ends_with(".yaml") || name.ends_with(".yml")) && name != "kustomization.yaml" {
            assert!(
                listed.iter().any(|r| r == &*name),
                "deploy/{name} is not in kustomization.yaml's resources"
            );
        }
    }
    // The router mounts the generated ConfigMap, whose name carries a hash
    // of xlb.toml, so that an edit rolls the router pods.
    let generators = k["configMapGenerator"]
        .as_array()
        .expect("a configMapGenerator");
    let generator = generators
        .iter()
        .find(|g| g["name"] == "xlb-config")
        .expect("the ConfigMap xlb-config is generated");
    assert_eq!(generator["files"], serde_json::json!(["xlb.toml"]));
    assert_ne!(generator["options"]["disableNameSuffixHash"], true);
}

#[test]
fn manifests_validate_strictly_against_kubernetes() {
    let test = "manifests_validate_strictly_against_kubernetes";
    if !python_has(test, "kubernetes_validate") || !python_has(test, "yaml") {
        return;
    }
    let dir = deploy_dir();
    let validate = |files: &[PathBuf]| {
        Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
            .args(["--kubernetes-version", KUBERNETES_VERSION])
            .args(files)
            .output()
            .expect("running kubernetes-validate")
    };

    // Strict mode must reject what the API server would not store, or
    // passing proves little: an unknown field in a pod spec.
    let canary =
        std::env::temp_dir().join(format!("xlb-deploy-canary-{}.yaml", std::process::id()));
    let router = std::fs::read_to_string(dir.join("router-daemonset.yaml")).expect("reading");
    let bad = router.replacen(
        "hostNetwork: true",
        "hostNetwork: true\n      hostNetwrok: true",
        1,
    );
    assert_ne!(bad, router);
    std::fs::write(&canary, bad).expect("writing the canary");
    let out = validate(std::slice::from_ref(&canary));
    std::fs::remove_file(&canary).ok();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stdout).contains("hostNetwrok"),
        "kubernetes-validate --strict accepted an unknown field: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    let files: Vec<PathBuf> = resources().iter().map(|r| dir.join(r)).collect();
    let out = validate(&files);
    assert!(
        out.status.success(),
        "deploy/ does not validate against Kubernetes {KUBERNETES_VERSION}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // What `kubectl apply -k` sends: the same objects after kustomize, plus
    // the generated ConfigMap. kubectl cannot be installed by setup (it is
    // not a Debian package), so this part runs where it is present.
    let Ok(rendered) = Command::new("kubectl").arg("kustomize").arg(&dir).output() else {
        eprintln!("SKIPPED the kustomize part of {test}: no kubectl");
        return;
    };
    assert!(
        rendered.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let path =
        std::env::temp_dir().join(format!("xlb-deploy-rendered-{}.yaml", std::process::id()));
    std::fs::write(&path, &rendered.stdout).expect("writing the rendered manifests");
    let out = validate(std::slice::from_ref(&path));
    let docs = yaml_documents(&path);
    std::fs::remove_file(&path).ok();
    assert!(
        out.status.success(),
        "the kustomize output does not validate:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let toml = std::fs::read_to_string(dir.join("xlb.toml")).expect("reading xlb.toml");
    let cm = docs
        .iter()
        .find(|d| {
            d["kind"] == "ConfigMap"
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("xlb-config-"))
        })
        .expect("kustomize generates the ConfigMap xlb-config-<hash>");
    assert_eq!(cm["data"]["xlb.toml"], toml.as_str());
    let router = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet" && d["metadata"]["name"] == "xlb-router")
        .expect("the router DaemonSet");
    let volumes = router["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|v| v["configMap"]["name"] == cm["metadata"]["name"]),
        "the router mounts the generated ConfigMap by its hashed name"
    );
    for d in &docs {
        let kind = d["kind"].as_str().unwrap_or_default();
        let meta = &d["metadata"];
        assert_eq!(
            meta["labels"]["app.kubernetes.io/name"], "xlb",
            "{kind} {}",
            meta["name"]
        );
        if !["Namespace", "ClusterRole", "ClusterRoleBinding"].contains(&kind) {
            assert_eq!(meta["namespace"], NAMESPACE, "{kind} {}", meta["name"]);
        }
    }
}

#[test]
fn router_config_passes_xlb_check() {
    let xlb = workspace_bin("lb-userspace", "xlb");
    let path = deploy_dir().join("xlb.toml");
    let out = Command::new(&xlb)
        .arg("check")
        .arg("--config")
        .arg(&path)
        .output()
        .expect("running xlb check");
    assert!(
        out.status.success(),
        "xlb check refuses deploy/xlb.toml: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = router_config();
    assert!(cfg.kubernetes.enabled, "the cluster is the source of VIPs");
    assert_eq!(
        cfg.kubernetes.lease_namespace, NAMESPACE,
        "where rbac.yaml grants Leases"
    );
    assert!(
        cfg.metrics.listen.ip().is_unspecified(),
        "with hostNetwork the kubelet probes the node's address, not loopback"
    );
}

#[test]
fn router_daemonset_is_unprivileged_with_exactly_its_capabilities() {
    if !python_has(
        "router_daemonset_is_unprivileged_with_exactly_its_capabilities",
        "yaml",
    ) {
        return;
    }
    let ds = daemonset("router-daemonset.yaml");
    let spec = pod_spec(&ds);
    assert_host_network(spec, "xlb.io/router");
    assert!(
        spec.tolerations
            .iter()
            .flatten()
            .any(|t| t.key.as_deref() == Some("xlb.io/router")
                && t.effect.as_deref() == Some("NoSchedule")),
        "router nodes may be tainted xlb.io/router:NoSchedule"
    );
    assert_eq!(spec.service_account_name.as_deref(), Some("xlb"));
    let c = container(&ds);
    assert_unprivileged(c, &CAPABILITIES);
    assert_eq!(
        c.args.as_deref(),
        Some(&["run", "--config", "/etc/xlb/xlb.toml"].map(String::from)[..])
    );
    assert_eq!(env_from_field(c, "NODE_NAME"), Some("spec.nodeName"));
    assert_eq!(
        env_from_field(c, "POD_NAMESPACE"),
        Some("metadata.namespace")
    );
    let update = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .expect("an update strategy");
    assert_eq!(update.type_.as_deref(), Some("RollingUpdate"));
    assert_eq!(
        update
            .rolling_update
            .as_ref()
            .and_then(|r| r.max_unavailable.clone()),
        Some(IntOrString::Int(1))
    );
}

#[test]
fn router_daemonset_agrees_with_xlb_toml() {
    if !python_has("router_daemonset_agrees_with_xlb_toml", "yaml") {
        return;
    }
    let cfg = router_config();
    let ds = daemonset("router-daemonset.yaml");
    let spec = pod_spec(&ds);
    let c = container(&ds);

    let listen = cfg.metrics.listen.port();
    // Readiness asks whether it forwards; liveness only whether it answers
    // (a refused reconcile must not restart the pod).
    for (which, probe, path) in [
        ("startupProbe", c.startup_probe.as_ref(), "/healthz"),
        ("readinessProbe", c.readiness_probe.as_ref(), "/healthz"),
        ("livenessProbe", c.liveness_probe.as_ref(), "/livez"),
    ] {
        assert_eq!(
            probe_port(c, probe, which),
            (path.to_owned(), listen),
            "{which} must ask {path} on metrics.listen's port"
        );
    }

    let mount = |path: &Path| {
        c.volume_mounts
            .iter()
            .flatten()
            .find(|m| path.starts_with(&m.mount_path))
            .unwrap_or_else(|| panic!("nothing is mounted at {}", path.display()))
    };
    let volume = |name: &str| {
        spec.volumes
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no volume {name}"))
    };
    let host_path = |path: &Path| {
        let m = mount(path);
        let v = volume(&m.name);
        let host = v
            .host_path
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not a hostPath", m.mount_path));
        assert_eq!(host.path, m.mount_path, "mounted where the host has it");
        m
    };
    // The config: the ConfigMap's directory, so edits reach the daemon.
    let m = mount(Path::new("/etc/xlb/xlb.toml"));
    assert_eq!(m.mount_path, "/etc/xlb");
    assert!(
        m.sub_path.is_none(),
        "a subPath mount never sees ConfigMap updates"
    );
    assert_eq!(
        volume(&m.name).config_map.as_ref().map(|c| c.name.as_str()),
        Some("xlb-config")
    );
    // The pins on the host's bpffs, the state files on the host's /run.
    let bpffs = host_path(&cfg.dataplane.pin_path);
    assert_eq!(bpffs.mount_path, "/sys/fs/bpf");
    host_path(&cfg.dataplane.state_dir);

    // The daemon cannot write /proc/sys: the init container sets what it
    // would, including every IPVS director sysctl it checks at start.
    let script = init_script(&ds);
    for wanted in [
        "net.ipv4.conf.all.forwarding=1".to_owned(),
        "net.ipv6.conf.all.forwarding=1".to_owned(),
        "net.ipv4.conf.all.rp_filter=2".to_owned(),
        "modprobe ip_vs".to_owned(),
    ]
    .into_iter()
    .chain(
        lb_userspace::ipvs::sysctl::DIRECTOR
            .iter()
            .map(|(name, value, _)| format!("net.ipv4.vs.{name}={value}")),
    ) {
        assert!(
            script.contains(&wanted),
            "the router's init container does not set {wanted}"
        );
    }
}

#[test]
fn backend_daemonset_decapsulates_every_pool_address() {
    if !python_has("backend_daemonset_decapsulates_every_pool_address", "yaml") {
        return;
    }
    let cfg = router_config();
    let ds = daemonset("backend-daemonset.yaml");
    let spec = pod_spec(&ds);
    assert_host_network(spec, "xlb.io/backend");
    assert_eq!(spec.automount_service_account_token, Some(false));
    let c = container(&ds);
    assert_unprivileged(c, &DECAP_CAPABILITIES);

    let args = c.args.as_deref().expect("xlb decap's arguments");
    assert_eq!(
        args[..3],
        ["decap", "--iface", "$(XLB_IFACE)"].map(String::from)
    );
    assert!(
        c.env
            .iter()
            .flatten()
            .any(|e| e.name == "XLB_IFACE" && e.value.as_deref().is_some_and(|v| !v.is_empty())),
        "XLB_IFACE needs a default"
    );
    let mut vips = Vec::new();
    let mut rest = args[3..].iter();
    while let Some(flag) = rest.next() {
        assert_eq!(flag, "--vip", "unexpected argument {flag}");
        let vip = rest.next().expect("an address after --vip");
        vips.push(
            vip.parse::<IpAddr>()
                .unwrap_or_else(|e| panic!("--vip {vip}: {e}")),
        );
    }
    assert_eq!(
        vips,
        pool_addresses(&cfg),
        "the --vip list must be xlb.toml's kubernetes.pools, address by address"
    );

    let script = init_script(&ds);
    for wanted in [
        "net.ipv4.conf.all.arp_ignore=1",
        "net.ipv4.conf.all.arp_announce=2",
        "net.ipv4.conf.all.rp_filter=2",
    ] {
        assert!(
            script.contains(wanted),
            "the backend's init container does not set {wanted}"
        );
    }
}

/// Runs `script` in bash inside new network and mount namespaces, with
/// `env` set; returns its combined output, or panics with it.
fn run_isolated(what: &str, script: &str, env: &[(&str, String)]) -> String {
    let out = Command::new("unshare")
        .args(["--net", "--mount", "bash", "-c", script])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("running unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// What both containers meet on a node: a network namespace of their own
/// with one interface, d0, the init container's script run as it is (the
/// sysctls it writes are the namespace's), then /proc/sys read-only as the
/// runtime mounts it for an unprivileged container.
const NODE: &str = r#"
set -eu
ip link add d0 type veth peer name d1
ip addr add 10.250.0.1/24 dev d0
ip link set d0 up; ip link set d1 up; ip link set lo up
sh -euc "$INIT"
mount --bind /proc/sys /proc/sys
mount -o remount,bind,ro /proc/sys
if (echo 1 > /proc/sys/net/ipv4/conf/all/forwarding) 2>/dev/null; then
    echo "/proc/sys is still writable" >&2; exit 1
fi
# The container: only the manifest's capabilities, no environment (so no
# PATH: like the distroless image, no modprobe or mount to run).
contained() {
    exec env -i /usr/bin/setpriv --bounding-set="-all,$CAPS" --inh-caps="-all,$CAPS" \
        --ambient-caps="-all,$CAPS" "$@"
}
"#;

/// Removes the pins a daemon left under bpffs, even when the test fails.
struct Pins(PathBuf);

impl Drop for Pins {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// setpriv's spelling of a manifest's capabilities.
fn setpriv_caps(c: &Container) -> String {
    let sc = c.security_context.as_ref().expect("a securityContext");
    let caps = sc
        .capabilities
        .as_ref()
        .and_then(|c| c.add.as_ref())
        .expect("capabilities");
    caps.iter()
        .map(|c| format!("+{}", c.to_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

#[test]
fn containers_run_with_only_what_their_manifests_grant() {
    let test = "containers_run_with_only_what_their_manifests_grant";
    if !xlb_tests::netns::privileged(test) || !python_has(test, "yaml") {
        return;
    }
    let xlb = workspace_bin("lb-userspace", "xlb");
    let dir = std::env::temp_dir().join(format!("xlb-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/xlbt-deploy-{}",
        std::process::id()
    )));

    // The router: deploy/xlb.toml with its sizes and metrics address, on d0
    // (generic XDP: a veth), its own pins and state, one static VIP and no
    // cluster to watch.
    let toml = std::fs::read_to_string(deploy_dir().join("xlb.toml")).expect("reading xlb.toml");
    let mut edited = toml.clone();
    for (from, to) in [
        (
            "interfaces = [\"eth0\"]",
            "interfaces = [\"d0\"]".to_owned(),
        ),
        ("xdp_mode = \"native\"", "xdp_mode = \"generic\"".to_owned()),
        (
            "pin_path = \"/sys/fs/bpf/xlb\"",
            format!("pin_path = \"{}\"", pins.0.display()),
        ),
        (
            "state_dir = \"/run/xlb\"",
            format!("state_dir = \"{}\"", dir.join("state").display()),
        ),
        ("enabled = true", "enabled = false".to_owned()),
    ] {
        assert!(edited.contains(from), "xlb.toml no longer has {from}");
        edited = edited.replacen(from, &to, 1);
    }
    edited.push_str(
        "\n[[vip]]\naddress = \"10.250.1.1\"\nport = 80\nbackends = [{ address = \"10.250.0.2\" }]\n",
    );
    let config = dir.join("xlb.toml");
    std::fs::write(&config, edited).expect("writing the config");

    let router = daemonset("router-daemonset.yaml");
    let c = container(&router);
    let port = router_config().metrics.listen.port();
    let out = run_isolated(
        "the router container",
        &format!(
            "{NODE}{}",
            r#"
contained "$XLB" run --config "$CONFIG" > "$LOG" 2>&1 &
pid=$!
for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$PORT/healthz" > /dev/null 2>&1 && break
    kill -0 "$pid" 2> /dev/null || { cat "$LOG"; exit 1; }
    sleep 0.2
done
curl -fsS "http://127.0.0.1:$PORT/metrics" | grep '^xlb_dataplane_info' || { cat "$LOG"; exit 1; }
grep '^CapEff' "/proc/$pid/status"
kill "$pid"; wait "$pid" || true
cat "$LOG"
"#
        ),
        &[
            (
                "INIT",
                init_script(&router).replacen("/bin/sh\n-euc\n", "", 1),
            ),
            ("CAPS", setpriv_caps(c)),
            ("XLB", xlb.display().to_string()),
            ("CONFIG", config.display().to_string()),
            ("LOG", dir.join("router.log").display().to_string()),
            ("PORT", port.to_string()),
        ],
    );
    assert!(
        out.contains("xlb_dataplane_info{dataplane=\"xdp\"} 1"),
        "the router did not run XDP with its four capabilities:\n{out}"
    );
    // BPF (39), PERFMON (38), NET_RAW (13), NET_ADMIN (12), nothing else.
    assert!(out.contains("CapEff:\t000000c000003000"), "{out}");
    assert!(
        !out.contains("cannot enable IP forwarding"),
        "the init container left forwarding for the daemon to set:\n{out}"
    );
    drop(pins);

    let backend = daemonset("backend-daemonset.yaml");
    let c = container(&backend);
    let args: Vec<String> = c
        .args
        .iter()
        .flatten()
        .map(|a| a.replace("$(XLB_IFACE)", "d0"))
        .collect();
    let out = run_isolated(
        "the backend container",
        &format!(
            "{NODE}{}",
            r#"
contained "$XLB" $ARGS > "$LOG" 2>&1 &
pid=$!
for _ in $(seq 1 150); do
    grep -q decapsulating "$LOG" && break
    kill -0 "$pid" 2> /dev/null || { cat "$LOG"; exit 1; }
    sleep 0.2
done
kill "$pid"; wait "$pid" || true
cat "$LOG"
"#
        ),
        &[
            (
                "INIT",
                init_script(&backend).replacen("/bin/sh\n-euc\n", "", 1),
            ),
            ("CAPS", setpriv_caps(c)),
            ("XLB", xlb.display().to_string()),
            ("ARGS", args.join(" ")),
            ("LOG", dir.join("backend.log").display().to_string()),
        ],
    );
    assert!(
        out.contains("decapsulating"),
        "xlb decap did not attach:\n{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// The BGP component's capabilities for the bird container.
const BIRD_CAPABILITIES: [&str; 2] = ["NET_ADMIN", "NET_BIND_SERVICE"];

/// A copy of deploy/ in a temporary directory, removed on drop.
struct DeployCopy(PathBuf);

impl DeployCopy {
    /// deploy/ with the BGP component included the way docs/bgp.md says:
    /// `components: [bgp]` added to its kustomization.
    fn with_bgp() -> Self {
        let dir = std::env::temp_dir().join(format!("xlb-deploy-bgp-{}", std::process::id()));
        std::fs::remove_dir_all(&dir).ok();
        let status = Command::new("cp")
            .arg("-r")
            .arg(deploy_dir())
            .arg(&dir)
            .status()
            .expect("running cp");
        assert!(status.success(), "copying deploy/ to {}", dir.display());
        let k = dir.join("kustomization.yaml");
        let mut text = std::fs::read_to_string(&k).expect("reading the copy's kustomization");
        text.push_str("components:\n  - bgp\n");
        std::fs::write(&k, text).expect("writing the copy's kustomization");
        Self(dir)
    }
}

impl Drop for DeployCopy {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// `kubectl kustomize DIR` as JSON documents, or `None` without kubectl.
fn kustomize(dir: &Path) -> Option<Vec<Value>> {
    let rendered = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .ok()?;
    assert!(
        rendered.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&rendered.stderr)
    );
    let path = dir.with_extension("rendered.yaml");
    std::fs::write(&path, &rendered.stdout).expect("writing the rendered manifests");
    let out = Command::new("python3")
        .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
        .args(["--kubernetes-version", KUBERNETES_VERSION])
        .arg(&path)
        .output()
        .expect("running kubernetes-validate");
    let docs = yaml_documents(&path);
    std::fs::remove_file(&path).ok();
    assert!(
        out.status.success(),
        "kustomize's output for {} does not validate:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    Some(docs)
}

/// deploy/bgp's bird container, as its patch spells it.
fn bird_container() -> Container {
    let mut docs = yaml_documents(&deploy_dir().join("bgp/router-bird.yaml"));
    assert_eq!(docs.len(), 1, "router-bird.yaml holds one patch");
    let containers = docs.remove(0)["spec"]["template"]["spec"]["containers"].take();
    let mut containers: Vec<Container> =
        serde_json::from_value(containers).expect("router-bird.yaml's containers");
    assert_eq!(containers.len(), 1, "router-bird.yaml adds one container");
    containers.remove(0)
}

#[test]
fn the_bgp_component_adds_bird_beside_xlb_and_changes_nothing_else() {
    let test = "the_bgp_component_adds_bird_beside_xlb_and_changes_nothing_else";
    if !python_has(test, "kubernetes_validate") || !python_has(test, "yaml") {
        return;
    }
    let copy = DeployCopy::with_bgp();
    let (Some(base), Some(bgp)) = (kustomize(&deploy_dir()), kustomize(&copy.0)) else {
        eprintln!("SKIPPED {test}: no kubectl");
        return;
    };
    let name = |d: &Value| {
        format!(
            "{} {}",
            d["kind"].as_str().unwrap_or_default(),
            d["metadata"]["name"].as_str().unwrap_or_default()
        )
    };
    let is_router = |d: &Value| d["kind"] == "DaemonSet" && d["metadata"]["name"] == "xlb-router";

    // Everything of the base is there unchanged, but the router DaemonSet.
    for d in base.iter().filter(|d| !is_router(d)) {
        assert!(bgp.contains(d), "the component changed {}", name(d));
    }
    let extra: Vec<&Value> = bgp
        .iter()
        .filter(|d| !is_router(d) && !base.contains(d))
        .collect();
    assert_eq!(
        extra.len(),
        1,
        "{:?}",
        extra.iter().map(|d| name(d)).collect::<Vec<_>>()
    );
    let cm = extra[0];
    assert_eq!(cm["kind"], "ConfigMap");
    let cm_name = cm["metadata"]["name"].as_str().expect("a name");
    assert!(
        cm_name.starts_with("xlb-bird-"),
        "{cm_name}: named with a hash"
    );
    assert_eq!(cm["metadata"]["namespace"], NAMESPACE);
    assert_eq!(cm["metadata"]["labels"]["app.kubernetes.io/name"], "xlb");
    let template =
        std::fs::read_to_string(deploy_dir().join("bgp/bird.conf")).expect("reading bird.conf");
    assert_eq!(cm["data"]["bird.conf"], template.as_str());

    // The router pod: the same, plus the bird container and its volumes.
    let pod = |docs: &[Value]| -> PodSpec {
        let ds: DaemonSet = serde_json::from_value(
            docs.iter()
                .find(|d| is_router(d))
                .expect("the router")
                .clone(),
        )
        .expect("a DaemonSet");
        pod_spec(&ds).clone()
    };
    let (base_pod, bgp_pod) = (pod(&base), pod(&bgp));
    let router: &Value = bgp.iter().find(|d| is_router(d)).expect("the router");
    assert_eq!(
        router["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/default-container"],
        "xlb"
    );
    let names: Vec<&str> = bgp_pod.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let xlb = bgp_pod.containers.iter().find(|c| c.name == "xlb");
    assert_eq!(
        xlb,
        Some(&base_pod.containers[0]),
        "the xlb container changed"
    );
    let bird = bgp_pod
        .containers
        .iter()
        .find(|c| c.name == "bird")
        .expect("a bird container");
    assert_unprivileged(bird, &BIRD_CAPABILITIES);
    assert!(
        bird.image
            .as_deref()
            .is_some_and(|i| i.contains("xlb-bird")),
        "{:?}",
        bird.image
    );
    let volumes = bgp_pod.volumes.as_ref().expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|v| v.config_map.as_ref().map(|c| c.name.as_str()) == Some(cm_name)),
        "the router mounts {cm_name}"
    );
    for v in base_pod.volumes.iter().flatten() {
        assert!(
            volumes.contains(v),
            "the component changed volume {}",
            v.name
        );
    }
    for mount in bird.volume_mounts.iter().flatten() {
        assert!(
            volumes.iter().any(|v| v.name == mount.name),
            "bird mounts {}, which is no volume",
            mount.name
        );
    }
    let rest = |p: &PodSpec| PodSpec {
        containers: Vec::new(),
        volumes: None,
        ..p.clone()
    };
    assert_eq!(
        rest(&bgp_pod),
        rest(&base_pod),
        "the component changed the pod"
    );
    assert_host_network(&bgp_pod, "xlb.io/router");
}

/// Kills a process on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_bird_container_holds_its_sessions_with_only_what_its_manifest_grants() {
    use std::time::{Duration, Instant};
    use xlb_tests::{
        bird::{self, Bird, Session, Timers},
        netns::NetNs,
    };
    let test = "the_bird_container_holds_its_sessions_with_only_what_its_manifest_grants";
    if !xlb_tests::netns::privileged(test) || !bird::available(test) || !python_has(test, "yaml") {
        return;
    }
    let c = bird_container();
    let command: Vec<String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .cloned()
        .collect();
    assert_eq!(command[..2], ["/bin/sh", "-euc"], "{command:?}");
    let dir = std::env::temp_dir().join(format!("xlb-deploy-bird-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("template")).expect("a temporary directory");
    std::fs::create_dir_all(dir.join("run")).expect("a temporary directory");
    // The container's script with its two directories moved here.
    let script = command[2]
        .replace(
            "/etc/bird/template",
            &dir.join("template").display().to_string(),
        )
        .replace("/run/bird", &dir.join("run").display().to_string());
    let template =
        std::fs::read_to_string(deploy_dir().join("bgp/bird.conf")).expect("reading bird.conf");
    let caps = setpriv_caps(&c);
    let contained = |ns: &NetNs, log: &str| {
        let log = std::fs::File::create(dir.join(log)).expect("a log");
        ns.command("setpriv")
            .arg(format!("--bounding-set=-all,{caps}"))
            .arg(format!("--inh-caps=-all,{caps}"))
            .arg(format!("--ambient-caps=-all,{caps}"))
            .args(["/bin/sh", "-euc", &script])
            .env_clear()
            // The image's (Debian's) PATH.
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env("NODE_IP", "10.250.0.2")
            .stdout(log.try_clone().expect("a log"))
            .stderr(log)
            .spawn()
            .expect("running setpriv")
    };

    // Unfilled, the template stops the container with the names left.
    let template_file = dir.join("template/bird.conf");
    std::fs::write(&template_file, &template).expect("writing the template");
    let node = NetNs::new();
    let status = Killed(contained(&node, "unfilled.log"))
        .0
        .wait()
        .expect("waiting");
    let log = std::fs::read_to_string(dir.join("unfilled.log")).unwrap_or_default();
    assert!(
        !status.success(),
        "bird started with placeholders left:\n{log}"
    );
    assert!(
        log.contains("@LOCAL_AS@") && !log.contains("@NODE_IP@"),
        "{log}"
    );

    // Filled in, it holds BGP and BFD sessions with an upstream, and
    // announces table 4243's routes of protocol 178, no others.
    let upstream = NetNs::new();
    upstream.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &node.name,
    ]);
    for (ns, v4, v6) in [
        (&upstream, "10.250.0.1", "fd25::1"),
        (&node, "10.250.0.2", "fd25::2"),
    ] {
        ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", "eth0"]);
        ns.ip(&["addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"]);
        ns.ip(&["link", "set", "eth0", "up"]);
    }
    let mut filled = template.clone();
    for (from, to) in [
        ("@LOCAL_AS@", "65001"),
        ("@PEER_IP4@", "10.250.0.1"),
        ("@PEER_IP6@", "fd25::1"),
        ("@PEER_AS@", "65000"),
    ] {
        assert!(filled.contains(from), "bird.conf has no {from}");
        filled = filled.replace(from, to);
    }
    std::fs::write(&template_file, filled).expect("writing the template");
    let vip4: IpAddr = "10.99.0.1".parse().expect("an address");
    let vip6: IpAddr = "fd99::1".parse().expect("an address");
    bird::add_vip_route(&node, vip4);
    bird::add_vip_route(&node, vip6);
    node.ip(&[
        "route",
        "add",
        "blackhole",
        "10.99.0.2/32",
        "table",
        "4243",
        "proto",
        "static",
    ]);
    let session = |name: &str, local: &str, neighbor: &str| Session {
        name: name.into(),
        local: local.parse().expect("an address"),
        neighbor: neighbor.parse().expect("an address"),
        neighbor_as: 65001,
    };
    let upstream_bird = Bird::start(
        &upstream,
        "upstream",
        &bird::Upstream {
            router_id: "10.250.0.1".parse().expect("an address"),
            local_as: 65000,
            sessions: vec![
                session("node_4", "10.250.0.1", "10.250.0.2"),
                session("node_6", "fd25::1", "fd25::2"),
            ],
            bfd: true,
            timers: Timers::FAST,
        }
        .render(),
    );
    let sidecar = Killed(contained(&node, "bird.log"));
    let sidecar_log = || std::fs::read_to_string(dir.join("bird.log")).unwrap_or_default();
    for p in ["node_4", "node_6"] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !upstream_bird
            .protocols()
            .iter()
            .any(|r| r.name == p && r.is_established())
        {
            assert!(
                Instant::now() < deadline,
                "{p} never came up:\n{}\nthe sidecar's log:\n{}",
                upstream_bird.show_protocols(),
                sidecar_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let start = Instant::now();
    bird::wait_next_hops(
        &upstream,
        "10.99.0.1/32",
        &["10.250.0.2".parse().expect("an address")],
        start,
        Duration::from_secs(30),
    );
    bird::wait_next_hops(
        &upstream,
        "fd99::1/128",
        &["fd25::2".parse().expect("an address")],
        start,
        Duration::from_secs(30),
    );
    assert_eq!(
        bird::route(&upstream, "10.99.0.2/32"),
        None,
        "a route of another protocol was announced"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bfd = upstream_bird.birdc(&["show", "bfd", "sessions"]);
        if bfd.lines().filter(|l| l.contains(" Up ")).count() == 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "BFD sessions not up:\n{bfd}\n{}",
            sidecar_log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", sidecar.0.id())).expect("bird's status");
    // NET_ADMIN (12), NET_BIND_SERVICE (10), nothing else.
    assert!(status.contains("CapEff:\t0000000000001400"), "{status}");
    // The probes' command answers.
    let probe = c
        .readiness_probe
        .as_ref()
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.clone())
        .expect("an exec readiness probe");
    let probe: Vec<String> = probe
        .iter()
        .map(|a| a.replace("/run/bird", &dir.join("run").display().to_string()))
        .collect();
    let out = Command::new(&probe[0])
        .args(&probe[1..])
        .output()
        .expect("running the probe");
    assert!(
        out.status.success(),
        "the readiness probe fails: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    drop(sidecar);
    std::fs::remove_dir_all(&dir).ok();
}

/// deploy/aws/iam-policy.json: the seven EC2 actions the `aws` announcer
/// calls and nothing else; `"Resource": "*"` only for the Describe calls
/// (EC2 has no resource-level permissions for them); the writes on
/// network interfaces and Elastic IPs only; tags only under the key xlb
/// writes. Whether the actions suffice is tested against moto (aws.rs
/// runs its main test as a principal holding them); the resource and
/// condition narrowing, which moto does not evaluate, is not.
#[test]
fn the_iam_policy_allows_only_what_xlb_calls_where_it_calls_it() {
    use lb_userspace::announce::aws::plan::ROUTER_TAG;
    let text = std::fs::read_to_string(deploy_dir().join("aws/iam-policy.json")).unwrap();
    let policy: Value = serde_json::from_str(&text).unwrap();
    let as_list = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(a) => a.iter().map(|s| s.as_str().unwrap().to_owned()).collect(),
            other => panic!("not a string or a list: {other}"),
        }
    };
    let mut actions = BTreeSet::new();
    for st in policy["Statement"].as_array().unwrap() {
        assert_eq!(st["Effect"], "Allow", "{st}");
        let acts = as_list(&st["Action"]);
        let resources = as_list(&st["Resource"]);
        for a in &acts {
            assert!(!a.contains('*'), "an action wildcard: {a}");
            actions.insert(a.clone());
        }
        let reads = acts.iter().all(|a| a.starts_with("ec2:Describe"));
        if reads {
            assert_eq!(resources, ["*"], "{st}");
            continue;
        }
        assert!(
            acts.iter().all(|a| !a.starts_with("ec2:Describe")),
            "reads and writes in one statement: {st}"
        );
        for r in &resources {
            assert!(
                r == "arn:aws:ec2:*:*:network-interface/*" || r == "arn:aws:ec2:*:*:elastic-ip/*",
                "a write on {r}: {st}"
            );
        }
        if acts.iter().any(|a| a == "ec2:CreateTags") {
            assert_eq!(acts, ["ec2:CreateTags"], "{st}");
            assert_eq!(
                st["Condition"]["ForAllValues:StringEquals"]["aws:TagKeys"],
                serde_json::json!([ROUTER_TAG]),
                "{st}"
            );
            assert_eq!(st["Condition"]["Null"]["aws:TagKeys"], "false", "{st}");
        }
        if acts.iter().any(|a| a == "ec2:AssociateAddress") {
            assert!(
                resources.iter().any(|r| r.ends_with(":elastic-ip/*")),
                "{st}"
            );
            assert!(
                resources
                    .iter()
                    .any(|r| r.ends_with(":network-interface/*")),
                "{st}"
            );
        }
    }
    assert_eq!(
        actions,
        [
            "ec2:AssignPrivateIpAddresses",
            "ec2:AssociateAddress",
            "ec2:CreateTags",
            "ec2:DescribeAddresses",
            "ec2:DescribeNetworkInterfaces",
            "ec2:DescribeSubnets",
            "ec2:ModifyNetworkInterfaceAttribute",
        ]
        .map(str::to_owned)
        .into(),
    );
}
