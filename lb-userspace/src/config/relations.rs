//! What must hold between values that are each valid: duplicates, address
//! families, capacities, pools and Lease timings. Each conflict is reported
//! at the value that breaks it, found in the parse tree.

use std::collections::HashMap;
use std::net::IpAddr;

use lb_common::Encap;

use super::doc::Doc;
use super::error::{ErrorKind, Fault, line_column};
use super::model::{Config, Protocol, Vip};
use super::pool::overlap;

/// Conflicts by where they are in the file.
type Found = Vec<(usize, String)>;

/// Every conflict is collected so that the one reported is the first in
/// the document, whatever order the checks ran in; of two at the same
/// place, the one found first.
pub(super) fn check(config: &Config, doc: &Doc<'_>, text: &str) -> Result<(), Fault> {
    let line = |at: usize| line_column(text, at).0;
    let mut found = Found::new();
    capacities(config, doc, &line, &mut found);
    pools(config, doc, &line, &mut found);
    lease_timings(config, doc, &mut found);
    liveness(config, doc, &mut found);
    aws(config, doc, &line, &mut found);
    health(config, doc, &mut found);
    bgp_table(config, doc, &mut found);
    match found.into_iter().min_by_key(|(at, _)| *at) {
        Some((at, message)) => Err((at, ErrorKind::Conflict { message })),
        None => Ok(()),
    }
}

/// VIPs and backends: duplicates, families, and whether the data plane's
/// tables hold them.
fn capacities(config: &Config, doc: &Doc<'_>, line: &dyn Fn(usize) -> usize, found: &mut Found) {
    let dp = &config.dataplane;
    let (max_vips, table_size, max_backends) = (dp.max_vips, dp.maglev_table_size, dp.max_backends);
    let maglev_slots = dp.maglev_slots();
    // The Maglev array holds every VIP's table, each sized as the data
    // plane will size it.
    let mut slots_needed = 0u64;
    let mut overflowed = false;

    let mut first_vip: HashMap<(IpAddr, u16, Protocol), usize> = HashMap::new();
    // The data plane stores one backend entry per (VIP, backend), so the
    // same address under two VIPs takes two entries.
    let mut entries = 0;
    for (index, vip) in config.vips.iter().enumerate() {
        let at = doc.start(&format!("vip.{index}.address")).unwrap_or(0);
        let name = vip_name(vip);
        if index == max_vips as usize {
            let message = format!(
                "too many VIPs: VIP {name} is number {} but `dataplane.max_vips` is {max_vips}",
                index + 1
            );
            found.push((at, message));
        }
        let first = *first_vip
            .entry((vip.address, vip.port, vip.protocol))
            .or_insert(at);
        if first != at {
            let message = format!(
                "duplicate VIP {name}: already defined at line {}",
                line(first)
            );
            found.push((at, message));
        }

        let mut first_backend: HashMap<IpAddr, usize> = HashMap::new();
        for (b, backend) in vip.backends.iter().enumerate() {
            let address = backend.address;
            let at = doc
                .start(&format!("vip.{index}.backends.{b}.address"))
                .unwrap_or(at);
            if address.is_ipv4() != vip.address.is_ipv4() {
                let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
                let why = match vip.encap {
                    Encap::Ipip => "its encap \"ipip\" carries IPv4 in IPv4 and IPv6 in IPv6 only",
                    Encap::L2 => {
                        "its encap \"l2\" delivers packets still addressed to the VIP, so the \
                         backend must be of the same family"
                    }
                };
                let (theirs, ours) = (family(address), family(vip.address));
                let message =
                    format!("backend {address} is {theirs} but VIP {name} is {ours}: {why}");
                found.push((at, message));
            }
            let first = *first_backend.entry(address).or_insert(at);
            if first != at {
                let first = line(first);
                let message = format!(
                    "duplicate backend {address} in VIP {name}: already listed at line {first}"
                );
                found.push((at, message));
            }
            entries += 1;
            if entries == max_backends {
                let message = format!(
                    "too many backends: backend {address} of VIP {name} needs backend entry \
                     {entries} (every VIP's backends count, one entry each) but \
                     `dataplane.max_backends` = {max_backends} holds {} (id 0 is reserved)",
                    max_backends - 1
                );
                found.push((at, message));
            }
        }
        // Draining backends count too: they hold no slot now but get one
        // back when their weight returns, and the table size cannot change
        // then.
        let backends = vip.backends.len();
        let size = vip.maglev_table_size(table_size);
        if (size as usize) < 2 * backends {
            let vip_line = line(at);
            let message = match vip.maglev_table_size {
                Some(own) => format!(
                    "`maglev_table_size` = {own} of VIP {name} is too small for its {backends} \
                     backends: it needs at least {} slots, 2 per backend",
                    2 * backends
                ),
                None => format!(
                    "`dataplane.maglev_table_size` = {table_size} is too small for VIP {name} \
                     (line {vip_line}) with {backends} backends: it needs at least {} slots, 2 \
                     per backend; use a larger prime such as 65537, 131071 or 262147",
                    2 * backends
                ),
            };
            let at = match vip.maglev_table_size {
                Some(_) => doc.start(&format!("vip.{index}.maglev_table_size")),
                None => doc
                    .start("dataplane.maglev_table_size")
                    .or_else(|| doc.start(&format!("vip.{index}.backends"))),
            };
            found.push((at.unwrap_or(0), message));
        }
        slots_needed += u64::from(size);
        if !overflowed && slots_needed > u64::from(maglev_slots) {
            overflowed = true;
            let why = match dp.maglev_slots {
                Some(_) => String::new(),
                None => format!(
                    " (unset: {} per VIP of `dataplane.max_vips`, at least twice the largest \
                     table)",
                    crate::xdp::loader::DEFAULT_MAGLEV_SLOTS_PER_VIP
                ),
            };
            let message = format!(
                "VIP {name}'s Maglev table of {size} slots does not fit: the VIPs up to it \
                 need {slots_needed} slots, `dataplane.maglev_slots` is {maglev_slots}{why}; \
                 raise it (4 bytes of kernel memory per slot)"
            );
            found.push((at, message));
        }
    }
}

