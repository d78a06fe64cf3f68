//! Checks of one value, run by serde as the value is read (the fields'
//! `deserialize_with`). Failing inside the value's own deserializer makes
//! toml point at the value, even as an element of an array, and makes the
//! first bad value in the file the one reported. Each check says what it
//! wants as serde's "expected".

use std::fmt;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

use super::health::HttpProbe;
use crate::maglev::is_prime;

/// An integer from `MIN` to `MAX`.
pub(super) fn range<'de, D: Deserializer<'de>, const MIN: u32, const MAX: u32>(
    d: D,
) -> Result<u32, D::Error> {
    let expected = format!("an integer from {MIN} to {MAX}");
    int(d, &expected, |n| (MIN..=MAX).contains(&n))
}

/// The VIP map's capacity: what the kernel lets a hash map hold, and the
/// reason, since nothing else about the number says why it stops there.
pub(super) fn max_vips<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    const MAX: u32 = lb_common::MAX_HASH_ENTRIES;
    let expected = format!(
        "an integer from 1 to {MAX} (2^27), the most entries the kernel allows a BPF hash map \
         such as the VIP map: it refuses more with E2BIG, as their buckets would not fit in 4 GiB"
    );
    int(d, &expected, |n| (1..=MAX).contains(&n))
}

/// An optional key's integer from `MIN` to `MAX`.
pub(super) fn range_option<'de, D: Deserializer<'de>, const MIN: u32, const MAX: u32>(
    d: D,
) -> Result<Option<u32>, D::Error> {
    range::<D, MIN, MAX>(d).map(Some)
}

/// Each of the Lease timings. Below 100 ms a node would spend its time
/// talking to the API server; above an hour a dead leader's VIPs would wait
/// that long for a new owner.
pub(super) fn lease_timing<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    range::<D, 100, 3_600_000>(d)
}

/// The announcer's liveness bound: long enough to ride out a heartbeat
/// delayed by a busy node, short enough to matter.
pub(super) fn liveness_bound<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    range::<D, 500, 600_000>(d).map(Some)
}

pub(super) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let expected = "an integer from 0 (every port) to 65535";
    int(d, expected, |n| n <= 65_535).map(|n| n as u16)
}

/// The port health checks probe; unset, the VIP's own. Unlike a VIP's,
/// never 0: a probe goes to one port.
pub(super) fn health_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let expected = "an integer from 1 to 65535 (unset: the VIP's port)";
    int(d, expected, |n| (1..=65_535).contains(&n)).map(|n| Some(n as u16))
}

/// How much a health check's interval varies at random, in percent.
pub(super) fn jitter<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    range::<D, 0, 50>(d).map(|n| n as u8)
}

pub(super) fn jitter_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u8>, D::Error> {
    jitter(d).map(Some)
}

pub(super) fn http_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let expected = HttpProbe::PATH_EXPECTED;
    string(d, expected, |s| {
        HttpProbe::is_valid_path(s).then(|| s.to_owned())
    })
}

pub(super) fn http_path_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    http_path(d).map(Some)
}

pub(super) fn http_host<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let expected = HttpProbe::HOST_EXPECTED;
    string(d, expected, |s| {
        HttpProbe::is_valid_host(s).then(|| Some(s.to_owned()))
    })
}

/// The mark of health probe sockets: a tag in the high byte, so the low
/// 24 bits stay with whoever else marks packets on the router.
pub(super) fn mark<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let expected = "a non-zero socket mark whose low 24 bits are 0, such as 0x58000000";
    int(d, expected, |n| n != 0 && n & 0x00FF_FFFF == 0)
}

/// A routing table id the kernel does not use itself: 253, 254 and 255 are
/// its default, main and local tables, and 0 means "unspecified".
pub(super) fn route_table<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let expected = "a routing table id from 1 to 4294967295 other than 253, 254 and 255 (the \
                    kernel's default, main and local tables)";
    int(d, expected, |n| n != 0 && !(253..=255).contains(&n))
}

