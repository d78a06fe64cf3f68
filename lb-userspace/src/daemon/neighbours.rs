//! The neighbour keeper: the task that keeps every backend's next hop in
//! the kernel's neighbour table, because XDP can only read that table (see
//! `neigh`). It resolves the first backends before the first apply, then
//! asks for new backends as soon as they are applied and refreshes all of
//! them every few seconds.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc, time::Duration};

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::reconciler::Applied;
use crate::{
    desired::{Desired, Tally},
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

/// Every backend address of the applied state ([`Tally`]); the first
/// addresses, resolved before the first apply, stand until the first
/// applied state says which of them are in use.
struct Backends {
    tally: Tally<IpAddr>,
    first: Option<BTreeSet<IpAddr>>,
}

impl Backends {
    fn new(first: &[IpAddr]) -> Self {
        Self {
            tally: Tally::new(|_, spec| spec.backends.keys().copied().collect()),
            first: Some(first.iter().copied().collect()),
        }
    }

    /// Takes the applied state `now`: the addresses it adds, and whether
    /// any went.
    fn update(&mut self, now: Arc<Desired>) -> (Vec<IpAddr>, bool) {
        let (mut new, went) = self.tally.update(&now.services);
        let mut gone = !went.is_empty();
        if let Some(first) = self.first.take() {
            new.retain(|a| !first.contains(a));
            gone |= first.iter().any(|a| !self.tally.contains(a));
        }
        (new, gone)
    }

    /// Every address, sorted.
    fn all(&self) -> Vec<IpAddr> {
        match &self.first {
            Some(first) => first.iter().copied().collect(),
            None => self.tally.keys().copied().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{desired::ServiceSpec, vip::Vip};

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
                    announce: Default::default(),
                    health: None,
                    table: Default::default(),
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
