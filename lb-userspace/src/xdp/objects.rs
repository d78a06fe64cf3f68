//! The eBPF programs, built by build.rs and embedded in the binary.

use aya::include_bytes_aligned;

pub static BALANCER: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-balancer"));
pub static DECAP: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-decap"));
/// The probe path's tc egress program (`health::path`).
pub static PROBE: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-probe"));