/// Each pool against every earlier one: a config has a handful of pools,
/// and the earliest partner is the one the message should name.
fn pools(config: &Config, doc: &Doc<'_>, line: &dyn Fn(usize) -> usize, found: &mut Found) {
    let pools = &config.kubernetes.pools;
    // A pool written as a table is named by its `range`.
    let path = |i: usize| {
        let range = format!("kubernetes.pools.{i}.range");
        if doc.start(&range).is_some() {
            range
        } else {
            format!("kubernetes.pools.{i}")
        }
    };
    for (index, pool) in pools.iter().enumerate() {
        if pool.announce == Some(super::model::AnnounceMode::Aws) && pool.first.is_ipv6() {
            let at = doc.start(&format!("kubernetes.pools.{index}.announce"));
            let message = format!(
                "`kubernetes.pools` entry {} is IPv6 but announce mode `aws` moves IPv4 secondary \
                 private addresses and Elastic IPs only; announce it with `none` (routing done \
                 elsewhere), `l2` or `bgp`",
                doc.written(&path(index)),
            );
            found.push((at.unwrap_or(0), message));
        }
        let mut earlier = pools[..index].iter().enumerate();
        if let Some(((first, last), other)) =
            earlier.find_map(|(other, earlier)| Some((overlap(pool, earlier)?, other)))
        {
            let shared = if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            };
            // As written: overlaps are easier to find by the text than by
            // the addresses a CIDR stands for.
            let (at, other_at) = (doc.start(&path(index)), doc.start(&path(other)));
            let message = format!(
                "`kubernetes.pools` entry {} overlaps {} (line {}): both hold {shared}; an \
                 address may be in one pool only",
                doc.written(&path(index)),
                doc.written(&path(other)),
                line(other_at.unwrap_or(0)),
            );
            found.push((at.unwrap_or(0), message));
        }
    }
}

/// The defaults are in order, so at least one of each pair is set when the
/// pair is not; the later of the two in the file is what broke it.
fn lease_timings(config: &Config, doc: &Doc<'_>, found: &mut Found) {
    let k = &config.kubernetes;
    let timing = |key: &'static str, ms: u32| (key, ms, doc.start(&format!("kubernetes.{key}")));
    let lease = timing("lease_duration_ms", k.lease_duration_ms);
    let renew = timing("renew_deadline_ms", k.renew_deadline_ms);
    let retry = timing("retry_period_ms", k.retry_period_ms);
    let default = |at: Option<usize>| if at.is_none() { " (the default)" } else { "" };
    for ((shorter, shorter_ms, shorter_at), (longer, longer_ms, longer_at), why) in [
        (
            renew,
            lease,
            "a leader that cannot renew must step down before its Lease expires and another \
             node takes over its VIPs",
        ),
        (
            retry,
            renew,
            "a leader must get another try at renewing its Lease before the deadline makes it \
             step down",
        ),
    ] {
        if shorter_ms >= longer_ms {
            let message = format!(
                "`kubernetes.{shorter}` = {shorter_ms}{} must be less than `kubernetes.{longer}` \
                 = {longer_ms}{}: {why}",
                default(shorter_at),
                default(longer_at)
            );
            found.push((shorter_at.max(longer_at).unwrap_or(0), message));
        }
    }
}

