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
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(FILE);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)
    }

    /// `None` when no daemon has recorded one (or the file is unreadable).
    pub fn read(state_dir: &Path) -> Option<Self> {
        serde_json::from_slice(&std::fs::read(state_dir.join(FILE)).ok()?).ok()
    }

    pub fn remove(state_dir: &Path) {
        let _ = std::fs::remove_file(state_dir.join(FILE));
    }
}
