//! `xlb run`: the daemon, as tasks around one desired state.
//!
//! ```text
//!  sources (publish their part)     the one owner of the data plane     consumers (subscribe)
//!
//!  file_source ──watch<FileState>──┐                                ┌─> neighbours
//!                                   ├─> reconciler ──watch<Applied>──┼─> kubernetes_link (elector VIPs, memory)
//!  kubernetes ──watch<Outcome>─────┤   (own thread:  ──watch<Progress>┼─> metrics, /healthz
//!   └─ elector ──LeaderFeed────────┼──  merge, gate,                  ├─> announcer (+ LeaderFeed)
//!  health_checker ──watch<Down>────┘    apply)                        └─> health_checker
//! ```
//!
//! The health checker is both: it probes the backends of the applied
//! (configured) state and publishes the ones it holds down, which the
//! reconciler leaves out of what it applies.
//!
//! Every piece of state has one owner: the file source owns the config, the
//! Kubernetes source its translation and the Leases, the reconciler the data
//! plane. Others see them only through `watch` channels (the latest value,
//! never a queue that can fall behind) or, for the data plane, by asking the
//! reconciler ([`reconciler::DataplaneHandle`]).
//!
//! Signals are taken over before anything else ([`signals`]), so a SIGTERM
//! or SIGINT at any moment, start-up included, ends in the same shutdown:
//! every task sees the one [`CancellationToken`], the Leases are handed
//! back, the state is saved, and the data plane is left forwarding. Each
//! step of the shutdown is bounded in time.
//!
//! **Adding a task** (an announcer, a health checker): write its module with
//! an `async fn run(..., stop: CancellationToken)` that subscribes to what it
//! needs (`reconciler.applied`, `kubernetes.leaders`, ...) and returns when
//! `stop` is cancelled; then add one `self.spawn("name", ...)` line to
//! [`Daemon::start`]. Nothing else changes.

