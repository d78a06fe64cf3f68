//! The `l2` announcer: the one writer of the data plane's owned-address map
//! and heartbeat. It follows the applied VIPs (which addresses ask for
//! `l2`) and the election (which of them this node leads), and for each
//! address this node comes to lead: claims it in `XLB_OWNED` (the program
//! then answers ARP / neighbour solicitations for it), joins its
//! solicited-node Ethernet group, and sends gratuitous ARPs or unsolicited
//! neighbour advertisements, at once and then `gratuitous_count - 1` more
//! times. An address it stops leading leaves the map at once.
//!
//! The heartbeat it writes every quarter of the liveness bound is what
//! keeps the program answering: a daemon that dies goes silent within the
//! bound. After a restart nothing is touched until the election has
//! spoken once, so a claim the last run made stands only if this node
//! still leads (and lapses on its own otherwise).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    time::{Duration, SystemTime},
};

use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::reconciler::Applied;
use crate::{
    announce::{
        claimer::Claimer,
        frames,
        link::Link,
        status::{AnnounceStatus, VipAnnouncement},
    },
    config::AnnounceMode,
    desired::Desired,
    kubernetes::{LeaderFeed, Leadership},
    xdp::claims::monotonic_ns,
};

pub(super) struct Settings {
    pub(super) bound: Duration,
    pub(super) count: u32,
    pub(super) interval: Duration,
    /// Send again this often while owning (`None`: never).
    pub(super) refresh: Option<Duration>,
    /// Without an election, whether this node leads every VIP; `None`
    /// when the Leases decide.
    pub(super) static_leader: Option<bool>,
    /// Whether any VIP may ask for `l2` (the default or a `[[vip]]`): on
    /// IPVS the responder and its sysctls are set up only then.
    pub(super) needed: bool,
    pub(super) interfaces: Vec<String>,
    pub(super) state_dir: PathBuf,
}

/// An address this node claims, and when it next announces it.
struct Claimed {
    next: Option<Instant>,
    /// Sends left in the takeover burst.
    burst_left: u32,
}

pub(super) async fn run(
    s: Settings,
    claims: Box<dyn Claimer>,
    mut applied: watch::Receiver<Applied>,
    mut leaders: Option<LeaderFeed>,
    status: watch::Sender<AnnounceStatus>,
    stop: CancellationToken,
) {
    let links: Vec<Link> = s
        .interfaces
        .iter()
        .filter_map(|name| match Link::open(name) {
            Ok(l) => Some(l),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                tracing::error!(iface = %name, "announcer: no packet socket without CAP_NET_RAW: takeovers are not announced there and IPv6 VIPs' solicited-node groups are not joined (the data plane still answers)");
                None
            }
            Err(e) => {
                tracing::warn!(iface = %name, "announcer: no packet socket ({e}); no gratuitous announcements there");
                None
            }
        })
        .collect();
    let mut a = Announcer {
        s,
        claims,
        links,
        owned: BTreeMap::new(),
        status: AnnounceStatus::default(),
    };
    a.status.liveness_bound_ms = a.s.bound.as_millis() as u64;
    let mut leadership = leaders.as_ref().map(LeaderFeed::current);
    let mut beat = tokio::time::interval(a.s.bound / 4);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the VIPs or the election changed since the last settle.
    let mut changed = true;
    loop {
        let ready = a.s.static_leader.is_some()
            || leadership.as_ref().is_some_and(|l| !l.routers.is_empty());
        if ready && changed {
            let desired = applied.borrow_and_update().desired.clone();
            a.settle(&desired, leadership.as_ref());
            changed = false;
        }
        publish(&status, &a.status, &a.s.state_dir);
        let next_send = a.owned.values().filter_map(|c| c.next).min();
        tokio::select! {
            () = stop.cancelled() => break,
            r = applied.changed() => match r {
                Ok(()) => changed = true,
                Err(_) => break,
            },
            l = next_leadership(&mut leaders) => match l {
                Some(l) => {
                    leadership = Some(l);
                    changed = true;
                }
                None => break,
            },
            _ = beat.tick() => if ready { a.beat() },
            () = sleep_until(next_send) => a.send_due(),
        }
    }
    a.withdraw();
    publish(&status, &a.status, &a.s.state_dir);
}

struct Announcer {
    s: Settings,
    claims: Box<dyn Claimer>,
    links: Vec<Link>,
    owned: BTreeMap<IpAddr, Claimed>,
    status: AnnounceStatus,
}

