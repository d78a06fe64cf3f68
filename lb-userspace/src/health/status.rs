//! What the health checker publishes of itself: each checked backend's
//! state and last result, the VIPs failing open, counters for the
//! metrics. Written to the state directory for `xlb status`.

use std::{collections::BTreeMap, net::IpAddr, path::Path};

use serde::{Deserialize, Serialize};

use super::{probe::Failure, tracker::State};

/// The file `xlb status` reads, in the state directory.
pub const FILE: &str = "health.json";

/// Upper bounds of the probe latency histogram, seconds.
pub const LATENCY_BUCKETS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HealthStatus {
    /// One entry per (VIP, backend) with a check, sorted.
    pub backends: Vec<BackendHealth>,
    /// VIPs whose every serving backend is down, kept in rotation.
    pub fail_open: Vec<String>,
    /// How DSR-path probes reach backends here, or why they cannot.
    pub dsr_path: Option<String>,
    /// State changes of any backend.
    pub transitions: u64,
    /// Passed probes' latency: per-bucket counts (see [`LATENCY_BUCKETS`],
    /// then +Inf), the sum and the count.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_seconds: f64,
    pub latency_count: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendHealth {
    /// The VIP, as `10.0.0.1:80/tcp`.
    pub vip: String,
    pub backend: IpAddr,
    /// `tcp` or `http`.
    pub kind: String,
    /// `dsr` or `direct`: how it is actually probed.
    pub via: String,
    /// Why a backend whose check asks for `dsr` is probed direct (the
    /// data plane cannot carry DSR-path probes, no source address, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why_direct: Option<String>,
    /// Where the probes go (the VIP, or the backend's own address).
    pub target: String,
    pub state: State,
    /// Unix seconds of the last state change (or of the first check).
    pub since_unix: f64,
    /// The last probe: when, and its result.
    pub last_unix: Option<f64>,
    pub last_latency_ms: Option<f64>,
    /// Why the last probe failed; `None` when it passed.
    pub last_failure: Option<Failure>,
    /// Probe results by outcome (`pass`, `timeout`, `refused`, ...).
    pub results: BTreeMap<String, u64>,
    pub transitions: u64,
}

impl HealthStatus {
    pub fn write(&self, state_dir: &Path) -> std::io::Result<()> {
        crate::state_file::write(state_dir, FILE, self)
    }

    pub fn read(state_dir: &Path) -> Option<Self> {
        crate::state_file::read(state_dir, FILE)
    }

    /// Counts a passed probe's latency.
    pub fn observe(&mut self, seconds: f64) {
        if self.latency_buckets.len() != LATENCY_BUCKETS.len() + 1 {
            self.latency_buckets = vec![0; LATENCY_BUCKETS.len() + 1];
        }
        let i = LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[i] += 1;
        self.latency_sum_seconds += seconds;
        self.latency_count += 1;
    }
}