mod announcer;
mod aws_announcer;
mod bgp_announcer;
mod file_source;
mod health_checker;
mod kubernetes_link;
mod neighbours;
mod reconciler;
mod signals;

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use tokio::{
    signal::unix::Signal,
    sync::{oneshot, watch},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{
    announce::{
        aws::status::AwsStatus, bgp::BgpStatus, claimer::Claimer, responder, status::AnnounceStatus,
    },
    config::{self, Config, DataplaneMode},
    desired::Desired,
    health::{
        gate::Down,
        path::{DEFAULT_DEVICE, PathSettings},
        status::HealthStatus,
    },
    ifaddr,
    kubernetes::{self, Kubernetes, LeaderFeed, Outcome},
    metrics::{self, Health},
    runstate::RunState,
    xdp::{
        self,
        route_epoch::{self, RouteEpoch},
    },
};
use file_source::{FileSource, FileState};
use reconciler::{Applied, Plan, Reconciler, Sources};
use signals::Signals;

pub struct RunOptions {
    pub config: PathBuf,
    pub dataplane: Option<DataplaneMode>,
    pub interfaces: Vec<String>,
    pub pin_path: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    /// How often the config file is checked for changes.
    pub watch_interval: Duration,
}

/// How long each task gets to stop once asked.
const TASK_STOP: Duration = Duration::from_secs(5);
/// How long handing the Leases back may take.
const LEASES_STOP: Duration = Duration::from_secs(10);
/// How long the reconciler may take to finish an apply in progress.
const RECONCILER_STOP: Duration = Duration::from_secs(30);

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(o: RunOptions) -> Result<()> {
    let signals = Signals::install().context("installing signal handlers")?;
    tracing::info!(config = %o.config.display(), version = env!("CARGO_PKG_VERSION"), "starting");
    let stop = signals.shutdown.clone();
    let mut daemon = Daemon::new(stop.clone());
    let started = tokio::select! {
        r = daemon.start(&o, signals.hangup) => Some(r),
        () = stop.cancelled() => None,
    };
    if let Some(Ok(())) = started {
        stop.cancelled().await;
    }
    daemon.shutdown().await;
    match started {
        Some(Err(e)) => Err(e),
        _ => {
            tracing::info!(
                "stopping; the pinned data plane keeps forwarding (xlb stop removes it)"
            );
            Ok(())
        }
    }
}

/// The running parts, filled in as start-up proceeds, so a shutdown at any
/// point stops exactly what exists.
struct Daemon {
    stop: CancellationToken,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    reconciler: Option<Reconciler>,
    kubernetes: Option<Kubernetes>,
    /// Stopped before the Leases are handed back: this node must be silent
    /// before another may answer for its VIPs.
    announcer: Option<JoinHandle<()>>,
    /// Likewise: it must not move a VIP to this node after the Leases are
    /// handed back.
    aws_announcer: Option<JoinHandle<()>>,
    /// The pinned maps, when the data plane is XDP.
    xdp_pins: Option<PathBuf>,
    /// The data plane's name, once started.
    dataplane: &'static str,
    /// Stopped before the data plane's owner, so its probe path is
    /// removed while everything else still runs.
    health_checker: Option<JoinHandle<()>>,
}

impl Daemon {
    fn new(stop: CancellationToken) -> Self {
        Self {
            stop,
            tasks: Vec::new(),
            reconciler: None,
            kubernetes: None,
            announcer: None,
            aws_announcer: None,
            xdp_pins: None,
            dataplane: "",
            health_checker: None,
        }
    }

    fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tasks.push((name, tokio::spawn(task)));
    }

    /// The table of contents: each step starts one owner.
    async fn start(&mut self, o: &RunOptions, hangup: Signal) -> Result<()> {
        let path = o.config.clone();
        let cfg = tokio::task::spawn_blocking(move || config::load(&path))
            .await?
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mode = o.dataplane.unwrap_or(cfg.dataplane.mode);
        let interfaces = interfaces(o, &cfg, mode)?;
        let plan = Plan {
            mode,
            settings: settings(&cfg, o.pin_path.as_deref()),
            interfaces: interfaces.clone(),
            xdp_mode: cfg.dataplane.xdp_mode,
            state_dir: cfg.dataplane.state_dir.clone(),
        };
        let state_dir = cfg.dataplane.state_dir.clone();
        let listen = o.metrics.unwrap_or(cfg.metrics.listen);
        let announce = announcer_settings(&cfg, &interfaces);
        let aws = aws_settings(&cfg);
        let checks = checker_settings(&cfg, &interfaces);
        let bgp = bgp_settings(&cfg);
        let (down_tx, down_rx) = watch::channel(Arc::new(Down::new()));

        // Sources.
        let remembered = remembered(&cfg);
        let file = FileSource::new(o.config.clone(), cfg, interfaces, o.watch_interval);
        let (file_rx, rejected) = (file.subscribe(), file.rejected());
        self.spawn("config file", file.run(hangup, self.stop.clone()));
        self.start_kubernetes(&file_rx).await?;

        // The data plane's owner.
        let (applied, queries) = self
            .start_reconciler(plan, &file_rx, remembered, down_rx)
            .await?;

        // Consumers.
        self.link_kubernetes(&state_dir, &applied, file_rx);
        let (announced, answered) = self.start_announcer(announce, &applied)?;
        let aws = self.start_aws_announcer(aws, &applied);
        let bgp = self.start_bgp_announcer(bgp, &applied, &queries);
        let health = self.start_health_checker(checks, &applied, down_tx);
        let endpoints = endpoints(
            queries,
            rejected,
            self.leaders(),
            Announcers {
                l2: announced,
                answered,
                aws,
                bgp,
            },
            health,
        );
        self.serve_metrics(listen, endpoints).await
    }

    /// The Kubernetes source, when the config enables it.
    async fn start_kubernetes(&mut self, file: &watch::Receiver<Arc<FileState>>) -> Result<()> {
        let (k8s, dp, announce, health, statics) = {
            let f = file.borrow();
            let statics = f.desired.services.keys().copied().collect();
            (
                f.config.kubernetes.clone(),
                f.config.dataplane.clone(),
                f.config.announce.clone(),
                f.config.health.clone(),
                statics,
            )
        };
        if k8s.enabled {
            let source = Kubernetes::start(&k8s, &dp, &announce, &health, statics)
                .await
                .context("starting the Kubernetes source")?;
            self.kubernetes = Some(source);
        }
        Ok(())
    }

    /// The reconciler and the neighbour keeper it waits for; returns once
    /// the data plane has started (not yet applied).
    async fn start_reconciler(
        &mut self,
        plan: Plan,
        file: &watch::Receiver<Arc<FileState>>,
        remembered: Arc<Outcome>,
        down: watch::Receiver<Arc<Down>>,
    ) -> Result<(watch::Receiver<Applied>, Queries)> {
        let state_dir = plan.state_dir.clone();
        let (pin_dir, route_period) = (plan.settings.pin_dir.clone(), plan.settings.nexthop_ttl);
        let first = reconciler::backends(&reconciler::merge(
            &file.borrow().desired,
            &remembered.services,
        ));
        let (neighbours_tx, neighbours_ready) = oneshot::channel();
        let sources = Sources {
            file: file.clone(),
            kubernetes: self.kubernetes.as_ref().map(|k| k.outcome.clone()),
            remembered,
            neighbours_ready,
            down,
        };
        let (reconciler, starting) = Reconciler::spawn(plan, sources, self.stop.clone())
            .context("starting the reconciler thread")?;
        let applied = reconciler.applied.clone();
        let queries = Queries {
            dataplane: reconciler.handle.clone(),
            progress: reconciler.progress.clone(),
        };
        self.reconciler = Some(reconciler);
        self.spawn(
            "neighbours",
            neighbours::run(first, neighbours_tx, applied.clone(), self.stop.clone()),
        );
        let started = starting
            .dataplane
            .await
            .context("the reconciler stopped while starting the data plane")??;
        tracing::info!(dataplane = started.name, reason = %started.reason, "data plane ready");
        self.dataplane = started.name;
        if started.name == "xdp"
            && let Some(dir) = pin_dir
        {
            self.xdp_pins = Some(dir.clone());
            // The program's route cache lives as long as the route epoch.
            let epoch = RouteEpoch::open_pinned(&dir).context("opening the route epoch")?;
            self.spawn(
                "route epoch",
                route_epoch::follow(epoch, route_period, self.stop.clone()),
            );
        }
        RunState {
            dataplane: started.name.to_string(),
            reason: started.reason,
        }
        .write(&state_dir)
        .with_context(|| format!("writing {}", state_dir.display()))?;
        starting
            .first_apply
            .await
            .context("the reconciler stopped before its first apply")?
            .context("applying the configuration")?;
        Ok((applied, queries))
    }

    /// What the Kubernetes source needs from the rest of the daemon.
    fn link_kubernetes(
        &mut self,
        state_dir: &Path,
        applied: &watch::Receiver<Applied>,
        file: watch::Receiver<Arc<FileState>>,
    ) {
        let Some(k) = &self.kubernetes else {
            return;
        };
        let (inputs, feed, stop) = (k.elector_inputs(), k.leaders.clone(), self.stop.clone());
        self.spawn(
            "elector feed",
            kubernetes_link::feed_elector(inputs, applied.clone(), file, stop.clone()),
        );
        self.spawn(
            "Kubernetes memory",
            kubernetes_link::remember(state_dir.to_path_buf(), applied.clone(), stop.clone()),
        );
        self.spawn(
            "leadership file",
            kubernetes_link::write_leaders(state_dir.to_path_buf(), feed, stop),
        );
    }

    /// The `l2` announcer: on the XDP data plane the program answers for
    /// the addresses it claims; on IPVS, threads of its own do, and their
    /// answers are counted here (the program counts its own).
    fn start_announcer(
        &mut self,
        s: announcer::Settings,
        applied: &watch::Receiver<Applied>,
    ) -> Result<(
        watch::Receiver<AnnounceStatus>,
        Option<Arc<responder::Answered>>,
    )> {
        let (tx, rx) = watch::channel(AnnounceStatus::default());
        let mut answered = None;
        let claims: Box<dyn Claimer> = match &self.xdp_pins {
            Some(dir) => {
                Box::new(xdp::Claims::open_pinned(dir).context("opening the owned-address maps")?)
            }
            None if !s.needed => return Ok((rx, None)),
            None => {
                let changed = responder::quiet_kernel(&s.interfaces).map_err(|e| {
                    anyhow::anyhow!("making the kernel leave ARP for VIPs to xlb: {e}")
                })?;
                for c in changed {
                    tracing::info!(sysctl = %c, "the kernel answers ARP only for its interfaces' own addresses: VIPs are answered by the elected router");
                }
                let r = responder::Responder::start(&s.interfaces)
                    .context("starting the ARP / neighbour discovery responder")?;
                answered = Some(r.answered());
                Box::new(r)
            }
        };
        let task = announcer::run(
            s,
            claims,
            applied.clone(),
            self.leaders(),
            tx,
            self.stop.clone(),
        );
        self.announcer = Some(tokio::spawn(task));
        Ok((rx, answered))
    }

    /// The `aws` announcer. It runs whatever the config says (a Service
    /// may ask for `aws`), but calls nothing until this node leads an
    /// `aws` VIP.
    fn start_aws_announcer(
        &mut self,
        s: aws_announcer::Settings,
        applied: &watch::Receiver<Applied>,
    ) -> watch::Receiver<AwsStatus> {
        let (tx, rx) = watch::channel(AwsStatus::default());
        let task = aws_announcer::run(s, applied.clone(), self.leaders(), tx, self.stop.clone());
        self.aws_announcer = Some(tokio::spawn(task));
        rx
    }

    /// The health checker. Idle (no device, no probe) until some VIP has a
    /// check.
    fn start_health_checker(
        &mut self,
        mut s: health_checker::Settings,
        applied: &watch::Receiver<Applied>,
        down: watch::Sender<Arc<Down>>,
    ) -> watch::Receiver<HealthStatus> {
        if self.dataplane != "xdp" {
            s.dsr = Err(format!(
                "the {} data plane serves VIPs as local addresses, so a probe from this node would be \
                 balanced by it rather than sent to the backend chosen; checks go direct",
                self.dataplane
            ));
        }
        let (tx, rx) = watch::channel(HealthStatus::default());
        let task = health_checker::run(s, applied.clone(), down, tx, self.stop.clone());
        self.health_checker = Some(tokio::spawn(task));
        rx
    }

    /// The `bgp` announcer, when some VIP may ask for it (the config's, or
    /// a Kubernetes Service's annotation).
    fn start_bgp_announcer(
        &mut self,
        s: Option<bgp_announcer::Settings>,
        applied: &watch::Receiver<Applied>,
        queries: &Queries,
    ) -> watch::Receiver<BgpStatus> {
        let (tx, rx) = watch::channel(BgpStatus::default());
        if let Some(s) = s {
            let task = bgp_announcer::run(
                s,
                applied.clone(),
                queries.dataplane.clone(),
                tx,
                self.stop.clone(),
            );
            self.spawn("bgp announcer", task);
        }
        rx
    }

    fn leaders(&self) -> Option<LeaderFeed> {
        self.kubernetes.as_ref().map(|k| k.leaders.clone())
    }

    async fn serve_metrics(
        &mut self,
        listen: SocketAddr,
        endpoints: metrics::Endpoints,
    ) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("metrics: binding {listen}"))?;
        tracing::info!(%listen, "serving metrics");
        let stop = self.stop.clone();
        self.spawn("metrics server", async move {
            let limits = metrics::Limits::default();
            if let Err(e) = metrics::serve(listener, endpoints, limits, stop.cancelled()).await {
                tracing::error!("metrics server stopped: {e}");
            }
        });
        Ok(())
    }

    /// Stops every part that exists, each within its bound.
    async fn shutdown(mut self) {
        self.stop.cancel();
        for (name, task) in [
            ("announcer", self.announcer.take()),
            ("aws announcer", self.aws_announcer.take()),
            ("health checker", self.health_checker.take()),
        ] {
            if let Some(mut a) = task
                && tokio::time::timeout(TASK_STOP, &mut a).await.is_err()
            {
                tracing::warn!("the {name} did not stop within {TASK_STOP:?}; aborted");
                a.abort();
            }
        }
        if let Some(k) = self.kubernetes.take() {
            // Hands the Leases over now rather than after they expire.
            if tokio::time::timeout(LEASES_STOP, k.shutdown())
                .await
                .is_err()
            {
                tracing::warn!(
                    "handing back the Leases took over {LEASES_STOP:?}; they expire on their own"
                );
            }
        }
        for (name, mut task) in self.tasks.drain(..) {
            if tokio::time::timeout(TASK_STOP, &mut task).await.is_err() {
                tracing::warn!("task {name} did not stop within {TASK_STOP:?}; aborted");
                task.abort();
            }
        }
        if let Some(r) = self.reconciler.take() {
            r.join(RECONCILER_STOP).await;
        }
    }
}

