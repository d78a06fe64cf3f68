//! The data-plane abstraction the daemon drives: one desired state, two
//! implementations (XDP here; IPVS in its own module), chosen by `select`.

use crate::{
    config::DataplaneMode,
    desired::Desired,
    metrics::Snapshot,
    xdp::{self, reconcile::Report},
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
}

/// A data plane: brought to a desired state by `apply`, observed by `snapshot`.
pub trait Dataplane: Send {
    fn name(&self) -> &'static str;
    /// Applies only what differs from what the data plane holds.
    fn apply(&mut self, desired: &Desired) -> Result<Report, DataplaneError>;
    fn snapshot(&self) -> Result<Snapshot, String>;
}

/// What the daemon needs to start a data plane.
pub struct Start<'a> {
    pub settings: &'a xdp::Settings,
    pub interfaces: &'a [String],
    pub xdp_mode: xdp::attach::Mode,
}

/// Starts the requested data plane. `Auto` tries XDP and would fall back
/// to IPVS; IPVS is not part of this build yet, so `Auto` means XDP and a
/// failure reports why XDP could not be used.
pub fn select(
    mode: DataplaneMode,
    start: &Start<'_>,
) -> Result<(Box<dyn Dataplane>, String), DataplaneError> {
    match mode {
        DataplaneMode::Xdp | DataplaneMode::Auto => {
            let why = if mode == DataplaneMode::Auto {
                "auto: XDP loaded, verified and attached"
            } else {
                "requested"
            };
            let dp = xdp::dataplane::XdpDataplane::start(
                start.settings,
                start.interfaces,
                start.xdp_mode,
            )
            .map_err(|e| match mode {
                DataplaneMode::Auto => DataplaneError::Setup(format!(
                    "no data plane available: XDP failed ({e}); IPVS is not available in this build"
                )),
                _ => e,
            })?;
            Ok((Box::new(dp), why.to_string()))
        }
        DataplaneMode::Ipvs => Err(DataplaneError::Setup(
            "dataplane ipvs is not available in this build (XDP only); use --dataplane xdp".into(),
        )),
    }
}
