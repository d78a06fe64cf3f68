//! The fake Kubernetes API server (`xlb_tests::kube_api`) against the real
//! kube-rs client, and against raw HTTP where the wire format itself is the
//! point (list items, chunked watch framing, Status bodies).

use std::{
    fmt::Debug,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use futures::{StreamExt as _, channel::mpsc};
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Event as CoreEvent, Node, ObjectReference, Service},
    discovery::v1::EndpointSlice,
};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::{
    Api, Client, Resource, ResourceExt as _,
    api::{
        ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
        WatchEvent, WatchParams,
    },
    runtime::{events, watcher},
};
use serde_json::{Value, json};
use xlb_tests::kube_api::KubeApi;

const WAIT: Duration = Duration::from_secs(5);

fn service(name: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"type": "LoadBalancer", "loadBalancerClass": "xlb.io/xlb", "ports": [{"port": 80, "protocol": "TCP"}]},
    })
}

fn slice(ns: &str, name: &str, service: &str) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.11"], "conditions": {"ready": true}}],
        "ports": [{"port": 8080, "protocol": "TCP"}],
    })
}

/// The `Status` of a failed kube call.
fn api_error<T: Debug>(result: Result<T, kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

async fn no_retry_client(kube: &KubeApi) -> Client {
    let mut config = kube.config().await;
    config.default_retry = false;
    Client::try_from(config).expect("kube client")
}

/// Drives kube's watcher on its own task and reports each event as a line:
/// `Init`, `InitApply NAME`, `InitDone`, `Apply NAME`, `Delete NAME`, `Err ...`.
fn spawn_watcher<K>(api: Api<K>, config: watcher::Config) -> mpsc::UnboundedReceiver<String>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let (tx, rx) = mpsc::unbounded();
    tokio::spawn(async move {
        let mut events = watcher::watcher(api, config).boxed();
        while let Some(event) = events.next().await {
            let line = match event {
                Ok(watcher::Event::Init) => "Init".to_string(),
                Ok(watcher::Event::InitApply(o)) => format!("InitApply {}", o.name_any()),
                Ok(watcher::Event::InitDone) => "InitDone".to_string(),
                Ok(watcher::Event::Apply(o)) => format!("Apply {}", o.name_any()),
                Ok(watcher::Event::Delete(o)) => format!("Delete {}", o.name_any()),
                Err(e) => format!("Err {e}"),
            };
            if tx.unbounded_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn next_line(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(WAIT, rx.next())
        .await
        .expect("no watcher event within 5 s")
        .expect("watcher task ended")
}

/// The next `n` watcher lines.
async fn lines(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next_line(rx).await);
    }
    out
}

async fn next_event<K: Debug>(
    stream: &mut (impl futures::Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin),
) -> WatchEvent<K> {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("no watch event within 5 s")
        .expect("watch stream ended")
        .expect("watch event")
}

/// `(verb, group, resource, namespace, name)`, as an RBAC rule sees a request.
type Call = (String, String, String, Option<String>, Option<String>);

fn verbs(kube: &KubeApi) -> Vec<Call> {
    kube.requests()
        .into_iter()
        .map(|r| (r.verb, r.group, r.resource, r.namespace, r.name))
        .collect()
}

fn rbac(verb: &str, group: &str, resource: &str, ns: Option<&str>, name: Option<&str>) -> Call {
    (
        verb.into(),
        group.into(),
        resource.into(),
        ns.map(Into::into),
        name.map(Into::into),
    )
}

#[tokio::test]
async fn list_pages_from_one_snapshot() {
    let kube = KubeApi::start();
    for i in 0..5 {
        kube.apply(service(&format!("s{i}"), json!({})));
    }
    let api: Api<Service> = Api::namespaced(kube.client().await, "default");

    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let snapshot_rv = first.metadata.resource_version.clone().unwrap();
    assert_eq!(
        first.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["s0", "s1"]
    );
    assert_eq!(first.metadata.remaining_item_count, Some(3));
    // Writes after the first page do not show in the later ones.
    kube.apply(service("s1a", json!({})));
    kube.delete("v1", "Service", Some("default"), "s4").unwrap();

    let token = first
        .metadata
        .continue_
        .clone()
        .expect("continue token on a partial page");
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        second
            .items
            .iter()
            .map(|s| s.name_any())
            .collect::<Vec<_>>(),
        ["s2", "s3"]
    );
    assert_eq!(
        second.metadata.resource_version.as_deref(),
        Some(snapshot_rv.as_str())
    );
    let token = second.metadata.continue_.clone().unwrap();
    let third = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        third.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["s4"]
    );
    assert_eq!(third.metadata.continue_, None);

    let now = api.list(&ListParams::default()).await.unwrap();
    assert_eq!(
        now.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["s0", "s1", "s1a", "s2", "s3"]
    );
    assert_eq!(
        now.metadata.resource_version,
        Some(kube.resource_version().to_string())
    );

    // kube's watcher pages its initial list too.
    kube.clear_requests();
    let mut rx = spawn_watcher(api, watcher::Config::default().page_size(2));
    let got = lines(&mut rx, 7).await;
    assert_eq!(
        got,
        [
            "Init",
            "InitApply s0",
            "InitApply s1",
            "InitApply s1a",
            "InitApply s2",
            "InitApply s3",
            "InitDone"
        ]
    );
    let lists: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.verb == "list")
        .collect();
    assert_eq!(lists.len(), 3, "{lists:#?}");
    assert!(lists.iter().all(|r| r.param("limit") == Some("2")));
    assert_eq!(lists[0].param("continue"), None);
    assert!(lists[1].param("continue").is_some());
}