impl Announcer {
    /// Claims what this node leads among the `l2` addresses, releases the
    /// rest (entries a previous run left included).
    fn settle(&mut self, desired: &Desired, leadership: Option<&Leadership>) {
        let mut vips = BTreeMap::new();
        let mut want = BTreeSet::new();
        for addr in l2_addresses(desired) {
            let leader = leadership.and_then(|l| l.vips.get(&addr));
            let leads = match self.s.static_leader {
                Some(leads) => leads,
                None => leader.is_some_and(|l| l.leading),
            };
            if leads {
                want.insert(addr);
            }
            let old = self.status.vips.get(&addr);
            vips.insert(
                addr,
                VipAnnouncement {
                    mode: AnnounceMode::L2,
                    owned: false,
                    leader: leader.and_then(|l| l.holder.clone()),
                    last_announcement_unix: old.and_then(|o| o.last_announcement_unix),
                    announcements: old.map_or(0, |o| o.announcements),
                },
            );
        }
        for addr in self.claims.claimed() {
            if !want.contains(&addr) && !self.owned.contains_key(&addr) {
                // Left by a previous run: this node no longer leads it.
                tracing::info!(%addr, "announcer: releasing a claim left by the last run");
                if let Err(e) = self.claims.release(addr) {
                    tracing::warn!(%addr, "announcer: {e}");
                }
            }
        }
        let gone: Vec<IpAddr> = self
            .owned
            .keys()
            .filter(|a| !want.contains(a))
            .copied()
            .collect();
        for addr in gone {
            self.release(addr);
        }
        for &addr in &want {
            if !self.owned.contains_key(&addr) {
                self.take(addr);
            }
        }
        for (addr, v) in vips.iter_mut() {
            v.owned = self.owned.contains_key(addr);
        }
        self.status.vips = vips;
        if self.status.heartbeat_ns == 0 {
            // The first settle after start: the heartbeat follows at once,
            // so a claim adopted from the last run never lapses.
            self.beat();
        }
    }

    fn take(&mut self, addr: IpAddr) {
        if let Err(e) = self.claims.claim(addr) {
            tracing::error!(%addr, "announcer: cannot claim the address: {e}");
            return;
        }
        if let IpAddr::V6(v6) = addr {
            for l in &self.links {
                if let Err(e) = l.join(frames::solicited_node_mac(v6)) {
                    tracing::warn!(%addr, iface = %l.name, "announcer: joining the solicited-node group: {e}");
                }
            }
        }
        tracing::info!(%addr, "announcer: this node now answers for the VIP");
        self.status.transitions += 1;
        self.owned.insert(
            addr,
            Claimed {
                next: Some(Instant::now()),
                burst_left: self.s.count,
            },
        );
    }

    fn release(&mut self, addr: IpAddr) {
        if let Err(e) = self.claims.release(addr) {
            tracing::error!(%addr, "announcer: cannot release the address: {e}");
        }
        if let IpAddr::V6(v6) = addr {
            for l in &self.links {
                let _ = l.leave(frames::solicited_node_mac(v6));
            }
        }
        tracing::info!(%addr, "announcer: this node no longer answers for the VIP");
        self.status.transitions += 1;
        self.owned.remove(&addr);
    }

    fn beat(&mut self) {
        match self.claims.beat(self.s.bound) {
            Ok(()) => self.status.heartbeat_ns = monotonic_ns(),
            Err(e) => tracing::error!("announcer: heartbeat not written: {e}"),
        }
    }

    /// Sends every announcement that is due.
    fn send_due(&mut self) {
        let now = Instant::now();
        let due: Vec<IpAddr> = self
            .owned
            .iter()
            .filter(|(_, c)| c.next.is_some_and(|t| t <= now))
            .map(|(a, _)| *a)
            .collect();
        for addr in due {
            self.announce(addr);
            let (interval, refresh) = (self.s.interval, self.s.refresh);
            let c = self.owned.get_mut(&addr).expect("due addresses are owned");
            c.burst_left = c.burst_left.saturating_sub(1);
            c.next = if c.burst_left > 0 {
                Some(now + interval)
            } else {
                refresh.map(|r| now + r)
            };
        }
    }

