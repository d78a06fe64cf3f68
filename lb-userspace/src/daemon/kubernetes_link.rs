//! The tasks that link the Kubernetes source to the rest of the daemon:
//! what the elector must hold Leases for, what is remembered across
//! restarts, and the leadership file `xlb status` reads.

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{file_source::FileState, reconciler::Applied};
use crate::{
    desired::{Services, Tally},
    kubernetes::{self, ElectorInputs, LeaderFeed, Outcome},
};

/// The Kubernetes part changes often; it is saved at most this often.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Feeds the elector: a Lease for every VIP address the data plane holds,
/// and the config file's VIPs (which win conflicts with Services).
pub(super) async fn feed_elector(
    inputs: ElectorInputs,
    mut applied: watch::Receiver<Applied>,
    mut file: watch::Receiver<Arc<FileState>>,
    stop: CancellationToken,
) {
    let mut addresses = VipAddresses::default();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            Ok(()) = applied.changed() => {
                let now = applied.borrow_and_update().desired.clone();
                if addresses.update(&now.services) {
                    inputs.set_vips(addresses.tally.keys().copied().collect());
                }
            }
            Ok(()) = file.changed() => {
                let statics = file.borrow_and_update().desired.services.keys().copied().collect();
                inputs.set_statics(statics);
            }
        }
    }
}

/// The VIP addresses of the applied state ([`Tally`]): an endpoint change
/// costs nothing here, and the elector's set is rebuilt only when an
/// address comes or goes.
struct VipAddresses {
    tally: Tally<IpAddr>,
}

impl Default for VipAddresses {
    fn default() -> Self {
        Self {
            tally: Tally::new(|vip, _| vec![vip.address]),
        }
    }
}

impl VipAddresses {
    /// Whether the set of addresses changed.
    fn update(&mut self, now: &Services) -> bool {
        let (came, went) = self.tally.update(now);
        !came.is_empty() || !went.is_empty()
    }
}

/// Saves the applied Kubernetes part in the state directory (see
/// `kubernetes::memory`), at most once a second and once more on stop.
pub(super) async fn remember(
    state_dir: PathBuf,
    mut applied: watch::Receiver<Applied>,
    stop: CancellationToken,
) {
    let mut saved: Option<Arc<Outcome>> = None;
    let mut every = tokio::time::interval(SAVE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            _ = every.tick() => false,
        };
        let now = applied.borrow_and_update().kubernetes.clone();
        let unchanged = saved.as_ref().is_some_and(|s| Arc::ptr_eq(s, &now));
        // Nothing applied yet: the remembered state on disk stays as it is.
        let nothing = now.services.is_empty() && saved.is_none();
        if !unchanged && !nothing {
            let dir = state_dir.clone();
            let part = now.clone();
            let r =
                tokio::task::spawn_blocking(move || kubernetes::memory::save(&dir, &part.services))
                    .await;
            match r {
                Ok(Ok(())) => saved = Some(now),
                Ok(Err(e)) => {
                    tracing::warn!("saving the Kubernetes VIPs in {}: {e}", state_dir.display())
                }
                Err(e) => tracing::warn!("saving the Kubernetes VIPs: {e}"),
            }
        }
        if stopping {
            return;
        }
    }
}

/// Keeps `<state_dir>/leaders.json` equal to what the elector publishes,
/// and removes it on stop (no daemon, no leadership to show).
pub(super) async fn write_leaders(
    state_dir: PathBuf,
    mut feed: LeaderFeed,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            next = feed.changed() => match next {
                Some(l) => {
                    if let Err(e) = l.write(&state_dir) {
                        tracing::warn!(
                            "writing {}: {e}",
                            state_dir.join(kubernetes::leadership::FILE).display()
                        );
                    }
                }
                None => break,
            },
        }
    }
    let _ = std::fs::remove_file(state_dir.join(kubernetes::leadership::FILE));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{desired::ServiceSpec, vip::Vip};

    fn vip(addr: &str, port: u16) -> Vip {
        Vip {
            address: addr.parse().unwrap(),
            port,
            protocol: lb_common::PROTO_TCP,
        }
    }

    fn spec(backend: &str) -> ServiceSpec {
        ServiceSpec {
            encap: lb_common::Encap::Ipip,
            scheduler: "mh".into(),
            backends: Arc::new([(backend.parse().unwrap(), 1)].into()),
            announce: Default::default(),
            health: None,
            table: Default::default(),
        }
    }

    #[test]
    fn the_address_set_changes_only_when_an_address_comes_or_goes() {
        let mut a = VipAddresses::default();
        let mut s = Services::new();
        s.insert(vip("10.0.0.1", 80), spec("10.1.0.1"));
        assert!(a.update(&s), "first address");
        s.insert(vip("10.0.0.1", 443), spec("10.1.0.1"));
        assert!(!a.update(&s), "a second port of the same address");
        s.insert(vip("10.0.0.1", 80), spec("10.1.0.2"));
        assert!(!a.update(&s), "new backends");
        s.remove(&vip("10.0.0.1", 80));
        assert!(!a.update(&s), "one of its two ports gone");
        s.remove(&vip("10.0.0.1", 443));
        assert!(a.update(&s), "its last port gone");
        assert_eq!(a.tally.keys().count(), 0);
    }
}
