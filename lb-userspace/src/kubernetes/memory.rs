//! The Kubernetes part of the desired state as last applied, kept in the
//! state directory. A restarted daemon serves it until its watches have
//! synced, so a restart (or an API server that is down at start) never
//! takes Kubernetes VIPs out of the maps and drops their flows.

use std::{net::IpAddr, path::Path};

use lb_common::Encap;
use serde::{Deserialize, Serialize};

use crate::{
    desired::{ServiceSpec, Services},
    vip::Vip,
};

pub const FILE: &str = "kubernetes.json";

#[derive(Serialize, Deserialize)]
struct Entry {
    address: IpAddr,
    port: u16,
    protocol: u8,
    encap: String,
    scheduler: String,
    backends: Vec<(IpAddr, u32)>,
    /// Absent in files written before announcements existed.
    #[serde(default)]
    announce: crate::config::AnnounceMode,
    /// The Elastic IP of an `aws` VIP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    allocation_id: Option<crate::config::AllocationId>,
    /// Its health check, as a `[vip.health]` table; absent when it has
    /// none (and in files written before health checks existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health: Option<crate::config::HealthCheck>,
}

pub fn save(state_dir: &Path, services: &Services) -> std::io::Result<()> {
    let entries: Vec<Entry> = services
        .iter()
        .map(|(k, s)| Entry {
            address: k.address,
            port: k.port,
            protocol: k.protocol,
            encap: match s.encap {
                Encap::Ipip => "ipip",
                Encap::L2 => "l2",
            }
            .to_owned(),
            scheduler: s.scheduler.to_string(),
            backends: s.backends.iter().map(|(a, w)| (*a, *w)).collect(),
            announce: s.announce.mode(),
            allocation_id: s.announce.eip().cloned(),
            health: s.health.as_deref().cloned(),
        })
        .collect();
    std::fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&entries)?)?;
    std::fs::rename(tmp, state_dir.join(FILE))
}

/// The saved services; empty when there is no file. A file that cannot be
/// read is reported and ignored: the watches will bring the truth.
pub fn load(state_dir: &Path) -> Services {
    let path = state_dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Services::new(),
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            return Services::new();
        }
    };
    let entries: Vec<Entry> = match serde_json::from_slice(&bytes) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("ignoring {}: {e}", path.display());
            return Services::new();
        }
    };
    entries
        .into_iter()
        .map(|e| {
            let key = Vip {
                address: e.address,
                port: e.port,
                protocol: e.protocol,
            };
            let spec = ServiceSpec {
                encap: if e.encap == "l2" {
                    Encap::L2
                } else {
                    Encap::Ipip
                },
                scheduler: e.scheduler.into(),
                backends: std::sync::Arc::new(e.backends.into_iter().collect()),
                announce: crate::config::Announcement::new(e.announce, e.allocation_id),
                health: e.health.map(std::sync::Arc::new),
                table: Default::default(),
            };
            (key, spec)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CheckKind, Health};

    #[test]
    fn round_trip() {
        let dir = std::env::temp_dir().join(format!("xlb-k8s-memory-{}", std::process::id()));
        let mut m = Services::new();
        m.insert(
            Vip {
                address: "fd00::1".parse().unwrap(),
                port: 443,
                protocol: 6,
            },
            ServiceSpec {
                encap: Encap::L2,
                scheduler: "mh".into(),
                backends: std::sync::Arc::new(
                    [
                        ("fd00::10".parse().unwrap(), 0),
                        ("fd00::11".parse().unwrap(), 1),
                    ]
                    .into(),
                ),
                announce: crate::config::Announcement::Aws {
                    eip: crate::config::AllocationId::parse("eipalloc-0123456789abcdef0"),
                },
                health: None,
                table: Default::default(),
            },
        );
        // Every key of a check that is not a default, and one of defaults.
        let health = crate::config::parse(
            "[health]\nkind = \"http\"\nvia = \"direct\"\nport = 8080\ninterval_ms = 5000\n\
             timeout_ms = 4000\nrise = 1\nfall = 7\njitter_percent = 0\nfail_open = false\n\
             path = \"/ready?full=1\"\nstatus = \"204\"\nhost = \"example.com\"\n",
            "test",
        )
        .unwrap()
        .health;
        for (port, check) in [
            (80, health.defaults()),
            (81, Health::default().for_kind(CheckKind::Tcp, None)),
        ] {
            m.insert(
                Vip {
                    address: "10.0.0.1".parse().unwrap(),
                    port,
                    protocol: 6,
                },
                ServiceSpec {
                    encap: Encap::Ipip,
                    scheduler: "mh".into(),
                    backends: std::sync::Arc::default(),
                    announce: crate::config::Announcement::None,
                    health: Some(std::sync::Arc::new(check.unwrap())),
                    table: Default::default(),
                },
            );
        }
        save(&dir, &m).unwrap();
        assert_eq!(load(&dir), m);
        std::fs::write(dir.join(FILE), b"not json").unwrap();
        assert!(load(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
