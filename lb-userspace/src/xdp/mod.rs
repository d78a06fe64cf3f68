//! The XDP data plane: the embedded programs, their loader, and typed
//! access to their maps.

pub mod decap;
pub mod loader;
pub mod maps;
pub mod objects;

pub use decap::Decapsulator;
pub use loader::{Balancer, LoadError, Settings};
pub use maps::Maps;
