//! From Kubernetes objects to xlb's desired services: which Services are
//! ours, which VIP each gets, which backends serve each port, and which
//! Services are refused (and why). Pure: the watchers feed it snapshots, the
//! unit tests feed it objects written as the API reference defines them.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::{Endpoint, EndpointSlice},
};
use lb_common::Encap;

use super::{
    pools::{Allocator, Pools},
    status::ingress_ips,
};
use crate::{config::BackendTarget, desired::ServiceSpec, vip::Vip};

/// Annotation naming a Service's VIP(s), comma-separated (one per family).
pub const VIP_ANNOTATION: &str = "xlb.io/vip";
/// Annotation choosing a Service's DSR encapsulation: `ipip` or `l2`.
pub const ENCAP_ANNOTATION: &str = "xlb.io/encap";
/// The label EndpointSlices carry naming their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What the translation needs besides the objects.
#[derive(Clone, Debug)]
pub struct Settings {
    pub class: String,
    pub include_unclassed: bool,
    pub target: BackendTarget,
    pub pools: Pools,
    pub encap: Encap,
    pub scheduler: String,
}

/// A Service by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Why a Service (or one of its ports) is not served. The reason is the
/// Event's `reason`; the message says what to change.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Refusal {
    pub service: ObjKey,
    pub uid: String,
    pub reason: &'static str,
    pub message: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub services: BTreeMap<Vip, ServiceSpec>,
    /// The VIPs of every Service that is served, for its status.
    pub addresses: BTreeMap<ObjKey, Vec<IpAddr>>,
    pub refusals: Vec<Refusal>,
}

/// Whether `svc` is a LoadBalancer Service this xlb serves.
pub fn is_ours(svc: &Service, s: &Settings) -> bool {
    let Some(spec) = &svc.spec else {
        return false;
    };
    if spec.type_.as_deref() != Some("LoadBalancer") {
        return false;
    }
    match spec.load_balancer_class.as_deref() {
        Some(class) => class == s.class,
        None => s.include_unclassed,
    }
}

pub fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> ObjKey {
    ObjKey {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    }
}

