//! What IPVS holds for xlb: the owned services with their destinations,
//! weights, connection counts and counters, as the kernel reports them.

use std::net::IpAddr;

use super::{IpvsDataplane, IpvsError, message::Forward};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Status {
    pub dataplane: &'static str,
    /// Why this data plane runs (from the daemon's state file).
    pub reason: String,
    pub ipvs_version: String,
    pub vips: Vec<VipStatus>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct VipStatus {
    pub vip: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: &'static str,
    pub scheduler: String,
    pub connections: u64,
    pub packets: u64,
    pub bytes: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct BackendStatus {
    pub address: IpAddr,
    pub forward: Forward,
    pub weight: u32,
    /// "active", or "draining" (weight 0: established connections only).
    pub state: &'static str,
    pub active_connections: u32,
    pub inactive_connections: u32,
    pub packets: u64,
    pub bytes: u64,
}

pub fn read(dp: &mut IpvsDataplane, reason: String) -> Result<Status, IpvsError> {
    let ipvs_version = dp.ipvs().version().to_string();
    let mut vips = Vec::new();
    for (s, dests) in dp.owned_services()? {
        let mut backends: Vec<BackendStatus> = dests
            .into_iter()
            .map(|d| BackendStatus {
                address: d.address,
                forward: d.forward,
                weight: d.weight,
                state: if d.weight > 0 { "active" } else { "draining" },
                active_connections: d.active_conns,
                inactive_connections: d.inactive_conns,
                packets: d.stats.packets_in,
                bytes: d.stats.bytes_in,
            })
            .collect();
        backends.sort_by_key(|b| b.address);
        vips.push(VipStatus {
            vip: s.key.to_string(),
            address: s.key.address,
            port: s.key.port,
            protocol: if s.key.protocol == lb_common::PROTO_UDP {
                "udp"
            } else {
                "tcp"
            },
            scheduler: s.scheduler,
            connections: s.stats.conns,
            packets: s.stats.packets_in,
            bytes: s.stats.bytes_in,
            backends,
        });
    }
    vips.sort_by(|a, b| (a.address, a.port, a.protocol).cmp(&(b.address, b.port, b.protocol)));
    Ok(Status {
        dataplane: "ipvs",
        reason,
        ipvs_version,
        vips,
    })
}

pub fn render(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let _ = writeln!(o, "dataplane  ipvs (kernel IPVS {})", s.ipvs_version);
    if !s.reason.is_empty() {
        let _ = writeln!(o, "why        {}", s.reason);
    }
    let mut rows = vec![[
        "VIP".to_string(),
        "SCHED".into(),
        "BACKEND".into(),
        "FORWARD".into(),
        "WEIGHT".into(),
        "STATE".into(),
        "CONNS".into(),
        "PACKETS".into(),
        "BYTES".into(),
    ]];
    for v in &s.vips {
        rows.push([
            v.vip.clone(),
            v.scheduler.clone(),
            "-".into(),
            "-".into(),
            "-".into(),
            "-".into(),
            v.connections.to_string(),
            v.packets.to_string(),
            v.bytes.to_string(),
        ]);
        for b in &v.backends {
            rows.push([
                String::new(),
                String::new(),
                b.address.to_string(),
                match b.forward {
                    Forward::Dr => "dr".into(),
                    Forward::Tun => "tun".into(),
                    Forward::Other(n) => format!("method {n}"),
                },
                b.weight.to_string(),
                b.state.into(),
                format!("{}/{}", b.active_connections, b.inactive_connections),
                b.packets.to_string(),
                b.bytes.to_string(),
            ]);
        }
    }
    let _ = writeln!(o);
    o.push_str(&crate::xdp::status::table(&rows));
    o
}
