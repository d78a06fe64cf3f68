//! Prometheus exporter.
//!
//! The data plane keeps its own counters (per-CPU BPF maps for XDP, the
//! kernel's IPVS stats otherwise). At every scrape the daemon reads them into
//! a [`Snapshot`], and [`render`] turns that into the OpenMetrics text
//! exposition with `prometheus-client`: a fresh [`Registry`] holding a
//! [`Collector`] that emits the snapshot's values as const metrics. Nothing
//! is accumulated between scrapes — the values are the kernel's absolute
//! readings.
//!
//! [`server::serve`] answers `GET /metrics`, `/healthz` and `/livez` over HTTP/1.1
//! (hyper), asking the daemon through [`server::Endpoints`].
//!
//! Exposed metrics:
//!
//! | name | type | labels |
//! |------|------|--------|
//! | `xlb_dataplane_info` | gauge (always 1) | `dataplane` |
//! | `xlb_packets_total` | counter | `outcome` |
//! | `xlb_vip_packets_total` | counter | `vip` |
//! | `xlb_vip_bytes_total` | counter | `vip` |
//! | `xlb_backend_packets_total` | counter | `vip`, `backend` |
//! | `xlb_backend_bytes_total` | counter | `vip`, `backend` |
//! | `xlb_flow_table_entries` | gauge | |
//! | `xlb_flow_table_capacity` | gauge | |
//! | `xlb_maglev_slots_used` | gauge | |
//! | `xlb_maglev_slots_capacity` | gauge | |
//! | `xlb_last_reconcile_timestamp_seconds` | gauge | |
//! | `xlb_last_reconcile_duration_seconds` | gauge | |
//! | `xlb_reconciles_total` | counter | |
//! | `xlb_config_reload_errors_total` | counter | |
//! | `xlb_aws_api_calls_total` | counter | `operation`, `result` |
//! | `xlb_aws_api_throttles_total` | counter | |
//! | `xlb_aws_moves_confirmed_total` | counter | |
//! | `xlb_aws_move_confirm_seconds_total` | counter | |
//! | `xlb_aws_last_move_confirm_seconds` | gauge | |
//! | `xlb_aws_vip_in_place` | gauge | `vip` |
//! | `xlb_aws_vip_error` | gauge | `vip` |
//! | `xlb_aws_backends_source_dest_check` | gauge | |
//! | `xlb_vip_announced` | gauge (1 announced over BGP, 0 withheld) | `vip`, `reason` |
//! | `xlb_bgp_draining` | gauge | |
//! | `xlb_bgp_announcements_total`, `xlb_bgp_withdrawals_total` | counter | |
//! | `xlb_bgp_table_write_errors_total` | counter | |
//! | `xlb_bgp_table_write_failing` | gauge | |
//! | `xlb_backend_health` | gauge (1 for the current state) | `vip`, `backend`, `state` |
//! | `xlb_health_checks_total` | counter | `vip`, `backend`, `outcome` |
//! | `xlb_health_transitions_total` | counter | `vip`, `backend` |
//! | `xlb_health_probe_duration_seconds` | histogram (passed probes) | |
//! | `xlb_vip_fail_open` | gauge (1 while failing open) | `vip` |
//! | `xlb_vips_fail_open` | gauge | |
//!
//! Each label set must appear at most once in a snapshot (OpenMetrics
//! forbids duplicate samples); the exporter does not merge duplicates.

pub mod server;

pub use server::{Endpoints, Health, Limits, ScrapeError, serve};

use std::fmt::{self, Write as _};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

