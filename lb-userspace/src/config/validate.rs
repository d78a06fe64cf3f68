//! From [`RawConfig`] to [`Config`], in two passes.
//!
//! [`values`] checks each value on its own (names, addresses, ranges) and
//! fills in defaults. [`relations`] checks what holds between values:
//! duplicates, address families, capacities. The second pass runs only on
//! a config whose every value is valid, because a value that failed (and
//! was replaced by its default) would make it report errors that are not
//! in the file.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;

use lb_common::Encap;
use toml::Spanned;

use super::error::{ErrorKind, Faults};
use super::model::{
    AddressPool, Announce, AnnounceMode, Backend, BackendTarget, Config, Dataplane, DataplaneMode,
    Kubernetes, Metrics, Named, Protocol, Vip, XdpMode,
};
use super::position::line_of;
use super::quote::{self, Quote};
use super::raw::{RawConfig, RawDataplane, RawKubernetes, RawVip};
use super::schema::{self, Table};
use crate::maglev::is_prime;

/// A config whose values are each valid, with the byte offsets that
/// [`relations`] needs to say where a conflict is.
#[derive(Debug)]
pub(super) struct Checked {
    pub(super) config: Config,
    spans: Spans,
}

#[derive(Debug, Default)]
struct Spans {
    maglev_table_size: Option<usize>,
    max_vips: Option<usize>,
    /// One per entry of `config.vips`.
    vips: Vec<VipSpans>,
    /// One per entry of `config.kubernetes.pools`.
    pools: Vec<PoolSpan>,
    lease_duration_ms: Option<usize>,
    renew_deadline_ms: Option<usize>,
    retry_period_ms: Option<usize>,
}

#[derive(Debug)]
struct PoolSpan {
    at: usize,
    /// As the file has it, quoted: overlaps are easier to find by the text
    /// that was written than by the addresses a CIDR stands for.
    written: String,
}

#[derive(Debug)]
struct VipSpans {
    address: usize,
    backends: Option<usize>,
    /// One per backend of the VIP.
    backend_addresses: Vec<usize>,
}

pub(super) fn values(raw: &RawConfig, text: &str, faults: &mut Faults) -> Checked {
    let mut check = Values { text, faults };
    let mut spans = Spans::default();
    let dataplane = check.dataplane(&raw.dataplane, &mut spans);

    let metrics = Metrics {
        listen: check
            .get(Table::Metrics, "listen", &raw.metrics.listen, |s| {
                s.parse::<SocketAddr>().ok()
            })
            .unwrap_or(Metrics::default().listen),
    };

    let mut vips = Vec::with_capacity(raw.vips.len());
    for raw_vip in &raw.vips {
        // A VIP without a valid address cannot be checked against the
        // others; its own error is already recorded.
        if let Some((vip, vip_spans)) = check.vip(raw_vip, &dataplane) {
            vips.push(vip);
            spans.vips.push(vip_spans);
        }
    }

    let kubernetes = check.kubernetes(&raw.kubernetes, &mut spans);

    let announce = Announce {
        mode: check
            .get(Table::Announce, "mode", &raw.announce.mode, |s| {
                AnnounceMode::from_name(s)
            })
            .unwrap_or(Announce::default().mode),
    };

    Checked {
        config: Config {
            dataplane,
            metrics,
            vips,
            kubernetes,
            announce,
        },
        spans,
    }
}

struct Values<'a> {
    text: &'a str,
    faults: &'a mut Faults,
}