    fn announce(&mut self, addr: IpAddr) {
        let mut sent = 0;
        for l in &self.links {
            let frame = match addr {
                IpAddr::V4(v4) => frames::gratuitous_arp(l.mac, v4),
                IpAddr::V6(v6) => frames::unsolicited_na(l.mac, v6),
            };
            match l.send(&frame) {
                Ok(()) => sent += 1,
                Err(e) => {
                    self.status.send_errors += 1;
                    tracing::warn!(%addr, iface = %l.name, "announcer: gratuitous announcement not sent: {e}");
                }
            }
        }
        self.status.gratuitous_sent += sent;
        if let Some(v) = self.status.vips.get_mut(&addr) {
            v.announcements += sent;
            v.last_announcement_unix = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs_f64());
        }
    }

    /// Shutting down: silent at once (the Leases are handed back next, and
    /// another node may answer right after), then every claim released.
    fn withdraw(&mut self) {
        if let Err(e) = self.claims.silence() {
            tracing::error!("announcer: cannot silence the data plane: {e}");
        }
        let all: Vec<IpAddr> = self.owned.keys().copied().collect();
        for addr in all {
            self.release(addr);
        }
        for addr in self.claims.claimed() {
            let _ = self.claims.release(addr);
        }
        for v in self.status.vips.values_mut() {
            v.owned = false;
        }
    }
}

/// The VIP addresses to announce in `l2`: those with a VIP asking for it.
/// An address some VIP of which is `aws` belongs to the aws announcer,
/// which lists it in its own status; it is left out here.
fn l2_addresses(desired: &Desired) -> BTreeSet<IpAddr> {
    desired
        .services
        .iter()
        .filter(|(_, spec)| spec.announce.mode() == AnnounceMode::L2)
        .map(|(vip, _)| vip.address)
        .collect()
}

