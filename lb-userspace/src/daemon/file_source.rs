//! The config file as a source of desired state: read at start, re-read on
//! SIGHUP or when its content changes. A file that does not validate is
//! reported and ignored: the last good config keeps running.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{signal::unix::Signal, sync::watch};
use tokio_util::sync::CancellationToken;

use super::desired_of;
use crate::{
    config::{self, Config},
    desired::Desired,
};

/// One valid config and the desired state it describes.
#[derive(Debug)]
pub(super) struct FileState {
    /// The config but its VIPs, which live on in `desired` only: kept in
    /// both they cost about 300 bytes more a VIP, 30 MB at 100,000 VIPs.
    pub(super) config: Config,
    pub(super) desired: Desired,
}

impl FileState {
    fn new(mut config: Config, interfaces: &[String]) -> Self {
        let desired = desired_of(&config, interfaces);
        config.vips = Vec::new();
        Self { config, desired }
    }
}

/// What identifies one version of the file without reading it: device and
/// inode (an atomic rename brings another), size, and both times. The
/// change time is the kernel's: every write moves it, and no one can set
/// it back, so an edit that restores the modification time (`touch -d`)
/// is still noticed. Read every second; reading the file itself each time
/// would cost 16 MB/s at 100,000 VIPs.
type Fingerprint = Option<[i64; 7]>;

/// The task that owns the config file's state.
pub(super) struct FileSource {
    path: PathBuf,
    interfaces: Vec<String>,
    every: Duration,
    seen: Fingerprint,
    current: watch::Sender<Arc<FileState>>,
    rejected: Arc<AtomicU64>,
}

impl FileSource {
    /// Starts from `config`, already loaded from `path` by the caller.
    pub(super) fn new(
        path: PathBuf,
        config: Config,
        interfaces: Vec<String>,
        every: Duration,
    ) -> Self {
        let seen = fingerprint(&path);
        let (current, _) = watch::channel(Arc::new(FileState::new(config, &interfaces)));
        Self {
            path,
            interfaces,
            every,
            seen,
            current,
            rejected: Arc::default(),
        }
    }

    /// The latest valid config; every reload that validates is published.
    pub(super) fn subscribe(&self) -> watch::Receiver<Arc<FileState>> {
        self.current.subscribe()
    }

    /// How many reloads were rejected (only this task counts them).
    pub(super) fn rejected(&self) -> Arc<AtomicU64> {
        self.rejected.clone()
    }

    pub(super) async fn run(mut self, mut hangup: Signal, stop: CancellationToken) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = hangup.recv() => {
                    tracing::info!("SIGHUP: reloading {}", self.path.display());
                    self.seen = fingerprint(&self.path);
                    self.reload().await;
                }
                _ = tick.tick() => {
                    let now = fingerprint(&self.path);
                    if now != self.seen {
                        self.seen = now;
                        tracing::info!("{} changed: reloading", self.path.display());
                        self.reload().await;
                    }
                }
            }
        }
    }

    async fn reload(&mut self) {
        let path = self.path.clone();
        // A large config takes a noticeable time to parse: off the workers.
        let loaded = tokio::task::spawn_blocking(move || config::load(&path)).await;
        let next = match loaded {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!("config rejected, still running the previous one: {e}");
                return;
            }
            Err(e) => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::error!("config reload failed, still running the previous one: {e}");
                return;
            }
        };
        let previous = self.current.borrow().clone();
        if next.dataplane != previous.config.dataplane {
            tracing::warn!(
                "[dataplane] settings changed: they take effect at the next start; VIPs are applied now"
            );
        }
        if next.kubernetes != previous.config.kubernetes {
            tracing::warn!("[kubernetes] settings changed: they take effect at the next start");
        }
        if next.kubernetes.enabled && next.health != previous.config.health {
            tracing::warn!(
                "[health] settings changed: Kubernetes Services keep the previous ones until \
                 the next start"
            );
        }
        self.current
            .send_replace(Arc::new(FileState::new(next, &self.interfaces)));
    }
}

fn fingerprint(path: &std::path::Path) -> Fingerprint {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some([
        m.dev() as i64,
        m.ino() as i64,
        m.size() as i64,
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ])
}
