//! BGP announcement without xlb: bird2 on two router nodes and on their
//! upstream, the VIP routes put in table 4243 by hand as the daemon would
//! (tests/src/bird.rs has the contract). What the upstream does with them
//! is what a network does with xlb's announcements: one ECMP route through
//! every node announcing a VIP, a node dropped when it withdraws the VIP,
//! when its bird dies, and when it vanishes from the network.
//!
//! The convergence times are printed, never asserted: this machine may be
//! busy. `cargo test -p xlb-tests --test bgp -- --nocapture` shows them;
//! `XLB_BGP_RUNS=N` repeats each failure N times (default 1) and prints a
//! summary per event at the end.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use xlb_tests::{
    bgp_topology::{BgpTopology, VIP4, VIP6, backend4, backend6, node4, node6},
    bird::{self, Bird},
    netns::privileged,
};

/// Sessions coming up, routes appearing after a change: seconds here, but
/// generous for a machine that is busy compiling.
const PATIENCE: Duration = Duration::from_secs(60);

fn prefixes() -> [(String, IpAddr); 2] {
    [
        (bird::host_prefix(VIP4.into()), VIP4.into()),
        (bird::host_prefix(VIP6.into()), VIP6.into()),
    ]
}

/// Node `i`'s address in the family of `vip`: the upstream's next hop.
fn hop(vip: IpAddr, i: usize) -> IpAddr {
    if vip.is_ipv4() {
        node4(i).into()
    } else {
        node6(i).into()
    }
}

fn hops(vip: IpAddr, nodes: &[usize]) -> Vec<IpAddr> {
    nodes.iter().map(|&i| hop(vip, i)).collect()
}