/// The `aws` mode moves IPv4 secondary private IPs and Elastic IPs: an
/// allocation id belongs to an `aws` VIP, one Elastic IP to one address,
/// and the VIPs of one address (its ports) agree on it.
fn aws(config: &Config, doc: &Doc<'_>, line: &dyn Fn(usize) -> usize, found: &mut Found) {
    use super::model::Announcement;
    let mut eips: HashMap<&str, (IpAddr, usize)> = HashMap::new();
    let mut by_address: HashMap<IpAddr, (Option<&str>, usize)> = HashMap::new();
    for (index, vip) in config.vips.iter().enumerate() {
        let path = |key: &str| format!("vip.{index}.{key}");
        let at_vip = doc.start(&path("address")).unwrap_or(0);
        let name = vip_name(vip);
        let alloc_at = doc.start(&path("allocation_id"));
        let eip = vip.announce.eip().map(|e| e.as_str());
        match &vip.announce {
            Announcement::Aws { .. } => {}
            other => {
                if let Some(at) = alloc_at {
                    let mode = other.mode().name();
                    let message = format!(
                        "`allocation_id` is for VIPs announced with `aws`, but VIP {name} is \
                         announced with `{mode}`: set `announce = \"aws\"` or remove it"
                    );
                    found.push((at, message));
                }
                continue;
            }
        }
        let mode_at = doc
            .start(&path("announce"))
            .or_else(|| doc.start("announce.mode"))
            .unwrap_or(at_vip);
        if vip.address.is_ipv6() {
            let message = format!(
                "VIP {name} is IPv6 but announce mode `aws` moves IPv4 secondary private \
                 addresses and Elastic IPs only; announce it with `none` (routing done \
                 elsewhere) or `l2`"
            );
            found.push((mode_at.max(at_vip), message));
            continue;
        }
        let at = alloc_at.unwrap_or(at_vip);
        match by_address.get(&vip.address) {
            Some(&(first, first_at)) if first != eip => {
                let show = |e: Option<&str>| e.map_or("none".to_owned(), |e| format!("\"{e}\""));
                let message = format!(
                    "VIP {name} has allocation_id {} but another VIP of {} (line {}) has {}: the \
                     ports of one address share its Elastic IP",
                    show(eip),
                    vip.address,
                    line(first_at),
                    show(first)
                );
                found.push((at, message));
            }
            Some(_) => {}
            None => {
                by_address.insert(vip.address, (eip, at));
            }
        }
        if let Some(e) = eip {
            let &mut (first, first_at) = eips.entry(e).or_insert((vip.address, at));
            if first != vip.address {
                let message = format!(
                    "allocation_id \"{e}\" of VIP {name} is already the Elastic IP of {first} \
                     (line {}): an Elastic IP is associated to one address at a time",
                    line(first_at)
                );
                found.push((at, message));
            }
        }
    }
}

/// A router that died must stop answering for its VIPs before another can
/// take its Leases: the earliest takeover comes a Lease duration after its
/// last renewal, which can be a retry period before it died.
fn liveness(config: &Config, doc: &Doc<'_>, found: &mut Found) {
    let (a, k) = (&config.announce, &config.kubernetes);
    let Some(bound) = a.liveness_bound_ms.filter(|_| k.enabled) else {
        return;
    };
    let window = k.lease_duration_ms.saturating_sub(k.retry_period_ms);
    if bound >= window {
        let at = doc
            .start("announce.liveness_bound_ms")
            .max(doc.start("kubernetes.lease_duration_ms"))
            .max(doc.start("kubernetes.retry_period_ms"));
        let message = format!(
            "`announce.liveness_bound_ms` = {bound} must be less than `kubernetes.lease_duration_ms` \
             - `kubernetes.retry_period_ms` = {window}: a router that dies must stop answering for \
             its VIPs before another router can take its Leases over (two answering is split brain)"
        );
        found.push((at.unwrap_or(0), message));
    }
}

/// The `bgp` announcer's table must not be the health probes' one: a
/// policy rule sends marked probe packets to that table, where xlb's
/// blackhole VIP routes would drop them, and both owners would fight over
/// its routes.
fn bgp_table(config: &Config, doc: &Doc<'_>, found: &mut Found) {
    use super::model::{AnnounceMode, Announcement};
    let bgp = config.announce.mode == AnnounceMode::Bgp
        || config.kubernetes.enabled
        || config.vips.iter().any(|v| v.announce == Announcement::Bgp);
    let table = config.announce.bgp.table;
    if !bgp || table != config.health.table {
        return;
    }
    // The defaults differ, so one of them is written.
    let at = doc
        .start("announce.bgp.table")
        .or_else(|| doc.start("health.table"))
        .unwrap_or(0);
    let message = format!(
        "announce.bgp.table ({table}) is health.table, the routing table health probes use \
         through an fwmark rule: the VIP routes there would blackhole the probes; choose \
         another table for one of them"
    );
    found.push((at, message));
}

