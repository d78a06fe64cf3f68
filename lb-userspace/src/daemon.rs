//! `xlb run`: the daemon's life. Load the config, check capabilities, start
//! the data plane, apply the desired state, serve metrics, then reload on
//! SIGHUP or file change (keeping the running state when the new config is
//! invalid) until SIGTERM/SIGINT, after which the pinned data plane keeps
//! forwarding without us.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, Result, bail};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    config::{self, Config, DataplaneMode, XdpMode},
    dataplane::{self, Dataplane, Start},
    desired::{Desired, Service, ServiceSpec},
    ifaddr,
    kubernetes::{self, Kubernetes, Outcome},
    metrics,
    runstate::RunState,
    xdp::{self, attach::Mode},
};

pub struct RunOptions {
    pub config: PathBuf,
    pub dataplane: Option<DataplaneMode>,
    pub interfaces: Vec<String>,
    pub pin_path: Option<PathBuf>,
    pub metrics: Option<SocketAddr>,
    /// How often the config file is checked for changes.
    pub watch_interval: Duration,
}

/// Daemon-level numbers the exporter reports beside the data plane's.
#[derive(Default)]
struct Stats {
    reconciles: AtomicU64,
    reload_errors: AtomicU64,
    last: Mutex<(f64, f64)>,
}

type Shared = Arc<Mutex<Box<dyn Dataplane>>>;

