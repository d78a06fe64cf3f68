//! The netfilter rules kube-proxy writes on a node for `type:
//! LoadBalancer` Services with `externalTrafficPolicy: Cluster`, in both of
//! its modes (iptables, through the legacy or the nft back-end of the
//! iptables tools; and nftables), and their loading into a namespace with
//! the loading command timed.
//!
//! The benchmark measures connect time through these rules at up to 10,000
//! Services, so what matters is their shape: how many rules and chains per
//! Service, which chain jumps where, and in what order a packet meets them.
//! The shape follows kube-proxy's own proxiers (pkg/proxy/iptables and
//! pkg/proxy/nftables, v1.3x) as run with their defaults for IPv4, on a
//! first full sync, with a cluster-CIDR local-traffic detector:
//!
//! - iptables: KUBE-SERVICES holds a cluster-IP rule and a load-balancer-IP
//!   rule per Service port, then the final `addrtype LOCAL` jump to
//!   KUBE-NODEPORTS; KUBE-EXT marks for masquerade and goes to KUBE-SVC,
//!   which masquerades off-cluster sources to the cluster IP and picks an
//!   endpoint with the chain of `statistic --probability 1/(n-i)` rules;
//!   each KUBE-SEP marks hairpin traffic and DNATs. Over 1,000 endpoints in
//!   all, kube-proxy's "large cluster mode" drops the comments of the
//!   KUBE-SVC to KUBE-SEP rules and of the KUBE-SEP rules, and so do we.
//! - nftables: table `ip kube-proxy`, its base chains at kube-proxy's
//!   priorities, the `service-ips` / `service-nodeports` verdict maps,
//!   per-port `service-` and `external-` chains, `numgen random mod n vmap`,
//!   `endpoint-` chains with `dnat to`, masquerading by mark.
//!
//! Where this differs from kube-proxy, and why:
//! - Chain names hash with FNV-1a of our own, not sha256: names only need
//!   to be deterministic and distinct, and their length is kube-proxy's
//!   (16 characters after KUBE-SVC- etc., 8 in nftables names).
//! - The jumps from the built-in chains (kube-proxy's `iptables -I` calls
//!   before each full sync) are `-I` lines of the one restore input, so
//!   one command loads everything; the final chain order is the same.
//! - Left out: IPv6; health-check node ports and the Local traffic policy
//!   (KUBE-SVL, `local-` chains); loadBalancerSourceRanges (KUBE-FW, the
//!   `firewall-` chains, which stay empty); session affinity; externalIPs;
//!   Services without endpoints (REJECT rules, `no-endpoint-*` elements);
//!   the KUBE-PROXY-CANARY chains of the mangle table; the `nfacct`
//!   counters (their rules need nfacct objects this namespace lacks); the
//!   nftables rule dropping traffic to unallocated cluster IPs (it needs
//!   the ServiceCIDRs, which the API here does not carry); the node's own
//!   addresses in the nftables `nodeport-ips` set (node ports are not
//!   measured, so the set stays empty).
//! - Not a difference: the iptables mode's `--probability` has 10 decimals
//!   (`0.3333333333`), as kube-proxy's `%0.10f` prints it.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::Ipv4Addr,
    process::{Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::netns::NetNs;

/// Appends one line to a rules buffer. Writing to a `String` cannot fail,
/// so the `fmt::Result` carries nothing.
macro_rules! line {
    ($out:expr, $($arg:tt)*) => {{
        let _ = writeln!($out, $($arg)*);
    }};
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// Lower case, as both iptables (`-p tcp`) and nft (`tcp dport`) spell it.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: u16,
    pub target_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub cluster_ip: Ipv4Addr,
    pub load_balancer_ip: Ipv4Addr,
    pub ports: Vec<ServicePort>,
    /// Ready endpoints; each port of the Service reaches each of them on
    /// its `target_port`.
    pub endpoints: Vec<Ipv4Addr>,
}

/// `count` decoy Services, 3 endpoints each, one TCP port (80): numbered
/// from 10.97.0.0 (cluster IPs), 10.98.0.0 (load balancer IPs), 10.200.0.0
/// (endpoints, never reached) and node port 32768, so a caller's
/// traffic-carrying Service elsewhere (node port below 32768) never
/// collides with them. Node ports must be distinct (nft refuses a second
/// `service-nodeports` element), and 10,000 of them do not fit the default
/// 30000-32767 range: such a cluster runs with a wider
/// `--service-node-port-range`. At most 32,767 decoys.
pub fn decoys(count: usize) -> Vec<Service> {
    (0..count).map(decoy).collect()
}

fn decoy(i: usize) -> Service {
    // Host part i + 1 keeps .0 out of the first /24.
    let offset = |base: [u8; 4], k: usize| {
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        Ipv4Addr::from(u32::from(Ipv4Addr::from(base)).wrapping_add(k))
    };
    Service {
        namespace: format!("decoy{}", i % 100),
        name: format!("svc{i}"),
        cluster_ip: offset([10, 97, 0, 0], i + 1),
        load_balancer_ip: offset([10, 98, 0, 0], i + 1),
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: 32768 + u16::try_from(i).unwrap_or(u16::MAX - 32768),
            target_port: 8080,
        }],
        endpoints: (0..3)
            .map(|e| offset([10, 200, 0, 0], 3 * i + e + 1))
            .collect(),
    }
}

