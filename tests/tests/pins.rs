//! Maps are pinned by the loader, reused by the next load, and readable by
//! bpftool with field names (BTF).

use std::process::Command;

use lb_common::{Encap, PROTO_TCP, VipInfo, names};
use lb_userspace::xdp::{Balancer, Settings};
use xlb_tests::{
    lab::{self, v4},
    netns::{PinDir, privileged},
};

#[test]
fn pinned_maps_are_reused_and_bpftool_prints_field_names() {
    if !privileged("pinned_maps_are_reused_and_bpftool_prints_field_names") {
        return;
    }
    let pins = PinDir::new();
    let settings = Settings {
        pin_dir: Some(pins.path.clone()),
        ..lab::settings()
    };
    let vip = lab::vip(
        3,
        v4(10, 99, 0, 1),
        80,
        PROTO_TCP,
        Encap::L2,
        &[(5, v4(10, 0, 0, 0x11))],
    );
    {
        let mut first = Balancer::load(&settings).expect("first load");
        lab::program(&mut first, std::slice::from_ref(&vip));
    }
    for name in [
        names::VIPS,
        names::BACKENDS,
        names::MAGLEV,
        names::FLOWS,
        names::STATS,
    ] {
        assert!(pins.path.join(name).exists(), "{name} is not pinned");
    }
    let second = Balancer::load(&settings).expect("second load");
    assert_eq!(
        second
            .maps
            .vips
            .get(&vip.key(), 0)
            .expect("VIP written by the first load"),
        VipInfo {
            vip_id: 3,
            encap: Encap::L2 as u8,
            _pad: [0; 3],
            tag: xlb_tests::lab::tag(3),
            maglev_start: 3 * 65_537,
            maglev_size: 65_537,
        }
    );
    let info = second.maps.vips.get(&vip.key(), 0).unwrap();
    assert_eq!(
        second
            .maps
            .read_maglev(&info)
            .unwrap()
            .iter()
            .filter(|&&s| s == 5)
            .count(),
        65_537
    );

    if Command::new("bpftool").arg("version").output().is_err() {
        eprintln!("SKIPPED bpftool part: bpftool not installed (cargo xtask setup installs it)");
        return;
    }
    let out = Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(pins.path.join(names::VIPS))
        .output()
        .expect("bpftool");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bpftool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for field in [
        "\"addr\": [10,99,0,1,",
        "\"port\": 80",
        "\"proto\": 6",
        "\"family\": 4",
        "\"vip_id\": 3",
        "\"encap\": 1",
    ] {
        assert!(
            text.replace(", ", ",").contains(&field.replace(", ", ",")),
            "bpftool output lacks {field}:\n{text}"
        );
    }
}
