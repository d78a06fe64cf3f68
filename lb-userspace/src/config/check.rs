//! Checks of one value, run by serde as the value is read (the fields'
//! `deserialize_with`). Failing inside the value's own deserializer makes
//! toml point at the value, and makes the first bad value in the file the
//! one reported.
//!
//! A check that knows how to say what it wants (a range, a prime) says it
//! as serde's "expected"; the others only reject, and the key's message
//! comes from [`super::expected`].

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

use crate::maglev::is_prime;

/// An integer from `MIN` to `MAX`.
pub(super) fn range<'de, D: Deserializer<'de>, const MIN: u32, const MAX: u32>(
    d: D,
) -> Result<u32, D::Error> {
    d.deserialize_any(Int {
        accept: |n| (MIN..=MAX).contains(&n),
        expected: format!("an integer from {MIN} to {MAX}"),
    })
}

/// Each of the Lease timings. Below 100 ms a node would spend its time
/// talking to the API server; above an hour a dead leader's VIPs would wait
/// that long for a new owner.
pub(super) fn lease_timing<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    range::<D, 100, 3_600_000>(d)
}

pub(super) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let port = d.deserialize_any(Int {
        accept: |n| n <= u32::from(u16::MAX),
        expected: "an integer from 0 (every port) to 65535".to_owned(),
    })?;
    Ok(port as u16)
}

pub(super) fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    d.deserialize_any(Int {
        accept: |n| n <= u32::from(u16::MAX),
        expected: "an integer from 0 (drain: no new flows) to 65535".to_owned(),
    })
}

pub(super) fn prime<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    d.deserialize_any(Int {
        accept: is_prime,
        expected: "a prime number such as 65537, 131071 or 262147".to_owned(),
    })
}

/// Interface names: an array of non-empty strings.
pub(super) fn names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<NonEmpty>::deserialize(d)?;
    Ok(names.into_iter().map(|n| n.0).collect())
}

pub(super) fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    NonEmpty::deserialize(d).map(|n| n.0)
}

/// A path kept as written, relative or not.
pub(super) fn path_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    non_empty(d).map(|s| Some(PathBuf::from(s)))
}

/// Read by other processes and across restarts, so never relative to
/// wherever the daemon happened to start.
pub(super) fn absolute<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    string(d, |s| Some(PathBuf::from(s)).filter(|p| p.is_absolute()))
}

/// Syntax only: third-party scheduler modules exist, and only the kernel
/// knows which are loaded. IP_VS_SCHEDNAME_MAXLEN is 16, counting the NUL.
pub(super) fn scheduler<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    string(d, |s| {
        let valid = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
        ((1..=SCHEDULER_NAME_MAX).contains(&s.len()) && s.bytes().all(valid)).then(|| s.to_owned())
    })
}

pub(super) const SCHEDULER_NAME_MAX: usize = 15;

pub(super) fn scheduler_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    scheduler(d).map(Some)
}

/// A DNS-1123 label, as Kubernetes requires of a namespace.
pub(super) fn dns_label<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    string(d, |s| {
        (s.len() <= DNS_LABEL_MAX && is_label_of_any_length(s)).then(|| s.to_owned())
    })
}

/// A DNS-1123 subdomain, as Kubernetes requires of a node name. Kubernetes
/// does not hold the labels of a subdomain to 63 characters, so neither
/// does this.
pub(super) fn dns_subdomain<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    string(d, |s| {
        (s.len() <= DNS_SUBDOMAIN_MAX && s.split('.').all(is_label_of_any_length))
            .then(|| Some(s.to_owned()))
    })
}

pub(super) const DNS_LABEL_MAX: usize = 63;
pub(super) const DNS_SUBDOMAIN_MAX: usize = 253;

/// Lowercase letters, digits and `-`, starting and ending with a letter or
/// digit.
fn is_label_of_any_length(label: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = label.as_bytes();
    bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

struct NonEmpty(String);

impl<'de> Deserialize<'de> for NonEmpty {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        string(d, |s| (!s.is_empty()).then(|| Self(s.to_owned())))
    }
}

fn string<'de, D: Deserializer<'de>, T>(
    d: D,
    accept: impl FnOnce(&str) -> Option<T>,
) -> Result<T, D::Error> {
    d.deserialize_str(Str(accept))
}

struct Str<F>(F);

impl<'de, T, F: FnOnce(&str) -> Option<T>> Visitor<'de> for Str<F> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
        (self.0)(s).ok_or_else(|| E::custom("rejected by the key's check"))
    }
}

struct Int<F> {
    accept: F,
    expected: String,
}

impl<'de, F: Fn(u32) -> bool> Visitor<'de> for Int<F> {
    type Value = u32;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expected)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<u32, E> {
        match u32::try_from(n) {
            Ok(v) if (self.accept)(v) => Ok(v),
            _ => Err(E::invalid_value(
                Unexpected::Signed(n),
                &self.expected.as_str(),
            )),
        }
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u32, E> {
        match u32::try_from(n) {
            Ok(v) if (self.accept)(v) => Ok(v),
            _ => Err(E::invalid_value(
                Unexpected::Unsigned(n),
                &self.expected.as_str(),
            )),
        }
    }
}
