//! VIP packets that cannot be delivered (no route, unresolved neighbour,
//! no backend, a backend of the other family): dropped, never passed, and
//! counted by reason.

use std::net::Ipv4Addr;

use lb_common::Outcome;
use xlb_tests::packet::*;

use crate::{
    Case,
    frames::{XDP_DROP, tcp4},
    unchanged,
};

/// A SYN to port 80 of 10.99.0.`host`, one of the lab's broken VIPs.
fn syn_to(host: u8) -> Vec<u8> {
    tcp4(Ipv4Addr::new(10, 99, 0, host), 80, TCP_SYN, 0, |_| {})
}

pub(crate) fn cases() -> Vec<Case> {
    vec![
        unchanged(
            "backend without route",
            syn_to(5),
            XDP_DROP,
            Outcome::DropNoRoute,
        ),
        unchanged(
            "backend neighbour unresolved: dropped, not passed",
            syn_to(6),
            XDP_DROP,
            Outcome::DropNoNeigh,
        ),
        unchanged(
            "vip without backends",
            syn_to(7),
            XDP_DROP,
            Outcome::DropNoBackend,
        ),
        unchanged(
            "v4 vip with a v6 backend",
            syn_to(8),
            XDP_DROP,
            Outcome::DropFamilyMismatch,
        ),
    ]
}
