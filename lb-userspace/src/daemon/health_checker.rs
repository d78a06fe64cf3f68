//! The health checker: a task that probes every backend of every VIP with
//! a check, keeps each backend's rise/fall state, and publishes the
//! backends it holds down. The reconciler takes them out of what it
//! applies ([`crate::health::gate`]); nothing else changes the data plane.
//!
//! It subscribes to the applied (configured) state, so a backend that is
//! down is still checked and comes back after `rise` passes. Probes run as
//! tasks of their own, each bounded by its timeout; this task alone owns
//! the states, the schedule and the probe paths.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use lb_common::Encap;
use tokio::{sync::watch, task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::reconciler::{Applied, sleep_until, unix_now};
use crate::{
    config::{HealthCheck, Probe as Kind, Via},
    desired::{ServiceSpec, Services},
    health::{
        gate::{self, Down, Fate},
        path::{PathSettings, ProbePaths, ProbeRoute},
        probe::{self, Ask, Failure, Probe},
        rp_filter,
        schedule::{self, Rng},
        status::{BackendHealth, HealthStatus},
        tracker::{State, Tracker},
    },
    vip::Vip,
};

/// How often the status (file, metrics) is refreshed when probes ran.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// A state change is published this soon at the latest: at once unless
/// another was published less than this ago (1,000 backends going down
/// together write the file ten times a second, not a thousand).
const PUBLISH_CHANGE_WITHIN: Duration = Duration::from_millis(100);

pub(super) struct Settings {
    /// The DSR path's device, mark and table; `None` when the data plane
    /// cannot carry DSR-path probes (IPVS routes the VIP locally, so a
    /// probe from this node would be balanced by IPVS itself).
    pub(super) dsr: Result<PathSettings, String>,
    /// Where DSR-path probes come from (and backends answer to).
    pub(super) source_v4: Option<Ipv4Addr>,
    pub(super) source_v6: Option<Ipv6Addr>,
    pub(super) state_dir: PathBuf,
    /// The data plane's interfaces, where the answers arrive.
    pub(super) interfaces: Vec<String>,
}

type Key = (Vip, IpAddr);

struct Target {
    check: Arc<HealthCheck>,
    probe: Arc<Probe>,
    /// The DSR path's entry, when probed through it.
    path_id: Option<u32>,
    /// The VIP's encapsulation the path entry was made for: a VIP that
    /// changes it has its targets re-made.
    encap: Encap,
    tracker: Tracker,
    /// Bumped when the target is re-made: results of older probes are
    /// dropped.
    generation: u64,
    in_flight: bool,
    status: BackendHealth,
}

struct Checker {
    s: Settings,
    targets: HashMap<Key, Target>,
    /// The specs of VIPs with a check, as last applied.
    specs: BTreeMap<Vip, ServiceSpec>,
    last: Services,
    queue: BinaryHeap<Reverse<(Instant, Key, u64)>>,
    probes: JoinSet<(Key, u64, Result<Duration, Failure>)>,
    paths: Option<ProbePaths>,
    /// Why DSR-path probes cannot run, once found.
    paths_broken: Option<String>,
    /// Reasons for probing direct already logged.
    said: BTreeSet<String>,
    free_ids: Vec<u32>,
    next_id: u32,
    generation: u64,
    down: Down,
    fail_open: BTreeSet<Vip>,
    status: HealthStatus,
    dirty: bool,
    /// A state change not yet published.
    changed_state: bool,
    last_publish: Instant,
    rng: Rng,
}

pub(super) async fn run(
    s: Settings,
    mut applied: watch::Receiver<Applied>,
    down_tx: watch::Sender<Arc<Down>>,
    status_tx: watch::Sender<HealthStatus>,
    stop: CancellationToken,
) {
    let mut c = Checker {
        paths_broken: s.dsr.as_ref().err().cloned(),
        said: BTreeSet::new(),
        status: HealthStatus {
            dsr_path: s
                .dsr
                .as_ref()
                .err()
                .map(|why| format!("unavailable: {why}")),
            ..HealthStatus::default()
        },
        s,
        targets: HashMap::new(),
        specs: BTreeMap::new(),
        last: Services::new(),
        queue: BinaryHeap::new(),
        probes: JoinSet::new(),
        paths: None,
        free_ids: Vec::new(),
        next_id: 1,
        generation: 0,
        down: Down::new(),
        fail_open: BTreeSet::new(),
        dirty: true,
        changed_state: false,
        last_publish: Instant::now(),
        rng: Rng::seeded_from_clock(),
    };
    let services = applied.borrow_and_update().desired.services.clone();
    c.sync(&services);
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let due = c.queue.peek().map(|Reverse((at, _, _))| *at);
        let change_due = c
            .changed_state
            .then(|| c.last_publish + PUBLISH_CHANGE_WITHIN);
        tokio::select! {
            () = sleep_until(change_due) => c.publish(&status_tx),
            () = stop.cancelled() => break,
            r = applied.changed() => {
                if r.is_err() {
                    break;
                }
                let services = applied.borrow_and_update().desired.services.clone();
                if c.sync(&services) {
                    down_tx.send_replace(Arc::new(c.down.clone()));
                }
            }
            () = sleep_until(due) => c.start_due(),
            Some(done) = c.probes.join_next() => {
                if let Ok((key, generation, result)) = done
                    && let Some(down_changed) = c.record(key, generation, result)
                {
                    if down_changed {
                        down_tx.send_replace(Arc::new(c.down.clone()));
                    }
                    // A state change is shown at once, not at the next tick.
                    c.changed_state = true;
                }
            }
            _ = publish.tick() => {
                if c.dirty {
                    c.publish(&status_tx);
                }
            }
        }
    }
    c.probes.abort_all();
    if let Some(paths) = c.paths.take()
        && let Err(e) = paths.close()
    {
        tracing::warn!("removing the health checks' probe path: {e}");
    }
}

