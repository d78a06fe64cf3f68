//! The XDP programs, built by build.rs and embedded in the binary.

use aya::include_bytes_aligned;

pub static BALANCER: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-balancer"));
/// The balancer with logging compiled out (benchmark only).
pub static BALANCER_NOLOG: &[u8] =
    include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-balancer-nolog"));
pub static DECAP: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-decap"));
/// Benchmark floor: returns XDP_PASS.
pub static FLOOR_PASS: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-floor-pass"));
/// Benchmark floor: parses to L4, swaps MACs, returns XDP_TX.
pub static FLOOR_SWAP: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlb-floor-swap"));
