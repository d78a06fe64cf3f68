//! The `aws` announcer: the one caller of the EC2 API. It follows the
//! applied VIPs (which addresses ask for `aws`, with which Elastic IP) and
//! the election (which of them this node leads), and for what it leads
//! brings EC2 in line: the VIPs become secondary private IPs of this
//! node's ENI, their Elastic IPs are associated to them, the ENI's
//! source/destination check is off. Each pass looks at EC2 first and asks
//! only for what differs ([`plan`]), then looks again until EC2 shows the
//! move done; a periodic pass repairs drift (an address moved by hand, a
//! failed call). Only a leader calls the API, and leadership is checked
//! again right before every write. A node that leads nothing makes no
//! call, not even to find its region.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    time::{Duration, SystemTime},
};

use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;

use super::reconciler::Applied;
use crate::{
    announce::aws::{
        api::Ec2,
        error::ApiError,
        imds,
        plan::{self, Observed, Plan, Wanted},
        status::{AwsStatus, AwsVip, Calls, CheckedBackend},
    },
    config::{self, AllocationId, Announcement},
    desired::Desired,
    kubernetes::{LeaderFeed, Leadership},
};

/// Looks at EC2 at most this many times in one pass to see a move done;
/// what is still not in place is retried at the next pass.
const ROUNDS: u32 = 5;
/// Between the looks of one pass: EC2's Describe calls are eventually
/// consistent with its writes.
const SETTLE: Duration = Duration::from_millis(300);

pub(super) struct Settings {
    pub(super) aws: config::Aws,
    /// Without an election, whether this node leads every VIP; `None`
    /// when the Leases decide.
    pub(super) static_leader: Option<bool>,
    /// This node's name, the value of the router tag on its ENI.
    pub(super) node: String,
    pub(super) state_dir: PathBuf,
}

/// The region and ENI, once found, and the client made for them.
struct Connected {
    ec2: Ec2,
    eni: String,
}

struct Announcer {
    s: Settings,
    conn: Option<Connected>,
    gate: Option<LeaderFeed>,
    status: AwsStatus,
    /// VIPs with a move under way, since its first write.
    moving: BTreeMap<Ipv4Addr, Instant>,
    /// IPv6 VIPs asking for `aws`, warned about once. The config and the
    /// Kubernetes translation refuse them already; a state file written
    /// by an older version could still bring one back on a restart.
    ignored_v6: BTreeSet<IpAddr>,
    /// The VIPs owned as last published, for the transitions count.
    owned: BTreeSet<Ipv4Addr>,
}

pub(super) async fn run(
    s: Settings,
    mut applied: watch::Receiver<Applied>,
    mut leaders: Option<LeaderFeed>,
    status: watch::Sender<AwsStatus>,
    stop: CancellationToken,
) {
    let every = Duration::from_millis(u64::from(s.aws.reconcile_interval_ms));
    let mut a = Announcer {
        s,
        conn: None,
        gate: leaders.clone(),
        status: AwsStatus::default(),
        moving: BTreeMap::new(),
        ignored_v6: BTreeSet::new(),
        owned: BTreeSet::new(),
    };
    let mut leadership = leaders.as_ref().map(LeaderFeed::current);
    let mut next = Instant::now();
    loop {
        let ready = a.s.static_leader.is_some()
            || leadership.as_ref().is_some_and(|l| !l.routers.is_empty());
        if ready && Instant::now() >= next {
            let desired = applied.borrow_and_update().desired.clone();
            tokio::select! {
                () = stop.cancelled() => break,
                () = a.pass(&desired, leadership.as_ref()) => {}
            }
            next = Instant::now() + every;
        }
        a.count_transitions();
        publish(&status, &a.status, &a.s.state_dir);
        tokio::select! {
            () = stop.cancelled() => break,
            r = applied.changed() => match r {
                Ok(()) => next = Instant::now(),
                Err(_) => break,
            },
            l = next_leadership(&mut leaders) => match l {
                Some(l) => {
                    leadership = Some(l);
                    next = Instant::now();
                }
                None => break,
            },
            () = tokio::time::sleep_until(next) => {}
        }
    }
    publish(&status, &a.status, &a.s.state_dir);
}

