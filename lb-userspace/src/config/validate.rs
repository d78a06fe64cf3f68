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
    Announce, AnnounceMode, Backend, Config, Dataplane, DataplaneMode, Kubernetes, Metrics, Named,
    Protocol, Vip, XdpMode,
};
use super::position::line_of;
use super::quote::Quote;
use super::raw::{RawConfig, RawDataplane, RawVip};
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

    let k = &raw.kubernetes;
    let defaults = Kubernetes::default();
    let kubernetes = Kubernetes {
        enabled: k
            .enabled
            .as_ref()
            .map_or(defaults.enabled, |b| *b.get_ref()),
        load_balancer_class: k
            .load_balancer_class
            .as_ref()
            .map_or(defaults.load_balancer_class.clone(), |s| s.get_ref().clone()),
        ..defaults
    };

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
        let in_range = |range: RangeInclusive<u32>| {
            move |n: &i64| u32::try_from(*n).ok().filter(|n| range.contains(n))
        };

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