/// Data-plane settings from the config (what is fixed at load time).
pub fn settings(cfg: &Config, pin_path: Option<&Path>) -> xdp::Settings {
    let d = &cfg.dataplane;
    xdp::Settings {
        maglev_size: d.maglev_table_size,
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
pub fn desired(cfg: &Config, interfaces: &[String]) -> Desired {
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

pub async fn run(o: RunOptions) -> Result<()> {
    let cfg = config::load(&o.config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mode = o.dataplane.unwrap_or(cfg.dataplane.mode);
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
    let settings = settings(&cfg, o.pin_path.as_deref());
    let xdp_mode = match cfg.dataplane.xdp_mode {
        XdpMode::Native => Mode::Native,
        XdpMode::Generic => Mode::Generic,
    };
    let start = Start {
        settings: &settings,
        interfaces: &interfaces,
        xdp_mode,
        state_dir: &cfg.dataplane.state_dir,
    };
    let (dp, why) = dataplane::select(mode, &start)?;
    tracing::info!(dataplane = dp.name(), reason = %why, "data plane ready");
    RunState {
        dataplane: dp.name().to_string(),
        reason: why,
    }
    .write(&cfg.dataplane.state_dir)
    .with_context(|| format!("writing {}", cfg.dataplane.state_dir.display()))?;
    let dp: Shared = Arc::new(Mutex::new(dp));
    let stats = Arc::new(Stats::default());
    let state_dir = cfg.dataplane.state_dir.clone();
    let mut statics = desired(&cfg, &interfaces);
    // Until the watches have synced, the Kubernetes VIPs applied before a
    // restart stay as they were, flows and all.
    // The Kubernetes part as last applied: shared with the source's
    // outcome, not copied, since it is replaced on every event.
    let mut k8s_services: Arc<Outcome> = Arc::new(Outcome {
        services: if cfg.kubernetes.enabled {
            kubernetes::memory::load(&state_dir)
        } else {
            BTreeMap::new()
        },
        ..Outcome::default()
    });
    if !k8s_services.services.is_empty() {
        tracing::info!(
            vips = k8s_services.services.len(),
            "serving the Kubernetes VIPs applied before the restart until the watches sync"
        );
    }
    let want = merge(&statics, &k8s_services.services);
    // Before the first flows can arrive: XDP cannot resolve neighbours.
    report_unreachable(crate::neigh::resolve(&backend_addrs(&want)));
    apply(&dp, &stats, &want).context("applying the configuration")?;
    let mut k8s = if cfg.kubernetes.enabled {
        let k = Kubernetes::start(&cfg.kubernetes, &cfg.dataplane, static_keys(&statics))
            .await
            .context("starting the Kubernetes source")?;
        k.set_vips(vip_addresses(&want));
        Some(k)
    } else {
        None
    };
    let leaders = k8s.as_ref().map(|k| k.leaders.clone());
    let leaders_task = leaders.clone().map(|mut feed| {
        let dir = state_dir.clone();
        tokio::spawn(async move {
            while let Some(l) = feed.changed().await {
                if let Err(e) = l.write(&dir) {
                    tracing::warn!(
                        "writing {}: {e}",
                        dir.join(kubernetes::leadership::FILE).display()
                    );
                }
            }
        })
    });

    let listen = o.metrics.unwrap_or(cfg.metrics.listen);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("metrics: binding {listen}"))?;
    tracing::info!(%listen, "serving metrics");
    let (sdp, sstats) = (dp.clone(), stats.clone());
    let snapshot = Arc::new(move || -> Result<metrics::Snapshot, String> {
        let mut s = sdp
            .lock()
            .map_err(|_| "data plane lock poisoned".to_string())?
            .snapshot()?;
        let (at, took) = *sstats
            .last
            .lock()
            .map_err(|_| "stats lock poisoned".to_string())?;
        s.last_reconcile_unix_seconds = at;
        s.last_reconcile_duration_seconds = took;
        s.reconciles = sstats.reconciles.load(Ordering::Relaxed);
        s.config_reload_errors = sstats.reload_errors.load(Ordering::Relaxed);
        if let Some(feed) = &leaders {
            s.leaders = feed
                .current()
                .vips
                .iter()
                .map(|(vip, v)| metrics::LeaderSample {
                    vip: vip.to_string(),
                    holder: v.holder.clone().unwrap_or_default(),
                    leading: v.leading,
                })
                .collect();
        }
        Ok(s)
    });
    let server = tokio::spawn(metrics::serve(listener, snapshot));

    // Backends' neighbours: now, then every few seconds (see neigh.rs).
    let backends = Arc::new(Mutex::new(backend_addrs(&want)));
    let keeper = {
        let backends = backends.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                let list = backends.lock().map(|b| b.clone()).unwrap_or_default();
                report_unreachable(crate::neigh::touch(&list));
            }
        })
    };
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(o.watch_interval);
    let mut seen = fingerprint(&o.config);
    let mut current = cfg;
    // The Kubernetes part changes often; it is saved on the next tick.
    let mut unsaved = false;
    loop {
        let mut reloaded = None;
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading {}", o.config.display());
                seen = fingerprint(&o.config);
                reloaded = reload(&o.config, &mut current, &interfaces, &k8s_services.services, &dp, &stats);
            }
            _ = tick.tick() => {
                let now = fingerprint(&o.config);
                if now != seen {
                    seen = now;
                    tracing::info!("{} changed: reloading", o.config.display());
                    reloaded = reload(&o.config, &mut current, &interfaces, &k8s_services.services, &dp, &stats);
                }
                if unsaved {
                    unsaved = false;
                    remember(&state_dir, &k8s_services);
                }
            }
            Some(outcome) = k8s_changed(&mut k8s) => {
                let want = merge(&statics, &outcome.services);
                match apply(&dp, &stats, &want) {
                    Ok(()) => {
                        k8s_services = outcome;
                        unsaved = true;
                        refresh(&backends, &want);
                        if let Some(k) = &k8s {
                            k.set_vips(vip_addresses(&want));
                        }
                    }
                    Err(e) => {
                        stats.reload_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::error!("applying the Kubernetes services failed (the next change retries): {e:#}");
                    }
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
        if let Some((s, want)) = reloaded {
            statics = s;
            refresh(&backends, &want);
            if let Some(k) = &k8s {
                k.set_statics(static_keys(&statics));
                k.set_vips(vip_addresses(&want));
            }
        }
    }
    server.abort();
    keeper.abort();
    if let Some(k) = k8s {
        if unsaved {
            remember(&state_dir, &k8s_services);
        }
        if let Some(t) = leaders_task {
            t.abort();
        }
        // Hands the Leases over now rather than after they expire.
        k.shutdown().await;
        let _ = std::fs::remove_file(state_dir.join(kubernetes::leadership::FILE));
    }
    tracing::info!("stopping; the pinned data plane keeps forwarding (xlb stop removes it)");
    Ok(())
}

/// Says when a backend becomes unreachable from this node, and when it is
/// reachable again (not on every probe).
fn report_unreachable(list: Vec<(IpAddr, std::io::Error)>) {
    static KNOWN: Mutex<std::collections::BTreeSet<IpAddr>> =
        Mutex::new(std::collections::BTreeSet::new());
    let Ok(mut known) = KNOWN.lock() else {
        return;
    };
    let now: std::collections::BTreeSet<IpAddr> = list.iter().map(|(a, _)| *a).collect();
    for (addr, e) in &list {
        if !known.contains(addr) {
            tracing::warn!(backend = %addr, "backend unreachable from this node ({e}): its new flows are dropped (drop_no_route); other backends and VIPs keep serving");
        }
    }
    for addr in known.difference(&now) {
        tracing::info!(backend = %addr, "backend reachable again");
    }
    *known = now;
}

fn backend_addrs(d: &Desired) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = d
        .services
        .values()
        .flat_map(|s| s.backends.keys().copied())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// New backends get their neighbours resolved right away (the others are
/// the keeper's, every few seconds).
fn refresh(backends: &Mutex<Vec<IpAddr>>, applied: &Desired) {
    let list = backend_addrs(applied);
    let Ok(mut known) = backends.lock() else {
        return;
    };
    let new: Vec<IpAddr> = list
        .iter()
        .filter(|a| known.binary_search(a).is_err())
        .copied()
        .collect();
    *known = list;
    drop(known);
    if !new.is_empty() {
        let _ = crate::neigh::touch(&new);
    }
}

fn apply(dp: &Shared, stats: &Stats, desired: &Desired) -> Result<()> {
    let started = Instant::now();
    let report = dp
        .lock()
        .map_err(|_| anyhow::anyhow!("data plane lock poisoned"))?
        .apply(desired)?;
    let took = started.elapsed().as_secs_f64();
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    if let Ok(mut l) = stats.last.lock() {
        *l = (at, took);
    }
    stats.reconciles.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        vips = desired.services.len(),
        added = report.vips_added,
        removed = report.vips_removed,
        changed = report.vips_changed,
        writes = report.writes(),
        seconds = took,
        "reconciled"
    );
    Ok(())
}

