//! What health does to a desired state: a backend found down leaves its
//! VIP's backend set (so it leaves the Maglev table, and the data plane
//! re-hashes its flows: it is no longer active), unlike an operator's
//! drain (weight 0), which keeps established flows. A VIP whose every
//! serving backend is down keeps them all when its check says `fail_open`:
//! some may still work, which beats certainly dropping everything.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    sync::Arc,
};

use crate::{
    desired::{Desired, ServiceSpec, TableSize},
    vip::Vip,
};

/// The backends the checker holds down, by VIP.
pub type Down = BTreeMap<Vip, BTreeSet<IpAddr>>;

/// How a VIP's backends fare against what is down.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// Nothing of this VIP is down (or it has no check).
    Untouched,
    /// These backends are left out.
    Without(BTreeSet<IpAddr>),
    /// Every serving backend is down and the check fails open: all kept.
    FailOpen,
}

/// The fate of one VIP.
pub fn fate(spec: &ServiceSpec, down: Option<&BTreeSet<IpAddr>>) -> Fate {
    let (Some(check), Some(down)) = (&spec.health, down) else {
        return Fate::Untouched;
    };
    let gone: BTreeSet<IpAddr> = spec
        .backends
        .keys()
        .filter(|b| down.contains(b))
        .copied()
        .collect();
    if gone.is_empty() {
        return Fate::Untouched;
    }
    let serving = |b: &&IpAddr| spec.backends.get(b).is_some_and(|w| *w > 0);
    let any_serving = spec.backends.keys().any(|b| serving(&b));
    let any_left = spec
        .backends
        .keys()
        .filter(serving)
        .any(|b| !gone.contains(b));
    if any_serving && !any_left && check.fail_open {
        Fate::FailOpen
    } else {
        Fate::Without(gone)
    }
}

/// What health makes of a desired state.
#[derive(Debug)]
pub struct Gated {
    /// `d` as the data plane should serve it.
    pub served: Desired,
    /// The VIPs that serve only because their check fails open: every
    /// serving backend is down.
    pub failing_open: BTreeSet<Vip>,
}

/// `d` gated by what is down. Costs what is down, not what is configured:
/// only VIPs with a backend down are visited.
pub fn gate(d: &Desired, down: &Down) -> Gated {
    let mut served = d.clone();
    let mut failing_open = BTreeSet::new();
    for (vip, set) in down {
        let Some(spec) = d.services.get(vip) else {
            continue;
        };
        let gone = match fate(spec, Some(set)) {
            Fate::Untouched => continue,
            Fate::FailOpen => {
                failing_open.insert(*vip);
                continue;
            }
            Fate::Without(gone) => gone,
        };
        let backends = spec
            .backends
            .iter()
            .filter(|(b, _)| !gone.contains(b))
            .map(|(b, w)| (*b, *w))
            .collect();
        served.services.insert(
            *vip,
            ServiceSpec {
                backends: Arc::new(backends),
                // Sized for what is configured, not for what is left.
                table: match spec.table {
                    TableSize::Auto => TableSize::ForBackends(spec.backends.len() as u32),
                    kept => kept,
                },
                ..spec.clone()
            },
        );
    }
    Gated {
        served,
        failing_open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HealthCheck;

    fn vip(port: u16) -> Vip {
        Vip {
            address: "10.0.0.1".parse().unwrap(),
            port,
            protocol: lb_common::PROTO_TCP,
        }
    }

    fn check(fail_open: bool) -> Arc<HealthCheck> {
        Arc::new(HealthCheck {
            probe: crate::config::Probe::Tcp,
            port: None,
            via: crate::config::Via::Dsr,
            interval: std::time::Duration::from_secs(2),
            timeout: std::time::Duration::from_secs(1),
            rise: 2.try_into().unwrap(),
            fall: 3.try_into().unwrap(),
            jitter_percent: 10,
            fail_open,
        })
    }

    fn spec(backends: &[(&str, u32)], health: Option<Arc<HealthCheck>>) -> ServiceSpec {
        ServiceSpec {
            encap: lb_common::Encap::Ipip,
            scheduler: "mh".into(),
            backends: Arc::new(
                backends
                    .iter()
                    .map(|(b, w)| (b.parse().unwrap(), *w))
                    .collect(),
            ),
            announce: Default::default(),
            health,
            table: Default::default(),
        }
    }

    fn down(addrs: &[&str]) -> BTreeSet<IpAddr> {
        addrs.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn desired(specs: Vec<(Vip, ServiceSpec)>) -> Desired {
        Desired {
            services: specs.into_iter().collect(),
            ..Desired::default()
        }
    }

    #[test]
    fn a_down_backend_leaves_and_the_rest_stay() {
        let d = desired(vec![(
            vip(80),
            spec(&[("10.1.0.1", 1), ("10.1.0.2", 1)], Some(check(true))),
        )]);
        let served = gate(&d, &Down::from([(vip(80), down(&["10.1.0.2"]))])).served;
        assert_eq!(
            served.services[&vip(80)],
            ServiceSpec {
                table: TableSize::ForBackends(2),
                ..spec(&[("10.1.0.1", 1)], Some(check(true)))
            },
            "the table keeps the size of two backends"
        );
    }

    #[test]
    fn every_serving_backend_down_fails_open_or_empties_as_configured() {
        // The drained one is up but serves no new flows: it does not count.
        let backends = [("10.1.0.1", 1), ("10.1.0.2", 0)];
        let all = Down::from([(vip(80), down(&["10.1.0.1"]))]);
        let d = desired(vec![(vip(80), spec(&backends, Some(check(true))))]);
        assert_eq!(gate(&d, &all).served, d, "fail open keeps them all");
        let d = desired(vec![(vip(80), spec(&backends, Some(check(false))))]);
        assert_eq!(
            gate(&d, &all).served.services[&vip(80)],
            ServiceSpec {
                table: TableSize::ForBackends(2),
                ..spec(&[("10.1.0.2", 0)], Some(check(false)))
            }
        );
    }

    #[test]
    fn failing_open_lists_only_vips_kept_by_fail_open() {
        let two = [("10.1.0.1", 1), ("10.1.0.2", 1)];
        let d = desired(vec![
            (vip(80), spec(&two, Some(check(true)))),
            (vip(81), spec(&two, Some(check(true)))),
            (vip(82), spec(&two, Some(check(false)))),
        ]);
        let all = down(&["10.1.0.1", "10.1.0.2"]);
        let down = Down::from([
            (vip(80), all.clone()),
            (vip(81), down(&["10.1.0.1"])),
            (vip(82), all),
        ]);
        assert_eq!(gate(&d, &down).failing_open, BTreeSet::from([vip(80)]));
    }

    #[test]
    fn a_vip_without_a_check_is_never_touched() {
        let d = desired(vec![(
            vip(80),
            spec(&[("10.1.0.1", 1), ("10.1.0.2", 1)], None),
        )]);
        assert_eq!(
            gate(&d, &Down::from([(vip(80), down(&["10.1.0.1"]))])).served,
            d
        );
    }

    #[test]
    fn verdicts_for_vanished_vips_and_backends_are_ignored() {
        let d = desired(vec![(vip(80), spec(&[("10.1.0.1", 1)], Some(check(true))))]);
        let stale = Down::from([
            (vip(81), down(&["10.1.0.1"])),
            (vip(80), down(&["10.9.9.9"])),
        ]);
        assert_eq!(gate(&d, &stale).served, d);
    }
}
