//! From Kubernetes objects to xlb's desired services: which Services are
//! ours, which VIP each gets, which backends serve each port, and which
//! Services are refused (and why).
//!
//! Incremental: a [`Translator`] holds the objects (as [`objects`] keeps
//! them) and the last result, and is told each change. The result has two
//! layers, recomputed separately:
//!
//! - the **plan**: which Service gets which addresses and ports, and which
//!   are refused. It depends on every Service (earlier Services win
//!   conflicts; pools hand out the lowest free address in creation order),
//!   so it is one pass over all Services, run only when a Service changes
//!   in anything the plan reads (spec, annotations, a status other than
//!   one confirming what it was given), when the config file's VIPs
//!   change, or on a re-list. That pass reads no EndpointSlice and no Node.
//! - each Service's **backends**, recomputed for that Service alone when
//!   one of its slices changes or its plan entry does (every Service when a
//!   Node's addresses change, with `backend_target = "node"`).
//!
//! An EndpointSlice event therefore costs one Service's worth of work, and
//! a status written back that confirms an allocation costs nothing but the
//! status bookkeeping. (The property tests found that shortcut wrong while
//! the pools could hand out an address and take it back within a pass;
//! they no longer do.) [`translate`] is the same translation from scratch;
//! the property tests hold the two equal for random event sequences.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
};

use k8s_openapi::{
    api::{
        core::v1::{Node, Service},
        discovery::v1::EndpointSlice,
    },
    jiff::Timestamp,
};
use lb_common::Encap;

pub use super::objects::{
    ANNOUNCE_ANNOTATION, AWS_ALLOCATION_ANNOTATION, ENCAP_ANNOTATION, HEALTH_CHECK_ANNOTATION,
    HEALTH_CHECK_PATH_ANNOTATION, ObjKey, SERVICE_NAME_LABEL, VIP_ANNOTATION,
};
use super::{
    objects::{self, Class, EndpointInfo, NodeAddresses, Port, ServiceInfo, SliceInfo, key_of},
    pools::{Allocator, Pools},
};
use crate::{
    config::{
        AllocationId, AnnounceMode, Announcement, BackendTarget, CheckKind, Health, HealthCheck,
        HttpProbe, Via,
    },
    desired::{ServiceSpec, Services},
    vip::Vip,
};

/// What the translation needs besides the objects.
#[derive(Clone, Debug)]
pub struct Settings {
    pub class: String,
    pub include_unclassed: bool,
    pub target: BackendTarget,
    pub pools: Pools,
    pub encap: Encap,
    pub scheduler: String,
    /// How VIPs are announced unless their pool or their Service's
    /// annotation says otherwise.
    pub announce: AnnounceMode,
    /// The modes the annotation may ask for (`announce.service_modes`).
    pub service_modes: Vec<AnnounceMode>,
    /// What a Service's health-check annotation turns on: the config's
    /// `[health]`, its probe sources already falling back to the data
    /// plane's ([`Health::with_probe_sources`]).
    pub health: Health,
}

impl Settings {
    pub fn class(&self) -> Class {
        Class {
            name: self.class.clone(),
            include_unclassed: self.include_unclassed,
        }
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
    pub services: Services,
    /// The VIPs of every Service that is served, for its status.
    pub addresses: Arc<BTreeMap<ObjKey, Vec<IpAddr>>>,
    pub refusals: Arc<Vec<Refusal>>,
    /// Services of ours whose status does not list what it should: the
    /// VIPs to write (empty for a refused Service, so that an address it
    /// holds goes back to the pool).
    pub statuses: Arc<BTreeMap<ObjKey, Vec<IpAddr>>>,
}

/// Translates one consistent view of the cluster from scratch. `statics`
/// are the config file's VIPs, which win over any Service.
pub fn translate(
    services: &[Arc<Service>],
    slices: &[Arc<EndpointSlice>],
    nodes: &[Arc<Node>],
    statics: &BTreeSet<Vip>,
    s: &Settings,
) -> Outcome {
    let mut t = Translator::new(s.clone());
    t.set_statics(statics.clone());
    let class = s.class();
    for svc in services {
        t.service(key_of(&svc.metadata), ServiceInfo::of(svc, &class));
    }
    for slice in slices {
        t.slice(key_of(&slice.metadata), SliceInfo::of(slice));
    }
    for node in nodes {
        if let Some(name) = &node.metadata.name {
            t.node(name.clone(), Some(objects::node_addresses(node)));
        }
    }
    t.settle();
    t.outcome().clone()
}

/// One Service's place in the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Assigned {
    encap: Encap,
    /// Per address: its pool's mode, the config's, or the annotation's.
    announce: BTreeMap<IpAddr, Announcement>,
    health: Option<Arc<HealthCheck>>,
    /// Its VIPs, each with the index of its port in `ServiceInfo::ports`.
    vips: Vec<(Vip, usize)>,
}

