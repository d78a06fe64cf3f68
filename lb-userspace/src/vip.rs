//! A VIP: address, port (0 = every port of the address) and protocol. The
//! one userspace type for it; the XDP map key (`lb_common::VipKey`) and the
//! IPVS service attributes are made from it at those edges.

use std::{fmt, net::IpAddr};

use serde::{Deserialize, Serialize};

/// Ordered by address, then port, then protocol, so lists of VIPs read
/// naturally. Serialized as `{address, port, protocol}` (the IPVS
/// ownership file stores it so).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Vip {
    pub address: IpAddr,
    pub port: u16,
    /// IP protocol number: 6 (TCP) or 17 (UDP) for xlb's own VIPs; a
    /// foreign IPVS service may carry another.
    pub protocol: u8,
}

impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.protocol {
            lb_common::PROTO_TCP => "tcp",
            lb_common::PROTO_UDP => "udp",
            _ => "?",
        };
        match self.address {
            IpAddr::V4(a) => write!(f, "{a}:{}/{proto}", self.port),
            IpAddr::V6(a) => write!(f, "[{a}]:{}/{proto}", self.port),
        }
    }
}

impl From<Vip> for lb_common::VipKey {
    fn from(v: Vip) -> Self {
        Self {
            addr: crate::maglev::addr_bytes(v.address),
            port: v.port,
            proto: v.protocol,
            family: family(v.address),
        }
    }
}

/// The data plane's family tag of an address.
pub fn family(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        lb_common::FAMILY_V4
    } else {
        lb_common::FAMILY_V6
    }
}

impl From<&lb_common::VipKey> for Vip {
    fn from(k: &lb_common::VipKey) -> Self {
        let address = if k.family == lb_common::FAMILY_V4 {
            IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]])
        } else {
            IpAddr::from(k.addr)
        };
        Self {
            address,
            port: k.port,
            protocol: k.proto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_key_round_trips_both_families() {
        for v in [
            Vip {
                address: "10.99.0.1".parse().unwrap(),
                port: 53,
                protocol: 17,
            },
            Vip {
                address: "2001:db8::1".parse().unwrap(),
                port: 0,
                protocol: 6,
            },
        ] {
            let k = lb_common::VipKey::from(v);
            assert_eq!(Vip::from(&k), v);
        }
        let v = Vip {
            address: "2001:db8::1".parse().unwrap(),
            port: 443,
            protocol: 6,
        };
        assert_eq!(v.to_string(), "[2001:db8::1]:443/tcp");
    }
}
