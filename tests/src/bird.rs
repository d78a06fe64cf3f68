//! bird2 in network namespaces: the configs of a router node (announcing
//! what xlb keeps in its kernel table) and of the upstream router (ECMP
//! over the router nodes), a running bird killed on drop, and the kernel
//! routes the tests read to see what BGP did.
//!
//! The contract with the daemon (`[announce] mode = "bgp"`): for every VIP
//! it wants announced, `xlb run` keeps a blackhole route `VIP/32` or
//! `VIP/128` in kernel table [`TABLE`] with route protocol [`PROTOCOL`],
//! and deletes it when the VIP must not be announced. No ip rule points at
//! that table, so the routes change no forwarding on the node; bird learns
//! them (`learn` on a kernel protocol) and exports them to the upstream
//! with itself as next hop.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::netns::{NetNs, PREFIX};

/// The kernel routing table xlb puts the routes to announce in
/// (`[announce.bgp] table`).
pub const TABLE: u32 = 4243;
/// The route protocol of those routes (`[announce.bgp] protocol`): bird
/// exports only routes of this protocol, so a route someone else adds to
/// the table is never announced.
pub const PROTOCOL: u8 = 178;
/// The router node's kernel protocols, one per family (a bird2 kernel
/// protocol has one channel): the BGP export filters name them.
pub const KERNEL4: &str = "xlb4";
pub const KERNEL6: &str = "xlb6";

/// Whether bird2 is installed. Missing, `test` skips with the reason, or
/// fails under CI (`cargo xtask setup` installs it).
pub fn available(test: &str) -> bool {
    let ok = Command::new("bird")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        let reason = "no bird2 (`cargo xtask setup` installs the Debian package)";
        assert!(std::env::var_os("CI").is_none(), "{test}: {reason}");
        eprintln!("SKIPPED {test}: {reason}");
    }
    ok
}

/// How fast sessions come up and failures are noticed.
#[derive(Clone, Copy, Debug)]
pub struct Timers {
    /// BGP hold time, seconds (3 is the least RFC 4271 allows).
    pub hold: u32,
    pub keepalive: u32,
    /// Seconds before the first connection attempt and between attempts
    /// (bird waits 5 and 120 by default).
    pub connect: u32,
    /// BFD transmit and receive interval.
    pub bfd_interval: Duration,
    /// Missed BFD packets that take a session down.
    pub bfd_multiplier: u32,
    /// Seconds between the router node's full scans of the kernel table.
    /// bird hears of each change at once over netlink; the scan catches
    /// up if a notification was lost (the socket's buffer overran).
    pub kernel_scan: u32,
}

impl Timers {
    /// For tests: a session within seconds, a failure seen in 300 ms with
    /// BFD and in at most 3 s without.
    pub const FAST: Self = Self {
        hold: 3,
        keepalive: 1,
        connect: 1,
        bfd_interval: Duration::from_millis(100),
        bfd_multiplier: 3,
        kernel_scan: 1,
    };

    fn bgp(&self) -> String {
        format!(
            "    hold time {}; keepalive time {};\n    \
             connect delay time {c}; connect retry time {c}; error wait time {c}, {};\n",
            self.hold,
            self.keepalive,
            self.hold.max(self.connect),
            c = self.connect,
        )
    }

    fn bfd(&self) -> String {
        let ms = self.bfd_interval.as_millis();
        format!(
            "protocol bfd {{\n    interface \"*\" {{\n        \
             min rx interval {ms} ms; min tx interval {ms} ms; multiplier {};\n    \
             }};\n}}\n",
            self.bfd_multiplier
        )
    }
}

/// One BGP session; the family of `neighbor` is the family of its one
/// channel (one session per family, as most routers are configured).
#[derive(Clone, Debug)]
pub struct Session {
    /// The bird protocol's name, as `show protocols` lists it.
    pub name: String,
    pub local: IpAddr,
    pub neighbor: IpAddr,
    pub neighbor_as: u32,
}

impl Session {
    fn render(&self, local_as: u32, timers: &Timers, bfd: bool, channel: &str) -> String {
        let mut s = format!(
            "protocol bgp {} {{\n    local {} as {local_as};\n    neighbor {} as {};\n",
            self.name, self.local, self.neighbor, self.neighbor_as
        );
        s += &timers.bgp();
        if bfd {
            s += "    bfd on;\n";
        }
        let family = if self.neighbor.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        };
        let _ = writeln!(s, "    {family} {{\n{channel}    }};\n}}");
        s
    }
}

