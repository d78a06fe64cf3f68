//! The route epoch (`XLB_ROUTE_EPOCH`): the program keeps each backend's
//! route (egress interface, MACs, MTU fit) per CPU while the epoch it was
//! looked up in is current, and reads no clock on the fast path. Whoever
//! holds this moves the epoch when routes may have changed: the daemon's
//! `follow` on every route, neighbour and link notification, and every
//! period in case one was missed.

use std::{path::Path, time::Duration};

use aya::{Ebpf, maps::MapData};
use lb_common::names;
use tokio_util::sync::CancellationToken;

use super::{LoadError, mapped::MappedArray};
use crate::netlink::{Notifications, groups};

/// Notifications arriving closer together than this move the epoch once:
/// a burst of neighbour changes costs each CPU one FIB lookup per backend,
/// not one per notification.
const COALESCE: Duration = Duration::from_millis(10);

pub struct RouteEpoch(MappedArray);

impl RouteEpoch {
    /// The epoch map of a loaded balancer (taken out of it: one owner).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        match ebpf.take_map(names::ROUTE_EPOCH) {
            Some(aya::maps::Map::Array(data)) => {
                Ok(Self(MappedArray::new(data, names::ROUTE_EPOCH)?))
            }
            _ => Err(LoadError::Missing(names::ROUTE_EPOCH)),
        }
    }

    /// The epoch map pinned under `dir` by a running balancer.
    pub fn open_pinned(dir: &Path) -> Result<Self, LoadError> {
        let map =
            MapData::from_pin(dir.join(names::ROUTE_EPOCH)).map_err(|source| LoadError::Map {
                name: names::ROUTE_EPOCH,
                source,
            })?;
        Ok(Self(MappedArray::new(map, names::ROUTE_EPOCH)?))
    }

    pub fn get(&self) -> u64 {
        self.0.get(0)
    }

    /// Every CPU looks its cached routes up again on their next packet.
    pub fn bump(&mut self) {
        let next = self.get().wrapping_add(1);
        self.0.set(0, next);
    }
}

/// Moves the epoch on every link, neighbour and route change the kernel
/// reports, at most once per `COALESCE`, and every `period` regardless,
/// until `stop`. Without notifications (the subscription failed) the
/// period alone bounds how long a stale route is used.
pub async fn follow(mut epoch: RouteEpoch, period: Duration, stop: CancellationToken) {
    let subscribed = Notifications::open(&[
        groups::LINK,
        groups::NEIGH,
        groups::IPV4_ROUTE,
        groups::IPV6_ROUTE,
    ]);
    let mut notes = match subscribed {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(
                "route epoch: no route/neighbour notifications ({e}); cached routes renew every {period:?} only"
            );
            None
        }
    };
    epoch.bump();
    let mut every = tokio::time::interval(period);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    every.reset();
    loop {
        let note = async {
            match &notes {
                Some(n) => n.next().await,
                None => std::future::pending().await,
            }
        };
        let got = tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {
                epoch.bump();
                continue;
            }
            got = note => got,
        };
        match got {
            Ok(_) => {}
            // Some were lost: a change all the same.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => {
                tracing::warn!(
                    "route epoch: reading notifications: {e}; cached routes renew every {period:?} only"
                );
                notes = None;
            }
        }
        epoch.bump();
        every.reset();
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(COALESCE) => {}
        }
    }
}