/// Addresses and refusals are shared with the outcome the plan is
/// published in.
#[derive(Clone, Debug, Default)]
struct Plan {
    assigned: HashMap<ObjKey, Assigned>,
    addresses: Arc<BTreeMap<ObjKey, Vec<IpAddr>>>,
    refusals: Arc<Vec<Refusal>>,
    /// The Services with a refusal.
    refused: HashSet<ObjKey>,
}

/// The incremental translation; see the module docs.
pub struct Translator {
    settings: Settings,
    statics: BTreeSet<Vip>,
    /// Services of ours, and the order conflicts and pools follow: creation
    /// time, then namespace/name, so every router decides the same way and
    /// an older Service is never displaced by a newer one.
    services: HashMap<ObjKey, ServiceInfo>,
    order: BTreeSet<(Option<Timestamp>, ObjKey)>,
    slices: HashMap<ObjKey, SliceInfo>,
    /// Service -> the keys of its slices.
    slices_of: HashMap<ObjKey, BTreeSet<ObjKey>>,
    nodes: NodeAddresses,
    plan: Plan,
    /// The VIPs each Service has in `out.services`.
    served: HashMap<ObjKey, Vec<Vip>>,
    /// The plan must be made again.
    replan: bool,
    /// Services whose backends must be computed again.
    stale: HashSet<ObjKey>,
    /// Services whose status entry must be checked again.
    status_stale: HashSet<ObjKey>,
    /// `settings.scheduler`, shared by every VIP.
    scheduler: Arc<str>,
    out: Outcome,
}