/// kube-proxy's masquerade mark (bit 14, its `--masquerade-bit` default).
const MASQ_MARK: u32 = 0x4000;

/// Above this many endpoints (over all Service ports) kube-proxy's
/// iptables mode leaves out per-endpoint comments to shrink its input.
const LARGE_CLUSTER_ENDPOINTS: usize = 1000;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// FNV-1a (64 bit) from a given offset basis.
fn fnv1a(basis: u64, data: &[u8]) -> u64 {
    data.iter().fold(basis, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `len` (at most 25) base32 characters of a 128-bit hash of `input`: two
/// FNV-1a runs from different bases, since 16 characters need 80 bits.
fn hash_name(input: &str, len: usize) -> String {
    let hi = fnv1a(0xcbf2_9ce4_8422_2325, input.as_bytes());
    let lo = fnv1a(0x6c62_272e_07bb_0142, input.as_bytes());
    let bits = (u128::from(hi) << 64) | u128::from(lo);
    (0..len)
        .map(|i| char::from(BASE32[((bits >> (123 - 5 * i)) & 31) as usize]))
        .collect()
}

/// One port of one Service with the names both modes derive from it.
struct Port<'a> {
    service: &'a Service,
    port: &'a ServicePort,
    proto: &'static str,
    /// kube-proxy's ServicePortName string, `namespace/name:port`.
    label: String,
}

impl<'a> Port<'a> {
    fn new(service: &'a Service, port: &'a ServicePort) -> Self {
        let label = if port.name.is_empty() {
            format!("{}/{}", service.namespace, service.name)
        } else {
            format!("{}/{}:{}", service.namespace, service.name, port.name)
        };
        Self {
            service,
            port,
            proto: port.protocol.name(),
            label,
        }
    }

    fn endpoint(&self, ip: Ipv4Addr) -> String {
        format!("{ip}:{}", self.port.target_port)
    }

    fn ipt_hash(&self) -> String {
        hash_name(&format!("{}{}", self.label, self.proto), 16)
    }

    fn ipt_svc(&self) -> String {
        format!("KUBE-SVC-{}", self.ipt_hash())
    }

    fn ipt_ext(&self) -> String {
        format!("KUBE-EXT-{}", self.ipt_hash())
    }

    fn ipt_sep(&self, ip: Ipv4Addr) -> String {
        let key = format!("{}{}{}", self.label, self.proto, self.endpoint(ip));
        format!("KUBE-SEP-{}", hash_name(&key, 16))
    }

    /// `HASH-namespace/name/proto/port`, the base of nftables chain names.
    fn nft_base(&self) -> String {
        let s = self.service;
        let name = format!(
            "{}/{}/{}/{}",
            s.namespace, s.name, self.proto, self.port.name
        );
        format!("{}-{name}", hash_name(&name, 8))
    }

    fn nft_service(&self) -> String {
        format!("service-{}", self.nft_base())
    }

    fn nft_external(&self) -> String {
        format!("external-{}", self.nft_base())
    }

    fn nft_endpoint(&self, ip: Ipv4Addr) -> String {
        let s = self.service;
        let name = format!(
            "{}/{}/{}/{}__{ip}/{}",
            s.namespace, s.name, self.proto, self.port.name, self.port.target_port
        );
        format!("endpoint-{}-{name}", hash_name(&name, 8))
    }
}

fn ports(services: &[Service]) -> impl Iterator<Item = Port<'_>> {
    services
        .iter()
        .flat_map(|s| s.ports.iter().map(move |p| Port::new(s, p)))
}

