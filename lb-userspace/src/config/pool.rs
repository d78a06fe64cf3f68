//! Address pools as written: `address/prefix` or `first-last`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::check;
use super::model::{AddressPool, AnnounceMode};

impl<'de> Deserialize<'de> for AddressPool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PoolVisitor)
    }
}

/// A pool is a string, or a table with the string as its `range`.
struct PoolVisitor;

impl<'de> Visitor<'de> for PoolVisitor {
    type Value = AddressPool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{EXPECTED}, or a table such as {{ range = \"10.99.200.0/24\", announce = \"l2\" }}"
        )
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<AddressPool, E> {
        parse(s).map_err(|expected| E::invalid_value(de::Unexpected::Str(s), &&*expected))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<AddressPool, A::Error> {
        let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(AddressPool {
            announce: t.announce,
            ..t.range.0
        })
    }
}

/// A pool written as a table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    range: Range,
    #[serde(default)]
    announce: Option<AnnounceMode>,
}

/// The `range` of a pool written as a table.
struct Range(AddressPool);

impl<'de> Deserialize<'de> for Range {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        check::read(d, EXPECTED, parse).map(Range)
    }
}

/// How a pool may be written.
const EXPECTED: &str = "an address pool: a CIDR such as \"10.99.200.0/24\" or an inclusive \
     range such as \"10.99.201.10-10.99.201.20\"";

/// A pool written as `address/prefix` or `first-last`. An IPv4 CIDR of /30
/// or shorter leaves out its network and broadcast addresses, which hosts
/// do not answer on; a /31 (RFC 3021) and a /32 have no such addresses, and
/// IPv6 has no broadcast. Errs with what a pool must be, said for this one
/// when it is readable but wrong.
fn parse(s: &str) -> Result<AddressPool, String> {
    let unreadable = || EXPECTED.to_owned();
    if let Some((address, prefix)) = s.split_once('/') {
        let address: IpAddr = address.parse().map_err(|_| unreadable())?;
        let (bits, family) = if address.is_ipv4() {
            (32, "IPv4")
        } else {
            (128, "IPv6")
        };
        // u32's parser takes a leading `+`; a prefix length is digits only.
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(unreadable());
        }
        let prefix: u32 = prefix.parse().ok().filter(|p| *p <= bits).ok_or_else(|| {
            format!("a CIDR whose prefix length is at most {bits}, as {family} addresses have {bits} bits")
        })?;
        // Both families as the low bits of a u128.
        let a = match address {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        let ip = |n: u128| -> IpAddr {
            match address {
                IpAddr::V4(_) => Ipv4Addr::from(n as u32).into(),
                IpAddr::V6(_) => Ipv6Addr::from(n).into(),
            }
        };
        let host = (u128::MAX >> (128 - bits)).checked_shr(prefix).unwrap_or(0);
        if a & host != 0 {
            let network = ip(a & !host);
            return Err(format!(
                "a CIDR with no host bits set: \"{network}/{prefix}\" for this one"
            ));
        }
        let lost = u128::from(bits == 32 && prefix <= 30);
        return Ok(AddressPool {
            first: ip(a + lost),
            last: ip((a | host) - lost),
            announce: None,
        });
    }

    let (first, last) = s.split_once('-').ok_or_else(unreadable)?;
    let first: IpAddr = first.parse().map_err(|_| unreadable())?;
    let last: IpAddr = last.parse().map_err(|_| unreadable())?;
    if first.is_ipv4() != last.is_ipv4() {
        return Err("a range of one address family, both ends IPv4 or both IPv6".to_owned());
    }
    if first > last {
        return Err(format!(
            "a range whose first address is not after its last: \"{last}-{first}\" for this one"
        ));
    }
    Ok(AddressPool {
        first,
        last,
        announce: None,
    })
}

/// The addresses two pools share, if any.
pub(super) fn overlap(a: &AddressPool, b: &AddressPool) -> Option<(IpAddr, IpAddr)> {
    // Not needed for the answer (IpAddr orders every IPv4 address before
    // every IPv6 one, so the bounds below would cross), but plainer.
    if a.first.is_ipv4() != b.first.is_ipv4() {
        return None;
    }
    let first = a.first.max(b.first);
    let last = a.last.min(b.last);
    (first <= last).then_some((first, last))
}