#[tokio::test]
async fn expired_continue_token_is_410_with_an_inconsistent_token() {
    let kube = KubeApi::start();
    for i in 0..5 {
        kube.apply(service(&format!("s{i}"), json!({})));
    }
    let api: Api<Service> = Api::namespaced(kube.client().await, "default");
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    kube.apply(service("s9", json!({})));
    kube.compact();
    let token = first.metadata.continue_.unwrap();
    let status = api_error(
        api.list(&ListParams::default().limit(2).continue_token(&token))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(
        status
            .message
            .starts_with("The provided continue parameter is too old"),
        "{status:?}"
    );
    let inconsistent = status
        .metadata
        .and_then(|m| m.continue_)
        .expect("an inconsistent continue token");
    let rest = api
        .list(&ListParams::default().continue_token(&inconsistent))
        .await
        .unwrap();
    assert_eq!(
        rest.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["s2", "s3", "s4", "s9"]
    );
}

#[tokio::test]
async fn selectors_and_scopes() {
    let kube = KubeApi::start();
    kube.apply(service("a", json!({"app": "a", "tier": "web"})));
    kube.apply(service("b", json!({"app": "b"})));
    kube.apply(service("c", json!({})));
    kube.apply(slice("default", "web-1", "web"));
    kube.apply(slice("other", "web-2", "web"));
    kube.apply(slice("other", "db-1", "db"));
    kube.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}));
    let client = kube.client().await;

    let services: Api<Service> = Api::default_namespaced(client.clone());
    let names = |list: kube::core::ObjectList<Service>| {
        list.items.iter().map(|s| s.name_any()).collect::<Vec<_>>()
    };
    for (selector, want) in [
        ("app", vec!["a", "b"]),
        ("!app", vec!["c"]),
        ("app=a", vec!["a"]),
        ("app==b", vec!["b"]),
        ("app!=a", vec!["b", "c"]),
        ("app in (a,b),tier", vec!["a"]),
        ("app notin (a)", vec!["b", "c"]),
    ] {
        let got = names(
            services
                .list(&ListParams::default().labels(selector))
                .await
                .unwrap(),
        );
        assert_eq!(got, want, "labelSelector {selector:?}");
    }
    let got = names(
        services
            .list(&ListParams::default().fields("metadata.name=b"))
            .await
            .unwrap(),
    );
    assert_eq!(got, ["b"]);
    let status = api_error(
        services
            .list(&ListParams::default().fields("spec.type=LoadBalancer"))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));

    let all: Api<EndpointSlice> = Api::all(client.clone());
    let got: Vec<_> = all
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap()
        .items
        .iter()
        .map(|s| format!("{}/{}", s.namespace().unwrap(), s.name_any()))
        .collect();
    assert_eq!(got, ["default/web-1", "other/web-2"]);
    let other: Api<EndpointSlice> = Api::namespaced(client.clone(), "other");
    assert_eq!(
        other
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let got = other
        .list(&ListParams::default().fields("metadata.namespace=other,metadata.name!=db-1"))
        .await
        .unwrap();
    assert_eq!(
        got.items.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
        ["web-2"]
    );

    let nodes: Api<Node> = Api::all(client);
    assert_eq!(nodes.get("node-1").await.unwrap().name_any(), "node-1");
    assert_eq!(
        nodes
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    assert_eq!(
        kube.requests()
            .iter()
            .find(|r| r.resource == "endpointslices")
            .map(|r| r.path.as_str()),
        Some("/apis/discovery.k8s.io/v1/endpointslices")
    );
}

#[tokio::test]
async fn watch_sends_added_modified_deleted_with_kind() {
    let kube = KubeApi::start();
    let client = kube.client().await;
    let ar = ApiResource::erase::<Service>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let rv = kube.resource_version().to_string();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();

    kube.apply(service("web", json!({"app": "web"})));
    let mut changed = service("web", json!({"app": "web"}));
    changed["spec"]["ports"][0]["port"] = json!(8080);
    kube.apply(changed);
    kube.delete("v1", "Service", Some("default"), "web");

    let mut rvs = Vec::new();
    for want in ["ADDED", "MODIFIED", "DELETED"] {
        let (got, obj) = match next_event(&mut stream).await {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            other => panic!("expected {want}, got {other:?}"),
        };
        assert_eq!(got, want);
        let types = obj
            .types
            .clone()
            .expect("kind and apiVersion in a watch event");
        assert_eq!(
            (types.kind.as_str(), types.api_version.as_str()),
            ("Service", "v1")
        );
        assert_eq!(obj.name_any(), "web");
        rvs.push(obj.resource_version().unwrap().parse::<u64>().unwrap());
    }
    assert!(
        rvs.windows(2).all(|w| w[0] < w[1]),
        "resourceVersions grow: {rvs:?}"
    );
    assert_eq!(rvs[2], kube.resource_version());
    assert_eq!(kube.watch_count(), 1);

    // Replay: a watch from the first version gets the two later events.
    let mut replay = api
        .watch(&WatchParams::default(), &rvs[0].to_string())
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        next_event(&mut replay).await,
        WatchEvent::Modified(_)
    ));
    assert!(matches!(
        next_event(&mut replay).await,
        WatchEvent::Deleted(_)
    ));

    // A selector watch sees an object leave and enter its selection as
    // DELETED and ADDED.
    let mut selected = api
        .watch(
            &WatchParams::default().labels("app=web"),
            &kube.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    kube.apply(service("web", json!({"app": "web"})));
    kube.apply(service("web", json!({"app": "other"})));
    kube.apply(service("web", json!({"app": "web"})));
    assert!(matches!(
        next_event(&mut selected).await,
        WatchEvent::Added(_)
    ));
    match next_event(&mut selected).await {
        WatchEvent::Deleted(o) => {
            assert_eq!(
                o.labels()["app"],
                "web",
                "DELETED carries the last matching content"
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
    assert!(matches!(
        next_event(&mut selected).await,
        WatchEvent::Added(_)
    ));
}

#[tokio::test]
async fn watch_ends_at_timeout_seconds() {
    let kube = KubeApi::start();
    let api: Api<Service> = Api::default_namespaced(kube.client().await);
    let started = Instant::now();
    let mut stream = api
        .watch(
            &WatchParams::default().timeout(1),
            &kube.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    let end = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the watch ends by itself");
    assert!(end.is_none(), "clean end of stream, got {end:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
    kube.wait_watches_async(0, WAIT).await;
    assert_eq!(kube.watch_count(), 0);
}

#[tokio::test]
async fn watcher_resumes_after_disconnect_without_relisting() {
    let kube = KubeApi::start();
    kube.apply(service("a", json!({})));
    let api: Api<Service> = Api::default_namespaced(kube.client().await);
    let mut rx = spawn_watcher(api, watcher::Config::default());
    assert_eq!(lines(&mut rx, 3).await, ["Init", "InitApply a", "InitDone"]);
    kube.wait_watches_async(1, WAIT).await;

    for round in 0..3 {
        kube.disconnect_watches();
        assert_eq!(kube.watch_count(), 0);
        kube.wait_watches_async(1, WAIT).await;
        let name = format!("after-{round}");
        kube.apply(service(&name, json!({})));
        let line = next_line(&mut rx).await;
        assert_eq!(line, format!("Apply {name}"), "round {round}");
    }

    let requests = kube.requests();
    let lists = requests.iter().filter(|r| r.verb == "list").count();
    let watches: Vec<_> = requests.iter().filter(|r| r.verb == "watch").collect();
    assert_eq!(lists, 1, "no re-list after a plain disconnect");
    assert_eq!(watches.len(), 4);
    // Each resumed watch starts from a version the client had seen.
    assert!(
        watches
            .iter()
            .all(|w| w.param("resourceVersion").is_some_and(|v| v != "0"))
    );
}

#[tokio::test]
async fn compaction_makes_the_watcher_relist() {
    let kube = KubeApi::start();
    kube.apply(service("a", json!({"app": "x"})));
    let api: Api<Service> = Api::default_namespaced(kube.client().await);
    let mut rx = spawn_watcher(api, watcher::Config::default().labels("app=x"));
    assert_eq!(lines(&mut rx, 3).await, ["Init", "InitApply a", "InitDone"]);
    kube.wait_watches_async(1, WAIT).await;

    // A write the watcher does not select moves the version past what it has
    // seen; compaction then expires its version.
    kube.apply(service("unselected", json!({"app": "y"})));
    kube.apply(service("b", json!({"app": "x"})));
    assert_eq!(next_line(&mut rx).await, "Apply b");
    kube.apply(service("unselected", json!({"app": "z"})));
    kube.compact();
    kube.disconnect_watches();

    let err = next_line(&mut rx).await;
    assert!(err.starts_with("Err") && err.contains("Expired"), "{err}");
    assert_eq!(
        lines(&mut rx, 4).await,
        ["Init", "InitApply a", "InitApply b", "InitDone"]
    );
    kube.wait_watches_async(1, WAIT).await;
    kube.apply(service("c", json!({"app": "x"})));
    assert_eq!(next_line(&mut rx).await, "Apply c");

    let watches: Vec<_> = kube
        .requests()
        .into_iter()
        .filter(|r| r.verb == "watch")
        .collect();
    assert_eq!(watches.len(), 3);
    assert!(watches.iter().all(|w| w.code == 200));
    assert_eq!(
        kube.requests().iter().filter(|r| r.verb == "list").count(),
        2
    );
}

#[tokio::test]
async fn streaming_list_watcher() {
    let kube = KubeApi::start();
    kube.apply(service("a", json!({})));
    kube.apply(service("b", json!({})));
    let api: Api<Service> = Api::default_namespaced(kube.client().await);
    let mut rx = spawn_watcher(api, watcher::Config::default().streaming_lists());
    assert_eq!(
        lines(&mut rx, 4).await,
        ["Init", "InitApply a", "InitApply b", "InitDone"]
    );
    kube.apply(service("c", json!({})));
    assert_eq!(next_line(&mut rx).await, "Apply c");
    let first = &kube.requests()[0];
    assert_eq!(first.verb, "watch");
    assert_eq!(first.param("sendInitialEvents"), Some("true"));
}

#[tokio::test]
async fn bookmarks_on_request_and_on_a_timer() {
    let kube = KubeApi::start();
    let api: Api<Service> = Api::default_namespaced(kube.client().await);
    let rv = kube.resource_version().to_string();
    let mut with = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let mut without = api
        .watch(&WatchParams::default().disable_bookmarks(), &rv)
        .await
        .unwrap()
        .boxed();
    kube.wait_watches_async(2, WAIT).await;

    kube.apply(service("a", json!({})));
    kube.bookmark();
    assert!(matches!(next_event(&mut with).await, WatchEvent::Added(_)));
    match next_event(&mut with).await {
        WatchEvent::Bookmark(b) => {
            assert_eq!(
                b.metadata.resource_version,
                kube.resource_version().to_string()
            );
            assert_eq!(
                (b.types.kind.as_str(), b.types.api_version.as_str()),
                ("Service", "v1")
            );
        }
        other => panic!("expected BOOKMARK, got {other:?}"),
    }
    kube.apply(service("b", json!({})));
    assert!(matches!(
        next_event(&mut without).await,
        WatchEvent::Added(_)
    ));
    assert!(
        matches!(next_event(&mut without).await, WatchEvent::Added(_)),
        "no BOOKMARK without allowWatchBookmarks"
    );
    assert!(matches!(next_event(&mut with).await, WatchEvent::Added(_)));

    kube.set_bookmark_interval(Some(Duration::from_millis(100)));
    assert!(matches!(
        next_event(&mut with).await,
        WatchEvent::Bookmark(_)
    ));
    assert!(matches!(
        next_event(&mut with).await,
        WatchEvent::Bookmark(_)
    ));
}

#[tokio::test]
async fn leases_create_get_and_optimistic_concurrency() {
    let kube = KubeApi::start();
    let leases: Api<Lease> = Api::namespaced(kube.client().await, "kube-system");

    let status = api_error(leases.get("xlb-leader").await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        status.message,
        r#"leases.coordination.k8s.io "xlb-leader" not found"#
    );
    let details = status.details.unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("xlb-leader", "coordination.k8s.io", "leases")
    );

    let lease: Lease = serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "xlb-leader"},
        "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 15},
    }))
    .unwrap();
    let created = leases.create(&PostParams::default(), &lease).await.unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.is_some() && meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.namespace.as_deref(), Some("kube-system"));
    assert_eq!(
        meta.resource_version,
        Some(kube.resource_version().to_string())
    );

    let status = api_error(leases.create(&PostParams::default(), &lease).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );

    let mut renewed = created.clone();
    renewed.spec.as_mut().unwrap().holder_identity = Some("node-b".into());
    let renewed = leases
        .replace("xlb-leader", &PostParams::default(), &renewed)
        .await
        .unwrap();
    assert_ne!(renewed.resource_version(), created.resource_version());
    assert_eq!(renewed.uid(), created.uid());

    // The stale copy loses.
    let mut stale = created.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some("node-c".into());
    let status = api_error(
        leases
            .replace("xlb-leader", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("the object has been modified"),
        "{status:?}"
    );
    let now = leases.get("xlb-leader").await.unwrap();
    assert_eq!(now.spec.unwrap().holder_identity.as_deref(), Some("node-b"));

    // An unchanged replace writes nothing.
    let rv = kube.resource_version();
    leases
        .replace("xlb-leader", &PostParams::default(), &renewed)
        .await
        .unwrap();
    assert_eq!(kube.resource_version(), rv);

    let deleted = leases
        .delete("xlb-leader", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        deleted.is_right(),
        "a Lease delete answers with a Success Status"
    );
    assert!(
        kube.get(
            "coordination.k8s.io/v1",
            "Lease",
            Some("kube-system"),
            "xlb-leader"
        )
        .is_none()
    );
}

