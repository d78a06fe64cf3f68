//! Leader election per VIP with `coordination.k8s.io/v1` Leases, the way
//! client-go's leaderelection does it: a Lease is free when its holder has
//! not changed it for a lease duration *as observed by this node's own
//! clock* (so clock skew between nodes does not matter), writes are
//! optimistic (the resourceVersion makes a lost race a 409), and a leader
//! that cannot renew within the renew deadline stops leading on its own,
//! before the lease can expire and another node take over.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use futures::StreamExt as _;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::api::{Api, PostParams};
use tokio::sync::watch;

use super::leadership::{Leader, Leadership};

/// Lease timings (see the `[kubernetes]` config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// How many Lease calls are in flight at once.
const CONCURRENCY: usize = 16;

/// The Lease of one VIP: `xlb-vip-10.0.0.1`, or 32 hex digits for IPv6
/// (colons are not allowed in names, and `::` could end a name with `-`).
pub fn lease_name(vip: IpAddr) -> String {
    match vip {
        IpAddr::V4(a) => format!("xlb-vip-{a}"),
        IpAddr::V6(a) => format!("xlb-vip-{:032x}", u128::from(a)),
    }
}

#[derive(Default)]
struct Tracked {
    leading: bool,
    holder: Option<String>,
    /// When this node last renewed (or took) the Lease.
    renewed: Option<Instant>,
    /// The Lease's resourceVersion and when this node first saw it: the
    /// holder is alive while the version keeps changing.
    observed: Option<(String, Instant)>,
}

pub struct Elector {
    api: Api<Lease>,
    identity: String,
    timing: Timing,
    vips: BTreeMap<IpAddr, Tracked>,
}

impl Elector {
    pub fn new(api: Api<Lease>, identity: String, timing: Timing) -> Self {
        Self {
            api,
            identity,
            timing,
            vips: BTreeMap::new(),
        }
    }