/// What the metrics server asks: the data plane (through its owner) and
/// how reconciling goes.
#[derive(Clone)]
struct Queries {
    dataplane: reconciler::DataplaneHandle,
    progress: watch::Receiver<reconciler::Progress>,
}

/// What the announcers publish of themselves.
struct Announcers {
    l2: watch::Receiver<AnnounceStatus>,
    /// The userspace responder's answers, on the IPVS data plane.
    answered: Option<Arc<responder::Answered>>,
    aws: watch::Receiver<AwsStatus>,
    bgp: watch::Receiver<BgpStatus>,
}

/// `/metrics` and `/healthz`, answered from their owners' published state.
fn endpoints(
    q: Queries,
    rejected: Arc<AtomicU64>,
    leaders: Option<LeaderFeed>,
    announcers: Announcers,
    health_status: watch::Receiver<HealthStatus>,
) -> metrics::Endpoints {
    let Announcers {
        l2: announced,
        answered,
        aws,
        bgp,
    } = announcers;
    let scrape = q.clone();
    metrics::Endpoints {
        scrape: Arc::new(move || {
            let mut s = scrape.dataplane.snapshot()?;
            if let Some(a) = &answered {
                add_outcomes(&mut s.outcomes, a.outcomes());
            }
            let p = scrape.progress.borrow().clone();
            s.last_reconcile_unix_seconds = p.last_unix_seconds;
            s.last_reconcile_duration_seconds = p.last_seconds;
            s.reconciles = p.reconciles;
            // Rejected files and refused applies alike: a reload that did
            // not take effect.
            s.config_reload_errors = rejected.load(Ordering::Relaxed) + p.failures;
            if let Some(feed) = &leaders {
                s.leaders = leader_samples(&feed.current());
            }
            s.announce = announce_sample(&announced.borrow());
            s.aws = aws_sample(&aws.borrow());
            s.bgp = bgp_sample(&bgp.borrow());
            s.health = health_sample(&health_status.borrow());
            Ok(s)
        }),
        health: Arc::new(move || {
            // A copy, not the borrow: holding the borrow while the
            // reconciler answers would block its next publication.
            let p = q.progress.borrow().clone();
            health(&q.dataplane, &p)
        }),
    }
}

