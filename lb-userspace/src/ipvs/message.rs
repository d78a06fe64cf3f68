//! The IPVS generic-netlink family on the wire (`include/uapi/linux/ip_vs.h`):
//! commands, attributes, and the two objects xlb programs, services and
//! destinations. Nothing else of the family (sync daemons, timeouts) is
//! modelled.

use crate::vip::Vip;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DecodeError, Emitable, NLA_F_NESTED, Nla, NlasIterator, ParseableParametrized,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

pub const FAMILY: &str = "IPVS";
const VERSION: u8 = 1;

/// `IPVS_CMD_*`.
pub mod cmd {
    pub const NEW_SERVICE: u8 = 1;
    pub const SET_SERVICE: u8 = 2;
    pub const DEL_SERVICE: u8 = 3;
    pub const GET_SERVICE: u8 = 4;
    pub const NEW_DEST: u8 = 5;
    pub const SET_DEST: u8 = 6;
    pub const DEL_DEST: u8 = 7;
    pub const GET_DEST: u8 = 8;
    pub const GET_INFO: u8 = 15;
}

// IPVS_CMD_ATTR_*
const CMD_ATTR_SERVICE: u16 = 1;
const CMD_ATTR_DEST: u16 = 2;

// IPVS_SVC_ATTR_*
const SVC_AF: u16 = 1;
const SVC_PROTOCOL: u16 = 2;
const SVC_ADDR: u16 = 3;
const SVC_PORT: u16 = 4;
const SVC_SCHED_NAME: u16 = 6;
const SVC_FLAGS: u16 = 7;
const SVC_TIMEOUT: u16 = 8;
const SVC_NETMASK: u16 = 9;
const SVC_STATS64: u16 = 12;

// IPVS_DEST_ATTR_*
const DEST_ADDR: u16 = 1;
const DEST_PORT: u16 = 2;
const DEST_FWD_METHOD: u16 = 3;
const DEST_WEIGHT: u16 = 4;
const DEST_U_THRESH: u16 = 5;
const DEST_L_THRESH: u16 = 6;
const DEST_ACTIVE_CONNS: u16 = 7;
const DEST_INACT_CONNS: u16 = 8;
const DEST_ADDR_FAMILY: u16 = 11;
const DEST_STATS64: u16 = 12;

// IPVS_STATS_ATTR_* (inside *_STATS64, every value a u64)
const STATS_CONNS: u16 = 1;
const STATS_INPKTS: u16 = 2;
const STATS_INBYTES: u16 = 4;

// IPVS_INFO_ATTR_*
const INFO_VERSION: u16 = 1;

/// `IP_VS_SVC_F_SCHED2`: for `mh` and `sh`, hash the source port as well
/// as the source address, so one client's connections spread.
pub const SVC_F_SCHED_PORT: u32 = 0x10;

/// `IP_VS_SVC_F_HASHED`: set by the kernel on every service in its table.
const SVC_F_HASHED: u32 = 0x2;

const AF_INET: u16 = libc::AF_INET as u16;
const AF_INET6: u16 = libc::AF_INET6 as u16;

/// `IP_VS_CONN_F_*` forwarding methods xlb uses (the low three bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Forward {
    /// Direct routing: rewrite the MAC only (`ipvsadm -g`).
    Dr,
    /// IPIP / IP6IP6 tunnel (`ipvsadm -i`).
    Tun,
    /// Anything else the kernel reports (masquerading, local node); xlb
    /// never creates it.
    Other(u32),
}

impl Forward {
    const MASK: u32 = 0x7;
    const fn wire(self) -> u32 {
        match self {
            Self::Tun => 2,
            Self::Dr => 3,
            Self::Other(v) => v,
        }
    }
    const fn from_wire(v: u32) -> Self {
        match v & Self::MASK {
            2 => Self::Tun,
            3 => Self::Dr,
            other => Self::Other(other),
        }
    }
}

/// A virtual service as created or as dumped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceEntry {
    pub key: Vip,
    pub scheduler: String,
    pub flags: u32,
    pub stats: Stats,
}

