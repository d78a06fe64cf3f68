//! The Kubernetes source: Services of type LoadBalancer and their
//! EndpointSlices become VIPs and backends, merged by the daemon with the
//! config file's; VIPs are written back to the Services' status; refusals
//! become Events; and bucket Leases say which router node leads each VIP.
//!
//! Watches are kube-runtime watchers; each object is cut down to what the
//! translation reads as it arrives ([`objects`]) and handed to the
//! incremental [`translate::Translator`] ([`source`]). A re-list is swapped
//! in only once complete, and nothing is published before every watch has
//! listed once, so a resync never shows the data plane a partial or empty
//! view.

pub mod events;
pub mod leadership;
pub mod lease;
pub mod memory;
pub mod objects;
pub mod pools;
pub mod source;
pub mod status;
pub mod translate;
#[cfg(test)]
mod translate_props;
#[cfg(test)]
mod translate_tests;

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use k8s_openapi::api::coordination::v1::Lease;
use kube::{
    Api, Client,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::{sync::watch, task::JoinHandle};

pub use leadership::{LeaderFeed, Leadership};
pub use translate::Outcome;

use crate::{config, vip::Vip};

#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error("kubernetes.kubeconfig {path}: {source}")]
    Kubeconfig {
        path: PathBuf,
        source: kube::config::KubeconfigError,
    },
    #[error("no Kubernetes configuration (in-cluster, $KUBECONFIG or ~/.kube/config): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
}

/// The running source. Dropping it stops nothing; call [`Self::shutdown`].
pub struct Kubernetes {
    /// The latest translation; `None` until every watch has listed once.
    pub outcome: watch::Receiver<Option<Arc<Outcome>>>,
    pub leaders: LeaderFeed,
    statics: watch::Sender<BTreeSet<Vip>>,
    vips: watch::Sender<BTreeSet<IpAddr>>,
    stop: watch::Sender<bool>,
    elector: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

/// What the source and its elector are told by the rest of the daemon.
#[derive(Clone)]
pub struct ElectorInputs {
    statics: watch::Sender<BTreeSet<Vip>>,
    vips: watch::Sender<BTreeSet<IpAddr>>,
}

impl ElectorInputs {
    /// The config file's VIPs changed: they win any conflict.
    pub fn set_statics(&self, statics: BTreeSet<Vip>) {
        self.statics.send_if_modified(|s| {
            let changed = *s != statics;
            *s = statics;
            changed
        });
    }

    /// The VIP addresses now in the data plane: the elector holds a Lease
    /// for each.
    pub fn set_vips(&self, vips: BTreeSet<IpAddr>) {
        self.vips.send_if_modified(|v| {
            let changed = *v != vips;
            *v = vips;
            changed
        });
    }
}

/// This node's name in Leases and Events: the config's, `$NODE_NAME` (the
/// DaemonSet sets it from the downward API), else the host name.
pub fn identity(cfg: &config::Kubernetes) -> String {
    if let Some(n) = &cfg.node_name {
        return n.clone();
    }
    if let Ok(n) = std::env::var("NODE_NAME")
        && !n.is_empty()
    {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "xlb".to_owned())
}

pub async fn client(cfg: &config::Kubernetes) -> Result<Client, KubernetesError> {
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|source| KubernetesError::Kubeconfig {
                path: path.clone(),
                source,
            })?;
            kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
                .await
                .map_err(|source| KubernetesError::Kubeconfig {
                    path: path.clone(),
                    source,
                })?
        }
        None => kube::Config::infer().await?,
    };
    // No retry layer in the client: kube's retries 429/503/504 itself with
    // delays that grow to minutes, so a call made during an outage could
    // sleep long after the API server is back. Every caller here retries on
    // its own, bounded: the watches (`source::watch_backoff`), the Lease
    // rounds (every retry period), the status and Event writes (at the
    // next change or resync).
    let mut config = config;
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}

impl Kubernetes {
    /// Starts the watches, the status and Event writer, and the elector.
    pub async fn start(
        cfg: &config::Kubernetes,
        dataplane: &config::Dataplane,
        announce: &config::Announce,
        health: &config::Health,
        statics: BTreeSet<Vip>,
    ) -> Result<Self, KubernetesError> {
        let client = client(cfg).await?;
        let node = identity(cfg);
        let settings = translate::Settings {
            class: cfg.load_balancer_class.clone(),
            include_unclassed: cfg.include_unclassed,
            target: cfg.backend_target,
            pools: pools::Pools::new(cfg.pools.clone()),
            encap: dataplane.encap,
            scheduler: dataplane.scheduler.clone(),
            announce: announce.mode,
            service_modes: announce.service_modes.clone(),
            health: health.with_probe_sources(dataplane),
        };
        let (statics_tx, statics_rx) = watch::channel(statics);
        let (stop_tx, stop_rx) = watch::channel(false);
        let (vips_tx, vips_rx) = watch::channel(BTreeSet::new());
        let (lead_tx, lead_rx) = watch::channel(Leadership {
            identity: node.clone(),
            ..Default::default()
        });
        let (outcome, tasks) = source::spawn(
            client.clone(),
            node.clone(),
            settings,
            statics_rx,
            lead_rx.clone(),
        );

        let timing = lease::Timing {
            lease_duration: Duration::from_millis(u64::from(cfg.lease_duration_ms)),
            renew_deadline: Duration::from_millis(u64::from(cfg.renew_deadline_ms)),
            retry_period: Duration::from_millis(u64::from(cfg.retry_period_ms)),
        };
        let leases: Api<Lease> = Api::namespaced(client, &cfg.lease_namespace);
        let elector = tokio::spawn(
            lease::Elector::new(leases, node.clone(), timing, cfg.lease_buckets)
                .run(vips_rx, lead_tx, stop_rx),
        );
        tracing::info!(
            identity = %node,
            class = %cfg.load_balancer_class,
            target = ?cfg.backend_target,
            lease_namespace = %cfg.lease_namespace,
            "Kubernetes source started"
        );
        Ok(Self {
            outcome,
            leaders: LeaderFeed::new(lead_rx),
            statics: statics_tx,
            vips: vips_tx,
            stop: stop_tx,
            elector,
            tasks,
        })
    }

    /// The elector's inputs, for the task that keeps them current.
    pub fn elector_inputs(&self) -> ElectorInputs {
        ElectorInputs {
            statics: self.statics.clone(),
            vips: self.vips.clone(),
        }
    }

    /// Stops the watches and releases every Lease this node holds (bounded
    /// by the retry period per Lease).
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        let _ = self.stop.send(true);
        let _ = self.elector.await;
    }
}