fn announcer_settings(cfg: &Config, interfaces: &[String]) -> announcer::Settings {
    let a = &cfg.announce;
    announcer::Settings {
        bound: a.liveness_bound(&cfg.kubernetes),
        count: a.gratuitous_count,
        interval: Duration::from_millis(u64::from(a.gratuitous_interval_ms)),
        refresh: (a.refresh_interval_ms > 0)
            .then(|| Duration::from_millis(u64::from(a.refresh_interval_ms))),
        static_leader: (!cfg.kubernetes.enabled).then_some(a.static_leader),
        needed: a.mode == config::AnnounceMode::L2
            || cfg
                .vips
                .iter()
                .any(|v| v.announce == config::Announcement::L2),
        interfaces: interfaces.to_vec(),
        state_dir: cfg.dataplane.state_dir.clone(),
    }
}

/// `None` when no VIP can be announced with `bgp`: neither the config's
/// nor, without Kubernetes, any Service's.
fn bgp_settings(cfg: &Config) -> Option<bgp_announcer::Settings> {
    let needed = cfg.announce.mode == config::AnnounceMode::Bgp
        || cfg.kubernetes.enabled
        || cfg
            .vips
            .iter()
            .any(|v| v.announce == config::Announcement::Bgp);
    needed.then(|| bgp_announcer::Settings {
        table: cfg.announce.bgp.table,
        protocol: u8::try_from(cfg.announce.bgp.protocol).unwrap_or(u8::MAX),
        state_dir: cfg.dataplane.state_dir.clone(),
    })
}

