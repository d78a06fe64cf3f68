//! The watches and the loop that turns their stores into an [`Outcome`].

use std::{collections::BTreeSet, fmt::Debug, future::ready, sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        utils::ResetTimerBackoff,
        watcher,
    },
};
use serde::de::DeserializeOwned;
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

use super::{
    events::Events,
    status::StatusWriter,
    translate::{self, Outcome, SERVICE_NAME_LABEL, Settings},
};
use crate::{config::BackendTarget, vip::Vip};

/// How often status and Events are checked even when nothing changed, so
/// a status someone else overwrote is put back.
const RESYNC: Duration = Duration::from_secs(30);

/// Starts one watch per kind, the translation loop and the status writer.
pub fn spawn(
    client: Client,
    node: String,
    settings: Settings,
    statics: watch::Receiver<BTreeSet<Vip>>,
) -> (watch::Receiver<Option<Arc<Outcome>>>, Vec<JoinHandle<()>>) {
    let changed = Arc::new(Notify::new());
    let mut tasks = Vec::new();
    let (services, t) = watch_kind::<Service>(
        Api::all(client.clone()),
        watcher::Config::default(),
        changed.clone(),
    );
    tasks.push(t);
    let (slices, t) = watch_kind::<EndpointSlice>(
        Api::all(client.clone()),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
        changed.clone(),
    );
    tasks.push(t);
    let nodes = (settings.target == BackendTarget::Node).then(|| {
        let (nodes, t) = watch_kind::<Node>(
            Api::all(client.clone()),
            watcher::Config::default(),
            changed.clone(),
        );
        tasks.push(t);
        nodes
    });

    let (out_tx, out_rx) = watch::channel(None);
    tasks.push(tokio::spawn(translate_loop(
        services.clone(),
        slices,
        nodes,
        changed,
        statics,
        settings,
        out_tx,
    )));
    tasks.push(tokio::spawn(write_back(
        client,
        node,
        services,
        out_rx.clone(),
    )));
    (out_rx, tasks)
}

/// A reflector for one kind. Every change that leaves the store complete
/// (an applied or deleted object, the end of a re-list) wakes the loop.
fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    changed: Arc<Notify>,
) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let kind = K::kind(&()).into_owned();
    let stream = watcher(api, config)
        // Nothing reads managedFields; dropping them roughly halves the
        // memory of large stores.
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .backoff(watch_backoff());
    let task = tokio::spawn(reflector::reflector(writer, stream).for_each(move |ev| {
        match ev {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                changed.notify_one();
            }
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
            Err(e) => tracing::warn!(%kind, "watch: {e} (retrying with backoff; the data plane keeps its state)"),
        }
        ready(())
    }));
    (store, task)
}

/// How a broken watch is retried: from 200 ms, doubling, at most 1 s plus
/// a jitter of up to as much again, reset after 30 s of health. kube's default grows to 30 s,
/// and after a 40 s API outage the watches took about that long to come
/// back (found against a real API server); a router must follow the
/// cluster again within seconds. Three watches retried about once a second
/// each are still a light load on a struggling API server.
fn watch_backoff() -> ResetTimerBackoff<watcher::ExponentialBackoff> {
    let b = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(1))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times();
    ResetTimerBackoff::new(
        watcher::ExponentialBackoff::from(b),
        Duration::from_secs(30),
    )
}

async fn translate_loop(
    services: Store<Service>,
    slices: Store<EndpointSlice>,
    nodes: Option<Store<Node>>,
    changed: Arc<Notify>,
    mut statics: watch::Receiver<BTreeSet<Vip>>,
    settings: Settings,
    out: watch::Sender<Option<Arc<Outcome>>>,
) {
    if services.wait_until_ready().await.is_err() || slices.wait_until_ready().await.is_err() {
        return;
    }
    if let Some(n) = &nodes
        && n.wait_until_ready().await.is_err()
    {
        return;
    }
    tracing::info!(
        services = services.len(),
        endpointslices = slices.len(),
        "Kubernetes watches synced"
    );
    loop {
        let statics_now = statics.borrow_and_update().clone();
        let node_state = nodes.as_ref().map(Store::state).unwrap_or_default();
        let next = translate::translate(
            &services.state(),
            &slices.state(),
            &node_state,
            &statics_now,
            &settings,
        );
        out.send_if_modified(|cur| {
            if cur.as_deref() == Some(&next) {
                return false;
            }
            *cur = Some(Arc::new(next));
            true
        });
        tokio::select! {
            () = changed.notified() => {}
            r = statics.changed() => if r.is_err() { return },
        }
    }
}

/// Status and Events, apart from the translation so that API writes never
/// delay the data plane.
async fn write_back(
    client: Client,
    node: String,
    services: Store<Service>,
    mut outcome: watch::Receiver<Option<Arc<Outcome>>>,
) {
    let mut status = StatusWriter::new(client.clone());
    let mut events = Events::new(client, node);
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        tokio::select! {
            r = outcome.changed() => if r.is_err() { return },
            _ = resync.tick() => {}
        }
        let Some(now) = outcome.borrow_and_update().clone() else {
            continue;
        };
        let refused = now
            .refusals
            .iter()
            .map(|r| r.service.clone())
            .filter(|k| !now.addresses.contains_key(k))
            .collect();
        status.sync(&now.addresses, &refused, &services).await;
        events.report(&now.refusals).await;
    }
}
