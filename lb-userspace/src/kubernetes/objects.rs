//! What the source keeps of each watched object: the few fields the
//! translation reads, parsed once when the object arrives. A Service of
//! 10 ports and a slice of 100 endpoints weigh a few kilobytes as
//! k8s-openapi structs (labels, annotations, conditions, hints, target
//! references); kept as these, 10,000 Services and their slices fit in a
//! few megabytes, and nothing is parsed again at each translation.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use k8s_openapi::{
    api::{
        core::v1::{Node, Service},
        discovery::v1::{Endpoint, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
    jiff::Timestamp,
};

/// Annotation naming a Service's VIP(s), comma-separated (one per family).
pub const VIP_ANNOTATION: &str = "xlb.io/vip";
/// Annotation choosing a Service's DSR encapsulation: `ipip` or `l2`.
pub const ENCAP_ANNOTATION: &str = "xlb.io/encap";
/// Annotation choosing how a Service's VIPs are announced: `none`, `l2` or
/// `aws` (default: the config's `announce.mode`).
pub const ANNOUNCE_ANNOTATION: &str = "xlb.io/announce";
/// Annotation naming the Elastic IP (its allocation id) of an `aws`
/// Service's IPv4 VIP.
pub const AWS_ALLOCATION_ANNOTATION: &str = "xlb.io/aws-allocation-id";
/// Annotation turning a Service's health checks on: `tcp`, `http` or
/// `none` (the default: Kubernetes readiness alone decides).
pub const HEALTH_CHECK_ANNOTATION: &str = "xlb.io/health-check";
/// Annotation giving an `http` check's path (default: the config's
/// `health.path`).
pub const HEALTH_CHECK_PATH_ANNOTATION: &str = "xlb.io/health-check-path";
/// The label EndpointSlices carry naming their Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// An object by namespace and name. Shared strings: the translation
/// copies keys into its plan for every Service at each pass, and a copy is
/// then two reference counts, not two allocations.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjKey {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

pub fn key_of(meta: &ObjectMeta) -> ObjKey {
    ObjKey {
        namespace: meta.namespace.as_deref().unwrap_or_default().into(),
        name: meta.name.as_deref().unwrap_or_default().into(),
    }
}

/// Which Services are ours: LoadBalancers of this class (or of none, when
/// unclassed ones are included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Class {
    pub name: String,
    pub include_unclassed: bool,
}

/// A LoadBalancer Service of ours, as the translation reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    pub key: ObjKey,
    pub uid: String,
    pub created: Option<Timestamp>,
    /// The VIPs it names (annotation, else `spec.loadBalancerIP`), or why
    /// what it names is not valid.
    pub requested: Result<Option<Vec<IpAddr>>, String>,
    /// The encapsulation annotation as written.
    pub encap: Option<String>,
    /// The announcement annotation as written.
    pub announce: Option<String>,
    /// The Elastic IP annotation as written.
    pub aws_allocation_id: Option<String>,
    /// The health check annotations as written: kind, and path.
    pub health_check: Option<String>,
    pub health_check_path: Option<String>,
    /// `spec.ipFamilies`, true for IPv4; IPv4 alone when unset.
    pub families: Vec<bool>,
    pub require_dual_stack: bool,
    pub ports: Vec<Port>,
    /// The VIPs its status lists (`ipMode` VIP or unset), in order.
    pub ingress: Vec<IpAddr>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub port: u16,
    /// `PROTO_TCP` or `PROTO_UDP`; 0 with `unsupported` naming the protocol.
    pub protocol: u8,
    pub name: String,
    pub unsupported: Option<String>,
}