#[tokio::test]
async fn service_status_subresource() {
    let kube = KubeApi::start();
    let services: Api<Service> = Api::default_namespaced(kube.client().await);
    let mut body: Service = serde_json::from_value(service("web", json!({"app": "web"}))).unwrap();
    body.status =
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "192.0.2.99"}]}}))
            .unwrap();
    let created = services
        .create(&PostParams::default(), &body)
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&created.status).unwrap(),
        json!({"loadBalancer": {}}),
        "a create resets a Service's status"
    );

    let patch = json!({
        "spec": {"type": "NodePort"},
        "metadata": {"labels": {"patched": "yes"}},
        "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}},
    });
    let patched = services
        .patch_status("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(
        patched.spec.as_ref().unwrap().type_.as_deref(),
        Some("LoadBalancer")
    );
    assert_eq!(patched.labels().get("patched"), None);
    assert_eq!(patched.metadata.generation, created.metadata.generation);
    let ingress = &patched
        .status
        .as_ref()
        .unwrap()
        .load_balancer
        .as_ref()
        .unwrap()
        .ingress;
    assert_eq!(
        ingress.as_ref().unwrap()[0].ip.as_deref(),
        Some("192.0.2.10")
    );
    assert_ne!(patched.resource_version(), created.resource_version());

    // Main-resource writes keep the status; a spec change moves generation.
    let mut replaced = patched.clone();
    replaced.spec.as_mut().unwrap().type_ = Some("NodePort".into());
    replaced.status = None;
    let replaced = services
        .replace("web", &PostParams::default(), &replaced)
        .await
        .unwrap();
    assert_eq!(replaced.status, patched.status);
    assert_eq!(replaced.metadata.generation, Some(2));
    let strategic = services
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"x": "y"}}, "status": null})),
        )
        .await
        .unwrap();
    assert_eq!(strategic.labels()["x"], "y");
    assert_eq!(strategic.status, patched.status);

    // PUT on status, stale resourceVersion first.
    let mut stale = created.clone();
    stale.status = None;
    let status = api_error(
        services
            .replace_status("web", &PostParams::default(), &stale)
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    let mut cleared = strategic.clone();
    cleared.status = serde_json::from_value(json!({"loadBalancer": {}})).unwrap();
    let cleared = services
        .replace_status("web", &PostParams::default(), &cleared)
        .await
        .unwrap();
    assert_eq!(cleared.status.unwrap().load_balancer.unwrap().ingress, None);

    let status = api_error(
        services
            .patch("web", &PatchParams::apply("xlb"), &Patch::Apply(json!({})))
            .await,
    );
    assert_eq!(status.code, 415);

    let deleted = services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(deleted.left().map(|s| s.name_any()).as_deref(), Some("web"));
}