/// `Content-Type` of what [`render`] produces.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything the exporter reports, read from the data plane at scrape time.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// `"xdp"` or `"ipvs"`.
    pub dataplane: String,
    /// Global per-outcome packet counters, e.g. `("tx", 12)`.
    pub outcomes: Vec<(&'static str, u64)>,
    /// Per-VIP counters.
    pub vips: Vec<VipSample>,
    /// Per-backend counters.
    pub backends: Vec<BackendSample>,
    /// Flow-table occupancy.
    pub flow_entries: u64,
    /// Flow-table size.
    pub flow_capacity: u64,
    /// Slots of the Maglev array the VIPs' tables take (XDP).
    pub maglev_slots_used: u64,
    /// Slots of the Maglev array.
    pub maglev_slots: u64,
    /// Unix time of the last applied reconcile; 0 before the first.
    pub last_reconcile_unix_seconds: f64,
    /// How long the last reconcile took.
    pub last_reconcile_duration_seconds: f64,
    /// Total reconciles applied.
    pub reconciles: u64,
    /// Total rejected configuration reloads.
    pub config_reload_errors: u64,
    /// Per-VIP leadership, when the Kubernetes source elects leaders.
    pub leaders: Vec<LeaderSample>,
    /// The `l2` announcer, when one runs.
    pub announce: Option<AnnounceSample>,
    /// The `aws` announcer, once it has an `aws` VIP.
    pub aws: Option<AwsSample>,
    /// The health checker, once some backend has a check.
    pub health: Option<HealthSample>,
    /// The `bgp` announcer, once it has a VIP (or drains).
    pub bgp: Option<BgpSample>,
}

/// What the `bgp` announcer does.
#[derive(Clone, Debug, Default)]
pub struct BgpSample {
    /// Per VIP address: why it is withheld ("" when it should be
    /// announced, or "table write failing" when it should and its route
    /// could not be added), and whether its route is in the table.
    pub vips: Vec<(String, &'static str, bool)>,
    pub draining: bool,
    pub announcements: u64,
    pub withdrawals: u64,
    pub write_errors: u64,
    /// The last table write failed.
    pub write_failing: bool,
}

/// What the health checker found.
#[derive(Clone, Debug, Default)]
pub struct HealthSample {
    pub backends: Vec<BackendHealthSample>,
    /// VIPs whose every backend is down, kept in rotation.
    pub fail_open: Vec<String>,
    /// Passed probes' latency: per-bucket counts over
    /// [`crate::health::status::LATENCY_BUCKETS`] then +Inf.
    pub latency_buckets: Vec<u64>,
    pub latency_sum_seconds: f64,
    pub latency_count: u64,
}

/// One checked backend.
#[derive(Clone, Debug, Default)]
pub struct BackendHealthSample {
    pub vip: String,
    pub backend: String,
    /// `up`, `down` or `unknown`.
    pub state: &'static str,
    /// Probe results by outcome.
    pub results: Vec<(String, u64)>,
    pub transitions: u64,
}

/// What the `aws` announcer did.
#[derive(Clone, Debug, Default)]
pub struct AwsSample {
    /// EC2 calls: (operation, result, count).
    pub calls: Vec<(String, String, u64)>,
    pub throttled: u64,
    pub moves_confirmed: u64,
    pub confirm_seconds_sum: f64,
    /// NaN before the first.
    pub last_confirm_seconds: f64,
    /// Per VIP: (address, this node leads it, in place, has an error).
    pub vips: Vec<(String, bool, bool, bool)>,
    pub backends_with_source_dest_check: u64,
    /// VIP addresses this node owns: it leads them and EC2 shows them on
    /// its ENI.
    pub owned: Vec<String>,
    /// Times this node started or stopped owning an `aws` VIP.
    pub transitions: u64,
}

/// What the `l2` announcer did.
#[derive(Clone, Debug, Default)]
pub struct AnnounceSample {
    /// VIP addresses this node answers ARP / neighbour discovery for.
    pub owned: Vec<String>,
    pub transitions: u64,
    pub gratuitous_sent: u64,
    pub send_errors: u64,
    /// Age of the heartbeat the data plane's answers are gated on (NaN
    /// before the first).
    pub liveness_age_seconds: f64,
    pub liveness_bound_seconds: f64,
}

/// Who leads one VIP, as this node last saw its Lease.
#[derive(Clone, Debug, Default)]
pub struct LeaderSample {
    /// The VIP address.
    pub vip: String,
    /// The Lease's holder ("" when unheld or unknown).
    pub holder: String,
    /// Whether this node leads it.
    pub leading: bool,
}

/// Counters of one VIP.
#[derive(Clone, Debug, Default)]
pub struct VipSample {
    /// The VIP, e.g. `"10.99.0.1:80/tcp"`.
    pub vip: String,
    /// Packets received for the VIP.
    pub packets: u64,
    /// Bytes received for the VIP.
    pub bytes: u64,
}

/// Counters of one backend of one VIP.
#[derive(Clone, Debug, Default)]
pub struct BackendSample {
    /// The VIP, as in [`VipSample::vip`].
    pub vip: String,
    /// The backend's address.
    pub backend: String,
    /// Packets sent to the backend.
    pub packets: u64,
    /// Bytes sent to the backend.
    pub bytes: u64,
}

/// Renders the OpenMetrics text exposition of a snapshot (ends with
/// `# EOF`), with prometheus-client.
pub fn render(s: &Snapshot) -> String {
    render_owned(s.clone())
}

/// [`render`] without the copy (the collector must own its data).
pub(crate) fn render_owned(s: Snapshot) -> String {
    let mut registry = Registry::with_prefix("xlb");
    registry.register_collector(Box::new(SnapshotCollector(s)));
    let mut out = String::with_capacity(4096);
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        // Unreachable in practice: writing to a String cannot fail and the
        // collector never hands prometheus-client a value it rejects.
        tracing::error!(error = %e, "metrics: encoding the exposition failed");
        out.clear();
        out.push_str("# EOF\n");
    }
    out
}

