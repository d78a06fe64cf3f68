//! Backend health checks: probes (TCP or HTTP, through the DSR path or
//! direct), the rise/fall state of each backend, when probes are sent, how
//! a down backend leaves its VIP, and the DSR path itself (the tc program's
//! device, table and rule). The task that runs them is
//! `daemon::health_checker`; docs/health.md says what each check proves.

pub mod gate;
pub mod path;
pub mod probe;
pub mod rp_filter;
pub mod schedule;
pub mod status;
pub mod tracker;
