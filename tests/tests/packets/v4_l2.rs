//! IPv4 VIPs with `l2` DSR: only the MACs change, and only towards a
//! backend on a directly connected network.

use std::net::Ipv4Addr;

use lb_common::Outcome;
use xlb_tests::{lab::LB0_MAC, packet::*};

use crate::{
    Case,
    frames::{M12, VIP1, XDP_DROP, XDP_TX, remac, tcp4, udp4},
    rewritten, unchanged,
};

pub(crate) fn cases() -> Vec<Case> {
    vec![
        rewritten(
            "v4 udp to l2 vip: MACs rewritten only",
            udp4(VIP1, 53, 20),
            XDP_TX,
            Outcome::Tx,
            |f| remac(f, M12, LB0_MAC),
        ),
        unchanged(
            "v4 l2 backend not on link: dropped",
            tcp4(Ipv4Addr::new(10, 99, 0, 4), 80, TCP_SYN, 0, |_| {}),
            XDP_DROP,
            Outcome::DropNotOnLink,
        ),
    ]
}
