//! Which data plane the daemon runs and why, in `<state_dir>/dataplane.json`,
//! so `xlb status` and `xlb stop` know where to look without a daemon.

use std::path::Path;

pub const FILE: &str = "dataplane.json";

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunState {
    /// "xdp" or "ipvs".
    pub dataplane: String,
    /// Why: requested, or what `auto` found.
    pub reason: String,
}

impl RunState {
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        crate::state_file::write(state_dir, FILE, self)
    }

    /// `None` when no daemon has recorded one (or the file is unreadable).
    pub fn read(state_dir: &Path) -> Option<Self> {
        crate::state_file::read(state_dir, FILE)
    }

    pub fn remove(state_dir: &Path) {
        let _ = std::fs::remove_file(state_dir.join(FILE));
    }
}