/// kube-proxy's `%0.10f` of 1/n.
fn probability(n: usize) -> String {
    format!("{:.10}", 1.0 / n as f64)
}

/// The jumps kube-proxy (and, for KUBE-FIREWALL, kubelet) prepends to the
/// built-in chains: (table, built-in chain, match, comment, target). Each
/// is `-I`, so the last listed for a chain ends up first, as with
/// kube-proxy's one `iptables -I` per entry.
const JUMPS: &[(&str, &str, &str, &str, &str)] = &[
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes externally-visible service portals",
        "KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW",
        "kubernetes externally-visible service portals",
        "KUBE-EXTERNAL-SERVICES",
    ),
    (
        "filter",
        "INPUT",
        "",
        "kubernetes health check service ports",
        "KUBE-NODEPORTS",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW",
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "filter",
        "FORWARD",
        "",
        "kubernetes forwarding rules",
        "KUBE-FORWARD",
    ),
    (
        "filter",
        "INPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "OUTPUT",
        "-m conntrack --ctstate NEW",
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "filter",
        "FORWARD",
        "-m conntrack --ctstate NEW",
        "kubernetes load balancer firewall",
        "KUBE-PROXY-FIREWALL",
    ),
    (
        "nat",
        "OUTPUT",
        "",
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "PREROUTING",
        "",
        "kubernetes service portals",
        "KUBE-SERVICES",
    ),
    (
        "nat",
        "POSTROUTING",
        "",
        "kubernetes postrouting rules",
        "KUBE-POSTROUTING",
    ),
    ("filter", "INPUT", "", "", "KUBE-FIREWALL"),
    ("filter", "OUTPUT", "", "", "KUBE-FIREWALL"),
];

fn write_jumps(out: &mut String, table: &str) {
    for (t, chain, matches, comment, target) in JUMPS {
        if *t != table {
            continue;
        }
        let mut rule = format!("-I {chain}");
        if !matches.is_empty() {
            rule = format!("{rule} {matches}");
        }
        if !comment.is_empty() {
            rule = format!("{rule} -m comment --comment \"{comment}\"");
        }
        line!(out, "{rule} -j {target}");
    }
}

/// The node's rules as kube-proxy's iptables mode writes them: one
/// iptables-restore input (for `--noflush`) with the filter and nat
/// tables. `cluster_cidr` is the pod CIDR of the `! -s CIDR -j
/// KUBE-MARK-MASQ` rule. Services appear in KUBE-SERVICES in the order
/// given.
pub fn iptables_restore(services: &[Service], cluster_cidr: &str) -> String {
    let mut out = String::new();
    write_filter(&mut out);
    write_nat(&mut out, services, cluster_cidr);
    out
}

fn write_filter(out: &mut String) {
    line!(out, "*filter");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-NODEPORTS",
        "KUBE-PROXY-FIREWALL",
        "KUBE-FIREWALL",
    ] {
        line!(out, ":{chain} - [0:0]");
    }
    write_jumps(out, "filter");
    // kube-proxy's copy of kubelet's guard for route_localnet, written
    // because localhost node ports are on by default.
    line!(
        out,
        "-A KUBE-FIREWALL -m comment --comment \"block incoming localnet connections\" -d 127.0.0.0/8 ! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
    );
    line!(
        out,
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
    );
    line!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK:#x}/{MASQ_MARK:#x} -j ACCEPT"
    );
    line!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    line!(out, "COMMIT");
}

