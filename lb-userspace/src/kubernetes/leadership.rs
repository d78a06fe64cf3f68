//! Who leads each VIP: what the Lease elector publishes and what a VIP
//! announcer (ARP, an Elastic IP) subscribes to. Every router node forwards
//! every VIP; only the leader may announce one.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The file `xlb status` reads, in the state directory.
pub const FILE: &str = "leaders.json";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leadership {
    /// This node's identity in the Leases.
    pub identity: String,
    pub vips: BTreeMap<IpAddr, Leader>,
    /// The live routers, this one included, as of the elector's last list
    /// of the Leases; empty before the first.
    #[serde(default)]
    pub routers: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    /// The Lease's holder as last read; `None` when unheld or unknown.
    pub holder: Option<String>,
    /// Whether this node leads: it holds the Lease and renewed it within
    /// the renew deadline.
    pub leading: bool,
}

impl Leadership {
    pub fn leads(&self, vip: IpAddr) -> bool {
        self.vips.get(&vip).is_some_and(|l| l.leading)
    }

    /// Whether this node is the one of the live routers that reports
    /// about `name` (a Service's `namespace/name`, which may have no VIP and
    /// so no bucket): the router with the highest hash of the name and its
    /// identity (rendezvous hashing), so every router picks the same one,
    /// and a router that joins or leaves moves only the names it wins or
    /// held.
    pub fn reports(&self, name: &str) -> bool {
        let score = |r: &str| super::events::fnv1a(&[name, r]);
        self.routers
            .iter()
            .max_by_key(|r| (score(r), r.as_str()))
            .is_some_and(|r| *r == self.identity)
    }

    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        crate::state_file::write(state_dir, FILE, self)
    }

    /// What the running daemon last published, if it elects leaders.
    pub fn read(state_dir: &Path) -> Option<Self> {
        crate::state_file::read(state_dir, FILE)
    }
}

/// A subscription to leadership changes: the interface an announcer codes
/// against. Cheap to clone; every clone sees every latest state.
#[derive(Clone, Debug)]
pub struct LeaderFeed(watch::Receiver<Leadership>);

impl LeaderFeed {
    pub fn new(rx: watch::Receiver<Leadership>) -> Self {
        Self(rx)
    }

    pub fn current(&self) -> Leadership {
        self.0.borrow().clone()
    }

    /// Waits for the next change; `None` once the elector has stopped.
    pub async fn changed(&mut self) -> Option<Leadership> {
        self.0.changed().await.ok()?;
        Some(self.0.borrow_and_update().clone())
    }
}
