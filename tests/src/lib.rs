//! Test harness for xlb: network namespaces that clean up after themselves,
//! a packet builder with its own checksum code (independent of the XDP
//! program's), and the lab in which packets meet the real program.

pub mod aws;
pub mod bench_k8s;
pub mod bench_scale;
pub mod bgp_topology;
pub mod bird;
pub mod daemon;
pub mod dump;
pub mod k8s_objects;
pub mod kube_api;
pub mod lab;
pub mod many_vips;
pub mod netns;
pub mod packet;
pub mod peers;
pub mod procfs;
pub mod rng;
pub mod test_run;
pub mod topology;
pub mod vm;
