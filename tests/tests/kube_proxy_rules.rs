//! The kube-proxy rules of `cargo xtask bench peers`: their structure read
//! back by a parser of this file's own (seeded random Service sets), their
//! loading and removal in a namespace, and real TCP through them.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use xlb_tests::{
    netns::{NetNs, privileged},
    peers::kube_proxy::{
        Backend, Protocol, Service, ServicePort, decoys, flush, iptables_restore, load, nftables,
    },
    rng::SplitMix64,
};

const CIDR: &str = "10.244.0.0/16";

fn random_services(rng: &mut SplitMix64, count: usize) -> Vec<Service> {
    let mut next_node_port = 30000;
    let mut next_endpoint = 0u32;
    (0..count)
        .map(|i| {
            let i8 = u8::try_from(i).expect("under 256 Services");
            let ports = (0..rng.range(1, 3))
                .map(|p| {
                    next_node_port += 1;
                    ServicePort {
                        name: format!("p{p}"),
                        protocol: if rng.next_u64() & 1 == 0 {
                            Protocol::Tcp
                        } else {
                            Protocol::Udp
                        },
                        port: 80 + u16::try_from(p).expect("few ports"),
                        node_port: next_node_port,
                        target_port: 8000 + u16::try_from(rng.range(0, 999)).expect("small"),
                    }
                })
                .collect();
            let endpoints = (0..rng.range(1, 20))
                .map(|_| {
                    next_endpoint += 1;
                    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + next_endpoint)
                })
                .collect();
            Service {
                namespace: format!("ns{}", rng.range(0, 3)),
                name: format!("svc{i}"),
                cluster_ip: Ipv4Addr::new(10, 96, 0, i8 + 1),
                load_balancer_ip: Ipv4Addr::new(10, 99, 1, i8 + 1),
                ports,
                endpoints,
            }
        })
        .collect()
}

/// Splits a rule line into words, a double-quoted string being one word.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn value_after<'a>(w: &'a [String], flag: &str) -> Option<&'a str> {
    w.iter().position(|x| x == flag).map(|i| w[i + 1].as_str())
}

/// An iptables-restore input, table by table: declared chains, and the
/// rules of each chain in order (as word lists, `-A`/`-I` and chain cut).
#[derive(Default)]
struct Table {
    chains: HashSet<String>,
    rules: HashMap<String, Vec<Vec<String>>>,
}

fn parse_restore(text: &str) -> HashMap<String, Table> {
    let mut tables: HashMap<String, Table> = HashMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('*') {
            current = name.to_owned();
            tables.entry(current.clone()).or_default();
        } else if let Some(decl) = line.strip_prefix(':') {
            let chain = decl.split(' ').next().unwrap_or("").to_owned();
            tables
                .get_mut(&current)
                .expect("table")
                .chains
                .insert(chain);
        } else if line.starts_with("-A ") || line.starts_with("-I ") {
            let w = words(line);
            let table = tables.get_mut(&current).expect("table");
            table
                .rules
                .entry(w[1].clone())
                .or_default()
                .push(w[2..].to_vec());
        }
    }
    tables
}

const TARGETS: &[&str] = &[
    "ACCEPT",
    "DROP",
    "RETURN",
    "MARK",
    "MASQUERADE",
    "DNAT",
    "REJECT",
];

fn check_iptables(services: &[Service], text: &str) -> Result<(), String> {
    let tables = parse_restore(text);
    for (name, table) in &tables {
        for (chain, rules) in &table.rules {
            for r in rules {
                let target = value_after(r, "-j").ok_or(format!("{chain}: rule without -j"))?;
                let builtin = TARGETS.contains(&target);
                if !builtin && !table.chains.contains(target) {
                    return Err(format!("{name} {chain} jumps to undeclared {target}"));
                }
            }
        }
    }
    let nat = tables.get("nat").ok_or("no nat table")?;
    let services_rules = &nat.rules["KUBE-SERVICES"];
    let ports: usize = services.iter().map(|s| s.ports.len()).sum();
    if services_rules.len() != 2 * ports + 1 {
        return Err(format!(
            "KUBE-SERVICES has {} rules for {ports} ports",
            services_rules.len()
        ));
    }
    if value_after(services_rules.last().expect("rules"), "-j") != Some("KUBE-NODEPORTS") {
        return Err("KUBE-SERVICES does not end with the jump to KUBE-NODEPORTS".into());
    }
    for s in services {
        for p in &s.ports {
            check_iptables_port(nat, services_rules, s, p)?;
        }
    }
    Ok(())
}

