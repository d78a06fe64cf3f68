//! The `bgp` announcer: keeps one blackhole route per announced VIP
//! address in a kernel table the node's routing daemon exports over BGP
//! (docs/bgp.md). Every healthy router announces; there is no election.
//!
//! A VIP address is announced while the data plane is in place, serves it
//! (it is in the applied state) with at least one backend taking new flows,
//! and the node is not draining. The routes outlive the daemon: a restart
//! or a kill -9 leaves them (the pinned data plane keeps forwarding, so the
//! network keeps sending), and only `xlb stop` or a drain withdraws them.

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::reconciler::{Applied, DataplaneHandle};
use crate::{
    announce::bgp::{self, BgpStatus, DRAIN_FILE},
    owned_routes::{Kind, OwnedRoutes},
};

/// How often the drain file and the data plane are looked at.
const TICK: Duration = Duration::from_millis(200);
/// How often the table is read back, repairing routes removed by hand.
const RESYNC: Duration = Duration::from_secs(10);

pub(super) struct Settings {
    pub(super) table: u32,
    pub(super) protocol: u8,
    pub(super) state_dir: PathBuf,
}

pub(super) async fn run(
    s: Settings,
    mut applied: watch::Receiver<Applied>,
    dataplane: DataplaneHandle,
    status_tx: watch::Sender<BgpStatus>,
    stop: CancellationToken,
) {
    let mut routes = match OwnedRoutes::open(s.table, s.protocol, Kind::Blackhole) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(
                table = s.table,
                "bgp: cannot open rtnetlink, nothing is announced: {e}"
            );
            return;
        }
    };
    let mut status = BgpStatus {
        table: s.table,
        protocol: s.protocol,
        ..BgpStatus::default()
    };
    // What is in the table now: read once, then kept, and read again every
    // RESYNC.
    let mut installed = routes.list().unwrap_or_default();
    let mut last_resync = tokio::time::Instant::now();
    let mut written = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            r = applied.changed() => if r.is_err() { break },
            _ = tick.tick() => {}
        }
        let draining = s.state_dir.join(DRAIN_FILE).exists();
        let handle = dataplane.clone();
        let attached = tokio::task::spawn_blocking(move || handle.health().is_ok())
            .await
            .unwrap_or(false);
        let served = applied.borrow_and_update().served.clone();
        let decided = bgp::decide(&served, draining, attached);
        if last_resync.elapsed() >= RESYNC {
            if let Ok(now) = routes.list() {
                installed = now;
            }
            last_resync = tokio::time::Instant::now();
        }
        let wanted: BTreeSet<IpAddr> = decided
            .iter()
            .filter(|(_, w)| w.is_none())
            .map(|(a, _)| *a)
            .collect();
        // Both decided before either changes `installed`.
        let add: Vec<IpAddr> = wanted.difference(&installed).copied().collect();
        let remove: Vec<IpAddr> = installed.difference(&wanted).copied().collect();
        let mut error = None;
        for addr in add {
            match routes.add(addr) {
                Ok(()) => {
                    tracing::info!(vip = %addr, table = s.table, "bgp: announced");
                    installed.insert(addr);
                    status.announcements += 1;
                }
                Err(e) => {
                    error = Some(format!(
                        "adding the route for {addr} to table {}: {e}",
                        s.table
                    ))
                }
            }
        }
        for addr in remove {
            let why = decided
                .get(&addr)
                .copied()
                .flatten()
                .map_or("no longer a bgp VIP", |w| w.as_str());
            match routes.remove(addr) {
                Ok(()) => {
                    tracing::info!(vip = %addr, table = s.table, "bgp: withdrawn ({why})");
                    installed.remove(&addr);
                    status.withdrawals += 1;
                }
                Err(e) => {
                    error = Some(format!(
                        "removing the route for {addr} from table {}: {e}",
                        s.table
                    ))
                }
            }
        }
        if let Some(e) = &error
            && status.error.as_ref() != Some(e)
        {
            tracing::error!("bgp: {e}");
        }
        let next = BgpStatus {
            draining,
            vips: decided,
            error,
            ..status.clone()
        };
        if next != status || !written {
            written = true;
            if next.draining != status.draining {
                tracing::info!(
                    draining = next.draining,
                    "bgp: drain {}",
                    if next.draining {
                        "begun: every route withdrawn"
                    } else {
                        "ended"
                    }
                );
            }
            status = next;
            if let Err(e) = status.write(&s.state_dir) {
                tracing::warn!("writing the bgp status: {e}");
            }
            status_tx.send_replace(status.clone());
        }
    }
}