impl Announcer {
    /// Counts the VIPs that became or stopped being this node's since the
    /// last count.
    fn count_transitions(&mut self) {
        let owned: BTreeSet<Ipv4Addr> = self.status.owned().collect();
        self.status.transitions += owned.symmetric_difference(&self.owned).count() as u64;
        self.owned = owned;
    }

    /// One pass: what this node leads, brought about and confirmed.
    async fn pass(&mut self, desired: &Desired, leadership: Option<&Leadership>) {
        let (all, v6) = aws_vips(desired);
        let fixed = self.s.static_leader;
        let leads = |a: Ipv4Addr| match fixed {
            Some(l) => l,
            None => leadership.is_some_and(|l| l.leads(IpAddr::V4(a))),
        };
        let wanted: Wanted = all
            .iter()
            .filter(|(a, _)| leads(**a))
            .map(|(a, e)| (*a, e.clone()))
            .collect();
        let mut vips: BTreeMap<Ipv4Addr, AwsVip> = BTreeMap::new();
        for (addr, eip) in &all {
            let old = self.status.vips.get(addr).cloned().unwrap_or_default();
            vips.insert(
                *addr,
                AwsVip {
                    allocation_id: eip.clone(),
                    leads: wanted.contains_key(addr),
                    ..old
                },
            );
        }
        if v6 != self.ignored_v6 {
            for a in v6.difference(&self.ignored_v6) {
                tracing::warn!(vip = %a, "aws: an IPv6 VIP cannot be announced with aws; ignored");
            }
            self.ignored_v6 = v6;
        }
        self.status.vips = vips;
        self.moving.retain(|a, _| wanted.contains_key(a));
        if wanted.is_empty() {
            for v in self.status.vips.values_mut() {
                v.desired_network_interface_id = None;
                v.error = None;
            }
            return;
        }
        if self.conn.is_none() {
            match connect(&self.s.aws).await {
                Ok(c) => {
                    self.status.region = Some(c.1);
                    self.status.network_interface_id = Some(c.0.eni.clone());
                    self.conn = Some(c.0);
                }
                Err(e) => {
                    tracing::error!("aws: {e}");
                    self.status.error = Some(e);
                    return;
                }
            }
        }
        match self.bring_about(&wanted).await {
            Ok(()) => self.status.error = None,
            Err(e) => {
                tracing::error!("aws: {e}");
                self.status.error = Some(e.to_string());
            }
        }
        self.check_backends(desired).await;
        self.status.last_reconcile_unix = unix_now();
        if let Some(c) = &self.conn {
            self.status.calls = c
                .ec2
                .calls
                .iter()
                .map(|((op, r), n)| Calls {
                    operation: (*op).to_owned(),
                    result: (*r).to_owned(),
                    count: *n,
                })
                .collect();
            self.status.throttled = c.ec2.throttled;
        }
    }

    /// Looks, plans, writes one kind of step, looks again, up to [`ROUNDS`].
    async fn bring_about(&mut self, wanted: &Wanted) -> Result<(), ApiError> {
        let check_private_ip = self.s.aws.check_private_ip;
        for round in 0..ROUNDS {
            if round > 0 {
                tokio::time::sleep(SETTLE).await;
            }
            let seen = self.observe(wanted).await?;
            let p = plan::plan(wanted, &seen, check_private_ip);
            self.record(wanted, &seen, &p);
            if p.is_settled() {
                return Ok(());
            }
            self.write(&p, wanted).await;
        }
        for (a, v) in self.status.vips.iter_mut() {
            if v.leads && !v.in_place && v.error.is_none() {
                v.error = Some(format!(
                    "EC2 did not show the move done after {ROUNDS} looks; tried again at the next \
                     reconcile"
                ));
                tracing::warn!(vip = %a, "aws: move not confirmed yet");
            }
        }
        Ok(())
    }

