//! The neighbour keeper: the task that keeps every backend's next hop in
//! the kernel's neighbour table, because XDP can only read that table (see
//! `neigh`). It resolves the first backends before the first apply, then
//! asks for new backends as soon as they are applied and refreshes all of
//! them every few seconds.

use std::{collections::HashMap, net::IpAddr, sync::Arc, time::Duration};

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::reconciler::Applied;
use crate::{
    desired::{Desired, ServiceSpec, Services},
    neigh::{self, Reachability},
};

/// How often every backend's entry is confirmed.
const REFRESH: Duration = Duration::from_secs(5);
/// How long the first resolution may hold back the first apply.
const FIRST_DEADLINE: Duration = Duration::from_secs(1);

/// New backends get this long to resolve before they are reported.
const NEW_DEADLINE: Duration = Duration::from_secs(1);

pub(super) async fn run(
    first: Vec<IpAddr>,
    ready: oneshot::Sender<()>,
    mut applied: watch::Receiver<Applied>,
    stop: CancellationToken,
) {
    let mut reach = Reachability::default();
    tokio::select! {
        () = stop.cancelled() => return,
        r = neigh::resolve(&first, FIRST_DEADLINE) => record(&mut reach, &first, r),
    }
    let _ = ready.send(());
    let mut known = Backends::new(&first);
    let mut every = tokio::time::interval(REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.reset();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {
                let all = known.all();
                let r = neigh::touch(&all).await;
                record(&mut reach, &all, r);
            }
            Ok(()) = applied.changed() => {
                let now = applied.borrow_and_update().desired.clone();
                let (new, some_gone) = known.update(now);
                if some_gone {
                    reach.retain(&known.all());
                }
                if !new.is_empty() {
                    let r = tokio::select! {
                        () = stop.cancelled() => return,
                        r = neigh::resolve(&new, NEW_DEADLINE) => r,
                    };
                    record(&mut reach, &new, r);
                }
            }
        }
    }
}

/// What a check found; a failed netlink exchange leaves the record as it is.
fn record(
    reach: &mut Reachability,
    checked: &[IpAddr],
    found: Result<Vec<(IpAddr, neigh::Unreachable)>, neigh::Error>,
) {
    match found {
        Ok(unreachable) => reach.update(checked, unreachable),
        Err(e) => tracing::warn!("checking the backends' neighbours: {e}"),
    }
}

/// Every backend address of the applied state, with the number of VIPs
/// using it. Each applied state is compared with the previous one VIP by
/// VIP, and a VIP whose backends are the same allocation as before is
/// skipped: an event costs what it changed, not a pass over every backend
/// of every VIP.
struct Backends {
    counts: HashMap<IpAddr, u32>,
    last: Arc<Desired>,
    /// The first addresses are held at a count of 0 until the first
    /// applied state says which of them are in use.
    first: bool,
}

impl Backends {
    fn new(first: &[IpAddr]) -> Self {
        Self {
            counts: first.iter().map(|a| (*a, 0)).collect(),
            last: Arc::default(),
            first: true,
        }
    }

    /// Takes the applied state `now`: the addresses it adds, and whether
    /// any went.
    fn update(&mut self, now: Arc<Desired>) -> (Vec<IpAddr>, bool) {
        let mut new = Vec::new();
        let mut gone = false;
        let last = std::mem::replace(&mut self.last, now.clone());
        for (old, cur) in changed_vips(&last.services, &now.services) {
            for a in cur.into_iter().flat_map(|s| s.backends.keys()) {
                *self.counts.entry(*a).or_insert_with(|| {
                    new.push(*a);
                    0
                }) += 1;
            }
            for a in old.into_iter().flat_map(|s| s.backends.keys()) {
                if let Some(n) = self.counts.get_mut(a) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.counts.remove(a);
                        gone = true;
                    }
                }
            }
        }
        if std::mem::take(&mut self.first) {
            let before = self.counts.len();
            self.counts.retain(|_, n| *n > 0);
            gone |= self.counts.len() != before;
        }
        (new, gone)
    }

    /// Every address, sorted.
    fn all(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self.counts.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

/// The VIPs whose spec differs between `a` and `b` (absent on one side:
/// `None`). The maps are versions of one persistent map: the diff skips the
/// parts they share.
fn changed_vips<'a>(
    a: &'a Services,
    b: &'a Services,
) -> Vec<(Option<&'a ServiceSpec>, Option<&'a ServiceSpec>)> {
    use imbl::ordmap::DiffItem;
    a.diff(b)
        .filter_map(|d| match d {
            DiffItem::Add(_, new) => Some((None, Some(new))),
            DiffItem::Update { old, new } => {
                (old.1.backends != new.1.backends).then_some((Some(old.1), Some(new.1)))
            }
            DiffItem::Remove(_, old) => Some((Some(old), None)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vip::Vip;

    fn state(vips: &[(&str, &[&str])]) -> Arc<Desired> {
        let mut d = Desired::default();
        for (vip, backends) in vips {
            d.services.insert(
                Vip {
                    address: vip.parse().unwrap(),
                    port: 80,
                    protocol: lb_common::PROTO_TCP,
                },
                ServiceSpec {
                    encap: lb_common::Encap::Ipip,
                    scheduler: "mh".into(),
                    backends: Arc::new(backends.iter().map(|b| (b.parse().unwrap(), 1)).collect()),
                },
            );
        }
        Arc::new(d)
    }

    fn ips(v: &[&str]) -> Vec<IpAddr> {
        v.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn only_what_changed_is_new_and_shared_backends_stay_while_used() {
        let mut b = Backends::new(&ips(&["10.1.0.1", "10.1.0.9"]));
        let s1 = state(&[
            ("10.0.0.1", &["10.1.0.1", "10.1.0.2"]),
            ("10.0.0.2", &["10.1.0.2"]),
        ]);
        // The first state: 10.1.0.1 was resolved at start, 10.1.0.9 is unused.
        assert_eq!(b.update(s1.clone()), (ips(&["10.1.0.2"]), true));
        assert_eq!(b.all(), ips(&["10.1.0.1", "10.1.0.2"]));
        // 10.0.0.1 drops 10.1.0.2, which 10.0.0.2 still uses.
        let s2 = state(&[
            ("10.0.0.1", &["10.1.0.1", "10.1.0.3"]),
            ("10.0.0.2", &["10.1.0.2"]),
        ]);
        assert_eq!(b.update(s2), (ips(&["10.1.0.3"]), false));
        assert_eq!(b.all(), ips(&["10.1.0.1", "10.1.0.2", "10.1.0.3"]));
        // 10.0.0.2 goes: its last user.
        let s3 = state(&[("10.0.0.1", &["10.1.0.1", "10.1.0.3"])]);
        assert_eq!(b.update(s3.clone()), (vec![], true));
        assert_eq!(b.all(), ips(&["10.1.0.1", "10.1.0.3"]));
        // The same state again: nothing.
        assert_eq!(b.update(s3), (vec![], false));
        assert_eq!(b.update(Arc::default()), (vec![], true));
        assert!(b.all().is_empty());
    }
}