fn bgp_sample(b: &BgpStatus) -> Option<metrics::BgpSample> {
    if b.vips.is_empty() && !b.draining {
        return None;
    }
    Some(metrics::BgpSample {
        vips: b
            .vips
            .iter()
            .map(|(a, w)| {
                let installed = b.installed.contains(a);
                let why = match w {
                    Some(w) => w.as_str(),
                    None if installed => "",
                    None => "table write failing",
                };
                (a.to_string(), why, installed)
            })
            .collect(),
        draining: b.draining,
        announcements: b.announcements,
        withdrawals: b.withdrawals,
        write_errors: b.write_errors,
        write_failing: b.error.is_some(),
    })
}

fn checker_settings(cfg: &Config, interfaces: &[String]) -> health_checker::Settings {
    let h = cfg.health.with_probe_sources(&cfg.dataplane);
    health_checker::Settings {
        dsr: Ok(PathSettings {
            mark: h.mark,
            table: h.table,
            rule_priority: h.rule_priority,
            device: DEFAULT_DEVICE.to_owned(),
        }),
        source_v4: h.source_v4,
        source_v6: h.source_v6,
        state_dir: cfg.dataplane.state_dir.clone(),
        interfaces: interfaces.to_vec(),
    }
}

fn health_sample(h: &HealthStatus) -> Option<metrics::HealthSample> {
    if h.backends.is_empty() {
        return None;
    }
    Some(metrics::HealthSample {
        backends: h
            .backends
            .iter()
            .map(|b| metrics::BackendHealthSample {
                vip: b.vip.clone(),
                backend: b.backend.to_string(),
                state: b.state.as_str(),
                results: b.results.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                transitions: b.transitions,
            })
            .collect(),
        fail_open: h.fail_open.clone(),
        latency_buckets: h.latency_buckets.clone(),
        latency_sum_seconds: h.latency_sum_seconds,
        latency_count: h.latency_count,
    })
}