pub(super) fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int(d, "an integer from 0 (drain: no new flows) to 65535", |n| {
        n <= 65_535
    })
}

pub(super) fn prime<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    int(
        d,
        "a prime number such as 65537, 131071 or 262147",
        is_prime,
    )
}

pub(super) fn prime_option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    prime(d).map(Some)
}

/// A table. serde would also read a struct from an array of its fields in
/// order, and say of `[[metrics]]` that it is not a socket address.
pub(super) fn table<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    struct Table<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for Table<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a table")
        }

        fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(de::value::MapAccessDeserializer::new(map))
        }
    }

    d.deserialize_map(Table(PhantomData))
}

/// A table, for a key that may be left out.
pub(super) fn table_option<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    table(d).map(Some)
}

pub(super) fn interfaces<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Name(String);

    impl<'de> Deserialize<'de> for Name {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let expected = "an interface name such as \"eth0\"";
            string(d, expected, |s| (!s.is_empty()).then(|| Self(s.to_owned())))
        }
    }

    let names = Vec::<Name>::deserialize(d)?;
    Ok(names.into_iter().map(|n| n.0).collect())
}

/// std's parser would say only "invalid socket address syntax", which does
/// not tell that a host name is not one.
pub(super) fn socket_address<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let expected = "an IP address and port such as \"127.0.0.1:9810\" or \"[::1]:9810\"";
    string(d, expected, |s| s.parse().ok())
}

pub(super) fn class<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let expected = "a non-empty string such as \"xlb.io/xlb\"";
    string(d, expected, |s| (!s.is_empty()).then(|| s.to_owned()))
}

/// A path kept as written, relative or not.
pub(super) fn kubeconfig<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let expected = "the path of a kubeconfig file such as \"/etc/xlb/kubeconfig\"";
    string(d, expected, |s| (!s.is_empty()).then(|| Some(s.into())))
}

/// Read by other processes and across restarts, so never relative to
/// wherever the daemon happened to start.
pub(super) fn absolute<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    string(d, "an absolute path", |s| {
        Some(s.into()).filter(|p: &PathBuf| p.is_absolute())
    })
}

/// Syntax only: third-party scheduler modules exist, and only the kernel
/// knows which are loaded. IP_VS_SCHEDNAME_MAXLEN is 16, counting the NUL.
pub(super) fn scheduler<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let expected = "an IPVS scheduler name: 1 to 15 characters of a-z, 0-9 and _ \
                    (rr, wrr, lc, wlc, sh, dh, mh, ...)";
    let valid = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    string(d, expected, |s| {
        ((1..=15).contains(&s.len()) && s.bytes().all(valid)).then(|| s.to_owned())
    })
}

pub(super) fn scheduler_option<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<String>, D::Error> {
    scheduler(d).map(Some)
}

/// A DNS-1123 label, as Kubernetes requires of a namespace.
pub(super) fn dns_label<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let expected = "a namespace name such as \"xlb-system\": 1 to 63 characters of a-z, 0-9 \
                    and -, starting and ending with a letter or digit";
    string(d, expected, |s| {
        (s.len() <= 63 && is_label(s)).then(|| s.to_owned())
    })
}

/// A DNS-1123 subdomain, as Kubernetes requires of a node name. Kubernetes
/// does not hold the labels of a subdomain to 63 characters, so neither
/// does this.
pub(super) fn dns_subdomain<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let expected = "a node name such as \"node-1.example.com\": 1 to 253 characters of a-z, \
                    0-9, - and ., each part between dots starting and ending with a letter or \
                    digit";
    string(d, expected, |s| {
        (s.len() <= 253 && s.split('.').all(is_label)).then(|| Some(s.to_owned()))
    })
}

