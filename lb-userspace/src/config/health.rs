//! Backend health checks as configured: `[health]` (the defaults of every
//! VIP, and the node-wide settings of probes sent through the data plane)
//! and each VIP's `[vip.health]` over it. Only what to check and how often;
//! probing and what a failed check does live elsewhere.
//!
//! The file's shape is [`Health`] and `VipHealth`; what the rest of the
//! daemon codes against is [`HealthCheck`], which exists only for a check
//! that is on, so "no check" is `None` and never a check of kind none.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU32;
use std::time::Duration;

use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Deserializer, Serialize, de};

use super::check;
use super::model::Dataplane;

/// What a check asks the backend, as written (`kind`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// No check: the backends are as the config or Kubernetes says.
    #[default]
    None,
    /// A TCP connection is opened and closed.
    Tcp,
    /// An HTTP GET whose response status must be in a range.
    Http,
}

/// Where probes go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// To the VIP, delivered to the backend through the same DSR
    /// encapsulation as clients' packets: what is checked is the path
    /// clients take, VIP configuration on the backend included.
    #[default]
    Dsr,
    /// To the backend's own address.
    Direct,
}

/// An inclusive range of HTTP status codes, written `"200-399"`, or
/// `"204"` for one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StatusRange {
    pub lo: u16,
    pub hi: u16,
}

impl StatusRange {
    pub const EXPECTED: &str =
        "HTTP status codes: a range such as \"200-399\" or one code such as \"204\"";

    pub fn contains(&self, code: u16) -> bool {
        (self.lo..=self.hi).contains(&code)
    }

    /// Errs with what a range must be, said for this one when it is
    /// readable but wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        // Rust's integer parsers take a leading `+`; a code is digits only.
        let code = |part: &str| -> Result<u16, String> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Self::EXPECTED.to_owned());
            }
            match part.parse::<u64>() {
                Ok(n @ 100..=599) => Ok(n as u16),
                _ => Err("HTTP status codes from 100 to 599".to_owned()),
            }
        };
        let (lo, hi) = match s.split_once('-') {
            Some((lo, hi)) => (code(lo)?, code(hi)?),
            None => {
                let n = code(s)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(format!(
                "a range whose first code is not above its last: \"{hi}-{lo}\" for this one"
            ));
        }
        Ok(Self { lo, hi })
    }
}

impl Default for StatusRange {
    fn default() -> Self {
        Self { lo: 200, hi: 399 }
    }
}

impl std::fmt::Display for StatusRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

impl Serialize for StatusRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StatusRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        check::read(d, Self::EXPECTED, Self::parse)
    }
}

/// An HTTP check: `GET path` with `Host: host` (the address probed when
/// `None`), passed when the response's status is in `status`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpProbe {
    pub path: String,
    pub status: StatusRange,
    pub host: Option<String>,
}

impl HttpProbe {
    pub const PATH_EXPECTED: &str = "an HTTP path such as \"/healthz\": starting with /, of \
                                     printable ASCII without spaces (percent-encode the rest)";
    pub const HOST_EXPECTED: &str = "a Host header value such as \"example.com\" or \
                                     \"example.com:8080\": 1 to 255 characters of printable \
                                     ASCII without spaces";

    /// Whether `path` goes into a request line as it is: a request target
    /// is ASCII, and a space or control character would end it or the line.
    pub fn is_valid_path(path: &str) -> bool {
        path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic())
    }

    pub fn is_valid_host(host: &str) -> bool {
        (1..=255).contains(&host.len()) && host.bytes().all(|b| b.is_ascii_graphic())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    Tcp,
    Http(HttpProbe),
}

/// A VIP's check, resolved: `[vip.health]` over `[health]`. Exists only
/// for a check that is on (kind `tcp` or `http`).
///
/// Serialized as a `[vip.health]` table with every key explicit (`port`
/// and `host` only when set), which reads back to the same check whatever
/// `[health]` says; read from that shape too, missing keys taking the
/// documented defaults.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HealthCheck {
    pub probe: Probe,
    /// `None`: the VIP's port.
    pub port: Option<u16>,
    pub via: Via,
    pub interval: Duration,
    pub timeout: Duration,
    /// Passed checks in a row that bring a down backend up.
    pub rise: NonZeroU32,
    /// Failed checks in a row that take an up backend down.
    pub fall: NonZeroU32,
    /// Each interval is lengthened or shortened at random by up to this
    /// share, so that the probes of many VIPs and routers spread out.
    pub jitter_percent: u8,
    /// When every backend of a VIP is down, keep them all in rotation (a
    /// check that fails everywhere is more likely wrong than every
    /// backend dead).
    pub fail_open: bool,
}

