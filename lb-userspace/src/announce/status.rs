//! What the announcer publishes of itself: per VIP address, how it is
//! announced, who leads it, and (for `l2`) what was last sent. Written to
//! the state directory for `xlb status`, read by the metrics.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use serde::{Deserialize, Serialize};

use crate::config::AnnounceMode;

/// The file `xlb status` reads, in the state directory.
pub const FILE: &str = "announce.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AnnounceStatus {
    /// Per VIP address announced in some mode.
    pub vips: BTreeMap<IpAddr, VipAnnouncement>,
    /// Times this node started or stopped owning an address.
    pub transitions: u64,
    /// Gratuitous ARPs and unsolicited neighbour advertisements sent.
    pub gratuitous_sent: u64,
    /// Sends that failed.
    pub send_errors: u64,
    /// CLOCK_MONOTONIC ns of the last heartbeat written (0: none yet).
    pub heartbeat_ns: u64,
    /// The liveness bound in effect, ms.
    pub liveness_bound_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VipAnnouncement {
    pub mode: AnnounceMode,
    /// Whether this node claims it now.
    pub owned: bool,
    /// The elected holder as last seen (`None`: no election, or unheld).
    pub leader: Option<String>,
    /// Unix seconds of the last gratuitous announcement sent for it.
    pub last_announcement_unix: Option<f64>,
    pub announcements: u64,
}

impl AnnounceStatus {
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        crate::state_file::write(state_dir, FILE, self)
    }

    pub fn read(state_dir: &Path) -> Option<Self> {
        crate::state_file::read(state_dir, FILE)
    }
}