/// Saves the Kubernetes part for the next start (see kubernetes::memory).
fn remember(state_dir: &Path, k8s: &Outcome) {
    if let Err(e) = kubernetes::memory::save(state_dir, &k8s.services) {
        tracing::warn!("saving the Kubernetes VIPs in {}: {e}", state_dir.display());
    }
}

/// The config file's VIPs with the Kubernetes ones; the config file wins a
/// VIP both name (the source has already refused such Services).
fn merge(statics: &Desired, k8s: &BTreeMap<Service, ServiceSpec>) -> Desired {
    let mut d = statics.clone();
    for (k, v) in k8s {
        d.services.entry(*k).or_insert_with(|| v.clone());
    }
    d
}

fn static_keys(d: &Desired) -> BTreeSet<Service> {
    d.services.keys().copied().collect()
}

fn vip_addresses(d: &Desired) -> BTreeSet<IpAddr> {
    d.services.keys().map(|s| s.address).collect()
}

/// The next translation from the Kubernetes source; never ready when there
/// is none (or it has stopped).
async fn k8s_changed(k8s: &mut Option<Kubernetes>) -> Option<Arc<Outcome>> {
    let Some(k) = k8s else {
        return std::future::pending().await;
    };
    loop {
        if k.outcome.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Some(o) = k.outcome.borrow_and_update().clone() {
            return Some(o);
        }
    }
}

/// Applies a new config, or keeps everything as it is when it is invalid.
/// Returns the config's own desired state and the merged one it applied.
fn reload(
    path: &Path,
    current: &mut Config,
    interfaces: &[String],
    k8s: &BTreeMap<Service, ServiceSpec>,
    dp: &Shared,
    stats: &Stats,
) -> Option<(Desired, Desired)> {
    let next = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            stats.reload_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!("config rejected, still running the previous one: {e}");
            return None;
        }
    };
    if next.dataplane != current.dataplane {
        tracing::warn!(
            "[dataplane] settings changed: they take effect at the next start; VIPs are applied now"
        );
    }
    if next.kubernetes != current.kubernetes {
        tracing::warn!("[kubernetes] settings changed: they take effect at the next start");
    }
    let statics = desired(&next, interfaces);
    let want = merge(&statics, k8s);
    if let Err(e) = apply(dp, stats, &want) {
        stats.reload_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!("applying the new config failed part-way (the next change retries): {e:#}");
        return None;
    }
    *current = next;
    Some((statics, want))
}

/// Modification time, size and content of the config, so an edit that
/// keeps the mtime (or an atomic rename) is still noticed.
fn fingerprint(path: &Path) -> Option<(SystemTime, u64, Vec<u8>)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), std::fs::read(path).ok()?))
}