    async fn observe(&mut self, wanted: &Wanted) -> Result<Observed, ApiError> {
        let c = self.conn.as_mut().expect("connected before observing");
        let home = c.ec2.home(&c.eni).await?;
        let (subnet, others) = match &home.subnet_id {
            Some(id) => (
                c.ec2.subnet(id).await?,
                c.ec2.subnet_enis(id, &c.eni).await?,
            ),
            None => (None, Vec::new()),
        };
        let ids: BTreeSet<AllocationId> = wanted.values().flatten().cloned().collect();
        let eips = c.ec2.addresses(&ids).await?;
        self.status.subnet = subnet;
        self.status.source_dest_check = Some(home.eni.source_dest_check);
        Ok(Observed {
            eni: home.eni,
            subnet,
            others,
            eips,
        })
    }

    /// The status of each led VIP from one look and its plan; moves seen
    /// done are timed.
    fn record(&mut self, wanted: &Wanted, seen: &Observed, p: &Plan) {
        let eni = seen.eni.id.clone();
        for (addr, eip) in wanted {
            let v = self.status.vips.entry(*addr).or_default();
            v.desired_network_interface_id = Some(eni.clone());
            v.on_our_interface = seen.eni.secondary_ips.contains(addr);
            v.observed = eip
                .as_ref()
                .and_then(|e| seen.eips.get(e).cloned().flatten());
            v.in_place = p.in_place.contains(addr);
            v.error = p.refused.get(addr).map(|r| {
                let msg = format!("VIP {addr}: {r}");
                tracing::error!("aws: {msg}");
                msg
            });
            if v.in_place
                && let Some(since) = self.moving.remove(addr)
            {
                let took = since.elapsed().as_secs_f64();
                tracing::info!(vip = %addr, seconds = took, "aws: EC2 shows the VIP on this node");
                self.status.moves_confirmed += 1;
                self.status.last_confirm_seconds = Some(took);
                self.status.confirm_seconds_sum += took;
            }
        }
    }

    /// One kind of step: the ENI's own settings, then the assignment if
    /// any, else the associations. Each write first asks whether this node
    /// still leads what it is about: for the ENI's settings, any of the
    /// VIPs `p` was planned for (leadership can go while a pass looks, or
    /// backs off from throttling).
    async fn write(&mut self, p: &Plan, wanted: &Wanted) {
        let gate = Gate {
            fixed: self.s.static_leader,
            feed: self.gate.clone(),
        };
        let leads_any = || wanted.keys().any(|a| gate.leads(*a));
        let node = self.s.node.clone();
        let c = self.conn.as_mut().expect("connected before writing");
        let mut failed: Vec<(Vec<Ipv4Addr>, ApiError)> = Vec::new();
        if p.tag
            && let Err(e) = c.ec2.tag_router(&c.eni, &node, &leads_any).await
        {
            tracing::error!("aws: tagging {} as a router: {e}", c.eni);
        }
        if p.source_dest_check_off {
            match c.ec2.source_dest_check_off(&c.eni, &leads_any).await {
                Ok(()) => tracing::info!(eni = %c.eni, "aws: source/destination check turned off"),
                Err(e) => tracing::error!("aws: {e}"),
            }
        }
        let now = Instant::now();
        if !p.assign.is_empty() {
            let ips: BTreeSet<Ipv4Addr> = p
                .assign
                .iter()
                .copied()
                .filter(|a| gate.leads(*a))
                .collect();
            if !ips.is_empty() {
                for a in &ips {
                    self.moving.entry(*a).or_insert(now);
                }
                let allowed = || ips.iter().all(|a| gate.leads(*a));
                tracing::info!(eni = %c.eni, vips = ?ips, "aws: assigning the VIPs to this node's ENI");
                if let Err(e) = c.ec2.assign(&c.eni, &ips, &allowed).await {
                    failed.push((ips.into_iter().collect(), e));
                }
            }
        } else {
            for (eip, vip) in &p.associate {
                let vip = *vip;
                if !gate.leads(vip) {
                    continue;
                }
                self.moving.entry(vip).or_insert(now);
                tracing::info!(%vip, %eip, eni = %c.eni, "aws: associating the Elastic IP");
                if let Err(e) = c.ec2.associate(eip, &c.eni, vip, &|| gate.leads(vip)).await {
                    failed.push((vec![vip], e));
                }
            }
        }
        for (vips, e) in failed {
            tracing::error!(?vips, "aws: {e}");
            for a in vips {
                self.moving.remove(&a);
                if let Some(v) = self.status.vips.get_mut(&a) {
                    v.error = Some(format!("VIP {a}: {e}"));
                }
            }
        }
    }

