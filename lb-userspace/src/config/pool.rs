//! Address pools as written: `address/prefix` or `first-last`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::de::{self, Unexpected};

use super::model::AddressPool;

/// How a pool may be written, for messages about `kubernetes.pools`.
pub(super) const EXPECTED: &str = "an array of address pools, each a CIDR such as \
     \"10.99.200.0/24\" or an inclusive range such as \"10.99.201.10-10.99.201.20\"";

/// Reads one pool; a pool that is readable but wrong says why.
pub(super) struct Visitor;

impl de::Visitor<'_> for Visitor {
    type Value = AddressPool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPECTED)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<AddressPool, E> {
        parse(s).map_err(|problem| match problem.expected() {
            Some(expected) => E::invalid_value(Unexpected::Str(s), &expected.as_str()),
            None => E::invalid_value(Unexpected::Str(s), &self),
        })
    }
}

/// What is wrong with a written address pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
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

impl Problem {
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
fn parse(s: &str) -> Result<AddressPool, Problem> {
    use Problem::*;

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
