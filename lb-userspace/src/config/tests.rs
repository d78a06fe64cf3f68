use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use lb_common::Encap;

use super::*;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/xlb.toml")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn pool(first: &str, last: &str) -> AddressPool {
    AddressPool {
        first: ip(first),
        last: ip(last),
        announce: None,
    }
}

/// The error for `text`, checked against where it should be and what it
/// should say; returns its kind for checks of the variant.
#[track_caller]
fn rejects(text: &str, line: usize, column: usize, message: &str) -> ErrorKind {
    let err = parse(text, "xlb.toml").expect_err("the config should be rejected");
    assert_eq!(
        Err(err.clone()),
        parse_at_once(text, "xlb.toml"),
        "read at once"
    );
    assert_eq!(
        (err.line, err.column, err.kind.to_string().as_str()),
        (line, column, message),
        "for {err}"
    );
    assert_eq!(
        err.to_string(),
        format!("xlb.toml:{line}:{column}: {message}")
    );
    err.kind
}

#[track_caller]
fn accepts(text: &str) -> Config {
    let config = parse(text, "xlb.toml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        Ok(&config),
        parse_at_once(text, "xlb.toml").as_ref(),
        "read at once"
    );
    config
}

/// `[dataplane]` with `extra` lines added, and one VIP per `vips` entry.
fn with_vips(dataplane: &str, vips: &[&str]) -> String {
    let mut text = format!("[dataplane]\n{dataplane}\n");
    for vip in vips {
        text.push_str(&format!("[[vip]]\n{vip}\n"));
    }
    text
}

// --- Accepted configs -------------------------------------------------------

#[test]
fn empty_file_is_the_default_config() {
    let config = accepts("");
    assert_eq!(config, Config::default());
    assert!(config.vips.is_empty());
    assert_eq!(accepts("# nothing but a comment\n\n"), Config::default());
}

#[test]
fn defaults_are_the_documented_ones() {
    let d = Dataplane::default();
    assert_eq!(d.mode, DataplaneMode::Auto);
    assert!(d.interfaces.is_empty());
    assert_eq!(d.xdp_mode, XdpMode::Native);
    assert_eq!(d.pin_path, PathBuf::from("/sys/fs/bpf/xlb"));
    assert_eq!(d.state_dir, PathBuf::from("/run/xlb"));
    assert_eq!(d.encap, Encap::Ipip);
    assert_eq!(d.scheduler, "mh");
    assert_eq!(d.maglev_table_size, 65_537);
    assert_eq!(d.flow_table_size, 1_048_576);
    assert_eq!(d.max_vips, 64);
    assert_eq!(d.max_backends, 4096);
    assert_eq!(d.ipip_source_v4, None);
    assert_eq!(d.ipip_source_v6, None);
    assert_eq!(d.nexthop_ttl_ms, 100);
    assert_eq!(
        Metrics::default().listen,
        "127.0.0.1:9810".parse::<SocketAddr>().unwrap()
    );
    let k = Kubernetes::default();
    assert!(!k.enabled);
    assert_eq!(k.load_balancer_class, "xlb.io/xlb");
    assert!(!k.include_unclassed);
    assert_eq!(k.kubeconfig, None);
    assert_eq!(k.backend_target, BackendTarget::Pod);
    assert!(k.pools.is_empty());
    assert_eq!(k.lease_namespace, "xlb-system");
    assert_eq!(k.node_name, None);
    assert_eq!(
        (k.lease_duration_ms, k.renew_deadline_ms, k.retry_period_ms),
        (15_000, 10_000, 2_000)
    );
    assert_eq!(Announce::default().mode, AnnounceMode::None);
}

#[test]
fn vip_defaults_and_encap_inheritance() {
    let config = accepts(
        "[dataplane]\nencap = \"l2\"\n\
         [[vip]]\naddress = \"10.0.0.1\"\nbackends = [{ address = \"10.0.1.1\" }]\n\
         [[vip]]\naddress = \"10.0.0.2\"\nencap = \"ipip\"\n",
    );
    let [first, second] = &config.vips[..] else {
        panic!("two VIPs expected: {config:?}");
    };
    assert_eq!(first.port, 0);
    assert_eq!(first.protocol, Protocol::Tcp);
    assert_eq!(first.encap, Encap::L2, "inherited from dataplane.encap");
    assert_eq!(
        first.backends,
        [Backend {
            address: ip("10.0.1.1"),
            weight: 1
        }]
    );
    assert_eq!(second.encap, Encap::Ipip, "the VIP's own encap wins");
    assert!(second.backends.is_empty());
}

#[test]
fn vip_scheduler_defaults_to_the_dataplane_one() {
    let config = accepts("[[vip]]\naddress = \"10.0.0.1\"\n");
    assert_eq!(config.dataplane.scheduler, "mh");
    assert_eq!(
        config.vips[0].scheduler, "mh",
        "the default of dataplane.scheduler"
    );

    let config = accepts(
        "[dataplane]\nscheduler = \"wlc\"\n\
         [[vip]]\naddress = \"10.0.0.1\"\n\
         [[vip]]\naddress = \"10.0.0.2\"\nscheduler = \"sh\"\n",
    );
    let [first, second] = &config.vips[..] else {
        panic!("two VIPs expected: {config:?}");
    };
    assert_eq!(config.dataplane.scheduler, "wlc");
    assert_eq!(first.scheduler, "wlc", "inherited from dataplane.scheduler");
    assert_eq!(second.scheduler, "sh", "the VIP's own scheduler wins");
}

#[test]
fn any_well_formed_scheduler_name_is_accepted() {
    // Syntax only: third-party schedulers exist and the kernel decides.
    for name in ["rr", "lblcr", "twos", "my_sched2", "a", "abcdefghijklmno"] {
        let config = accepts(&format!("[dataplane]\nscheduler = \"{name}\"\n"));
        assert_eq!(config.dataplane.scheduler, name);
    }
}

#[test]
fn state_dir_is_read() {
    let config = accepts("[dataplane]\nstate_dir = \"/var/lib/xlb\"\n");
    assert_eq!(config.dataplane.state_dir, PathBuf::from("/var/lib/xlb"));
}

#[test]
fn same_address_with_another_port_or_protocol_is_another_vip() {
    let config = accepts(&with_vips(
        "",
        &[
            "address = \"10.0.0.1\"\nport = 80",
            "address = \"10.0.0.1\"\nport = 443",
            "address = \"10.0.0.1\"\nport = 80\nprotocol = \"udp\"",
            "address = \"10.0.0.1\"",
        ],
    ));
    assert_eq!(config.vips.len(), 4);
}

#[test]
fn ipip_vip_without_a_source_of_its_family_is_fine() {
    // The daemon falls back to the interface's address.
    let config = accepts(
        "[dataplane]\nipip_source_v4 = \"10.0.0.1\"\n\
         [[vip]]\naddress = \"fd00::1\"\nencap = \"ipip\"\nbackends = [{ address = \"fd00::2\" }]\n",
    );
    assert_eq!(config.dataplane.ipip_source_v6, None);
    assert_eq!(config.vips[0].encap, Encap::Ipip);
}

#[test]
fn backends_may_be_written_as_an_array_of_tables() {
    let config = accepts(
        "[[vip]]\naddress = \"10.0.0.1\"\n\
         [[vip.backends]]\naddress = \"10.0.1.1\"\nweight = 3\n\
         [[vip.backends]]\naddress = \"10.0.1.2\"\n",
    );
    let weights: Vec<u32> = config.vips[0].backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [3, 1]);
}

#[test]
fn integers_in_any_toml_notation() {
    let config = accepts("[dataplane]\nflow_table_size = 0x10_0000\nmax_vips = 0o100\n");
    assert_eq!(config.dataplane.flow_table_size, 1 << 20);
    assert_eq!(config.dataplane.max_vips, 64);
}

#[test]
fn protocol_numbers() {
    assert_eq!(Protocol::Tcp.number(), 6);
    assert_eq!(Protocol::Udp.number(), 17);
}

// --- The example and round trips ---------------------------------------------

#[test]
fn example_config_loads() {
    let config = load(&example_path()).unwrap_or_else(|e| panic!("{e}"));
    let d = &config.dataplane;
    assert_eq!(d.mode, DataplaneMode::Auto);
    assert_eq!(d.interfaces, ["eth0"]);
    assert_eq!(d.maglev_table_size, 65_537);
    assert_eq!(d.ipip_source_v4, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(
        d.ipip_source_v6,
        Some("fd00::1".parse::<Ipv6Addr>().unwrap())
    );
    assert_eq!(d.nexthop_ttl_ms, 100);
    assert_eq!(d.scheduler, "mh");
    assert_eq!(d.state_dir, PathBuf::from("/run/xlb"));

    let [v4, v6] = &config.vips[..] else {
        panic!("two VIPs expected: {config:?}");
    };
    assert_eq!(
        (v4.address, v4.port, v4.protocol, v4.encap),
        (ip("10.99.100.1"), 80, Protocol::Tcp, Encap::Ipip)
    );
    let weights: Vec<u32> = v4.backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [2, 1, 1]);
    assert_eq!(
        (v6.address, v6.port, v6.encap),
        (ip("fd00:99::100"), 443, Encap::L2)
    );
    assert_eq!(v4.scheduler, "mh", "inherited");
    assert_eq!(v6.scheduler, "sh", "its own");
    assert_eq!(
        v6.backends[1],
        Backend {
            address: ip("fd00:99::12"),
            weight: 0
        },
        "the draining backend"
    );
    assert_eq!(config.announce.mode, AnnounceMode::None);
    assert!(!config.kubernetes.enabled);
    assert_eq!(config.health, Health::default(), "every key at its default");
    assert_eq!(
        v4.health,
        config
            .health
            .for_kind(CheckKind::Http, Some("/healthz".into()))
    );
    assert_eq!(v6.health, None);
}

#[test]
fn example_config_round_trips_through_to_toml() {
    let config = load(&example_path()).unwrap();
    let text = to_toml(&config);
    let again = parse(&text, "rendered").unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again, config);
    assert_eq!(to_toml(&again), text, "rendering is stable");
}

#[test]
fn unusual_values_round_trip() {
    let config = Config {
        dataplane: Dataplane {
            mode: DataplaneMode::Ipvs,
            interfaces: vec!["eth\"0".into(), "ens5\\x".into()],
            xdp_mode: XdpMode::Generic,
            pin_path: "/sys/fs/bpf/x lb".into(),
            state_dir: "/run/x\"lb".into(),
            encap: Encap::L2,
            scheduler: "my_sched_1".into(),
            ipip_source_v4: None,
            ipip_source_v6: Some(Ipv6Addr::LOCALHOST),
            ..Dataplane::default()
        },
        metrics: Metrics {
            listen: "[::1]:9000".parse().unwrap(),
        },
        vips: vec![Vip {
            address: ip("fd00::1"),
            port: 0,
            protocol: Protocol::Udp,
            encap: Encap::Ipip,
            scheduler: "wrr".into(),
            announce: Announcement::L2,
            backends: Vec::new(),
            maglev_table_size: None,
            health: Some(HealthCheck {
                probe: Probe::Tcp,
                port: Some(53),
                via: Via::Direct,
                interval: std::time::Duration::from_millis(3_600_000),
                timeout: std::time::Duration::from_millis(10),
                rise: std::num::NonZeroU32::new(100).unwrap(),
                fall: std::num::NonZeroU32::MIN,
                jitter_percent: 50,
                fail_open: false,
            }),
        }],
        kubernetes: Kubernetes {
            enabled: true,
            load_balancer_class: "example.com/ünïcode".into(),
            include_unclassed: true,
            kubeconfig: Some("../k\"ube config".into()),
            backend_target: BackendTarget::Node,
            pools: vec![
                AddressPool {
                    announce: Some(AnnounceMode::L2),
                    ..pool("10.0.0.1", "10.0.0.1")
                },
                pool("10.0.1.0", "10.0.1.255"),
                pool("fd00::", "fd00::ffff:ffff"),
            ],
            lease_namespace: "x".into(),
            node_name: Some("ip-10-0-0-1.eu-west-1.compute.internal".into()),
            lease_duration_ms: 3_600_000,
            renew_deadline_ms: 101,
            retry_period_ms: 100,
            lease_buckets: 1024,
        },
        announce: Announce {
            mode: AnnounceMode::L2,
            static_leader: false,
            liveness_bound_ms: Some(1_000),
            gratuitous_count: 3,
            gratuitous_interval_ms: 250,
            service_modes: vec![AnnounceMode::Bgp, AnnounceMode::None],
            refresh_interval_ms: 60_000,
            aws: Aws {
                endpoint_url: Some("http://127.0.0.1:5000".into()),
                imds_url: Some("http://127.0.0.1:5001".into()),
                region: Some("us-west-2".into()),
                network_interface_id: Some("eni-0123456789abcdef0".into()),
                reconcile_interval_ms: 1_000,
                check_private_ip: false,
            },
            bgp: Bgp {
                table: 100,
                protocol: 200,
                announce_fail_open: true,
            },
        },
        health: Health {
            kind: CheckKind::Http,
            via: Via::Direct,
            port: Some(65_535),
            interval_ms: 11,
            timeout_ms: 10,
            rise: 100,
            fall: 1,
            jitter_percent: 0,
            fail_open: false,
            path: "/a\"b\\c?d=%20&e#f".into(),
            status: StatusRange { lo: 100, hi: 599 },
            host: Some("[fd00::1]:8443".into()),
            source_v4: Some(Ipv4Addr::new(192, 0, 2, 1)),
            source_v6: Some(Ipv6Addr::LOCALHOST),
            mark: 0xFF00_0000,
            table: u32::MAX,
            rule_priority: 32_765,
        },
    };
    let text = to_toml(&config);
    assert_eq!(parse(&text, "rendered"), Ok(config), "{text}");
}

