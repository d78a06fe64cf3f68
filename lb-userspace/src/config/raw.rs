//! The config as written: each value has its TOML type and its span, and
//! nothing else is known about it yet. A key that is absent, or whose value
//! had the wrong type (already reported), is `None`.

use toml::Spanned;

#[derive(Debug, Default)]
pub(super) struct RawConfig {
    pub(super) dataplane: RawDataplane,
    pub(super) metrics: RawMetrics,
    pub(super) vips: Vec<RawVip>,
    pub(super) kubernetes: RawKubernetes,
    pub(super) announce: RawAnnounce,
}

#[derive(Debug, Default)]
pub(super) struct RawDataplane {
    pub(super) mode: Option<Spanned<String>>,
    pub(super) interfaces: Option<Vec<Spanned<String>>>,
    pub(super) xdp_mode: Option<Spanned<String>>,
    pub(super) pin_path: Option<Spanned<String>>,
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) encap: Option<Spanned<String>>,
    pub(super) scheduler: Option<Spanned<String>>,
    pub(super) maglev_table_size: Option<Spanned<i64>>,
    pub(super) flow_table_size: Option<Spanned<i64>>,
    pub(super) max_vips: Option<Spanned<i64>>,
    pub(super) max_backends: Option<Spanned<i64>>,
    pub(super) ipip_source_v4: Option<Spanned<String>>,
    pub(super) ipip_source_v6: Option<Spanned<String>>,
    pub(super) nexthop_ttl_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Default)]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
}

#[derive(Debug, Default)]
pub(super) struct RawVip {
    pub(super) address: Option<Spanned<String>>,
    pub(super) port: Option<Spanned<i64>>,
    pub(super) protocol: Option<Spanned<String>>,
    pub(super) encap: Option<Spanned<String>>,
    pub(super) scheduler: Option<Spanned<String>>,
    pub(super) backends: Option<Spanned<Vec<RawBackend>>>,
}

#[derive(Debug, Default)]
pub(super) struct RawBackend {
    pub(super) address: Option<Spanned<String>>,
    pub(super) weight: Option<Spanned<i64>>,
}

#[derive(Debug, Default)]
pub(super) struct RawKubernetes {
    pub(super) enabled: Option<Spanned<bool>>,
    pub(super) load_balancer_class: Option<Spanned<String>>,
    pub(super) include_unclassed: Option<Spanned<bool>>,
    pub(super) kubeconfig: Option<Spanned<String>>,
    pub(super) backend_target: Option<Spanned<String>>,
    pub(super) pools: Option<Vec<Spanned<String>>>,
    pub(super) lease_namespace: Option<Spanned<String>>,
    pub(super) node_name: Option<Spanned<String>>,
    pub(super) lease_duration_ms: Option<Spanned<i64>>,
    pub(super) renew_deadline_ms: Option<Spanned<i64>>,
    pub(super) retry_period_ms: Option<Spanned<i64>>,
}

#[derive(Debug, Default)]
pub(super) struct RawAnnounce {
    pub(super) mode: Option<Spanned<String>>,
}
