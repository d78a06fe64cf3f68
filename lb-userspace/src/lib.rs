//! The `xlb` daemon's library: Maglev, the XDP data plane's loader and maps.

pub mod maglev;
pub mod xdp;
