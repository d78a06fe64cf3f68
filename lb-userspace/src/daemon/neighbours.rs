//! The neighbour keeper: the task that keeps every backend's next hop in
//! the kernel's neighbour table, because XDP can only read that table (see
//! `neigh`). It resolves the first backends before the first apply, then
//! asks for new backends as soon as they are applied and refreshes all of
//! them every few seconds.

use std::{net::IpAddr, time::Duration};

use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::reconciler::Applied;
use crate::neigh::{self, Reachability};

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
    let mut known = first;
    let mut every = tokio::time::interval(REFRESH);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.reset();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {
                let r = neigh::touch(&known).await;
                record(&mut reach, &known, r);
            }
            Ok(()) = applied.changed() => {
                let now = applied.borrow_and_update().backends();
                let new: Vec<IpAddr> = now
                    .iter()
                    .filter(|a| known.binary_search(a).is_err())
                    .copied()
                    .collect();
                reach.retain(&now);
                known = now;
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