/// Emits a [`Snapshot`] as const metrics.
#[derive(Debug)]
struct SnapshotCollector(Snapshot);

impl Collector for SnapshotCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), fmt::Error> {
        let s = &self.0;

        gauge_family(
            &mut enc,
            "dataplane_info",
            "Data plane in use (always 1).",
            None,
            [([("dataplane", LabelValue(&s.dataplane))], 1)],
        )?;
        counter_family(
            &mut enc,
            "packets",
            "Packets processed by the data plane, by outcome.",
            None,
            s.outcomes
                .iter()
                .map(|(outcome, n)| ([("outcome", LabelValue(outcome))], *n)),
        )?;
        counter_family(
            &mut enc,
            "vip_packets",
            "Packets received for a virtual service.",
            None,
            s.vips
                .iter()
                .map(|v| ([("vip", LabelValue(&v.vip))], v.packets)),
        )?;
        counter_family(
            &mut enc,
            "vip",
            "Bytes received for a virtual service.",
            Some(&Unit::Bytes),
            s.vips
                .iter()
                .map(|v| ([("vip", LabelValue(&v.vip))], v.bytes)),
        )?;
        counter_family(
            &mut enc,
            "backend_packets",
            "Packets forwarded to a backend of a virtual service.",
            None,
            s.backends.iter().map(|b| (backend_labels(b), b.packets)),
        )?;
        counter_family(
            &mut enc,
            "backend",
            "Bytes forwarded to a backend of a virtual service.",
            Some(&Unit::Bytes),
            s.backends.iter().map(|b| (backend_labels(b), b.bytes)),
        )?;
        gauge(
            &mut enc,
            "flow_table_entries",
            "Entries in the flow (connection tracking) table.",
            None,
            saturating_i64(s.flow_entries),
        )?;
        gauge(
            &mut enc,
            "flow_table_capacity",
            "Capacity of the flow (connection tracking) table.",
            None,
            saturating_i64(s.flow_capacity),
        )?;
        gauge(
            &mut enc,
            "maglev_slots_used",
            "Slots of the Maglev array the VIPs' lookup tables take.",
            None,
            saturating_i64(s.maglev_slots_used),
        )?;
        gauge(
            &mut enc,
            "maglev_slots_capacity",
            "Slots of the Maglev array (dataplane.maglev_slots).",
            None,
            saturating_i64(s.maglev_slots),
        )?;
        gauge(
            &mut enc,
            "last_reconcile_timestamp",
            "Unix time of the last applied reconcile (0 before the first).",
            Some(&Unit::Seconds),
            finite_or_nan(s.last_reconcile_unix_seconds),
        )?;
        gauge(
            &mut enc,
            "last_reconcile_duration",
            "Duration of the last applied reconcile.",
            Some(&Unit::Seconds),
            finite_or_nan(s.last_reconcile_duration_seconds),
        )?;
        counter(
            &mut enc,
            "reconciles",
            "Reconciles applied to the data plane.",
            s.reconciles,
        )?;
        counter(
            &mut enc,
            "config_reload_errors",
            "Configuration reloads rejected.",
            s.config_reload_errors,
        )?;
        gauge_family(
            &mut enc,
            "vip_leader",
            "1 when this node leads the VIP (holds its Lease), else 0; holder is the Lease's holder.",
            None,
            s.leaders.iter().map(|l| {
                (
                    [
                        ("vip", LabelValue(&l.vip)),
                        ("holder", LabelValue(&l.holder)),
                    ],
                    i64::from(l.leading),
                )
            }),
        )?;
        if s.announce.is_some() || s.aws.is_some() {
            // One family for both modes; an address is announced in one
            // mode at a time, but a set keeps each sample unique anyway.
            let owned: std::collections::BTreeSet<&str> = (s.announce.iter())
                .flat_map(|a| &a.owned)
                .chain(s.aws.iter().flat_map(|a| &a.owned))
                .map(String::as_str)
                .collect();
            gauge_family(
                &mut enc,
                "vip_owner",
                "1 for each VIP address this node owns: answers ARP / neighbour solicitations for (l2), or leads and EC2 shows on its ENI (aws); absent when not owned.",
                None,
                owned.iter().map(|v| ([("vip", LabelValue(v))], 1)),
            )?;
            counter(
                &mut enc,
                "announce_transitions",
                "Times this node started or stopped owning a VIP address (l2 and aws).",
                s.announce.as_ref().map_or(0, |a| a.transitions)
                    + s.aws.as_ref().map_or(0, |a| a.transitions),
            )?;
        }
        if let Some(a) = &s.announce {
            counter(
                &mut enc,
                "announce_gratuitous_sent",
                "Gratuitous ARPs and unsolicited neighbour advertisements sent.",
                a.gratuitous_sent,
            )?;
            counter(
                &mut enc,
                "announce_send_errors",
                "Gratuitous announcements that could not be sent.",
                a.send_errors,
            )?;
            gauge(
                &mut enc,
                "announce_liveness_age",
                "Age of the heartbeat that keeps the data plane answering for owned VIPs.",
                Some(&Unit::Seconds),
                finite_or_nan(a.liveness_age_seconds),
            )?;
            gauge(
                &mut enc,
                "announce_liveness_bound",
                "Heartbeat age beyond which the data plane stops answering for owned VIPs.",
                Some(&Unit::Seconds),
                finite_or_nan(a.liveness_bound_seconds),
            )?;
        }
        if let Some(a) = &s.aws {
            aws(&mut enc, a)?;
        }
        if let Some(h) = &s.health {
            health(&mut enc, h)?;
        }
        if let Some(b) = &s.bgp {
            bgp(&mut enc, b)?;
        }
        Ok(())
    }
}

