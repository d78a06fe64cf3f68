//! The config's tables, their keys, and what each key accepts: the one place
//! that knows, so a wrong type (found while reading) and a wrong value
//! (found while validating) give the same message for a key.

use std::ops::RangeInclusive;

use lb_common::Encap;

use super::error::ErrorKind;
use super::model::{AnnounceMode, BackendTarget, DataplaneMode, Named, Protocol, XdpMode};

pub(super) const FLOW_TABLE_SIZE: RangeInclusive<u32> = 1..=1 << 28;
pub(super) const MAX_VIPS: RangeInclusive<u32> = 1..=65_536;
/// Backend id 0 means "no backend", so one backend needs two entries.
pub(super) const MAX_BACKENDS: RangeInclusive<u32> = 2..=1 << 24;
pub(super) const NEXTHOP_TTL_MS: RangeInclusive<u32> = 1..=60_000;
/// Each of the Lease timings. Below 100 ms a node would spend its time
/// talking to the API server; above an hour a dead leader's VIPs would wait
/// that long for a new owner.
pub(super) const LEASE_TIMING_MS: RangeInclusive<u32> = 100..=3_600_000;
/// Kubernetes' limits for a DNS-1123 label (namespaces) and subdomain
/// (node names).
pub(super) const DNS_LABEL_MAX: usize = 63;
pub(super) const DNS_SUBDOMAIN_MAX: usize = 253;
/// How a pool may be written, for messages about `kubernetes.pools`.
const POOL_FORMS: &str = "each a CIDR such as \"10.99.200.0/24\" or an inclusive \
     range such as \"10.99.201.10-10.99.201.20\"";
/// IP_VS_SCHEDNAME_MAXLEN is 16, counting the terminating NUL.
pub(super) const SCHEDULER_NAME_MAX: usize = 15;

/// Whether `name` can be an IPVS scheduler's name. Syntax only: third-party
/// scheduler modules exist, and only the kernel knows which are loaded.
pub(super) fn is_scheduler_name(name: &str) -> bool {
    (1..=SCHEDULER_NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `name` is a DNS-1123 label, as Kubernetes requires of a
/// namespace: at most 63 lowercase letters, digits and `-`, starting and
/// ending with a letter or digit.
pub(super) fn is_dns_label(name: &str) -> bool {
    name.len() <= DNS_LABEL_MAX && is_label_of_any_length(name)
}

/// Whether `name` is a DNS-1123 subdomain, as Kubernetes requires of a node
/// name: labels joined by dots, at most 253 characters in all. Kubernetes
/// does not hold the labels of a subdomain to 63 characters, so neither
/// does this.
pub(super) fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= DNS_SUBDOMAIN_MAX && name.split('.').all(is_label_of_any_length)
}

fn is_label_of_any_length(label: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = label.as_bytes();
    bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Root,
    Dataplane,
    Metrics,
    Vip,
    Backend,
    Kubernetes,
    Announce,
}

impl Table {
    pub(super) const fn keys(self) -> &'static [&'static str] {
        match self {
            Self::Root => &["dataplane", "metrics", "vip", "kubernetes", "announce"],
            Self::Dataplane => &[
                "mode",
                "interfaces",
                "xdp_mode",
                "pin_path",
                "state_dir",
                "encap",
                "scheduler",
                "maglev_table_size",
                "flow_table_size",
                "max_vips",
                "max_backends",
                "ipip_source_v4",
                "ipip_source_v6",
                "nexthop_ttl_ms",
            ],
            Self::Metrics => &["listen"],
            Self::Vip => &[
                "address",
                "port",
                "protocol",
                "encap",
                "scheduler",
                "backends",
            ],
            Self::Backend => &["address", "weight"],
            Self::Kubernetes => &[
                "enabled",
                "load_balancer_class",
                "include_unclassed",
                "kubeconfig",
                "backend_target",
                "pools",
                "lease_namespace",
                "node_name",
                "lease_duration_ms",
                "renew_deadline_ms",
                "retry_period_ms",
            ],
            Self::Announce => &["mode"],
        }
    }

    /// How messages name the table.
    pub(super) const fn label(self) -> &'static str {
        match self {
            Self::Root => "the top level",
            Self::Dataplane => "[dataplane]",
            Self::Metrics => "[metrics]",
            Self::Vip => "[[vip]]",
            Self::Backend => "a backend of [[vip]]",
            Self::Kubernetes => "[kubernetes]",
            Self::Announce => "[announce]",
        }
    }

    /// The dotted path of `key` in this table, as messages name fields.
    pub(super) fn field(self, key: &str) -> String {
        let prefix = match self {
            Self::Root => return key.to_owned(),
            Self::Dataplane => "dataplane",
            Self::Metrics => "metrics",
            Self::Vip => "vip",
            Self::Backend => "vip.backends",
            Self::Kubernetes => "kubernetes",
            Self::Announce => "announce",
        };
        format!("{prefix}.{key}")
    }
}

