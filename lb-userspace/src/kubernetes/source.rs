//! The watches and the task that owns the [`Translator`].
//!
//! Each watch turns its objects into what the translation keeps of them
//! ([`objects`](super::objects)) as they arrive and sends the change to the
//! translator's task, which applies every change queued, settles, and
//! publishes the outcome. A re-list (start, a disconnect the watch cannot
//! resume, a `410 Gone`) is gathered apart and swapped in only once
//! complete, as a diff against what the translator holds, and nothing is
//! published before every watch has listed once: a resync never shows the
//! data plane a partial or empty view.

use std::{
    collections::{BTreeSet, HashMap},
    fmt::Debug,
    net::IpAddr,
    sync::Arc,
    time::Duration,
};

use futures::StreamExt as _;
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    runtime::{WatchStreamExt as _, utils::ResetTimerBackoff, watcher},
};
use serde::de::DeserializeOwned;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use super::{
    events::Events,
    leadership::Leadership,
    objects::{self, ObjKey, SERVICE_NAME_LABEL, ServiceInfo, SliceInfo, key_of},
    status::StatusWriter,
    translate::{Outcome, Settings, Translator},
};
use crate::{config::BackendTarget, vip::Vip};

/// How often status and Events are checked even when nothing changed, so
/// a failed write is tried again.
const RESYNC: Duration = Duration::from_secs(30);

/// Changes queued between the watches and the translator.
const QUEUE: usize = 4096;

/// One watch's change, in the translator's terms.
enum Change<T> {
    /// A re-list begins: what follows until `Listed` replaces everything.
    Relist,
    /// An object as the translation keeps it (`None`: there is none to
    /// keep: not ours, or gone).
    Object(ObjKey, Option<T>),
    /// The re-list is complete.
    Listed,
}

enum Update {
    /// Boxed: a Service as kept is several times a slice, and every update
    /// in the queue would take its size.
    Service(Box<Change<ServiceInfo>>),
    Slice(Change<SliceInfo>),
    Node(Change<Vec<IpAddr>>),
}

/// Starts one watch per kind, the translator and the status writer.
pub fn spawn(
    client: Client,
    node: String,
    settings: Settings,
    statics: watch::Receiver<BTreeSet<Vip>>,
    leaders: watch::Receiver<Leadership>,
) -> (watch::Receiver<Option<Arc<Outcome>>>, Vec<JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let class = settings.class();
    let mut tasks = vec![
        watch_kind::<Service>(
            Api::all(client.clone()),
            watcher::Config::default(),
            tx.clone(),
            move |s| ServiceInfo::of(s, &class),
            |c| Update::Service(Box::new(c)),
        ),
        watch_kind::<EndpointSlice>(
            Api::all(client.clone()),
            watcher::Config::default().labels(SERVICE_NAME_LABEL),
            tx.clone(),
            SliceInfo::of,
            Update::Slice,
        ),
    ];
    let kinds = if settings.target == BackendTarget::Node {
        tasks.push(watch_kind::<Node>(
            Api::all(client.clone()),
            watcher::Config::default(),
            tx,
            |n| Some(objects::node_addresses(n)),
            Update::Node,
        ));
        3
    } else {
        2
    };
    let (out_tx, out_rx) = watch::channel(None);
    tasks.push(tokio::spawn(
        TranslatorTask {
            translator: Translator::new(settings),
            kinds,
            listed: [false; 3],
            relists: Relists::default(),
            relisted: false,
        }
        .run(rx, statics, out_tx),
    ));
    tasks.push(tokio::spawn(write_back(
        client,
        node,
        out_rx.clone(),
        leaders,
    )));
    (out_rx, tasks)
}

/// A watch for one kind, each object turned into what is kept of it
/// before it is queued (the full object is dropped right there).
fn watch_kind<K>(
    api: Api<K>,
    config: watcher::Config,
    tx: mpsc::Sender<Update>,
    keep: impl Fn(&K) -> Option<<K as Kept>::Info> + Send + 'static,
    wrap: fn(Change<<K as Kept>::Info>) -> Update,
) -> JoinHandle<()>
where
    K: Kept + Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let kind = K::kind(&()).into_owned();
    let mut stream = watcher(api, config).backoff(watch_backoff()).boxed();
    tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            let change = match ev {
                Ok(watcher::Event::Init) => Change::Relist,
                Ok(watcher::Event::InitApply(o) | watcher::Event::Apply(o)) => {
                    Change::Object(K::key(&o), keep(&o))
                }
                Ok(watcher::Event::Delete(o)) => Change::Object(K::key(&o), None),
                Ok(watcher::Event::InitDone) => Change::Listed,
                Err(e) => {
                    tracing::warn!(%kind, "watch: {e} (retrying with backoff; the data plane keeps its state)");
                    continue;
                }
            };
            if tx.send(wrap(change)).await.is_err() {
                return;
            }
        }
    })
}

/// How a watched kind is keyed.
trait Kept {
    type Info;
    fn key(o: &Self) -> ObjKey;
}

impl Kept for Service {
    type Info = ServiceInfo;
    fn key(o: &Self) -> ObjKey {
        key_of(&o.metadata)
    }
}

impl Kept for EndpointSlice {
    type Info = SliceInfo;
    fn key(o: &Self) -> ObjKey {
        key_of(&o.metadata)
    }
}

impl Kept for Node {
    type Info = Vec<IpAddr>;
    fn key(o: &Self) -> ObjKey {
        node_key(o.name_any())
    }
}