fn bgp(enc: &mut DescriptorEncoder, b: &BgpSample) -> fmt::Result {
    gauge_family(
        enc,
        "vip_announced",
        "1 while this node announces the VIP address over BGP (its route is in the exported table), 0 while it is not; reason says why not (or why it is still there).",
        None,
        b.vips.iter().map(|(vip, why, installed)| {
            (
                [("vip", LabelValue(vip)), ("reason", LabelValue(why))],
                i64::from(*installed),
            )
        }),
    )?;
    gauge(
        enc,
        "bgp_draining",
        "1 while the node is drained (xlb drain): every BGP route withdrawn.",
        None,
        i64::from(b.draining),
    )?;
    counter(
        enc,
        "bgp_announcements",
        "VIP routes added to the exported table.",
        b.announcements,
    )?;
    counter(
        enc,
        "bgp_withdrawals",
        "VIP routes removed from the exported table.",
        b.withdrawals,
    )?;
    counter(
        enc,
        "bgp_table_write_errors",
        "Writes to the exported table (adding or removing a VIP route) that failed; xlb status shows the last error.",
        b.write_errors,
    )?;
    gauge(
        enc,
        "bgp_table_write_failing",
        "1 while the last write to the exported table failed: what is announced differs from what xlb decided.",
        None,
        i64::from(b.write_failing),
    )
}

