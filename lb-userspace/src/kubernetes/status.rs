//! Writes each served Service's VIPs to `status.loadBalancer.ingress`
//! (`ipMode: VIP`: kube-proxy then delivers the VIP to local endpoints on a
//! node, which `backend_target = "node"` relies on), and empties it for a
//! Service of ours that is refused: an address left in a status stays
//! reserved, and the pool would leak it. Only differences are written, as
//! a merge patch of the status subresource.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use kube::{
    Client,
    api::{Api, Patch, PatchParams},
    runtime::reflector::Store,
};

use super::translate::{ObjKey, key_of};

const CONCURRENCY: usize = 16;

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

pub struct StatusWriter {
    client: Client,
    /// What this node last wrote, so a write is not repeated while the
    /// watch has not yet brought it back.
    written: HashMap<ObjKey, Vec<IpAddr>>,
}

impl StatusWriter {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            written: HashMap::new(),
        }
    }

    /// Writes `want` (served Services' VIPs) and empties the ingress of
    /// `refused` Services (ours, none of their ports served).
    pub async fn sync(
        &mut self,
        want: &BTreeMap<ObjKey, Vec<IpAddr>>,
        refused: &BTreeSet<ObjKey>,
        services: &Store<Service>,
    ) {
        let mut todo = Vec::new();
        let none = Vec::new();
        for svc in services.state() {
            let key = key_of(&svc.metadata);
            let addrs = match want.get(&key) {
                Some(addrs) => addrs,
                None if refused.contains(&key) => &none,
                None => continue,
            };
            let have = ingress_ips(&svc);
            if have == *addrs {
                self.written.remove(&key);
                continue;
            }
            if self.written.get(&key) == Some(addrs) {
                continue;
            }
            todo.push((key, addrs.clone()));
        }
        let results: Vec<_> = futures::stream::iter(todo)
            .map(|(key, addrs)| {
                let client = self.client.clone();
                async move {
                    let r = patch(&client, &key, &addrs).await;
                    (key, addrs, r)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        for (key, addrs, r) in results {
            match r {
                Ok(()) if addrs.is_empty() => {
                    tracing::info!(service = %key, "status: load balancer ingress emptied (not served)");
                    self.written.insert(key, addrs);
                }
                Ok(()) => {
                    tracing::info!(service = %key, vips = ?addrs, "status: load balancer ingress written");
                    self.written.insert(key, addrs);
                }
                Err(e) => tracing::warn!(service = %key, "writing the status: {e}"),
            }
        }
        self.written
            .retain(|k, _| want.contains_key(k) || refused.contains(k));
    }
}

async fn patch(client: &Client, key: &ObjKey, addrs: &[IpAddr]) -> Result<(), kube::Error> {
    let api: Api<Service> = Api::namespaced(client.clone(), &key.namespace);
    let ingress: Vec<serde_json::Value> = addrs
        .iter()
        .map(|a| serde_json::json!({ "ip": a.to_string(), "ipMode": "VIP" }))
        .collect();
    let body = serde_json::json!({ "status": { "loadBalancer": { "ingress": ingress } } });
    api.patch_status(&key.name, &PatchParams::default(), &Patch::Merge(&body))
        .await
        .map(|_| ())
}
