//! The XDP data plane: the embedded programs, their loader, and typed
//! access to their maps.

pub mod attach;
pub mod claims;
pub mod dataplane;
pub mod decap;
pub mod ids;
pub mod loader;
mod mapped;
pub mod maps;
pub mod objects;
pub mod pins;
pub mod reconcile;
pub mod route_epoch;
pub mod slots;
pub mod status;

pub use claims::Claims;
pub use decap::Decapsulator;
pub use loader::{Balancer, LoadError, Settings};
pub use maps::Maps;