impl ServiceInfo {
    /// `None` when the Service is not a LoadBalancer of ours.
    pub fn of(svc: &Service, class: &Class) -> Option<Self> {
        let spec = svc.spec.as_ref()?;
        if spec.type_.as_deref() != Some("LoadBalancer") {
            return None;
        }
        let ours = match spec.load_balancer_class.as_deref() {
            Some(c) => c == class.name,
            None => class.include_unclassed,
        };
        if !ours {
            return None;
        }
        // Each family once (the API server refuses a list naming one twice).
        let mut families: Vec<bool> = Vec::new();
        for v4 in spec.ip_families.iter().flatten().map(|f| f == "IPv4") {
            if !families.contains(&v4) {
                families.push(v4);
            }
        }
        if families.is_empty() {
            families.push(true);
        }
        Some(Self {
            key: key_of(&svc.metadata),
            uid: svc.metadata.uid.clone().unwrap_or_default(),
            created: svc.metadata.creation_timestamp.as_ref().map(|t| t.0),
            requested: requested(svc),
            encap: annotation(svc, ENCAP_ANNOTATION).map(str::to_owned),
            announce: annotation(svc, ANNOUNCE_ANNOTATION).map(str::to_owned),
            aws_allocation_id: annotation(svc, AWS_ALLOCATION_ANNOTATION).map(str::to_owned),
            health_check: annotation(svc, HEALTH_CHECK_ANNOTATION).map(str::to_owned),
            health_check_path: annotation(svc, HEALTH_CHECK_PATH_ANNOTATION).map(str::to_owned),
            families,
            require_dual_stack: spec.ip_family_policy.as_deref() == Some("RequireDualStack"),
            ports: ports(svc),
            ingress: ingress_ips(svc),
        })
    }

    /// Equal in everything but the status.
    pub fn same_but_status(&self, other: &Self) -> bool {
        self.key == other.key
            && self.uid == other.uid
            && self.created == other.created
            && self.requested == other.requested
            && self.encap == other.encap
            && self.announce == other.announce
            && self.aws_allocation_id == other.aws_allocation_id
            && self.health_check == other.health_check
            && self.health_check_path == other.health_check_path
            && self.families == other.families
            && self.require_dual_stack == other.require_dual_stack
            && self.ports == other.ports
    }
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

fn ports(svc: &Service) -> Vec<Port> {
    let Some(list) = svc.spec.as_ref().and_then(|s| s.ports.as_ref()) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|p| {
            let (protocol, unsupported) = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => (lb_common::PROTO_TCP, None),
                "UDP" => (lb_common::PROTO_UDP, None),
                other => (0, Some(other.to_owned())),
            };
            Some(Port {
                port: u16::try_from(p.port).ok()?,
                protocol,
                name: p.name.clone().unwrap_or_default(),
                unsupported,
            })
        })
        .collect()
}

/// The VIPs a Service's status lists, in order.
pub fn ingress_ips(svc: &Service) -> Vec<IpAddr> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter(|i| i.ip_mode.as_deref().is_none_or(|m| m == "VIP"))
        .filter_map(|i| i.ip.as_deref()?.parse().ok())
        .collect()
}

/// An EndpointSlice of a Service, as the translation reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceInfo {
    /// The Service it belongs to (its `kubernetes.io/service-name` label).
    pub service: ObjKey,
    pub v4: bool,
    /// The ports it serves: name and protocol number (other protocols left
    /// out: no balanced port can match them).
    pub ports: Vec<(String, u8)>,
    /// Its endpoints that contribute (ready, or serving and terminating).
    pub endpoints: Vec<EndpointInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The first address (the only one used, as the API reference says).
    pub address: Option<IpAddr>,
    pub node: Option<String>,
    /// 1 ready; 0 serving but terminating (drain).
    pub weight: u32,
}

impl SliceInfo {
    /// `None` for a slice without the Service label, or of addresses that
    /// are neither IPv4 nor IPv6 (FQDN).
    pub fn of(slice: &EndpointSlice) -> Option<Self> {
        let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
        let v4 = match slice.address_type.as_str() {
            "IPv4" => true,
            "IPv6" => false,
            _ => return None,
        };
        let ports = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                    "TCP" => lb_common::PROTO_TCP,
                    "UDP" => lb_common::PROTO_UDP,
                    _ => return None,
                };
                Some((p.name.clone().unwrap_or_default(), proto))
            })
            .collect();
        let endpoints = slice
            .endpoints
            .iter()
            .filter_map(|e| {
                Some(EndpointInfo {
                    address: e.addresses.first().and_then(|a| a.parse().ok()),
                    node: e.node_name.clone(),
                    weight: endpoint_weight(e)?,
                })
            })
            .collect();
        Some(Self {
            service: ObjKey {
                namespace: slice
                    .metadata
                    .namespace
                    .as_deref()
                    .unwrap_or_default()
                    .into(),
                name: name.as_str().into(),
            },
            v4,
            ports,
            endpoints,
        })
    }
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

/// A Node's InternalIP addresses (v4 and v6).
pub fn node_addresses(node: &Node) -> Vec<IpAddr> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// Node name -> its InternalIP addresses.
pub type NodeAddresses = HashMap<String, Vec<IpAddr>>;
