//! Which IPVS services xlb owns, kept in a small JSON file in the state
//! directory (default `/run/xlb/ipvs-services.json`). It lives as long as
//! the IPVS tables do: both are gone after a reboot. Written atomically
//! (temporary file, then rename), so a crash leaves the old or the new list.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use super::IpvsError;
use crate::vip::Vip;

pub const FILE: &str = "ipvs-services.json";

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct OnDisk {
    services: BTreeSet<Vip>,
}

pub struct Ownership {
    path: PathBuf,
    owned: BTreeSet<Vip>,
}

impl Ownership {
    /// Reads the list under `state_dir`; a missing file owns nothing.
    pub fn load(state_dir: &Path) -> Result<Self, IpvsError> {
        let path = state_dir.join(FILE);
        let owned = match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice::<OnDisk>(&b)
                    .map_err(|e| IpvsError::State {
                        path: path.display().to_string(),
                        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                    })?
                    .services
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeSet::new(),
            Err(source) => {
                return Err(IpvsError::State {
                    path: path.display().to_string(),
                    source,
                });
            }
        };
        Ok(Self { path, owned })
    }

    pub fn owns(&self, key: &Vip) -> bool {
        self.owned.contains(key)
    }

    pub fn keys(&self) -> &BTreeSet<Vip> {
        &self.owned
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the list and writes it out before returning.
    pub fn set(&mut self, owned: BTreeSet<Vip>) -> Result<(), IpvsError> {
        if owned == self.owned && self.path.exists() {
            return Ok(());
        }
        let err = |source| IpvsError::State {
            path: self.path.display().to_string(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let body = serde_json::to_vec_pretty(&OnDisk {
            services: owned.clone(),
        })
        .map_err(|e| err(std::io::Error::other(e)))?;
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, body).map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        self.owned = owned;
        Ok(())
    }

    /// Forgets everything (after `xlb stop` removed the services).
    pub fn remove(self) -> std::io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}
