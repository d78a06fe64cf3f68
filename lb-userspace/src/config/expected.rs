//! What a key takes, for the keys whose type cannot say it in a message
//! (serde would say "a boolean" or "IP address", or, for an enum of the
//! wrong TOML type, nothing at all). Keys checked by a range or a prime say
//! it themselves (see [`super::check`]).

use clap::ValueEnum;

use super::check::{DNS_LABEL_MAX, DNS_SUBDOMAIN_MAX, SCHEDULER_NAME_MAX};
use super::model::{AnnounceMode, BackendTarget, DataplaneMode, EncapName, Protocol, XdpMode};
use super::pool;

/// `field` is the dotted path of a key, without array indices.
pub(super) fn expected(field: &str) -> Option<String> {
    Some(match field {
        "vip" => "an array of tables, written [[vip]]".to_owned(),
        "dataplane" | "metrics" | "kubernetes" | "announce" => {
            format!("a table, written [{field}]")
        }
        "dataplane.mode" => one_of::<DataplaneMode>(),
        "dataplane.interfaces" => "an array of interface names such as [\"eth0\"]".to_owned(),
        "dataplane.xdp_mode" => one_of::<XdpMode>(),
        "dataplane.pin_path" => "an absolute path such as \"/sys/fs/bpf/xlb\"".to_owned(),
        "dataplane.state_dir" => "an absolute path such as \"/run/xlb\"".to_owned(),
        "dataplane.encap" | "vip.encap" => one_of::<EncapName>(),
        "dataplane.scheduler" | "vip.scheduler" => format!(
            "an IPVS scheduler name: 1 to {SCHEDULER_NAME_MAX} characters of a-z, 0-9 and _ \
             (rr, wrr, lc, wlc, sh, dh, mh, ...)"
        ),
        "dataplane.ipip_source_v4" => "an IPv4 address".to_owned(),
        "dataplane.ipip_source_v6" => "an IPv6 address".to_owned(),
        "metrics.listen" => {
            "an IP address and port such as \"127.0.0.1:9810\" or \"[::1]:9810\"".to_owned()
        }
        "vip.address" | "vip.backends.address" => "an IPv4 or IPv6 address".to_owned(),
        "vip.protocol" => one_of::<Protocol>(),
        "vip.backends" => {
            "an array of backends such as [{ address = \"10.0.0.1\", weight = 1 }]".to_owned()
        }
        "kubernetes.enabled" | "kubernetes.include_unclassed" => "true or false".to_owned(),
        "kubernetes.load_balancer_class" => "a non-empty string such as \"xlb.io/xlb\"".to_owned(),
        "kubernetes.kubeconfig" => {
            "the path of a kubeconfig file such as \"/etc/xlb/kubeconfig\"".to_owned()
        }
        "kubernetes.backend_target" => one_of::<BackendTarget>(),
        "kubernetes.pools" => pool::EXPECTED.to_owned(),
        "kubernetes.lease_namespace" => format!(
            "a namespace name such as \"xlb-system\": 1 to {DNS_LABEL_MAX} characters of \
             a-z, 0-9 and -, starting and ending with a letter or digit"
        ),
        "kubernetes.node_name" => format!(
            "a node name such as \"node-1.example.com\": 1 to {DNS_SUBDOMAIN_MAX} characters \
             of a-z, 0-9, - and ., each part between dots starting and ending with a letter \
             or digit"
        ),
        "announce.mode" => one_of::<AnnounceMode>(),
        _ => return None,
    })
}

/// `one of "a", "b", "c"`: the names serde and clap both use.
fn one_of<T: ValueEnum>() -> String {
    let names: Vec<String> = T::value_variants()
        .iter()
        .filter_map(|v| v.to_possible_value())
        .map(|v| format!("\"{}\"", v.get_name()))
        .collect();
    format!("one of {}", names.join(", "))
}

/// How messages name `value`, as the config spells it.
pub(super) fn name<T: ValueEnum>(value: T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}