#[tokio::test]
async fn events_core_and_events_k8s_io() {
    let kube = KubeApi::start();
    let client = kube.client().await;
    let events: Api<CoreEvent> = Api::default_namespaced(client.clone());
    let event: CoreEvent = serde_json::from_value(json!({
        "metadata": {"generateName": "web."},
        "involvedObject": {"apiVersion": "v1", "kind": "Service", "name": "web", "namespace": "default"},
        "reason": "VipAssigned", "message": "192.0.2.10", "type": "Normal",
    }))
    .unwrap();
    let created = events.create(&PostParams::default(), &event).await.unwrap();
    assert!(created.name_any().starts_with("web.") && created.name_any().len() == 9);

    // kube's Recorder: a create, then a merge patch for the repeat.
    let recorder = events::Recorder::new(
        client,
        events::Reporter {
            controller: "xlb".into(),
            instance: Some("node-a".into()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Service".into()),
        name: Some("web".into()),
        namespace: Some("default".into()),
        ..ObjectReference::default()
    };
    let ev = events::Event {
        type_: events::EventType::Normal,
        reason: "VipAssigned".into(),
        note: Some("192.0.2.10".into()),
        action: "Assign".into(),
        secondary: None,
    };
    recorder.publish(&ev, &reference).await.unwrap();
    recorder.publish(&ev, &reference).await.unwrap();
    let stored = kube.list("events.k8s.io/v1", "Event");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["series"]["count"], 2);
    let calls: Vec<_> = verbs(&kube)
        .into_iter()
        .map(|(verb, group, ..)| (verb, group))
        .collect();
    assert_eq!(
        calls,
        [
            ("create".into(), String::new()),
            ("create".into(), "events.k8s.io".into()),
            ("patch".into(), "events.k8s.io".into()),
        ]
    );
}

#[tokio::test]
async fn unavailable_answers_503_and_cuts_watches() {
    let kube = KubeApi::start();
    kube.apply(service("a", json!({})));
    let fail_fast: Api<Service> = Api::default_namespaced(no_retry_client(&kube).await);
    let retrying: Api<Service> = Api::default_namespaced(kube.client().await);
    let mut rx = spawn_watcher(retrying.clone(), watcher::Config::default());
    assert_eq!(lines(&mut rx, 3).await, ["Init", "InitApply a", "InitDone"]);
    kube.wait_watches_async(1, WAIT).await;

    kube.set_unavailable(true);
    assert_eq!(kube.watch_count(), 0, "watches are cut");
    let status = api_error(fail_fast.list(&ListParams::default()).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (503, "ServiceUnavailable")
    );
    let status = api_error(fail_fast.get("a").await);
    assert_eq!(status.code, 503);
    assert_eq!(kube.requests().last().unwrap().code, 503);

    // kube's default client retries 503 itself: a call made now succeeds
    // once the server is back, and the watcher, which missed a write and a
    // compaction, re-lists.
    kube.apply(service("b", json!({})));
    kube.compact();
    let pending = tokio::spawn(async move { retrying.get("a").await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished());
    kube.set_unavailable(false);
    let got = tokio::time::timeout(WAIT, pending)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.name_any(), "a");
    fail_fast.list(&ListParams::default()).await.unwrap();

    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("InitDone") {
        seen.push(next_line(&mut rx).await);
    }
    let tail = &seen[seen.len() - 4..];
    assert_eq!(
        tail,
        ["Init", "InitApply a", "InitApply b", "InitDone"],
        "{seen:?}"
    );
    assert!(
        seen[..seen.len() - 4].iter().all(|l| l.starts_with("Err")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn requests_are_recorded_in_rbac_terms() {
    let kube = KubeApi::start();
    kube.apply(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-1"}}));
    let client = kube.client().await;
    let services: Api<Service> = Api::default_namespaced(client.clone());
    let slices: Api<EndpointSlice> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let nodes: Api<Node> = Api::all(client);

    let body: Service = serde_json::from_value(service("web", json!({}))).unwrap();
    services
        .create(&PostParams::default(), &body)
        .await
        .unwrap();
    services.get("web").await.unwrap();
    services.list(&ListParams::default()).await.unwrap();
    let stream = services.watch(&WatchParams::default(), "0").await.unwrap();
    drop(stream);
    services
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {}})),
        )
        .await
        .unwrap();
    let status = services.get_status("web").await.unwrap();
    services
        .replace_status("web", &PostParams::default(), &status)
        .await
        .unwrap();
    slices.list(&ListParams::default()).await.unwrap();
    let _ = slices.watch(&WatchParams::default(), "0").await.unwrap();
    let _ = leases.get("xlb").await;
    nodes.get("node-1").await.unwrap();
    services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();

    let d = Some("default");
    assert_eq!(
        verbs(&kube),
        [
            rbac("create", "", "services", d, None),
            rbac("get", "", "services", d, Some("web")),
            rbac("list", "", "services", d, None),
            rbac("watch", "", "services", d, None),
            rbac("patch", "", "services/status", d, Some("web")),
            rbac("get", "", "services/status", d, Some("web")),
            rbac("update", "", "services/status", d, Some("web")),
            rbac("list", "discovery.k8s.io", "endpointslices", None, None),
            rbac("watch", "discovery.k8s.io", "endpointslices", None, None),
            rbac(
                "get",
                "coordination.k8s.io",
                "leases",
                Some("kube-system"),
                Some("xlb")
            ),
            rbac("get", "", "nodes", None, Some("node-1")),
            rbac("delete", "", "services", d, Some("web")),
        ]
    );
    let codes: Vec<u16> = kube.requests().iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [201, 200, 200, 200, 200, 200, 200, 200, 200, 404, 200, 200]
    );
    let patch = &kube.requests()[4];
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(patch.method, "PATCH");
}