/// The KUBE-SVC chain of one port picks each endpoint with probability 1/n
/// and each of its KUBE-SEP chains DNATs to a distinct endpoint.
fn check_iptables_port(
    nat: &Table,
    services_rules: &[Vec<String>],
    s: &Service,
    p: &ServicePort,
) -> Result<(), String> {
    let proto = if p.protocol == Protocol::Tcp {
        "tcp"
    } else {
        "udp"
    };
    let (cip, port) = (s.cluster_ip.to_string(), p.port.to_string());
    let svc = services_rules
        .iter()
        .find(|r| {
            value_after(r, "-d") == Some(&cip)
                && value_after(r, "--dport") == Some(&port)
                && value_after(r, "-p") == Some(proto)
        })
        .and_then(|r| value_after(r, "-j"))
        .ok_or(format!("no KUBE-SERVICES rule for {cip}:{port}/{proto}"))?;
    let picks: Vec<&Vec<String>> = nat.rules[svc]
        .iter()
        .filter(|r| value_after(r, "-j").is_some_and(|t| t.starts_with("KUBE-SEP-")))
        .collect();
    let n = s.endpoints.len();
    if picks.len() != n {
        return Err(format!(
            "{svc}: {} endpoint rules for {n} endpoints",
            picks.len()
        ));
    }
    let mut left = 1.0;
    let mut reached = BTreeSet::new();
    for (i, r) in picks.iter().enumerate() {
        let p_i: f64 = match value_after(r, "--probability") {
            Some(v) => v
                .parse()
                .map_err(|e| format!("{svc}: probability {v}: {e}"))?,
            None if i + 1 == n => 1.0,
            None => return Err(format!("{svc}: endpoint {i} of {n} has no statistic match")),
        };
        let chance = left * p_i;
        left *= 1.0 - p_i;
        if (chance - 1.0 / n as f64).abs() > 1e-9 {
            return Err(format!(
                "{svc}: endpoint {i} of {n} has probability {chance}"
            ));
        }
        let sep = value_after(r, "-j").expect("target");
        let dnat = nat.rules[sep]
            .iter()
            .find_map(|r| value_after(r, "--to-destination"))
            .ok_or(format!("{sep}: no DNAT"))?;
        reached.insert(dnat.to_owned());
    }
    reaches_its_endpoints(svc, &reached, s, p)
}

/// An nft script: declared chains, the rules of each chain, and the
/// service-ips elements (key, verdict chain).
#[derive(Default)]
struct Nft {
    chains: HashSet<String>,
    rules: HashMap<String, Vec<String>>,
    service_ips: HashMap<String, String>,
}

/// Whether the DNAT targets a port's rules reach are its endpoints, all
/// of them and nothing else.
fn reaches_its_endpoints(
    svc: &str,
    reached: &BTreeSet<String>,
    s: &Service,
    p: &ServicePort,
) -> Result<(), String> {
    let want: BTreeSet<String> = s
        .endpoints
        .iter()
        .map(|e| format!("{e}:{}", p.target_port))
        .collect();
    if *reached != want {
        return Err(format!("{svc} reaches {reached:?}, want {want:?}"));
    }
    Ok(())
}

fn parse_nft(text: &str) -> Nft {
    let mut nft = Nft::default();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["add", "chain", "ip", "kube-proxy", name, ..] => {
                nft.chains.insert((*name).to_owned());
            }
            ["add", "rule", "ip", "kube-proxy", chain, rest @ ..] => {
                nft.rules
                    .entry((*chain).to_owned())
                    .or_default()
                    .push(rest.join(" "));
            }
            [
                "add",
                "element",
                "ip",
                "kube-proxy",
                "service-ips",
                "{",
                a,
                ".",
                proto,
                ".",
                port,
                ":",
                "goto",
                chain,
                "}",
            ] => {
                nft.service_ips
                    .insert(format!("{a} . {proto} . {port}"), (*chain).to_owned());
            }
            _ => {}
        }
    }
    nft
}