fn health(enc: &mut DescriptorEncoder, h: &HealthSample) -> fmt::Result {
    gauge_family(
        enc,
        "backend_health",
        "1 for each checked backend's current state (up, down, unknown).",
        None,
        h.backends.iter().map(|b| {
            let [vip, backend] = labels(b);
            ([vip, backend, ("state", LabelValue(b.state))], 1)
        }),
    )?;
    counter_family(
        enc,
        "health_checks",
        "Health probes by backend and outcome (pass, timeout, refused, reset, network, status, http).",
        None,
        h.backends.iter().flat_map(|b| {
            b.results.iter().map(move |(outcome, n)| {
                let [vip, backend] = labels(b);
                ([vip, backend, ("outcome", LabelValue(outcome))], *n)
            })
        }),
    )?;
    counter_family(
        enc,
        "health_transitions",
        "Times a backend's health state changed.",
        None,
        h.backends.iter().map(|b| (labels(b), b.transitions)),
    )?;
    let histogram = ProbeLatency(h);
    let m = enc.encode_descriptor(
        "health_probe_duration",
        "Time a passing health probe took (connect, or the HTTP answer).",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    histogram.encode(m)?;
    gauge_family(
        enc,
        "vip_fail_open",
        "1 while every backend of the VIP is down and all are kept in rotation (fail_open).",
        None,
        h.fail_open.iter().map(|v| ([("vip", LabelValue(v))], 1)),
    )?;
    gauge(
        enc,
        "vips_fail_open",
        "VIPs whose every backend is down, kept in rotation.",
        None,
        h.fail_open.len() as i64,
    )
}

/// The checker's latency counts as an OpenMetrics histogram.
#[derive(Debug)]
struct ProbeLatency<'a>(&'a HealthSample);

impl EncodeMetric for ProbeLatency<'_> {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> fmt::Result {
        let bounds = crate::health::status::LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::MAX]);
        let buckets: Vec<(f64, u64)> = bounds
            .zip(
                self.0
                    .latency_buckets
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(0)),
            )
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.latency_sum_seconds,
            self.0.latency_count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn aws(enc: &mut DescriptorEncoder, a: &AwsSample) -> fmt::Result {
    counter_family(
        enc,
        "aws_api_calls",
        "EC2 API calls by operation and result (ok, throttled, denied, error, unreachable).",
        None,
        a.calls.iter().map(|(op, result, n)| {
            (
                [
                    ("operation", LabelValue(op)),
                    ("result", LabelValue(result)),
                ],
                *n,
            )
        }),
    )?;
    counter(
        enc,
        "aws_api_throttles",
        "EC2 calls answered with a throttling error (retried after a jittered backoff).",
        a.throttled,
    )?;
    counter(
        enc,
        "aws_moves_confirmed",
        "VIP moves to this node that EC2 was seen to have carried out.",
        a.moves_confirmed,
    )?;
    let sum = ConstCounter::new(a.confirm_seconds_sum);
    let m = enc.encode_descriptor(
        "aws_move_confirm",
        "Time from the first write of a move to EC2 showing it done, summed over moves \
         (divide by xlb_aws_moves_confirmed_total for the mean).",
        Some(&Unit::Seconds),
        sum.metric_type(),
    )?;
    sum.encode(m)?;
    gauge(
        enc,
        "aws_last_move_confirm",
        "Time the last move took to show in EC2 (NaN before the first).",
        Some(&Unit::Seconds),
        finite_or_nan(a.last_confirm_seconds),
    )?;
    gauge_family(
        enc,
        "aws_vip_in_place",
        "1 when this node leads the VIP and EC2 shows it (and its Elastic IP) here.",
        None,
        a.vips
            .iter()
            .filter(|v| v.1)
            .map(|(v, _, here, _)| ([("vip", LabelValue(v))], i64::from(*here))),
    )?;
    gauge_family(
        enc,
        "aws_vip_error",
        "1 when the VIP cannot be announced (see xlb status for why).",
        None,
        a.vips
            .iter()
            .map(|(v, _, _, err)| ([("vip", LabelValue(v))], i64::from(*err))),
    )?;
    gauge(
        enc,
        "aws_backends_source_dest_check",
        "Backends that are EC2 instances whose ENI still checks source/destination (drops DSR replies).",
        None,
        a.backends_with_source_dest_check as i64,
    )
}

fn labels(b: &BackendHealthSample) -> [(&'static str, LabelValue<'_>); 2] {
    [
        ("vip", LabelValue(&b.vip)),
        ("backend", LabelValue(&b.backend)),
    ]
}

fn backend_labels(b: &BackendSample) -> [(&'static str, LabelValue<'_>); 2] {
    [
        ("vip", LabelValue(&b.vip)),
        ("backend", LabelValue(&b.backend)),
    ]
}

/// A counter without labels; `name` is without the `_total` suffix, which
/// the encoder appends.
fn counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstCounter::new(value);
    let m = enc.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(m)
}

