//! The daemon's signals, taken over before anything else happens.
//!
//! SIGTERM, SIGINT and SIGHUP all terminate a process by default. The
//! handlers are installed as the first step of `run`, so a pod deleted while
//! xlb is still loading its program or syncing Kubernetes gets the same
//! clean shutdown as one deleted an hour later: Leases handed back, state
//! saved, the data plane left forwarding.

use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The installed handlers: `shutdown` is cancelled on the first SIGTERM or
/// SIGINT; `hangup` yields each SIGHUP (a reload request, the config
/// source's).
pub(super) struct Signals {
    pub(super) shutdown: CancellationToken,
    pub(super) hangup: Signal,
}

impl Signals {
    /// Installs the handlers. Needs a running tokio runtime.
    pub(super) fn install() -> std::io::Result<Self> {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let hangup = signal(SignalKind::hangup())?;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!("{name}: shutting down");
            token.cancel();
        });
        Ok(Self { shutdown, hangup })
    }
}