fn check_nft(services: &[Service], text: &str) -> Result<(), String> {
    let nft = parse_nft(text);
    for (chain, rules) in &nft.rules {
        for r in rules {
            let w: Vec<&str> = r.split([' ', ',']).collect();
            for pair in w.windows(2) {
                if (pair[0] == "jump" || pair[0] == "goto") && !nft.chains.contains(pair[1]) {
                    return Err(format!("{chain} jumps to undeclared {}", pair[1]));
                }
            }
        }
    }
    for (key, chain) in &nft.service_ips {
        if !nft.chains.contains(chain) {
            return Err(format!("service-ips {key} goes to undeclared {chain}"));
        }
    }
    let ports: usize = services.iter().map(|s| s.ports.len()).sum();
    if nft.service_ips.len() != 2 * ports {
        return Err(format!(
            "{} service-ips elements for {ports} ports",
            nft.service_ips.len()
        ));
    }
    for s in services {
        for p in &s.ports {
            check_nft_port(&nft, s, p)?;
        }
    }
    Ok(())
}

fn check_nft_port(nft: &Nft, s: &Service, p: &ServicePort) -> Result<(), String> {
    let proto = if p.protocol == Protocol::Tcp {
        "tcp"
    } else {
        "udp"
    };
    let key = format!("{} . {proto} . {}", s.cluster_ip, p.port);
    let svc = nft
        .service_ips
        .get(&key)
        .ok_or(format!("no service-ips element {key}"))?;
    let vmap = nft.rules[svc]
        .iter()
        .find_map(|r| r.strip_prefix("numgen random mod "))
        .ok_or(format!("{svc}: no numgen"))?;
    let (n, body) = vmap
        .split_once(" vmap { ")
        .ok_or(format!("{svc}: {vmap}"))?;
    let n: usize = n.parse().map_err(|e| format!("{svc}: {n}: {e}"))?;
    let entries: Vec<&str> = body.trim_end_matches(" }").split(", ").collect();
    if n != s.endpoints.len() || entries.len() != n {
        return Err(format!(
            "{svc}: mod {n} with {} entries for {} endpoints",
            entries.len(),
            s.endpoints.len()
        ));
    }
    let mut chains = HashSet::new();
    let mut reached = BTreeSet::new();
    for (i, e) in entries.iter().enumerate() {
        let (index, chain) = e
            .split_once(" : goto ")
            .ok_or(format!("{svc}: entry {e}"))?;
        if index != i.to_string() || !chains.insert(chain) {
            return Err(format!("{svc}: entry {i} is {e}"));
        }
        let dnat = nft
            .rules
            .get(chain)
            .and_then(|rs| {
                rs.iter()
                    .find_map(|r| r.split_once(" dnat to ").map(|x| x.1))
            })
            .ok_or(format!("{chain}: no dnat"))?;
        reached.insert(dnat.to_owned());
    }
    reaches_its_endpoints(svc, &reached, s, p)
}

#[test]
fn random_service_sets_make_well_formed_rules() {
    let seed = xlb_tests::rng::seed();
    let mut rng = SplitMix64(seed);
    for round in 0..200 {
        let count = rng.range(1, 8);
        let services = random_services(&mut rng, count);
        let ipt = iptables_restore(&services, CIDR);
        if let Err(e) = check_iptables(&services, &ipt) {
            panic!("seed {seed} (XLB_SEED={seed} to repeat), round {round}, iptables: {e}\n{ipt}");
        }
        let nft = nftables(&services, CIDR);
        if let Err(e) = check_nft(&services, &nft) {
            panic!("seed {seed} (XLB_SEED={seed} to repeat), round {round}, nftables: {e}\n{nft}");
        }
    }
}

#[test]
fn large_clusters_drop_the_endpoint_comments() {
    // 400 Services x 3 endpoints: past kube-proxy's 1,000-endpoint mark.
    let big = iptables_restore(&decoys(400), CIDR);
    assert!(
        big.lines()
            .filter(|l| l.starts_with("-A KUBE-SEP-"))
            .all(|l| !l.contains("--comment"))
    );
    let small = iptables_restore(&decoys(10), CIDR);
    assert!(
        small
            .lines()
            .filter(|l| l.starts_with("-A KUBE-SEP-"))
            .all(|l| l.contains("--comment"))
    );
}