fn write_nat(out: &mut String, services: &[Service], cluster_cidr: &str) {
    let endpoints: usize = ports(services).map(|p| p.service.endpoints.len()).sum();
    let comments = endpoints <= LARGE_CLUSTER_ENDPOINTS;
    // iptables-restore wants every chain declared before the rules of the
    // table, so chains and rules go to two buffers, as in kube-proxy.
    let mut chains = String::new();
    let mut rules = String::new();
    for chain in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        line!(chains, ":{chain} - [0:0]");
    }
    write_jumps(&mut rules, "nat");
    write_masquerading(&mut rules);
    for p in ports(services) {
        write_port_nat(&mut chains, &mut rules, &p, cluster_cidr, comments);
    }
    line!(
        rules,
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS"
    );
    line!(out, "*nat");
    out.push_str(&chains);
    out.push_str(&rules);
    line!(out, "COMMIT");
}

fn write_masquerading(rules: &mut String) {
    let m = MASQ_MARK;
    line!(
        rules,
        "-A KUBE-POSTROUTING -m mark ! --mark {m:#x}/{m:#x} -j RETURN"
    );
    // Cleared so a packet crossing the stack again is not masqueraded twice.
    line!(rules, "-A KUBE-POSTROUTING -j MARK --xor-mark {m:#x}");
    line!(
        rules,
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully"
    );
    line!(rules, "-A KUBE-MARK-MASQ -j MARK --or-mark {m:#x}");
}

/// One Service port's rules, in kube-proxy's order: the KUBE-SERVICES and
/// KUBE-NODEPORTS entries, then the KUBE-SVC, KUBE-EXT and KUBE-SEP chains.
fn write_port_nat(
    chains: &mut String,
    rules: &mut String,
    p: &Port<'_>,
    cidr: &str,
    comments: bool,
) {
    let (svc, ext, label, proto) = (p.ipt_svc(), p.ipt_ext(), &p.label, p.proto);
    let (cip, lbip, port) = (
        p.service.cluster_ip,
        p.service.load_balancer_ip,
        p.port.port,
    );
    let l4 = format!("-m {proto} -p {proto}");
    line!(
        rules,
        "-A KUBE-SERVICES -m comment --comment \"{label} cluster IP\" {l4} -d {cip} --dport {port} -j {svc}"
    );
    line!(
        rules,
        "-A KUBE-SERVICES -m comment --comment \"{label} loadbalancer IP\" {l4} -d {lbip} --dport {port} -j {ext}"
    );
    line!(
        rules,
        "-A KUBE-NODEPORTS -m comment --comment {label} {l4} --dport {} -j {ext}",
        p.port.node_port
    );
    // Off-cluster clients of the cluster IP are masqueraded: the route to
    // the Service range may bounce through this node to another one.
    line!(
        rules,
        "-A {svc} -m comment --comment \"{label} cluster IP\" {l4} -d {cip} --dport {port} ! -s {cidr} -j KUBE-MARK-MASQ"
    );
    line!(chains, ":{ext} - [0:0]");
    // Cluster policy may pick an endpoint on another node, whose reply must
    // come back through this one: masquerade all external traffic.
    line!(
        rules,
        "-A {ext} -m comment --comment \"masquerade traffic for {label} external destinations\" -j KUBE-MARK-MASQ"
    );
    line!(rules, "-A {ext} -j {svc}");
    line!(chains, ":{svc} - [0:0]");
    write_endpoint_choice(rules, p, &svc, comments);
    for ip in &p.service.endpoints {
        let sep = p.ipt_sep(*ip);
        let comment = if comments {
            format!(" -m comment --comment {label}")
        } else {
            String::new()
        };
        line!(chains, ":{sep} - [0:0]");
        // A pod reaching itself through the Service must see the node as
        // the source, or it would answer itself directly.
        line!(rules, "-A {sep}{comment} -s {ip} -j KUBE-MARK-MASQ");
        line!(
            rules,
            "-A {sep}{comment} {l4} -j DNAT --to-destination {}",
            p.endpoint(*ip)
        );
    }
}

