//! Who announces which VIP, decided with `coordination.k8s.io/v1` Leases
//! whose number does not grow with the number of VIPs.
//!
//! - **Buckets.** A VIP belongs to bucket `hash(address) mod buckets` (a
//!   fixed hash: the same on every node); one Lease per bucket,
//!   `xlb-bucket-<n>`, and its holder announces every VIP of the bucket.
//! - **Members.** Each router renews a Lease of its own, `xlb-router-<id>`,
//!   so the others know how many routers share the buckets.
//! - **One list per round.** Every retry period a router lists xlb's Leases
//!   (one request), renews its member Lease and the buckets it holds, and
//!   takes free ones: a few requests per round, whatever the number of VIPs.
//! - **Liveness as client-go sees it**: a Lease is held while its holder
//!   keeps changing it, judged by when *this* node saw its resourceVersion
//!   change (clock skew between nodes does not matter); writes are
//!   optimistic (a lost race is a 409, looked at again next round).
//! - **Spreading.** A router takes buckets nobody holds up to its share,
//!   `ceil(buckets in use / live routers)`, and hands back (releases) the
//!   buckets it holds beyond it; it does not take a bucket back for a Lease
//!   duration after handing it back, so another router does.
//! - **Fail-static.** A leader that cannot reach the API server keeps
//!   leading what it holds: every router forwards every VIP to the same
//!   backends (Maglev with a node-independent hash), so two routers
//!   announcing a VIP for a while is harmless, while none announcing it is
//!   an outage of the Service. It stops leading a bucket as soon as a read
//!   shows another holder.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::api::{Api, ListParams, PostParams};
use tokio::sync::watch;

use super::leadership::{Leader, Leadership};

/// Lease timings (see the `[kubernetes]` config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    /// How long a leader goes without a successful renewal before it says
    /// (once) that it is leading fail-static.
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// The label on every Lease xlb writes; the one list selects it.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "xlb");
const BUCKET_PREFIX: &str = "xlb-bucket-";
const MEMBER_PREFIX: &str = "xlb-router-";
/// Seed of the bucket hash (any change moves every VIP to another bucket).
const BUCKET_SEED: u32 = 0x786c_6262; // "xlbb"

/// The bucket of a VIP: the same on every node.
pub fn bucket_of(vip: IpAddr, buckets: u32) -> u32 {
    lb_common::hash::addr_hash(&crate::maglev::addr_bytes(vip), BUCKET_SEED) % buckets.max(1)
}

pub fn bucket_lease(bucket: u32) -> String {
    format!("{BUCKET_PREFIX}{bucket}")
}

/// The member Lease of a router. Node names are DNS subdomains of up to
/// 253 characters; longer results keep a prefix and a hash of the rest.
pub fn member_lease(identity: &str) -> String {
    let name = format!("{MEMBER_PREFIX}{identity}");
    if name.len() <= 253 {
        return name;
    }
    let mut h = [0u8; 16];
    for (i, b) in identity.bytes().enumerate() {
        h[i % 16] ^= b;
    }
    let tail = lb_common::hash::addr_hash(&h, BUCKET_SEED);
    format!("{}-{tail:08x}", &name[..240])
}

/// What this node saw of one Lease.
struct Seen {
    holder: Option<String>,
    /// The resourceVersion, and when this node first saw it.
    version: String,
    since: Instant,
    /// The holder's lease duration.
    duration: Duration,
}

impl Seen {
    /// Held by a live holder: it changed the Lease within its duration.
    fn live(&self, me: &str) -> bool {
        match &self.holder {
            None => false,
            Some(h) if h == me => true,
            Some(_) => self.since.elapsed() <= self.duration,
        }
    }
}

pub struct Elector {
    api: Api<Lease>,
    identity: String,
    timing: Timing,
    buckets: u32,
    /// Every xlb Lease as last listed, by name.
    seen: BTreeMap<String, Seen>,
    /// Buckets this node leads.
    leading: BTreeSet<u32>,
    /// The live routers (member Leases) as of the last list, this one
    /// included.
    routers: BTreeSet<String>,
    /// Buckets handed back, and when: not taken again for a Lease duration.
    handed_back: BTreeMap<u32, Instant>,
    vips: BTreeSet<IpAddr>,
    /// The last successful list: how long the API server has been away.
    last_list: Option<Instant>,
    said_fail_static: bool,
    /// Failures warned about in the previous round: a failure that repeats
    /// every round (a missing namespace, a denied verb) is said once.
    warned: BTreeSet<String>,
}