/// A destination (real server) of a service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestEntry {
    pub address: IpAddr,
    pub port: u16,
    pub forward: Forward,
    pub weight: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub stats: Stats,
}

/// Counters the kernel keeps per service and per destination.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub conns: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
}

/// A netlink attribute as the wire has it: kind (with the nested flag when
/// it holds attributes) and raw value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    kind: u16,
    value: Vec<u8>,
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        self.value.len()
    }
    fn kind(&self) -> u16 {
        self.kind
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.value);
    }
}

/// One IPVS request or reply: a command and its top-level attributes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpvsMessage {
    pub cmd: u8,
    pub attrs: Vec<Attr>,
}

impl GenlFamily for IpvsMessage {
    fn family_name() -> &'static str {
        FAMILY
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        VERSION
    }
}

impl Emitable for IpvsMessage {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMessage {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        Ok(Self {
            cmd: header.cmd,
            attrs: attrs(buf)?,
        })
    }
}

impl IpvsMessage {
    /// A request about a service: its key only (get, delete, list its
    /// destinations), or the whole entry (create, update).
    pub fn service(cmd: u8, key: &Vip, full: Option<(&str, u32)>) -> Self {
        Self {
            cmd,
            attrs: vec![service_attr(key, full)],
        }
    }

    /// A request about a destination of the service `key`.
    pub fn dest(cmd: u8, key: &Vip, dest: &DestEntry) -> Self {
        let mut d = vec![
            nla(DEST_ADDR, addr_bytes(dest.address)),
            nla(DEST_PORT, dest.port.to_be_bytes().to_vec()),
            nla(
                DEST_ADDR_FAMILY,
                family(dest.address).to_ne_bytes().to_vec(),
            ),
        ];
        if cmd != cmd::DEL_DEST {
            d.extend([
                nla(DEST_FWD_METHOD, dest.forward.wire().to_ne_bytes().to_vec()),
                nla(DEST_WEIGHT, dest.weight.to_ne_bytes().to_vec()),
                nla(DEST_U_THRESH, 0u32.to_ne_bytes().to_vec()),
                nla(DEST_L_THRESH, 0u32.to_ne_bytes().to_vec()),
            ]);
        }
        Self {
            cmd,
            attrs: vec![service_attr(key, None), nested(CMD_ATTR_DEST, &d)],
        }
    }

    /// Every service of a dump reply; services xlb cannot represent
    /// (firewall-mark services, other protocols) are skipped.
    pub fn parse_service(&self) -> Result<Option<ServiceEntry>, DecodeError> {
        let Some(svc) = self.attrs.iter().find(|a| kind(a) == CMD_ATTR_SERVICE) else {
            return Err(DecodeError::from("IPVS service reply without a service"));
        };
        let (mut af, mut proto, mut addr, mut port) = (0u16, 0u16, None::<Vec<u8>>, None);
        let (mut sched, mut flags, mut stats) = (String::new(), 0u32, Stats::default());
        for a in attrs(value(svc))? {
            let v = value(&a);
            match kind(&a) {
                SVC_AF => af = u16_ne(v)?,
                SVC_PROTOCOL => proto = u16_ne(v)?,
                SVC_ADDR => addr = Some(v.to_vec()),
                SVC_PORT => port = Some(u16::from_be_bytes(fixed(v)?)),
                SVC_SCHED_NAME => sched = cstr(v),
                // The kernel's own bookkeeping bit is not ours to compare.
                SVC_FLAGS => flags = u32_ne(v)? & !SVC_F_HASHED,
                SVC_STATS64 => stats = parse_stats(v)?,
                _ => {}
            }
        }
        let (Some(addr), Some(port), Ok(protocol)) = (addr, port, u8::try_from(proto)) else {
            return Ok(None); // a firewall-mark service
        };
        if protocol == 0 {
            return Ok(None);
        }
        Ok(Some(ServiceEntry {
            key: Vip {
                address: ip_of(af, &addr)?,
                port,
                protocol,
            },
            scheduler: sched,
            flags,
            stats,
        }))
    }