impl Values<'_> {
    /// The value of `key` if it is set and `parse` accepts it; an invalid
    /// value is reported and gives `None`, like an absent one, so callers
    /// fall back to the default and go on finding errors.
    fn get<V: Quote, T>(
        &mut self,
        table: Table,
        key: &str,
        raw: &Option<Spanned<V>>,
        parse: impl FnOnce(&V) -> Option<T>,
    ) -> Option<T> {
        self.check(table, key, raw.as_ref()?, parse)
    }

    fn check<V: Quote, T>(
        &mut self,
        table: Table,
        key: &str,
        raw: &Spanned<V>,
        parse: impl FnOnce(&V) -> Option<T>,
    ) -> Option<T> {
        let parsed = parse(raw.get_ref());
        if parsed.is_none() {
            let found = raw.get_ref().quote(self.text, raw.span());
            self.faults
                .push(raw.span().start, schema::invalid(table, key, found));
        }
        parsed
    }

    fn dataplane(&mut self, d: &RawDataplane, spans: &mut Spans) -> Dataplane {
        const T: Table = Table::Dataplane;
        let defaults = Dataplane::default();

        let interfaces = match &d.interfaces {
            Some(names) => names
                .iter()
                .filter_map(|name| {
                    self.check(T, "interfaces", name, |s: &String| {
                        (!s.is_empty()).then(|| s.clone())
                    })
                })
                .collect(),
            None => defaults.interfaces,
        };

        spans.maglev_table_size = d.maglev_table_size.as_ref().map(|s| s.span().start);
        spans.max_vips = d.max_vips.as_ref().map(|s| s.span().start);

        Dataplane {
            mode: self
                .get(T, "mode", &d.mode, |s| DataplaneMode::from_name(s))
                .unwrap_or(defaults.mode),
            interfaces,
            xdp_mode: self
                .get(T, "xdp_mode", &d.xdp_mode, |s| XdpMode::from_name(s))
                .unwrap_or(defaults.xdp_mode),
            // Pins are looked up from other processes (xlb status, bpftool),
            // so a path relative to wherever the daemon started is a trap.
            pin_path: self
                .get(T, "pin_path", &d.pin_path, |s| {
                    Some(PathBuf::from(s)).filter(|p| p.is_absolute())
                })
                .unwrap_or(defaults.pin_path),
            // Read by other processes and across restarts, like pin_path.
            state_dir: self
                .get(T, "state_dir", &d.state_dir, |s| {
                    Some(PathBuf::from(s)).filter(|p| p.is_absolute())
                })
                .unwrap_or(defaults.state_dir),
            encap: self
                .get(T, "encap", &d.encap, |s| Encap::from_name(s))
                .unwrap_or(defaults.encap),
            scheduler: self
                .get(T, "scheduler", &d.scheduler, |s| scheduler_name(s))
                .unwrap_or(defaults.scheduler),
            maglev_table_size: self
                .get(T, "maglev_table_size", &d.maglev_table_size, |n| {
                    u32::try_from(*n).ok().filter(|&n| is_prime(n))
                })
                .unwrap_or(defaults.maglev_table_size),
            flow_table_size: self
                .get(
                    T,
                    "flow_table_size",
                    &d.flow_table_size,
                    in_range(schema::FLOW_TABLE_SIZE),
                )
                .unwrap_or(defaults.flow_table_size),
            max_vips: self
                .get(T, "max_vips", &d.max_vips, in_range(schema::MAX_VIPS))
                .unwrap_or(defaults.max_vips),
            max_backends: self
                .get(
                    T,
                    "max_backends",
                    &d.max_backends,
                    in_range(schema::MAX_BACKENDS),
                )
                .unwrap_or(defaults.max_backends),
            ipip_source_v4: self.get(T, "ipip_source_v4", &d.ipip_source_v4, |s| {
                s.parse::<Ipv4Addr>().ok()
            }),
            ipip_source_v6: self.get(T, "ipip_source_v6", &d.ipip_source_v6, |s| {
                s.parse::<Ipv6Addr>().ok()
            }),
            nexthop_ttl_ms: self
                .get(
                    T,
                    "nexthop_ttl_ms",
                    &d.nexthop_ttl_ms,
                    in_range(schema::NEXTHOP_TTL_MS),
                )
                .unwrap_or(defaults.nexthop_ttl_ms),
        }
    }

    fn kubernetes(&mut self, k: &RawKubernetes, spans: &mut Spans) -> Kubernetes {
        const T: Table = Table::Kubernetes;
        let defaults = Kubernetes::default();
        let flag = |raw: &Option<Spanned<bool>>, default: bool| {
            raw.as_ref().map_or(default, |b| *b.get_ref())
        };
        let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());

        let mut pools = Vec::new();
        for raw in k.pools.iter().flatten() {
            if let Some(pool) = self.pool(raw) {
                pools.push(pool);
                spans.pools.push(PoolSpan {
                    at: raw.span().start,
                    written: quote::string(raw.get_ref()),
                });
            }
        }

        spans.lease_duration_ms = k.lease_duration_ms.as_ref().map(|s| s.span().start);
        spans.renew_deadline_ms = k.renew_deadline_ms.as_ref().map(|s| s.span().start);
        spans.retry_period_ms = k.retry_period_ms.as_ref().map(|s| s.span().start);

        Kubernetes {
            enabled: flag(&k.enabled, defaults.enabled),
            load_balancer_class: self
                .get(T, "load_balancer_class", &k.load_balancer_class, non_empty)
                .unwrap_or(defaults.load_balancer_class),
            include_unclassed: flag(&k.include_unclassed, defaults.include_unclassed),
            // Kept as written: a relative path is relative to where the
            // daemon runs, as with kubectl's --kubeconfig.
            kubeconfig: self
                .get(T, "kubeconfig", &k.kubeconfig, |s| {
                    (!s.is_empty()).then(|| PathBuf::from(s))
                })
                .or(defaults.kubeconfig),
            backend_target: self
                .get(T, "backend_target", &k.backend_target, |s| {
                    BackendTarget::from_name(s)
                })
                .unwrap_or(defaults.backend_target),
            pools,
            lease_namespace: self
                .get(T, "lease_namespace", &k.lease_namespace, |s| {
                    schema::is_dns_label(s).then(|| s.clone())
                })
                .unwrap_or(defaults.lease_namespace),
            node_name: self
                .get(T, "node_name", &k.node_name, |s| {
                    schema::is_dns_subdomain(s).then(|| s.clone())
                })
                .or(defaults.node_name),
            lease_duration_ms: self
                .get(
                    T,
                    "lease_duration_ms",
                    &k.lease_duration_ms,
                    in_range(schema::LEASE_TIMING_MS),
                )
                .unwrap_or(defaults.lease_duration_ms),
            renew_deadline_ms: self
                .get(
                    T,
                    "renew_deadline_ms",
                    &k.renew_deadline_ms,
                    in_range(schema::LEASE_TIMING_MS),
                )
                .unwrap_or(defaults.renew_deadline_ms),
            retry_period_ms: self
                .get(
                    T,
                    "retry_period_ms",
                    &k.retry_period_ms,
                    in_range(schema::LEASE_TIMING_MS),
                )
                .unwrap_or(defaults.retry_period_ms),
        }
    }

    /// One entry of `kubernetes.pools`; what cannot be read at all gets the
    /// key's general message, a readable pool that is wrong says why.
    fn pool(&mut self, raw: &Spanned<String>) -> Option<AddressPool> {
        const T: Table = Table::Kubernetes;
        let problem = match parse_pool(raw.get_ref()) {
            Ok(pool) => return Some(pool),
            Err(problem) => problem,
        };
        let found = quote::string(raw.get_ref());
        let kind = match problem.expected() {
            Some(expected) => ErrorKind::InvalidValue {
                field: T.field("pools"),
                expected,
                found,
            },
            None => schema::invalid(T, "pools", found),
        };
        self.faults.push(raw.span().start, kind);
        None
    }

    /// `dataplane` gives the defaults of the VIP's encap and scheduler.
    fn vip(&mut self, v: &RawVip, dataplane: &Dataplane) -> Option<(Vip, VipSpans)> {
        const T: Table = Table::Vip;
        let address = self.get(T, "address", &v.address, |s| s.parse::<IpAddr>().ok());
        let port = self
            .get(T, "port", &v.port, |n| u16::try_from(*n).ok())
            .unwrap_or(0);
        let protocol = self
            .get(T, "protocol", &v.protocol, |s| Protocol::from_name(s))
            .unwrap_or(Protocol::Tcp);
        let encap = self
            .get(T, "encap", &v.encap, |s| Encap::from_name(s))
            .unwrap_or(dataplane.encap);
        let scheduler = self
            .get(T, "scheduler", &v.scheduler, |s| scheduler_name(s))
            .unwrap_or_else(|| dataplane.scheduler.clone());

        let mut backends = Vec::new();
        let mut backend_addresses = Vec::new();
        for b in v.backends.iter().flat_map(|list| list.get_ref()) {
            let address = self.get(Table::Backend, "address", &b.address, |s| {
                s.parse::<IpAddr>().ok()
            });
            let weight = self
                .get(Table::Backend, "weight", &b.weight, |n| {
                    u16::try_from(*n).ok().map(u32::from)
                })
                .unwrap_or(1);
            if let (Some(address), Some(raw)) = (address, &b.address) {
                backends.push(Backend { address, weight });
                backend_addresses.push(raw.span().start);
            }
        }

        let vip = Vip {
            address: address?,
            port,
            protocol,
            encap,
            scheduler,
            backends,
        };
        let spans = VipSpans {
            address: v.address.as_ref()?.span().start,
            backends: v.backends.as_ref().map(|b| b.span().start),
            backend_addresses,
        };
        Some((vip, spans))
    }
}