/// What is loaded, as the back-end's own listing shows it.
fn listing(ns: &NetNs, backend: Backend) -> String {
    let out = match backend {
        Backend::Nftables => ns.command("nft").args(["list", "ruleset"]).output(),
        _ => ns.command(backend.save()).output(),
    }
    .expect("listing");
    assert!(
        out.status.success(),
        "{backend:?} listing: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn dnat_count(backend: Backend, listing: &str) -> usize {
    let needle = if backend == Backend::Nftables {
        " dnat to "
    } else {
        " -j DNAT "
    };
    listing.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn rules_load_read_back_and_flush_in_a_namespace() {
    if !privileged("rules_load_read_back_and_flush_in_a_namespace") {
        return;
    }
    let ns = NetNs::new();
    let mut services = decoys(50);
    // Two ports on a few, so ports x endpoints is not just Services x 3.
    for s in services.iter_mut().take(5) {
        let mut udp = s.ports[0].clone();
        (udp.name, udp.protocol, udp.node_port) =
            ("dns".into(), Protocol::Udp, udp.node_port + 3000);
        s.ports.push(udp);
    }
    let want: usize = services
        .iter()
        .map(|s| s.ports.len() * s.endpoints.len())
        .sum();
    for backend in Backend::ALL {
        flush(&ns, backend).unwrap_or_else(|e| panic!("{backend:?} flush of nothing: {e:#}"));
        let rules = backend.rules(&services, CIDR);
        for attempt in 0..2 {
            let took = load(&ns, backend, &rules)
                .unwrap_or_else(|e| panic!("{backend:?} load {attempt}: {e:#}"));
            let loaded = listing(&ns, backend);
            assert_eq!(
                dnat_count(backend, &loaded),
                want,
                "{backend:?} DNAT rules after load {attempt} ({took:?})"
            );
            flush(&ns, backend).unwrap_or_else(|e| panic!("{backend:?} flush: {e:#}"));
            let left = listing(&ns, backend);
            assert!(
                !left.contains("KUBE-") && !left.contains("kube-proxy"),
                "{backend:?} left behind:\n{left}"
            );
        }
    }
}

/// The three namespaces of the forwarding test: client, router (where the
/// rules go), and one backends namespace holding the three endpoints.
struct Bed {
    client: NetNs,
    router: NetNs,
    backends: NetNs,
}

const LB_IP: &str = "10.99.0.1";
const ENDPOINTS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(10, 2, 0, 11),
    Ipv4Addr::new(10, 2, 0, 12),
    Ipv4Addr::new(10, 2, 0, 13),
];

fn veth(a: &NetNs, a_dev: &str, b: &NetNs, b_dev: &str) {
    a.ip(&[
        "link", "add", a_dev, "type", "veth", "peer", "name", b_dev, "netns", &b.name,
    ]);
    a.ip(&["link", "set", a_dev, "up"]);
    b.ip(&["link", "set", b_dev, "up"]);
}

fn bed() -> Bed {
    let bed = Bed {
        client: NetNs::new(),
        router: NetNs::new(),
        backends: NetNs::new(),
    };
    veth(&bed.client, "eth0", &bed.router, "cl0");
    veth(&bed.backends, "eth0", &bed.router, "be0");
    bed.client
        .ip(&["addr", "add", "10.1.0.2/24", "dev", "eth0"]);
    bed.client
        .ip(&["route", "add", &format!("{LB_IP}/32"), "via", "10.1.0.1"]);
    bed.router.ip(&["addr", "add", "10.1.0.1/24", "dev", "cl0"]);
    bed.router.ip(&["addr", "add", "10.2.0.1/24", "dev", "be0"]);
    bed.router.sysctl("net.ipv4.ip_forward", "1");
    for e in ENDPOINTS {
        bed.backends
            .ip(&["addr", "add", &format!("{e}/24"), "dev", "eth0"]);
    }
    bed.backends
        .ip(&["route", "add", "default", "via", "10.2.0.1"]);
    bed
}

/// A listener on 0.0.0.0:8080 in the backends namespace that answers each
/// connection with "LOCAL PEER", until `stop` is set.
fn serve(backends: &NetNs, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let listener = backends.run(|| {
        TcpListener::bind("0.0.0.0:8080").expect("bind 0.0.0.0:8080 in the backends namespace")
    });
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, peer)) => {
                    let local = conn
                        .local_addr()
                        .map(|a| a.ip().to_string())
                        .unwrap_or_default();
                    let _ = conn.set_nonblocking(false);
                    let _ = write!(conn, "{local} {}", peer.ip());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    })
}