/// Endpoint i of n is taken with probability 1/(n-i) among what the rules
/// before it left, which makes every endpoint 1/n; the last takes the rest.
fn write_endpoint_choice(rules: &mut String, p: &Port<'_>, svc: &str, comments: bool) {
    let n = p.service.endpoints.len();
    for (i, ip) in p.service.endpoints.iter().enumerate() {
        let mut rule = format!("-A {svc}");
        if comments {
            rule = format!(
                "{rule} -m comment --comment \"{} -> {}\"",
                p.label,
                p.endpoint(*ip)
            );
        }
        if i + 1 < n {
            rule = format!(
                "{rule} -m statistic --mode random --probability {}",
                probability(n - i)
            );
        }
        line!(rules, "{rule} -j {}", p.ipt_sep(*ip));
    }
}

const NFT_TABLE: &str = "ip kube-proxy";

/// kube-proxy's base chains: name, type, hook, priority. Filtering runs
/// before DNAT so it sees the Service address. kube-proxy writes the
/// priorities as `dstnat-10` etc.; nft 1.0.6 (Debian 12) takes those names
/// on a few hooks only, so they are the same values as numbers (dstnat is
/// -100, srcnat 100): the kernel sees no difference.
const NFT_BASE_CHAINS: &[(&str, &str, &str, i32)] = &[
    ("filter-prerouting", "filter", "prerouting", -110),
    ("filter-input", "filter", "input", -110),
    ("filter-forward", "filter", "forward", -110),
    ("filter-output", "filter", "output", -110),
    ("filter-output-post-dnat", "filter", "output", -90),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
];

/// Regular chains jumped to from base chains: (target, from, match).
const NFT_JUMPS: &[(&str, &str, &str)] = &[
    ("nodeport-endpoints-check", "filter-input", "ct state new "),
    ("service-endpoints-check", "filter-input", "ct state new "),
    ("service-endpoints-check", "filter-forward", "ct state new "),
    ("service-endpoints-check", "filter-output", "ct state new "),
    ("firewall-check", "filter-prerouting", "ct state new "),
    ("firewall-check", "filter-output", "ct state new "),
    ("services", "nat-output", ""),
    ("services", "nat-prerouting", ""),
    ("masquerading", "nat-postrouting", ""),
    ("cluster-ips-check", "filter-forward", "ct state new "),
    (
        "cluster-ips-check",
        "filter-output-post-dnat",
        "ct state new ",
    ),
];

/// The same Services as kube-proxy's nftables mode writes them on its
/// first full sync: one `nft -f` script for table `ip kube-proxy`.
pub fn nftables(services: &[Service], cluster_cidr: &str) -> String {
    let mut out = String::new();
    write_nft_setup(&mut out);
    for s in services {
        // One element per address, however many ports share it.
        line!(
            out,
            "add element {NFT_TABLE} cluster-ips {{ {} }}",
            s.cluster_ip
        );
        for port in &s.ports {
            write_nft_port(&mut out, &Port::new(s, port), cluster_cidr);
        }
    }
    out
}

/// Adds and flushes a chain, as kube-proxy's transaction does for every
/// chain it fills (a no-op flush on a fresh table, but part of the cost).
fn nft_chain(out: &mut String, chain: &str) {
    line!(out, "add chain {NFT_TABLE} {chain}");
    line!(out, "flush chain {NFT_TABLE} {chain}");
}

fn write_nft_setup(out: &mut String) {
    let t = NFT_TABLE;
    line!(
        out,
        "add table {t} {{ comment \"rules for kube-proxy\" ; }}"
    );
    // On its first sync kube-proxy adds and deletes every base chain, so
    // that one left with other properties by an older version goes away.
    for (name, ..) in NFT_BASE_CHAINS {
        line!(out, "add chain {t} {name}");
        line!(out, "delete chain {t} {name}");
    }
    for (name, kind, hook, priority) in NFT_BASE_CHAINS {
        line!(
            out,
            "add chain {t} {name} {{ type {kind} hook {hook} priority {priority} ; }}"
        );
        line!(out, "flush chain {t} {name}");
    }
    let mut made: Vec<&str> = Vec::new();
    for (target, from, matches) in NFT_JUMPS {
        if !made.contains(target) {
            nft_chain(out, target);
            made.push(target);
        }
        line!(out, "add rule {t} {from} {matches}jump {target}");
    }
    nft_chain(out, "mark-for-masquerade");
    write_nft_masquerading(out);
    write_nft_maps(out);
}