pub(super) fn relations(checked: &Checked, text: &str, faults: &mut Faults) {
    let Checked { config, spans } = checked;
    let dp = &config.dataplane;

    if u64::from(dp.max_vips) * u64::from(dp.maglev_table_size) > u64::from(u32::MAX) {
        // Whichever of the two comes later is the one that broke the limit;
        // at least one is set, since the defaults fit.
        let at = spans.max_vips.max(spans.maglev_table_size).unwrap_or(0);
        faults.push(
            at,
            ErrorKind::MaglevArrayTooLarge {
                max_vips: dp.max_vips,
                maglev_table_size: dp.maglev_table_size,
            },
        );
    }

    pools_and_lease_timings(config, spans, text, faults);

    let mut first_vip: HashMap<(IpAddr, u16, Protocol), usize> = HashMap::new();
    // The data plane stores one backend entry per (VIP, backend), so the
    // same address under two VIPs takes two entries.
    let mut entries = 0usize;
    let mut largest: Option<(&Vip, &VipSpans)> = None;

    for (index, (vip, at)) in config.vips.iter().zip(&spans.vips).enumerate() {
        let name = vip_name(vip);
        if index == dp.max_vips as usize {
            faults.push(
                at.address,
                ErrorKind::TooManyVips {
                    vip: name.clone(),
                    count: index + 1,
                    max_vips: dp.max_vips,
                },
            );
        }
        match first_vip.entry((vip.address, vip.port, vip.protocol)) {
            Entry::Occupied(first) => faults.push(
                at.address,
                ErrorKind::DuplicateVip {
                    vip: name.clone(),
                    first_line: line_of(text, *first.get()),
                },
            ),
            Entry::Vacant(slot) => {
                slot.insert(at.address);
            }
        }

        let mut first_backend: HashMap<IpAddr, usize> = HashMap::new();
        for (backend, &b_at) in vip.backends.iter().zip(&at.backend_addresses) {
            if backend.address.is_ipv4() != vip.address.is_ipv4() {
                faults.push(
                    b_at,
                    ErrorKind::FamilyMismatch {
                        vip: name.clone(),
                        backend: backend.address.to_string(),
                        vip_is_v4: vip.address.is_ipv4(),
                        encap: vip.encap,
                    },
                );
            }
            match first_backend.entry(backend.address) {
                Entry::Occupied(first) => faults.push(
                    b_at,
                    ErrorKind::DuplicateBackend {
                        vip: name.clone(),
                        backend: backend.address.to_string(),
                        first_line: line_of(text, *first.get()),
                    },
                ),
                Entry::Vacant(slot) => {
                    slot.insert(b_at);
                }
            }
            entries += 1;
            if entries == dp.max_backends as usize {
                faults.push(
                    b_at,
                    ErrorKind::TooManyBackends {
                        vip: name.clone(),
                        backend: backend.address.to_string(),
                        count: entries,
                        max_backends: dp.max_backends,
                    },
                );
            }
        }

        if largest.is_none_or(|(l, _)| vip.backends.len() > l.backends.len()) {
            largest = Some((vip, at));
        }
    }

    // Draining backends count too: they hold no slot now but get one back
    // when their weight returns, and the table size cannot change then.
    if let Some((vip, at)) = largest
        && (dp.maglev_table_size as usize) < 2 * vip.backends.len()
    {
        faults.push(
            spans
                .maglev_table_size
                .or(at.backends)
                .unwrap_or(at.address),
            ErrorKind::MaglevTooSmall {
                size: dp.maglev_table_size,
                vip: vip_name(vip),
                vip_line: line_of(text, at.address),
                backends: vip.backends.len(),
            },
        );
    }
}

