//! The program's per-CPU route cache lives as long as the route epoch: a
//! neighbour change is not seen while the epoch stands (so the fast path
//! really reads no FIB and no clock), and is seen on the next packet once
//! the epoch moves, which the daemon's `follow` does as soon as the kernel
//! reports the change.

use std::{net::IpAddr, time::Duration};

use lb_common::{Encap, PROTO_TCP};
use lb_userspace::xdp::{
    Balancer,
    route_epoch::{self, RouteEpoch},
};
use tokio_util::sync::CancellationToken;
use xlb_tests::{
    lab::{self, CLIENT_V4, Lab, v4},
    netns::privileged,
    packet::TCP_SYN,
};

/// The destination MAC of what the balancer sent for a SYN to the VIP.
fn sent_to(b: &Balancer, ifx: u32) -> [u8; 6] {
    let frame = lab::tcp_frame(
        IpAddr::V4(CLIENT_V4),
        40_000,
        v4(10, 99, 0, 1),
        80,
        TCP_SYN,
        &[],
    );
    let (action, out) = lab::run(b.program(), ifx, &frame);
    assert_eq!(action, 3, "the SYN was not sent back out (XDP_TX)");
    out[..6].try_into().unwrap()
}

#[test]
fn cached_routes_last_as_long_as_the_route_epoch() {
    if !privileged("cached_routes_last_as_long_as_the_route_epoch") {
        return;
    }
    let lab = Lab::new();
    let neigh = |mac: &str| {
        lab.ns.ip(&[
            "neigh",
            "replace",
            "10.0.0.17",
            "lladdr",
            mac,
            "dev",
            "lb0",
            "nud",
            "permanent",
        ]);
    };
    lab.ns.run(|| {
        let mut b = Balancer::load(&lab::settings()).expect("load");
        let vip = lab::vip(
            1,
            v4(10, 99, 0, 1),
            80,
            PROTO_TCP,
            Encap::Ipip,
            &[(1, v4(10, 0, 0, 0x11))],
        );
        lab::program(&mut b, &[vip]);
        let ifx = lab::ifindex("lb0");
        let mut epoch = RouteEpoch::take(&mut b.ebpf).expect("route epoch map");
        assert_eq!(sent_to(&b, ifx), lab::backend_mac(0, 0x11));

        neigh("02:00:00:00:00:77");
        assert_eq!(
            sent_to(&b, ifx),
            lab::backend_mac(0, 0x11),
            "the route was looked up again without the epoch moving"
        );
        epoch.bump();
        assert_eq!(sent_to(&b, ifx), lab::backend_mac(0, 0x77));

        // The daemon's follower: the kernel's notification moves it. Its
        // period (an hour) plays no part.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stop = CancellationToken::new();
        let watched = RouteEpoch::take(&mut b.ebpf);
        assert!(watched.is_err(), "the epoch map has one owner");
        let task = rt.spawn(route_epoch::follow(
            epoch,
            Duration::from_secs(3600),
            stop.clone(),
        ));
        // Let it subscribe (it moves the epoch once then, not knowing what
        // changed before it ran). Were it slower than this, that first move
        // would still pick the change up: the test cannot fail for it.
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
        neigh("02:00:00:00:00:88");
        rt.block_on(async {
            let end = tokio::time::Instant::now() + Duration::from_secs(30);
            while sent_to(&b, ifx) != lab::backend_mac(0, 0x88) {
                assert!(
                    tokio::time::Instant::now() < end,
                    "the neighbour change did not move the epoch"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        stop.cancel();
        rt.block_on(task).unwrap();
    });
}