impl Elector {
    pub fn new(api: Api<Lease>, identity: String, timing: Timing, buckets: u32) -> Self {
        Self {
            api,
            identity,
            timing,
            buckets: buckets.max(1),
            seen: BTreeMap::new(),
            leading: BTreeSet::new(),
            routers: BTreeSet::new(),
            handed_back: BTreeMap::new(),
            vips: BTreeSet::new(),
            last_list: None,
            said_fail_static: false,
            warned: BTreeSet::new(),
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
            self.vips = wanted.borrow_and_update().clone();
            self.round().await;
            let now = self.leadership();
            publish.send_if_modified(|old| {
                let changed = *old != now;
                *old = now;
                changed
            });
        }
        self.release_all().await;
        publish.send_modify(|l| {
            l.vips.values_mut().for_each(|v| v.leading = false);
            l.routers.clear();
        });
    }

    fn leadership(&self) -> Leadership {
        let holder = |b: u32| {
            self.seen
                .get(&bucket_lease(b))
                .and_then(|s| s.holder.clone())
        };
        Leadership {
            identity: self.identity.clone(),
            routers: self.routers.clone(),
            vips: self
                .vips
                .iter()
                .map(|vip| {
                    let b = bucket_of(*vip, self.buckets);
                    let leading = self.leading.contains(&b);
                    (
                        *vip,
                        Leader {
                            holder: if leading {
                                Some(self.identity.clone())
                            } else {
                                holder(b)
                            },
                            leading,
                        },
                    )
                })
                .collect(),
        }
    }