impl Translator {
    pub fn new(settings: Settings) -> Self {
        Self {
            scheduler: settings.scheduler.as_str().into(),
            settings,
            statics: BTreeSet::new(),
            services: HashMap::new(),
            order: BTreeSet::new(),
            slices: HashMap::new(),
            slices_of: HashMap::new(),
            nodes: NodeAddresses::new(),
            plan: Plan::default(),
            served: HashMap::new(),
            replan: true,
            stale: HashSet::new(),
            status_stale: HashSet::new(),
            out: Outcome::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The result as of the last [`Self::settle`].
    pub fn outcome(&self) -> &Outcome {
        &self.out
    }

    /// The config file's VIPs (they win any conflict).
    pub fn set_statics(&mut self, statics: BTreeSet<Vip>) {
        if statics != self.statics {
            self.statics = statics;
            self.replan = true;
        }
    }

    /// A Service was added or changed (`Some`: it is ours), or deleted or
    /// is no longer ours (`None`).
    pub fn service(&mut self, key: ObjKey, info: Option<ServiceInfo>) {
        let old = match info {
            Some(new) => {
                let old = self.services.insert(key.clone(), new);
                let new = &self.services[&key];
                if let Some(o) = &old
                    && o.same_but_status(new)
                {
                    if o.ingress != new.ingress {
                        self.status_stale.insert(key.clone());
                        if !self.confirms_plan(&key, &o.ingress, &new.ingress) {
                            self.replan = true;
                        }
                    }
                    return;
                }
                if let Some(o) = &old {
                    self.order.remove(&(o.created, key.clone()));
                }
                self.order.insert((new.created, key.clone()));
                old
            }
            None => {
                let old = self.services.remove(&key);
                if let Some(o) = &old {
                    self.order.remove(&(o.created, key.clone()));
                }
                old
            }
        };
        if old.is_some() || self.services.contains_key(&key) {
            self.replan = true;
            // Its ports may match other slice ports under new names.
            self.stale.insert(key);
        }
    }

    /// Whether a status change from `old` to `new` leaves the plan as it
    /// is: of pool addresses, `old` lists nothing but what the Service was
    /// given and `new` exactly that. Reserving an address a Service already
    /// has moves nobody, since the pools hand out exactly the lowest free
    /// address ([`Allocator::peek`]): the Services before it took lower
    /// ones, and the ones after could not take it anyway. It spares the
    /// whole-cluster pass each status written back after a sync would cost.
    fn confirms_plan(&self, key: &ObjKey, old: &[IpAddr], new: &[IpAddr]) -> bool {
        let Some(given) = self.plan.addresses.get(key) else {
            return false;
        };
        let pools = &self.settings.pools;
        let in_pool = |l: &[IpAddr]| -> BTreeSet<IpAddr> {
            l.iter().copied().filter(|a| pools.contains(*a)).collect()
        };
        let given = in_pool(given);
        in_pool(old).is_subset(&given) && in_pool(new) == given
    }

    /// An EndpointSlice was added or changed (`Some`), or deleted (`None`).
    pub fn slice(&mut self, key: ObjKey, info: Option<SliceInfo>) {
        let old = match info {
            Some(new) => {
                if self.slices.get(&key) == Some(&new) {
                    return;
                }
                self.slices_of
                    .entry(new.service.clone())
                    .or_default()
                    .insert(key.clone());
                self.stale.insert(new.service.clone());
                self.slices.insert(key.clone(), new)
            }
            None => self.slices.remove(&key),
        };
        if let Some(o) = old
            && self.slices.get(&key).is_none_or(|n| n.service != o.service)
        {
            if let Some(set) = self.slices_of.get_mut(&o.service) {
                set.remove(&key);
                if set.is_empty() {
                    self.slices_of.remove(&o.service);
                }
            }
            self.stale.insert(o.service);
        }
    }

    /// A Node was added or changed (`Some`: its InternalIPs), or deleted.
    pub fn node(&mut self, name: String, addresses: Option<Vec<IpAddr>>) {
        let changed = match addresses {
            Some(a) => self.nodes.insert(name, a.clone()).is_none_or(|o| o != a),
            None => self.nodes.remove(&name).is_some(),
        };
        // Only node targets read Node addresses; then any Service may.
        if changed && self.settings.target == BackendTarget::Node {
            self.stale.extend(self.plan.assigned.keys().cloned());
        }
    }

    /// Keys of the Services, slices and Nodes held, for a re-list to tell
    /// which are gone.
    pub fn service_keys(&self) -> Vec<ObjKey> {
        self.services.keys().cloned().collect()
    }

    pub fn slice_keys(&self) -> Vec<ObjKey> {
        self.slices.keys().cloned().collect()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Brings the outcome up to date with every change told; whether it
    /// changed.
    pub fn settle(&mut self) -> bool {
        let before = (
            Arc::clone(&self.out.addresses),
            Arc::clone(&self.out.refusals),
            Arc::clone(&self.out.statuses),
        );
        let mut changed = false;
        if self.replan {
            self.replan = false;
            let plan = self.make_plan();
            for (k, a) in &plan.assigned {
                if self.plan.assigned.get(k) != Some(a) {
                    self.stale.insert(k.clone());
                }
            }
            for k in self.plan.assigned.keys() {
                if !plan.assigned.contains_key(k) {
                    self.stale.insert(k.clone());
                }
            }
            // Kept when equal, so an unchanged part is not reported changed.
            if plan.addresses != self.out.addresses {
                self.out.addresses = Arc::clone(&plan.addresses);
            }
            if plan.refusals != self.out.refusals {
                self.out.refusals = Arc::clone(&plan.refusals);
            }
            self.plan = plan;
            self.out.statuses = Arc::new(
                self.services
                    .keys()
                    .filter_map(|k| Some((k.clone(), self.status_want(k)?)))
                    .collect(),
            );
            self.status_stale.clear();
        }
        for key in std::mem::take(&mut self.status_stale) {
            let want = self.status_want(&key);
            let cur = self.out.statuses.get(&key);
            if cur != want.as_ref() {
                let m = Arc::make_mut(&mut self.out.statuses);
                match want {
                    Some(w) => m.insert(key, w),
                    None => m.remove(&key),
                };
            }
        }
        if !self.stale.is_empty() {
            changed |= self.refresh_backends();
        }
        changed
            || !Arc::ptr_eq(&before.0, &self.out.addresses)
            || !Arc::ptr_eq(&before.1, &self.out.refusals)
            || !Arc::ptr_eq(&before.2, &self.out.statuses)
    }

    /// Every stale Service's VIPs out of the outcome, then the planned ones
    /// back in (removals first: a VIP may pass from one Service to another).
    fn refresh_backends(&mut self) -> bool {
        let stale: Vec<ObjKey> = std::mem::take(&mut self.stale).into_iter().collect();
        let mut next: BTreeMap<Vip, ServiceSpec> = BTreeMap::new();
        let mut served = Vec::with_capacity(stale.len());
        for key in &stale {
            let Some(a) = self.plan.assigned.get(key) else {
                continue;
            };
            let info = &self.services[key];
            let slices: Vec<&SliceInfo> = self
                .slices_of
                .get(key)
                .into_iter()
                .flatten()
                .filter_map(|k| self.slices.get(k))
                .collect();
            for (vip, port) in &a.vips {
                let backends = backends(
                    &slices,
                    &info.ports[*port],
                    vip.address.is_ipv4(),
                    self.settings.target,
                    &self.nodes,
                );
                next.insert(
                    *vip,
                    ServiceSpec {
                        encap: a.encap,
                        scheduler: self.scheduler.clone(),
                        backends: Arc::new(backends.into()),
                        announce: a.announce.get(&vip.address).cloned().unwrap_or_default(),
                        health: a.health.clone(),
                        table: Default::default(),
                    },
                );
            }
            served.push((key.clone(), a.vips.iter().map(|(v, _)| *v).collect()));
        }
        let mut changed = false;
        for key in &stale {
            for vip in self.served.remove(key).into_iter().flatten() {
                if !next.contains_key(&vip) {
                    changed |= self.out.services.remove(&vip).is_some();
                }
            }
        }
        for (vip, spec) in next {
            if self.out.services.get(&vip) != Some(&spec) {
                self.out.services.insert(vip, spec);
                changed = true;
            }
        }
        self.served.extend(served);
        changed
    }

    /// What the status of Service `key` should list, when it does not.
    fn status_want(&self, key: &ObjKey) -> Option<Vec<IpAddr>> {
        let info = self.services.get(key)?;
        let want = match self.plan.addresses.get(key) {
            Some(a) => a.clone(),
            None if self.plan.refused.contains(key) => Vec::new(),
            None => return None,
        };
        (info.ingress != want).then_some(want)
    }

    /// The plan: addresses, ports and refusals of every Service, in order.
    fn make_plan(&self) -> Plan {
        let s = &self.settings;
        let ours: Vec<&ServiceInfo> = self.order.iter().map(|(_, k)| &self.services[k]).collect();
        let mut assigned = HashMap::new();
        let mut addresses = BTreeMap::new();
        let mut refusals = Vec::new();
        let refuse = |refusals: &mut Vec<Refusal>,
                      svc: &ServiceInfo,
                      reason: &'static str,
                      message: String| {
            refusals.push(Refusal {
                service: svc.key.clone(),
                uid: svc.uid.clone(),
                reason,
                message,
            });
        };

        // Addresses named explicitly or already held in a status are reserved
        // before any allocation: the pools never hand out an address a Service
        // asked for by name, nor move one Service's VIP to another.
        let mut reserved: BTreeSet<IpAddr> = self.statics.iter().map(|k| k.address).collect();
        for svc in &ours {
            reserved.extend(svc.ingress.iter().copied().filter(|a| s.pools.contains(*a)));
            match &svc.requested {
                Ok(Some(addrs)) => reserved.extend(addrs.iter().copied()),
                Ok(None) => {}
                Err(msg) => refuse(&mut refusals, svc, "InvalidVIP", msg.clone()),
            }
        }

        // Who has each VIP: a Service, or the config file (`None`).
        let mut owners: HashMap<Vip, Option<&ObjKey>> =
            self.statics.iter().map(|k| (*k, None)).collect();
        let mut alloc = s.pools.allocator(&reserved);
        for svc in ours {
            let explicit = match &svc.requested {
                Err(_) => continue,
                Ok(e) => e,
            };
            let encap = match svc.encap.as_deref() {
                None => s.encap,
                Some("ipip") => Encap::Ipip,
                Some("l2") => Encap::L2,
                Some(other) => {
                    refuse(
                        &mut refusals,
                        svc,
                        "InvalidAnnotation",
                        format!(
                            "annotation {ENCAP_ANNOTATION}: \"{other}\" is not one of \"ipip\", \"l2\""
                        ),
                    );
                    continue;
                }
            };
            let annotated = match svc.announce.as_deref() {
                None => None,
                Some(written) => match announce_mode(written, &s.service_modes) {
                    Ok(m) => Some(m),
                    Err(message) => {
                        refuse(&mut refusals, svc, "InvalidAnnotation", message);
                        continue;
                    }
                },
            };
            let eip = match svc
                .aws_allocation_id
                .as_deref()
                .map(|a| (a, AllocationId::parse(a)))
            {
                None => None,
                Some((_, Some(eip))) => Some(eip),
                Some((written, None)) => {
                    refuse(
                        &mut refusals,
                        svc,
                        "InvalidAnnotation",
                        format!(
                            "annotation {AWS_ALLOCATION_ANNOTATION}: \"{written}\" is not {}",
                            AllocationId::EXPECTED
                        ),
                    );
                    continue;
                }
            };
            // The families of the VIPs it asks for, before any is given:
            // a refused Service takes no address from the pools.
            let (v4, v6) = match explicit {
                Some(a) => (a.iter().any(IpAddr::is_ipv4), a.iter().any(IpAddr::is_ipv6)),
                None => (svc.families.contains(&true), svc.families.contains(&false)),
            };
            let health = match health_check(svc, &s.health, v4, v6) {
                Ok(h) => h,
                Err((reason, message)) => {
                    refuse(&mut refusals, svc, reason, message);
                    continue;
                }
            };
            // Chosen, not yet taken: the modes depend on the addresses'
            // pools, and a Service refused for its mode takes nothing.
            let addrs = match explicit {
                Some(a) => a.clone(),
                None => match choose(svc, &mut alloc) {
                    Ok(a) => a,
                    Err(msg) => {
                        refuse(&mut refusals, svc, "NoAddress", msg);
                        continue;
                    }
                },
            };
            let announce = match announcements(&addrs, annotated, eip, s) {
                Ok(a) => a,
                Err((reason, message)) => {
                    refuse(&mut refusals, svc, reason, message);
                    continue;
                }
            };
            if explicit.is_none() {
                for a in &addrs {
                    alloc.take(*a);
                }
            }
            let mut vips = Vec::new();
            let mut clash = None;
            'addrs: for &addr in &addrs {
                for (i, p) in svc.ports.iter().enumerate() {
                    if p.unsupported.is_some() {
                        continue;
                    }
                    let vip = Vip {
                        address: addr,
                        port: p.port,
                        protocol: p.protocol,
                    };
                    if let Some(owner) = owners.get(&vip) {
                        clash = Some((vip, *owner));
                        break 'addrs;
                    }
                    vips.push((vip, i));
                }
            }
            if let Some((vip, owner)) = clash {
                let owner = match owner {
                    Some(k) => format!("Service {k}"),
                    None => "the static config".to_owned(),
                };
                refuse(
                    &mut refusals,
                    svc,
                    "VIPConflict",
                    format!("VIP {vip} is already used by {owner}; this Service is not served"),
                );
                continue;
            }
            for p in &svc.ports {
                if let Some(unsupported) = &p.unsupported {
                    refuse(
                        &mut refusals,
                        svc,
                        "UnsupportedProtocol",
                        format!(
                            "port {}: protocol {unsupported} is not balanced (TCP and UDP are)",
                            p.port
                        ),
                    );
                }
            }
            for (vip, _) in &vips {
                owners.insert(*vip, Some(&svc.key));
            }
            assigned.insert(
                svc.key.clone(),
                Assigned {
                    encap,
                    announce,
                    health,
                    vips,
                },
            );
            addresses.insert(svc.key.clone(), addrs);
        }
        Plan {
            assigned,
            addresses: Arc::new(addresses),
            refused: refusals.iter().map(|r| r.service.clone()).collect(),
            refusals: Arc::new(refusals),
        }
    }
}

/// The check a Service's annotations ask for, or why it cannot have it
/// (the Event's reason and message). `v4` and `v6`: whether it may get a
/// VIP of that family.
fn health_check(
    svc: &ServiceInfo,
    health: &Health,
    v4: bool,
    v6: bool,
) -> Result<Option<Arc<HealthCheck>>, (&'static str, String)> {
    let invalid = |message: String| Err(("InvalidAnnotation", message));
    let kind = match svc.health_check.as_deref() {
        None | Some("none") => CheckKind::None,
        Some("tcp") => CheckKind::Tcp,
        Some("http") => CheckKind::Http,
        Some(other) => {
            return invalid(format!(
                "annotation {HEALTH_CHECK_ANNOTATION}: \"{other}\" is not one of \"tcp\", \"http\", \"none\""
            ));
        }
    };
    let path = svc.health_check_path.as_deref();
    if let Some(path) = path {
        if kind != CheckKind::Http {
            return invalid(format!(
                "annotation {HEALTH_CHECK_PATH_ANNOTATION}: a path is for http checks \
                 ({HEALTH_CHECK_ANNOTATION}: \"http\")"
            ));
        }
        if !HttpProbe::is_valid_path(path) {
            return invalid(format!(
                "annotation {HEALTH_CHECK_PATH_ANNOTATION}: \"{path}\" is not {}",
                HttpProbe::PATH_EXPECTED
            ));
        }
    }
    let Some(check) = health.for_kind(kind, path.map(str::to_owned)) else {
        return Ok(None);
    };
    if kind == CheckKind::Http
        && let Some(udp) = svc
            .ports
            .iter()
            .find(|p| p.protocol == lb_common::PROTO_UDP)
    {
        return invalid(format!(
            "annotation {HEALTH_CHECK_ANNOTATION}: http checks need TCP, but port {} is UDP; \
             use \"tcp\" or \"none\"",
            udp.port
        ));
    }
    if check.via == Via::Dsr {
        let missing = [
            (v4 && health.source_v4.is_none(), "IPv4", "v4"),
            (v6 && health.source_v6.is_none(), "IPv6", "v6"),
        ];
        if let Some((_, family, v)) = missing.into_iter().find(|m| m.0) {
            return Err((
                "NoProbeSource",
                format!(
                    "health checks via \"dsr\" (the config's health.via) need a source address \
                     for probes to its {family} VIP, and none is set: set health.source_{v} or \
                     dataplane.ipip_source_{v} in the config, or health.via = \"direct\""
                ),
            ));
        }
    }
    Ok(Some(Arc::new(check)))
}

/// A mode as the annotation writes it, if the config lets Services choose
/// it.
fn announce_mode(written: &str, allowed: &[AnnounceMode]) -> Result<AnnounceMode, String> {
    let mode = match written {
        "none" => AnnounceMode::None,
        "l2" => AnnounceMode::L2,
        "aws" => AnnounceMode::Aws,
        "bgp" => AnnounceMode::Bgp,
        other => {
            return Err(format!(
                "annotation {ANNOUNCE_ANNOTATION}: \"{other}\" is not one of \"none\", \"l2\", \"aws\", \"bgp\""
            ));
        }
    };
    if !allowed.contains(&mode) {
        let allowed: Vec<String> = allowed
            .iter()
            .map(|m| format!("\"{}\"", m.name()))
            .collect();
        let allowed = if allowed.is_empty() {
            "none: Services may not choose".to_owned()
        } else {
            allowed.join(", ")
        };
        return Err(format!(
            "annotation {ANNOUNCE_ANNOTATION}: \"{written}\" is not allowed for Services by the \
             config's announce.service_modes ({allowed}); remove the annotation to take the \
             pool's or the config's mode"
        ));
    }
    Ok(mode)
}

/// How each of a Service's addresses is announced: the annotation's mode,
/// else its pool's, else the config's; with the Elastic IP on the `aws`
/// one. Refused: `aws` for an IPv6 address (it moves IPv4 secondary
/// addresses and Elastic IPs only), and an Elastic IP with no `aws`
/// address to put it on.
fn announcements(
    addrs: &[IpAddr],
    annotated: Option<AnnounceMode>,
    eip: Option<AllocationId>,
    s: &Settings,
) -> Result<BTreeMap<IpAddr, Announcement>, (&'static str, String)> {
    let mode_of = |a: IpAddr| annotated.or(s.pools.mode_of(a)).unwrap_or(s.announce);
    let why = |a: IpAddr| {
        if annotated.is_some() {
            format!("annotation {ANNOUNCE_ANNOTATION}")
        } else if s.pools.mode_of(a).is_some() {
            "its pool in kubernetes.pools".to_owned()
        } else {
            "the config's announce.mode".to_owned()
        }
    };
    if let Some(&a) = addrs
        .iter()
        .find(|a| a.is_ipv6() && mode_of(**a) == AnnounceMode::Aws)
    {
        return Err((
            "UnsupportedAnnounce",
            format!(
                "VIP {a} is IPv6 but announce mode \"aws\" (from {}) moves IPv4 secondary \
                 private addresses and Elastic IPs only; make the Service IPv4 only \
                 (spec.ipFamilies) or choose another mode with annotation {ANNOUNCE_ANNOTATION}",
                why(a)
            ),
        ));
    }
    if eip.is_some() && !addrs.iter().any(|a| mode_of(*a) == AnnounceMode::Aws) {
        return Err((
            "InvalidAnnotation",
            format!(
                "annotation {AWS_ALLOCATION_ANNOTATION}: an Elastic IP is for VIPs announced \
                 with \"aws\" (annotation {ANNOUNCE_ANNOTATION}, its pool, or the config's \
                 announce.mode)"
            ),
        ));
    }
    Ok(addrs
        .iter()
        .map(|&a| (a, Announcement::new(mode_of(a), eip.clone())))
        .collect())
}

/// One address per family the Service asks for, from the pools. A family's
/// address in the Service's status is kept when it is still free, so VIPs
/// survive restarts and every router node picks the same one.
fn choose(svc: &ServiceInfo, alloc: &mut Allocator<'_>) -> Result<Vec<IpAddr>, String> {
    // Chosen here, taken by the caller only once the Service can have
    // what it needs: nothing is handed out and given back (see
    // `Allocator`).
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for &v4 in &svc.families {
        let kept = svc
            .ingress
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == v4 && alloc.can_keep(*a));
        match kept.or_else(|| alloc.peek(v4)) {
            Some(a) => out.push(a),
            None => missing.push(if v4 { "IPv4" } else { "IPv6" }),
        }
    }
    // The messages name the families asked for, not the ones found
    // missing: which are free when a refused Service looks depends on the
    // Services after it (a status confirming an address reserves it), and
    // every router must report a refusal alike.
    let names = |join: &str| {
        let v: Vec<&str> = svc
            .families
            .iter()
            .map(|v4| if *v4 { "IPv4" } else { "IPv6" })
            .collect();
        v.join(join)
    };
    if svc.require_dual_stack && !missing.is_empty() {
        return Err(format!(
            "no free address of each family it requires ({}, RequireDualStack) in kubernetes.pools; set them with the {VIP_ANNOTATION} annotation or add pools",
            names(" and ")
        ));
    }
    if out.is_empty() {
        return Err(format!(
            "no free {} address in kubernetes.pools; set one with the {VIP_ANNOTATION} annotation or add a pool",
            names(" or ")
        ));
    }
    Ok(out)
}

fn backends(
    slices: &[&SliceInfo],
    port: &Port,
    v4: bool,
    target: BackendTarget,
    nodes: &NodeAddresses,
) -> BTreeMap<IpAddr, u32> {
    let mut out: BTreeMap<IpAddr, u32> = BTreeMap::new();
    for slice in slices.iter().filter(|s| s.v4 == v4) {
        // A slice serves the Service ports it lists, matched by name.
        let serves = slice
            .ports
            .iter()
            .any(|(name, proto)| *name == port.name && *proto == port.protocol);
        if !serves {
            continue;
        }
        for EndpointInfo {
            address,
            node,
            weight,
        } in &slice.endpoints
        {
            let addr = match target {
                BackendTarget::Pod => *address,
                BackendTarget::Node => node
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
                BackendTarget::Node => *entry += weight,
                // The same pod in two slices (during a slice split) counts once.
                BackendTarget::Pod => *entry = (*entry).max(*weight),
            }
        }
    }
    out
}