#[test]
fn serializes_to_json_with_names_as_written_in_the_config() {
    // The same shape as the file: `vip`, not the model's `vips`.
    let config = load(&example_path()).unwrap();
    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["dataplane"]["mode"], "auto");
    assert_eq!(json["dataplane"]["encap"], "ipip");
    assert_eq!(json["dataplane"]["pin_path"], "/sys/fs/bpf/xlb");
    assert_eq!(json["dataplane"]["state_dir"], "/run/xlb");
    assert_eq!(json["dataplane"]["scheduler"], "mh");
    assert_eq!(json["vip"][1]["scheduler"], "sh");
    assert_eq!(json["dataplane"]["ipip_source_v6"], "fd00::1");
    assert_eq!(json["metrics"]["listen"], "127.0.0.1:9810");
    assert_eq!(json["vip"][1]["encap"], "l2");
    assert_eq!(json["vip"][1]["protocol"], "tcp");
    assert_eq!(json["vip"][1]["backends"][1]["address"], "fd00:99::12");
    assert_eq!(json["vip"][1]["backends"][1]["weight"], 0);
    let aws = Announce {
        mode: AnnounceMode::Aws,
        ..Announce::default()
    };
    assert_eq!(serde_json::to_value(aws).unwrap()["mode"], "aws");
    let unset = serde_json::to_value(Dataplane::default()).unwrap();
    assert!(unset["ipip_source_v4"].is_null());
}

// --- load() ----------------------------------------------------------------

/// A file of its own under the temp directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!("xlb-config-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn load_names_the_file_in_errors() {
    let file = TempFile::new("bad.toml", b"[dataplane]\nmode = \"fast\"\n");
    let err = load(&file.0).unwrap_err();
    assert_eq!(err.file, file.0.display().to_string());
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2:8: dataplane.mode: unknown variant `fast`, expected one of `auto`, `xdp`, `ipvs`",
            file.0.display()
        )
    );
}

#[test]
fn load_of_a_missing_file_is_an_io_error() {
    let path = std::env::temp_dir().join("xlb-config-does-not-exist.toml");
    let err = load(&path).unwrap_err();
    assert_eq!(err.file, path.display().to_string());
    assert_eq!((err.line, err.column), (1, 1));
    assert!(
        matches!(
            &err.kind,
            ErrorKind::Io {
                kind: std::io::ErrorKind::NotFound,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "{}:1:1: cannot read the config file: ",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn load_points_at_the_first_byte_that_is_not_utf8() {
    let file = TempFile::new(
        "latin1.toml",
        b"[kubernetes]\nload_balancer_class = \"caf\xe9\"\n",
    );
    let err = load(&file.0).unwrap_err();
    assert_eq!((err.line, err.column), (2, 27));
    assert_eq!(
        err.kind.to_string(),
        "invalid TOML: the file is not valid UTF-8"
    );
}

// --- 1. TOML syntax ----------------------------------------------------------

#[test]
fn syntax_errors() {
    let kind = rejects(
        "[dataplane]\nmode = \"auto\n",
        2,
        13,
        "invalid TOML: invalid basic string, expected `\"`",
    );
    assert!(matches!(kind, ErrorKind::Syntax { .. }));
    rejects(
        "[dataplane]\nmode = \n",
        2,
        8,
        "invalid TOML: string values must be quoted, expected literal string",
    );
    rejects(
        "[dataplane]\nmode = \"auto\"\nmode = \"xdp\"\n",
        3,
        1,
        "invalid TOML: duplicate key `mode`",
    );
    rejects(
        "[dataplane]\nmax_vips = 1\n\n[dataplane]\n",
        4,
        2,
        "invalid TOML: duplicate key `dataplane`",
    );
}

// --- 2. Unknown keys -----------------------------------------------------------

#[test]
fn unknown_keys_name_the_table_and_its_keys() {
    let kind = rejects(
        "[dataplane]\nmode = \"auto\"\n  maglev_size = 7\n",
        3,
        3,
        "dataplane: unknown field `maglev_size`, expected one of `mode`, `interfaces`, \
         `xdp_mode`, `pin_path`, `state_dir`, `encap`, `scheduler`, `maglev_table_size`, \
         `maglev_slots`, `flow_table_size`, `max_vips`, `max_backends`, `ipip_source_v4`, `ipip_source_v6`, \
         `nexthop_ttl_ms`",
    );
    assert!(matches!(kind, ErrorKind::Invalid { .. }));
    rejects(
        "\n[dataplan]\n",
        2,
        2,
        "unknown field `dataplan`, expected one of `dataplane`, `metrics`, `vip`, \
         `kubernetes`, `announce`, `health`",
    );
    rejects(
        "[metrics]\nlisten = \"127.0.0.1:1\"\nport = 1\n",
        3,
        1,
        "metrics: unknown field `port`, expected `listen`",
    );
    rejects(
        "[[vip]]\nadress = \"10.0.0.1\"\naddress = \"10.0.0.1\"\n",
        2,
        1,
        "vip: unknown field `adress`, expected one of `address`, `port`, `protocol`, `encap`, \
         `scheduler`, `announce`, `allocation_id`, `backends`, `health`, `maglev_table_size`",
    );
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nbackends = [{ address = \"10.0.0.2\", wieght = 2 }]\n",
        3,
        37,
        "vip.backends: unknown field `wieght`, expected `address` or `weight`",
    );
    rejects(
        "[kubernetes]\nclass = \"x\"\n",
        2,
        1,
        "kubernetes: unknown field `class`, expected one of `enabled`, `load_balancer_class`, \
         `include_unclassed`, `kubeconfig`, `backend_target`, `pools`, `lease_namespace`, \
         `node_name`, `lease_duration_ms`, `renew_deadline_ms`, `retry_period_ms`, `lease_buckets`",
    );
    rejects(
        "[announce]\n\"mode \" = \"l2\"\n",
        2,
        1,
        "announce: unknown field `mode `, expected one of `mode`, `static_leader`, \
         `liveness_bound_ms`, `gratuitous_count`, `gratuitous_interval_ms`, `refresh_interval_ms`, `service_modes`, `aws`, `bgp`",
    );
}

/// The keys serde reads for `T`, in declaration order: what the
/// unknown-key message lists.
fn keys<'de, T: serde::Deserialize<'de>>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};

    struct Keys(&'static [&'static str]);

    impl<'de> de::Deserializer<'de> for &mut Keys {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            self.0 = fields;
            Err(de::Error::custom("only the field names were wanted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut keys = Keys(&[]);
    let _ = T::deserialize(&mut keys);
    keys.0
}

#[test]
fn every_key_is_read_and_has_a_message() {
    // A date-time is valid nowhere, so each key must give a value error at
    // the value that names the key, never "unknown field".
    let vip = "[[vip]]\n";
    let backend = "[[vip]]\naddress = \"10.0.0.1\"\n[[vip.backends]]\n";
    let tables = [
        ("[dataplane]\n", "dataplane", keys::<Dataplane>()),
        ("[metrics]\n", "metrics", keys::<Metrics>()),
        (vip, "vip", keys::<model::VipEntry>()),
        (backend, "vip.backends", keys::<Backend>()),
        ("[kubernetes]\n", "kubernetes", keys::<Kubernetes>()),
        ("[announce]\n", "announce", keys::<Announce>()),
        ("[health]\n", "health", keys::<Health>()),
        (
            "[[vip]]\naddress = \"10.0.0.1\"\n[vip.health]\n",
            "vip.health",
            keys::<health::VipHealth>(),
        ),
    ];
    assert_eq!(keys::<Dataplane>().len(), 15, "the introspection works");
    assert_eq!(keys::<Health>().len(), 17);
    assert_eq!(keys::<health::VipHealth>().len(), 12);
    for (header, table, keys) in tables {
        for key in keys {
            let line = format!("{key} = 1979-05-27\n");
            // Without an address, the error would be the missing address.
            let address = if (header == vip || header == backend) && *key != "address" {
                "address = \"10.0.0.1\"\n"
            } else {
                ""
            };
            let text = format!("{header}{address}{line}");
            let err = parse(&text, "t").expect_err(&text);
            assert!(
                matches!(err.kind, ErrorKind::Invalid { .. }),
                "{text}: {err}"
            );
            assert!(
                err.kind
                    .to_string()
                    .starts_with(&format!("{table}.{key}: ")),
                "{text}: {err}"
            );
            assert_eq!(err.column, key.len() + 4, "{text}: {err}");
        }
    }
    for key in keys::<model::File>() {
        let err = parse(&format!("{key} = 1979-05-27\n"), "t").unwrap_err();
        assert!(
            matches!(err.kind, ErrorKind::Invalid { .. }),
            "{key}: {err}"
        );
        assert!(
            err.kind.to_string().starts_with(&format!("{key}: ")),
            "{err}"
        );
        assert_eq!((err.line, err.column), (1, key.len() + 4), "{err}");
    }
}

#[test]
fn enums_are_spelled_alike_in_the_config_and_on_the_command_line() {
    use clap::ValueEnum;

    #[track_caller]
    fn same<T: ValueEnum + serde::Serialize>() {
        for v in T::value_variants() {
            let clap = v.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(serde_json::to_value(v).unwrap(), clap);
        }
    }
    same::<DataplaneMode>();
    same::<XdpMode>();
    same::<Protocol>();
    same::<BackendTarget>();
    same::<AnnounceMode>();
    for (encap, name) in [(Encap::Ipip, "ipip"), (Encap::L2, "l2")] {
        let config = accepts(&format!("[dataplane]\nencap = \"{name}\"\n"));
        assert_eq!(config.dataplane.encap, encap);
        assert!(to_toml(&config).contains(&format!("encap = \"{name}\"")));
    }
}

// --- 3. Wrong types and bad enum values --------------------------------------

#[test]
fn bad_enum_values_list_the_accepted_ones() {
    let kind = rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nprotocol = \"sctp\"\n",
        3,
        12,
        "vip.protocol: unknown variant `sctp`, expected `tcp` or `udp`",
    );
    assert!(matches!(kind, ErrorKind::Invalid { .. }));
    rejects(
        "[dataplane]\nmode = 'fast'\n",
        2,
        8,
        "dataplane.mode: unknown variant `fast`, expected one of `auto`, `xdp`, `ipvs`",
    );
    rejects(
        "[dataplane]\nxdp_mode = \"skb\"\n",
        2,
        12,
        "dataplane.xdp_mode: unknown variant `skb`, expected `native` or `generic`",
    );
    rejects(
        "[dataplane]\nencap = \"gre\"\n",
        2,
        9,
        "dataplane.encap: unknown variant `gre`, expected `ipip` or `l2`",
    );
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nencap = \"IPIP\"\n",
        3,
        9,
        "vip.encap: unknown variant `IPIP`, expected `ipip` or `l2`",
    );
    rejects(
        "[announce]\nmode = \"ospf\"\n",
        2,
        8,
        "announce.mode: unknown variant `ospf`, expected one of `none`, `l2`, `aws`, `bgp`",
    );
    // Whichever TOML quotes the file used.
    rejects(
        "[announce]\nmode = \"\"\"\nbgp\n\"\"\"\n",
        2,
        8,
        "announce.mode: unknown variant `bgp\n`, expected one of `none`, `l2`, `aws`, `bgp`",
    );
    rejects(
        "[announce.bgp]\ntable = 254\n",
        2,
        9,
        "announce.bgp.table: invalid value: integer `254`, expected a routing table id from 1 to 4294967295 other than 253, 254 and 255 (the kernel's default, main and local tables)",
    );
    rejects(
        "[announce.bgp]\nprotocol = 2\n",
        2,
        12,
        "announce.bgp.protocol: invalid value: integer `2`, expected an integer from 5 to 255",
    );
}

#[test]
fn wrong_types_name_the_field_and_what_it_takes() {
    rejects(
        "[dataplane]\nmode = 1\n",
        2,
        8,
        "dataplane.mode: wanted string or table",
    );
    rejects(
        "[kubernetes]\nenabled = \"yes\"\n",
        2,
        11,
        "kubernetes.enabled: invalid type: string \"yes\", expected a boolean",
    );
    rejects(
        "[kubernetes]\nload_balancer_class = [\"a\"]\n",
        2,
        23,
        "kubernetes.load_balancer_class: invalid type: sequence, expected a non-empty string \
         such as \"xlb.io/xlb\"",
    );
    rejects(
        "[dataplane]\ninterfaces = \"eth0\"\n",
        2,
        14,
        "dataplane.interfaces: invalid type: string \"eth0\", expected a sequence",
    );
    rejects(
        "[dataplane]\ninterfaces = [\"eth0\", 7]\n",
        2,
        23,
        "dataplane.interfaces: invalid type: integer `7`, expected an interface name such as \
         \"eth0\"",
    );
    rejects(
        "[dataplane]\ninterfaces = [\"eth0\", \"\"]\n",
        2,
        23,
        "dataplane.interfaces: invalid value: string \"\", expected an interface name such as \
         \"eth0\"",
    );
    rejects(
        "[dataplane]\npin_path = \"xlb\"\n",
        2,
        12,
        "dataplane.pin_path: invalid value: string \"xlb\", expected an absolute path",
    );
    rejects(
        "[dataplane]\nstate_dir = \"run/xlb\"\n",
        2,
        13,
        "dataplane.state_dir: invalid value: string \"run/xlb\", expected an absolute path",
    );
    rejects(
        "[dataplane]\nstate_dir = 1\n",
        2,
        13,
        "dataplane.state_dir: invalid type: integer `1`, expected an absolute path",
    );
    rejects(
        "[dataplane]\nmax_backends = 1.5\n",
        2,
        16,
        "dataplane.max_backends: invalid type: floating point `1.5`, expected an integer from 2 \
         to 16777216",
    );
    rejects(
        "dataplane = 5\n",
        1,
        13,
        "dataplane: invalid type: integer `5`, expected a table",
    );
    rejects(
        "[[metrics]]\n",
        1,
        1,
        "metrics: invalid type: sequence, expected a table",
    );
    rejects(
        "[vip]\naddress = \"10.0.0.1\"\n",
        1,
        1,
        "vip: invalid type: map, expected a sequence",
    );
    rejects(
        "vip = [1]\n",
        1,
        8,
        "vip: invalid type: integer `1`, expected a table, written [[vip]]",
    );
    // A table made of dotted keys.
    rejects(
        "vip.port = 1\n",
        1,
        1,
        "vip: invalid type: map, expected a sequence",
    );
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nbackends = \"10.0.0.2\"\n",
        3,
        12,
        "vip.backends: invalid type: string \"10.0.0.2\", expected a sequence",
    );
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nbackends = [\"10.0.0.2\"]\n",
        3,
        13,
        "vip.backends: invalid type: string \"10.0.0.2\", expected a backend such as \
         { address = \"10.0.0.1\", weight = 1 }",
    );
    rejects(
        "[[vip]]\naddress = '10.0.0.1'\nport = '''80'''\n",
        3,
        8,
        "vip.port: invalid type: string \"80\", expected an integer from 0 (every port) to 65535",
    );
    rejects(
        "[[vip]]\naddress = '10.0.0.1'\nport = [\n  80,\n]\n",
        3,
        8,
        "vip.port: invalid type: sequence, expected an integer from 0 (every port) to 65535",
    );
}

#[test]
fn missing_addresses() {
    let kind = rejects("[[vip]]\nport = 80\n", 1, 1, "vip: missing field `address`");
    assert!(matches!(kind, ErrorKind::Invalid { .. }));
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nbackends = [{ weight = 1 }]\n",
        3,
        13,
        "vip.backends: missing field `address`",
    );
}

#[test]
fn scheduler_names_are_checked_for_syntax_only() {
    let rule = "an IPVS scheduler name: 1 to 15 characters of a-z, 0-9 and _ \
                (rr, wrr, lc, wlc, sh, dh, mh, ...)";
    let kind = rejects(
        "[dataplane]\nscheduler = \"Round Robin\"\n",
        2,
        13,
        &format!("dataplane.scheduler: invalid value: string \"Round Robin\", expected {rule}"),
    );
    assert!(matches!(kind, ErrorKind::Invalid { .. }));
    rejects(
        "[dataplane]\nscheduler = \"\"\n",
        2,
        13,
        &format!("dataplane.scheduler: invalid value: string \"\", expected {rule}"),
    );
    rejects(
        "[dataplane]\nscheduler = \"abcdefghijklmnop\"\n",
        2,
        13,
        &format!(
            "dataplane.scheduler: invalid value: string \"abcdefghijklmnop\", expected {rule}"
        ),
    );
    rejects(
        "[dataplane]\nscheduler = 7\n",
        2,
        13,
        &format!("dataplane.scheduler: invalid type: integer `7`, expected {rule}"),
    );
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nscheduler = \"ip_vs_mh\"\n[[vip]]\naddress = \"10.0.0.2\"\n  scheduler = \"m-h\"\n",
        6,
        15,
        &format!("vip.scheduler: invalid value: string \"m-h\", expected {rule}"),
    );
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nscheduler = \"MH\"\n",
        3,
        13,
        &format!("vip.scheduler: invalid value: string \"MH\", expected {rule}"),
    );
}