/// Translates one consistent view of the cluster. `statics` are the config
/// file's VIPs, which win over any Service.
pub fn translate(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    nodes: &[Arc<Node>],
    statics: &BTreeSet<Vip>,
    s: &Settings,
) -> Outcome {
    let mut ours: Vec<&Service> = services
        .iter()
        .map(Arc::as_ref)
        .filter(|svc| is_ours(svc, s))
        .collect();
    // Earlier Services win conflicts, so every node decides the same way and
    // an older Service is never displaced by a newer one.
    ours.sort_by(|a, b| {
        let t = |x: &Service| x.metadata.creation_timestamp.clone().map(|t| t.0);
        t(a).cmp(&t(b))
            .then_with(|| key_of(&a.metadata).cmp(&key_of(&b.metadata)))
    });

    let mut by_service: HashMap<ObjKey, Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices {
        if let Some(name) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
        {
            let key = ObjKey {
                namespace: slice.metadata.namespace.clone().unwrap_or_default(),
                name: name.clone(),
            };
            by_service.entry(key).or_default().push(slice);
        }
    }
    let node_ips = node_addresses(nodes);

    let mut out = Outcome::default();
    let mut refuse = |svc: &Service, reason: &'static str, message: String| {
        out.refusals.push(Refusal {
            service: key_of(&svc.metadata),
            uid: svc.metadata.uid.clone().unwrap_or_default(),
            reason,
            message,
        });
    };

    // Addresses named explicitly or already held in a status are reserved
    // before any allocation: the pools never hand out an address a Service
    // asked for by name, nor move one Service's VIP to another.
    let mut explicit: BTreeMap<ObjKey, Vec<IpAddr>> = BTreeMap::new();
    let mut reserved: BTreeSet<IpAddr> = statics.iter().map(|k| k.address).collect();
    let mut invalid = BTreeSet::new();
    for svc in &ours {
        reserved.extend(
            ingress_ips(svc)
                .into_iter()
                .filter(|a| s.pools.contains(*a)),
        );
        match requested(svc) {
            Ok(Some(addrs)) => {
                reserved.extend(addrs.iter().copied());
                explicit.insert(key_of(&svc.metadata), addrs);
            }
            Ok(None) => {}
            Err(msg) => {
                invalid.insert(key_of(&svc.metadata));
                refuse(svc, "InvalidVIP", msg);
            }
        }
    }

    let mut owners: BTreeMap<Vip, String> = statics
        .iter()
        .map(|k| (*k, "the static config".to_owned()))
        .collect();
    let mut alloc = s.pools.allocator(&reserved);
    for svc in ours {
        let key = key_of(&svc.metadata);
        if invalid.contains(&key) {
            continue;
        }
        let encap = match annotation(svc, ENCAP_ANNOTATION) {
            None => s.encap,
            Some("ipip") => Encap::Ipip,
            Some("l2") => Encap::L2,
            Some(other) => {
                refuse(
                    svc,
                    "InvalidAnnotation",
                    format!(
                        "annotation {ENCAP_ANNOTATION}: \"{other}\" is not one of \"ipip\", \"l2\""
                    ),
                );
                continue;
            }
        };
        let addrs = match explicit.get(&key) {
            Some(a) => a.clone(),
            None => match allocate(svc, &mut alloc) {
                Ok(a) => a,
                Err(msg) => {
                    refuse(svc, "NoAddress", msg);
                    continue;
                }
            },
        };
        let ports = ports(svc);
        let mut keys = Vec::new();
        let mut clash = None;
        for &addr in &addrs {
            for p in ports.iter().filter(|p| p.unsupported.is_none()) {
                let vip = Vip {
                    address: addr,
                    port: p.port,
                    protocol: p.protocol,
                };
                if let Some(owner) = owners.get(&vip) {
                    clash = Some((vip, owner.clone()));
                    break;
                }
                keys.push((vip, p));
            }
        }
        if let Some((vip, owner)) = clash {
            refuse(
                svc,
                "VIPConflict",
                format!("VIP {vip} is already used by {owner}; this Service is not served"),
            );
            continue;
        }
        for p in &ports {
            if let Some(unsupported) = &p.unsupported {
                refuse(
                    svc,
                    "UnsupportedProtocol",
                    format!(
                        "port {}: protocol {unsupported} is not balanced (TCP and UDP are)",
                        p.port
                    ),
                );
            }
        }
        let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
        for (vip, p) in keys {
            owners.insert(vip, format!("Service {key}"));
            let backends = backends(slices, p, vip.address.is_ipv4(), s.target, &node_ips);
            out.services.insert(
                vip,
                ServiceSpec {
                    encap,
                    scheduler: s.scheduler.clone(),
                    backends,
                },
            );
        }
        out.addresses.insert(key, addrs);
    }
    out
}

fn annotation<'a>(svc: &'a Service, name: &str) -> Option<&'a str> {
    svc.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

/// The VIPs a Service names: the annotation, else `spec.loadBalancerIP`.
fn requested(svc: &Service) -> Result<Option<Vec<IpAddr>>, String> {
    if let Some(list) = annotation(svc, VIP_ANNOTATION) {
        let mut out: Vec<IpAddr> = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let a: IpAddr = part.parse().map_err(|_| {
                format!("annotation {VIP_ANNOTATION}: \"{part}\" is not an IP address")
            })?;
            if out.iter().any(|b| b.is_ipv4() == a.is_ipv4()) {
                return Err(format!(
                    "annotation {VIP_ANNOTATION}: \"{list}\" names two addresses of one family (one IPv4 and one IPv6 at most)"
                ));
            }
            out.push(a);
        }
        if out.is_empty() {
            return Err(format!("annotation {VIP_ANNOTATION} is empty"));
        }
        return Ok(Some(out));
    }
    match svc
        .spec
        .as_ref()
        .and_then(|s| s.load_balancer_ip.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(ip) => ip
            .parse()
            .map(|a| Some(vec![a]))
            .map_err(|_| format!("spec.loadBalancerIP: \"{ip}\" is not an IP address")),
        None => Ok(None),
    }
}