    pub fn parse_dest(&self) -> Result<DestEntry, DecodeError> {
        let Some(dest) = self.attrs.iter().find(|a| kind(a) == CMD_ATTR_DEST) else {
            return Err(DecodeError::from(
                "IPVS destination reply without a destination",
            ));
        };
        let mut d = DestEntry {
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 0,
            forward: Forward::Other(0),
            weight: 0,
            active_conns: 0,
            inactive_conns: 0,
            stats: Stats::default(),
        };
        let (mut af, mut addr) = (0u16, Vec::new());
        for a in attrs(value(dest))? {
            let v = value(&a);
            match kind(&a) {
                DEST_ADDR => addr = v.to_vec(),
                DEST_ADDR_FAMILY => af = u16_ne(v)?,
                DEST_PORT => d.port = u16::from_be_bytes(fixed(v)?),
                DEST_FWD_METHOD => d.forward = Forward::from_wire(u32_ne(v)?),
                DEST_WEIGHT => d.weight = u32_ne(v)?,
                DEST_ACTIVE_CONNS => d.active_conns = u32_ne(v)?,
                DEST_INACT_CONNS => d.inactive_conns = u32_ne(v)?,
                DEST_STATS64 => d.stats = parse_stats(v)?,
                _ => {}
            }
        }
        // Kernels before 3.18 send no family: the destination's is the
        // service's, which a 4-byte-looking address cannot tell; such
        // kernels are far below what xlb supports, so assume v4 only when
        // the upper 12 bytes are zero.
        if af == 0 {
            af = if addr.len() >= 16 && addr[4..16].iter().any(|b| *b != 0) {
                AF_INET6
            } else {
                AF_INET
            };
        }
        d.address = ip_of(af, &addr)?;
        Ok(d)
    }

    /// The IPVS version from a `GET_INFO` reply, as `major.minor.patch`.
    pub fn parse_version(&self) -> Option<String> {
        let a = self.attrs.iter().find(|a| kind(a) == INFO_VERSION)?;
        let v = u32_ne(value(a)).ok()?;
        Some(format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff))
    }
}

fn service_attr(key: &Vip, full: Option<(&str, u32)>) -> Attr {
    let mut s = vec![
        nla(SVC_AF, family(key.address).to_ne_bytes().to_vec()),
        nla(SVC_PROTOCOL, u16::from(key.protocol).to_ne_bytes().to_vec()),
        nla(SVC_ADDR, addr_bytes(key.address)),
        nla(SVC_PORT, key.port.to_be_bytes().to_vec()),
    ];
    if let Some((sched, flags)) = full {
        let mut name = sched.as_bytes().to_vec();
        name.push(0);
        // struct ip_vs_flags { flags, mask }: set exactly these bits.
        let mut f = flags.to_ne_bytes().to_vec();
        f.extend(u32::MAX.to_ne_bytes());
        let netmask: u32 = if key.address.is_ipv4() { u32::MAX } else { 128 };
        s.extend([
            nla(SVC_SCHED_NAME, name),
            nla(SVC_FLAGS, f),
            nla(SVC_TIMEOUT, 0u32.to_ne_bytes().to_vec()),
            nla(SVC_NETMASK, netmask.to_ne_bytes().to_vec()),
        ]);
    }
    nested(CMD_ATTR_SERVICE, &s)
}

fn nla(kind: u16, value: Vec<u8>) -> Attr {
    Attr { kind, value }
}

fn nested(kind: u16, children: &[Attr]) -> Attr {
    let mut value = vec![0; children.buffer_len()];
    children.emit(&mut value);
    Attr {
        kind: kind | NLA_F_NESTED,
        value,
    }
}

fn attrs(buf: &[u8]) -> Result<Vec<Attr>, DecodeError> {
    NlasIterator::new(buf)
        .map(|n| {
            n.map(|n| Attr {
                kind: n.kind(),
                value: n.value().to_vec(),
            })
        })
        .collect()
}