/// What is wrong with a written address pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolProblem {
    /// Neither a CIDR nor a range of two addresses.
    Unreadable,
    /// `bits` is the family's address length, the longest prefix.
    PrefixTooLong {
        bits: u32,
    },
    HostBits {
        network: IpAddr,
        prefix: u32,
    },
    MixedFamilies,
    Reversed {
        first: IpAddr,
        last: IpAddr,
    },
}

impl PoolProblem {
    /// What `kubernetes.pools` must be, for a pool that was readable but
    /// wrong; `None` for one that was not readable at all.
    fn expected(self) -> Option<String> {
        let family = |bits| if bits == 32 { "IPv4" } else { "IPv6" };
        Some(match self {
            Self::Unreadable => return None,
            Self::PrefixTooLong { bits } => format!(
                "a CIDR whose prefix length is at most {bits}, as {} addresses have {bits} bits",
                family(bits)
            ),
            Self::HostBits { network, prefix } => {
                format!("a CIDR with no host bits set: \"{network}/{prefix}\" for this one")
            }
            Self::MixedFamilies => {
                "a range of one address family, both ends IPv4 or both IPv6".to_owned()
            }
            Self::Reversed { first, last } => format!(
                "a range whose first address is not after its last: \"{last}-{first}\" for this one"
            ),
        })
    }
}