fn runs() -> usize {
    std::env::var("XLB_BGP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// Per event, the convergence of each run, IPv4 and IPv6.
#[derive(Default)]
struct Times(BTreeMap<String, Vec<[Duration; 2]>>);

impl Times {
    fn print(&self, bfd: bool) {
        eprintln!(
            "\nsummary (BFD {}): the event to the upstream's route having its final next hops",
            if bfd { "on" } else { "off" }
        );
        for (what, runs) in &self.0 {
            let stats = |f: usize| {
                let mut t: Vec<f64> = runs.iter().map(|r| r[f].as_secs_f64()).collect();
                t.sort_by(f64::total_cmp);
                let mean = t.iter().sum::<f64>() / t.len() as f64;
                format!(
                    "mean {mean:.3} s, p50 {:.3} s, max {:.3} s",
                    t[t.len() / 2],
                    t[t.len() - 1]
                )
            };
            eprintln!(
                "  {what:<36} n={:<2} IPv4 {}; IPv6 {}",
                runs.len(),
                stats(0),
                stats(1)
            );
        }
    }
}

struct Lab {
    t: BgpTopology,
    upstream: Bird,
    nodes: Vec<Bird>,
    bfd: bool,
}

impl Lab {
    /// Two router nodes announcing both VIPs, sessions up, and the
    /// upstream routing each VIP through both.
    fn new(bfd: bool) -> Self {
        let t = BgpTopology::new(2, 3);
        let upstream = t.start_upstream_bird(bfd);
        let nodes: Vec<Bird> = (0..2).map(|i| t.start_node_bird(i, bfd)).collect();
        for (i, node) in t.nodes.iter().enumerate() {
            for (_, vip) in prefixes() {
                bird::add_vip_route(node, vip);
            }
            let table = bird::table_routes(node, bird::TABLE);
            assert_eq!(table.len(), 2, "node{i}'s table {}: {table:?}", bird::TABLE);
            assert!(
                table.iter().all(|r| r.kind == "blackhole"),
                "node{i}: {table:?}"
            );
        }
        let lab = Self {
            t,
            upstream,
            nodes,
            bfd,
        };
        for i in 0..2 {
            lab.wait_sessions(i);
        }
        lab.wait_hops(&[0, 1], Instant::now());
        lab
    }

    fn wait_sessions(&self, i: usize) {
        self.t
            .wait_sessions(&self.upstream, &self.nodes[i], i, PATIENCE);
    }

    /// Waits until the upstream routes both VIPs through exactly `nodes`;
    /// how long after `since` each family got there.
    fn wait_hops(&self, nodes: &[usize], since: Instant) -> [Duration; 2] {
        prefixes().map(|(prefix, vip)| {
            bird::wait_next_hops(
                &self.t.upstream,
                &prefix,
                &hops(vip, nodes),
                since,
                PATIENCE,
            )
        })
    }

    fn report(&self, times: &mut Times, what: &str, took: [Duration; 2]) {
        times.0.entry(what.to_owned()).or_default().push(took);
        let bfd = if self.bfd { "BFD on" } else { "BFD off" };
        eprintln!(
            "{what} ({bfd}): the upstream routes through one node after {:.3} s (IPv4), {:.3} s (IPv6)",
            took[0].as_secs_f64(),
            took[1].as_secs_f64()
        );
    }

    /// Restarts node `i`'s bird after a kill, and waits until the upstream
    /// routes through both nodes again.
    fn restart_node_bird(&mut self, i: usize) {
        self.nodes[i] = self.t.start_node_bird(i, self.bfd);
        self.wait_sessions(i);
        self.wait_hops(&[0, 1], Instant::now());
    }

    /// Kills node 1's bird as a crash would; how long until the upstream
    /// routes through node 0 only.
    fn crash_node_1(&mut self) -> [Duration; 2] {
        let start = Instant::now();
        self.nodes[1].kill_hard();
        self.wait_hops(&[0], start)
    }

    /// Takes node 1 off the network silently; how long until the upstream
    /// routes through node 0 only, and why the upstream's sessions to it
    /// ended (both families). The link is back when this returns.
    fn vanish_node_1(&mut self) -> ([Duration; 2], Vec<String>) {
        let start = Instant::now();
        self.t.cut_link(1);
        let took = self.wait_hops(&[0], start);
        // bird shows a session's last error until it is established again.
        let why = self
            .upstream
            .protocols()
            .into_iter()
            .filter(|p| p.name.starts_with("node1_"))
            .map(|p| p.info)
            .collect();
        self.t.restore_link(1);
        (took, why)
    }

    /// [`Self::vanish_node_1`], reported; both sessions must have ended
    /// for `reason`. Returns once node 1 is back in the upstream's routes.
    fn vanish_and_return(&mut self, times: &mut Times, reason: &str) {
        let (took, why) = self.vanish_node_1();
        self.report(times, "node1 cut off the network", took);
        assert!(
            why.len() == 2 && why.iter().all(|w| w.contains(reason)),
            "{why:?}"
        );
        self.wait_sessions(1);
        self.wait_hops(&[0, 1], Instant::now());
    }
}

#[test]
fn the_upstream_balances_over_every_node_announcing_and_drops_one_that_withdraws_or_fails() {
    let test =
        "the_upstream_balances_over_every_node_announcing_and_drops_one_that_withdraws_or_fails";
    if !privileged(test) || !bird::available(test) {
        return;
    }
    let mut lab = Lab::new(true);
    for i in 0..2 {
        for p in lab.nodes[i].protocols() {
            assert!(
                p.proto != "BGP" || p.is_established(),
                "node{i}: {p:?}\n{}",
                lab.nodes[i].show_protocols()
            );
        }
    }

    // One route per VIP, through both nodes; learned over BGP, not left in
    // the nodes' main tables (no ip rule reads table 4243).
    for (prefix, vip) in prefixes() {
        let route = bird::route(&lab.t.upstream, &prefix)
            .unwrap_or_else(|| panic!("the upstream has no route to {prefix}"));
        assert_eq!(route.protocol, "bird", "{route:?}");
        assert_eq!(
            bird::next_hops(&lab.t.upstream, &prefix),
            hops(vip, &[0, 1])
        );
        for node in &lab.t.nodes {
            assert_eq!(bird::route(node, &prefix), None, "{}", node.name);
        }
        let learned = lab.nodes[0].birdc(&["show", "route", "protocol", bird_kernel(vip)]);
        assert!(learned.contains(&prefix), "node0's bird: {learned}");
    }

    // The client reaches the backends through the upstream, and they
    // answer it the same way: the path DSR replies take.
    lab.t.start_backends(false);
    for i in 0..lab.t.backends.len() {
        assert_eq!(lab.t.http_get(backend4(i).into()), format!("be{i}"));
        assert_eq!(lab.t.http_get(backend6(i).into()), format!("be{i}"));
    }

    let mut times = Times::default();
    for _ in 0..runs() {
        // The daemon withdraws a VIP: it deletes its route.
        let start = Instant::now();
        for (_, vip) in prefixes() {
            bird::del_vip_route(&lab.t.nodes[1], vip);
        }
        let took = lab.wait_hops(&[0], start);
        lab.report(&mut times, "node1 deletes its VIP routes", took);
        let start = Instant::now();
        for (_, vip) in prefixes() {
            bird::add_vip_route(&lab.t.nodes[1], vip);
        }
        let took = lab.wait_hops(&[0, 1], start);
        times
            .0
            .entry("node1 adds them back (both hops)".into())
            .or_default()
            .push(took);
        eprintln!(
            "node1 adds them back: the upstream routes through both nodes after {:.3} s, {:.3} s",
            took[0].as_secs_f64(),
            took[1].as_secs_f64()
        );

        let took = lab.crash_node_1();
        lab.report(&mut times, "node1's bird killed (SIGKILL)", took);
        lab.restart_node_bird(1);

        lab.vanish_and_return(&mut times, "BFD session down");
    }
    times.print(true);
}

#[test]
fn without_bfd_a_vanished_node_is_dropped_when_the_hold_time_runs_out() {
    let test = "without_bfd_a_vanished_node_is_dropped_when_the_hold_time_runs_out";
    if !privileged(test) || !bird::available(test) {
        return;
    }
    let mut lab = Lab::new(false);
    let mut times = Times::default();
    for _ in 0..runs() {
        // A crash closes bird's TCP connections: the upstream sees it at
        // once, BFD or not.
        let took = lab.crash_node_1();
        lab.report(&mut times, "node1's bird killed (SIGKILL)", took);
        lab.restart_node_bird(1);
        // A node gone silent is seen only when the hold time runs out.
        lab.vanish_and_return(&mut times, "Hold timer expired");
    }
    times.print(false);
}

fn bird_kernel(vip: IpAddr) -> &'static str {
    if vip.is_ipv4() {
        bird::KERNEL4
    } else {
        bird::KERNEL6
    }
}