/// Health checks: the timings of `[health]` and of each VIP's check, and
/// what a VIP's check needs of the VIP (TCP for http, a port, a source
/// address for probes through the data plane).
fn health(config: &Config, doc: &Doc<'_>, found: &mut Found) {
    use super::health::{Probe, Via};
    let base = &config.health;
    let sources = base.with_probe_sources(&config.dataplane);
    // The defaults are in order, so a bad pair has a key set.
    if base.interval_ms <= base.timeout_ms {
        let at = doc
            .start("health.interval_ms")
            .max(doc.start("health.timeout_ms"));
        let message = format!(
            "health.interval_ms ({}) must be greater than health.timeout_ms ({}): a probe must \
             time out before the next one starts",
            base.interval_ms, base.timeout_ms
        );
        found.push((at.unwrap_or(0), message));
    }
    for (index, vip) in config.vips.iter().enumerate() {
        let Some(check) = &vip.health else {
            continue;
        };
        let name = vip_name(vip);
        let own = |key: &str| doc.start(&format!("vip.{index}.health.{key}"));
        // Where the value in effect is written: the VIP's table, else
        // `[health]`; `None` for a default.
        let written = |key: &str| own(key).or_else(|| doc.start(&format!("health.{key}")));
        let at_vip = doc.start(&format!("vip.{index}.address")).unwrap_or(0);
        let at_table = doc.start(&format!("vip.{index}.health")).unwrap_or(at_vip);
        // Kind none is the default, so a check's kind is written somewhere.
        let at_kind = written("kind").unwrap_or(at_table);

        // Inherited both, they are `[health]`'s, checked above.
        let (interval, timeout) = (check.interval.as_millis(), check.timeout.as_millis());
        if interval <= timeout && (own("interval_ms").is_some() || own("timeout_ms").is_some()) {
            let from = |key: &str| match (own(key), written(key)) {
                (Some(_), _) => "",
                (None, Some(_)) => ", from [health]",
                (None, None) => ", the default",
            };
            let message = format!(
                "VIP {name}: health.interval_ms ({interval}{}) must be greater than \
                 health.timeout_ms ({timeout}{}): a probe must time out before the next one \
                 starts",
                from("interval_ms"),
                from("timeout_ms"),
            );
            let at = written("interval_ms").max(written("timeout_ms"));
            found.push((at.unwrap_or(at_table), message));
        }

        if matches!(check.probe, Probe::Http(_)) && vip.protocol == Protocol::Udp {
            let at_protocol = doc
                .start(&format!("vip.{index}.protocol"))
                .unwrap_or(at_vip);
            let message = format!(
                "VIP {name} has an http health check, but http checks need a TCP VIP: set \
                 `kind = \"tcp\"` or `kind = \"none\"` in its [vip.health]"
            );
            found.push((at_kind.max(at_protocol), message));
        }

        if vip.port == 0 && check.port.is_none() {
            let at_port = doc.start(&format!("vip.{index}.port")).unwrap_or(at_vip);
            let message = format!(
                "VIP {name} balances every port, so its health check needs one to probe: set \
                 `port` in its [vip.health] (or in [health])"
            );
            found.push((at_kind.max(at_port), message));
        }

        if check.via == Via::Dsr {
            let (have, family, v) = match vip.address {
                IpAddr::V4(_) => (sources.source_v4.is_some(), "IPv4", "v4"),
                IpAddr::V6(_) => (sources.source_v6.is_some(), "IPv6", "v6"),
            };
            if !have {
                // At the last of what asks for the source: the check, its
                // `via`, the VIP.
                let at = at_kind.max(at_vip).max(written("via").unwrap_or(0));
                let message = format!(
                    "VIP {name} is health-checked via \"dsr\" (probes to the VIP, through the \
                     data plane) but no {family} source address is set for its probes: set \
                     `health.source_{v}` or `dataplane.ipip_source_{v}` to an address of this \
                     router that the backends answer, or use `via = \"direct\"`"
                );
                found.push((at, message));
            }
        }

        if matches!(check.probe, Probe::Tcp) {
            for key in ["path", "status", "host"] {
                if let Some(at) = own(key) {
                    let message = format!(
                        "`{key}` is for http health checks, but VIP {name}'s check is tcp: set \
                         `kind = \"http\"` or remove it"
                    );
                    found.push((at, message));
                }
            }
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
    let protocol = match vip.protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    };
    match vip.address {
        IpAddr::V4(a) => format!("{a}:{port}/{protocol}"),
        IpAddr::V6(a) => format!("[{a}]:{port}/{protocol}"),
    }
}