/// A pool written as `address/prefix` or `first-last`. An IPv4 CIDR of /30
/// or shorter leaves out its network and broadcast addresses, which hosts
/// do not answer on; a /31 (RFC 3021) and a /32 have no such addresses, and
/// IPv6 has no broadcast.
fn parse_pool(s: &str) -> Result<AddressPool, PoolProblem> {
    use PoolProblem::*;

    if let Some((address, prefix)) = s.split_once('/') {
        let address: IpAddr = address.parse().map_err(|_| Unreadable)?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        // u32's parser takes a leading `+`; a prefix length is digits only.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Unreadable);
        }
        let prefix: u32 = prefix.parse().map_err(|_| PrefixTooLong { bits })?;
        if prefix > bits {
            return Err(PrefixTooLong { bits });
        }
        return match address {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                let host = u32::MAX.checked_shr(prefix).unwrap_or(0);
                if a & host != 0 {
                    let network = Ipv4Addr::from(a & !host).into();
                    return Err(HostBits { network, prefix });
                }
                let (first, last) = if prefix <= 30 {
                    (a + 1, (a | host) - 1)
                } else {
                    (a, a | host)
                };
                Ok(AddressPool {
                    first: Ipv4Addr::from(first).into(),
                    last: Ipv4Addr::from(last).into(),
                })
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                let host = u128::MAX.checked_shr(prefix).unwrap_or(0);
                if a & host != 0 {
                    let network = Ipv6Addr::from(a & !host).into();
                    return Err(HostBits { network, prefix });
                }
                Ok(AddressPool {
                    first: Ipv6Addr::from(a).into(),
                    last: Ipv6Addr::from(a | host).into(),
                })
            }
        };
    }

    let (first, last) = s.split_once('-').ok_or(Unreadable)?;
    let first: IpAddr = first.parse().map_err(|_| Unreadable)?;
    let last: IpAddr = last.parse().map_err(|_| Unreadable)?;
    if first.is_ipv4() != last.is_ipv4() {
        return Err(MixedFamilies);
    }
    if first > last {
        return Err(Reversed { first, last });
    }
    Ok(AddressPool { first, last })
}

