//! What the pinned maps say: VIPs, backends with weights and states,
//! counters, flow-table occupancy, attached interfaces. Read straight from
//! the maps, so it works with or without a running daemon.

use std::{collections::BTreeMap, net::IpAddr};

use lb_common::{BACKEND_ACTIVE, Encap, Outcome};

use super::{
    Maps,
    maps::MapsError,
    pins::{LinkPin, PinDir},
    reconcile::backend_addr,
};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Status {
    pub dataplane: &'static str,
    pub pin_path: String,
    pub interfaces: Vec<LinkPin>,
    pub vips: Vec<VipStatus>,
    /// Global per-outcome packet counters.
    pub outcomes: BTreeMap<&'static str, u64>,
    pub flow_entries: u64,
    pub flow_capacity: u64,
    /// Slots of the Maglev array the VIPs' tables take, and its capacity.
    pub maglev_slots_used: u64,
    pub maglev_slots: u64,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct VipStatus {
    /// `address:port/protocol`.
    pub vip: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: &'static str,
    pub encap: &'static str,
    pub id: u32,
    /// Slots of its Maglev table.
    pub maglev_table_size: u32,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BackendStatus {
    pub address: IpAddr,
    pub id: u32,
    pub weight: u32,
    /// "active" (in the Maglev table) or "draining" (weight 0: established
    /// flows only).
    pub state: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

pub fn read(maps: &Maps, pins: &PinDir) -> Result<Status, MapsError> {
    let mut vips = BTreeMap::new();
    let mut maglev_slots_used = 0;
    for entry in maps.vips.iter() {
        let (k, v) = entry.map_err(|source| MapsError::Map {
            name: lb_common::names::VIPS,
            source,
        })?;
        let svc = crate::vip::Vip::from(&k);
        let address = svc.address;
        let c = maps.vip_counters(v.vip_id)?;
        maglev_slots_used += u64::from(v.maglev_size);
        vips.insert(
            v.vip_id,
            VipStatus {
                vip: svc.to_string(),
                address,
                port: k.port,
                protocol: if k.proto == lb_common::PROTO_UDP {
                    "udp"
                } else {
                    "tcp"
                },
                encap: if Encap::from_u8(v.encap) == Some(Encap::L2) {
                    "l2"
                } else {
                    "ipip"
                },
                id: v.vip_id,
                maglev_table_size: v.maglev_size,
                packets: c.packets,
                bytes: c.bytes,
                backends: Vec::new(),
            },
        );
    }
    for id in 1..maps.max_backends() {
        let b = maps.backend(id)?;
        if b.flags & BACKEND_ACTIVE == 0 {
            continue;
        }
        let Some(v) = vips.get_mut(&b.vip_id) else {
            continue;
        };
        let c = maps.backend_counters(id)?;
        v.backends.push(BackendStatus {
            address: backend_addr(&b),
            id,
            weight: b.weight,
            state: if b.weight > 0 { "active" } else { "draining" },
            packets: c.packets,
            bytes: c.bytes,
        });
    }
    let mut vips: Vec<VipStatus> = vips.into_values().collect();
    vips.sort_by(|a, b| (a.address, a.port, a.protocol).cmp(&(b.address, b.port, b.protocol)));
    for v in &mut vips {
        v.backends.sort_by_key(|b| b.address);
    }
    let totals = maps.outcomes()?;
    Ok(Status {
        dataplane: "xdp",
        pin_path: pins.root.display().to_string(),
        interfaces: pins.links(),
        vips,
        outcomes: Outcome::ALL.iter().map(|o| o.name()).zip(totals).collect(),
        flow_entries: maps.flow_entries(),
        flow_capacity: u64::from(maps.flows_capacity()),
        maglev_slots_used,
        maglev_slots: maps.maglev_slots(),
    })
}

/// The human form: aligned tables.
pub fn render(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "dataplane  {} (pins at {})", s.dataplane, s.pin_path);
    if s.interfaces.is_empty() {
        let _ = writeln!(o, "interfaces (none attached)");
    }
    for l in &s.interfaces {
        let _ = writeln!(o, "interface  {} (XDP {})", l.iface, l.mode);
    }
    let _ = writeln!(
        o,
        "flows      {} of {} flow-table entries",
        s.flow_entries, s.flow_capacity
    );
    let _ = writeln!(
        o,
        "maglev     {} of {} slots",
        s.maglev_slots_used, s.maglev_slots
    );
    let mut rows = vec![[
        "VIP".to_string(),
        "ENCAP".into(),
        "TABLE".into(),
        "BACKEND".into(),
        "WEIGHT".into(),
        "STATE".into(),
        "PACKETS".into(),
        "BYTES".into(),
    ]];
    for v in &s.vips {
        rows.push([
            v.vip.clone(),
            v.encap.into(),
            v.maglev_table_size.to_string(),
            "-".into(),
            "-".into(),
            "-".into(),
            v.packets.to_string(),
            v.bytes.to_string(),
        ]);
        for b in &v.backends {
            rows.push([
                String::new(),
                String::new(),
                String::new(),
                b.address.to_string(),
                b.weight.to_string(),
                b.state.into(),
                b.packets.to_string(),
                b.bytes.to_string(),
            ]);
        }
    }
    let _ = writeln!(o);
    o.push_str(&table(&rows));
    let _ = writeln!(o, "\ncounters");
    let counters: Vec<[String; 2]> = s
        .outcomes
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| [(*k).to_string(), v.to_string()])
        .collect();
    if counters.is_empty() {
        let _ = writeln!(o, "  (no packets yet)");
    }
    for line in table(&counters).lines() {
        let _ = writeln!(o, "  {line}");
    }
    o
}

pub(crate) fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut width = [0usize; N];
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        o.push_str(line.join("  ").trim_end());
        o.push('\n');
    }
    o
}
