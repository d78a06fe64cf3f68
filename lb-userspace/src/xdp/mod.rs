//! The XDP data plane: the embedded programs, their loader, and typed
//! access to their maps.

pub mod loader;
pub mod maps;
pub mod objects;

pub use loader::{Balancer, LoadError, Settings};
pub use maps::Maps;