/// The addresses two pools share, if any.
fn overlap(a: &AddressPool, b: &AddressPool) -> Option<(IpAddr, IpAddr)> {
    // Not needed for the answer (IpAddr orders every IPv4 address before
    // every IPv6 one, so the bounds below would cross), but plainer.
    if a.first.is_ipv4() != b.first.is_ipv4() {
        return None;
    }
    let first = a.first.max(b.first);
    let last = a.last.min(b.last);
    (first <= last).then_some((first, last))
}

fn in_range(range: RangeInclusive<u32>) -> impl Fn(&i64) -> Option<u32> {
    move |n| u32::try_from(*n).ok().filter(|n| range.contains(n))
}

/// Overlapping pools and Lease timings out of order.
fn pools_and_lease_timings(config: &Config, spans: &Spans, text: &str, faults: &mut Faults) {
    let k = &config.kubernetes;

    // Each pool against every earlier one: a config has a handful of pools,
    // and the earliest partner is the one the message should name.
    for (index, (pool, at)) in k.pools.iter().zip(&spans.pools).enumerate() {
        let mut earlier = k.pools[..index].iter().zip(&spans.pools);
        if let Some(((first, last), other)) =
            earlier.find_map(|(other, other_at)| Some((overlap(pool, other)?, other_at)))
        {
            let shared = if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            };
            faults.push(
                at.at,
                ErrorKind::PoolOverlap {
                    pool: at.written.clone(),
                    other: other.written.clone(),
                    other_line: line_of(text, other.at),
                    shared,
                },
            );
        }
    }

    // The defaults are in order, so at least one of each pair is set when
    // the pair is not; the later of the two in the file is what broke it.
    let lease = (
        "lease_duration_ms",
        k.lease_duration_ms,
        spans.lease_duration_ms,
    );
    let renew = (
        "renew_deadline_ms",
        k.renew_deadline_ms,
        spans.renew_deadline_ms,
    );
    let retry = ("retry_period_ms", k.retry_period_ms, spans.retry_period_ms);
    for ((shorter, shorter_ms, shorter_at), (longer, longer_ms, longer_at)) in
        [(renew, lease), (retry, renew)]
    {
        if shorter_ms >= longer_ms {
            faults.push(
                shorter_at.max(longer_at).unwrap_or(0),
                ErrorKind::LeaseTimingOrder {
                    shorter,
                    shorter_ms,
                    shorter_is_default: shorter_at.is_none(),
                    longer,
                    longer_ms,
                    longer_is_default: longer_at.is_none(),
                },
            );
        }
    }
}

fn scheduler_name(s: &str) -> Option<String> {
    schema::is_scheduler_name(s).then(|| s.to_owned())
}

/// How messages name a VIP: `10.0.0.1:80/tcp`, `[fd00::1]:443/udp`, and
/// `*` for the every-port VIP.
fn vip_name(vip: &Vip) -> String {
    let port = match vip.port {
        0 => "*".to_owned(),
        port => port.to_string(),
    };
    let protocol = vip.protocol.name();
    match vip.address {
        IpAddr::V4(a) => format!("{a}:{port}/{protocol}"),
        IpAddr::V6(a) => format!("[{a}]:{port}/{protocol}"),
    }
}