    /// One round: list, renew this node's member Lease, renew or take
    /// buckets, hand back what is beyond the share.
    async fn round(&mut self) {
        let listed = tokio::time::timeout(
            self.timing.retry_period,
            self.api
                .list(&ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1))),
        )
        .await;
        let leases = match listed {
            Ok(Ok(l)) => l.items,
            Ok(Err(e)) => return self.unreachable(&e.to_string()),
            Err(_) => return self.unreachable("timed out"),
        };
        self.last_list = Some(Instant::now());
        if self.said_fail_static {
            tracing::info!("the API server answers again: Leases are renewed");
            self.said_fail_static = false;
        }
        self.observe(&leases);
        let by_name: BTreeMap<String, Lease> = leases
            .into_iter()
            .filter_map(|l| Some((l.metadata.name.clone()?, l)))
            .collect();

        let me = self.identity.clone();
        let member = member_lease(&me);
        let mut failed = BTreeSet::new();
        match self.write(&member, by_name.get(&member), None).await {
            Ok(()) => {}
            Err(Write::NoNamespace) => {
                failed.insert(Write::NoNamespace.to_string());
            }
            Err(e) => {
                failed.insert(format!("writing the Lease {member}: {e}"));
            }
        }
        self.routers = self
            .seen
            .iter()
            .filter(|(name, s)| name.starts_with(MEMBER_PREFIX) && s.live(&me))
            .filter_map(|(_, s)| s.holder.clone())
            .chain(std::iter::once(me.clone()))
            .collect();
        let routers = self.routers.len();
        let active: BTreeSet<u32> = self
            .vips
            .iter()
            .map(|v| bucket_of(*v, self.buckets))
            .collect();
        let share = active.len().div_ceil(routers);
        self.handed_back
            .retain(|_, at| at.elapsed() < self.timing.lease_duration);

        // Buckets held that are no longer in use, or beyond the share (the
        // highest numbers first).
        let held: Vec<u32> = (0..self.buckets)
            .filter(|b| {
                self.seen
                    .get(&bucket_lease(*b))
                    .is_some_and(|s| s.holder.as_deref() == Some(me.as_str()))
            })
            .collect();
        let in_use: Vec<u32> = held
            .iter()
            .copied()
            .filter(|b| active.contains(b))
            .collect();
        let excess: BTreeSet<u32> = in_use
            .iter()
            .rev()
            .take(in_use.len().saturating_sub(share))
            .copied()
            .collect();
        for b in held
            .iter()
            .filter(|b| !active.contains(b) || excess.contains(b))
        {
            let name = bucket_lease(*b);
            self.leading.remove(b);
            if let Err(e) = self.release(&name, by_name.get(&name)).await {
                tracing::warn!(lease = %name, "handing the bucket back: {e}");
            } else if active.contains(b) {
                tracing::info!(
                    bucket = b,
                    share,
                    routers,
                    "handed a bucket back to spread the load"
                );
                self.handed_back.insert(*b, Instant::now());
            }
        }

        // Free buckets are taken up to the share: routers at their share
        // leave the rest to the others, so the spread settles in a few
        // rounds instead of buckets going back and forth. (With N live
        // routers, N shares cover every bucket in use.)
        let mut holding = in_use.len() - excess.len();
        for b in active {
            if excess.contains(&b) {
                continue;
            }
            let name = bucket_lease(b);
            let seen = self.seen.get(&name);
            let mine = seen.is_some_and(|s| s.holder.as_deref() == Some(me.as_str()));
            let free = seen.is_none_or(|s| !s.live(&me));
            let takeable = free && !self.handed_back.contains_key(&b) && holding < share;
            if !mine && takeable {
                holding += 1;
            }
            if !mine && !takeable {
                // Another live holder (or one this node just handed it to).
                if self.leading.remove(&b) {
                    tracing::warn!(bucket = b, holder = ?seen.and_then(|s| s.holder.clone()), "another router holds the bucket: no longer leading it");
                }
                continue;
            }
            match self.write(&name, by_name.get(&name), Some(b)).await {
                Ok(()) => {
                    if self.leading.insert(b) {
                        tracing::info!(bucket = b, "leading this bucket's VIPs");
                    }
                }
                // Someone wrote it since the list: looked at next round.
                Err(Write::Conflict) => {}
                // Fail-static: a holder keeps leading through API errors.
                Err(Write::Failed(e)) => {
                    failed.insert(format!("writing the Lease {name}: {e}"));
                }
                Err(Write::NoNamespace) => {
                    failed.insert(Write::NoNamespace.to_string());
                }
            }
        }
        // The Leases of one failure cause are one line: a namespace that does
        // not exist fails every Lease the same way.
        for line in &failed {
            if !self.warned.contains(line) {
                tracing::warn!("{line} (said once while it lasts)");
            }
        }
        self.warned = failed;
    }

    /// The list failed: nothing is known, nothing changes (fail-static).
    fn unreachable(&mut self, why: &str) {
        let away = self.last_list.map_or(Duration::MAX, |t| t.elapsed());
        if !self.leading.is_empty() && away > self.timing.renew_deadline && !self.said_fail_static {
            tracing::warn!(
                buckets = self.leading.len(),
                "the API server has not answered for {away:?} ({why}): still leading what this router holds (fail-static) until a read shows another holder"
            );
            self.said_fail_static = true;
        } else {
            tracing::debug!("listing Leases: {why}");
        }
    }

    /// Records what the list showed: versions, holders, and when each
    /// version was first seen.
    fn observe(&mut self, leases: &[Lease]) {
        let mut next = BTreeMap::new();
        for l in leases {
            let Some(name) = l.metadata.name.clone() else {
                continue;
            };
            let version = l.metadata.resource_version.clone().unwrap_or_default();
            let spec = l.spec.as_ref();
            let since = match self.seen.get(&name) {
                Some(s) if s.version == version => s.since,
                _ => Instant::now(),
            };
            next.insert(
                name,
                Seen {
                    holder: spec
                        .and_then(|s| s.holder_identity.clone())
                        .filter(|h| !h.is_empty()),
                    version,
                    since,
                    duration: spec
                        .and_then(|s| s.lease_duration_seconds)
                        .and_then(|s| u64::try_from(s).ok())
                        .map_or(self.timing.lease_duration, Duration::from_secs),
                },
            );
        }
        self.seen = next;
    }

    /// Takes or renews Lease `name` (`old` as listed, `None` if absent) for
    /// this node.
    async fn write(
        &self,
        name: &str,
        old: Option<&Lease>,
        bucket: Option<u32>,
    ) -> Result<(), Write> {
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.timing.lease_duration.as_millis().div_ceil(1000))
            .unwrap_or(i32::MAX);
        let me = self.identity.as_str();
        let call = async {
            match old {
                None => {
                    let mut annotations = BTreeMap::new();
                    if let Some(b) = bucket {
                        annotations.insert("xlb.io/bucket".to_owned(), b.to_string());
                    }
                    let fresh = Lease {
                        metadata: ObjectMeta {
                            name: Some(name.to_owned()),
                            annotations: Some(annotations),
                            labels: Some(
                                [(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into(),
                            ),
                            ..Default::default()
                        },
                        spec: Some(LeaseSpec {
                            holder_identity: Some(me.to_owned()),
                            lease_duration_seconds: Some(seconds),
                            acquire_time: Some(now.clone()),
                            renew_time: Some(now),
                            lease_transitions: Some(0),
                            ..Default::default()
                        }),
                    };
                    self.api
                        .create(&PostParams::default(), &fresh)
                        .await
                        .map(drop)
                }
                Some(old) => {
                    let mut lease = old.clone();
                    let spec = lease.spec.get_or_insert_with(Default::default);
                    if spec.holder_identity.as_deref() != Some(me) {
                        let previous = spec.holder_identity.clone();
                        spec.holder_identity = Some(me.to_owned());
                        spec.acquire_time = Some(now.clone());
                        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                        if bucket.is_some() {
                            tracing::info!(lease = name, ?previous, "taking over the Lease");
                        }
                    }
                    spec.renew_time = Some(now);
                    spec.lease_duration_seconds = Some(seconds);
                    self.api
                        .replace(name, &PostParams::default(), &lease)
                        .await
                        .map(drop)
                }
            }
        };
        self.timed(call, old.is_none()).await
    }

    /// A Lease write (a create when `creating`), bounded by the retry
    /// period, its failure classified.
    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, kube::Error>>,
        creating: bool,
    ) -> Result<(), Write> {
        match tokio::time::timeout(self.timing.retry_period, call).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Err(Write::Conflict),
            // Creating in a namespace that does not exist.
            Ok(Err(kube::Error::Api(s))) if s.code == 404 && creating => Err(Write::NoNamespace),
            Ok(Err(e)) => Err(Write::Failed(e.to_string())),
            Err(_) => Err(Write::Failed("timed out".to_owned())),
        }
    }

    /// Hands Lease `name` back: no holder, so others may take it at once.
    async fn release(&self, name: &str, listed: Option<&Lease>) -> Result<(), Write> {
        let Some(listed) = listed else {
            return Ok(());
        };
        let mut lease = listed.clone();
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        let params = PostParams::default();
        self.timed(self.api.replace(name, &params, &lease), false)
            .await
    }

    /// On shutdown: every Lease this node holds, buckets and member, read
    /// afresh and handed back.
    async fn release_all(&mut self) {
        let mut names: Vec<String> = self.leading.iter().map(|b| bucket_lease(*b)).collect();
        names.push(member_lease(&self.identity));
        self.leading.clear();
        for name in names {
            let r = tokio::time::timeout(self.timing.retry_period, self.api.get_opt(&name)).await;
            let current = match r {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    tracing::warn!(lease = %name, "releasing the Lease: {e}");
                    continue;
                }
                Err(_) => {
                    tracing::warn!(lease = %name, "releasing the Lease: timed out");
                    continue;
                }
            };
            match self.release(&name, current.as_ref()).await {
                Ok(()) => tracing::info!(lease = %name, "released the Lease"),
                Err(Write::Conflict) => {
                    tracing::warn!(lease = %name, "releasing the Lease: changed meanwhile")
                }
                Err(e) => tracing::warn!(lease = %name, "releasing the Lease: {e}"),
            }
        }
    }
}