fn aws_settings(cfg: &Config) -> aws_announcer::Settings {
    let node = cfg
        .kubernetes
        .node_name
        .clone()
        .or_else(|| std::env::var("NODE_NAME").ok())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_default();
    aws_announcer::Settings {
        aws: cfg.announce.aws.clone(),
        static_leader: (!cfg.kubernetes.enabled).then_some(cfg.announce.static_leader),
        node,
        state_dir: cfg.dataplane.state_dir.clone(),
    }
}

fn aws_sample(a: &AwsStatus) -> Option<metrics::AwsSample> {
    if a.region.is_none() && a.vips.is_empty() {
        return None;
    }
    Some(metrics::AwsSample {
        calls: a
            .calls
            .iter()
            .map(|c| (c.operation.clone(), c.result.clone(), c.count))
            .collect(),
        throttled: a.throttled,
        moves_confirmed: a.moves_confirmed,
        confirm_seconds_sum: a.confirm_seconds_sum,
        last_confirm_seconds: a.last_confirm_seconds.unwrap_or(f64::NAN),
        vips: a
            .vips
            .iter()
            .map(|(v, s)| (v.to_string(), s.leads, s.in_place, s.error.is_some()))
            .collect(),
        backends_with_source_dest_check: a.backends_with_source_dest_check.len() as u64,
        owned: a.owned().map(|v| v.to_string()).collect(),
        transitions: a.transitions,
    })
}

/// The Kubernetes part applied before a restart: served until the watches
/// have synced, so a restart with the API server down keeps the VIPs.
fn remembered(cfg: &Config) -> Arc<Outcome> {
    let services = if cfg.kubernetes.enabled {
        kubernetes::memory::load(&cfg.dataplane.state_dir)
    } else {
        Default::default()
    };
    if !services.is_empty() {
        tracing::info!(
            vips = services.len(),
            "serving the Kubernetes VIPs applied before the restart until the watches sync"
        );
    }
    Arc::new(Outcome {
        services,
        ..Outcome::default()
    })
}