/// A labelled counter family; `name` is without the unit and `_total`
/// suffixes, which the encoder appends.
fn counter_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge without labels (i64 or f64).
fn gauge<N: prometheus_client::encoding::EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: N,
) -> fmt::Result {
    let metric = ConstGauge::new(value);
    let m = enc.encode_descriptor(name, help, unit, metric.metric_type())?;
    metric.encode(m)
}

/// A labelled gauge family.
fn gauge_family<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// prometheus-client encodes integer gauges as i64 (and refuses u64::MAX).
fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The text encoder would print infinities as `inf`, which is not valid
/// OpenMetrics; a non-finite reading is reported as `NaN`.
fn finite_or_nan(v: f64) -> f64 {
    if v.is_finite() { v } else { f64::NAN }
}

/// A label value, escaped for the text format (prometheus-client 0.23 writes
/// label values verbatim): `\` → `\\`, `"` → `\"`, newline → `\n`.
#[derive(Clone, Copy, Debug)]
struct LabelValue<'a>(&'a str);

impl EncodeLabelValue for LabelValue<'_> {
    fn encode(&self, enc: &mut LabelValueEncoder) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['\\', '"', '\n']) {
            enc.write_str(&rest[..i])?;
            enc.write_str(match rest.as_bytes()[i] {
                b'\\' => "\\\\",
                b'"' => "\\\"",
                _ => "\\n",
            })?;
            rest = &rest[i + 1..];
        }
        enc.write_str(rest)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample() -> Snapshot {
        Snapshot {
            dataplane: "xdp".into(),
            outcomes: vec![("tx", 12), ("pass", 3), ("drop", 0)],
            vips: vec![VipSample {
                vip: "10.99.0.1:80/tcp".into(),
                packets: 15,
                bytes: 1500,
            }],
            backends: vec![
                BackendSample {
                    vip: "10.99.0.1:80/tcp".into(),
                    backend: "10.0.0.2:8080".into(),
                    packets: 10,
                    bytes: 1000,
                },
                BackendSample {
                    vip: "10.99.0.1:80/tcp".into(),
                    backend: "10.0.0.3:8080".into(),
                    packets: 5,
                    bytes: 500,
                },
            ],
            flow_entries: 7,
            flow_capacity: 65536,
            maglev_slots_used: 614,
            maglev_slots: 32768,
            last_reconcile_unix_seconds: 1_700_000_000.25,
            last_reconcile_duration_seconds: 0.0125,
            reconciles: 4,
            config_reload_errors: 1,
            leaders: vec![
                LeaderSample {
                    vip: "10.99.0.1".into(),
                    holder: "node-a".into(),
                    leading: true,
                },
                LeaderSample {
                    vip: "fd00::1".into(),
                    holder: "node-b".into(),
                    leading: false,
                },
            ],
            announce: Some(AnnounceSample {
                owned: vec!["10.99.0.1".into()],
                transitions: 3,
                gratuitous_sent: 10,
                send_errors: 0,
                liveness_age_seconds: 0.5,
                liveness_bound_seconds: 5.0,
            }),
            aws: Some(AwsSample {
                calls: vec![
                    ("AssignPrivateIpAddresses".into(), "ok".into(), 2),
                    ("AssociateAddress".into(), "throttled".into(), 1),
                ],
                throttled: 1,
                moves_confirmed: 2,
                confirm_seconds_sum: 1.5,
                last_confirm_seconds: 0.5,
                vips: vec![("10.0.1.200".into(), true, true, false)],
                backends_with_source_dest_check: 1,
                owned: vec!["10.0.1.200".into()],
                transitions: 1,
            }),
            bgp: Some(BgpSample {
                vips: vec![
                    ("10.99.0.1".into(), "", true),
                    ("10.99.0.2".into(), "no active backend", false),
                    ("10.99.0.3".into(), "table write failing", false),
                ],
                draining: false,
                announcements: 2,
                withdrawals: 1,
                write_errors: 3,
                write_failing: true,
            }),
            health: Some(HealthSample {
                backends: vec![BackendHealthSample {
                    vip: "10.99.0.1:80/tcp".into(),
                    backend: "10.0.0.2".into(),
                    state: "down",
                    results: vec![("pass".into(), 7), ("timeout".into(), 3)],
                    transitions: 1,
                }],
                fail_open: vec!["10.99.0.1:80/tcp".into()],
                latency_buckets: vec![0, 2, 5, 0, 0, 0, 0, 0, 0, 0, 0],
                latency_sum_seconds: 0.0125,
                latency_count: 7,
            }),
        }
    }

    #[test]
    fn render_contains_expected_lines() {
        let text = render(&sample());
        let lines: Vec<&str> = text.lines().collect();
        for want in [
            r#"xlb_dataplane_info{dataplane="xdp"} 1"#,
            r#"xlb_packets_total{outcome="tx"} 12"#,
            r#"xlb_packets_total{outcome="pass"} 3"#,
            r#"xlb_packets_total{outcome="drop"} 0"#,
            r#"xlb_vip_packets_total{vip="10.99.0.1:80/tcp"} 15"#,
            r#"xlb_vip_bytes_total{vip="10.99.0.1:80/tcp"} 1500"#,
            r#"xlb_backend_packets_total{vip="10.99.0.1:80/tcp",backend="10.0.0.2:8080"} 10"#,
            r#"xlb_backend_bytes_total{vip="10.99.0.1:80/tcp",backend="10.0.0.2:8080"} 1000"#,
            r#"xlb_backend_bytes_total{vip="10.99.0.1:80/tcp",backend="10.0.0.3:8080"} 500"#,
            "xlb_flow_table_entries 7",
            "xlb_flow_table_capacity 65536",
            "xlb_maglev_slots_used 614",
            "xlb_maglev_slots_capacity 32768",
            "xlb_last_reconcile_timestamp_seconds 1700000000.25",
            "xlb_last_reconcile_duration_seconds 0.0125",
            "xlb_reconciles_total 4",
            "xlb_config_reload_errors_total 1",
            r#"xlb_vip_leader{vip="10.99.0.1",holder="node-a"} 1"#,
            r#"xlb_vip_leader{vip="fd00::1",holder="node-b"} 0"#,
            r#"xlb_vip_owner{vip="10.99.0.1"} 1"#,
            r#"xlb_vip_owner{vip="10.0.1.200"} 1"#,
            "xlb_announce_transitions_total 4",
            "xlb_aws_api_calls_total{operation=\"AssignPrivateIpAddresses\",result=\"ok\"} 2",
            "xlb_aws_api_throttles_total 1",
            "xlb_aws_move_confirm_seconds_total 1.5",
            "xlb_aws_last_move_confirm_seconds 0.5",
            "xlb_aws_vip_in_place{vip=\"10.0.1.200\"} 1",
            "xlb_announce_gratuitous_sent_total 10",
            "xlb_announce_liveness_age_seconds 0.5",
            "xlb_announce_liveness_bound_seconds 5.0",
            r#"xlb_backend_health{vip="10.99.0.1:80/tcp",backend="10.0.0.2",state="down"} 1"#,
            r#"xlb_health_checks_total{vip="10.99.0.1:80/tcp",backend="10.0.0.2",outcome="timeout"} 3"#,
            r#"xlb_health_transitions_total{vip="10.99.0.1:80/tcp",backend="10.0.0.2"} 1"#,
            r#"xlb_health_probe_duration_seconds_bucket{le="0.001"} 2"#,
            r#"xlb_health_probe_duration_seconds_bucket{le="0.0025"} 7"#,
            "xlb_health_probe_duration_seconds_count 7",
            r#"xlb_vip_fail_open{vip="10.99.0.1:80/tcp"} 1"#,
            "xlb_vips_fail_open 1",
            r#"xlb_vip_announced{vip="10.99.0.1",reason=""} 1"#,
            r#"xlb_vip_announced{vip="10.99.0.2",reason="no active backend"} 0"#,
            r#"xlb_vip_announced{vip="10.99.0.3",reason="table write failing"} 0"#,
            "xlb_bgp_draining 0",
            "xlb_bgp_withdrawals_total 1",
            "xlb_bgp_table_write_errors_total 3",
            "xlb_bgp_table_write_failing 1",
            "# TYPE xlb_vip_leader gauge",
            "# TYPE xlb_dataplane_info gauge",
            "# TYPE xlb_packets counter",
            "# TYPE xlb_backend_bytes counter",
            "# UNIT xlb_backend_bytes bytes",
            "# TYPE xlb_flow_table_entries gauge",
            "# TYPE xlb_last_reconcile_timestamp_seconds gauge",
            "# UNIT xlb_last_reconcile_timestamp_seconds seconds",
        ] {
            assert!(lines.contains(&want), "missing line {want:?} in:\n{text}");
        }
        for family in [
            "xlb_dataplane_info",
            "xlb_packets",
            "xlb_vip_packets",
            "xlb_vip_bytes",
            "xlb_backend_packets",
            "xlb_backend_bytes",
            "xlb_flow_table_entries",
            "xlb_flow_table_capacity",
            "xlb_maglev_slots_used",
            "xlb_maglev_slots_capacity",
            "xlb_last_reconcile_timestamp_seconds",
            "xlb_last_reconcile_duration_seconds",
            "xlb_reconciles",
            "xlb_config_reload_errors",
            "xlb_vip_leader",
            "xlb_vip_owner",
            "xlb_announce_transitions",
            "xlb_announce_gratuitous_sent",
            "xlb_announce_send_errors",
            "xlb_announce_liveness_age_seconds",
            "xlb_announce_liveness_bound_seconds",
            "xlb_aws_api_calls",
            "xlb_aws_api_throttles",
            "xlb_aws_moves_confirmed",
            "xlb_aws_move_confirm_seconds",
            "xlb_aws_last_move_confirm_seconds",
            "xlb_aws_vip_in_place",
            "xlb_aws_vip_error",
            "xlb_aws_backends_source_dest_check",
            "xlb_backend_health",
            "xlb_health_checks",
            "xlb_health_transitions",
            "xlb_health_probe_duration_seconds",
            "xlb_vip_fail_open",
            "xlb_vips_fail_open",
            "xlb_vip_announced",
            "xlb_bgp_draining",
            "xlb_bgp_announcements",
            "xlb_bgp_withdrawals",
            "xlb_bgp_table_write_errors",
            "xlb_bgp_table_write_failing",
        ] {
            let help = format!("# HELP {family} ");
            assert!(
                lines
                    .iter()
                    .any(|l| l.starts_with(&help) && l.len() > help.len()),
                "no HELP for {family} in:\n{text}"
            );
        }
        assert_eq!(text.matches("# HELP ").count(), 41);
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn render_does_not_accumulate() {
        let s = sample();
        let first = render(&s);
        assert_eq!(render(&s), first);
        let mut later = s.clone();
        later.outcomes = vec![("tx", 5)];
        later.health = None;
        later.bgp = None;
        let text = render(&later);
        assert!(
            text.lines()
                .any(|l| l == r#"xlb_packets_total{outcome="tx"} 5"#)
        );
        assert!(!text.contains("outcome=\"pass\""));
    }

    #[test]
    fn render_empty_snapshot() {
        let text = render(&Snapshot::default());
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.contains(&r#"xlb_dataplane_info{dataplane=""} 1"#));
        assert!(lines.contains(&"xlb_last_reconcile_timestamp_seconds 0.0"));
        assert!(lines.contains(&"xlb_reconciles_total 0"));
        assert!(!text.contains("xlb_vip_packets_total{"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let s = Snapshot {
            vips: vec![VipSample {
                vip: "a\"b\\c\nd".into(),
                packets: 1,
                bytes: 2,
            }],
            ..Snapshot::default()
        };
        let text = render(&s);
        assert!(
            text.lines()
                .any(|l| l == r#"xlb_vip_packets_total{vip="a\"b\\c\nd"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn extreme_values_do_not_break_rendering() {
        let s = Snapshot {
            flow_entries: u64::MAX,
            flow_capacity: u64::MAX - 1,
            reconciles: u64::MAX,
            last_reconcile_unix_seconds: f64::INFINITY,
            last_reconcile_duration_seconds: f64::NAN,
            ..Snapshot::default()
        };
        let text = render(&s);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines.contains(&"xlb_flow_table_entries 9223372036854775807"),
            "{text}"
        );
        assert!(lines.contains(&"xlb_reconciles_total 18446744073709551615"));
        assert!(
            lines.contains(&"xlb_last_reconcile_timestamp_seconds NaN"),
            "{text}"
        );
        assert!(lines.contains(&"xlb_last_reconcile_duration_seconds NaN"));
        assert!(text.ends_with("# EOF\n"));
    }
}