fn kind(a: &Attr) -> u16 {
    a.kind & !NLA_F_NESTED
}

fn value(a: &Attr) -> &[u8] {
    &a.value
}

fn parse_stats(buf: &[u8]) -> Result<Stats, DecodeError> {
    let mut s = Stats::default();
    for a in attrs(buf)? {
        let v = u64::from_ne_bytes(fixed(value(&a))?);
        match kind(&a) {
            STATS_CONNS => s.conns = v,
            STATS_INPKTS => s.packets_in = v,
            STATS_INBYTES => s.bytes_in = v,
            _ => {}
        }
    }
    Ok(s)
}

fn family(a: IpAddr) -> u16 {
    if a.is_ipv4() { AF_INET } else { AF_INET6 }
}

/// `union nf_inet_addr`: 16 bytes, a v4 address in the first four.
fn addr_bytes(a: IpAddr) -> Vec<u8> {
    let mut b = vec![0; 16];
    match a {
        IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => b.copy_from_slice(&v6.octets()),
    }
    b
}

fn ip_of(af: u16, b: &[u8]) -> Result<IpAddr, DecodeError> {
    match af {
        AF_INET if b.len() >= 4 => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        AF_INET6 if b.len() >= 16 => {
            let mut o = [0; 16];
            o.copy_from_slice(&b[..16]);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        _ => Err(DecodeError::from(format!(
            "IPVS address of family {af} and {} bytes",
            b.len()
        ))),
    }
}

fn fixed<const N: usize>(v: &[u8]) -> Result<[u8; N], DecodeError> {
    v.get(..N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| DecodeError::from(format!("IPVS attribute of {} bytes, want {N}", v.len())))
}

fn u16_ne(v: &[u8]) -> Result<u16, DecodeError> {
    fixed(v).map(u16::from_ne_bytes)
}

fn u32_ne(v: &[u8]) -> Result<u32, DecodeError> {
    fixed(v).map(u32::from_ne_bytes)
}

fn cstr(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One attribute as the UAPI lays it out: length (header included,
    /// padding not), type, value, padding to 4 bytes.
    fn tlv(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut b = ((value.len() + 4) as u16).to_ne_bytes().to_vec();
        b.extend(kind.to_ne_bytes());
        b.extend(value);
        b.resize(b.len().next_multiple_of(4), 0);
        b
    }

    fn key() -> Vip {
        Vip {
            address: "10.99.0.1".parse().unwrap(),
            port: 80,
            protocol: 6,
        }
    }

    fn emit(m: &IpvsMessage) -> Vec<u8> {
        let mut b = vec![0; m.buffer_len()];
        m.emit(&mut b);
        b
    }

    #[test]
    fn new_service_bytes_follow_the_uapi() {
        let m = IpvsMessage::service(cmd::NEW_SERVICE, &key(), Some(("mh", SVC_F_SCHED_PORT)));
        let mut inner = Vec::new();
        inner.extend(tlv(SVC_AF, &2u16.to_ne_bytes()));
        inner.extend(tlv(SVC_PROTOCOL, &6u16.to_ne_bytes()));
        inner.extend(tlv(
            SVC_ADDR,
            &[10, 99, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        ));
        inner.extend(tlv(SVC_PORT, &[0, 80]));
        inner.extend(tlv(SVC_SCHED_NAME, b"mh\0"));
        let mut flags = 0x10u32.to_ne_bytes().to_vec();
        flags.extend(u32::MAX.to_ne_bytes());
        inner.extend(tlv(SVC_FLAGS, &flags));
        inner.extend(tlv(SVC_TIMEOUT, &0u32.to_ne_bytes()));
        inner.extend(tlv(SVC_NETMASK, &u32::MAX.to_ne_bytes()));
        assert_eq!(emit(&m), tlv(CMD_ATTR_SERVICE | NLA_F_NESTED, &inner));
    }

    #[test]
    fn dest_bytes_carry_method_weight_and_family() {
        let d = DestEntry {
            address: "fd77::21".parse().unwrap(),
            port: 8080,
            forward: Forward::Tun,
            weight: 7,
            active_conns: 0,
            inactive_conns: 0,
            stats: Stats::default(),
        };
        let b = emit(&IpvsMessage::dest(cmd::NEW_DEST, &key(), &d));
        let mut want = Vec::new();
        want.extend(tlv(
            DEST_ADDR,
            &"fd77::21".parse::<Ipv6Addr>().unwrap().octets(),
        ));
        want.extend(tlv(DEST_PORT, &8080u16.to_be_bytes()));
        want.extend(tlv(DEST_ADDR_FAMILY, &10u16.to_ne_bytes()));
        want.extend(tlv(DEST_FWD_METHOD, &2u32.to_ne_bytes()));
        want.extend(tlv(DEST_WEIGHT, &7u32.to_ne_bytes()));
        want.extend(tlv(DEST_U_THRESH, &0u32.to_ne_bytes()));
        want.extend(tlv(DEST_L_THRESH, &0u32.to_ne_bytes()));
        let dest = tlv(CMD_ATTR_DEST | NLA_F_NESTED, &want);
        assert!(b.ends_with(&dest), "{b:?}");
        // Deleting names the destination only.
        let del = emit(&IpvsMessage::dest(cmd::DEL_DEST, &key(), &d));
        assert!(del.len() < b.len() && !del.windows(4).any(|w| w == [8, 0, 4, 0]));
    }

    #[test]
    fn a_dumped_service_parses_without_the_kernels_own_flag() {
        let mut stats = Vec::new();
        stats.extend(tlv(STATS_CONNS, &5u64.to_ne_bytes()));
        stats.extend(tlv(STATS_INPKTS, &40u64.to_ne_bytes()));
        stats.extend(tlv(STATS_INBYTES, &4000u64.to_ne_bytes()));
        let mut inner = Vec::new();
        inner.extend(tlv(SVC_AF, &10u16.to_ne_bytes()));
        inner.extend(tlv(SVC_PROTOCOL, &17u16.to_ne_bytes()));
        inner.extend(tlv(
            SVC_ADDR,
            &"fd99::1".parse::<Ipv6Addr>().unwrap().octets(),
        ));
        inner.extend(tlv(SVC_PORT, &53u16.to_be_bytes()));
        inner.extend(tlv(SVC_SCHED_NAME, b"wrr\0"));
        let mut flags = (SVC_F_HASHED | SVC_F_SCHED_PORT).to_ne_bytes().to_vec();
        flags.extend(u32::MAX.to_ne_bytes());
        inner.extend(tlv(SVC_FLAGS, &flags));
        inner.extend(tlv(SVC_STATS64 | NLA_F_NESTED, &stats));
        let reply = tlv(CMD_ATTR_SERVICE | NLA_F_NESTED, &inner);
        let m = IpvsMessage {
            cmd: cmd::NEW_SERVICE,
            attrs: attrs(&reply).unwrap(),
        };
        let s = m.parse_service().unwrap().expect("an address service");
        assert_eq!(s.key.to_string(), "[fd99::1]:53/udp");
        assert_eq!((s.scheduler.as_str(), s.flags), ("wrr", SVC_F_SCHED_PORT));
        assert_eq!(
            s.stats,
            Stats {
                conns: 5,
                packets_in: 40,
                bytes_in: 4000
            }
        );
    }

    #[test]
    fn firewall_mark_services_are_skipped() {
        let mut inner = Vec::new();
        inner.extend(tlv(SVC_AF, &2u16.to_ne_bytes()));
        inner.extend(tlv(5 /* FWMARK */, &7u32.to_ne_bytes()));
        inner.extend(tlv(SVC_SCHED_NAME, b"rr\0"));
        let m = IpvsMessage {
            cmd: cmd::NEW_SERVICE,
            attrs: attrs(&tlv(CMD_ATTR_SERVICE | NLA_F_NESTED, &inner)).unwrap(),
        };
        assert_eq!(m.parse_service().unwrap(), None);
    }
}