/// Adds counts to the data plane's per-outcome counters, by name.
fn add_outcomes(
    to: &mut Vec<(&'static str, u64)>,
    counts: impl IntoIterator<Item = (&'static str, u64)>,
) {
    for (name, n) in counts {
        match to.iter_mut().find(|(o, _)| *o == name) {
            Some((_, total)) => *total += n,
            None => to.push((name, n)),
        }
    }
}

fn announce_sample(a: &AnnounceStatus) -> Option<metrics::AnnounceSample> {
    if a.liveness_bound_ms == 0 {
        return None;
    }
    let age = if a.heartbeat_ns == 0 {
        f64::NAN
    } else {
        xdp::claims::monotonic_ns().saturating_sub(a.heartbeat_ns) as f64 / 1e9
    };
    Some(metrics::AnnounceSample {
        owned: a
            .vips
            .iter()
            .filter(|(_, v)| v.owned)
            .map(|(a, _)| a.to_string())
            .collect(),
        transitions: a.transitions,
        gratuitous_sent: a.gratuitous_sent,
        send_errors: a.send_errors,
        liveness_age_seconds: age,
        liveness_bound_seconds: a.liveness_bound_ms as f64 / 1e3,
    })
}

fn leader_samples(l: &kubernetes::Leadership) -> Vec<metrics::LeaderSample> {
    l.vips
        .iter()
        .map(|(vip, v)| metrics::LeaderSample {
            vip: vip.to_string(),
            holder: v.holder.clone().unwrap_or_default(),
            leading: v.leading,
        })
        .collect()
}

/// Ready when the last apply succeeded and the data plane is in place.
fn health(handle: &reconciler::DataplaneHandle, p: &reconciler::Progress) -> Health {
    if let Some(why) = &p.failing {
        return Health::Unready(format!("the last reconcile failed: {why}"));
    }
    if p.reconciles == 0 {
        return Health::Unready("not reconciled yet".into());
    }
    match handle.health() {
        Ok(()) => Health::Ready,
        Err(e) => Health::Unready(e.to_string()),
    }
}

/// The interfaces to attach to: `--iface` over the config; forwarding is
/// turned on for each (`bpf_fib_lookup` needs it).
fn interfaces(o: &RunOptions, cfg: &Config, mode: DataplaneMode) -> Result<Vec<String>> {
    let interfaces = if o.interfaces.is_empty() {
        cfg.dataplane.interfaces.clone()
    } else {
        o.interfaces.clone()
    };
    // IPVS works on whatever interface the VIP traffic arrives at.
    if interfaces.is_empty() && mode != DataplaneMode::Ipvs {
        bail!(
            "no interface to attach to: set dataplane.interfaces in {} or pass --iface",
            o.config.display()
        );
    }
    for iface in &interfaces {
        // A missing interface is reported when attaching; skip it here.
        if let Err(e) = crate::neigh::enable_forwarding(iface) {
            tracing::warn!(%iface, "cannot enable IP forwarding: {e}");
        }
    }
    Ok(interfaces)
}

/// Data-plane settings from the config (what is fixed at load time).
pub fn settings(cfg: &Config, pin_path: Option<&Path>) -> xdp::Settings {
    let d = &cfg.dataplane;
    xdp::Settings {
        maglev_size: d.maglev_table_size,
        maglev_slots: d.maglev_slots(),
        max_vips: d.max_vips,
        max_backends: d.max_backends,
        flow_table_size: d.flow_table_size,
        log: false,
        nexthop_ttl: Duration::from_millis(u64::from(d.nexthop_ttl_ms)),
        pin_dir: Some(pin_path.map_or_else(|| d.pin_path.clone(), Path::to_path_buf)),
    }
}

/// The desired state of a config, with IPIP sources falling back to the
/// first interface's address of each family.
pub fn desired_of(cfg: &Config, interfaces: &[String]) -> Desired {
    let mut d = Desired::from_config(cfg);
    if let Some(iface) = interfaces.first() {
        if d.ipip_source_v4.is_none()
            && let Some(IpAddr::V4(a)) = ifaddr::first(iface, true)
        {
            d.ipip_source_v4 = Some(a);
        }
        if d.ipip_source_v6.is_none()
            && let Some(IpAddr::V6(a)) = ifaddr::first(iface, false)
        {
            d.ipip_source_v6 = Some(a);
        }
    }
    d
}