/// One address per family the Service asks for, from the pools. A family's
/// address in the Service's status is kept when it is still free, so VIPs
/// survive restarts and every router node picks the same one.
fn allocate(svc: &Service, alloc: &mut Allocator<'_>) -> Result<Vec<IpAddr>, String> {
    let spec = svc.spec.as_ref();
    let families: Vec<bool> = match spec.and_then(|s| s.ip_families.as_ref()) {
        Some(f) if !f.is_empty() => f.iter().map(|f| f == "IPv4").collect(),
        _ => vec![true],
    };
    let require_all = spec.and_then(|s| s.ip_family_policy.as_deref()) == Some("RequireDualStack");
    let current = ingress_ips(svc);
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for v4 in families {
        let kept = current
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == v4 && alloc.keep(*a));
        match kept.or_else(|| alloc.next(v4)) {
            Some(a) => out.push(a),
            None => missing.push(if v4 { "IPv4" } else { "IPv6" }),
        }
    }
    if out.is_empty() || (require_all && !missing.is_empty()) {
        for a in &out {
            alloc.release(*a);
        }
        return Err(format!(
            "no free {} address in kubernetes.pools; set one with the {VIP_ANNOTATION} annotation or add a pool",
            missing.join(" or ")
        ));
    }
    Ok(out)
}

struct Port {
    port: u16,
    protocol: u8,
    name: String,
    unsupported: Option<String>,
}

fn ports(svc: &Service) -> Vec<Port> {
    let Some(list) = svc.spec.as_ref().and_then(|s| s.ports.as_ref()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in list {
        let proto = p.protocol.as_deref().unwrap_or("TCP");
        let (protocol, unsupported) = match proto {
            "TCP" => (lb_common::PROTO_TCP, None),
            "UDP" => (lb_common::PROTO_UDP, None),
            other => (0, Some(other.to_owned())),
        };
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        out.push(Port {
            port,
            protocol,
            name: p.name.clone().unwrap_or_default(),
            unsupported,
        });
    }
    out
}

/// Node name -> its InternalIP addresses (v4 and v6).
fn node_addresses(nodes: &[Arc<Node>]) -> HashMap<String, Vec<IpAddr>> {
    nodes
        .iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            let addrs = n
                .status
                .as_ref()?
                .addresses
                .as_ref()?
                .iter()
                .filter(|a| a.type_ == "InternalIP")
                .filter_map(|a| a.address.parse().ok())
                .collect();
            Some((name, addrs))
        })
        .collect()
}

/// What an endpoint contributes: 1 for ready, 0 (drain: established flows
/// only) for serving-but-terminating, nothing otherwise. A nil condition
/// means ready / serving as the API reference says; terminating defaults
/// to false.
fn endpoint_weight(e: &Endpoint) -> Option<u32> {
    let c = e.conditions.as_ref();
    let ready = c.and_then(|c| c.ready).unwrap_or(true);
    let serving = c.and_then(|c| c.serving).unwrap_or(ready);
    let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
    if ready && !terminating {
        Some(1)
    } else if serving && terminating {
        Some(0)
    } else {
        None
    }
}

fn backends(
    slices: &[&EndpointSlice],
    port: &Port,
    v4: bool,
    target: BackendTarget,
    nodes: &HashMap<String, Vec<IpAddr>>,
) -> BTreeMap<IpAddr, u32> {
    let family = if v4 { "IPv4" } else { "IPv6" };
    let proto = if port.protocol == lb_common::PROTO_UDP {
        "UDP"
    } else {
        "TCP"
    };
    let mut out: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for slice in slices.iter().filter(|s| s.address_type == family) {
        // A slice serves the Service ports it lists, matched by name.
        let serves = slice.ports.iter().flatten().any(|p| {
            p.name.as_deref().unwrap_or_default() == port.name
                && p.protocol.as_deref().unwrap_or("TCP") == proto
        });
        if !serves {
            continue;
        }
        for e in &slice.endpoints {
            let Some(w) = endpoint_weight(e) else {
                continue;
            };
            let addr = match target {
                // Only the first address is used, as the API reference says.
                BackendTarget::Pod => e.addresses.first().and_then(|a| a.parse().ok()),
                BackendTarget::Node => e
                    .node_name
                    .as_ref()
                    .and_then(|n| nodes.get(n))
                    .and_then(|a| a.iter().copied().find(|a: &IpAddr| a.is_ipv4() == v4)),
            };
            let Some(addr) = addr else {
                continue;
            };
            let entry = out.entry(addr).or_insert(0);
            match target {
                // A node is weighted by how many ready endpoints it hosts.
                BackendTarget::Node => *entry += w,
                // The same pod in two slices (during a slice split) counts once.
                BackendTarget::Pod => *entry = (*entry).max(w),
            }
        }
    }
    out
}
