//! Writes each served Service's VIPs to `status.loadBalancer.ingress`
//! (`ipMode: VIP`: kube-proxy then delivers the VIP to local endpoints on a
//! node, which `backend_target = "node"` relies on), and empties it for a
//! Service of ours that is refused: an address left in a status stays
//! reserved, and the pool would leak it. The translation says which
//! statuses differ ([`Outcome::statuses`](super::Outcome)); only those are
//! written, as a merge patch of the status subresource.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use kube::{
    Client,
    api::{Api, Patch, PatchParams},
};

use super::objects::ObjKey;

const CONCURRENCY: usize = 16;

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

    /// Writes each of `todo`: a Service and the VIPs its status should
    /// list (none: emptied). Returns how many writes were made.
    pub async fn sync(&mut self, todo: &BTreeMap<ObjKey, Vec<IpAddr>>) -> usize {
        // Written and brought back by the watch: no longer to do.
        self.written
            .retain(|k, v| todo.get(k).is_some_and(|w| w == v));
        let writes: Vec<(ObjKey, Vec<IpAddr>)> = todo
            .iter()
            .filter(|(k, v)| self.written.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let count = writes.len();
        let results: Vec<_> = futures::stream::iter(writes)
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
        count
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