impl HealthCheck {
    pub fn kind(&self) -> CheckKind {
        match self.probe {
            Probe::Tcp => CheckKind::Tcp,
            Probe::Http(_) => CheckKind::Http,
        }
    }
}

impl Serialize for HealthCheck {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let mut m = serializer.serialize_map(None)?;
        m.serialize_entry("kind", &self.kind())?;
        m.serialize_entry("via", &self.via)?;
        if let Some(port) = self.port {
            m.serialize_entry("port", &port)?;
        }
        m.serialize_entry("interval_ms", &ms(self.interval))?;
        m.serialize_entry("timeout_ms", &ms(self.timeout))?;
        m.serialize_entry("rise", &self.rise)?;
        m.serialize_entry("fall", &self.fall)?;
        m.serialize_entry("jitter_percent", &self.jitter_percent)?;
        m.serialize_entry("fail_open", &self.fail_open)?;
        if let Probe::Http(http) = &self.probe {
            m.serialize_entry("path", &http.path)?;
            m.serialize_entry("status", &http.status)?;
            if let Some(host) = &http.host {
                m.serialize_entry("host", host)?;
            }
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for HealthCheck {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let written: VipHealth = check::table(d)?;
        written
            .over(&Health::default())
            .defaults()
            .ok_or_else(|| de::Error::custom("a health check of kind \"tcp\" or \"http\""))
    }
}

/// `[health]`: the check of every VIP that does not say otherwise (and of
/// Kubernetes Services, with the kind their annotation asks for), and the
/// settings of this node's DSR-path probes. Every key is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Health {
    /// `none` by default: turning checks on takes backends out of rotation,
    /// which nothing should do unasked.
    pub kind: CheckKind,
    pub via: Via,
    /// `None`: each VIP's own port.
    #[serde(
        deserialize_with = "check::health_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
    /// At most an hour: a backend would stay in rotation that long dead.
    #[serde(deserialize_with = "check::range::<_, 1, 3_600_000>")]
    pub interval_ms: u32,
    /// Below 10 ms a loaded backend's answer would count as a failure.
    #[serde(deserialize_with = "check::range::<_, 10, 3_600_000>")]
    pub timeout_ms: u32,
    #[serde(deserialize_with = "check::range::<_, 1, 100>")]
    pub rise: u32,
    #[serde(deserialize_with = "check::range::<_, 1, 100>")]
    pub fall: u32,
    #[serde(deserialize_with = "check::jitter")]
    pub jitter_percent: u8,
    pub fail_open: bool,
    /// Read by `http` checks only, so that `[health]` can hold an http
    /// default that some VIPs use.
    #[serde(deserialize_with = "check::http_path")]
    pub path: String,
    pub status: StatusRange,
    #[serde(
        deserialize_with = "check::http_host",
        skip_serializing_if = "Option::is_none"
    )]
    pub host: Option<String>,
    /// The address DSR-path probes to IPv4 VIPs come from, which backends
    /// answer; `None`: `dataplane.ipip_source_v4`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_v4: Option<Ipv4Addr>,
    /// Likewise for IPv6; `None`: `dataplane.ipip_source_v6`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_v6: Option<Ipv6Addr>,
    /// The socket mark of probe sockets, which a policy rule sends to
    /// `table`. High bits only: the low 24 are left to the other users of
    /// marks on a router (CNIs, kube-proxy, firewalls).
    #[serde(deserialize_with = "check::mark")]
    pub mark: u32,
    /// The routing table of marked probes.
    #[serde(deserialize_with = "check::route_table")]
    pub table: u32,
    /// The priority of the `fwmark` rule; before the main table's (32766).
    #[serde(deserialize_with = "check::range::<_, 1, 32_765>")]
    pub rule_priority: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            kind: CheckKind::None,
            via: Via::Dsr,
            port: None,
            interval_ms: 2_000,
            timeout_ms: 1_000,
            rise: 2,
            fall: 3,
            jitter_percent: 10,
            fail_open: true,
            path: "/".to_owned(),
            status: StatusRange::default(),
            host: None,
            source_v4: None,
            source_v6: None,
            mark: lb_common::DEFAULT_PROBE_MARK,
            table: crate::health::path::DEFAULT_TABLE,
            rule_priority: crate::health::path::DEFAULT_RULE_PRIORITY,
        }
    }
}

