//! The XDP data plane as the daemon drives it: load (adopting compatible
//! pins), attach, reconcile, report.

use super::{
    Balancer, Settings,
    attach::{self, AttachError, Attached},
    pins::PinDir,
    reconcile::{Applied, Report},
};

use crate::{
    config::XdpMode,
    dataplane::{Dataplane, DataplaneError},
    desired::Desired,
    metrics::{BackendSample, Snapshot, VipSample},
};

pub struct XdpDataplane {
    balancer: Balancer,
    applied: Applied,
    pins: PinDir,
    /// The interfaces the program was attached to at start.
    attached: Vec<String>,
}

impl XdpDataplane {
    /// Loads the balancer with its maps pinned under `settings.pin_dir`
    /// (adopting them when compatible, replacing them with a logged reason
    /// when not) and runs it on `ifaces`.
    pub fn start(
        settings: &Settings,
        ifaces: &[String],
        mode: XdpMode,
    ) -> Result<Self, DataplaneError> {
        let root = settings.pin_dir.clone().ok_or(DataplaneError::NoPinDir)?;
        ensure_bpffs()?;
        std::fs::create_dir_all(&root).map_err(|source| DataplaneError::Pins {
            doing: "creating",
            path: root.clone(),
            source,
        })?;
        let pins = PinDir::new(root);
        let mut adopt = pins.has_maps();
        if adopt && let Some(why) = pins.incompatibility(settings) {
            tracing::warn!(
                pin_path = %pins.root.display(),
                "replacing pinned maps from an incompatible xlb: {why}; flows tracked by the old program are lost"
            );
            pins.remove(false).map_err(|source| DataplaneError::Pins {
                doing: "removing stale pins under",
                path: pins.root.clone(),
                source,
            })?;
            adopt = false;
        }
        let mut balancer = Balancer::load(settings)?;
        let applied = if adopt {
            let a = Applied::read(&balancer.maps, settings)?;
            tracing::info!(
                vips = a.vip_count(),
                "adopted pinned maps: established flows keep their backends"
            );
            a
        } else {
            Applied::empty(settings)
        };
        // One interface that cannot be used (missing, driver refuses) is
        // reported and skipped: the VIPs still reach the others.
        let mut attached = Vec::new();
        let mut indexes = Vec::new();
        let mut failures = Vec::new();
        for iface in ifaces {
            // The program balances only frames to the interface's own MAC:
            // known before the program runs there, so no frame of ours is
            // passed up as another host's meanwhile.
            let index = attach::index_of(iface);
            let known = if index == 0 {
                Err(AttachError::NoInterface(iface.clone()))
            } else {
                crate::ifaddr::mac(iface)
                    .map_err(|source| AttachError::Mac {
                        iface: iface.clone(),
                        source,
                    })
                    .and_then(|mac| Ok(balancer.maps.set_iface(index, mac)?))
            };
            if let Err(e) = known {
                tracing::error!(%iface, "not balancing on this interface: {e}");
                failures.push(e);
                continue;
            }
            match attach::attach(balancer.program_mut(), &pins, iface, mode) {
                Ok(Attached::Adopted { mode }) => {
                    attached.push(iface.clone());
                    indexes.push(index);
                    tracing::info!(%iface, %mode, "swapped the new program into the pinned link");
                }
                Ok(Attached::Fresh { mode }) => {
                    attached.push(iface.clone());
                    indexes.push(index);
                    tracing::info!(%iface, mode = attach::mode_name(mode), "attached");
                }
                Err(e) => {
                    tracing::error!(%iface, "not balancing on this interface: {e}");
                    failures.push(e);
                }
            }
        }
        if attached.is_empty() {
            return Err(DataplaneError::NoInterface(failures));
        }
        // Interfaces a pinned map remembers from an earlier daemon, or that
        // failed to attach just now.
        balancer.maps.retain_ifaces(&indexes)?;
        // Interfaces dropped from the config.
        for l in pins.links() {
            if !ifaces.contains(&l.iface) {
                tracing::info!(iface = %l.iface, "detaching from an interface no longer configured");
                if let Err(e) = l.detach() {
                    tracing::warn!(iface = %l.iface, "detaching failed: {e}");
                }
            }
        }
        let _ = std::fs::remove_file(pins.prog());
        balancer
            .program_mut()
            .pin(pins.prog())
            .map_err(DataplaneError::PinProgram)?;
        Ok(Self {
            balancer,
            applied,
            pins,
            attached,
        })
    }

    pub fn balancer(&self) -> &Balancer {
        &self.balancer
    }

    pub fn pins(&self) -> &PinDir {
        &self.pins
    }
}

impl Dataplane for XdpDataplane {
    fn name(&self) -> &'static str {
        "xdp"
    }

    fn apply(&mut self, desired: &Desired) -> Result<Report, DataplaneError> {
        Ok(self.applied.reconcile(&mut self.balancer.maps, desired)?)
    }

    fn health(&mut self) -> Result<(), DataplaneError> {
        let ours = self
            .balancer
            .program()
            .info()
            .map_err(DataplaneError::ProgramInfo)?
            .id();
        let running = attach::running(&self.attached).map_err(DataplaneError::Netlink)?;
        let detached: Vec<String> = self
            .attached
            .iter()
            .zip(running)
            .filter(|(_, id)| *id != Some(ours))
            .map(|(iface, _)| iface.clone())
            .collect();
        if detached.is_empty() {
            Ok(())
        } else {
            Err(DataplaneError::Detached(detached))
        }
    }

    fn snapshot(&mut self) -> Result<Snapshot, DataplaneError> {
        let maps = &self.balancer.maps;
        let status = super::status::read(maps, &self.pins)?;
        let mut s = Snapshot {
            dataplane: "xdp".into(),
            outcomes: status.outcomes.iter().map(|(n, v)| (*n, *v)).collect(),
            flow_entries: status.flow_entries,
            flow_capacity: status.flow_capacity,
            maglev_slots_used: status.maglev_slots_used,
            maglev_slots: status.maglev_slots,
            ..Snapshot::default()
        };
        for v in &status.vips {
            s.vips.push(VipSample {
                vip: v.vip.clone(),
                packets: v.packets,
                bytes: v.bytes,
            });
            for b in &v.backends {
                s.backends.push(BackendSample {
                    vip: v.vip.clone(),
                    backend: b.address.to_string(),
                    packets: b.packets,
                    bytes: b.bytes,
                });
            }
        }
        Ok(s)
    }
}

/// bpffs is not mounted on every machine; pins need it.
pub fn ensure_bpffs() -> Result<(), DataplaneError> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.next();
        f.next() == Some("/sys/fs/bpf") && f.next() == Some("bpf")
    });
    if mounted {
        return Ok(());
    }
    let ok = std::process::Command::new("mount")
        .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err(DataplaneError::NoBpffs)
    }
}