/// Nodes are cluster-scoped: the name alone.
fn node_key(name: String) -> ObjKey {
    ObjKey {
        namespace: "".into(),
        name: name.into(),
    }
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

/// Re-lists in progress, per kind.
#[derive(Default)]
struct Relists {
    services: Option<HashMap<ObjKey, Option<ServiceInfo>>>,
    slices: Option<HashMap<ObjKey, Option<SliceInfo>>>,
    nodes: Option<HashMap<ObjKey, Option<Vec<IpAddr>>>>,
}

struct TranslatorTask {
    translator: Translator,
    /// How many kinds are watched, and which have listed once.
    kinds: usize,
    listed: [bool; 3],
    relists: Relists,
    /// A re-list completed since the last settle.
    relisted: bool,
}

impl TranslatorTask {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Update>,
        mut statics: watch::Receiver<BTreeSet<Vip>>,
        out: watch::Sender<Option<Arc<Outcome>>>,
    ) {
        let mut announced = false;
        loop {
            self.translator
                .set_statics(statics.borrow_and_update().clone());
            let synced = self.listed[..self.kinds].iter().all(|l| *l);
            if synced {
                let changed = self.translator.settle();
                if changed || out.borrow().is_none() {
                    out.send_replace(Some(Arc::new(self.translator.outcome().clone())));
                }
                if !announced {
                    announced = true;
                    tracing::info!(
                        services = self.translator.service_keys().len(),
                        endpointslices = self.translator.slice_keys().len(),
                        "Kubernetes watches synced"
                    );
                }
                // The lists' objects are parsed and gone: their memory goes back.
                if std::mem::take(&mut self.relisted) {
                    crate::heap::trim();
                }
            }
            tokio::select! {
                u = rx.recv() => match u {
                    Some(u) => self.apply(u),
                    None => return,
                },
                r = statics.changed() => if r.is_err() { return },
            }
            // Everything already queued, before the next settle.
            while let Ok(u) = rx.try_recv() {
                self.apply(u);
            }
        }
    }

    fn apply(&mut self, u: Update) {
        let t = &mut self.translator;
        let listed = match u {
            Update::Service(c) => {
                step(*c, &mut self.relists.services, |k, v| t.service(k, v)).map(|all| {
                    swap_in(all, t.service_keys(), |k, v| t.service(k, v));
                    0
                })
            }
            Update::Slice(c) => {
                step(c, &mut self.relists.slices, |k, v| t.slice(k, v)).map(|all| {
                    swap_in(all, t.slice_keys(), |k, v| t.slice(k, v));
                    1
                })
            }
            Update::Node(c) => step(c, &mut self.relists.nodes, |k, v| {
                t.node(k.name.to_string(), v)
            })
            .map(|all| {
                let held = t.node_names().into_iter().map(node_key).collect();
                swap_in(all, held, |k, v| t.node(k.name.to_string(), v));
                2
            }),
        };
        if let Some(kind) = listed {
            self.listed[kind] = true;
            self.relisted = true;
        }
    }
}

/// Applies one change, or gathers it into the re-list in progress; the
/// complete re-list once it ends.
fn step<T>(
    c: Change<T>,
    relist: &mut Option<HashMap<ObjKey, Option<T>>>,
    mut apply: impl FnMut(ObjKey, Option<T>),
) -> Option<HashMap<ObjKey, Option<T>>> {
    match c {
        Change::Relist => *relist = Some(HashMap::new()),
        Change::Object(k, v) => match relist {
            Some(all) => {
                all.insert(k, v);
            }
            None => apply(k, v),
        },
        Change::Listed => return Some(relist.take().unwrap_or_default()),
    }
    None
}

/// A complete re-list applied as a diff against `held`, the keys the
/// translator holds of that kind: what the list lacks is deleted.
fn swap_in<T>(
    all: HashMap<ObjKey, Option<T>>,
    held: Vec<ObjKey>,
    mut apply: impl FnMut(ObjKey, Option<T>),
) {
    for k in held {
        if !all.contains_key(&k) {
            apply(k, None);
        }
    }
    for (k, v) in all {
        apply(k, v);
    }
}

/// Status and Events, apart from the translation so that API writes never
/// delay the data plane.
async fn write_back(
    client: Client,
    node: String,
    mut outcome: watch::Receiver<Option<Arc<Outcome>>>,
    mut leaders: watch::Receiver<Leadership>,
) {
    let mut status = StatusWriter::new(client.clone());
    let mut events = Events::new(client, node);
    let mut resync = tokio::time::interval(RESYNC);
    let mut reported = None;
    loop {
        tokio::select! {
            r = outcome.changed() => if r.is_err() { return },
            _ = resync.tick() => reported = None,
            // Buckets moved: refusals this router now reports.
            Ok(()) = leaders.changed() => reported = None,
        }
        let Some(now) = outcome.borrow_and_update().clone() else {
            continue;
        };
        // Thousands of writes (the first sync of a large cluster) leave
        // their requests' and answers' memory freed: it goes back.
        if status.sync(&now.statuses).await >= 1_000 {
            crate::heap::trim();
        }
        if reported
            .as_ref()
            .is_none_or(|r| !Arc::ptr_eq(r, &now.refusals))
        {
            let lead = leaders.borrow_and_update().clone();
            events.report(&now.refusals, &lead).await;
            reported = Some(now.refusals.clone());
        }
    }
}
