//! The reconciler: the one owner of the data plane.
//!
//! It runs on a thread of its own, because starting a data plane (the
//! verifier, attaching) and applying a large desired state are long
//! blocking calls that must not stall tokio's workers. It merges what the
//! sources publish (the config file's VIPs win over Kubernetes'), applies the
//! result, and publishes what it applied and how reconciling goes through
//! `watch` channels. Everything else that needs the data plane (a metrics
//! scrape, the health check) asks it through [`DataplaneHandle`], answered
//! between two applies: no lock is ever held across an apply.

use std::{
    collections::BTreeSet,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{
    runtime::Handle,
    sync::{mpsc, oneshot, watch},
};
use tokio_util::sync::CancellationToken;

use super::file_source::FileState;
use crate::{
    dataplane::{self, Dataplane, DataplaneError, Start},
    desired::{Desired, Services},
    health::gate::{self, Down},
    kubernetes::Outcome,
    metrics::Snapshot,
    vip::Vip,
};

/// After a failed apply, the next try comes this long after the previous
/// one, doubling up to [`RETRY_MAX`], unless a source changes first.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Map writes from which an apply hands its freed memory back.
const BIG_APPLY: usize = 10_000;

/// What the data plane holds, as last applied successfully.
#[derive(Clone, Debug, Default)]
pub(super) struct Applied {
    /// The merged desired state, as configured: backends the health
    /// checker holds down included (the data plane serves it without them,
    /// and the checker keeps probing them).
    pub(super) desired: Arc<Desired>,
    /// What the data plane serves: `desired` without the backends held
    /// down (what the `bgp` announcer gates on).
    pub(super) served: Arc<Desired>,
    /// The VIPs served only because their check fails open (every
    /// backend held down): the `bgp` announcer withdraws them.
    pub(super) failing_open: Arc<BTreeSet<Vip>>,
    /// `[announce.bgp] announce_fail_open` of the config file applied (a
    /// reload changes it).
    pub(super) announce_fail_open: bool,
    /// The Kubernetes part it included (remembered across restarts).
    pub(super) kubernetes: Arc<Outcome>,
}

/// How reconciling goes: the metrics and the health check read it.
#[derive(Clone, Debug, Default)]
pub(super) struct Progress {
    /// Applies that succeeded.
    pub(super) reconciles: u64,
    /// Applies that failed.
    pub(super) failures: u64,
    /// Unix time and duration of the last successful apply.
    pub(super) last_unix_seconds: f64,
    pub(super) last_seconds: f64,
    /// Why the latest apply failed; `None` once one succeeds.
    pub(super) failing: Option<String>,
}

/// Why the data plane could not answer a query.
#[derive(Debug, thiserror::Error)]
pub(super) enum QueryError {
    #[error("the reconciler has stopped")]
    Stopped,
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
}

enum Query {
    Snapshot(oneshot::Sender<Result<Snapshot, DataplaneError>>),
    Health(oneshot::Sender<Result<(), DataplaneError>>),
}

/// Asks the data plane's owner; for blocking contexts (the metrics server
/// calls it on tokio's blocking pool).
#[derive(Clone)]
pub(super) struct DataplaneHandle(mpsc::Sender<Query>);

impl DataplaneHandle {
    pub(super) fn snapshot(&self) -> Result<Snapshot, QueryError> {
        self.ask(Query::Snapshot)
    }

    /// Whether the data plane is in place (XDP: still attached to every
    /// interface it was attached to).
    pub(super) fn health(&self) -> Result<(), QueryError> {
        self.ask(Query::Health)
    }

    fn ask<T>(
        &self,
        query: impl FnOnce(oneshot::Sender<Result<T, DataplaneError>>) -> Query,
    ) -> Result<T, QueryError> {
        let (tx, rx) = oneshot::channel();
        self.0
            .blocking_send(query(tx))
            .map_err(|_| QueryError::Stopped)?;
        Ok(rx.blocking_recv().map_err(|_| QueryError::Stopped)??)
    }
}

/// What the reconciler applies: the sources' receivers.
pub(super) struct Sources {
    pub(super) file: watch::Receiver<Arc<FileState>>,
    /// `None` without the Kubernetes source.
    pub(super) kubernetes: Option<watch::Receiver<Option<Arc<Outcome>>>>,
    /// The Kubernetes part served until the source has synced (what was
    /// applied before a restart).
    pub(super) remembered: Arc<Outcome>,
    /// Resolves once the backends' neighbours have been asked for, so the
    /// first flows are not dropped while ARP is in flight.
    pub(super) neighbours_ready: oneshot::Receiver<()>,
    /// The backends the health checker holds down.
    pub(super) down: watch::Receiver<Arc<Down>>,
}

/// How the reconciler's start went: the data plane, then the first apply.
pub(super) struct Starting {
    pub(super) dataplane: oneshot::Receiver<Result<Started, DataplaneError>>,
    /// A state the data plane refuses at start ends the daemon (there is
    /// no previous state to keep serving); later refusals are retried.
    pub(super) first_apply: oneshot::Receiver<Result<(), DataplaneError>>,
}

/// The data plane chosen at start, and why.
#[derive(Clone, Debug)]
pub(super) struct Started {
    pub(super) name: &'static str,
    pub(super) reason: String,
}

/// The running reconciler.
pub(super) struct Reconciler {
    thread: std::thread::JoinHandle<()>,
    pub(super) handle: DataplaneHandle,
    pub(super) applied: watch::Receiver<Applied>,
    pub(super) progress: watch::Receiver<Progress>,
}

/// What starting the data plane needs, owned (it moves to the thread).
pub(super) struct Plan {
    pub(super) mode: crate::config::DataplaneMode,
    pub(super) settings: crate::xdp::Settings,
    pub(super) interfaces: Vec<String>,
    pub(super) xdp_mode: crate::config::XdpMode,
    pub(super) state_dir: std::path::PathBuf,
}

impl Reconciler {
    /// Starts the thread: it starts the data plane (the returned receiver
    /// says how that went), then applies until `stop`.
    pub(super) fn spawn(
        plan: Plan,
        sources: Sources,
        stop: CancellationToken,
    ) -> std::io::Result<(Self, Starting)> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (first_tx, first_rx) = oneshot::channel();
        let (query_tx, query_rx) = mpsc::channel(16);
        let (applied_tx, applied) = watch::channel(Applied::default());
        let (progress_tx, progress) = watch::channel(Progress::default());
        let rt = Handle::current();
        let thread = std::thread::Builder::new()
            .name("xlb-reconciler".into())
            .spawn(move || {
                let start = Start {
                    settings: &plan.settings,
                    interfaces: &plan.interfaces,
                    xdp_mode: plan.xdp_mode,
                    state_dir: &plan.state_dir,
                };
                let dp = match dataplane::select(plan.mode, &start) {
                    Ok((dp, reason)) => {
                        let name = dp.name();
                        let _ = ready_tx.send(Ok(Started { name, reason }));
                        dp
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let worker = Worker {
                    dp,
                    k8s_part: sources.remembered.clone(),
                    sources,
                    queries: query_rx,
                    applied: applied_tx,
                    progress: progress_tx,
                    retry: None,
                };
                worker.run(&rt, &stop, first_tx);
            })?;
        Ok((
            Self {
                thread,
                handle: DataplaneHandle(query_tx),
                applied,
                progress,
            },
            Starting {
                dataplane: ready_rx,
                first_apply: first_rx,
            },
        ))
    }

    /// Waits (up to `limit`) for the thread to finish its apply in progress
    /// and stop; it stops on the token given to `spawn`.
    pub(super) async fn join(self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                tracing::warn!(
                    "the reconciler did not stop within {limit:?}; leaving it to the exit"
                );
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = self.thread.join();
    }
}

enum Event {
    Stop,
    Changed,
    Query(Query),
    Retry,
}

struct Worker {
    dp: Box<dyn Dataplane>,
    sources: Sources,
    /// The Kubernetes part in use: remembered, then the source's latest.
    k8s_part: Arc<Outcome>,
    queries: mpsc::Receiver<Query>,
    applied: watch::Sender<Applied>,
    progress: watch::Sender<Progress>,
    /// When to try again after a failed apply, and the wait after that.
    retry: Option<(tokio::time::Instant, Duration)>,
}

impl Worker {
    fn run(
        mut self,
        rt: &Handle,
        stop: &CancellationToken,
        first: oneshot::Sender<Result<(), DataplaneError>>,
    ) {
        let ready = rt.block_on(async {
            tokio::select! {
                () = stop.cancelled() => false,
                _ = &mut self.sources.neighbours_ready => true,
            }
        });
        if !ready {
            return;
        }
        let applied = self.apply();
        let failed = applied.is_err();
        let _ = first.send(applied);
        if failed {
            return;
        }
        loop {
            match rt.block_on(self.next(stop)) {
                Event::Stop => return,
                Event::Changed | Event::Retry => {
                    if let Err(e) = self.apply() {
                        let wait = self.retry.map_or(RETRY_FIRST, |(_, w)| w);
                        tracing::error!(
                            "applying the new config failed part-way (the previous state keeps serving; retrying in {wait:?}, or at the next change): {e}"
                        );
                    }
                }
                Event::Query(q) => self.answer(q),
            }
        }
    }

    async fn next(&mut self, stop: &CancellationToken) -> Event {
        let retry = self.retry.map(|(at, _)| at);
        let k8s = self.sources.kubernetes.as_mut();
        tokio::select! {
            biased;
            () = stop.cancelled() => Event::Stop,
            Some(q) = self.queries.recv() => Event::Query(q),
            Ok(()) = self.sources.file.changed() => Event::Changed,
            Some(()) = changed(k8s) => Event::Changed,
            Ok(()) = self.sources.down.changed() => Event::Changed,
            () = sleep_until(retry) => Event::Retry,
        }
    }

    fn answer(&mut self, q: Query) {
        match q {
            Query::Snapshot(tx) => {
                let _ = tx.send(self.dp.snapshot());
            }
            Query::Health(tx) => {
                let _ = tx.send(self.dp.health());
            }
        }
    }

    /// Merges the sources' latest and applies only what differs.
    fn apply(&mut self) -> Result<(), DataplaneError> {
        let file = self.sources.file.borrow_and_update().clone();
        if let Some(k) = &mut self.sources.kubernetes
            && let Some(outcome) = k.borrow_and_update().clone()
        {
            self.k8s_part = outcome;
        }
        let desired = merge(&file.desired, &self.k8s_part.services);
        let down = self.sources.down.borrow_and_update().clone();
        let gate::Gated {
            served,
            failing_open,
        } = gate::gate(&desired, &down);
        let started = Instant::now();
        match self.dp.apply(&served) {
            Ok(report) => {
                let took = started.elapsed().as_secs_f64();
                tracing::info!(
                    vips = desired.services.len(),
                    added = report.vips_added,
                    removed = report.vips_removed,
                    changed = report.vips_changed,
                    writes = report.writes(),
                    seconds = took,
                    "reconciled"
                );
                self.retry = None;
                self.progress.send_modify(|p| {
                    p.reconciles += 1;
                    p.last_unix_seconds = unix_now();
                    p.last_seconds = took;
                    p.failing = None;
                });
                self.applied.send_replace(Applied {
                    desired: Arc::new(desired),
                    served: Arc::new(served),
                    failing_open: Arc::new(failing_open),
                    announce_fail_open: file.config.announce.bgp.announce_fail_open,
                    kubernetes: self.k8s_part.clone(),
                });
                // A large apply (a start, a resync) leaves its scratch freed.
                if report.writes() >= BIG_APPLY {
                    crate::heap::trim();
                }
                Ok(())
            }
            Err(e) => {
                let wait = self
                    .retry
                    .map_or(RETRY_FIRST, |(_, w)| (w * 2).min(RETRY_MAX));
                self.retry = Some((tokio::time::Instant::now() + wait, wait));
                self.progress.send_modify(|p| {
                    p.failures += 1;
                    p.failing = Some(e.to_string());
                });
                Err(e)
            }
        }
    }
}

async fn changed(rx: Option<&mut watch::Receiver<Option<Arc<Outcome>>>>) -> Option<()> {
    match rx {
        Some(rx) => rx.changed().await.ok(),
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`; for ever when `None` (a `select!` arm that never fires).
pub(super) async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub(super) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The config file's VIPs with the Kubernetes ones; the config file wins a
/// VIP both name (the source has already refused such Services).
pub(super) fn merge(statics: &Desired, k8s: &Services) -> Desired {
    // The larger map shared (O(1)), then the other's VIPs on top: a copy of
    // the larger would cost its every node again (about 190 bytes a VIP)
    // and its every insertion on each event.
    let mut services;
    if k8s.len() > statics.services.len() {
        services = k8s.clone();
        for (k, v) in &statics.services {
            services.insert(*k, v.clone());
        }
    } else {
        services = statics.services.clone();
        for (k, v) in k8s {
            if !services.contains_key(k) {
                services.insert(*k, v.clone());
            }
        }
    }
    Desired {
        services,
        ipip_source_v4: statics.ipip_source_v4,
        ipip_source_v6: statics.ipip_source_v6,
    }
}

/// Every backend address of a desired state, sorted, once.
pub(super) fn backends(d: &Desired) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = d
        .services
        .values()
        .flat_map(|s| s.backends.keys().copied())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{desired::ServiceSpec, vip::Vip};

    fn vip(addr: &str) -> Vip {
        Vip {
            address: addr.parse().unwrap(),
            port: 80,
            protocol: lb_common::PROTO_TCP,
        }
    }

    fn spec(backends: &[&str]) -> ServiceSpec {
        ServiceSpec {
            encap: lb_common::Encap::Ipip,
            scheduler: "mh".into(),
            backends: Arc::new(backends.iter().map(|b| (b.parse().unwrap(), 1)).collect()),
            announce: Default::default(),
            health: None,
            table: Default::default(),
        }
    }

    #[test]
    fn the_config_file_wins_a_vip_both_sources_name() {
        let mut file = Desired::default();
        file.services.insert(vip("10.0.0.1"), spec(&["10.1.0.1"]));
        let k8s = Services::from_iter([
            (vip("10.0.0.1"), spec(&["10.2.0.1"])),
            (vip("10.0.0.2"), spec(&["10.2.0.2", "10.1.0.1"])),
        ]);
        let d = merge(&file, &k8s);
        assert_eq!(d.services[&vip("10.0.0.1")], spec(&["10.1.0.1"]));
        assert_eq!(
            d.services[&vip("10.0.0.2")],
            spec(&["10.2.0.2", "10.1.0.1"])
        );
        let addrs: Vec<String> = backends(&d).iter().map(ToString::to_string).collect();
        assert_eq!(addrs, ["10.1.0.1", "10.2.0.2"], "sorted, each once");

        // The same when the file has more VIPs (its map is the one shared).
        file.services.insert(vip("10.0.0.3"), spec(&["10.1.0.3"]));
        file.services.insert(vip("10.0.0.4"), spec(&["10.1.0.4"]));
        let d = merge(&file, &k8s);
        assert_eq!(d.services.len(), 4);
        assert_eq!(d.services[&vip("10.0.0.1")], spec(&["10.1.0.1"]));
        assert_eq!(
            d.services[&vip("10.0.0.2")],
            spec(&["10.2.0.2", "10.1.0.1"])
        );
        assert_eq!(d.services[&vip("10.0.0.4")], spec(&["10.1.0.4"]));
    }
}