/// A router node's bird: learns the routes in kernel table `table` whose
/// protocol is `protocol` and announces them, with itself as next hop, to
/// every session's neighbor.
#[derive(Clone, Debug)]
pub struct RouterNode {
    pub router_id: IpAddr,
    pub local_as: u32,
    pub sessions: Vec<Session>,
    pub bfd: bool,
    pub timers: Timers,
    pub table: u32,
    pub protocol: u8,
}

impl RouterNode {
    pub fn render(&self) -> String {
        let mut s = format!(
            "# A router node: announces the VIP routes xlb keeps in kernel table\n\
             # {table} (protocol {protocol}), and nothing else.\n\
             router id {id};\nlog stderr all;\n\n\
             protocol device {{\n}}\n\n",
            id = self.router_id,
            table = self.table,
            protocol = self.protocol,
        );
        // `learn`: take routes that bird did not make.
        for (name, family) in [(KERNEL4, "ipv4"), (KERNEL6, "ipv6")] {
            let _ = writeln!(
                s,
                "protocol kernel {name} {{\n    kernel table {};\n    learn;\n    scan time {};\n    \
                 {family} {{ import all; export none; }};\n}}\n",
                self.table, self.timers.kernel_scan
            );
        }
        if self.bfd {
            s += &self.timers.bfd();
            s += "\n";
        }
        for session in &self.sessions {
            let kernel = if session.neighbor.is_ipv4() {
                KERNEL4
            } else {
                KERNEL6
            };
            // Nothing is imported: the node forwards by its own routes, and
            // xlb, not BGP, decides what it announces.
            let channel = format!(
                "        import none;\n        \
                 export where proto = \"{kernel}\" && krt_source = {};\n        \
                 next hop self;\n",
                self.protocol
            );
            s += &session.render(self.local_as, &self.timers, self.bfd, &channel);
            s += "\n";
        }
        s
    }
}

/// The upstream router's bird: learns the VIPs from every session and puts
/// them in the main table, several equal routes merged into one ECMP route.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub router_id: IpAddr,
    pub local_as: u32,
    pub sessions: Vec<Session>,
    pub bfd: bool,
    pub timers: Timers,
}