/// The error for `key` in `table` holding `found` (its source text), whether
/// the value has the wrong type or the right type and a bad value.
pub(super) fn invalid(table: Table, key: &str, found: String) -> ErrorKind {
    use Table::*;

    let field = table.field(key);
    let range = |range: &RangeInclusive<u32>| ErrorKind::OutOfRange {
        field: field.clone(),
        min: u64::from(*range.start()),
        max: u64::from(*range.end()),
        found: found.clone(),
    };
    let address = |expected| ErrorKind::InvalidAddress {
        field: field.clone(),
        expected,
        found: found.clone(),
    };
    let expected = match (table, key) {
        (Root, "vip") => "an array of tables, written [[vip]]".to_owned(),
        (Root, _) => format!("a table, written [{key}]"),
        (Dataplane, "mode") => DataplaneMode::one_of(),
        (Dataplane, "interfaces") => "an array of interface names such as [\"eth0\"]".to_owned(),
        (Dataplane, "xdp_mode") => XdpMode::one_of(),
        (Dataplane, "pin_path") => "an absolute path such as \"/sys/fs/bpf/xlb\"".to_owned(),
        (Dataplane, "state_dir") => "an absolute path such as \"/run/xlb\"".to_owned(),
        (Dataplane | Vip, "encap") => Encap::one_of(),
        (Dataplane | Vip, "scheduler") => format!(
            "an IPVS scheduler name: 1 to {SCHEDULER_NAME_MAX} characters of a-z, 0-9 and _ \
             (rr, wrr, lc, wlc, sh, dh, mh, ...)"
        ),
        (Dataplane, "maglev_table_size") => return ErrorKind::MaglevNotPrime { found },
        (Dataplane, "flow_table_size") => return range(&FLOW_TABLE_SIZE),
        (Dataplane, "max_vips") => return range(&MAX_VIPS),
        (Dataplane, "max_backends") => return range(&MAX_BACKENDS),
        (Dataplane, "nexthop_ttl_ms") => return range(&NEXTHOP_TTL_MS),
        (Dataplane, "ipip_source_v4") => return address("an IPv4 address"),
        (Dataplane, "ipip_source_v6") => return address("an IPv6 address"),
        (Metrics, "listen") => return ErrorKind::InvalidSocketAddress { field, found },
        (Vip | Backend, "address") => return address("an IPv4 or IPv6 address"),
        (Vip, "port") => return ErrorKind::InvalidPort { found },
        (Vip, "protocol") => Protocol::one_of(),
        (Vip, "backends") => {
            "an array of backends such as [{ address = \"10.0.0.1\", weight = 1 }]".to_owned()
        }
        (Backend, "weight") => return ErrorKind::InvalidWeight { found },
        (Kubernetes, "enabled" | "include_unclassed") => "true or false".to_owned(),
        (Kubernetes, "load_balancer_class") => {
            "a non-empty string such as \"xlb.io/xlb\"".to_owned()
        }
        (Kubernetes, "kubeconfig") => {
            "the path of a kubeconfig file such as \"/etc/xlb/kubeconfig\"".to_owned()
        }
        (Kubernetes, "backend_target") => BackendTarget::one_of(),
        (Kubernetes, "pools") => format!("an array of address pools, {POOL_FORMS}"),
        (Kubernetes, "lease_namespace") => format!(
            "a namespace name such as \"xlb-system\": 1 to {DNS_LABEL_MAX} characters of \
             a-z, 0-9 and -, starting and ending with a letter or digit"
        ),
        (Kubernetes, "node_name") => format!(
            "a node name such as \"node-1.example.com\": 1 to {DNS_SUBDOMAIN_MAX} characters \
             of a-z, 0-9, - and ., each part between dots starting and ending with a letter \
             or digit"
        ),
        (Kubernetes, "lease_duration_ms" | "renew_deadline_ms" | "retry_period_ms") => {
            return range(&LEASE_TIMING_MS);
        }
        (Announce, "mode") => AnnounceMode::one_of(),
        _ => unreachable!("{field} is not a key of {}", table.label()),
    };
    ErrorKind::InvalidValue {
        field,
        expected,
        found,
    }
}
