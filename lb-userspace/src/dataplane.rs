//! The data-plane abstraction the daemon drives: one desired state, two
//! implementations (XDP and IPVS), chosen by `select`.

use std::path::{Path, PathBuf};

use crate::{
    caps::{self, Capability},
    config::DataplaneMode,
    desired::Desired,
    ipvs::{self, IpvsDataplane},
    metrics::Snapshot,
    xdp::{self, dataplane::XdpDataplane, reconcile::Report},
};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("reading this process's capabilities: {0}")]
    Capabilities(std::io::Error),
    // "capabilities" whatever the count: operators grep for it.
    #[error("missing capabilities {} ({needs})", names(missing))]
    MissingCapabilities {
        missing: Vec<Capability>,
        needs: &'static str,
    },
    #[error("no data plane available: XDP: {xdp}; IPVS: {ipvs}")]
    Unavailable {
        xdp: Box<DataplaneError>,
        ipvs: Box<DataplaneError>,
    },
    #[error(
        "bpffs is not mounted at /sys/fs/bpf and mounting it failed (needs CAP_SYS_ADMIN once)"
    )]
    NoBpffs,
    #[error("no pin directory set (dataplane.pin_path)")]
    NoPinDir,
    #[error("{doing} {}: {source}", path.display())]
    Pins {
        doing: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pinning the program: {0}")]
    PinProgram(aya::pin::PinError),
    #[error("no interface could be used: {}", join(.0))]
    NoInterface(Vec<xdp::attach::AttachError>),
    #[error("XDP is no longer attached to {}", .0.join(", "))]
    Detached(Vec<String>),
    #[error("reading the attached XDP programs: {0}")]
    Netlink(std::io::Error),
    #[error("reading the balancer program's id: {0}")]
    ProgramInfo(aya::programs::ProgramError),
    #[error(transparent)]
    Load(#[from] xdp::LoadError),
    #[error(transparent)]
    Maps(#[from] xdp::maps::MapsError),
    #[error(transparent)]
    Reconcile(#[from] xdp::reconcile::ReconcileError),
    #[error(transparent)]
    Ipvs(#[from] ipvs::IpvsError),
}

/// A data plane: brought to a desired state by `apply`, observed by `snapshot`.
pub trait Dataplane: Send {
    fn name(&self) -> &'static str;
    /// Applies only what differs from what the data plane holds.
    fn apply(&mut self, desired: &Desired) -> Result<Report, DataplaneError>;
    fn snapshot(&mut self) -> Result<Snapshot, DataplaneError>;
    /// Whether the data plane is still in place as started (XDP: our
    /// program on every interface it was attached to), for `/healthz`.
    fn health(&mut self) -> Result<(), DataplaneError>;
}

/// What the daemon needs to start a data plane.
pub struct Start<'a> {
    pub settings: &'a xdp::Settings,
    pub interfaces: &'a [String],
    pub xdp_mode: crate::config::XdpMode,
    /// Where the IPVS data plane records the services it owns.
    pub state_dir: &'a Path,
}

/// Starts the requested data plane and says why it is the one. `Auto`
/// tries XDP (capabilities, load, verifier, attach) and, when any step
/// fails, logs the exact reason and starts IPVS; when IPVS cannot start
/// either, the error carries both reasons.
pub fn select(
    mode: DataplaneMode,
    start: &Start<'_>,
) -> Result<(Box<dyn Dataplane>, String), DataplaneError> {
    match mode {
        DataplaneMode::Xdp => Ok((Box::new(start_xdp(start)?), "requested: xdp".into())),
        DataplaneMode::Ipvs => Ok((Box::new(start_ipvs(start)?), "requested: ipvs".into())),
        DataplaneMode::Auto => match start_xdp(start) {
            Ok(dp) => Ok((
                Box::new(dp),
                "auto: XDP loaded, verified and attached".into(),
            )),
            Err(xdp_err) => {
                tracing::warn!("auto: XDP cannot be used: {xdp_err}; trying IPVS");
                match start_ipvs(start) {
                    Ok(dp) => Ok((
                        Box::new(dp),
                        format!("auto: XDP cannot be used ({xdp_err}); using IPVS"),
                    )),
                    Err(ipvs_err) => Err(DataplaneError::Unavailable {
                        xdp: Box::new(xdp_err),
                        ipvs: Box::new(ipvs_err),
                    }),
                }
            }
        },
    }
}

fn start_xdp(start: &Start<'_>) -> Result<XdpDataplane, DataplaneError> {
    let missing = caps::missing_for_xdp().map_err(DataplaneError::Capabilities)?;
    if !missing.is_empty() {
        return Err(DataplaneError::MissingCapabilities {
            missing,
            needs: "XDP needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, or CAP_SYS_ADMIN; see docs/operations.md",
        });
    }
    XdpDataplane::start(start.settings, start.interfaces, start.xdp_mode)
}

fn start_ipvs(start: &Start<'_>) -> Result<IpvsDataplane, DataplaneError> {
    let missing = caps::missing(&[Capability::NetAdmin]).map_err(DataplaneError::Capabilities)?;
    if !missing.is_empty() {
        return Err(DataplaneError::MissingCapabilities {
            missing,
            needs: "IPVS needs CAP_NET_ADMIN",
        });
    }
    Ok(IpvsDataplane::start(start.state_dir)?)
}

fn join(errors: &[xdp::attach::AttachError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn names(caps: &[Capability]) -> String {
    caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}