fn write_nft_masquerading(out: &mut String) {
    let (t, m) = (NFT_TABLE, format!("{MASQ_MARK:#08x}"));
    line!(out, "add rule {t} mark-for-masquerade mark set mark or {m}");
    line!(out, "add rule {t} masquerading mark and {m} == 0 return");
    line!(out, "add rule {t} masquerading mark set mark xor {m}");
    line!(out, "add rule {t} masquerading masquerade fully-random");
}

fn write_nft_maps(out: &mut String) {
    let t = NFT_TABLE;
    let key3 = "ipv4_addr . inet_proto . inet_service : verdict";
    let key2 = "inet_proto . inet_service : verdict";
    line!(
        out,
        "add set {t} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    );
    line!(
        out,
        "add rule {t} cluster-ips-check ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\""
    );
    line!(
        out,
        "add set {t} nodeport-ips {{ type ipv4_addr ; comment \"IPs that accept NodePort traffic\" ; }}"
    );
    line!(out, "flush set {t} nodeport-ips");
    line!(
        out,
        "add map {t} no-endpoint-services {{ type {key3} ; comment \"vmap to drop or reject packets to services with no endpoints\" ; }}"
    );
    line!(
        out,
        "add map {t} no-endpoint-nodeports {{ type {key2} ; comment \"vmap to drop or reject packets to service nodeports with no endpoints\" ; }}"
    );
    line!(
        out,
        "add chain {t} reject-chain {{ comment \"helper for @no-endpoint-services / @no-endpoint-nodeports\" ; }}"
    );
    line!(out, "flush chain {t} reject-chain");
    line!(out, "add rule {t} reject-chain reject");
    line!(
        out,
        "add rule {t} service-endpoints-check ip daddr . meta l4proto . th dport vmap @no-endpoint-services"
    );
    line!(
        out,
        "add rule {t} nodeport-endpoints-check ip daddr @nodeport-ips meta l4proto . th dport vmap @no-endpoint-nodeports"
    );
    line!(
        out,
        "add map {t} firewall-ips {{ type {key3} ; comment \"destinations that are subject to LoadBalancerSourceRanges\" ; }}"
    );
    line!(
        out,
        "add rule {t} firewall-check ip daddr . meta l4proto . th dport vmap @firewall-ips"
    );
    line!(
        out,
        "add map {t} service-ips {{ type {key3} ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
    );
    line!(
        out,
        "add map {t} service-nodeports {{ type {key2} ; comment \"NodePort traffic\" ; }}"
    );
    line!(
        out,
        "add rule {t} services ip daddr . meta l4proto . th dport vmap @service-ips"
    );
    line!(
        out,
        "add rule {t} services ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports"
    );
    line!(out, "flush set {t} cluster-ips");
    for map in [
        "service-ips",
        "firewall-ips",
        "no-endpoint-services",
        "no-endpoint-nodeports",
        "service-nodeports",
    ] {
        line!(out, "flush map {t} {map}");
    }
}

/// One Service port in kube-proxy's transaction order: its chains, its map
/// elements, then the rules of the service, external and endpoint chains.
fn write_nft_port(out: &mut String, p: &Port<'_>, cidr: &str) {
    let t = NFT_TABLE;
    let (svc, ext, proto, port) = (p.nft_service(), p.nft_external(), p.proto, p.port.port);
    let (cip, lbip) = (p.service.cluster_ip, p.service.load_balancer_ip);
    for ip in &p.service.endpoints {
        nft_chain(out, &p.nft_endpoint(*ip));
    }
    nft_chain(out, &svc);
    nft_chain(out, &ext);
    line!(
        out,
        "add element {t} service-ips {{ {cip} . {proto} . {port} : goto {svc} }}"
    );
    line!(
        out,
        "add element {t} service-ips {{ {lbip} . {proto} . {port} : goto {ext} }}"
    );
    line!(
        out,
        "add element {t} service-nodeports {{ {proto} . {} : goto {ext} }}",
        p.port.node_port
    );
    // Off-cluster clients of the cluster IP are masqueraded, as in iptables.
    line!(
        out,
        "add rule {t} {svc} ip daddr {cip} {proto} dport {port} ip saddr != {cidr} jump mark-for-masquerade"
    );
    line!(out, "add rule {t} {ext} jump mark-for-masquerade");
    line!(out, "add rule {t} {ext} goto {svc}");
    let choices: Vec<String> = p
        .service
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, ip)| format!("{i} : goto {}", p.nft_endpoint(*ip)))
        .collect();
    let n = choices.len();
    line!(
        out,
        "add rule {t} {svc} numgen random mod {n} vmap {{ {} }}",
        choices.join(", ")
    );
    for ip in &p.service.endpoints {
        let chain = p.nft_endpoint(*ip);
        line!(
            out,
            "add rule {t} {chain} ip saddr {ip} jump mark-for-masquerade"
        );
        line!(
            out,
            "add rule {t} {chain} meta l4proto {proto} dnat to {}",
            p.endpoint(*ip)
        );
    }
}

