//! The address pools VIPs are allocated from: lowest free address first,
//! so every router node, given the same Services, allocates the same way.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::config::{AddressPool, AnnounceMode};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pools {
    ranges: Vec<AddressPool>,
}

impl Pools {
    pub fn new(ranges: Vec<AddressPool>) -> Self {
        Self { ranges }
    }

    pub fn contains(&self, a: IpAddr) -> bool {
        self.pool_of(a).is_some()
    }

    /// The announce mode of the pool holding `a`, if it sets one.
    pub fn mode_of(&self, a: IpAddr) -> Option<AnnounceMode> {
        self.pool_of(a).and_then(|r| r.announce)
    }

    /// The pool holding `a`.
    fn pool_of(&self, a: IpAddr) -> Option<&AddressPool> {
        self.ranges
            .iter()
            .find(|r| r.first.is_ipv4() == a.is_ipv4() && (r.first..=r.last).contains(&a))
    }

    pub fn has_family(&self, v4: bool) -> bool {
        self.ranges.iter().any(|r| r.first.is_ipv4() == v4)
    }

    /// An allocator for one pass over the Services.
    pub fn allocator<'a>(&'a self, reserved: &'a BTreeSet<IpAddr>) -> Allocator<'a> {
        Allocator {
            pools: self,
            reserved,
            taken: BTreeSet::new(),
            cursors: self.ranges.iter().map(|r| Some(r.first)).collect(),
        }
    }
}

/// Hands out addresses that are neither reserved (named by a Service, held
/// in a Service's status, used by the config file) nor already handed out.
/// Nothing is ever given back within a pass (a Service that cannot have
/// all it needs looks first and takes nothing), so the lowest free address
/// of a pool only moves up: each pool keeps a cursor below which nothing is
/// free, and a pass that allocates n addresses costs O(n log n), not
/// O(n^2). [`Self::peek`] is exactly the lowest free address, which is
/// what lets a status confirming an allocation leave the plan as it is
/// (see `translate`).
pub struct Allocator<'a> {
    pools: &'a Pools,
    reserved: &'a BTreeSet<IpAddr>,
    taken: BTreeSet<IpAddr>,
    /// Per pool: nothing below it is free; `None` when nothing is.
    cursors: Vec<Option<IpAddr>>,
}

impl Allocator<'_> {
    pub fn is_free(&self, a: IpAddr) -> bool {
        !self.reserved.contains(&a) && !self.taken.contains(&a)
    }

    /// Whether `a` may be kept: in a pool and not yet taken in this pass. A
    /// reservation does not stop it: `a` is what the Service already has,
    /// and a newer claim on it is a conflict the newer Service loses.
    pub fn can_keep(&self, a: IpAddr) -> bool {
        self.pools.contains(a) && !self.taken.contains(&a)
    }

    pub fn take(&mut self, a: IpAddr) {
        self.taken.insert(a);
    }

    /// The lowest free address of the family, not taken.
    pub fn peek(&mut self, v4: bool) -> Option<IpAddr> {
        for (i, r) in self.pools.ranges.iter().enumerate() {
            if r.first.is_ipv4() != v4 {
                continue;
            }
            while let Some(c) = self.cursors[i] {
                if self.is_free(c) {
                    return Some(c);
                }
                self.cursors[i] = successor(c).filter(|n| *n <= r.last);
            }
        }
        None
    }

    /// The lowest free address of the family, taken.
    pub fn next(&mut self, v4: bool) -> Option<IpAddr> {
        let a = self.peek(v4)?;
        self.take(a);
        Some(a)
    }
}

fn successor(a: IpAddr) -> Option<IpAddr> {
    match a {
        IpAddr::V4(a) => u32::from(a)
            .checked_add(1)
            .map(|n| Ipv4Addr::from(n).into()),
        IpAddr::V6(a) => u128::from(a)
            .checked_add(1)
            .map(|n| Ipv6Addr::from(n).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(first: &str, last: &str) -> AddressPool {
        AddressPool {
            first: first.parse().unwrap(),
            last: last.parse().unwrap(),
            announce: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn lowest_free_first_across_pools_and_families() {
        let p = Pools::new(vec![
            pool("10.0.0.1", "10.0.0.2"),
            pool("fd00::10", "fd00::11"),
            pool("10.0.1.5", "10.0.1.5"),
        ]);
        let reserved = BTreeSet::from([ip("10.0.0.1")]);
        let mut a = p.allocator(&reserved);
        assert_eq!(a.next(true), Some(ip("10.0.0.2")));
        assert_eq!(a.next(true), Some(ip("10.0.1.5")));
        assert_eq!(a.next(true), None);
        assert_eq!(a.next(false), Some(ip("fd00::10")));
        assert_eq!(a.next(false), Some(ip("fd00::11")));
        assert_eq!(a.next(false), None);
    }

    #[test]
    fn kept_addresses_are_skipped_and_only_pool_addresses_kept() {
        let p = Pools::new(vec![pool("10.0.0.1", "10.0.0.4")]);
        let reserved = BTreeSet::from([ip("10.0.0.2")]);
        let mut a = p.allocator(&reserved);
        assert!(
            a.can_keep(ip("10.0.0.2")),
            "held addresses are kept though reserved"
        );
        a.take(ip("10.0.0.2"));
        assert!(!a.can_keep(ip("10.0.0.2")), "already taken");
        assert!(!a.can_keep(ip("10.0.9.9")), "outside every pool");
        assert_eq!(a.peek(true), Some(ip("10.0.0.1")), "peeking takes nothing");
        assert_eq!(a.next(true), Some(ip("10.0.0.1")));
        assert_eq!(a.next(true), Some(ip("10.0.0.3")));
        assert_eq!(a.next(true), Some(ip("10.0.0.4")));
        assert_eq!(a.next(true), None);
    }

    #[test]
    fn last_address_of_the_space_ends_the_walk() {
        let p = Pools::new(vec![pool("255.255.255.254", "255.255.255.255")]);
        let reserved = BTreeSet::new();
        let mut a = p.allocator(&reserved);
        assert_eq!(a.next(true), Some(ip("255.255.255.254")));
        assert_eq!(a.next(true), Some(ip("255.255.255.255")));
        assert_eq!(a.next(true), None);
    }
}
