//! The `bgp` announcer: keeps one blackhole route per announced VIP
//! address in a kernel table the node's routing daemon exports over BGP
//! (docs/bgp.md). Every healthy router announces; there is no election.
//!
//! A VIP address is announced while the data plane is in place, serves it
//! (it is in the applied state) with at least one backend taking new flows,
//! and the node is not draining. The routes outlive the daemon: a restart
//! or a kill -9 leaves them (the pinned data plane keeps forwarding, so the
//! network keeps sending), and only `xlb stop` or a drain withdraws them.

use std::{collections::BTreeSet, io, net::IpAddr, path::PathBuf, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::reconciler::{Applied, DataplaneHandle, QueryError};
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

/// Where the routes go: the kernel table, or a unit test's set.
trait RouteTable {
    fn list(&mut self) -> io::Result<BTreeSet<IpAddr>>;
    fn add(&mut self, addr: IpAddr) -> io::Result<()>;
    fn remove(&mut self, addr: IpAddr) -> io::Result<()>;
}

impl RouteTable for OwnedRoutes {
    fn list(&mut self) -> io::Result<BTreeSet<IpAddr>> {
        OwnedRoutes::list(self)
    }
    fn add(&mut self, addr: IpAddr) -> io::Result<()> {
        OwnedRoutes::add(self, addr)
    }
    fn remove(&mut self, addr: IpAddr) -> io::Result<()> {
        OwnedRoutes::remove(self, addr)
    }
}

/// What the data plane's owner said about the data plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attachment {
    Attached,
    Detached,
    /// No answer: the reconciler has stopped (a shutdown under way) or
    /// the query's thread failed. Nothing is known about the data plane,
    /// and it is pinned: it most likely still forwards.
    Unknown,
}

impl Attachment {
    fn of(answer: Result<Result<(), QueryError>, tokio::task::JoinError>) -> Self {
        match answer {
            Ok(Ok(())) => Self::Attached,
            Ok(Err(QueryError::Dataplane(_))) => Self::Detached,
            Ok(Err(QueryError::Stopped)) | Err(_) => Self::Unknown,
        }
    }
}

pub(super) async fn run(
    s: Settings,
    applied: watch::Receiver<Applied>,
    dataplane: DataplaneHandle,
    status_tx: watch::Sender<BgpStatus>,
    stop: CancellationToken,
) {
    let routes = match OwnedRoutes::open(s.table, s.protocol, Kind::Blackhole) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(
                table = s.table,
                "bgp: cannot open rtnetlink, nothing is announced: {e}"
            );
            return;
        }
    };
    let probe = move || dataplane.health();
    announce(s, routes, applied, probe, status_tx, stop).await;
}