impl Checker {
    /// Follows the applied state: targets of VIPs that came, changed or
    /// went. Returns whether the down set changed.
    fn sync(&mut self, now: &Services) -> bool {
        use imbl::ordmap::DiffItem;
        let mut touched = BTreeSet::new();
        for d in self.last.diff(now) {
            let vip = match d {
                DiffItem::Add(k, _) | DiffItem::Remove(k, _) => *k,
                DiffItem::Update { new, .. } => *new.0,
            };
            touched.insert(vip);
        }
        self.last = now.clone();
        let mut changed = false;
        for vip in touched {
            let spec = now.get(&vip).filter(|s| s.health.is_some()).cloned();
            changed |= self.resync_vip(vip, spec);
        }
        self.dirty = true;
        changed
    }

    fn resync_vip(&mut self, vip: Vip, spec: Option<ServiceSpec>) -> bool {
        let wanted: BTreeSet<IpAddr> = spec
            .as_ref()
            .map(|s| s.backends.keys().copied().collect())
            .unwrap_or_default();
        let have: Vec<IpAddr> = self
            .targets
            .keys()
            .filter(|(v, _)| *v == vip)
            .map(|(_, b)| *b)
            .collect();
        let mut changed = false;
        for b in have {
            let keep = spec.as_ref().is_some_and(|s| {
                wanted.contains(&b)
                    && self
                        .targets
                        .get(&(vip, b))
                        .is_some_and(|t| Some(&t.check) == s.health.as_ref() && t.encap == s.encap)
            });
            if !keep {
                changed |= self.remove((vip, b));
            }
        }
        match spec {
            Some(spec) => {
                for b in &wanted {
                    if !self.targets.contains_key(&(vip, *b)) {
                        self.add(vip, *b, &spec);
                    }
                }
                self.specs.insert(vip, spec);
            }
            None => {
                self.specs.remove(&vip);
            }
        }
        self.refresh_fail_open(vip);
        changed
    }