// --- 4. Bad IP addresses -----------------------------------------------------

#[test]
fn bad_addresses_are_reported_at_the_value() {
    let kind = rejects(
        "[[vip]]\naddress = \"10.0.0.300\"\n",
        2,
        11,
        "vip.address: invalid IP address syntax",
    );
    assert!(matches!(kind, ErrorKind::Invalid { .. }));
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nbackends = [{ address = \"backend-1\" }]\n",
        3,
        25,
        "vip.backends.address: invalid IP address syntax",
    );
    rejects(
        "[[vip]]\naddress = 10\n",
        2,
        11,
        "vip.address: invalid type: integer `10`, expected IP address",
    );
    rejects(
        "[dataplane]\nipip_source_v4 = \"fd00::1\"\n",
        2,
        18,
        "dataplane.ipip_source_v4: invalid IPv4 address syntax",
    );
    rejects(
        "[dataplane]\nipip_source_v6 = \"10.0.0.1\"\n",
        2,
        18,
        "dataplane.ipip_source_v6: invalid IPv6 address syntax",
    );
}

// --- 5. Bad socket address ---------------------------------------------------

#[test]
fn bad_metrics_listen_address() {
    let message = |found: &str| {
        format!(
            "metrics.listen: invalid {found}, expected an IP address and port such as \
             \"127.0.0.1:9810\" or \"[::1]:9810\""
        )
    };
    let kind = rejects(
        "[metrics]\nlisten = \"localhost:9810\"\n",
        2,
        10,
        &message("value: string \"localhost:9810\""),
    );
    assert!(matches!(kind, ErrorKind::Invalid { .. }));
    rejects(
        "[metrics]\nlisten = \"127.0.0.1\"\n",
        2,
        10,
        &message("value: string \"127.0.0.1\""),
    );
    rejects(
        "[metrics]\nlisten = \"::1:9810\"\n",
        2,
        10,
        &message("value: string \"::1:9810\""),
    );
    rejects(
        "[metrics]\nlisten = 9810\n",
        2,
        10,
        &message("type: integer `9810`"),
    );
    let config = accepts("[metrics]\nlisten = \"[::]:9100\"\n");
    assert_eq!(config.metrics.listen, "[::]:9100".parse().unwrap());
}

// --- 6. Duplicate VIPs -------------------------------------------------------

#[test]
fn duplicate_vip_is_reported_at_the_second_with_the_line_of_the_first() {
    let text = with_vips(
        "",
        &[
            "address = \"10.0.0.1\"\nport = 80",
            "address = \"10.0.0.2\"\nport = 80",
            "address = \"10.0.0.1\"\nport = 80\nprotocol = \"tcp\"",
        ],
    );
    let kind = rejects(
        &text,
        10,
        11,
        "duplicate VIP 10.0.0.1:80/tcp: already defined at line 4",
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    // Written differently, the same address.
    rejects(
        &with_vips("", &["address = \"fd00::1\"", "address = \"fd00:0::0:1\""]),
        6,
        11,
        "duplicate VIP [fd00::1]:*/tcp: already defined at line 4",
    );
}

// --- 7. Duplicate backends ---------------------------------------------------

#[test]
fn duplicate_backend_within_a_vip() {
    let kind = rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nport = 53\nprotocol = \"udp\"\nbackends = [\n\
         \x20 { address = \"10.0.1.1\" },\n\
         \x20 { address = \"10.0.1.2\" },\n\
         \x20 { address = \"10.0.1.1\", weight = 0 },\n]\n",
        8,
        15,
        "duplicate backend 10.0.1.1 in VIP 10.0.0.1:53/udp: already listed at line 6",
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    // The same backend under two VIPs is fine.
    accepts(&with_vips(
        "",
        &[
            "address = \"10.0.0.1\"\nbackends = [{ address = \"10.0.1.1\" }]",
            "address = \"10.0.0.2\"\nbackends = [{ address = \"10.0.1.1\" }]",
        ],
    ));
}

// --- 8. Weights --------------------------------------------------------------

#[test]
fn weight_out_of_range() {
    let vip = |weight: &str| {
        format!(
            "[[vip]]\naddress = \"10.0.0.1\"\nbackends = [{{ address = \"10.0.1.1\", weight = {weight} }}]\n"
        )
    };
    let message = |found: &str| {
        format!(
            "vip.backends.weight: invalid {found}, expected an integer from 0 (drain: no new \
             flows) to 65535"
        )
    };
    let kind = rejects(&vip("65536"), 3, 46, &message("value: integer `65536`"));
    assert!(matches!(kind, ErrorKind::Invalid { .. }));
    rejects(&vip("-1"), 3, 46, &message("value: integer `-1`"));
    rejects(&vip("\"2\""), 3, 46, &message("type: string \"2\""));
    let config = accepts(&vip("65535"));
    assert_eq!(config.vips[0].backends[0].weight, 65_535);
    assert_eq!(accepts(&vip("0")).vips[0].backends[0].weight, 0);
}

// --- 9. Address families -------------------------------------------------------

#[test]
fn backend_of_the_other_family() {
    let kind = rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nbackends = [{ address = \"10.0.1.1\" }, { address = \"fd00::2\" }]\n",
        4,
        51,
        "backend fd00::2 is IPv6 but VIP 10.0.0.1:80/tcp is IPv4: its encap \"ipip\" carries \
         IPv4 in IPv4 and IPv6 in IPv6 only",
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    rejects(
        "[dataplane]\nencap = \"l2\"\n[[vip]]\naddress = \"fd00::1\"\nport = 443\nbackends = [{ address = \"10.0.1.1\" }]\n",
        6,
        25,
        "backend 10.0.1.1 is IPv4 but VIP [fd00::1]:443/tcp is IPv6: its encap \"l2\" delivers \
         packets still addressed to the VIP, so the backend must be of the same family",
    );
}

// --- 10. Maglev table size -----------------------------------------------------

#[test]
fn maglev_table_size_must_be_prime() {
    let message = |found: &str| {
        format!(
            "dataplane.maglev_table_size: invalid value: integer `{found}`, expected a prime \
             number such as 65537, 131071 or 262147"
        )
    };
    let kind = rejects(
        "[dataplane]\nmaglev_table_size = 65536\n",
        2,
        21,
        &message("65536"),
    );
    assert!(matches!(kind, ErrorKind::Invalid { .. }));
    rejects("[dataplane]\nmaglev_table_size = 1\n", 2, 21, &message("1"));
    rejects(
        "[dataplane]\nmaglev_table_size = 4294967311\n",
        2,
        21,
        &message("4294967311"),
    );
    assert_eq!(
        accepts("[dataplane]\nmaglev_table_size = 131071\n")
            .dataplane
            .maglev_table_size,
        131_071
    );
}

#[test]
fn maglev_table_must_have_two_slots_per_backend_of_the_largest_vip() {
    let backends = |n: usize| {
        let list: Vec<String> = (1..=n)
            .map(|i| format!("{{ address = \"10.0.1.{i}\" }}"))
            .collect();
        format!("backends = [{}]", list.join(", "))
    };
    let text = with_vips(
        "maglev_table_size = 7",
        &[
            &format!("address = \"10.0.0.1\"\n{}", backends(3)),
            &format!("address = \"10.0.0.2\"\nport = 80\n{}", backends(4)),
            &format!("address = \"10.0.0.3\"\n{}", backends(4)),
        ],
    );
    let kind = rejects(
        &text,
        2,
        21,
        "`dataplane.maglev_table_size` = 7 is too small for VIP 10.0.0.2:80/tcp (line 7) with 4 \
         backends: it needs at least 8 slots, 2 per backend; use a larger prime such as 65537, \
         131071 or 262147",
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    // Exactly two per backend is enough; draining backends count.
    accepts(&with_vips(
        "maglev_table_size = 7",
        &[&format!("address = \"10.0.0.1\"\n{}", backends(3))],
    ));
    // At the default size, the VIP's backends are what is too big.
    let many = with_vips(
        "max_backends = 40000",
        &[&format!(
            "address = \"10.0.0.1\"\nbackends = [{}]",
            (0..32_769)
                .map(|i| format!(
                    "{{ address = \"10.{}.{}.{}\" }}",
                    1 + i / 65536,
                    i / 256 % 256,
                    i % 256
                ))
                .collect::<Vec<_>>()
                .join(",")
        )],
    );
    rejects(
        &many,
        5,
        12,
        "`dataplane.maglev_table_size` = 65537 is too small for VIP 10.0.0.1:*/tcp (line 4) with \
         32769 backends: it needs at least 65538 slots, 2 per backend; use a larger prime such \
         as 65537, 131071 or 262147",
    );
}

// --- 11. Numeric ranges and capacities ---------------------------------------

#[test]
fn numbers_out_of_range() {
    let too_big = "type: integer `99999999999999999999` as i128";
    let cases = [
        ("flow_table_size = 0", 1, 268_435_456, "value: integer `0`"),
        (
            "flow_table_size = 268435457",
            1,
            268_435_456,
            "value: integer `268435457`",
        ),
        ("max_backends = 1", 2, 16_777_216, "value: integer `1`"),
        (
            "max_backends = -4096",
            2,
            16_777_216,
            "value: integer `-4096`",
        ),
        ("nexthop_ttl_ms = 0", 1, 60_000, "value: integer `0`"),
        (
            "nexthop_ttl_ms = 60001",
            1,
            60_000,
            "value: integer `60001`",
        ),
        ("nexthop_ttl_ms = 99999999999999999999", 1, 60_000, too_big),
    ];
    for (line, min, max, found) in cases {
        let field = line.split(" = ").next().unwrap();
        let kind = rejects(
            &format!("[dataplane]\n{line}\n"),
            2,
            field.len() + 4,
            &format!("dataplane.{field}: invalid {found}, expected an integer from {min} to {max}"),
        );
        assert!(matches!(kind, ErrorKind::Invalid { .. }));
    }
    let config = accepts(
        "[dataplane]\nflow_table_size = 268435456\nmax_vips = 65536\nmaglev_table_size = 65521\n\
         max_backends = 16777216\nnexthop_ttl_ms = 60000\n",
    );
    assert_eq!(config.dataplane.max_vips, 65_536);
}

#[test]
fn max_vips_is_what_a_kernel_hash_map_holds() {
    let why = "the most entries the kernel allows a BPF hash map such as the VIP map: it refuses \
               more with E2BIG, as their buckets would not fit in 4 GiB";
    for (value, found) in [
        ("0", "value: integer `0`"),
        ("134_217_729", "value: integer `134217729`"),
        ("4294967296", "value: integer `4294967296`"),
        ("1.5", "type: floating point `1.5`"),
    ] {
        let kind = rejects(
            &format!("[dataplane]\nmaglev_table_size = 31\nmax_vips = {value}\n"),
            3,
            12,
            &format!(
                "dataplane.max_vips: invalid {found}, expected an integer from 1 to 134217728 \
                 (2^27), {why}"
            ),
        );
        assert!(matches!(kind, ErrorKind::Invalid { .. }));
    }
    let config = accepts("[dataplane]\nmaglev_table_size = 251\nmax_vips = 1_000_000\n");
    assert_eq!(config.dataplane.max_vips, 1_000_000);
    let config = accepts("[dataplane]\nmaglev_table_size = 31\nmax_vips = 134_217_728\n");
    assert_eq!(config.dataplane.max_vips, lb_common::MAX_HASH_ENTRIES);
}

#[test]
fn maglev_tables_must_fit_the_array() {
    // Three VIPs of 3 backends take 307 slots each.
    let vip = |i: u32| {
        format!(
            "address = \"10.0.0.{i}\"\nbackends = [{{ address = \"10.0.1.1\" }}, \
             {{ address = \"10.0.1.2\" }}, {{ address = \"10.0.1.3\" }}]"
        )
    };
    let (a, b, c) = (vip(1), vip(2), vip(3));
    let kind = rejects(
        &with_vips("maglev_slots = 900", &[&a, &b, &c]),
        10,
        11,
        "VIP 10.0.0.3:*/tcp's Maglev table of 307 slots does not fit: the VIPs up to it need 921 \
         slots, `dataplane.maglev_slots` is 900; raise it (4 bytes of kernel memory per slot)",
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    accepts(&with_vips("maglev_slots = 921", &[&a, &b, &c]));
    // A VIP's own size counts instead of the chosen one, and must be prime.
    let own = format!("{c}\nmaglev_table_size = 101");
    accepts(&with_vips("maglev_slots = 715", &[&a, &b, &own]));
    rejects(
        &with_vips("", &[&format!("{a}\nmaglev_table_size = 100")]),
        6,
        21,
        "vip.maglev_table_size: invalid value: integer `100`, expected a prime number such as \
         65537, 131071 or 262147",
    );
    rejects(
        &with_vips("", &[&format!("{a}\nmaglev_table_size = 5")]),
        6,
        21,
        "`maglev_table_size` = 5 of VIP 10.0.0.1:*/tcp is too small for its 3 backends: it \
         needs at least 6 slots, 2 per backend",
    );
    // Unset, the array's size follows max_vips: 512 slots per VIP, and at
    // least two of the largest tables.
    rejects(
        &with_vips("", &[&format!("{a}\nmaglev_table_size = 262147")]),
        4,
        11,
        "VIP 10.0.0.1:*/tcp's Maglev table of 262147 slots does not fit: the VIPs up to it need \
         262147 slots, `dataplane.maglev_slots` is 131074 (unset: 512 per VIP of \
         `dataplane.max_vips`, at least twice the largest table); raise it (4 bytes of kernel \
         memory per slot)",
    );
}

#[test]
fn more_vips_than_max_vips() {
    let text = with_vips(
        "max_vips = 2",
        &[
            "address = \"10.0.0.1\"",
            "address = \"10.0.0.2\"",
            "address = \"10.0.0.3\"\nport = 8080",
            "address = \"10.0.0.4\"",
        ],
    );
    let kind = rejects(
        &text,
        8,
        11,
        "too many VIPs: VIP 10.0.0.3:8080/tcp is number 3 but `dataplane.max_vips` is 2",
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
}

#[test]
fn more_backend_entries_than_max_backends() {
    // 4 entries hold ids 1..=3: three (VIP, backend) pairs, counted over VIPs.
    let text = with_vips(
        "max_backends = 4",
        &[
            "address = \"10.0.0.1\"\nbackends = [{ address = \"10.0.1.1\" }, { address = \"10.0.1.2\" }]",
            "address = \"10.0.0.2\"\nbackends = [{ address = \"10.0.1.1\" }, { address = \"10.0.1.2\" }]",
        ],
    );
    let kind = rejects(
        &text,
        8,
        51,
        "too many backends: backend 10.0.1.2 of VIP 10.0.0.2:*/tcp needs backend entry 4 \
         (every VIP's backends count, one entry each) but `dataplane.max_backends` = 4 holds 3 \
         (id 0 is reserved)",
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    accepts(&with_vips(
        "max_backends = 4",
        &[
            "address = \"10.0.0.1\"\nbackends = [{ address = \"10.0.1.1\" }, { address = \"10.0.1.2\" }, { address = \"10.0.1.3\" }]",
        ],
    ));
}

// --- 12. Ports ---------------------------------------------------------------

#[test]
fn port_out_of_range_or_not_an_integer() {
    let message = |found: &str| {
        format!("vip.port: invalid {found}, expected an integer from 0 (every port) to 65535")
    };
    let kind = rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nport = 65536\n",
        3,
        8,
        &message("value: integer `65536`"),
    );
    assert!(matches!(kind, ErrorKind::Invalid { .. }));
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nport = 0x1_0000\n",
        3,
        8,
        &message("value: integer `65536`"),
    );
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nport = -80\n",
        3,
        8,
        &message("value: integer `-80`"),
    );
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nport = \"80\"\n",
        3,
        8,
        &message("type: string \"80\""),
    );
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nport = 80.0\n",
        3,
        8,
        &message("type: floating point `80.0`"),
    );
    assert_eq!(
        accepts("[[vip]]\naddress = \"10.0.0.1\"\nport = 65535\n").vips[0].port,
        65_535
    );
}

// --- Which error is reported -------------------------------------------------

#[test]
fn the_first_error_in_the_file_is_reported() {
    // toml hands keys over by name (mode before xdp_mode); the file wins.
    rejects(
        "[dataplane]\nxdp_mode = \"x\"\nmode = \"y\"\n",
        2,
        12,
        "dataplane.xdp_mode: unknown variant `x`, expected `native` or `generic`",
    );
    // Across tables, and across kinds of error.
    rejects(
        "[metrics]\nbogus = 1\n[announce]\nmode = 1\n",
        2,
        1,
        "metrics: unknown field `bogus`, expected `listen`",
    );
    rejects(
        "[metrics]\nlisten = \"x\"\n[announce]\nbogus = 1\n",
        2,
        10,
        "metrics.listen: invalid value: string \"x\", expected an IP address and port such as \
         \"127.0.0.1:9810\" or \"[::1]:9810\"",
    );
}

#[test]
fn relations_are_checked_once_every_value_is_valid() {
    // The duplicate comes first, but the bad weight is what must be fixed
    // first: relations between values mean nothing until each is valid.
    rejects(
        &with_vips(
            "",
            &[
                "address = \"10.0.0.1\"",
                "address = \"10.0.0.1\"",
                "address = \"10.0.0.3\"\nbackends = [{ address = \"10.0.1.1\", weight = -1 }]",
            ],
        ),
        9,
        46,
        "vip.backends.weight: invalid value: integer `-1`, expected an integer from 0 (drain: no \
         new flows) to 65535",
    );
}

#[test]
fn columns_count_characters() {
    rejects(
        "[kubernetes]\nload_balancer_class = \"é\"\n[announce] \u{1F600} = 1\n",
        3,
        12,
        "invalid TOML: unexpected key or value, expected newline, `#`",
    );
    rejects(
        "[announce]\n\"m\u{e9}de\" = \"arp\"\n",
        2,
        1,
        "announce: unknown field `m\u{e9}de`, expected one of `mode`, `static_leader`, `liveness_bound_ms`, `gratuitous_count`, `gratuitous_interval_ms`, `refresh_interval_ms`, `service_modes`, `aws`, `bgp`",
    );
    rejects(
        "kubernetes = { load_balancer_class = \"\u{e9}\u{e9}\u{e9}\", enabled = \"yes\" }\n",
        1,
        55,
        "kubernetes.enabled: invalid type: string \"yes\", expected a boolean",
    );
}

// --- 13. [kubernetes] ----------------------------------------------------------

/// A `[kubernetes]` table of `lines`: its keys start on line 2.
fn kubernetes(lines: &str) -> String {
    format!("[kubernetes]\n{lines}\n")
}

/// Rejects the single-key table `line` at that key's value.
#[track_caller]
fn rejects_kubernetes_value(line: &str, message: &str) -> ErrorKind {
    let key = line.split(" = ").next().unwrap();
    rejects(&kubernetes(line), 2, key.len() + 4, message)
}

#[test]
fn kubernetes_defaults_when_the_table_or_a_key_is_absent() {
    assert_eq!(accepts("").kubernetes, Kubernetes::default());
    assert_eq!(accepts("[kubernetes]\n").kubernetes, Kubernetes::default());
    // Enabled with no pools: Services then need an explicit VIP.
    let k = accepts(&kubernetes("enabled = true")).kubernetes;
    assert_eq!(
        k,
        Kubernetes {
            enabled: true,
            ..Kubernetes::default()
        }
    );
    assert_eq!(
        accepts(&kubernetes("enabled = true\npools = []")).kubernetes,
        k
    );
}

#[test]
fn every_kubernetes_key_is_read() {
    let k = accepts(&kubernetes(
        "enabled = true\n\
         load_balancer_class = \"example.com/lb\"\n\
         include_unclassed = true\n\
         kubeconfig = \"kube/config\"\n\
         backend_target = \"node\"\n\
         pools = [\"10.99.200.0/24\", \"10.99.201.10-10.99.201.20\", \"fd00:99::/120\"]\n\
         lease_namespace = \"kube-system\"\n\
         node_name = \"worker-1.example.com\"\n\
         lease_duration_ms = 30000\n\
         renew_deadline_ms = 20_000\n\
         retry_period_ms = 5000",
    ))
    .kubernetes;
    assert_eq!(
        k,
        Kubernetes {
            enabled: true,
            load_balancer_class: "example.com/lb".into(),
            include_unclassed: true,
            kubeconfig: Some("kube/config".into()),
            backend_target: BackendTarget::Node,
            pools: vec![
                pool("10.99.200.1", "10.99.200.254"),
                pool("10.99.201.10", "10.99.201.20"),
                pool("fd00:99::", "fd00:99::ff"),
            ],
            lease_namespace: "kube-system".into(),
            node_name: Some("worker-1.example.com".into()),
            lease_duration_ms: 30_000,
            renew_deadline_ms: 20_000,
            retry_period_ms: 5_000,
            lease_buckets: 32,
        }
    );
    let pod = accepts(&kubernetes("backend_target = \"pod\"")).kubernetes;
    assert_eq!(pod.backend_target, BackendTarget::Pod);
}

#[test]
fn kubernetes_names_and_paths() {
    // Kept as written, relative or not.
    for path in ["/etc/xlb/kubeconfig", "kubeconfig", "../k8s/admin.conf"] {
        let k = accepts(&kubernetes(&format!("kubeconfig = \"{path}\""))).kubernetes;
        assert_eq!(k.kubeconfig, Some(PathBuf::from(path)));
    }
    for namespace in ["x", "0", "xlb-system", "a1-b2", &"n".repeat(63)] {
        let k = accepts(&kubernetes(&format!("lease_namespace = \"{namespace}\""))).kubernetes;
        assert_eq!(k.lease_namespace, namespace);
    }
    let long_node = [
        "n".repeat(63),
        "o".repeat(63),
        "d".repeat(63),
        "e".repeat(61),
    ]
    .join(".");
    assert_eq!(long_node.len(), 253);
    // Kubernetes does not hold a subdomain's parts to 63 characters.
    let long_part = "p".repeat(100);
    for node in [
        "a",
        "node-1",
        "ip-10-0-0-1.ec2.internal",
        "1.2.3.4",
        &long_node,
        &long_part,
    ] {
        let k = accepts(&kubernetes(&format!("node_name = \"{node}\""))).kubernetes;
        assert_eq!(k.node_name.as_deref(), Some(node));
    }
}

#[test]
fn bad_kubernetes_values() {
    let kind = rejects_kubernetes_value(
        "include_unclassed = 1",
        "kubernetes.include_unclassed: invalid type: integer `1`, expected a boolean",
    );
    assert!(matches!(kind, ErrorKind::Invalid { .. }));
    rejects_kubernetes_value(
        "load_balancer_class = \"\"",
        "kubernetes.load_balancer_class: invalid value: string \"\", expected a non-empty \
         string such as \"xlb.io/xlb\"",
    );
    let kubeconfig = |found: &str| {
        format!(
            "kubernetes.kubeconfig: invalid {found}, expected the path of a kubeconfig file \
             such as \"/etc/xlb/kubeconfig\""
        )
    };
    rejects_kubernetes_value("kubeconfig = \"\"", &kubeconfig("value: string \"\""));
    rejects_kubernetes_value("kubeconfig = true", &kubeconfig("type: boolean `true`"));
    let target = |found: &str| {
        format!("kubernetes.backend_target: unknown variant `{found}`, expected `pod` or `node`")
    };
    rejects_kubernetes_value("backend_target = \"service\"", &target("service"));
    rejects_kubernetes_value("backend_target = \"Pod\"", &target("Pod"));
    rejects_kubernetes_value(
        "backend_target = 1",
        "kubernetes.backend_target: wanted string or table",
    );
}

#[test]
fn lease_namespace_must_be_a_dns_label() {
    let message = |found: &str| {
        format!(
            "kubernetes.lease_namespace: invalid {found}, expected a namespace name such as \
             \"xlb-system\": 1 to 63 characters of a-z, 0-9 and -, starting and ending with a \
             letter or digit"
        )
    };
    let too_long = "n".repeat(64);
    for bad in [
        "",
        "XLB",
        "xlb_system",
        "-xlb",
        "xlb-",
        "xlb.system",
        "é",
        &too_long,
    ] {
        rejects_kubernetes_value(
            &format!("lease_namespace = \"{bad}\""),
            &message(&format!("value: string {bad:?}")),
        );
    }
    rejects_kubernetes_value("lease_namespace = 7", &message("type: integer `7`"));
}

#[test]
fn node_name_must_be_a_dns_subdomain() {
    let message = |found: &str| {
        format!(
            "kubernetes.node_name: invalid {found}, expected a node name such as \
             \"node-1.example.com\": 1 to 253 characters of a-z, 0-9, - and ., each part between \
             dots starting and ending with a letter or digit"
        )
    };
    let too_long = [
        "n".repeat(63),
        "o".repeat(63),
        "d".repeat(63),
        "e".repeat(62),
    ]
    .join(".");
    for bad in [
        "", "Node-1", "node_1", "a..b", ".a", "a.", "-a.b", "a-.b", "a b", &too_long,
    ] {
        rejects_kubernetes_value(
            &format!("node_name = \"{bad}\""),
            &message(&format!("value: string {bad:?}")),
        );
    }
    rejects_kubernetes_value("node_name = [\"a\"]", &message("type: sequence"));
}

#[test]
fn lease_timings_out_of_range() {
    for key in ["lease_duration_ms", "renew_deadline_ms", "retry_period_ms"] {
        for (value, found) in [
            ("99", "value: integer `99`"),
            ("0", "value: integer `0`"),
            ("-1", "value: integer `-1`"),
            ("3600001", "value: integer `3600001`"),
            (
                "99999999999999999999",
                "type: integer `99999999999999999999` as i128",
            ),
            ("1.5", "type: floating point `1.5`"),
            ("\"1000\"", "type: string \"1000\""),
        ] {
            let kind = rejects_kubernetes_value(
                &format!("{key} = {value}"),
                &format!(
                    "kubernetes.{key}: invalid {found}, expected an integer from 100 to 3600000"
                ),
            );
            assert!(matches!(kind, ErrorKind::Invalid { .. }));
        }
    }
    let k = accepts(&kubernetes(
        "lease_duration_ms = 3600000\nrenew_deadline_ms = 3599999\nretry_period_ms = 100",
    ))
    .kubernetes;
    assert_eq!(
        (k.lease_duration_ms, k.renew_deadline_ms, k.retry_period_ms),
        (3_600_000, 3_599_999, 100)
    );
    accepts(&kubernetes(
        "lease_duration_ms = 300\nrenew_deadline_ms = 200\nretry_period_ms = 100",
    ));
}

#[test]
fn lease_timings_must_be_in_order() {
    let renew = "a leader that cannot renew must step down before its Lease expires and another \
                 node takes over its VIPs";
    let retry = "a leader must get another try at renewing its Lease before the deadline makes it \
                 step down";
    // Against a default, at the key that is set.
    let kind = rejects(
        &kubernetes("renew_deadline_ms = 15000"),
        2,
        21,
        &format!(
            "`kubernetes.renew_deadline_ms` = 15000 must be less than \
             `kubernetes.lease_duration_ms` = 15000 (the default): {renew}"
        ),
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    rejects(
        &kubernetes("lease_duration_ms = 5000"),
        2,
        21,
        &format!(
            "`kubernetes.renew_deadline_ms` = 10000 (the default) must be less than \
             `kubernetes.lease_duration_ms` = 5000: {renew}"
        ),
    );
    rejects(
        &kubernetes("retry_period_ms = 10000"),
        2,
        19,
        &format!(
            "`kubernetes.retry_period_ms` = 10000 must be less than \
             `kubernetes.renew_deadline_ms` = 10000 (the default): {retry}"
        ),
    );
    rejects(
        &kubernetes("renew_deadline_ms = 2000"),
        2,
        21,
        &format!(
            "`kubernetes.retry_period_ms` = 2000 (the default) must be less than \
             `kubernetes.renew_deadline_ms` = 2000: {retry}"
        ),
    );
    // Both set: at whichever is written later.
    let message = format!(
        "`kubernetes.renew_deadline_ms` = 9000 must be less than \
         `kubernetes.lease_duration_ms` = 8000: {renew}"
    );
    rejects(
        &kubernetes("lease_duration_ms = 8000\nrenew_deadline_ms = 9000"),
        3,
        21,
        &message,
    );
    rejects(
        &kubernetes("renew_deadline_ms = 9000\nlease_duration_ms = 8000"),
        3,
        21,
        &message,
    );
    // Both pairs wrong: the first in the file.
    rejects(
        &kubernetes("lease_duration_ms = 1000\nrenew_deadline_ms = 2000\nretry_period_ms = 3000"),
        3,
        21,
        &format!(
            "`kubernetes.renew_deadline_ms` = 2000 must be less than \
             `kubernetes.lease_duration_ms` = 1000: {renew}"
        ),
    );
    // A timing out of range is reported, not the order it would break.
    rejects_kubernetes_value(
        "renew_deadline_ms = 3600001",
        "kubernetes.renew_deadline_ms: invalid value: integer `3600001`, expected an integer \
         from 100 to 3600000",
    );
}

// --- 14. Address pools ---------------------------------------------------------

#[test]
fn pools_as_cidrs_and_ranges() {
    let k = accepts(&kubernetes(
        "pools = [\n\
         \x20 \"10.0.0.0/30\",\n\
         \x20 \"10.0.0.4/31\",\n\
         \x20 \"10.0.0.6/32\",\n\
         \x20 \"10.0.1.0/24\",\n\
         \x20 \"10.0.2.7-10.0.2.7\",\n\
         \x20 \"10.0.3.0-10.0.3.255\",\n\
         \x20 \"fd00:99::/120\",\n\
         \x20 \"fd00:99::1:0/127\",\n\
         \x20 \"fd00:99::2:0/128\",\n\
         \x20 \"fd00:98::10-fd00:98::1f\",\n\
         ]",
    ))
    .kubernetes;
    assert_eq!(
        k.pools,
        [
            // A /30 and wider lose the network and broadcast addresses...
            pool("10.0.0.1", "10.0.0.2"),
            // ...a /31 and a /32 have none to lose.
            pool("10.0.0.4", "10.0.0.5"),
            pool("10.0.0.6", "10.0.0.6"),
            pool("10.0.1.1", "10.0.1.254"),
            // A range is taken as written.
            pool("10.0.2.7", "10.0.2.7"),
            pool("10.0.3.0", "10.0.3.255"),
            // IPv6 has no broadcast: every address.
            pool("fd00:99::", "fd00:99::ff"),
            pool("fd00:99::1:0", "fd00:99::1:1"),
            pool("fd00:99::2:0", "fd00:99::2:0"),
            pool("fd00:98::10", "fd00:98::1f"),
        ]
    );
    // The shortest prefixes, and the two families never overlap.
    let k = accepts(&kubernetes("pools = [\"0.0.0.0/0\", \"::/0\"]")).kubernetes;
    assert_eq!(
        k.pools,
        [
            pool("0.0.0.1", "255.255.255.254"),
            pool("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        ]
    );
}

#[test]
fn bad_pools_are_reported_at_the_element() {
    // The bad pool is the second element, at column 25.
    let text = |bad: &str| kubernetes(&format!("pools = [\"10.0.0.0/24\", \"{bad}\"]"));
    let general = |found: &str| {
        format!(
            "kubernetes.pools: invalid {found}, expected an address pool: a CIDR such as \
             \"10.99.200.0/24\" or an inclusive range such as \"10.99.201.10-10.99.201.20\""
        )
    };
    let cases = [
        (
            "10.99.200.5/24",
            "a CIDR with no host bits set: \"10.99.200.0/24\" for this one",
        ),
        (
            "10.0.1.1/31",
            "a CIDR with no host bits set: \"10.0.1.0/31\" for this one",
        ),
        (
            "fd00:99::1/120",
            "a CIDR with no host bits set: \"fd00:99::/120\" for this one",
        ),
        (
            "10.1.0.0/33",
            "a CIDR whose prefix length is at most 32, as IPv4 addresses have 32 bits",
        ),
        (
            "10.1.0.0/99999999999",
            "a CIDR whose prefix length is at most 32, as IPv4 addresses have 32 bits",
        ),
        (
            "fd00::/129",
            "a CIDR whose prefix length is at most 128, as IPv6 addresses have 128 bits",
        ),
        (
            "10.1.0.1-fd00::1",
            "a range of one address family, both ends IPv4 or both IPv6",
        ),
        (
            "fd00::1-10.1.0.1",
            "a range of one address family, both ends IPv4 or both IPv6",
        ),
        (
            "10.1.0.9-10.1.0.1",
            "a range whose first address is not after its last: \"10.1.0.1-10.1.0.9\" for this one",
        ),
        (
            "fd00::2-fd00::1",
            "a range whose first address is not after its last: \"fd00::1-fd00::2\" for this one",
        ),
    ];
    for (bad, expected) in cases {
        let kind = rejects(
            &text(bad),
            2,
            25,
            &format!("kubernetes.pools: invalid value: string \"{bad}\", expected {expected}"),
        );
        assert!(matches!(kind, ErrorKind::Invalid { .. }));
    }
    // Neither form: the key's own message.
    for bad in [
        "10.1.0.1",
        "pool-a",
        "",
        "10.1.0.0/",
        "10.1.0.0/+8",
        "10.1.0.0/ 8",
        "/8",
        "010.1.0.0/16",
        "10.1.0.1 - 10.1.0.9",
        "10.1.0.1-",
        "10.1.0.1-10.1.0.5-10.1.0.9",
        "fd00::1%eth0-fd00::2",
    ] {
        rejects(
            &text(bad),
            2,
            25,
            &general(&format!("value: string {bad:?}")),
        );
    }
    // Wrong types, of the array or of an element.
    rejects(
        &kubernetes("pools = \"10.0.0.0/24\""),
        2,
        9,
        "kubernetes.pools: invalid type: string \"10.0.0.0/24\", expected a sequence",
    );
    rejects(
        &kubernetes("pools = [\"10.0.0.0/24\", 7]"),
        2,
        25,
        &format!(
            "{}, or a table such as {{ range = \"10.99.200.0/24\", announce = \"l2\" }}",
            general("type: integer `7`")
        ),
    );
    // On its own line, and the first bad one of several.
    rejects(
        &kubernetes("pools = [\n  \"10.0.0.0/24\",\n  \"10.0.1.1/24\",\n  \"x\",\n]"),
        4,
        3,
        "kubernetes.pools: invalid value: string \"10.0.1.1/24\", expected a CIDR with no host \
         bits set: \"10.0.1.0/24\" for this one",
    );
}

#[test]
fn overlapping_pools_name_both() {
    let kind = rejects(
        &kubernetes(
            "pools = [\n  \"10.0.0.0/24\",\n  \"10.0.1.0/24\",\n  \"10.0.0.128-10.0.1.3\",\n]",
        ),
        5,
        3,
        "`kubernetes.pools` entry \"10.0.0.128-10.0.1.3\" overlaps \"10.0.0.0/24\" (line 3): \
         both hold 10.0.0.128-10.0.0.254; an address may be in one pool only",
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    rejects(
        &kubernetes("pools = [\"fd00::/120\", \"fd00::ff-fd00::1ff\"]"),
        2,
        24,
        "`kubernetes.pools` entry \"fd00::ff-fd00::1ff\" overlaps \"fd00::/120\" (line 2): \
         both hold fd00::ff; an address may be in one pool only",
    );
    // The same addresses written two ways.
    rejects(
        &kubernetes("pools = [\"10.0.0.0/30\", \"10.0.0.1-10.0.0.2\"]"),
        2,
        25,
        "`kubernetes.pools` entry \"10.0.0.1-10.0.0.2\" overlaps \"10.0.0.0/30\" (line 2): \
         both hold 10.0.0.1-10.0.0.2; an address may be in one pool only",
    );
    // Adjacent pools do not overlap, nor does a /30's broadcast address.
    accepts(&kubernetes("pools = [\"10.0.0.0/25\", \"10.0.0.128/25\"]"));
    accepts(&kubernetes(
        "pools = [\"10.0.0.0/30\", \"10.0.0.3-10.0.0.4\"]",
    ));
}

#[test]
fn a_pool_written_as_a_table_sets_how_its_addresses_are_announced() {
    let k = accepts(&kubernetes(
        "pools = [\n\
         \x20 \"10.0.0.0/24\",\n\
         \x20 { range = \"10.0.1.0/24\", announce = \"aws\" },\n\
         \x20 { range = \"fd00::/120\" },\n\
         \x20 { range = \"fd00:1::1-fd00:1::9\", announce = \"l2\" },\n\
         ]",
    ))
    .kubernetes;
    assert_eq!(
        k.pools,
        [
            pool("10.0.0.1", "10.0.0.254"),
            AddressPool {
                announce: Some(AnnounceMode::Aws),
                ..pool("10.0.1.1", "10.0.1.254")
            },
            pool("fd00::", "fd00::ff"),
            AddressPool {
                announce: Some(AnnounceMode::L2),
                ..pool("fd00:1::1", "fd00:1::9")
            },
        ]
    );
    // Written back: plain when it sets nothing but its range.
    let text = to_toml(&Config {
        kubernetes: k.clone(),
        ..Config::default()
    });
    assert_eq!(parse(&text, "rendered").unwrap().kubernetes, k, "{text}");
}

#[test]
fn bad_pool_tables_are_reported_where_they_are_wrong() {
    let text = |bad: &str| kubernetes(&format!("pools = [\"10.0.0.0/24\", {bad}]"));
    rejects(
        &text("{ range = \"10.0.1.1/24\", announce = \"l2\" }"),
        2,
        35,
        "kubernetes.pools.range: invalid value: string \"10.0.1.1/24\", expected a CIDR with no \
         host bits set: \"10.0.1.0/24\" for this one",
    );
    rejects(
        &text("{ range = \"10.0.1.0/24\", announce = \"arp\" }"),
        2,
        61,
        "kubernetes.pools.announce: unknown variant `arp`, expected one of `none`, `l2`, `aws`, \
         `bgp`",
    );
    rejects(
        &text("{ announce = \"l2\" }"),
        2,
        25,
        "kubernetes.pools: missing field `range`",
    );
    rejects(
        &text("{ range = \"10.0.1.0/24\", mode = \"l2\" }"),
        2,
        50,
        "kubernetes.pools: unknown field `mode`, expected `range` or `announce`",
    );
    // Moving IPv4 secondary addresses and Elastic IPs, `aws` has nothing
    // to do with an IPv6 pool: said at its `announce`.
    let kind = rejects(
        &kubernetes(
            "pools = [\n  \"10.0.0.0/24\",\n  { range = \"fd00::/120\", announce = \"aws\" },\n]",
        ),
        4,
        38,
        "`kubernetes.pools` entry \"fd00::/120\" is IPv6 but announce mode `aws` moves IPv4 \
         secondary private addresses and Elastic IPs only; announce it with `none` (routing \
         done elsewhere), `l2` or `bgp`",
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    // A table's overlap is named by its range.
    rejects(
        &kubernetes("pools = [\"10.0.0.0/24\", { range = \"10.0.0.9/32\", announce = \"l2\" }]"),
        2,
        35,
        "`kubernetes.pools` entry \"10.0.0.9/32\" overlaps \"10.0.0.0/24\" (line 2): both hold \
         10.0.0.9; an address may be in one pool only",
    );
}

#[test]
fn service_modes_limit_what_an_annotation_may_choose() {
    assert_eq!(
        Announce::default().service_modes,
        [
            AnnounceMode::None,
            AnnounceMode::L2,
            AnnounceMode::Aws,
            AnnounceMode::Bgp
        ],
        "every mode, as before the setting existed"
    );
    let a = accepts("[announce]\nservice_modes = [\"l2\", \"none\"]\n").announce;
    assert_eq!(a.service_modes, [AnnounceMode::L2, AnnounceMode::None]);
    let a = accepts("[announce]\nservice_modes = []\n").announce;
    assert!(a.service_modes.is_empty());
    rejects(
        "[announce]\nservice_modes = [\"l2\", \"arp\"]\n",
        2,
        24,
        "announce.service_modes: unknown variant `arp`, expected one of `none`, `l2`, `aws`, `bgp`",
    );
    rejects(
        "[announce]\nservice_modes = [\"l2\", \"aws\", \"l2\"]\n",
        2,
        17,
        "announce.service_modes: \"l2\" is listed twice; list each of \"none\", \"l2\", \"aws\", \
         \"bgp\" at most once",
    );
}

#[test]
fn pools_are_related_only_once_every_value_is_valid() {
    rejects(
        &kubernetes("pools = [\"10.0.0.0/24\", \"10.0.0.0/24\"]\nretry_period_ms = 1"),
        3,
        19,
        "kubernetes.retry_period_ms: invalid value: integer `1`, expected an integer from 100 \
         to 3600000",
    );
}

#[test]
fn kubernetes_round_trips_through_to_toml() {
    let text = kubernetes(
        "enabled = true\n\
         include_unclassed = true\n\
         kubeconfig = \"kube/config\"\n\
         backend_target = \"node\"\n\
         pools = [\"10.99.200.0/24\", \"10.99.201.10-10.99.201.20\", \"fd00:99::/120\", \"10.99.202.0/31\"]\n\
         lease_namespace = \"kube-system\"\n\
         node_name = \"worker-1\"\n\
         lease_duration_ms = 30000\n\
         renew_deadline_ms = 20000\n\
         retry_period_ms = 5000",
    );
    let config = accepts(&text);
    let rendered = to_toml(&config);
    assert!(
        rendered.contains(
            "\npools = [\"10.99.200.1-10.99.200.254\", \"10.99.201.10-10.99.201.20\", \
             \"fd00:99::-fd00:99::ff\", \"10.99.202.0-10.99.202.1\"]\n"
        ),
        "{rendered}"
    );
    let again = parse(&rendered, "rendered").unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    assert_eq!(again, config);
    assert_eq!(to_toml(&again), rendered, "rendering is stable");

    // Unset optional keys stay unset.
    let defaults = to_toml(&Config::default());
    assert!(!defaults.contains("kubeconfig"), "{defaults}");
    assert!(!defaults.contains("node_name"), "{defaults}");
    assert!(defaults.contains("\npools = []\n"), "{defaults}");
    assert_eq!(parse(&defaults, "rendered"), Ok(Config::default()));
}

#[test]
fn kubernetes_serializes_to_json() {
    let config = accepts(&kubernetes(
        "backend_target = \"node\"\npools = [\"10.0.0.0/31\"]",
    ));
    let json = serde_json::to_value(&config).unwrap();
    let k = &json["kubernetes"];
    assert_eq!(k["backend_target"], "node");
    // As a config file writes a pool, first and last address.
    assert_eq!(k["pools"][0], "10.0.0.0-10.0.0.1");
    assert!(k["kubeconfig"].is_null());
    assert_eq!(k["lease_duration_ms"], 15_000);
}

// --- Positions -----------------------------------------------------------------

#[test]
fn first_character_is_1_1() {
    assert_eq!(error::line_column("abc", 0), (1, 1));
    assert_eq!(error::line_column("", 0), (1, 1));
}

#[test]
fn counts_lines_and_characters() {
    let text = "ab\ncd\n\u{e9}\u{e9}x\n";
    assert_eq!(error::line_column(text, 3), (2, 1));
    assert_eq!(error::line_column(text, 4), (2, 2));
    // Two two-byte characters before `x`: byte 10, column 3.
    assert_eq!(error::line_column(text, 10), (3, 3));
}

#[test]
fn end_of_file_is_after_the_last_character() {
    assert_eq!(error::line_column("ab\ncd", 5), (2, 3));
    assert_eq!(error::line_column("ab\n", 3), (2, 1));
    assert_eq!(error::line_column("ab", 99), (1, 3));
}

#[test]
fn offset_inside_a_character_moves_back_to_its_start() {
    assert_eq!(error::line_column("\u{e9}x", 1), (1, 1));
}

#[test]
fn the_liveness_bound_must_end_before_a_lease_can_pass() {
    rejects(
        "[kubernetes]\nenabled = true\n[announce]\nliveness_bound_ms = 13000\n",
        4,
        21,
        "`announce.liveness_bound_ms` = 13000 must be less than `kubernetes.lease_duration_ms` \
         - `kubernetes.retry_period_ms` = 13000: a router that dies must stop answering for its \
         VIPs before another router can take its Leases over (two answering is split brain)",
    );
    let ok = parse(
        "[kubernetes]\nenabled = true\n[announce]\nmode = \"l2\"\nliveness_bound_ms = 12999\n",
        "xlb.toml",
    )
    .unwrap();
    assert_eq!(
        ok.announce.liveness_bound(&ok.kubernetes),
        std::time::Duration::from_millis(12_999)
    );
    // The default follows the Lease timings.
    let d = parse("[kubernetes]\nenabled = true\nlease_duration_ms = 3000\nrenew_deadline_ms = 2000\nretry_period_ms = 500\n", "xlb.toml").unwrap();
    assert_eq!(
        d.announce.liveness_bound(&d.kubernetes),
        std::time::Duration::from_millis(1250)
    );
}

#[test]
fn announce_modes_resolve_per_vip_with_their_elastic_ips() {
    let c = parse(
        "[announce]\nmode = \"l2\"\n[[vip]]\naddress = \"10.0.0.1\"\n[[vip]]\naddress = \"10.0.0.2\"\nannounce = \"none\"\n",
        "xlb.toml",
    )
    .unwrap();
    assert_eq!(c.vips[0].announce, Announcement::L2);
    assert_eq!(c.vips[1].announce, Announcement::None);
    let c = parse(
        "[announce]\nmode = \"aws\"\n[announce.aws]\nregion = \"eu-west-1\"\nreconcile_interval_ms = 1000\n\
         [[vip]]\naddress = \"10.0.1.200\"\nallocation_id = \"eipalloc-0123456789abcdef0\"\n\
         [[vip]]\naddress = \"10.0.1.200\"\nport = 443\nallocation_id = \"eipalloc-0123456789abcdef0\"\n\
         [[vip]]\naddress = \"10.0.1.201\"\n",
        "xlb.toml",
    )
    .unwrap();
    let eip = AllocationId::parse("eipalloc-0123456789abcdef0");
    assert_eq!(c.vips[0].announce, Announcement::Aws { eip: eip.clone() });
    assert_eq!(c.vips[2].announce, Announcement::Aws { eip: None });
    assert_eq!(c.announce.aws.region.as_deref(), Some("eu-west-1"));
    assert_eq!(c.announce.aws.reconcile_interval_ms, 1000);
    // Written back as the file's keys, and read again to the same.
    let again = parse(&to_toml(&c), "again.toml").unwrap();
    assert_eq!(again, c);
}

#[test]
fn aws_announcements_are_checked() {
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nallocation_id = \"eipalloc-0123456789abcdef0\"\n",
        3,
        17,
        "`allocation_id` is for VIPs announced with `aws`, but VIP 10.0.0.1:*/tcp is announced \
         with `none`: set `announce = \"aws\"` or remove it",
    );
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\nannounce = \"aws\"\nallocation_id = \"eip-1\"\n",
        4,
        17,
        "vip.allocation_id: invalid value: string \"eip-1\", expected an Elastic IP allocation id \
         such as \"eipalloc-0123456789abcdef0\"",
    );
    rejects(
        "[[vip]]\naddress = \"fd00::1\"\nannounce = \"aws\"\n",
        3,
        12,
        "VIP [fd00::1]:*/tcp is IPv6 but announce mode `aws` moves IPv4 secondary private \
         addresses and Elastic IPs only; announce it with `none` (routing done elsewhere) or `l2`",
    );
    rejects(
        "[announce]\nmode = \"aws\"\n[[vip]]\naddress = \"10.0.0.1\"\nallocation_id = \"eipalloc-0000000a\"\n\
         [[vip]]\naddress = \"10.0.0.2\"\nallocation_id = \"eipalloc-0000000a\"\n",
        8,
        17,
        "allocation_id \"eipalloc-0000000a\" of VIP 10.0.0.2:*/tcp is already the Elastic IP of \
         10.0.0.1 (line 5): an Elastic IP is associated to one address at a time",
    );
    rejects(
        "[announce]\nmode = \"aws\"\n[[vip]]\naddress = \"10.0.0.1\"\nallocation_id = \"eipalloc-0000000a\"\n\
         [[vip]]\naddress = \"10.0.0.1\"\nport = 80\n",
        7,
        11,
        "VIP 10.0.0.1:80/tcp has allocation_id none but another VIP of 10.0.0.1 (line 5) has \
         \"eipalloc-0000000a\": the ports of one address share its Elastic IP",
    );
    rejects(
        "[announce.aws]\nendpoint_url = \"localhost:5000\"\n",
        2,
        16,
        "announce.aws.endpoint_url: invalid value: string \"localhost:5000\", expected an http:// \
         or https:// URL such as \"https://ec2.us-east-1.amazonaws.com\"",
    );
}

// --- 15. Health checks -----------------------------------------------------------

/// A `[health]` table of `lines`: its keys start on line 2.
fn health_table(lines: &str) -> String {
    format!("[health]\n{lines}\n")
}

/// Rejects the single-key `[health]` `line` at that key's value.
#[track_caller]
fn rejects_health_value(line: &str, message: &str) -> ErrorKind {
    let key = line.split(" = ").next().unwrap();
    rejects(&health_table(line), 2, key.len() + 4, message)
}

/// One VIP, 10.0.0.1:80/tcp (its address on line 4), with a `[vip.health]`
/// of `lines` (line 7 on), after the `[dataplane]` line `dataplane`.
fn vip_health(dataplane: &str, lines: &str) -> String {
    format!(
        "[dataplane]\n{dataplane}\n[[vip]]\naddress = \"10.0.0.1\"\nport = 80\n[vip.health]\n{lines}\n"
    )
}

/// The VIP of [`vip_health`] with an IPv4 probe source.
const SOURCE: &str = "ipip_source_v4 = \"10.0.0.254\"";

fn ms(n: u64) -> std::time::Duration {
    std::time::Duration::from_millis(n)
}

fn count(n: u32) -> std::num::NonZeroU32 {
    std::num::NonZeroU32::new(n).unwrap()
}

#[test]
fn health_defaults_are_the_documented_ones() {
    let h = Health::default();
    assert_eq!(h.kind, CheckKind::None, "no check unless asked");
    assert_eq!(h.via, Via::Dsr);
    assert_eq!(h.port, None);
    assert_eq!((h.interval_ms, h.timeout_ms), (2_000, 1_000));
    assert_eq!((h.rise, h.fall, h.jitter_percent), (2, 3, 10));
    assert!(h.fail_open);
    assert_eq!(h.path, "/");
    assert_eq!(h.status, StatusRange { lo: 200, hi: 399 });
    assert_eq!(h.host, None);
    assert_eq!((h.source_v4, h.source_v6), (None, None));
    assert_eq!((h.mark, h.table, h.rule_priority), (0x5800_0000, 4242, 90));
    assert_eq!(h.defaults(), None);

    let config = accepts(&format!(
        "{}[[vip]]\naddress = \"10.0.0.1\"\n",
        health_table("")
    ));
    assert_eq!(config.health, Health::default());
    assert_eq!(config.vips[0].health, None, "kind none: no check");
}

#[test]
fn every_health_key_is_read() {
    let config = accepts(&health_table(
        "kind = \"http\"\nvia = \"direct\"\nport = 8080\ninterval_ms = 5000\ntimeout_ms = 4999\n\
         rise = 1\nfall = 100\njitter_percent = 50\nfail_open = false\npath = \"/healthz?deep=1\"\n\
         status = \"204\"\nhost = \"example.com:8080\"\nsource_v4 = \"10.0.0.1\"\n\
         source_v6 = \"fd00::1\"\nmark = 0x0100_0000\ntable = 100\nrule_priority = 32765",
    ));
    let h = &config.health;
    assert_eq!(h.source_v4, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(h.source_v6, Some("fd00::1".parse::<Ipv6Addr>().unwrap()));
    assert_eq!((h.mark, h.table, h.rule_priority), (1 << 24, 100, 32_765));
    assert_eq!(
        h.defaults(),
        Some(HealthCheck {
            probe: Probe::Http(HttpProbe {
                path: "/healthz?deep=1".into(),
                status: StatusRange { lo: 204, hi: 204 },
                host: Some("example.com:8080".into()),
            }),
            port: Some(8080),
            via: Via::Direct,
            interval: ms(5_000),
            timeout: ms(4_999),
            rise: count(1),
            fall: count(100),
            jitter_percent: 50,
            fail_open: false,
        })
    );
}

#[test]
fn a_vip_health_table_overrides_health_key_by_key() {
    let config = accepts(&format!(
        "[dataplane]\n{SOURCE}\n\
         [health]\nkind = \"tcp\"\ninterval_ms = 5000\npath = \"/ready\"\nhost = \"a.example\"\n\
         [[vip]]\naddress = \"10.0.0.1\"\nport = 80\n\
         [[vip]]\naddress = \"10.0.0.2\"\nport = 80\n\
         [vip.health]\nkind = \"http\"\ntimeout_ms = 3000\nstatus = \"200-299\"\nport = 8080\n\
         [[vip]]\naddress = \"10.0.0.3\"\nport = 80\nhealth = {{ kind = \"none\", rise = 5 }}\n\
         [[vip]]\naddress = \"10.0.0.4\"\nport = 80\nhealth.via = \"direct\"\n"
    ));
    let [inherits, http, off, direct] = &config.vips[..] else {
        panic!("four VIPs expected: {config:?}");
    };
    let tcp = HealthCheck {
        probe: Probe::Tcp,
        port: None,
        via: Via::Dsr,
        interval: ms(5_000),
        timeout: ms(1_000),
        rise: count(2),
        fall: count(3),
        jitter_percent: 10,
        fail_open: true,
    };
    assert_eq!(inherits.health.as_ref(), Some(&tcp), "[health] alone");
    assert_eq!(config.health.defaults().as_ref(), Some(&tcp));
    assert_eq!(
        http.health,
        Some(HealthCheck {
            probe: Probe::Http(HttpProbe {
                path: "/ready".into(),
                status: StatusRange { lo: 200, hi: 299 },
                host: Some("a.example".into()),
            }),
            port: Some(8080),
            timeout: ms(3_000),
            ..tcp.clone()
        }),
        "its own kind, timeout, status and port; [health]'s path, host and interval"
    );
    assert_eq!(off.health, None, "kind = \"none\" turns [health]'s off");
    assert_eq!(
        direct.health,
        Some(HealthCheck {
            via: Via::Direct,
            ..tcp
        }),
        "a dotted key is a table too"
    );
}

#[test]
fn for_kind_is_the_health_defaults_with_that_kind() {
    let config = accepts(&health_table(
        "kind = \"tcp\"\nport = 9000\npath = \"/live\"\nstatus = \"200\"\nfall = 5",
    ));
    let h = &config.health;
    assert_eq!(h.for_kind(CheckKind::None, None), None);
    assert_eq!(
        h.for_kind(CheckKind::None, Some("/x".into())),
        None,
        "a path does not turn a check on"
    );
    let tcp = h.for_kind(CheckKind::Tcp, None).unwrap();
    assert_eq!(Some(&tcp), h.defaults().as_ref());
    assert_eq!(
        (tcp.probe.clone(), tcp.port, tcp.fall),
        (Probe::Tcp, Some(9000), count(5))
    );
    let http = h.for_kind(CheckKind::Http, None).unwrap();
    let probe = HttpProbe {
        path: "/live".into(),
        status: StatusRange { lo: 200, hi: 200 },
        host: None,
    };
    assert_eq!(http.probe, Probe::Http(probe.clone()));
    assert_eq!(http.kind(), CheckKind::Http);
    assert_eq!(
        h.for_kind(CheckKind::Http, Some("/healthz".into()))
            .unwrap(),
        HealthCheck {
            probe: Probe::Http(HttpProbe {
                path: "/healthz".into(),
                ..probe
            }),
            ..http
        },
        "the annotation's path wins"
    );
    // Probe sources fall back to the data plane's.
    let c = accepts(&format!(
        "[dataplane]\n{SOURCE}\nipip_source_v6 = \"fd00::9\"\n[health]\nsource_v6 = \"fd00::1\"\n"
    ));
    let s = c.health.with_probe_sources(&c.dataplane);
    assert_eq!(s.source_v4, Some(Ipv4Addr::new(10, 0, 0, 254)));
    assert_eq!(s.source_v6, Some("fd00::1".parse::<Ipv6Addr>().unwrap()));
}

#[test]
fn status_ranges() {
    let r = StatusRange::parse("200-399").unwrap();
    assert!(r.contains(200) && r.contains(399) && r.contains(302));
    assert!(!r.contains(199) && !r.contains(400));
    assert_eq!(r.to_string(), "200-399");
    let one = StatusRange::parse("204").unwrap();
    assert_eq!(one, StatusRange { lo: 204, hi: 204 });
    assert_eq!(one.to_string(), "204", "one code is written alone");
    assert!(one.contains(204) && !one.contains(200));
    assert_eq!(
        StatusRange::parse("100-599").unwrap().to_string(),
        "100-599"
    );
}

#[test]
fn bad_health_status_ranges() {
    let general = |bad: &str| {
        format!(
            "health.status: invalid value: string \"{bad}\", expected HTTP status codes: a range \
             such as \"200-399\" or one code such as \"204\""
        )
    };
    for bad in [
        "",
        "ok",
        "2xx",
        "200-",
        "-399",
        "+200",
        "200 - 399",
        "200-399-500",
        "0x200",
    ] {
        rejects_health_value(&format!("status = \"{bad}\""), &general(bad));
    }
    for bad in ["99", "600", "100-600", "0-200", "65536"] {
        rejects_health_value(
            &format!("status = \"{bad}\""),
            &format!(
                "health.status: invalid value: string \"{bad}\", expected HTTP status codes \
                 from 100 to 599"
            ),
        );
    }
    rejects_health_value(
        "status = \"399-200\"",
        "health.status: invalid value: string \"399-200\", expected a range whose first code \
         is not above its last: \"200-399\" for this one",
    );
    rejects_health_value(
        "status = 200",
        "health.status: invalid type: integer `200`, expected HTTP status codes: a range such \
         as \"200-399\" or one code such as \"204\"",
    );
}

#[test]
fn health_numbers_out_of_range() {
    let cases = [
        ("rise = 0", "value: integer `0`", "an integer from 1 to 100"),
        (
            "rise = 101",
            "value: integer `101`",
            "an integer from 1 to 100",
        ),
        ("fall = 0", "value: integer `0`", "an integer from 1 to 100"),
        (
            "fall = 101",
            "value: integer `101`",
            "an integer from 1 to 100",
        ),
        (
            "jitter_percent = 51",
            "value: integer `51`",
            "an integer from 0 to 50",
        ),
        (
            "jitter_percent = -1",
            "value: integer `-1`",
            "an integer from 0 to 50",
        ),
        (
            "timeout_ms = 9",
            "value: integer `9`",
            "an integer from 10 to 3600000",
        ),
        (
            "interval_ms = 3600001",
            "value: integer `3600001`",
            "an integer from 1 to 3600000",
        ),
        (
            "interval_ms = 0",
            "value: integer `0`",
            "an integer from 1 to 3600000",
        ),
        (
            "port = 0",
            "value: integer `0`",
            "an integer from 1 to 65535 (unset: the VIP's port)",
        ),
        (
            "port = 65536",
            "value: integer `65536`",
            "an integer from 1 to 65535 (unset: the VIP's port)",
        ),
        (
            "port = \"80\"",
            "type: string \"80\"",
            "an integer from 1 to 65535 (unset: the VIP's port)",
        ),
    ];
    for (line, found, expected) in cases {
        let key = line.split(" = ").next().unwrap();
        let kind = rejects_health_value(
            line,
            &format!("health.{key}: invalid {found}, expected {expected}"),
        );
        assert!(matches!(kind, ErrorKind::Invalid { .. }));
        // The same rules in a VIP's table, at its value on line 7.
        rejects(
            &vip_health("", line),
            7,
            key.len() + 4,
            &format!("vip.health.{key}: invalid {found}, expected {expected}"),
        );
    }
    // The bounds themselves are fine.
    let c = accepts(&health_table(
        "rise = 100\nfall = 1\njitter_percent = 0\ntimeout_ms = 10\ninterval_ms = 3600000\nport = 65535",
    ));
    assert_eq!(
        (c.health.rise, c.health.fall, c.health.port),
        (100, 1, Some(65_535))
    );
}

#[test]
fn health_paths_and_hosts() {
    let path = |bad: &str| {
        format!(
            "health.path: invalid value: string {bad:?}, expected an HTTP path such as \
             \"/healthz\": starting with /, of printable ASCII without spaces (percent-encode the \
             rest)"
        )
    };
    for bad in [
        "healthz",
        "",
        "/a b",
        "/a\tb",
        "/caf\u{e9}",
        "/a\u{7f}",
        "http://x/",
    ] {
        let line = format!("path = {}", toml::Value::String(bad.into()));
        rejects_health_value(&line, &path(bad));
    }
    let c = accepts(&health_table("path = \"/a/b?c=%20d&e=[f]#g\""));
    assert_eq!(c.health.path, "/a/b?c=%20d&e=[f]#g");
    rejects(
        &vip_health("", "path = \"ready\""),
        7,
        8,
        "vip.health.path: invalid value: string \"ready\", expected an HTTP path such as \
         \"/healthz\": starting with /, of printable ASCII without spaces (percent-encode the \
         rest)",
    );

    let host = |bad: &str| {
        format!(
            "health.host: invalid value: string {bad:?}, expected a Host header value such as \
             \"example.com\" or \"example.com:8080\": 1 to 255 characters of printable ASCII \
             without spaces"
        )
    };
    let long = "a".repeat(256);
    for bad in [
        "",
        "a b",
        "ex\u{e4}mple.com",
        "a\r\nX-Injected: 1",
        long.as_str(),
    ] {
        let line = format!("host = {}", toml::Value::String(bad.into()));
        rejects_health_value(&line, &host(bad));
    }
    let c = accepts(&health_table("host = \"[fd00::1]:8443\""));
    assert_eq!(c.health.host.as_deref(), Some("[fd00::1]:8443"));
}

#[test]
fn health_marks_tables_and_rule_priorities() {
    let mark = |found: &str| {
        format!(
            "health.mark: invalid value: integer `{found}`, expected a non-zero socket mark whose \
             low 24 bits are 0, such as 0x58000000"
        )
    };
    rejects_health_value("mark = 0", &mark("0"));
    rejects_health_value("mark = 0x58000001", &mark("1476395009"));
    rejects_health_value("mark = 0x00FF0000", &mark("16711680"));
    rejects_health_value("mark = 0x1_0000_0000", &mark("4294967296"));
    assert_eq!(
        accepts(&health_table("mark = 0xFF000000")).health.mark,
        0xFF00_0000
    );

    let table = |found: &str| {
        format!(
            "health.table: invalid value: integer `{found}`, expected a routing table id from 1 to \
             4294967295 other than 253, 254 and 255 (the kernel's default, main and local tables)"
        )
    };
    for bad in ["0", "253", "254", "255", "4294967296"] {
        rejects_health_value(&format!("table = {bad}"), &table(bad));
    }
    for good in [1, 252, 256, u32::MAX] {
        assert_eq!(
            accepts(&health_table(&format!("table = {good}")))
                .health
                .table,
            good
        );
    }

    for bad in ["0", "32766", "32767"] {
        rejects_health_value(
            &format!("rule_priority = {bad}"),
            &format!(
                "health.rule_priority: invalid value: integer `{bad}`, expected an integer from 1 \
                 to 32765"
            ),
        );
    }
}

#[test]
fn node_wide_health_keys_are_not_a_vips() {
    for line in [
        "source_v4 = \"10.0.0.1\"",
        "source_v6 = \"fd00::1\"",
        "mark = 0x58000000",
        "table = 4242",
        "rule_priority = 90",
    ] {
        let key = line.split(" = ").next().unwrap();
        rejects(
            &vip_health("", line),
            7,
            1,
            &format!(
                "vip.health: unknown field `{key}`, expected one of `kind`, `via`, `port`, \
                 `interval_ms`, `timeout_ms`, `rise`, `fall`, `jitter_percent`, `fail_open`, \
                 `path`, `status`, `host`"
            ),
        );
    }
    rejects(
        "[health]\nkind = \"tcp\"\nprobe = \"tcp\"\n",
        3,
        1,
        "health: unknown field `probe`, expected one of `kind`, `via`, `port`, `interval_ms`, \
         `timeout_ms`, `rise`, `fall`, `jitter_percent`, `fail_open`, `path`, `status`, `host`, \
         `source_v4`, `source_v6`, `mark`, `table`, `rule_priority`",
    );
    rejects(
        "[health]\nkind = \"udp\"\n",
        2,
        8,
        "health.kind: unknown variant `udp`, expected one of `none`, `tcp`, `http`",
    );
    rejects(
        &vip_health("", "via = \"nat\""),
        7,
        7,
        "vip.health.via: unknown variant `nat`, expected `dsr` or `direct`",
    );
    rejects(
        "[[vip]]\naddress = \"10.0.0.1\"\n[[vip.health]]\nkind = \"tcp\"\n",
        3,
        1,
        "vip.health: invalid type: sequence, expected a table",
    );
    rejects(
        "[[health]]\n",
        1,
        1,
        "health: invalid type: sequence, expected a table",
    );
}

#[test]
fn health_interval_must_exceed_timeout() {
    let why = "a probe must time out before the next one starts";
    let kind = rejects(
        &health_table("interval_ms = 1000"),
        2,
        15,
        &format!("health.interval_ms (1000) must be greater than health.timeout_ms (1000): {why}"),
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    // At whichever of the two is written later.
    rejects(
        &health_table("interval_ms = 500\ntimeout_ms = 2000"),
        3,
        14,
        &format!("health.interval_ms (500) must be greater than health.timeout_ms (2000): {why}"),
    );
    rejects(
        &health_table("timeout_ms = 2000\ninterval_ms = 500"),
        3,
        15,
        &format!("health.interval_ms (500) must be greater than health.timeout_ms (2000): {why}"),
    );
    // Also when [health] is off: Kubernetes Services use its timings.
    rejects(
        &health_table("kind = \"none\"\ntimeout_ms = 5000"),
        3,
        14,
        &format!("health.interval_ms (2000) must be greater than health.timeout_ms (5000): {why}"),
    );

    // A VIP's, with its values' origins.
    let vip = |base: &str, own: &str| {
        format!(
            "[dataplane]\n{SOURCE}\n[health]\n{base}\n[[vip]]\naddress = \"10.0.0.1\"\nport = 80\n\
             [vip.health]\nkind = \"tcp\"\n{own}\n"
        )
    };
    rejects(
        &vip("", "timeout_ms = 2000"),
        10,
        14,
        &format!(
            "VIP 10.0.0.1:80/tcp: health.interval_ms (2000, the default) must be greater than \
             health.timeout_ms (2000): {why}"
        ),
    );
    rejects(
        &vip("interval_ms = 1500", "timeout_ms = 1500"),
        10,
        14,
        &format!(
            "VIP 10.0.0.1:80/tcp: health.interval_ms (1500, from [health]) must be greater than \
             health.timeout_ms (1500): {why}"
        ),
    );
    // [health] after the VIP: at its later value.
    rejects(
        &format!(
            "[dataplane]\n{SOURCE}\n[[vip]]\naddress = \"10.0.0.1\"\nport = 80\n\
             [vip.health]\nkind = \"tcp\"\ninterval_ms = 600\n[health]\ntimeout_ms = 700\n"
        ),
        10,
        14,
        &format!(
            "VIP 10.0.0.1:80/tcp: health.interval_ms (600) must be greater than \
             health.timeout_ms (700, from [health]): {why}"
        ),
    );
    // A VIP may fix [health]'s pair for itself, but [health] must hold alone.
    accepts(&vip(
        "timeout_ms = 1500\ninterval_ms = 3000",
        "interval_ms = 2000",
    ));
    accepts(&vip("", "interval_ms = 11\ntimeout_ms = 10"));
    // An unchecked VIP's timings are not used.
    accepts(&vip("", "kind = \"none\"\ntimeout_ms = 5000").replace("kind = \"tcp\"\n", ""));
}

#[test]
fn http_checks_need_a_tcp_vip() {
    let kind = rejects(
        &format!(
            "[dataplane]\n{SOURCE}\n[[vip]]\naddress = \"10.0.0.1\"\nport = 53\nprotocol = \"udp\"\n\
             health.kind = \"http\"\n"
        ),
        7,
        15,
        "VIP 10.0.0.1:53/udp has an http health check, but http checks need a TCP VIP: set \
         `kind = \"tcp\"` or `kind = \"none\"` in its [vip.health]",
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    // From [health]: at the VIP's protocol, written after it.
    rejects(
        &format!(
            "[dataplane]\n{SOURCE}\n[health]\nkind = \"http\"\n\
             [[vip]]\naddress = \"10.0.0.1\"\nport = 53\nprotocol = \"udp\"\n"
        ),
        8,
        12,
        "VIP 10.0.0.1:53/udp has an http health check, but http checks need a TCP VIP: set \
         `kind = \"tcp\"` or `kind = \"none\"` in its [vip.health]",
    );
    // A TCP check of a UDP VIP is the operator's call (DNS serves both).
    let c = accepts(&format!(
        "[dataplane]\n{SOURCE}\n[health]\nkind = \"http\"\n\
         [[vip]]\naddress = \"10.0.0.1\"\nport = 53\nprotocol = \"udp\"\nhealth.kind = \"tcp\"\n"
    ));
    assert_eq!(
        c.vips[0].health.as_ref().map(HealthCheck::kind),
        Some(CheckKind::Tcp)
    );
}

#[test]
fn a_check_of_an_every_port_vip_needs_a_port() {
    let message = "VIP 10.0.0.1:*/tcp balances every port, so its health check needs one to \
                   probe: set `port` in its [vip.health] (or in [health])";
    let kind = rejects(
        &format!("[dataplane]\n{SOURCE}\n[[vip]]\naddress = \"10.0.0.1\"\nhealth.kind = \"tcp\"\n"),
        5,
        15,
        message,
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    rejects(
        &format!(
            "[dataplane]\n{SOURCE}\n[health]\nkind = \"tcp\"\n[[vip]]\naddress = \"10.0.0.1\"\nport = 0\n"
        ),
        7,
        8,
        message,
    );
    let c = accepts(&format!(
        "[dataplane]\n{SOURCE}\n[[vip]]\naddress = \"10.0.0.1\"\nhealth = {{ kind = \"tcp\", port = 22 }}\n"
    ));
    assert_eq!(c.vips[0].health.as_ref().unwrap().port, Some(22));
    accepts(&format!(
        "[dataplane]\n{SOURCE}\n[health]\nkind = \"tcp\"\nport = 22\n[[vip]]\naddress = \"10.0.0.1\"\n"
    ));
}

#[test]
fn dsr_checks_need_a_probe_source_of_the_vips_family() {
    let message = |vip: &str, family: &str, v: &str| {
        format!(
            "VIP {vip} is health-checked via \"dsr\" (probes to the VIP, through the data plane) \
             but no {family} source address is set for its probes: set `health.source_{v}` or \
             `dataplane.ipip_source_{v}` to an address of this router that the backends answer, \
             or use `via = \"direct\"`"
        )
    };
    // At the kind, written after the VIP's address.
    let kind = rejects(
        &vip_health("", "kind = \"tcp\""),
        7,
        8,
        &message("10.0.0.1:80/tcp", "IPv4", "v4"),
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    // The other family's source is no help; the check comes from [health],
    // written after the VIP, and so does `via`.
    rejects(
        "[dataplane]\nipip_source_v4 = \"10.0.0.254\"\n\
         [[vip]]\naddress = \"fd00::1\"\nport = 443\n\
         [health]\nkind = \"http\"\nvia = \"dsr\"\n",
        8,
        7,
        &message("[fd00::1]:443/tcp", "IPv6", "v6"),
    );
    // Either source will do, and `direct` needs none.
    accepts(&vip_health(SOURCE, "kind = \"tcp\""));
    accepts(&format!(
        "[health]\nsource_v4 = \"10.0.0.254\"\n{}",
        vip_health("", "kind = \"tcp\"")
    ));
    let c = accepts(&vip_health("", "kind = \"tcp\"\nvia = \"direct\""));
    assert_eq!(c.vips[0].health.as_ref().unwrap().via, Via::Direct);
}

#[test]
fn http_keys_of_a_tcp_vip_are_refused() {
    for (line, key) in [
        ("path = \"/x\"", "path"),
        ("status = \"200\"", "status"),
        ("host = \"x\"", "host"),
    ] {
        let kind = rejects(
            &vip_health(SOURCE, &format!("kind = \"tcp\"\n{line}")),
            8,
            key.len() + 4,
            &format!(
                "`{key}` is for http health checks, but VIP 10.0.0.1:80/tcp's check is tcp: set \
                 `kind = \"http\"` or remove it"
            ),
        );
        assert!(matches!(kind, ErrorKind::Conflict { .. }));
    }
    // In [health] they are defaults for the VIPs that check http.
    accepts(&format!(
        "[health]\nkind = \"tcp\"\npath = \"/x\"\nhost = \"x\"\n{}",
        vip_health(SOURCE, "")
    ));
}

#[test]
fn health_round_trips_through_to_toml_and_json() {
    let text = format!(
        "[dataplane]\n{SOURCE}\n\
         [health]\nkind = \"tcp\"\nport = 9000\nsource_v6 = \"fd00::1\"\nmark = 0x01000000\n\
         [[vip]]\naddress = \"10.0.0.1\"\nport = 80\n\
         [[vip]]\naddress = \"10.0.0.2\"\nport = 80\n\
         [vip.health]\nkind = \"http\"\nhost = \"h\"\nstatus = \"204\"\npath = \"/a\\\"b\"\n\
         [[vip]]\naddress = \"10.0.0.3\"\nport = 80\nhealth.kind = \"none\"\n\
         [[vip]]\naddress = \"fd00::3\"\nport = 80\nhealth = {{ via = \"direct\" }}\n"
    );
    let config = accepts(&text);
    let rendered = to_toml(&config);
    let again = parse(&rendered, "rendered").unwrap_or_else(|e| panic!("{e}\n{rendered}"));
    assert_eq!(again, config);
    assert_eq!(to_toml(&again), rendered, "rendering is stable");
    // An unchecked VIP says so, or [health] would check it when read back.
    assert!(
        rendered.contains("[vip.health]\nkind = \"none\"\n"),
        "{rendered}"
    );

    let json = serde_json::to_value(&config).unwrap();
    assert_eq!(json["health"]["kind"], "tcp");
    assert_eq!(json["health"]["mark"], 0x0100_0000);
    assert_eq!(json["health"]["source_v6"], "fd00::1");
    assert!(json["health"]["source_v4"].is_null());
    assert_eq!(json["vip"][0]["health"]["kind"], "tcp");
    assert_eq!(json["vip"][0]["health"]["port"], 9000);
    assert_eq!(json["vip"][1]["health"]["status"], "204");
    assert_eq!(json["vip"][1]["health"]["path"], "/a\"b");
    assert_eq!(
        json["vip"][2]["health"],
        serde_json::json!({ "kind": "none" })
    );
    assert_eq!(json["vip"][3]["health"]["via"], "direct");

    // A check reads back from its JSON, as the state directory keeps it.
    for vip in &config.vips {
        let json = serde_json::to_string(&vip.health).unwrap();
        let back: Option<HealthCheck> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vip.health, "{json}");
    }
    let none: Result<HealthCheck, _> = serde_json::from_str("{\"kind\":\"none\"}");
    assert!(none.is_err());
}

// --- Read a [[vip]] at a time --------------------------------------------------

#[test]
fn parts_are_cut_before_top_level_vip_headers_only() {
    let cuts = |text: &str| -> Vec<usize> { parts::Parts::new(text).map(|(at, _)| at).collect() };
    assert_eq!(cuts(""), [0]);
    assert_eq!(cuts("a = 1\n"), [0]);
    assert_eq!(cuts("[[vip]]\na = 1\n"), [0, 0]);
    assert_eq!(
        cuts("a = 1\n[[vip]]\nb = 2\n  [[ vip ]] # x\n[[vip]]\n"),
        [0, 6, 22, 36]
    );
    assert_eq!(cuts("\u{feff}[[vip]]\r\n[[vip]]\r\n"), [0, 3, 12]);
    // Not headers of `vip`, or not headers at all.
    for text in [
        "s = \"\"\"\n[[vip]]\n\"\"\"\n",
        "s = '''\n[[vip]]\n'''\n",
        "a = [\n[[vip]]\n]\n",
        "a = { b = [\n[[vip]]\n] }\n",
        "# [[vip]]\n",
        "a = 1 [[vip]]\n",
        "[[vip.health]]\n[[vipx]]\n[vip]\n[[\"vip\"]]\n",
        // Nothing is cut after a stray closing bracket.
        "a = ]\n[[vip]]\n",
    ] {
        assert_eq!(cuts(text), [0], "{text:?}");
    }
    // Every byte is in one part.
    let text = "a = 1\n[[vip]]\nb = 2\n[[vip]]\n";
    let joined: String = parts::Parts::new(text).map(|(_, part)| part).collect();
    assert_eq!(joined, text);
}

#[test]
fn tables_around_and_after_vips_read_as_written_together() {
    let config = accepts(
        "[announce]\nmode = \"l2\"\n\n[[vip]]\naddress = \"10.0.0.1\"\nport = 80\nbackends = [{ address = \
         \"10.1.0.1\" }]\n[vip.health]\nkind = \"tcp\"\nvia = \"direct\"\n\n[announce.bgp]\ntable = 7\n\n\
         [dataplane]\nmax_vips = 8\nencap = \"l2\"\n\n[[vip]]\naddress = \"10.0.0.2\"\n\n\
         [metrics]\nlisten = \"127.0.0.1:1\"\n",
    );
    assert_eq!(config.announce.mode, AnnounceMode::L2);
    assert_eq!(config.announce.bgp.table, 7);
    assert_eq!(config.dataplane.max_vips, 8);
    assert_eq!(config.metrics.listen, "127.0.0.1:1".parse().unwrap());
    assert_eq!(config.vips.len(), 2);
    // Resolved against tables written after them.
    assert!(config.vips.iter().all(|v| v.encap == Encap::L2));
    assert!(config.vips[0].health.is_some() && config.vips[1].health.is_none());
}

#[test]
fn errors_around_vips_come_in_the_order_serde_reads_the_file() {
    let vip = |address: &str| format!("[[vip]]\naddress = \"{address}\"\n");
    let bad_mode = "[dataplane]\nmode = \"fast\"\n";
    let mode = "dataplane.mode: unknown variant `fast`, expected one of `auto`, `xdp`, `ipvs`";
    let address = "vip.address: invalid IP address syntax";
    // The tables before the first VIP, then the VIPs, then the tables after.
    rejects(&format!("{bad_mode}{}", vip("x")), 2, 8, mode);
    rejects(
        &format!("{}{}{bad_mode}", vip("10.0.0.1"), vip("x")),
        4,
        11,
        address,
    );
    rejects(
        &format!("{}{bad_mode}{}", vip("10.0.0.1"), vip("10.0.0.2")),
        4,
        8,
        mode,
    );
    // A table set before and after the VIPs is toml's error, where toml
    // puts it.
    rejects(
        &format!("{bad_mode}{}[dataplane]\nmax_vips = 2\n", vip("10.0.0.1")),
        5,
        2,
        "invalid TOML: duplicate key `dataplane`",
    );
    // And a syntax error in a VIP, at its place in the file.
    rejects(
        &format!("{}{}backends = [\n", vip("10.0.0.1"), vip("10.0.0.2")),
        5,
        13,
        "invalid TOML: unclosed array, expected `]`",
    );
}

#[test]
fn the_bgp_table_is_not_the_health_probes_table() {
    let message = "announce.bgp.table (4242) is health.table, the routing table health probes \
                   use through an fwmark rule: the VIP routes there would blackhole the probes; \
                   choose another table for one of them";
    let kind = rejects(
        "[announce]\nmode = \"bgp\"\n\n[announce.bgp]\ntable = 4242\n",
        5,
        9,
        message,
    );
    assert!(matches!(kind, ErrorKind::Conflict { .. }));
    let message = message.replace("4242", "4243");
    rejects(
        "[announce]\nmode = \"bgp\"\n\n[health]\ntable = 4243\n",
        5,
        9,
        &message,
    );
    // A VIP of its own announced over BGP is enough.
    rejects(
        "[announce.bgp]\ntable = 4242\n\n[[vip]]\naddress = \"10.0.0.1\"\nannounce = \"bgp\"\n",
        2,
        9,
        message.replace("4243", "4242").as_str(),
    );
    // Nothing announced over BGP: the table is never written.
    accepts("[health]\ntable = 4243\n");
    accepts("[announce]\nmode = \"bgp\"\n\n[announce.bgp]\ntable = 4244\n");
}