fn traffic_service() -> Service {
    Service {
        namespace: "bench".into(),
        name: "web".into(),
        cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
        load_balancer_ip: LB_IP.parse().expect("address"),
        ports: vec![ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: 31080,
            target_port: 8080,
        }],
        endpoints: ENDPOINTS.to_vec(),
    }
}

/// `count` connections from the client to the load balancer IP; the
/// answers, "LOCAL PEER" each.
fn connect_many(client: &NetNs, count: usize) -> Vec<String> {
    client.run(|| {
        let to: SocketAddr = format!("{LB_IP}:80").parse().expect("address");
        (0..count)
            .map(|i| {
                let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("connection {i} to {to}: {e}"));
                conn.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                let mut answer = String::new();
                conn.read_to_string(&mut answer)
                    .unwrap_or_else(|e| panic!("answer {i} from {to}: {e}"));
                answer
            })
            .collect()
    })
}

#[test]
fn tcp_reaches_every_endpoint_through_the_rules_masqueraded() {
    if !privileged("tcp_reaches_every_endpoint_through_the_rules_masqueraded") {
        return;
    }
    let bed = bed();
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve(&bed.backends, stop.clone());
    let mut services = vec![traffic_service()];
    services.extend(decoys(20));
    for backend in Backend::ALL {
        load(&bed.router, backend, &backend.rules(&services, CIDR))
            .unwrap_or_else(|e| panic!("{backend:?} load: {e:#}"));
        let answers = connect_many(&bed.client, 60);
        flush(&bed.router, backend).unwrap_or_else(|e| panic!("{backend:?} flush: {e:#}"));
        let mut reached = BTreeSet::new();
        for a in &answers {
            let (local, peer) = a
                .split_once(' ')
                .unwrap_or_else(|| panic!("{backend:?}: answer {a:?}"));
            let local: Ipv4Addr = local
                .parse()
                .unwrap_or_else(|e| panic!("{backend:?}: answer {a:?}: {e}"));
            assert!(
                ENDPOINTS.contains(&local),
                "{backend:?}: answered from {local}, not an endpoint"
            );
            assert_eq!(
                peer, "10.2.0.1",
                "{backend:?}: the backend saw {peer}, not the router (no masquerade)"
            );
            reached.insert(local);
        }
        assert_eq!(
            reached.len(),
            3,
            "{backend:?}: 60 connections reached only {reached:?}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    server.join().expect("server thread");
}

/// By hand: `cargo test -p xlb-tests --test kube_proxy_rules -- --ignored
/// --nocapture` prints the size of the rules for 10,000 Services and how
/// long each back-end takes to load them.
#[test]
#[ignore = "measurement, run by hand"]
fn load_time_for_ten_thousand_services() {
    if !privileged("load_time_for_ten_thousand_services") {
        return;
    }
    let mut services = vec![traffic_service()];
    services.extend(decoys(9_999));
    let ipt = iptables_restore(&services, CIDR);
    let nft = nftables(&services, CIDR);
    println!(
        "iptables-restore input: {} lines, {} bytes",
        ipt.lines().count(),
        ipt.len()
    );
    println!(
        "nft script: {} lines, {} bytes",
        nft.lines().count(),
        nft.len()
    );
    for backend in Backend::ALL {
        let ns = NetNs::new();
        let rules = if backend == Backend::Nftables {
            &nft
        } else {
            &ipt
        };
        let took = load(&ns, backend, rules).unwrap_or_else(|e| panic!("{backend:?}: {e:#}"));
        let start = Instant::now();
        flush(&ns, backend).unwrap_or_else(|e| panic!("{backend:?} flush: {e:#}"));
        println!("{backend:?}: load {took:?}, flush {:?}", start.elapsed());
    }
}