    fn add(&mut self, vip: Vip, backend: IpAddr, spec: &ServiceSpec) {
        let Some(check) = spec.health.clone() else {
            return;
        };
        let port = check.port.unwrap_or(vip.port);
        let source = match vip.address {
            IpAddr::V4(_) => self.s.source_v4.map(IpAddr::from),
            IpAddr::V6(_) => self.s.source_v6.map(IpAddr::from),
        };
        let mut path_id = None;
        let mut note = None;
        let via_dsr = check.via == Via::Dsr;
        if via_dsr {
            match (source, self.path_for(backend, source, spec.encap)) {
                (Some(_), Ok(id)) => path_id = Some(id),
                (None, _) => note = Some("no source address of the VIP's family".to_owned()),
                (_, Err(why)) => note = Some(why),
            }
        }
        if let Some(why) = &note
            && self.said.insert(why.clone())
        {
            // Once per reason, not once per backend of a 1,000-backend set.
            tracing::warn!(%vip, %backend, "DSR-path checks probe the backends' own addresses instead: {why}");
        }
        let (to, mark, source) = match path_id {
            Some(id) => (
                SocketAddr::new(vip.address, port),
                self.paths.as_ref().map(|p| p.mark(id)),
                source,
            ),
            None => (SocketAddr::new(backend, port), None, None),
        };
        let ask = match &check.probe {
            Kind::Tcp => Ask::Connect,
            Kind::Http(h) => Ask::Http {
                path: h.path.clone(),
                host: h.host.clone(),
                lo: h.status.lo,
                hi: h.status.hi,
            },
        };
        let probe = Probe {
            ask,
            to,
            source,
            mark,
            timeout: check.timeout,
        };
        self.generation += 1;
        let key = (vip, backend);
        let first = Instant::now() + schedule::phase(&key, check.interval);
        self.queue.push(Reverse((first, key, self.generation)));
        let status = BackendHealth {
            vip: vip.to_string(),
            backend,
            kind: match check.probe {
                Kind::Tcp => "tcp",
                Kind::Http(_) => "http",
            }
            .into(),
            via: if path_id.is_some() { "dsr" } else { "direct" }.into(),
            why_direct: note,
            target: to.to_string(),
            state: State::Unknown,
            since_unix: unix_now(),
            last_unix: None,
            last_latency_ms: None,
            last_failure: None,
            results: BTreeMap::new(),
            transitions: 0,
        };
        self.targets.insert(
            key,
            Target {
                tracker: Tracker::new(check.rise.get(), check.fall.get()),
                check,
                probe: Arc::new(probe),
                path_id,
                encap: spec.encap,
                generation: self.generation,
                in_flight: false,
                status,
            },
        );
    }

    /// A DSR-path entry delivering to `backend`, the path opened first if
    /// need be.
    fn path_for(
        &mut self,
        backend: IpAddr,
        source: Option<IpAddr>,
        encap: Encap,
    ) -> Result<u32, String> {
        if let Some(why) = &self.paths_broken {
            return Err(why.clone());
        }
        if self.paths.is_none() {
            let settings = self.s.dsr.as_ref().map_err(Clone::clone)?;
            match ProbePaths::open(settings) {
                Ok(p) => {
                    tracing::info!(device = %settings.device, mark = format_args!("{:#x}", settings.mark), table = settings.table, "health checks' DSR path ready");
                    let mut said = format!(
                        "device {}, mark {:#x}, table {}",
                        settings.device, settings.mark, settings.table
                    );
                    let strict = rp_filter::strict_on(&self.s.interfaces);
                    if !strict.is_empty() {
                        let why = format!(
                            "strict rp_filter on {}: backends' answers (from the VIPs) are dropped \
                             unless a route to each VIP points out of that interface; set \
                             rp_filter to 2 (loose) there (docs/health.md)",
                            strict.join(", ")
                        );
                        tracing::warn!("health checks through the DSR path: {why}");
                        said = format!("{said}; {why}");
                    }
                    self.status.dsr_path = Some(said);
                    self.paths = Some(p);
                }
                Err(e) => {
                    let why = format!("setting up the DSR path failed: {e}");
                    tracing::error!("{why}");
                    self.status.dsr_path = Some(why.clone());
                    self.paths_broken = Some(why.clone());
                    return Err(why);
                }
            }
        }
        let id = self.free_ids.pop().unwrap_or_else(|| {
            self.next_id += 1;
            self.next_id - 1
        });
        let route = ProbeRoute {
            backend,
            outer_source: source,
            encap,
        };
        let paths = self.paths.as_mut().expect("opened above");
        match paths.set(id, &route) {
            Ok(()) => Ok(id),
            Err(e) => {
                self.free_ids.push(id);
                Err(format!("adding the DSR path to {backend}: {e}"))
            }
        }
    }

    /// Forgets a target; returns whether the down set changed.
    fn remove(&mut self, key: Key) -> bool {
        let Some(t) = self.targets.remove(&key) else {
            return false;
        };
        if let (Some(id), Some(paths)) = (t.path_id, self.paths.as_mut()) {
            if let Err(e) = paths.remove(id) {
                tracing::warn!(vip = %key.0, backend = %key.1, "removing a DSR-path entry: {e}");
            }
            self.free_ids.push(id);
        }
        self.set_down(key, false)
    }