/// Lowercase letters, digits and `-`, starting and ending with a letter or
/// digit; of any length.
fn is_label(label: &str) -> bool {
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = label.as_bytes();
    bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// A string that `accept` takes, else an error saying what is `expected`.
fn string<'de, D: Deserializer<'de>, T>(
    d: D,
    expected: &str,
    accept: impl FnOnce(&str) -> Option<T>,
) -> Result<T, D::Error> {
    read(d, expected, |s| {
        accept(s).ok_or_else(|| expected.to_owned())
    })
}

/// A string that `read` takes, else an error with what `read` says it
/// expected of this one.
pub(super) fn read<'de, D: Deserializer<'de>, T>(
    d: D,
    expected: &str,
    read: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error> {
    struct Str<'a, F>(&'a str, F);

    impl<'de, T, F: FnOnce(&str) -> Result<T, String>> Visitor<'de> for Str<'_, F> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }

        fn visit_str<E: de::Error>(self, s: &str) -> Result<T, E> {
            (self.1)(s).map_err(|expected| E::invalid_value(Unexpected::Str(s), &&*expected))
        }
    }

    d.deserialize_str(Str(expected, read))
}

/// `announce.service_modes`: each mode once (a repeat is a typo of another).
pub(super) fn announce_modes<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<super::model::AnnounceMode>, D::Error> {
    let modes = Vec::<super::model::AnnounceMode>::deserialize(d)?;
    for (i, m) in modes.iter().enumerate() {
        if modes[..i].contains(m) {
            return Err(de::Error::custom(format!(
                "\"{}\" is listed twice; list each of \"none\", \"l2\", \"aws\", \"bgp\" at \
                 most once",
                m.name()
            )));
        }
    }
    Ok(modes)
}

/// TOML integers are i64; one too large for that is an error already.
fn int<'de, D: Deserializer<'de>>(
    d: D,
    expected: &str,
    accept: impl FnOnce(u32) -> bool,
) -> Result<u32, D::Error> {
    struct Int<'a, F>(&'a str, F);

    impl<'de, F: FnOnce(u32) -> bool> Visitor<'de> for Int<'_, F> {
        type Value = u32;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }

        fn visit_i64<E: de::Error>(self, n: i64) -> Result<u32, E> {
            match u32::try_from(n) {
                Ok(v) if (self.1)(v) => Ok(v),
                _ => Err(E::invalid_value(Unexpected::Signed(n), &self.0)),
            }
        }

        /// JSON's deserializer hands non-negative integers over as u64
        /// (health checks are read back from the state directory's JSON).
        fn visit_u64<E: de::Error>(self, n: u64) -> Result<u32, E> {
            match u32::try_from(n) {
                Ok(v) if (self.1)(v) => Ok(v),
                _ => Err(E::invalid_value(Unexpected::Unsigned(n), &self.0)),
            }
        }
    }

    d.deserialize_any(Int(expected, accept))
}

/// An http(s) URL with a host: what the AWS SDK takes as an endpoint.
pub(super) fn url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let expected = "an http:// or https:// URL such as \"https://ec2.us-east-1.amazonaws.com\"";
    string(d, expected, |s| {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))?;
        let host = rest.split(['/', '?', '#']).next()?;
        (!host.is_empty() && !s.contains(char::is_whitespace)).then(|| Some(s.to_owned()))
    })
}

/// Syntax only, like `us-east-1` or `cn-north-1`: new regions appear
/// faster than a list here would follow.
pub(super) fn aws_region<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let expected = "an AWS region such as \"us-east-1\"";
    string(d, expected, |s| {
        let ok = (3..=32).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && s.contains('-');
        ok.then(|| Some(s.to_owned()))
    })
}

pub(super) fn eni_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let expected = "a network interface id such as \"eni-0123456789abcdef0\"";
    string(d, expected, |s| {
        let hex = s.strip_prefix("eni-")?;
        ((8..=32).contains(&hex.len()) && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Some(s.to_owned()))
    })
}