/// Why a Lease write did not happen.
enum Write {
    /// Written by someone else since it was read (HTTP 409).
    Conflict,
    /// Created in a namespace that does not exist (HTTP 404).
    NoNamespace,
    Failed(String),
}

impl std::fmt::Display for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Conflict => f.write_str("changed by another router meanwhile (409)"),
            Self::NoNamespace => f.write_str(
                "the Lease namespace does not exist: create it (deploy/namespace.yaml creates \
                 xlb-system) or set kubernetes.lease_namespace to the DaemonSet's namespace",
            ),
            Self::Failed(e) => f.write_str(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_spread() {
        let b = |s: &str| bucket_of(s.parse().unwrap(), 32);
        // Fixed: every node, every version agrees (a change moves VIPs).
        assert_eq!(b("10.99.200.1"), b("10.99.200.1"));
        let mut per = [0u32; 32];
        for i in 0..32_000u32 {
            per[bucket_of(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)), 32) as usize] +=
                1;
        }
        assert!(
            per.iter().all(|&n| (800..=1200).contains(&n)),
            "uneven buckets: {per:?}"
        );
        assert_eq!(bucket_of("fd00::1".parse().unwrap(), 1), 0);
    }

    #[test]
    fn lease_names_are_valid_object_names() {
        assert_eq!(bucket_lease(7), "xlb-bucket-7");
        assert_eq!(member_lease("node-a"), "xlb-router-node-a");
        let long = "a".repeat(253);
        let name = member_lease(&long);
        assert!(name.len() <= 253, "{}", name.len());
        assert_ne!(name, member_lease(&"b".repeat(253)));
    }
}