    fn start_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, key, generation))) = self.queue.peek().cloned() {
            if at > now {
                break;
            }
            self.queue.pop();
            let Some(t) = self.targets.get_mut(&key) else {
                continue;
            };
            if t.generation != generation {
                continue;
            }
            let wait = schedule::next_wait(t.check.interval, t.check.jitter_percent, &mut self.rng);
            // After a stall (a suspended VM, a starved daemon), probes
            // restart spread over an interval rather than all at once.
            let next = if at + wait > now {
                at + wait
            } else {
                now + schedule::phase(&(key, at), t.check.interval)
            };
            self.queue.push(Reverse((next, key, generation)));
            // A probe still running (a jittered interval shorter than the
            // timeout) is not doubled.
            if t.in_flight {
                continue;
            }
            t.in_flight = true;
            let probe = t.probe.clone();
            self.probes
                .spawn(async move { (key, generation, probe::run(&probe).await) });
        }
    }

    /// Takes a probe's result. When the backend's state changed, returns
    /// whether the down set did.
    fn record(
        &mut self,
        key: Key,
        generation: u64,
        result: Result<Duration, Failure>,
    ) -> Option<bool> {
        let t = self.targets.get_mut(&key)?;
        if t.generation != generation {
            return None;
        }
        t.in_flight = false;
        let st = &mut t.status;
        st.last_unix = Some(unix_now());
        let outcome = match &result {
            Ok(took) => {
                st.last_latency_ms = Some(took.as_secs_f64() * 1e3);
                st.last_failure = None;
                self.status.observe(took.as_secs_f64());
                "pass"
            }
            Err(f) => {
                st.last_latency_ms = None;
                st.last_failure = Some(f.clone());
                f.label()
            }
        };
        *st.results.entry(outcome.into()).or_default() += 1;
        self.dirty = true;
        let state = t.tracker.record(result.is_ok())?;
        st.state = state;
        st.since_unix = unix_now();
        st.transitions += 1;
        self.status.transitions += 1;
        let (vip, backend) = key;
        let probed = &st.target;
        match (&state, &result) {
            (State::Down, Err(why)) => tracing::warn!(
                %vip, %backend, via = %st.via, target = %probed,
                "backend down after {} failed checks in a row: {why}", t.check.fall
            ),
            _ => tracing::info!(
                %vip, %backend, via = %st.via, target = %probed, state = state.as_str(),
                "backend health changed"
            ),
        }
        let changed = self.set_down(key, state == State::Down);
        self.refresh_fail_open(vip);
        Some(changed)
    }

    fn set_down(&mut self, (vip, backend): Key, down: bool) -> bool {
        if down {
            self.down.entry(vip).or_default().insert(backend)
        } else {
            let Some(set) = self.down.get_mut(&vip) else {
                return false;
            };
            let was = set.remove(&backend);
            if set.is_empty() {
                self.down.remove(&vip);
            }
            was
        }
    }

    /// Says loudly when a VIP starts or stops failing open. The down set
    /// is the reconciler's input either way; this only reports.
    fn refresh_fail_open(&mut self, vip: Vip) {
        let open = self
            .specs
            .get(&vip)
            .is_some_and(|s| gate::fate(s, self.down.get(&vip)) == Fate::FailOpen);
        if open && self.fail_open.insert(vip) {
            tracing::error!(%vip, "every backend of the VIP is down; keeping them all in rotation (fail_open)");
        } else if !open && self.fail_open.remove(&vip) {
            tracing::warn!(%vip, "the VIP no longer fails open: some backend is up again");
        }
    }

    fn publish(&mut self, tx: &watch::Sender<HealthStatus>) {
        let mut backends: Vec<BackendHealth> =
            self.targets.values().map(|t| t.status.clone()).collect();
        backends.sort_by(|a, b| (&a.vip, a.backend).cmp(&(&b.vip, b.backend)));
        self.status.backends = backends;
        self.status.fail_open = self.fail_open.iter().map(ToString::to_string).collect();
        if let Err(e) = self.status.write(&self.s.state_dir) {
            tracing::warn!("writing the health status: {e}");
        }
        tx.send_replace(self.status.clone());
        self.dirty = false;
        self.changed_state = false;
        self.last_publish = Instant::now();
    }
}
