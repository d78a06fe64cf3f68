//! The data-plane abstraction the daemon drives: one desired state, two
//! implementations (XDP and IPVS), chosen by `select`.

use std::path::Path;

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
    #[error("{0}")]
    Setup(String),
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
    fn snapshot(&mut self) -> Result<Snapshot, String>;
}

/// What the daemon needs to start a data plane.
pub struct Start<'a> {
    pub settings: &'a xdp::Settings,
    pub interfaces: &'a [String],
    pub xdp_mode: xdp::attach::Mode,
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
                    Err(ipvs_err) => Err(DataplaneError::Setup(format!(
                        "no data plane available: XDP: {xdp_err}; IPVS: {ipvs_err}"
                    ))),
                }
            }
        },
    }
}

fn start_xdp(start: &Start<'_>) -> Result<XdpDataplane, DataplaneError> {
    let missing = caps::missing_for_xdp()
        .map_err(|e| DataplaneError::Setup(format!("reading this process's capabilities: {e}")))?;
    if !missing.is_empty() {
        return Err(DataplaneError::Setup(format!(
            "missing capabilities {} (XDP needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, or CAP_SYS_ADMIN; see docs/operations.md)",
            names(&missing)
        )));
    }
    XdpDataplane::start(start.settings, start.interfaces, start.xdp_mode)
}

fn start_ipvs(start: &Start<'_>) -> Result<IpvsDataplane, DataplaneError> {
    let missing = caps::missing(&[Capability::NetAdmin])
        .map_err(|e| DataplaneError::Setup(format!("reading this process's capabilities: {e}")))?;
    if !missing.is_empty() {
        return Err(DataplaneError::Setup(format!(
            "missing capability {} (IPVS needs CAP_NET_ADMIN)",
            names(&missing)
        )));
    }
    Ok(IpvsDataplane::start(start.state_dir)?)
}

fn names(caps: &[Capability]) -> String {
    caps.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
}