    /// Runs until `stop` fires, then releases every Lease it holds so the
    /// next leader need not wait for them to expire.
    pub async fn run(
        mut self,
        mut wanted: watch::Receiver<BTreeSet<IpAddr>>,
        publish: watch::Sender<Leadership>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(self.timing.retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                r = wanted.changed() => if r.is_err() { break },
                _ = stop.changed() => break,
            }
            let want = wanted.borrow_and_update().clone();
            self.round(&want).await;
            let now = self.leadership();
            publish.send_if_modified(|old| {
                let changed = *old != now;
                *old = now;
                changed
            });
        }
        self.release_all().await;
        publish.send_modify(|l| l.vips.values_mut().for_each(|v| v.leading = false));
    }

    fn leadership(&self) -> Leadership {
        Leadership {
            identity: self.identity.clone(),
            vips: self
                .vips
                .iter()
                .map(|(vip, t)| {
                    (
                        *vip,
                        Leader {
                            holder: t.holder.clone(),
                            leading: t.leading,
                        },
                    )
                })
                .collect(),
        }
    }

    /// One pass: let go of VIPs no longer wanted, try or renew the rest,
    /// then step down wherever the renew deadline has passed.
    async fn round(&mut self, want: &BTreeSet<IpAddr>) {
        let gone: Vec<IpAddr> = self
            .vips
            .keys()
            .filter(|v| !want.contains(v))
            .copied()
            .collect();
        for vip in gone {
            if self.vips.remove(&vip).is_some_and(|t| t.leading) {
                self.release(vip).await;
            }
        }
        for vip in want {
            self.vips.entry(*vip).or_default();
        }
        let inputs: Vec<(IpAddr, Option<(String, Instant)>)> = self
            .vips
            .iter()
            .map(|(vip, t)| (*vip, t.observed.clone()))
            .collect();
        let timing = self.timing;
        // Owned per call: borrowed futures in a buffered stream do not make a
        // `Send` task.
        let results: Vec<_> = futures::stream::iter(inputs)
            .map(|(vip, observed)| {
                let api = self.api.clone();
                let identity = self.identity.clone();
                async move {
                    let r = tokio::time::timeout(
                        timing.retry_period,
                        try_acquire_or_renew(&api, &identity, timing, vip, observed),
                    )
                    .await
                    .unwrap_or_else(|_| Err("timed out".to_owned()));
                    (vip, r)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let identity = self.identity.as_str();
        for (vip, r) in results {
            let Some(t) = self.vips.get_mut(&vip) else {
                continue;
            };
            match r {
                Ok(seen) => {
                    if seen.holder.as_deref() == Some(identity) {
                        if !t.leading {
                            tracing::info!(%vip, "leading this VIP");
                        }
                        t.leading = true;
                        t.renewed = Some(Instant::now());
                    } else if t.leading {
                        tracing::warn!(%vip, holder = ?seen.holder, "lost the VIP's Lease");
                        t.leading = false;
                    }
                    t.holder = seen.holder;
                    t.observed = seen.observed;
                }
                Err(e) => tracing::warn!(%vip, lease = lease_name(vip), "Lease: {e}"),
            }
            if t.leading
                && t.renewed
                    .is_none_or(|r| r.elapsed() > self.timing.renew_deadline)
            {
                tracing::warn!(
                    %vip,
                    deadline_ms = self.timing.renew_deadline.as_millis() as u64,
                    "could not renew the VIP's Lease within the renew deadline: stepping down"
                );
                t.leading = false;
            }
        }
    }

    async fn release_all(&mut self) {
        let held: Vec<IpAddr> = self
            .vips
            .iter()
            .filter(|(_, t)| t.leading)
            .map(|(v, _)| *v)
            .collect();
        for vip in held {
            self.release(vip).await;
            if let Some(t) = self.vips.get_mut(&vip) {
                t.leading = false;
            }
        }
    }

    /// Hands a held Lease back: no holder, so others may take it at once.
    async fn release(&self, vip: IpAddr) {
        let name = lease_name(vip);
        let r = tokio::time::timeout(self.timing.retry_period, async {
            let Some(mut lease) = self.api.get_opt(&name).await? else {
                return Ok(());
            };
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            self.api
                .replace(&name, &PostParams::default(), &lease)
                .await
                .map(|_| ())
        })
        .await;
        match r {
            Ok(Ok(())) => tracing::info!(%vip, "released the VIP's Lease"),
            Ok(Err(e)) => tracing::warn!(%vip, "releasing the VIP's Lease: {e}"),
            Err(_) => tracing::warn!(%vip, "releasing the VIP's Lease: timed out"),
        }
    }
}

/// What one attempt saw.
struct Seen {
    holder: Option<String>,
    observed: Option<(String, Instant)>,
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    identity: &str,
    timing: Timing,
    vip: IpAddr,
    observed: Option<(String, Instant)>,
) -> Result<Seen, String> {
    let name = lease_name(vip);
    let now = MicroTime(Timestamp::now());
    let seconds =
        i32::try_from(timing.lease_duration.as_millis().div_ceil(1000)).unwrap_or(i32::MAX);
    let lease = api.get_opt(&name).await.map_err(|e| e.to_string())?;
    let Some(mut lease) = lease else {
        let fresh = Lease {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                annotations: Some([("xlb.io/vip".to_owned(), vip.to_string())].into()),
                labels: Some(
                    [("app.kubernetes.io/managed-by".to_owned(), "xlb".to_owned())].into(),
                ),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_owned()),
                lease_duration_seconds: Some(seconds),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &fresh).await {
            Ok(l) => Ok(seen(&l)),
            // Another node created it first: follow it.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Seen {
                holder: None,
                observed: None,
            }),
            Err(e) => Err(e.to_string()),
        };
    };
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    let observed = match observed {
        Some((v, at)) if v == version => (v, at),
        _ => (version, Instant::now()),
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let their_duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(timing.lease_duration, Duration::from_secs);
    let mine = holder.as_deref() == Some(identity);
    let expired = holder.is_none() || observed.1.elapsed() > their_duration;
    if !mine && !expired {
        return Ok(Seen {
            holder,
            observed: Some(observed),
        });
    }
    if !mine {
        spec.holder_identity = Some(identity.to_owned());
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        tracing::info!(%vip, previous = ?holder, "taking over the VIP's Lease");
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(seconds);
    match api.replace(&name, &PostParams::default(), &lease).await {
        Ok(l) => Ok(seen(&l)),
        // Someone wrote it since we read it; look again next round.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Seen {
            holder: if mine { None } else { holder },
            observed: None,
        }),
        Err(e) => Err(e.to_string()),
    }
}

fn seen(l: &Lease) -> Seen {
    Seen {
        holder: l
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        observed: l
            .metadata
            .resource_version
            .clone()
            .map(|v| (v, Instant::now())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_are_valid_object_names() {
        assert_eq!(
            lease_name("10.99.200.1".parse().unwrap()),
            "xlb-vip-10.99.200.1"
        );
        assert_eq!(
            lease_name("fd00::".parse().unwrap()),
            "xlb-vip-fd000000000000000000000000000000"
        );
    }
}