/// Which tool loads the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// `iptables-legacy-restore`: x_tables, rules walked one by one.
    IptablesLegacy,
    /// `iptables-nft-restore`: the same rules translated to nf_tables.
    IptablesNft,
    /// `nft -f`: kube-proxy's nftables mode.
    Nftables,
}

impl Backend {
    pub const ALL: [Backend; 3] = [
        Backend::IptablesLegacy,
        Backend::IptablesNft,
        Backend::Nftables,
    ];

    /// The rules this back-end loads: iptables-restore input or nft script.
    pub fn rules(self, services: &[Service], cluster_cidr: &str) -> String {
        match self {
            Backend::IptablesLegacy | Backend::IptablesNft => {
                iptables_restore(services, cluster_cidr)
            }
            Backend::Nftables => nftables(services, cluster_cidr),
        }
    }

    fn restore(self) -> &'static str {
        match self {
            Backend::IptablesLegacy => "iptables-legacy-restore",
            Backend::IptablesNft => "iptables-nft-restore",
            Backend::Nftables => "nft",
        }
    }

    /// The program that prints what is loaded (`iptables-*-save`, `nft`).
    pub fn save(self) -> &'static str {
        match self {
            Backend::IptablesLegacy => "iptables-legacy-save",
            Backend::IptablesNft => "iptables-nft-save",
            Backend::Nftables => "nft",
        }
    }
}