impl Health {
    /// The `[health]` table resolved alone: `None` when its kind is none.
    pub fn defaults(&self) -> Option<HealthCheck> {
        self.check(self.kind, None)
    }

    /// The check a Kubernetes Service gets when its annotation asks for
    /// `kind`: these defaults with that kind and, for `http`, `path` when
    /// given (checked by the caller, see [`HttpProbe::is_valid_path`]).
    pub fn for_kind(&self, kind: CheckKind, path: Option<String>) -> Option<HealthCheck> {
        self.check(kind, path)
    }

    /// This table with `source_v4` and `source_v6` as DSR-path probes use
    /// them: each falling back to the data plane's IPIP source.
    pub fn with_probe_sources(&self, dataplane: &Dataplane) -> Self {
        Self {
            source_v4: self.source_v4.or(dataplane.ipip_source_v4),
            source_v6: self.source_v6.or(dataplane.ipip_source_v6),
            ..self.clone()
        }
    }

    fn check(&self, kind: CheckKind, path: Option<String>) -> Option<HealthCheck> {
        let probe = match kind {
            CheckKind::None => return None,
            CheckKind::Tcp => Probe::Tcp,
            CheckKind::Http => Probe::Http(HttpProbe {
                path: path.unwrap_or_else(|| self.path.clone()),
                status: self.status,
                host: self.host.clone(),
            }),
        };
        // Read as 1 to 100; 0 in a Health built in code means the least.
        let count = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Some(HealthCheck {
            probe,
            port: self.port,
            via: self.via,
            interval: Duration::from_millis(u64::from(self.interval_ms)),
            timeout: Duration::from_millis(u64::from(self.timeout_ms)),
            rise: count(self.rise),
            fall: count(self.fall),
            jitter_percent: self.jitter_percent,
            fail_open: self.fail_open,
        })
    }
}

/// A `[vip.health]` as written: any of `[health]`'s keys but the node-wide
/// ones, each falling back to `[health]`'s.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(super) struct VipHealth {
    kind: Option<CheckKind>,
    via: Option<Via>,
    #[serde(deserialize_with = "check::health_port")]
    port: Option<u16>,
    #[serde(deserialize_with = "check::range_option::<_, 1, 3_600_000>")]
    interval_ms: Option<u32>,
    #[serde(deserialize_with = "check::range_option::<_, 10, 3_600_000>")]
    timeout_ms: Option<u32>,
    #[serde(deserialize_with = "check::range_option::<_, 1, 100>")]
    rise: Option<u32>,
    #[serde(deserialize_with = "check::range_option::<_, 1, 100>")]
    fall: Option<u32>,
    #[serde(deserialize_with = "check::jitter_option")]
    jitter_percent: Option<u8>,
    fail_open: Option<bool>,
    #[serde(deserialize_with = "check::http_path_option")]
    path: Option<String>,
    status: Option<StatusRange>,
    #[serde(deserialize_with = "check::http_host")]
    host: Option<String>,
}

impl VipHealth {
    /// `base` with what this table sets.
    pub(super) fn over(self, base: &Health) -> Health {
        Health {
            kind: self.kind.unwrap_or(base.kind),
            via: self.via.unwrap_or(base.via),
            port: self.port.or(base.port),
            interval_ms: self.interval_ms.unwrap_or(base.interval_ms),
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            rise: self.rise.unwrap_or(base.rise),
            fall: self.fall.unwrap_or(base.fall),
            jitter_percent: self.jitter_percent.unwrap_or(base.jitter_percent),
            fail_open: self.fail_open.unwrap_or(base.fail_open),
            path: self.path.unwrap_or_else(|| base.path.clone()),
            status: self.status.unwrap_or(base.status),
            host: self.host.or_else(|| base.host.clone()),
            source_v4: base.source_v4,
            source_v6: base.source_v6,
            mark: base.mark,
            table: base.table,
            rule_priority: base.rule_priority,
        }
    }
}

/// A `[[vip]]`'s check written back as its `health` table: the check's
/// keys, or `kind = "none"`, which keeps a VIP unchecked whatever
/// `[health]` says.
pub(super) fn serialize_vip<S: Serializer>(
    check: &Option<HealthCheck>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match check {
        Some(c) => c.serialize(serializer),
        None => {
            let mut m = serializer.serialize_map(Some(1))?;
            m.serialize_entry("kind", &CheckKind::None)?;
            m.end()
        }
    }
}