    /// Backends that are EC2 instances with the check on drop the replies
    /// DSR makes them send (source: the VIP); reported, not changed (their
    /// ENIs are not ours to modify).
    async fn check_backends(&mut self, desired: &Desired) {
        let Some(c) = self.conn.as_mut() else { return };
        let ips: BTreeSet<Ipv4Addr> = desired
            .services
            .iter()
            .filter(|(_, s)| matches!(s.announce, Announcement::Aws { .. }))
            .flat_map(|(_, s)| s.backends.keys().copied().collect::<Vec<_>>())
            .filter_map(|a| match a {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
            .collect();
        match c.ec2.enis_of(&ips).await {
            Ok(enis) => {
                let checked: Vec<CheckedBackend> = enis
                    .iter()
                    .filter(|e| e.source_dest_check)
                    .flat_map(|e| {
                        ips.iter().filter(|a| e.holds(**a)).map(|a| CheckedBackend {
                            address: *a,
                            network_interface_id: e.id.clone(),
                            instance_id: e.instance_id.clone(),
                        })
                    })
                    .collect();
                for b in checked
                    .iter()
                    .filter(|b| !self.status.backends_with_source_dest_check.contains(b))
                {
                    tracing::warn!(
                        backend = %b.address, eni = %b.network_interface_id,
                        "aws: this backend's ENI checks source/destination: it drops the replies \
                         DSR has it send with the VIP as source; turn the check off on it"
                    );
                }
                self.status.backends_with_source_dest_check = checked;
            }
            Err(e) => tracing::warn!("aws: checking the backends' ENIs: {e}"),
        }
    }
}

/// Whether this node leads a VIP right now: asked again before every
/// write, since a pass can take seconds (throttling) and the election
/// goes on meanwhile.
struct Gate {
    fixed: Option<bool>,
    feed: Option<LeaderFeed>,
}

impl Gate {
    fn leads(&self, a: Ipv4Addr) -> bool {
        match self.fixed {
            Some(l) => l,
            None => self
                .feed
                .as_ref()
                .is_some_and(|f| f.current().leads(IpAddr::V4(a))),
        }
    }
}

/// The region and ENI (configured, else from IMDS) and a client for them.
async fn connect(s: &config::Aws) -> Result<(Connected, String), String> {
    let need_imds = s.region.is_none() || s.network_interface_id.is_none();
    let md = if need_imds || s.imds_url.is_some() {
        Some(imds::client(s.imds_url.as_deref()).map_err(|e| e.to_string())?)
    } else {
        None
    };
    let region = match (&s.region, &md) {
        (Some(r), _) => r.clone(),
        (None, Some(m)) => imds::region(m).await.map_err(|e| e.to_string())?,
        (None, None) => unreachable!("IMDS is asked when the region is not set"),
    };
    let eni = match (&s.network_interface_id, &md) {
        (Some(e), _) => e.clone(),
        (None, Some(m)) => imds::primary_eni(m).await.map_err(|e| e.to_string())?,
        (None, None) => unreachable!("IMDS is asked when the ENI is not set"),
    };
    tracing::info!(%region, %eni, "aws: announcing VIPs on this ENI");
    let ec2 = Ec2::connect(region.clone(), s.endpoint_url.as_deref(), md).await;
    Ok((Connected { ec2, eni }, region))
}

/// Each `aws` VIP address with its Elastic IP (the first any of its ports
/// names; the config refuses disagreement), and the IPv6 ones apart.
fn aws_vips(desired: &Desired) -> (BTreeMap<Ipv4Addr, Option<AllocationId>>, BTreeSet<IpAddr>) {
    let mut out: BTreeMap<Ipv4Addr, Option<AllocationId>> = BTreeMap::new();
    let mut v6 = BTreeSet::new();
    for (vip, spec) in desired.services.iter() {
        let Announcement::Aws { eip } = &spec.announce else {
            continue;
        };
        match vip.address {
            IpAddr::V4(a) => {
                let slot = out.entry(a).or_default();
                if slot.is_none() {
                    slot.clone_from(eip);
                }
            }
            IpAddr::V6(_) => {
                v6.insert(vip.address);
            }
        }
    }
    (out, v6)
}

fn unix_now() -> Option<f64> {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

async fn next_leadership(feed: &mut Option<LeaderFeed>) -> Option<Leadership> {
    match feed {
        Some(f) => f.changed().await,
        None => std::future::pending().await,
    }
}

fn publish(tx: &watch::Sender<AwsStatus>, s: &AwsStatus, state_dir: &std::path::Path) {
    let changed = tx.send_if_modified(|old| {
        let same = old == s;
        *old = s.clone();
        !same
    });
    if changed && let Err(e) = s.write(state_dir) {
        tracing::warn!("aws announcer: writing its status: {e}");
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::TcpListener,
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use super::*;
    use crate::kubernetes::leadership::Leader;

    /// An EC2 endpoint that counts the requests reaching it and answers
    /// each with an error (what it says does not matter here).
    fn counting_endpoint() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(AtomicUsize::new(0));
        let count = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut buf = [0u8; 8192];
                if conn.read(&mut buf).unwrap_or(0) > 0 {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                let _ = conn.write_all(
                    b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        (url, seen)
    }

    fn leading(vip: Ipv4Addr, leads: bool) -> Leadership {
        Leadership {
            identity: "router-a".into(),
            vips: [(
                IpAddr::V4(vip),
                Leader {
                    holder: Some(if leads { "router-a" } else { "router-b" }.into()),
                    leading: leads,
                },
            )]
            .into(),
            routers: ["router-a".into(), "router-b".into()].into(),
        }
    }

    /// Every kind of write the planner asks for, each made while this node
    /// leads `vip` and sent only if it still does.
    #[tokio::test]
    async fn no_write_reaches_ec2_once_leadership_is_lost_after_the_look() {
        let vip = Ipv4Addr::new(10, 0, 1, 100);
        let eip = AllocationId::parse("eipalloc-0123456789abcdef0").unwrap();
        let wanted: Wanted = [(vip, Some(eip.clone()))].into();
        let enis_plan = Plan {
            tag: true,
            source_dest_check_off: true,
            assign: [vip].into(),
            ..Plan::default()
        };
        let eip_plan = Plan {
            associate: [(eip, vip)].into(),
            ..Plan::default()
        };
        for still_leads in [true, false] {
            let (url, seen) = counting_endpoint();
            let (tx, rx) = watch::channel(leading(vip, true));
            let mut a = Announcer {
                s: Settings {
                    aws: config::Aws::default(),
                    static_leader: None,
                    node: "router-a".into(),
                    state_dir: std::env::temp_dir(),
                },
                conn: Some(Connected {
                    ec2: Ec2::for_tests(&url),
                    eni: "eni-0123456789abcdef0".into(),
                }),
                gate: Some(LeaderFeed::new(rx)),
                status: AwsStatus::default(),
                moving: BTreeMap::new(),
                ignored_v6: BTreeSet::new(),
                owned: BTreeSet::new(),
            };
            // The plans were made from a look taken while leading; the
            // Lease goes (or stays) before the writes.
            tx.send(leading(vip, still_leads)).unwrap();
            a.write(&enis_plan, &wanted).await;
            a.write(&eip_plan, &wanted).await;
            let requests = seen.load(Ordering::SeqCst);
            let calls = &a.conn.as_ref().unwrap().ec2.calls;
            if still_leads {
                // The control: the same writes reach the endpoint.
                assert_eq!(requests, 4, "{calls:?}");
            } else {
                assert_eq!(requests, 0, "writes sent after losing the lead: {calls:?}");
                assert!(calls.is_empty(), "{calls:?}");
                assert!(a.moving.is_empty());
            }
        }
    }
}