/// Runs `program args` in `ns` with `input` on its stdin; the output, or an
/// error with the command's stderr. The input is written from a second
/// thread so a child that reports errors while reading cannot block us.
fn run_with_input(ns: &NetNs, program: &str, args: &[&str], input: &str) -> Result<Output> {
    let what = format!("{program} {} in namespace {}", args.join(" "), ns.name);
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {what}"))?;
    let mut stdin = child.stdin.take().context("stdin of the child")?;
    let output = std::thread::scope(|s| {
        let writer = s.spawn(move || stdin.write_all(input.as_bytes()));
        let output = child.wait_with_output();
        (writer.join(), output)
    });
    let output = output.1.with_context(|| format!("wait for {what}"))?;
    if !output.status.success() {
        bail!(
            "{what}: {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

fn run(ns: &NetNs, program: &str, args: &[&str]) -> Result<String> {
    let output = run_with_input(ns, program, args, "")?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Loads `rules` (from [`iptables_restore`] or [`nftables`], to match
/// `backend`) into `ns` the way kube-proxy does, piping them to
/// `iptables-restore --noflush --counters` or `nft -f -`, and returns the
/// time that command took, start to exit.
pub fn load(ns: &NetNs, backend: Backend, rules: &str) -> Result<Duration> {
    // The xtables lock is a file shared by every namespace: wait for it as
    // kube-proxy does, since other loads may run at the same time.
    let args: &[&str] = match backend {
        Backend::IptablesLegacy | Backend::IptablesNft => &["--wait=5", "--noflush", "--counters"],
        Backend::Nftables => &["-f", "-"],
    };
    let start = Instant::now();
    run_with_input(ns, backend.restore(), args, rules)?;
    Ok(start.elapsed())
}

/// Removes what [`load`] put into `ns`: for iptables the KUBE-* chains of
/// every table and the built-in chains' jumps to them, for nftables the
/// table `ip kube-proxy`; a namespace with nothing loaded is left as is.
pub fn flush(ns: &NetNs, backend: Backend) -> Result<()> {
    match backend {
        Backend::Nftables => {
            // Adding first makes the delete succeed when nothing is loaded.
            let script = format!("add table {NFT_TABLE}\ndelete table {NFT_TABLE}\n");
            run_with_input(ns, "nft", &["-f", "-"], &script).map(drop)
        }
        Backend::IptablesLegacy | Backend::IptablesNft => flush_iptables(ns, backend),
    }
}

fn flush_iptables(ns: &NetNs, backend: Backend) -> Result<()> {
    let saved = run(ns, backend.save(), &[])?;
    let removal = iptables_removal(&saved);
    if !removal.is_empty() {
        run_with_input(ns, backend.restore(), &["--wait=5", "--noflush"], &removal)?;
    }
    if backend == Backend::IptablesNft {
        drop_empty_nft_tables(ns)?;
    }
    Ok(())
}

/// The tables of `iptables-save` output: each one's name and the lines
/// after its `*name` line, up to its COMMIT.
fn saved_tables(saved: &str) -> impl Iterator<Item = (&str, std::str::Lines<'_>)> {
    saved
        .split("\nCOMMIT")
        .filter_map(|t| t.split_once('*').map(|(_, t)| t))
        .map(|table| {
            let mut lines = table.lines();
            (lines.next().unwrap_or("").trim(), lines)
        })
}

const BUILTIN_CHAINS: [&str; 5] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"];

/// From `iptables-save` output, the restore input that removes the KUBE-*
/// chains and the jumps to them: declaring a chain again flushes it, so
/// nothing refers to it any more when `-X` deletes it.
fn iptables_removal(saved: &str) -> String {
    let mut out = String::new();
    for (name, lines) in saved_tables(saved) {
        let mut chains = Vec::new();
        let mut unjumps = Vec::new();
        for l in lines {
            if let Some(chain) = l.strip_prefix(":KUBE-") {
                chains.push(format!("KUBE-{}", chain.split(' ').next().unwrap_or("")));
            } else if let Some(rule) = l.strip_prefix("-A ")
                && BUILTIN_CHAINS
                    .iter()
                    .any(|b| rule.starts_with(&format!("{b} ")))
                && rule.contains(" -j KUBE-")
            {
                unjumps.push(format!("-D {rule}"));
            }
        }
        if chains.is_empty() && unjumps.is_empty() {
            continue;
        }
        line!(out, "*{name}");
        for c in &chains {
            line!(out, ":{c} - [0:0]");
        }
        for u in &unjumps {
            line!(out, "{u}");
        }
        for c in &chains {
            line!(out, "-X {c}");
        }
        line!(out, "COMMIT");
    }
    out
}

/// iptables-nft leaves its `ip filter` / `ip nat` tables behind with their
/// base chains still hooked; the next configuration measured in the
/// namespace would pay for them. Deletes those that hold no rule and no
/// chain of their own (and keep the default ACCEPT policy).
fn drop_empty_nft_tables(ns: &NetNs) -> Result<()> {
    let saved = run(ns, "iptables-nft-save", &[])?;
    for (name, lines) in saved_tables(&saved) {
        let empty = lines
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .all(|l| {
                l.strip_prefix(':').is_some_and(|c| {
                    let mut f = c.split(' ');
                    let (chain, policy) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
                    BUILTIN_CHAINS.contains(&chain) && policy == "ACCEPT"
                })
            });
        if empty && !name.is_empty() {
            run(ns, "nft", &["delete", "table", "ip", name])?;
        }
    }
    Ok(())
}