async fn next_leadership(feed: &mut Option<LeaderFeed>) -> Option<Leadership> {
    match feed {
        Some(f) => f.changed().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

fn publish(tx: &watch::Sender<AnnounceStatus>, s: &AnnounceStatus, state_dir: &std::path::Path) {
    let changed = tx.send_if_modified(|old| {
        // The heartbeat alone is not worth a file write.
        let same = old.vips == s.vips
            && old.transitions == s.transitions
            && old.gratuitous_sent == s.gratuitous_sent
            && old.send_errors == s.send_errors;
        *old = s.clone();
        !same
    });
    if changed && let Err(e) = s.write(state_dir) {
        tracing::warn!("announcer: writing its status: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{config::Announcement, desired::ServiceSpec, vip::Vip};

    fn with(vips: &[(&str, u16, AnnounceMode)]) -> Desired {
        let mut d = Desired::default();
        for (addr, port, mode) in vips {
            d.services.insert(
                Vip {
                    address: addr.parse().unwrap(),
                    port: *port,
                    protocol: 6,
                },
                ServiceSpec {
                    encap: lb_common::Encap::L2,
                    scheduler: "mh".into(),
                    backends: Arc::default(),
                    announce: Announcement::new(*mode, Option::None),
                    health: None,
                    table: Default::default(),
                },
            );
        }
        d
    }

    #[test]
    fn an_address_is_announced_in_l2_if_any_of_its_vips_asks() {
        use AnnounceMode::{Aws, L2, None};
        let d = with(&[
            ("10.0.0.1", 80, None),
            ("10.0.0.1", 443, L2),
            ("10.0.0.2", 80, None),
            ("10.0.0.3", 80, Aws),
            ("10.0.0.3", 81, None),
            ("fd00::1", 80, L2),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            l2_addresses(&d),
            [ip("10.0.0.1"), ip("fd00::1")].into(),
            "10.0.0.2 is announced in no way, 10.0.0.3 by the aws announcer"
        );
    }

    /// The claims as a map would hold them, and every heartbeat.
    #[derive(Default)]
    struct Fake {
        claimed: BTreeSet<IpAddr>,
        beats: usize,
        silenced: bool,
    }

    impl Claimer for std::sync::Arc<std::sync::Mutex<Fake>> {
        fn claim(&mut self, a: IpAddr) -> Result<(), String> {
            self.lock().unwrap().claimed.insert(a);
            Ok(())
        }
        fn release(&mut self, a: IpAddr) -> Result<(), String> {
            self.lock().unwrap().claimed.remove(&a);
            Ok(())
        }
        fn claimed(&self) -> BTreeSet<IpAddr> {
            self.lock().unwrap().claimed.clone()
        }
        fn beat(&mut self, _: Duration) -> Result<(), String> {
            self.lock().unwrap().beats += 1;
            Ok(())
        }
        fn silence(&mut self) -> Result<(), String> {
            self.lock().unwrap().silenced = true;
            Ok(())
        }
    }

    fn announcer(
        fake: &std::sync::Arc<std::sync::Mutex<Fake>>,
        static_leader: Option<bool>,
    ) -> Announcer {
        Announcer {
            s: Settings {
                bound: Duration::from_secs(2),
                count: 3,
                interval: Duration::from_millis(500),
                refresh: None,
                static_leader,
                needed: true,
                interfaces: Vec::new(),
                state_dir: std::env::temp_dir(),
            },
            claims: Box::new(fake.clone()),
            links: Vec::new(),
            owned: BTreeMap::new(),
            status: AnnounceStatus::default(),
        }
    }

    fn leading(addrs: &[(&str, bool)]) -> Leadership {
        Leadership {
            identity: "me".into(),
            vips: addrs
                .iter()
                .map(|(a, leads)| {
                    (
                        a.parse().unwrap(),
                        crate::kubernetes::leadership::Leader {
                            holder: Some(if *leads { "me" } else { "other" }.into()),
                            leading: *leads,
                        },
                    )
                })
                .collect(),
            routers: ["me".to_owned(), "other".to_owned()].into(),
        }
    }

    #[test]
    fn claims_follow_leadership_and_leftovers_are_released() {
        use AnnounceMode::{Aws, L2, None};
        let fake = std::sync::Arc::new(std::sync::Mutex::new(Fake::default()));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A previous run left a claim this node no longer leads.
        fake.lock().unwrap().claimed.insert(ip("10.0.0.9"));
        let mut a = announcer(&fake, Option::None);
        let d = with(&[
            ("10.0.0.1", 80, L2),
            ("10.0.0.2", 80, L2),
            ("10.0.0.3", 80, None),
            ("10.0.0.4", 80, Aws),
        ]);
        a.settle(
            &d,
            Some(&leading(&[
                ("10.0.0.1", true),
                ("10.0.0.2", false),
                ("10.0.0.3", true),
                ("10.0.0.4", true),
            ])),
        );
        assert_eq!(fake.lock().unwrap().claimed, [ip("10.0.0.1")].into());
        assert_eq!(
            fake.lock().unwrap().beats,
            1,
            "the first settle beats at once"
        );
        assert!(a.status.vips[&ip("10.0.0.1")].owned);
        assert_eq!(
            a.status.vips[&ip("10.0.0.2")].leader.as_deref(),
            Some("other")
        );
        assert!(
            !a.status.vips.contains_key(&ip("10.0.0.3")),
            "announced in no way"
        );
        assert!(
            !a.status.vips.contains_key(&ip("10.0.0.4")),
            "an aws VIP is in the aws announcer's status, not l2's"
        );
        // Leadership moves: the lost VIP leaves at once, the won one comes.
        a.settle(
            &d,
            Some(&leading(&[("10.0.0.1", false), ("10.0.0.2", true)])),
        );
        assert_eq!(fake.lock().unwrap().claimed, [ip("10.0.0.2")].into());
        assert_eq!(a.status.transitions, 3);
        // The takeover burst: due at once, then `count - 1` more.
        let c = &a.owned[&ip("10.0.0.2")];
        assert_eq!(c.burst_left, 3);
        assert!(c.next.is_some());
        // The VIP's mode turns to none: released.
        let quiet = with(&[("10.0.0.2", 80, None)]);
        a.settle(&quiet, Some(&leading(&[("10.0.0.2", true)])));
        assert!(fake.lock().unwrap().claimed.is_empty());
        // Shutting down: silent first, nothing claimed.
        a.settle(&d, Some(&leading(&[("10.0.0.1", true)])));
        a.withdraw();
        let f = fake.lock().unwrap();
        assert!(f.silenced && f.claimed.is_empty());
        assert!(a.status.vips.values().all(|v| !v.owned));
    }

    #[test]
    fn the_burst_is_count_sends_then_refresh_or_nothing() {
        let fake = std::sync::Arc::new(std::sync::Mutex::new(Fake::default()));
        let mut a = announcer(&fake, Some(true));
        let d = with(&[("10.0.0.1", 80, AnnounceMode::L2)]);
        a.settle(&d, Option::None);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut sends = 0;
        while let Some(next) = a.owned[&ip].next {
            assert!(sends < 10, "the burst never ends");
            let before = a.owned[&ip].burst_left;
            // Run the schedule without waiting: pretend it is due.
            a.owned.get_mut(&ip).unwrap().next = Some(Instant::now());
            a.send_due();
            sends += 1;
            assert_eq!(a.owned[&ip].burst_left, before - 1);
            if let Some(later) = a.owned[&ip].next {
                assert!(later > next, "the next send comes later");
            }
        }
        assert_eq!(sends, 3);
        a.s.refresh = Some(Duration::from_secs(60));
        a.release(ip);
        a.settle(&d, Option::None);
        for _ in 0..3 {
            a.owned.get_mut(&ip).unwrap().next = Some(Instant::now());
            a.send_due();
        }
        assert!(a.owned[&ip].next.is_some(), "refreshed after the burst");
    }
}