impl Upstream {
    pub fn render(&self) -> String {
        let mut s = format!(
            "# The upstream router: every router node's VIP routes, merged into\n\
             # ECMP routes in the main table.\n\
             router id {};\nlog stderr all;\n\nprotocol device {{\n}}\n\n",
            self.router_id
        );
        for (name, family) in [("kernel4", "ipv4"), ("kernel6", "ipv6")] {
            let _ = writeln!(
                s,
                "protocol kernel {name} {{\n    merge paths on;\n    \
                 {family} {{ import none; export where source = RTS_BGP; }};\n}}\n"
            );
        }
        if self.bfd {
            s += &self.timers.bfd();
            s += "\n";
        }
        for session in &self.sessions {
            s += &session.render(
                self.local_as,
                &self.timers,
                self.bfd,
                "        import all;\n        export none;\n",
            );
            s += "\n";
        }
        s
    }
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A bird running in a namespace, with its config, control socket, pid file
/// and log in a directory of its own; killed and its directory removed on
/// drop.
pub struct Bird {
    /// What the tests call it (`upstream`, `node1`), in messages.
    pub name: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Option<Child>,
}

impl Bird {
    /// Checks `config` (`bird -p`), starts bird in `ns` in the foreground
    /// and waits until its control socket answers.
    pub fn start(ns: &NetNs, name: &str, config: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "{PREFIX}{}-bird-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let conf = dir.join("bird.conf");
        std::fs::write(&conf, config).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
        let check = Command::new("bird")
            .arg("-p")
            .arg("-c")
            .arg(&conf)
            .output()
            .expect("running bird -p");
        assert!(
            check.status.success(),
            "bird rejects the config of {name}: {}\n{}",
            String::from_utf8_lossy(&check.stderr),
            numbered(config)
        );
        let socket = dir.join("bird.ctl");
        let log = std::fs::File::create(dir.join("bird.log")).expect("bird's log");
        let child = ns
            .command("bird")
            .arg("-f")
            .arg("-c")
            .arg(&conf)
            .arg("-s")
            .arg(&socket)
            .arg("-P")
            .arg(dir.join("bird.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("bird's log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting bird for {name}: {e}"));
        let mut bird = Self {
            name: name.into(),
            dir,
            socket,
            child: Some(child),
        };
        let deadline = Instant::now() + crate::vm::patience(Duration::from_secs(20));
        loop {
            if bird.try_birdc(&["show", "status"]).is_some() {
                return bird;
            }
            if let Some(c) = bird.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("bird {name} exited ({status}):\n{}", bird.log());
            }
            assert!(
                Instant::now() < deadline,
                "bird {name}'s control socket never answered:\n{}",
                bird.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn try_birdc(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running birdc");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `birdc -s SOCKET ARGS`: its output, or a panic naming this bird.
    pub fn birdc(&self, args: &[&str]) -> String {
        self.try_birdc(args).unwrap_or_else(|| {
            panic!(
                "birdc {} failed for bird {}:\n{}",
                args.join(" "),
                self.name,
                self.log()
            )
        })
    }

    /// `birdc show protocols`, as birdc prints it.
    pub fn show_protocols(&self) -> String {
        self.birdc(&["show", "protocols"])
    }

    pub fn protocols(&self) -> Vec<Protocol> {
        parse_protocols(&self.show_protocols())
    }

    /// Waits until BGP protocol `protocol` is Established; how long it
    /// took.
    pub fn wait_established(&self, protocol: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        let deadline = start + crate::vm::patience(timeout);
        loop {
            if self
                .protocols()
                .iter()
                .any(|p| p.name == protocol && p.is_established())
            {
                return start.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "bird {}: {protocol} not established after {timeout:?}:\n{}\n{}",
                self.name,
                self.birdc(&["show", "protocols", "all", protocol]),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills bird with SIGKILL, as a crash would: no NOTIFICATION to its
    /// peers. The kernel still closes its TCP connections (a FIN each),
    /// which the peers see at once; a node that vanishes from the network
    /// is a cut link instead.
    pub fn kill_hard(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What bird wrote to stderr (its `log stderr all`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("bird.log")).unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("bird.conf")
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.kill_hard();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn numbered(text: &str) -> String {
    text.lines()
        .enumerate()
        .map(|(i, l)| format!("{:3} {l}\n", i + 1))
        .collect()
}

/// One row of `birdc show protocols`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    /// `BGP`, `Kernel`, `BFD`, `Device`.
    pub proto: String,
    /// `up`, `start`, `down`.
    pub state: String,
    /// For BGP `Established`, `Active  Socket: Connection closed`, ...
    pub info: String,
}

impl Protocol {
    pub fn is_established(&self) -> bool {
        self.state == "up" && self.info.starts_with("Established")
    }
}

/// Parses `birdc show protocols`: `Name Proto Table State Since Info`,
/// where Since is a time, or a date and a time for older changes.
pub fn parse_protocols(text: &str) -> Vec<Protocol> {
    let mut rows = Vec::new();
    let mut header_seen = false;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"Name") && words.get(1) == Some(&"Proto") {
            header_seen = true;
            continue;
        }
        if !header_seen || words.len() < 5 {
            continue;
        }
        // A date (2026-01-31) before the time takes one more word.
        let info_at = if words[4].len() == 10 && words[4].as_bytes()[4] == b'-' {
            6
        } else {
            5
        };
        rows.push(Protocol {
            name: words[0].into(),
            proto: words[1].into(),
            state: words[3].into(),
            info: words.get(info_at..).unwrap_or_default().join(" "),
        });
    }
    rows
}

/// A kernel route as `ip -j route` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub dst: String,
    /// `unicast`, `blackhole`, ...
    pub kind: String,
    /// `bird`, `kernel`, `178`, ...
    pub protocol: String,
    /// Every gateway of a multipath route, or the one gateway.
    pub next_hops: Vec<IpAddr>,
}

fn family(prefix: &str) -> &'static str {
    if prefix.contains(':') { "-6" } else { "-4" }
}

/// `ip -n NS [-4|-6] -j route show ARGS`, parsed.
fn ip_routes(ns: &NetNs, family: &str, args: &[&str]) -> Vec<Route> {
    let out = Command::new("ip")
        .args(["-n", &ns.name, family, "-j", "route", "show"])
        .args(args)
        .output()
        .expect("running ip route");
    assert!(
        out.status.success(),
        "ip -n {} {family} route show {}: {}",
        ns.name,
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    parse_routes(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `ip -j route` output (nothing at all when no route matched, on
/// some iproute2 versions).
pub fn parse_routes(json: &str) -> Vec<Route> {
    if json.trim().is_empty() {
        return Vec::new();
    }
    let v: serde_json::Value =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("ip -j route: {e}: {json}"));
    let text = |r: &serde_json::Value, k: &str, default: &str| -> String {
        match &r[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => default.into(),
        }
    };
    let gateway = |h: &serde_json::Value| h["gateway"].as_str().and_then(|g| g.parse().ok());
    v.as_array()
        .into_iter()
        .flatten()
        .map(|r| Route {
            dst: text(r, "dst", ""),
            kind: text(r, "type", "unicast"),
            protocol: text(r, "protocol", ""),
            next_hops: match r["nexthops"].as_array() {
                Some(hops) => hops.iter().filter_map(gateway).collect(),
                None => gateway(r).into_iter().collect(),
            },
        })
        .collect()
}

/// The main table's route for exactly `prefix` (`10.99.0.1/32`,
/// `fd99::1/128`) in `ns`, if there is one.
pub fn route(ns: &NetNs, prefix: &str) -> Option<Route> {
    ip_routes(ns, family(prefix), &[prefix]).into_iter().next()
}

/// Every route, both families, in kernel table `table` of `ns`.
pub fn table_routes(ns: &NetNs, table: u32) -> Vec<Route> {
    let table = table.to_string();
    let mut routes = ip_routes(ns, "-4", &["table", &table]);
    routes.extend(ip_routes(ns, "-6", &["table", &table]));
    routes
}

/// The next hops of `ns`'s main-table route to `prefix`, sorted; none
/// without a route.
pub fn next_hops(ns: &NetNs, prefix: &str) -> Vec<IpAddr> {
    let mut hops = route(ns, prefix).map(|r| r.next_hops).unwrap_or_default();
    hops.sort();
    hops
}

/// Waits until `ns`'s route to `prefix` goes through exactly `expected`
/// (in any order; empty: no route), polling every 10 ms; how long after
/// `since` that was. Panics with the last route seen after `timeout`.
pub fn wait_next_hops(
    ns: &NetNs,
    prefix: &str,
    expected: &[IpAddr],
    since: Instant,
    timeout: Duration,
) -> Duration {
    let mut expected = expected.to_vec();
    expected.sort();
    let deadline = Instant::now() + crate::vm::patience(timeout);
    loop {
        let seen = next_hops(ns, prefix);
        if seen == expected {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{}: the route to {prefix} goes through {seen:?}, not {expected:?}, after {timeout:?}",
            ns.name
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What the daemon does to announce `vip` (the contract), by hand: `ip
/// route replace blackhole VIP/32 table TABLE proto PROTOCOL`.
pub fn add_vip_route(ns: &NetNs, vip: IpAddr) {
    vip_route(ns, "replace", vip);
}

/// What the daemon does to stop announcing `vip`, by hand.
pub fn del_vip_route(ns: &NetNs, vip: IpAddr) {
    vip_route(ns, "del", vip);
}

fn vip_route(ns: &NetNs, verb: &str, vip: IpAddr) {
    let prefix = host_prefix(vip);
    ns.ip(&[
        family(&prefix),
        "route",
        verb,
        "blackhole",
        &prefix,
        "table",
        &TABLE.to_string(),
        "proto",
        &PROTOCOL.to_string(),
    ]);
}

/// `vip` as a host prefix: `/32` or `/128`.
pub fn host_prefix(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_are_parsed_with_either_form_of_since() {
        let text = "BIRD 2.0.12 ready.\n\
            Name       Proto      Table      State  Since         Info\n\
            device1    Device     ---        up     22:53:49.644  \n\
            node0_4    BGP        ---        start  22:54:00.007  Active        Socket: Connection closed\n\
            node1_4    BGP        ---        up     2026-01-31 22:53:53  Established   \n";
        let rows = parse_protocols(text);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].proto, "Device");
        assert_eq!(rows[1].info, "Active Socket: Connection closed");
        assert!(!rows[1].is_established());
        assert!(rows[2].is_established());
    }

    #[test]
    fn multipath_and_single_routes_are_parsed() {
        let multi = r#"[{"dst":"10.99.0.1","protocol":"bird","metric":32,"flags":[],
            "nexthops":[{"gateway":"10.77.0.2","dev":"eth0","weight":1,"flags":[]},
                        {"gateway":"10.77.0.3","dev":"eth0","weight":1,"flags":[]}]}]"#;
        let r = &parse_routes(multi)[0];
        assert_eq!(r.kind, "unicast");
        assert_eq!(
            r.next_hops,
            [
                "10.77.0.2".parse::<IpAddr>().unwrap(),
                "10.77.0.3".parse().unwrap()
            ]
        );
        let single = r#"[{"dst":"fd99::1","gateway":"fd77::2","dev":"eth0","protocol":"bird"}]"#;
        assert_eq!(
            parse_routes(single)[0].next_hops,
            ["fd77::2".parse::<IpAddr>().unwrap()]
        );
        let blackhole = r#"[{"type":"blackhole","dst":"10.99.0.1","protocol":178,"flags":[]}]"#;
        let r = &parse_routes(blackhole)[0];
        assert_eq!((r.kind.as_str(), r.protocol.as_str()), ("blackhole", "178"));
        assert!(r.next_hops.is_empty());
        assert!(parse_routes("").is_empty());
        assert!(parse_routes("[]").is_empty());
    }
}
