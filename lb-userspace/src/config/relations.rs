//! What must hold between values that are each valid: duplicates, address
//! families, capacities, pools and Lease timings. Each conflict is reported
//! at the value that breaks it, found in the parse tree.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;

use super::doc::Doc;
use super::error::{ErrorKind, Faults};
use super::expected::name;
use super::model::{Config, Protocol, Vip};
use super::pool::overlap;
use super::position::line_of;

pub(super) fn check(config: &Config, doc: &Doc<'_>, text: &str, faults: &mut Faults) {
    let dp = &config.dataplane;
    let line = |at: usize| line_of(text, at);

    if u64::from(dp.max_vips) * u64::from(dp.maglev_table_size) > u64::from(u32::MAX) {
        // Whichever of the two comes later is the one that broke the limit;
        // at least one is set, since the defaults fit.
        let at = doc
            .start("dataplane.max_vips")
            .max(doc.start("dataplane.maglev_table_size"))
            .unwrap_or(0);
        faults.push(
            at,
            ErrorKind::MaglevArrayTooLarge {
                max_vips: dp.max_vips,
                maglev_table_size: dp.maglev_table_size,
            },
        );
    }

    pools(config, doc, text, faults);
    lease_timings(config, doc, faults);

    let mut first_vip: HashMap<(IpAddr, u16, Protocol), usize> = HashMap::new();
    // The data plane stores one backend entry per (VIP, backend), so the
    // same address under two VIPs takes two entries.
    let mut entries = 0usize;
    let mut largest: Option<(usize, &Vip)> = None;

    for (index, vip) in config.vips.iter().enumerate() {
        let at = doc.start(&format!("vip.{index}.address")).unwrap_or(0);
        let vip_name = vip_name(vip);
        if index == dp.max_vips as usize {
            faults.push(
                at,
                ErrorKind::TooManyVips {
                    vip: vip_name.clone(),
                    count: index + 1,
                    max_vips: dp.max_vips,
                },
            );
        }
        match first_vip.entry((vip.address, vip.port, vip.protocol)) {
            Entry::Occupied(first) => faults.push(
                at,
                ErrorKind::DuplicateVip {
                    vip: vip_name.clone(),
                    first_line: line(*first.get()),
                },
            ),
            Entry::Vacant(slot) => {
                slot.insert(at);
            }
        }

        let mut first_backend: HashMap<IpAddr, usize> = HashMap::new();
        for (b, backend) in vip.backends.iter().enumerate() {
            let b_at = doc
                .start(&format!("vip.{index}.backends.{b}.address"))
                .unwrap_or(at);
            if backend.address.is_ipv4() != vip.address.is_ipv4() {
                faults.push(
                    b_at,
                    ErrorKind::FamilyMismatch {
                        vip: vip_name.clone(),
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
                        vip: vip_name.clone(),
                        backend: backend.address.to_string(),
                        first_line: line(*first.get()),
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
                        vip: vip_name.clone(),
                        backend: backend.address.to_string(),
                        count: entries,
                        max_backends: dp.max_backends,
                    },
                );
            }
        }

        if largest.is_none_or(|(_, l)| vip.backends.len() > l.backends.len()) {
            largest = Some((index, vip));
        }
    }

    // Draining backends count too: they hold no slot now but get one back
    // when their weight returns, and the table size cannot change then.
    if let Some((index, vip)) = largest
        && (dp.maglev_table_size as usize) < 2 * vip.backends.len()
    {
        let address = doc.start(&format!("vip.{index}.address")).unwrap_or(0);
        let at = doc
            .start("dataplane.maglev_table_size")
            .or_else(|| doc.start(&format!("vip.{index}.backends")))
            .unwrap_or(address);
        faults.push(
            at,
            ErrorKind::MaglevTooSmall {
                size: dp.maglev_table_size,
                vip: vip_name(vip),
                vip_line: line(address),
                backends: vip.backends.len(),
            },
        );
    }
}

/// Each pool against every earlier one: a config has a handful of pools,
/// and the earliest partner is the one the message should name.
fn pools(config: &Config, doc: &Doc<'_>, text: &str, faults: &mut Faults) {
    let pools = &config.kubernetes.pools;
    let path = |i: usize| format!("kubernetes.pools.{i}");
    for (index, pool) in pools.iter().enumerate() {
        let mut earlier = pools[..index].iter().enumerate();
        if let Some(((first, last), other)) =
            earlier.find_map(|(other, earlier)| Some((overlap(pool, earlier)?, other)))
        {
            let shared = if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            };
            faults.push(
                doc.start(&path(index)).unwrap_or(0),
                ErrorKind::PoolOverlap {
                    // As written: overlaps are easier to find by the text
                    // than by the addresses a CIDR stands for.
                    pool: doc.written(&path(index)),
                    other: doc.written(&path(other)),
                    other_line: line_of(text, doc.start(&path(other)).unwrap_or(0)),
                    shared,
                },
            );
        }
    }
}

/// The defaults are in order, so at least one of each pair is set when the
/// pair is not; the later of the two in the file is what broke it.
fn lease_timings(config: &Config, doc: &Doc<'_>, faults: &mut Faults) {
    let k = &config.kubernetes;
    let timing = |key: &'static str, ms: u32| (key, ms, doc.start(&format!("kubernetes.{key}")));
    let lease = timing("lease_duration_ms", k.lease_duration_ms);
    let renew = timing("renew_deadline_ms", k.renew_deadline_ms);
    let retry = timing("retry_period_ms", k.retry_period_ms);
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

/// How messages name a VIP: `10.0.0.1:80/tcp`, `[fd00::1]:443/udp`, and
/// `*` for the every-port VIP.
fn vip_name(vip: &Vip) -> String {
    let port = match vip.port {
        0 => "*".to_owned(),
        port => port.to_string(),
    };
    let protocol = name(vip.protocol);
    match vip.address {
        IpAddr::V4(a) => format!("{a}:{port}/{protocol}"),
        IpAddr::V6(a) => format!("[{a}]:{port}/{protocol}"),
    }
}