#[tokio::test]
async fn kubeconfig_file_is_accepted_by_kube() {
    let kube = KubeApi::start();
    let path = std::env::temp_dir().join(format!(
        "xlb-kube-api-{}-{}.yaml",
        std::process::id(),
        kube.addr().port()
    ));
    kube.write_kubeconfig(&path);
    let kubeconfig =
        kube::config::Kubeconfig::read_from(&path).expect("kube reads the kubeconfig file");
    let _ = std::fs::remove_file(&path);
    assert_eq!(kubeconfig.current_context.as_deref(), Some("xlb-test"));
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        config.cluster_url.to_string().trim_end_matches('/'),
        kube.url()
    );
    assert_eq!(config.default_namespace, "default");
    let client = Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );
    let services: Api<Service> = Api::default_namespaced(client);
    assert!(
        services
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

// ---------------------------------------------------------------------------
// The wire format, over raw HTTP.

struct Response {
    code: u16,
    headers: Vec<(String, String)>,
    /// The body, or for a chunked one the chunks.
    chunks: Vec<Vec<u8>>,
    /// Whether a chunked body ended with its final chunk.
    complete: bool,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.chunks.concat()).expect("JSON body")
    }
}

fn read_line(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end().to_string()),
    }
}

fn read_response(reader: &mut BufReader<TcpStream>) -> Response {
    let status = read_line(reader).expect("status line");
    let code = status.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    while let Some(h) = read_line(reader).filter(|h| !h.is_empty()) {
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut response = Response {
        code,
        headers,
        chunks: Vec::new(),
        complete: false,
    };
    if response.header("transfer-encoding") == Some("chunked") {
        while let Some(size) = read_line(reader) {
            let size = usize::from_str_radix(&size, 16).unwrap();
            if size == 0 {
                assert_eq!(read_line(reader).as_deref(), Some(""));
                response.complete = true;
                break;
            }
            let mut chunk = vec![0; size + 2];
            if reader.read_exact(&mut chunk).is_err() {
                break;
            }
            chunk.truncate(size);
            response.chunks.push(chunk);
        }
    } else {
        let len: usize = response.header("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();
        response.chunks.push(body);
    }
    response
}

fn connect(kube: &KubeApi) -> (TcpStream, BufReader<TcpStream>) {
    let stream = TcpStream::connect(kube.addr()).unwrap();
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    (stream, reader)
}

fn get_request(kube: &KubeApi, target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\n\r\n",
        kube.addr(),
        kube.token()
    )
}

#[test]
fn wire_list_keep_alive_and_pipelining() {
    let kube = KubeApi::start();
    kube.apply(service("a", json!({"app": "a"})));
    kube.apply(service("b", json!({})));
    let (mut stream, mut reader) = connect(&kube);
    // Two requests written back to back on one connection.
    let both = get_request(&kube, "/api/v1/namespaces/default/services?limit=1")
        + &get_request(&kube, "/api/v1/services?labelSelector=app%3Da");
    stream.write_all(both.as_bytes()).unwrap();
    let first = read_response(&mut reader);
    let second = read_response(&mut reader);
    assert_eq!((first.code, second.code), (200, 200));
    assert_eq!(first.header("content-type"), Some("application/json"));
    let list = first.json();
    assert_eq!(
        (list["kind"].as_str(), list["apiVersion"].as_str()),
        (Some("ServiceList"), Some("v1"))
    );
    assert_eq!(
        list["metadata"]["resourceVersion"],
        json!(kube.resource_version().to_string())
    );
    assert!(list["metadata"]["continue"].is_string());
    let item = &list["items"][0];
    assert_eq!(item["metadata"]["name"], "a");
    assert!(
        item.get("kind").is_none() && item.get("apiVersion").is_none(),
        "list items carry no kind: {item}"
    );
    assert_eq!(second.json()["items"].as_array().unwrap().len(), 1);

    // No token: 401 Status.
    stream
        .write_all(
            format!(
                "GET /api/v1/nodes HTTP/1.1\r\nHost: {}\r\n\r\n",
                kube.addr()
            )
            .as_bytes(),
        )
        .unwrap();
    let unauthorized = read_response(&mut reader);
    assert_eq!(unauthorized.code, 401);
    assert_eq!(unauthorized.json()["reason"], "Unauthorized");

    // A body with Content-Length on the same connection.
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"}, "spec": {}})
        .to_string();
    stream
        .write_all(
            format!(
                "POST /apis/coordination.k8s.io/v1/namespaces/kube-system/leases HTTP/1.1\r\nHost: {}\r\n\
                 Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{lease}",
                kube.addr(),
                kube.token(),
                lease.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let created = read_response(&mut reader);
    assert_eq!(created.code, 201);
    let created = created.json();
    assert_eq!(created["kind"], "Lease");
    let stamp = created["metadata"]["creationTimestamp"].as_str().unwrap();
    assert!(
        stamp.len() == 20 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T',
        "{stamp}"
    );

    // A chunked request body.
    let mut renewed = created.clone();
    renewed["spec"]["holderIdentity"] = json!("node-a");
    let renewed = renewed.to_string();
    let (head, tail) = renewed.split_at(renewed.len() / 2);
    stream
        .write_all(
            format!(
                "PUT /apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l HTTP/1.1\r\nHost: {}\r\n\
                 Authorization: Bearer {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n\
                 {:x}\r\n{head}\r\n{:x}\r\n{tail}\r\n0\r\n\r\n",
                kube.addr(),
                kube.token(),
                head.len(),
                tail.len()
            )
            .as_bytes(),
        )
        .unwrap();
    let replaced = read_response(&mut reader);
    assert_eq!(replaced.code, 200);
    assert_eq!(replaced.json()["spec"]["holderIdentity"], "node-a");

    // 404 exactly as the real server words it.
    stream
        .write_all(
            get_request(
                &kube,
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/x",
            )
            .as_bytes(),
        )
        .unwrap();
    let missing = read_response(&mut reader);
    assert_eq!(missing.code, 404);
    assert_eq!(
        missing.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "leases.coordination.k8s.io \"x\" not found", "reason": "NotFound",
            "details": {"name": "x", "group": "coordination.k8s.io", "kind": "leases"}, "code": 404})
    );
}

#[test]
fn wire_watch_chunks_timeout_and_expiry() {
    let kube = KubeApi::start();
    kube.apply(service("a", json!({})));
    let old = kube.resource_version();
    let (mut stream, mut reader) = connect(&kube);
    stream
        .write_all(
            get_request(
                &kube,
                "/api/v1/namespaces/default/services?watch=1&resourceVersion=0&allowWatchBookmarks=true&timeoutSeconds=1",
            )
            .as_bytes(),
        )
        .unwrap();
    kube.wait_watches(1, WAIT);
    kube.apply(service("b", json!({})));
    kube.bookmark();
    let watch = read_response(&mut reader);
    assert_eq!(watch.code, 200);
    assert_eq!(watch.header("transfer-encoding"), Some("chunked"));
    assert_eq!(watch.header("content-type"), Some("application/json"));
    assert!(
        watch.complete,
        "a watch ends with the final chunk at timeoutSeconds"
    );
    let events: Vec<Value> = watch
        .chunks
        .iter()
        .map(|c| {
            assert_eq!(c.last(), Some(&b'\n'), "one event per line");
            serde_json::from_slice(c).unwrap()
        })
        .collect();
    let types: Vec<_> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "ADDED", "BOOKMARK"]);
    assert_eq!(events[1]["object"]["kind"], "Service");
    assert_eq!(events[1]["object"]["apiVersion"], "v1");
    assert_eq!(
        events[2]["object"],
        json!({"kind": "Service", "apiVersion": "v1", "metadata": {"resourceVersion": kube.resource_version().to_string()}})
    );

    // The connection is kept after a watch; a watch from before compaction
    // gets the 410 ERROR event and ends.
    kube.apply(service("c", json!({})));
    kube.compact();
    let floor = kube.resource_version();
    stream
        .write_all(
            get_request(
                &kube,
                &format!("/api/v1/namespaces/default/services?watch=true&resourceVersion={old}"),
            )
            .as_bytes(),
        )
        .unwrap();
    let expired = read_response(&mut reader);
    assert_eq!(expired.code, 200);
    assert!(expired.complete);
    assert_eq!(expired.chunks.len(), 1);
    let event: Value = serde_json::from_slice(&expired.chunks[0]).unwrap();
    assert_eq!(
        event,
        json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": format!("too old resource version: {old} ({floor})"),
            "reason": "Expired", "code": 410}})
    );

    // disconnect_watches closes mid-stream: no final chunk.
    stream
        .write_all(
            get_request(
                &kube,
                &format!("/api/v1/services?watch=true&resourceVersion={floor}"),
            )
            .as_bytes(),
        )
        .unwrap();
    kube.wait_watches(1, WAIT);
    kube.apply(service("d", json!({})));
    kube.disconnect_watches();
    let cut = read_response(&mut reader);
    assert!(!cut.complete, "no final chunk after a disconnect");
    assert_eq!(cut.chunks.len(), 1);
    assert!(read_line(&mut reader).is_none(), "connection closed");
}

#[test]
fn drop_stops_the_server() {
    let kube = KubeApi::start();
    let addr = kube.addr();
    let (mut stream, mut reader) = connect(&kube);
    stream
        .write_all(get_request(&kube, "/api/v1/services?watch=true").as_bytes())
        .unwrap();
    kube.wait_watches(1, WAIT);
    let started = Instant::now();
    drop(kube);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "drop took {:?}",
        started.elapsed()
    );
    let watch = read_response(&mut reader);
    assert!(!watch.complete);
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens after drop"
    );
}
