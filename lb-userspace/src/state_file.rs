//! The JSON files the daemon leaves in its state directory for `xlb
//! status` and `xlb stop` (which data plane runs, who leads, what is
//! announced): written whole through a rename, so a reader never sees half
//! a file.

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

pub fn write(state_dir: &Path, name: &str, value: &impl Serialize) -> std::io::Result<()> {
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!("{name}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(tmp, state_dir.join(name))
}

/// `None` when the file is missing or unreadable.
pub fn read<T: DeserializeOwned>(state_dir: &Path, name: &str) -> Option<T> {
    serde_json::from_slice(&std::fs::read(state_dir.join(name)).ok()?).ok()
}