/// The announcer's loop, over any table and any way of asking the data
/// plane whether it is attached.
async fn announce(
    s: Settings,
    mut routes: impl RouteTable,
    mut applied: watch::Receiver<Applied>,
    probe: impl Fn() -> Result<(), QueryError> + Clone + Send + 'static,
    status_tx: watch::Sender<BgpStatus>,
    stop: CancellationToken,
) {
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
        // Stop first: the reconciler stops on the same token and answers
        // no more queries.
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            r = applied.changed() => if r.is_err() { break },
            _ = tick.tick() => {}
        }
        let draining = s.state_dir.join(DRAIN_FILE).exists();
        // Seen now, so an unanswered query does not wake the loop again
        // at once for the same change.
        let (served, failing_open, announce_fail_open) = {
            let a = applied.borrow_and_update();
            (
                a.served.clone(),
                a.failing_open.clone(),
                a.announce_fail_open,
            )
        };
        let ask = probe.clone();
        let attachment = Attachment::of(tokio::task::spawn_blocking(ask).await);
        // A stop that came during the query: whatever it answered, the
        // shutdown decides, and a plain shutdown keeps the routes.
        if stop.is_cancelled() {
            break;
        }
        let attached = match attachment {
            Attachment::Attached => true,
            Attachment::Detached => false,
            Attachment::Unknown => {
                tracing::debug!("bgp: the data plane did not answer; the table is left as it is");
                continue;
            }
        };
        let decided = bgp::decide(
            &served,
            bgp::Gates {
                failing_open: &failing_open,
                announce_fail_open,
                draining,
                attached,
            },
        );
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
        // Counted on a copy: a pass whose only change is a count still
        // publishes (the metrics follow every failed write).
        let mut counts = status.clone();
        for addr in add {
            match routes.add(addr) {
                Ok(()) => {
                    tracing::info!(vip = %addr, table = s.table, "bgp: announced");
                    installed.insert(addr);
                    counts.announcements += 1;
                }
                Err(e) => {
                    counts.write_errors += 1;
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
                    counts.withdrawals += 1;
                }
                Err(e) => {
                    counts.write_errors += 1;
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
            installed: installed.clone(),
            error,
            ..counts
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

#[cfg(test)]
mod tests {
    use std::{
        net::Ipv4Addr,
        sync::{
            Arc, Mutex,
            atomic::{AtomicU32, Ordering},
        },
    };

    use super::*;
    use crate::{
        config::Announcement,
        dataplane::DataplaneError,
        desired::{Desired, ServiceSpec},
        vip::Vip,
    };

    const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));

    /// A table; `refuse` makes every add fail, as a kernel refusing the
    /// route would.
    #[derive(Clone, Default)]
    struct Table(Arc<Mutex<BTreeSet<IpAddr>>>, bool);

    impl RouteTable for Table {
        fn list(&mut self) -> io::Result<BTreeSet<IpAddr>> {
            Ok(self.0.lock().unwrap().clone())
        }
        fn add(&mut self, addr: IpAddr) -> io::Result<()> {
            if self.1 {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            self.0.lock().unwrap().insert(addr);
            Ok(())
        }
        fn remove(&mut self, addr: IpAddr) -> io::Result<()> {
            self.0.lock().unwrap().remove(&addr);
            Ok(())
        }
    }

    fn served() -> Applied {
        let spec = ServiceSpec {
            encap: lb_common::Encap::Ipip,
            scheduler: "mh".into(),
            backends: Arc::new([(IpAddr::from([10, 1, 0, 1]), 1)].into_iter().collect()),
            announce: Announcement::Bgp,
            health: None,
            table: Default::default(),
        };
        let vip = Vip {
            address: VIP,
            port: 80,
            protocol: lb_common::PROTO_TCP,
        };
        let d = Arc::new(Desired {
            services: [(vip, spec)].into_iter().collect(),
            ..Desired::default()
        });
        Applied {
            desired: d.clone(),
            served: d,
            ..Applied::default()
        }
    }

    /// Runs the loop on a table holding the VIP's route, with `probe`
    /// asked at each pass; returns what the table holds at the end.
    async fn after(
        name: &str,
        probe: impl Fn(&CancellationToken) -> Result<(), QueryError> + Clone + Send + Sync + 'static,
    ) -> BTreeSet<IpAddr> {
        let dir = std::env::temp_dir().join(format!("xlb-bgp-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Settings {
            table: 4243,
            protocol: 178,
            state_dir: dir.clone(),
        };
        let table = Table::default();
        table.0.lock().unwrap().insert(VIP);
        let (_applied_tx, applied) = watch::channel(served());
        let (status_tx, _status) = watch::channel(BgpStatus::default());
        let stop = CancellationToken::new();
        let token = stop.clone();
        let ask = move || probe(&token);
        let run = announce(s, table.clone(), applied, ask, status_tx, stop);
        tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .expect("the loop ends when stopped");
        let _ = std::fs::remove_dir_all(dir);
        table.0.lock().unwrap().clone()
    }

    /// The shutdown race: SIGTERM cancels the token while a pass is
    /// asking the data plane, and the reconciler, stopping on the same
    /// token, never answers. A plain shutdown must keep the routes.
    #[tokio::test]
    async fn a_shutdown_during_the_query_keeps_the_routes() {
        let got = after("race", |stop| {
            stop.cancel();
            Err(QueryError::Stopped)
        })
        .await;
        assert_eq!(got, [VIP].into_iter().collect());
    }

    /// A reconciler that stopped answering is not a detached data plane.
    #[tokio::test]
    async fn no_answer_is_not_detached() {
        let asked = Arc::new(AtomicU32::new(0));
        let got = after("silent", move |stop| {
            if asked.fetch_add(1, Ordering::Relaxed) == 3 {
                stop.cancel();
            }
            Err(QueryError::Stopped)
        })
        .await;
        assert_eq!(got, [VIP].into_iter().collect());
    }

    /// The data plane answering that it is detached withdraws.
    #[tokio::test]
    async fn a_detached_data_plane_withdraws() {
        let asked = Arc::new(AtomicU32::new(0));
        let got = after("detached", move |stop| {
            if asked.fetch_add(1, Ordering::Relaxed) == 2 {
                stop.cancel();
            }
            Err(QueryError::Dataplane(DataplaneError::Detached(vec![
                "eth0".into(),
            ])))
        })
        .await;
        assert_eq!(got, BTreeSet::new());
    }

    /// A route the kernel refuses: the status says it is not installed,
    /// with the error, and the metrics say it is not announced.
    #[tokio::test]
    async fn a_refused_route_shows_in_status_and_metrics() {
        let dir = std::env::temp_dir().join(format!("xlb-bgp-refused-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = Settings {
            table: 4243,
            protocol: 178,
            state_dir: dir.clone(),
        };
        let (_applied_tx, applied) = watch::channel(served());
        let (status_tx, mut status) = watch::channel(BgpStatus::default());
        let stop = CancellationToken::new();
        let run = announce(
            s,
            Table(Arc::default(), true),
            applied,
            || Ok(()),
            status_tx,
            stop.clone(),
        );
        let task = tokio::spawn(run);
        let got = tokio::time::timeout(
            Duration::from_secs(30),
            status.wait_for(|b| b.write_errors >= 2),
        )
        .await
        .expect("the announcer retries the write")
        .unwrap()
        .clone();
        stop.cancel();
        task.await.unwrap();
        let _ = std::fs::remove_dir_all(dir);
        assert_eq!(got.vips[&VIP], None, "decided to announce");
        assert!(got.installed.is_empty());
        assert!(!got.settled());
        let e = got.error.as_deref().unwrap();
        assert!(e.contains("10.0.0.1") && e.contains("4243"), "{e}");
        let sample = super::super::bgp_sample(&got).unwrap();
        assert_eq!(
            sample.vips,
            vec![("10.0.0.1".to_owned(), "table write failing", false)]
        );
        assert!(sample.write_failing);
    }
}
