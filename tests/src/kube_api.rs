//! A Kubernetes API server for tests, speaking the real protocol over real
//! HTTP, so the daemon's Kubernetes source (kube-rs) can be pointed at it
//! through an ordinary kubeconfig.
//!
//! [`KubeApi::start`] binds `127.0.0.1:0` and serves plain HTTP/1.1 on std
//! threads (one per connection), so it works from sync tests and from
//! `#[tokio::test]` alike; dropping the value stops it and closes every
//! connection. For a daemon in another network namespace, start it there:
//! `ns.run(KubeApi::start)` (see [`KubeApi::serve`]).
//!
//! # What it implements
//!
//! - HTTP/1.1 with keep-alive and pipelining (requests on one connection are
//!   answered in order), `Content-Length` and chunked request bodies,
//!   `Expect: 100-continue`, JSON responses (`Content-Type:
//!   application/json`), watch responses with `Transfer-Encoding: chunked`.
//!   Every request needs the kubeconfig's bearer token (401 otherwise).
//! - Resources, with the URL layout of the real server: core/v1 `services`
//!   (with `status`), `pods` (with `status`), `events` and `nodes`
//!   (cluster-scoped, with `status`); `discovery.k8s.io/v1` `endpointslices`;
//!   `coordination.k8s.io/v1` `leases`; `events.k8s.io/v1` `events` (kept apart
//!   from core/v1 `events`, which the real server stores as one). Namespaced
//!   resources are also listed and watched cluster-wide
//!   (`/api/v1/services`). `GET /version` answers as a v1.33 server.
//! - Verbs: get, list, watch, create (POST), update (PUT), patch (PATCH),
//!   delete. Creates assign `uid`, `creationTimestamp` (RFC 3339, UTC),
//!   `generation` 1 and `resourceVersion`, honour `generateName`, and answer
//!   409 `AlreadyExists` for a taken name; a create of a Service resets its
//!   status to `{"loadBalancer":{}}`, as its strategy does, and of a Pod to
//!   `{"phase":"Pending"}` (the real one also sets `qosClass`). PUT (and
//!   PATCH) with a `metadata.resourceVersion` other than the stored one
//!   answer 409 `Conflict`; a missing object is 404
//!   `NotFound`; both are `Status` objects shaped as the real server's. Writes
//!   to a `status` subresource change only `status`; main-resource writes of
//!   a resource that has one keep the stored status. `generation` grows when
//!   anything outside `metadata` and `status` changes. A write that changes
//!   nothing is a no-op (no new resourceVersion, no event), as in the real
//!   server. DELETE of a Service answers with the deleted object, of anything
//!   else with a `Success` Status (genericregistry's `ReturnDeletedObject`);
//!   `preconditions` in the DeleteOptions body are honoured.
//! - PATCH with `application/merge-patch+json` (RFC 7386), and
//!   `application/strategic-merge-patch+json` treated as a merge patch; other
//!   patch types (JSON patch, server-side apply) answer 415.
//! - One global resourceVersion counter, bumped by every write and reported
//!   as a string. List pages (`limit`/`continue`) are served from a
//!   consistent snapshot at the first page's resourceVersion, rebuilt from
//!   the history log; `resourceVersionMatch=Exact` serves that snapshot too,
//!   and any other `resourceVersion` serves the current state. List items
//!   carry no `kind`/`apiVersion` (the real server omits them; the list
//!   itself has them).
//! - Selectors: `labelSelector` with `key`, `!key`, `key=value`,
//!   `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, joined by
//!   commas; `fieldSelector` with `=`, `==`, `!=` on `metadata.name` and
//!   `metadata.namespace` (other fields answer 400).
//! - Watch (`watch=true|1`): events after `resourceVersion=N` are replayed
//!   from the history log, then live ones streamed; `resourceVersion` unset
//!   or `0` starts with synthetic ADDED events for the current state;
//!   `sendInitialEvents=true` (streaming lists) ends those with the
//!   `k8s.io/initial-events-end` BOOKMARK. Objects in events carry `kind`
//!   and `apiVersion`. An object that stops (starts) matching a selector is
//!   sent as DELETED (ADDED), as the real watch cache does. A watch from a
//!   version older than the compaction floor gets one ERROR event holding a
//!   410 `Expired` Status (`too old resource version: N (M)`) and the stream
//!   ends, as in the real server (an HTTP 200 with the error inside).
//!   BOOKMARK events, on request, carry kind, apiVersion and
//!   `metadata.resourceVersion` only. The stream ends cleanly (final chunk,
//!   connection kept) at `timeoutSeconds` (1800 s when unset).
//! - Test-side controls: [`KubeApi::apply`] / [`KubeApi::delete`] /
//!   [`KubeApi::get`] / [`KubeApi::list`] on the store (same events as API
//!   writes), [`KubeApi::bookmark`] and a periodic bookmark,
//!   [`KubeApi::disconnect_watches`] (connections closed mid-stream, no final
//!   chunk), [`KubeApi::compact`] (old watch versions and continue tokens
//!   expire), [`KubeApi::set_unavailable`] (503 for everything, watches
//!   cut), [`KubeApi::set_namespace_missing`] (creates there are a 404, as
//!   for a namespace that does not exist), [`KubeApi::requests`] (every request with its RBAC verb, group,
//!   resource and namespace) and [`KubeApi::wait_watches`].
//!
//! # What it leaves out
//!
//! No defaulting or validation of object contents (a Service gets no
//! clusterIP, ports no protocol), no `managedFields`, no server-side apply,
//! JSON patch or true strategic merge (lists are replaced, not merged by
//! key), no `dryRun`, no `deletecollection`, no finalizers or graceful
//! deletion, no admission, no discovery documents (`/api`, `/apis`), no
//! protobuf, no TLS, no HTTP/2, no table output. A watch from a
//! resourceVersion newer than the current one starts from now instead of
//! waiting. Only the resources listed above exist.
//!
//! # Retries in kube's client
//!
//! kube 5's default client retries 429, 503 and 504 itself (15 times, with
//! exponential backoff from 5 ms: minutes in all): with
//! [`KubeApi::set_unavailable`] a call made through such a client fails only
//! after those retries, and succeeds if the server comes back in the
//! meantime. Build the client from a [`kube::Config`] with `default_retry =
//! false` (see [`KubeApi::config`]) to see the 503 at once.

use std::{
    collections::{BTreeMap, BTreeSet, hash_map::RandomState},
    hash::{BuildHasher as _, Hasher as _},
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    ops::Bound,
    path::Path,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        mpsc::{self, Receiver, RecvTimeoutError, Sender},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};

/// How long a watch stream lasts when the client gives no `timeoutSeconds`
/// (the real server picks between 30 and 60 minutes).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// How often an idle watch checks whether its client has gone, so
/// [`KubeApi::watch_count`] drops soon after a client drops its stream.
const WATCH_POLL: Duration = Duration::from_millis(50);

/// How often the accept loop looks for new connections and for `stopping`.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// A request head or body larger than this is refused (400).
const MAX_REQUEST_BYTES: u64 = 16 << 20;

/// One resource the server knows: where it lives and which strategy quirks
/// of the real registry it copies.
#[derive(Debug)]
struct Resource {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    /// Has a `status` subresource.
    status: bool,
    /// What a create through the API sets `status` to (the strategy's
    /// `PrepareForCreate`), as JSON text.
    created_status: Option<&'static str>,
    /// DELETE answers with the deleted object rather than a `Success` Status.
    delete_returns_object: bool,
}

const RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        namespaced: true,
        status: true,
        created_status: Some(r#"{"loadBalancer":{}}"#),
        delete_returns_object: true,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        namespaced: true,
        status: true,
        created_status: Some(r#"{"phase":"Pending"}"#),
        delete_returns_object: true,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        namespaced: false,
        status: true,
        created_status: None,
        delete_returns_object: false,
    },
    Resource {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        status: false,
        created_status: None,
        delete_returns_object: false,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        namespaced: true,
        status: false,
        created_status: None,
        delete_returns_object: false,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        namespaced: true,
        status: false,
        created_status: None,
        delete_returns_object: false,
    },
    Resource {
        group: "events.k8s.io",
        version: "v1",
        kind: "Event",
        plural: "events",
        namespaced: true,
        status: false,
        created_status: None,
        delete_returns_object: false,
    },
];

impl Resource {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `services`, `leases.coordination.k8s.io`: how the real server names
    /// the resource in error messages.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    fn details(&self, name: &str) -> Value {
        let mut d = json!({"name": name, "kind": self.plural});
        if !self.group.is_empty() {
            d["group"] = json!(self.group);
        }
        d
    }
}

fn resource_index(api_version: &str, kind: &str) -> usize {
    RESOURCES
        .iter()
        .position(|r| r.api_version() == api_version && r.kind == kind)
        .unwrap_or_else(|| {
            panic!(
                "kube_api: no resource {api_version} {kind}; the fake server knows {RESOURCES:?}"
            )
        })
}

/// One request as the server saw it, in the terms of an RBAC rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path, percent-decoded, without the query.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// get, list, watch, create, update, patch, delete, deletecollection; for
    /// a path that is no resource (`/version`), the lowercased method.
    pub verb: String,
    /// API group, `""` for core.
    pub group: String,
    pub version: String,
    /// Plural resource, with the subresource as `services/status`; empty for
    /// a path that is no resource.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub content_type: Option<String>,
    pub body: String,
    /// The HTTP status answered (200 for a watch that started).
    pub code: u16,
}

impl Request {
    /// The first query parameter of that name.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// `(resource index, namespace or "", name)`.
type Key = (usize, String, String);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One write, kept in the history log for watch replay and list snapshots.
#[derive(Debug)]
struct Change {
    rv: u64,
    key: Key,
    kind: ChangeKind,
    /// The object after the write; for a delete, its last state carrying the
    /// delete's resourceVersion.
    object: Value,
    /// The object before the write.
    prev: Option<Value>,
}

enum WatchMsg {
    Line(String),
    /// End the stream cleanly (final chunk) and keep the connection.
    End,
    /// Close the connection mid-stream.
    Cut,
}

struct Watch {
    filter: Filter,
    bookmarks: bool,
    tx: Sender<WatchMsg>,
    /// The response head is written: the client holds an open stream.
    /// Only these count as open watches.
    streaming: bool,
}

struct State {
    rv: u64,
    /// Watches from a version below this, and continue tokens of a snapshot
    /// below it, have expired.
    floor: u64,
    objects: BTreeMap<Key, Value>,
    /// Every write after `floor`, oldest first.
    history: Vec<Change>,
    watches: BTreeMap<u64, Watch>,
    conns: BTreeMap<u64, TcpStream>,
    next_id: u64,
    requests: Vec<Request>,
    unavailable: bool,
    /// Namespaces that do not exist: creating in one is a 404.
    missing_namespaces: BTreeSet<String>,
    bookmark_every: Option<Duration>,
    stopping: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the set of open watches changes.
    watches_changed: Condvar,
    token: String,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mark_streaming(&self, id: u64) {
        if let Some(w) = self.lock().watches.get_mut(&id) {
            w.streaming = true;
        }
        self.watches_changed.notify_all();
    }

    fn unregister(&self, id: u64) {
        let removed = self.lock().watches.remove(&id).is_some();
        if removed {
            self.watches_changed.notify_all();
        }
    }
}

/// The fake API server; see the module docs. Stopped on drop.
pub struct KubeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl KubeApi {
    /// Binds 127.0.0.1 on a free port and serves on background threads.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("kube_api: bind 127.0.0.1:0: {e}"));
        Self::serve(listener)
    }

    /// Serves on a listener bound by the caller. For a daemon in a network
    /// namespace, the listener must be made inside that namespace (a socket
    /// stays in the namespace it was made in): `ns.run(KubeApi::start)`, or
    /// `KubeApi::serve(ns.run(|| TcpListener::bind(addr).unwrap()))`.
    /// [`Self::url`] and the kubeconfig then name an address only that
    /// namespace reaches; the control methods work from anywhere, and drop
    /// needs no connection to stop the server.
    pub fn serve(listener: TcpListener) -> Self {
        let addr = listener.local_addr().expect("kube_api: listener address");
        // Polled, so that drop can stop it without connecting to it (which
        // a listener in another namespace would not allow).
        listener
            .set_nonblocking(true)
            .expect("kube_api: non-blocking listener");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1,
                floor: 1,
                objects: BTreeMap::new(),
                history: Vec::new(),
                watches: BTreeMap::new(),
                conns: BTreeMap::new(),
                next_id: 1,
                requests: Vec::new(),
                unavailable: false,
                missing_namespaces: BTreeSet::new(),
                bookmark_every: None,
                stopping: false,
            }),
            watches_changed: Condvar::new(),
            token: format!("xlb-test-{:016x}", random_u64()),
        });
        let accept_shared = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name("kube-api-accept".into())
            .spawn(move || accept_loop(&listener, &accept_shared))
            .expect("kube_api: spawn the accept thread");
        Self {
            shared,
            addr,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT` (the listener's address).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token every request must carry.
    pub fn token(&self) -> &str {
        &self.shared.token
    }

    /// A kubeconfig: cluster, user (token), context `xlb-test` in namespace
    /// `default`, and current-context.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\n\
             kind: Config\n\
             clusters:\n\
             - name: xlb-test\n  cluster:\n    server: {url}\n\
             users:\n\
             - name: xlb-test\n  user:\n    token: {token}\n\
             contexts:\n\
             - name: xlb-test\n  context:\n    cluster: xlb-test\n    user: xlb-test\n    namespace: default\n\
             current-context: xlb-test\n\
             preferences: {{}}\n",
            url = self.url(),
            token = self.shared.token,
        )
    }

    pub fn write_kubeconfig(&self, path: &Path) {
        std::fs::write(path, self.kubeconfig())
            .unwrap_or_else(|e| panic!("kube_api: write kubeconfig {}: {e}", path.display()));
    }

    /// kube's `Config` from [`Self::kubeconfig`], parsed the way the daemon
    /// parses a kubeconfig file.
    pub async fn config(&self) -> kube::Config {
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&self.kubeconfig())
            .expect("kube_api: kube parses the kubeconfig");
        kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .expect("kube_api: kube builds a Config from the kubeconfig")
    }

    /// A kube client for this server, with kube's defaults (retries on 503).
    pub async fn client(&self) -> kube::Client {
        kube::Client::try_from(self.config().await).expect("kube_api: kube client")
    }

    /// Creates or replaces the object (by apiVersion, kind, namespace and
    /// name; namespace `default` when missing), status included, and returns
    /// it as stored. Watches see ADDED or MODIFIED; an unchanged object is
    /// not written again.
    pub fn apply(&self, obj: Value) -> Value {
        let api_version = obj["apiVersion"].as_str().unwrap_or_default();
        let kind = obj["kind"].as_str().unwrap_or_default();
        let res = resource_index(api_version, kind);
        let r = &RESOURCES[res];
        let name = obj["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| panic!("kube_api: apply of a {kind} without metadata.name"))
            .to_string();
        let ns = if r.namespaced {
            obj["metadata"]["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let mut obj = obj;
        if r.namespaced {
            obj["metadata"]["namespace"] = json!(ns);
        }
        let key = (res, ns, name);
        let mut st = self.shared.lock();
        match st.objects.get(&key) {
            None => stamp_new(&mut obj),
            Some(old) => {
                carry_identity(old, &mut obj);
                if same_content(old, &obj) {
                    return old.clone();
                }
            }
        }
        st.commit(key, Some(obj))
    }

    /// Deletes the object; watches see DELETED. Returns its last state.
    pub fn delete(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let key = store_key(api_version, kind, ns, name);
        let mut st = self.shared.lock();
        st.objects.contains_key(&key).then(|| st.commit(key, None))
    }

    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        ns: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let key = store_key(api_version, kind, ns, name);
        self.shared.lock().objects.get(&key).cloned()
    }

    /// Every object of that kind, ordered by namespace and name.
    pub fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        let res = resource_index(api_version, kind);
        let st = self.shared.lock();
        st.objects
            .iter()
            .filter(|(k, _)| k.0 == res)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// The current (last written) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Sends a BOOKMARK at the current resourceVersion on every open watch
    /// that allowed bookmarks (after the events already queued on it).
    pub fn bookmark(&self) {
        let st = self.shared.lock();
        for w in st.watches.values().filter(|w| w.bookmarks) {
            let _ =
                w.tx.send(WatchMsg::Line(bookmark_line(w.filter.res, st.rv, false)));
        }
    }

    /// With `Some(every)`, each watch that allowed bookmarks gets one every
    /// `every` (off by default; the real server sends one about every
    /// minute).
    pub fn set_bookmark_interval(&self, every: Option<Duration>) {
        self.shared.lock().bookmark_every = every;
    }

    /// Ends every open watch stream abruptly: the connection is closed
    /// mid-stream, without the final chunk, as when an API server restarts.
    pub fn disconnect_watches(&self) {
        cut_watches(&mut self.shared.lock());
        self.shared.watches_changed.notify_all();
    }

    /// Moves the compaction floor to the current resourceVersion: a watch
    /// from an older version gets a 410 `Expired` ERROR event, and a continue
    /// token of an older snapshot a 410. A client that has seen the latest
    /// write is not behind the floor: to make a watcher re-list, let a write
    /// happen that it does not see (a label it does not select, or while
    /// it is cut off), then compact, then disconnect.
    pub fn compact(&self) {
        let mut st = self.shared.lock();
        st.floor = st.rv;
        st.history.clear();
    }

    /// While true, every request is answered 503 (`ServiceUnavailable`) and
    /// open watches are cut, as when the API server is unreachable.
    pub fn set_unavailable(&self, unavailable: bool) {
        let mut st = self.shared.lock();
        st.unavailable = unavailable;
        if unavailable {
            cut_watches(&mut st);
        }
        drop(st);
        self.shared.watches_changed.notify_all();
    }

    /// Makes `namespace` missing (or present again): creating an object in
    /// it is answered as a real API server does, 404 `namespaces "<ns>" not
    /// found` (lists in it are empty, as they are there). Every namespace
    /// exists unless made missing.
    pub fn set_namespace_missing(&self, namespace: &str, missing: bool) {
        let mut st = self.shared.lock();
        if missing {
            st.missing_namespaces.insert(namespace.to_owned());
        } else {
            st.missing_namespaces.remove(namespace);
        }
    }

    /// Every request served so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Watch streams open now (response head sent, stream not ended).
    pub fn watch_count(&self) -> usize {
        self.shared.lock().open_watches()
    }

    /// Blocks until at least `n` watch streams are open; panics after
    /// `timeout`. In a current-thread `#[tokio::test]` this would also block
    /// the client: use [`Self::wait_watches_async`] there.
    pub fn wait_watches(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        while st.open_watches() < n {
            let now = Instant::now();
            assert!(
                now < deadline,
                "kube_api: {} watch streams open after {timeout:?}, waited for {n}",
                st.open_watches()
            );
            st = self
                .shared
                .watches_changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// [`Self::wait_watches`] for async tests: polls without blocking the
    /// runtime.
    pub async fn wait_watches_async(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let open = self.watch_count();
            if open >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube_api: {open} watch streams open after {timeout:?}, waited for {n}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stopping = true;
            cut_watches(&mut st);
            for conn in st.conns.values() {
                let _ = conn.shutdown(Shutdown::Both);
            }
        }
        self.shared.watches_changed.notify_all();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn store_key(api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Key {
    let res = resource_index(api_version, kind);
    let ns = if RESOURCES[res].namespaced {
        ns.unwrap_or("default").to_string()
    } else {
        String::new()
    };
    (res, ns, name.to_string())
}

fn cut_watches(st: &mut State) {
    for w in std::mem::take(&mut st.watches).into_values() {
        let _ = w.tx.send(WatchMsg::Cut);
    }
}

// ---------------------------------------------------------------------------
// The store: writes, snapshots, watch registration.

impl State {
    fn open_watches(&self) -> usize {
        self.watches.values().filter(|w| w.streaming).count()
    }

    /// Writes (or with `None` deletes) the object under a new
    /// resourceVersion, logs the change and sends it to the watches.
    fn commit(&mut self, key: Key, new: Option<Value>) -> Value {
        self.rv += 1;
        let rv = self.rv;
        let prev = self.objects.get(&key).cloned();
        let (kind, object) = match new {
            Some(mut obj) => {
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                self.objects.insert(key.clone(), obj.clone());
                let kind = if prev.is_some() {
                    ChangeKind::Modified
                } else {
                    ChangeKind::Added
                };
                (kind, obj)
            }
            None => {
                let mut obj = self
                    .objects
                    .remove(&key)
                    .expect("kube_api: commit deletes an object that exists");
                obj["metadata"]["resourceVersion"] = json!(rv.to_string());
                (ChangeKind::Deleted, obj)
            }
        };
        let change = Change {
            rv,
            key,
            kind,
            object: object.clone(),
            prev,
        };
        for w in self.watches.values() {
            if let Some(line) = w.filter.event_line(&change) {
                let _ = w.tx.send(WatchMsg::Line(line));
            }
        }
        self.history.push(change);
        object
    }

    /// The objects of a resource as they were at `rv` (which must not be
    /// below the floor), keyed by (namespace, name).
    /// The objects of `res` as they were at `rv`, in key order, after the
    /// key `after`: the live objects, with what the history after `rv`
    /// changed put back. Borrowed, not copied, so a page of a large list
    /// costs its own items, not a copy of every object.
    fn snapshot<'a>(
        &'a self,
        res: usize,
        rv: u64,
        after: Option<&(String, String)>,
    ) -> impl Iterator<Item = ((&'a str, &'a str), &'a Value)> + 'a {
        // Oldest change last: its `prev` is the object as it was at `rv`.
        let mut then: BTreeMap<(&str, &str), Option<&Value>> = BTreeMap::new();
        for change in self.history.iter().rev().take_while(|c| c.rv > rv) {
            if change.key.0 == res {
                then.insert(
                    (change.key.1.as_str(), change.key.2.as_str()),
                    change.prev.as_ref(),
                );
            }
        }
        let after_key =
            |k: &(&str, &str)| after.is_none_or(|(n, m)| (k.0, k.1) > (n.as_str(), m.as_str()));
        let start = match after {
            Some((n, m)) => Bound::Excluded((res, n.clone(), m.clone())),
            None => Bound::Included((res, String::new(), String::new())),
        };
        let end = Bound::Excluded((res + 1, String::new(), String::new()));
        let changed: Vec<((&str, &str), Option<&Value>)> = then
            .iter()
            .filter(|(k, _)| after_key(k))
            .map(|(k, v)| (*k, *v))
            .collect();
        let live = self
            .objects
            .range((start, end))
            .map(|(k, v)| ((k.1.as_str(), k.2.as_str()), Some(v)))
            .filter(move |(k, _)| !then.contains_key(k));
        merge_sorted(live, changed.into_iter()).filter_map(|(k, v)| Some((k, v?)))
    }

    fn get(&self, res: usize, ns: &str, name: &str) -> Answer {
        let r = &RESOURCES[res];
        match self.objects.get(&(res, ns.to_string(), name.to_string())) {
            Some(obj) => Ok((200, obj.clone())),
            None => Err(not_found(r, name)),
        }
    }

    fn list(&self, res: usize, ns: Option<&str>, q: &Query) -> Answer {
        let r = &RESOURCES[res];
        let filter = Filter::parse(res, ns, q)?;
        let limit = match q.get("limit").filter(|l| !l.is_empty()) {
            None => None,
            Some(l) => Some(
                l.parse::<usize>()
                    .map_err(|_| bad_request(format!("invalid limit {l:?}")))?,
            ),
        }
        .filter(|l| *l > 0);
        let (snap_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let (rv, start) = decode_continue(token)
                    .ok_or_else(|| bad_request(format!("continue key is not valid: {token:?}")))?;
                if rv != 0 && rv < self.floor {
                    return Err(continue_expired(&start));
                }
                (if rv == 0 { self.rv } else { rv }, Some(start))
            }
            None => match (q.get("resourceVersionMatch"), q.get("resourceVersion")) {
                (Some("Exact"), Some(v)) => {
                    let n = parse_rv(v)?;
                    if n < self.floor {
                        return Err(failure(
                            410,
                            "Expired",
                            "The resourceVersion for the provided list is too old.",
                            None,
                        ));
                    }
                    (n.min(self.rv), None)
                }
                _ => (self.rv, None),
            },
        };
        let mut matching = self
            .snapshot(res, snap_rv, after.as_ref())
            .filter(|(k, _)| ns.is_none_or(|ns| k.0 == ns))
            .filter(|(_, v)| filter.matches(v));
        let page: Vec<((&str, &str), &Value)> = matching
            .by_ref()
            .take(limit.unwrap_or(usize::MAX))
            .collect();
        let remaining = matching.count();
        let mut metadata = json!({"resourceVersion": snap_rv.to_string()});
        if remaining > 0
            && let Some(((n, m), _)) = page.last()
        {
            metadata["continue"] = json!(encode_continue(
                snap_rv,
                &((*n).to_owned(), (*m).to_owned())
            ));
            if filter.labels.is_empty() && filter.fields.is_empty() {
                metadata["remainingItemCount"] = json!(remaining);
            }
        }
        let items: Vec<Value> = page
            .into_iter()
            .map(|(_, v)| {
                let mut v = v.clone();
                // The real server leaves kind and apiVersion out of list items.
                if let Some(o) = v.as_object_mut() {
                    o.remove("kind");
                    o.remove("apiVersion");
                }
                v
            })
            .collect();
        Ok((
            200,
            json!({
                "kind": format!("{}List", r.kind),
                "apiVersion": r.api_version(),
                "metadata": metadata,
                "items": items,
            }),
        ))
    }

    fn create(&mut self, res: usize, ns: &str, mut body: Value) -> Answer {
        let r = &RESOURCES[res];
        check_body(r, &body, ns)?;
        if r.namespaced && self.missing_namespaces.contains(ns) {
            return Err(failure(
                404,
                "NotFound",
                format!("namespaces \"{ns}\" not found"),
                Some(json!({"name": ns, "kind": "namespaces"})),
            ));
        }
        let meta = &body["metadata"];
        let name = match meta["name"].as_str().filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => match meta["generateName"].as_str().filter(|n| !n.is_empty()) {
                Some(prefix) => format!("{prefix}{}", name_suffix()),
                None => {
                    return Err(failure(
                        422,
                        "Invalid",
                        format!(
                            "{}{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
                            r.kind,
                            group_suffix(r)
                        ),
                        Some(json!({"kind": r.kind, "group": r.group})),
                    ));
                }
            },
        };
        let key = (res, ns.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(failure(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", r.qualified()),
                Some(r.details(&name)),
            ));
        }
        body["kind"] = json!(r.kind);
        body["apiVersion"] = json!(r.api_version());
        body["metadata"]["name"] = json!(name);
        if r.namespaced {
            body["metadata"]["namespace"] = json!(ns);
        }
        stamp_new(&mut body);
        if let Some(status) = r.created_status {
            body["status"] =
                serde_json::from_str(status).expect("kube_api: created_status is JSON");
        }
        Ok((201, self.commit(key, Some(body))))
    }

    /// PUT, and PATCH once the patch is applied: `status_only` for the
    /// `status` subresource.
    fn update(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        mut body: Value,
        status_only: bool,
    ) -> Answer {
        let r = &RESOURCES[res];
        check_body(r, &body, ns)?;
        if let Some(body_name) = body["metadata"]["name"].as_str().filter(|n| !n.is_empty())
            && body_name != name
        {
            return Err(bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let key = (res, ns.to_string(), name.to_string());
        let Some(old) = self.objects.get(&key).cloned() else {
            return Err(not_found(r, name));
        };
        if let Some(rv) = body["metadata"]["resourceVersion"]
            .as_str()
            .filter(|v| !v.is_empty())
            && Some(rv) != old["metadata"]["resourceVersion"].as_str()
        {
            return Err(conflict(r, name));
        }
        let new = if status_only {
            let mut new = old.clone();
            set_or_remove(&mut new, "status", body.get("status").cloned());
            new
        } else {
            body["kind"] = json!(r.kind);
            body["apiVersion"] = json!(r.api_version());
            body["metadata"]["name"] = json!(name);
            if r.namespaced {
                body["metadata"]["namespace"] = json!(ns);
            }
            if r.status {
                set_or_remove(&mut body, "status", old.get("status").cloned());
            }
            carry_identity(&old, &mut body);
            body
        };
        if same_content(&old, &new) {
            return Ok((200, old));
        }
        Ok((200, self.commit(key, Some(new))))
    }

    fn patch(
        &mut self,
        res: usize,
        ns: &str,
        name: &str,
        req: &HttpRequest,
        status_only: bool,
    ) -> Answer {
        let r = &RESOURCES[res];
        let content_type = req.header("content-type").unwrap_or_default();
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if media != "application/merge-patch+json"
            && media != "application/strategic-merge-patch+json"
        {
            return Err(failure(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format - accepted media types include: \
                     application/merge-patch+json, application/strategic-merge-patch+json (got {content_type:?})"
                ),
                None,
            ));
        }
        let patch: Value = serde_json::from_slice(&req.body)
            .map_err(|e| bad_request(format!("error decoding patch: {e}")))?;
        let key = (res, ns.to_string(), name.to_string());
        let Some(mut target) = self.objects.get(&key).cloned() else {
            return Err(not_found(r, name));
        };
        merge_patch(&mut target, &patch);
        self.update(res, ns, name, target, status_only)
    }

    fn delete(&mut self, res: usize, ns: &str, name: &str, body: &[u8]) -> Answer {
        let r = &RESOURCES[res];
        let key = (res, ns.to_string(), name.to_string());
        let Some(old) = self.objects.get(&key) else {
            return Err(not_found(r, name));
        };
        if !body.is_empty() {
            let options: Value = serde_json::from_slice(body)
                .map_err(|e| bad_request(format!("error decoding DeleteOptions: {e}")))?;
            for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                let Some(want) = options["preconditions"][field].as_str() else {
                    continue;
                };
                let have = old["metadata"][field].as_str().unwrap_or_default();
                if want != have {
                    return Err(failure(
                        409,
                        "Conflict",
                        format!(
                            "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: \
                             {label} in precondition: {want}, {label} in object meta: {have}",
                            r.qualified()
                        ),
                        Some(r.details(name)),
                    ));
                }
            }
        }
        let uid = old["metadata"]["uid"].clone();
        let last = self.commit(key, None);
        if r.delete_returns_object {
            return Ok((200, last));
        }
        let mut details = r.details(name);
        details["uid"] = uid;
        Ok((
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
        ))
    }

    /// Registers a watch and queues what it starts with: replayed or
    /// synthetic events, or the 410 ERROR that ends it.
    fn start_watch(
        &mut self,
        res: usize,
        ns: Option<&str>,
        name: Option<&str>,
        q: &Query,
    ) -> Result<WatchStart, Value> {
        let mut filter = Filter::parse(res, ns, q)?;
        if let Some(name) = name {
            filter.fields.push(FieldReq {
                field: "name",
                value: name.to_string(),
                equal: true,
            });
        }
        let bookmarks = q.flag("allowWatchBookmarks");
        let send_initial = q.get("sendInitialEvents").map(parse_bool);
        let timeout = match q.get("timeoutSeconds").filter(|t| !t.is_empty()) {
            None => DEFAULT_WATCH_TIMEOUT,
            Some(t) => Duration::from_secs(
                t.parse()
                    .map_err(|_| bad_request(format!("invalid timeoutSeconds {t:?}")))?,
            ),
        };
        let (tx, rx) = mpsc::channel();
        let rv = q.get("resourceVersion").unwrap_or_default();
        let from_state = rv.is_empty() || rv == "0" || send_initial == Some(true);
        if from_state {
            if send_initial != Some(false) {
                for obj in self
                    .objects
                    .iter()
                    .filter(|(k, _)| k.0 == res)
                    .map(|(_, v)| v)
                {
                    if filter.matches(obj) {
                        let _ = tx.send(WatchMsg::Line(event_line("ADDED", obj)));
                    }
                }
            }
            if send_initial == Some(true) && bookmarks {
                let _ = tx.send(WatchMsg::Line(bookmark_line(res, self.rv, true)));
            }
        } else {
            let n = parse_rv(rv)?;
            if n < self.floor {
                let status = failure(
                    410,
                    "Expired",
                    format!("too old resource version: {n} ({})", self.floor),
                    None,
                );
                let _ = tx.send(WatchMsg::Line(event_line("ERROR", &status)));
                let _ = tx.send(WatchMsg::End);
                return Ok(WatchStart {
                    id: None,
                    rx,
                    timeout,
                    res,
                });
            }
            for change in self.history.iter().filter(|c| c.rv > n) {
                if let Some(line) = filter.event_line(change) {
                    let _ = tx.send(WatchMsg::Line(line));
                }
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.watches.insert(
            id,
            Watch {
                filter,
                bookmarks,
                tx,
                streaming: false,
            },
        );
        Ok(WatchStart {
            id: Some(id),
            rx,
            timeout,
            res,
        })
    }
}

/// Sets what a new object gets on create (apart from resourceVersion).
fn stamp_new(obj: &mut Value) {
    let meta = &mut obj["metadata"];
    meta["uid"] = json!(new_uid());
    meta["creationTimestamp"] = json!(now_rfc3339());
    meta["generation"] = json!(1);
    if let Some(m) = meta.as_object_mut() {
        m.remove("resourceVersion");
    }
}

/// Keeps what a replace cannot change (uid, creationTimestamp) and moves
/// `generation` on when anything outside metadata and status changed.
fn carry_identity(old: &Value, new: &mut Value) {
    for field in ["uid", "creationTimestamp"] {
        new["metadata"][field] = old["metadata"][field].clone();
    }
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(0);
    let spec_changed = {
        let strip = |v: &Value| -> Map<String, Value> {
            let mut m = v.as_object().cloned().unwrap_or_default();
            m.remove("metadata");
            m.remove("status");
            m
        };
        strip(old) != strip(new)
    };
    new["metadata"]["generation"] = json!(if spec_changed {
        generation + 1
    } else {
        generation
    });
}

/// Equal but for the resourceVersion.
fn same_content(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

fn set_or_remove(obj: &mut Value, field: &str, value: Option<Value>) {
    match value {
        Some(v) => obj[field] = v,
        None => {
            if let Some(m) = obj.as_object_mut() {
                m.remove(field);
            }
        }
    }
}

/// The body of a create or replace: a JSON object of this resource's kind
/// whose namespace (if any) is the request's.
fn check_body(r: &Resource, body: &Value, ns: &str) -> Result<(), Value> {
    if !body.is_object() {
        return Err(bad_request("the request body is not a JSON object".into()));
    }
    let kind = body["kind"].as_str().unwrap_or_default();
    let api_version = body["apiVersion"].as_str().unwrap_or_default();
    if (!kind.is_empty() && kind != r.kind)
        || (!api_version.is_empty() && api_version != r.api_version())
    {
        return Err(bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({}) \
             or kind ({kind}) the expected kind ({})",
            r.api_version(),
            r.kind
        )));
    }
    if let Some(body_ns) = body["metadata"]["namespace"]
        .as_str()
        .filter(|n| !n.is_empty())
        && r.namespaced
        && body_ns != ns
    {
        return Err(bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
                .into(),
        ));
    }
    Ok(())
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            target.remove(k);
        } else {
            merge_patch(target.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn parse_rv(v: &str) -> Result<u64, Value> {
    v.parse()
        .map_err(|_| bad_request(format!("invalid resource version {v:?}")))
}

/// Go's strconv.ParseBool, which the real server uses for query flags.
fn parse_bool(v: &str) -> bool {
    matches!(v, "1" | "t" | "T" | "true" | "TRUE" | "True")
}

fn encode_continue(rv: u64, last: &(String, String)) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rv, "start": format!("{}/{}", last.0, last.1)});
    base64url_encode(token.to_string().as_bytes())
}

/// `(snapshot resourceVersion, last key served)`; rv 0 is an inconsistent
/// token handed out with a 410, served at the current state.
fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    let bytes = base64url_decode(token)?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    let (ns, name) = v["start"].as_str()?.split_once('/')?;
    Some((v["rv"].as_u64()?, (ns.to_string(), name.to_string())))
}

const BASE64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// RFC 4648 base64url without padding, the encoding of the real server's
/// continue tokens.
fn base64url_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for group in bytes.chunks(3) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=group.len() {
            out.push(BASE64URL[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for group in text.as_bytes().chunks(4) {
        if group.len() == 1 {
            return None;
        }
        let mut n = 0u32;
        for (i, c) in group.iter().enumerate() {
            let v = BASE64URL.iter().position(|b| b == c)?;
            n |= (v as u32) << (18 - 6 * i);
        }
        for i in 0..group.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

fn continue_expired(start: &(String, String)) -> Value {
    let mut status = failure(
        410,
        "Expired",
        "The provided continue parameter is too old to display a consistent list result. You can start a new \
         list without the continue parameter, or use the continue token in this response to retrieve the \
         remainder of the results. Continuing with the provided token results in an inconsistent list - objects \
         that were created, modified, or deleted between the time the first chunk was returned and now may show \
         up in the list.",
        None,
    );
    status["metadata"] = json!({"continue": encode_continue(0, start)});
    status
}

// ---------------------------------------------------------------------------
// Selectors and watch events.

#[derive(Debug)]
enum LabelReq {
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug)]
struct FieldReq {
    /// The key under `metadata`: `name` or `namespace`.
    field: &'static str,
    value: String,
    equal: bool,
}

/// What one list or watch selects.
#[derive(Debug)]
struct Filter {
    res: usize,
    ns: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

impl Filter {
    fn parse(res: usize, ns: Option<&str>, q: &Query) -> Result<Self, Value> {
        Ok(Self {
            res,
            ns: ns.map(str::to_string),
            labels: parse_label_selector(q.get("labelSelector").unwrap_or_default())
                .map_err(bad_request)?,
            fields: parse_field_selector(q.get("fieldSelector").unwrap_or_default())
                .map_err(bad_request)?,
        })
    }

    fn matches(&self, obj: &Value) -> bool {
        let meta = &obj["metadata"];
        if let Some(ns) = &self.ns
            && meta["namespace"].as_str() != Some(ns.as_str())
        {
            return false;
        }
        let labels = meta["labels"].as_object();
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_match = self.labels.iter().all(|req| match req {
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
            LabelReq::In(k, values) => label(k).is_some_and(|v| values.iter().any(|x| x == v)),
            LabelReq::NotIn(k, values) => label(k).is_none_or(|v| !values.iter().any(|x| x == v)),
        });
        labels_match
            && self.fields.iter().all(|f| {
                let v = meta[f.field].as_str().unwrap_or_default();
                (v == f.value) == f.equal
            })
    }

    /// The event this watch sees for a change, if any. An object that stops
    /// matching is sent as DELETED (its previous content at the new
    /// resourceVersion) and one that starts matching as ADDED, as the real
    /// watch cache does.
    fn event_line(&self, c: &Change) -> Option<String> {
        if c.key.0 != self.res {
            return None;
        }
        let before = c.prev.as_ref().is_some_and(|p| self.matches(p));
        match c.kind {
            ChangeKind::Added => self
                .matches(&c.object)
                .then(|| event_line("ADDED", &c.object)),
            ChangeKind::Deleted => before.then(|| event_line("DELETED", &c.object)),
            ChangeKind::Modified => match (before, self.matches(&c.object)) {
                (true, true) => Some(event_line("MODIFIED", &c.object)),
                (false, true) => Some(event_line("ADDED", &c.object)),
                (true, false) => {
                    let mut old = c.prev.clone().expect("matched before, so it existed");
                    old["metadata"]["resourceVersion"] = json!(c.rv.to_string());
                    Some(event_line("DELETED", &old))
                }
                (false, false) => None,
            },
        }
    }
}

fn event_line(kind: &str, object: &Value) -> String {
    json!({"type": kind, "object": object}).to_string()
}

fn bookmark_line(res: usize, rv: u64, initial_events_end: bool) -> String {
    let r = &RESOURCES[res];
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": metadata}),
    )
}

/// Splits at commas outside parentheses.
fn split_requirements(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn selector_token(s: &str, selector: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() || s.contains(char::is_whitespace) || s.contains(['=', '!', '(', ')', ',']) {
        return Err(format!(
            "unable to parse requirement: invalid label selector {selector:?} at {s:?}"
        ));
    }
    Ok(s.to_string())
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelReq>, String> {
    let mut reqs = Vec::new();
    if selector.trim().is_empty() {
        return Ok(reqs);
    }
    for term in split_requirements(selector) {
        let term = term.trim();
        let req = if let Some(key) = term.strip_prefix('!') {
            LabelReq::NotExists(selector_token(key, selector)?)
        } else if let Some(open) = term.find('(') {
            let (head, list) = term.split_at(open);
            let list = list
                .trim()
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(|| {
                    format!("unable to parse requirement: unbalanced parentheses in {term:?}")
                })?;
            let values = list
                .split(',')
                .map(|v| selector_token(v, selector))
                .collect::<Result<Vec<_>, _>>()?;
            let (key, op) = head
                .trim()
                .rsplit_once(char::is_whitespace)
                .ok_or_else(|| format!("unable to parse requirement: no operator in {term:?}"))?;
            let key = selector_token(key, selector)?;
            match op {
                "in" => LabelReq::In(key, values),
                "notin" => LabelReq::NotIn(key, values),
                _ => {
                    return Err(format!(
                        "unable to parse requirement: unknown operator {op:?} in {term:?}"
                    ));
                }
            }
        } else if let Some((k, v)) = term.split_once("!=") {
            LabelReq::NotIn(
                selector_token(k, selector)?,
                vec![selector_token(v, selector)?],
            )
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            LabelReq::In(
                selector_token(k, selector)?,
                vec![selector_token(v, selector)?],
            )
        } else {
            LabelReq::Exists(selector_token(term, selector)?)
        };
        reqs.push(req);
    }
    Ok(reqs)
}

fn parse_field_selector(selector: &str) -> Result<Vec<FieldReq>, String> {
    let mut reqs = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (field, value, equal) = if let Some((f, v)) = term.split_once("!=") {
            (f, v, false)
        } else if let Some((f, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (f, v, true)
        } else {
            return Err(format!(
                "invalid selector: '{term}'; can't understand '{term}'"
            ));
        };
        let field = match field.trim() {
            "metadata.name" => "name",
            "metadata.namespace" => "namespace",
            other => return Err(format!("field label not supported: {other}")),
        };
        reqs.push(FieldReq {
            field,
            value: value.trim().to_string(),
            equal,
        });
    }
    Ok(reqs)
}

// ---------------------------------------------------------------------------
// Status objects, shaped as the real server's.

/// `Ok((http code, body))`, or `Err(Status)` whose `code` is the HTTP code.
type Answer = Result<(u16, Value), Value>;

fn failure(code: u16, reason: &str, message: impl Into<String>, details: Option<Value>) -> Value {
    let mut status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message.into(),
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        status["details"] = details;
    }
    status
}

/// Two iterators sorted by key, merged; keys are never in both.
fn merge_sorted<K: Ord, V>(
    a: impl Iterator<Item = (K, V)>,
    b: impl Iterator<Item = (K, V)>,
) -> impl Iterator<Item = (K, V)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some((x, _)), Some((y, _))) if y < x => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

fn bad_request(message: String) -> Value {
    failure(400, "BadRequest", message, None)
}

fn not_found(r: &Resource, name: &str) -> Value {
    failure(
        404,
        "NotFound",
        format!("{} \"{name}\" not found", r.qualified()),
        Some(r.details(name)),
    )
}

fn conflict(r: &Resource, name: &str) -> Value {
    failure(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your \
             changes to the latest version and try again",
            r.qualified()
        ),
        Some(r.details(name)),
    )
}

fn no_such_path() -> Value {
    failure(
        404,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

fn method_not_allowed() -> Value {
    failure(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        Some(json!({})),
    )
}

fn group_suffix(r: &Resource) -> String {
    if r.group.is_empty() {
        String::new()
    } else {
        format!(".{}", r.group)
    }
}

// ---------------------------------------------------------------------------
// Small helpers: time, ids.

fn random_u64() -> u64 {
    // Each RandomState has fresh keys, so this is random enough for ids.
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x9e37_79b9_7f4a_7c15);
    h.finish()
}

fn new_uid() -> String {
    let (a, b) = (random_u64(), random_u64());
    // A version 4, variant 1 UUID, as the real server's.
    let a = (a & !0xf000) | 0x4000;
    let b = (b & !(0b11 << 62)) | (0b10 << 62);
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Five characters from the alphabet the real server uses for
/// `generateName` (no vowels, no look-alikes).
fn name_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut r = random_u64();
    (0..5)
        .map(|_| {
            let c = ALPHABET[(r % ALPHABET.len() as u64) as usize] as char;
            r /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// RFC 3339 in UTC with whole seconds, as `metav1.Time` serialises.
fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

// ---------------------------------------------------------------------------
// HTTP.

struct HttpRequest {
    method: String,
    target: String,
    /// Names lowercased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    keep_alive: bool,
}

impl HttpRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Decoded query parameters.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(raw: &str) -> Self {
        Self(
            raw.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k, true), percent_decode(v, true))
                })
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn flag(&self, key: &str) -> bool {
        self.get(key).is_some_and(parse_bool)
    }
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one line (up to `\n`), bounded.
fn read_line(reader: &mut BufReader<TcpStream>) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    let n = reader
        .by_ref()
        .take(MAX_REQUEST_BYTES)
        .read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "line too long or cut short",
        ));
    }
    let text = String::from_utf8(line)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "line is not UTF-8"))?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// One request; `None` at a clean end of the connection.
fn read_request(
    reader: &mut BufReader<TcpStream>,
    out: &mut TcpStream,
) -> io::Result<Option<HttpRequest>> {
    // RFC 9112 lets a server skip empty lines before a request line.
    let line = loop {
        match read_line(reader)? {
            None => return Ok(None),
            Some(l) if l.is_empty() => {}
            Some(l) => break l,
        }
    };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid("malformed request line"));
    };
    let mut headers = Vec::new();
    loop {
        let Some(h) = read_line(reader)? else {
            return Err(invalid("connection closed inside the request head"));
        };
        if h.is_empty() {
            break;
        }
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| invalid("malformed header"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut req = HttpRequest {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        body: Vec::new(),
        keep_alive: version == "HTTP/1.1",
    };
    if let Some(conn) = req.header("connection").map(str::to_ascii_lowercase) {
        if conn.contains("close") {
            req.keep_alive = false;
        } else if conn.contains("keep-alive") {
            req.keep_alive = true;
        }
    }
    if req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"))
    {
        out.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    if req
        .header("transfer-encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let size_line =
                read_line(reader)?.ok_or_else(|| invalid("connection closed inside a chunk"))?;
            let size =
                usize::from_str_radix(size_line.split(';').next().unwrap_or_default().trim(), 16)
                    .map_err(|_| invalid("malformed chunk size"))?;
            if size == 0 {
                while read_line(reader)?.is_some_and(|l| !l.is_empty()) {}
                break;
            }
            if (req.body.len() + size) as u64 > MAX_REQUEST_BYTES {
                return Err(invalid("request body too large"));
            }
            let start = req.body.len();
            req.body.resize(start + size, 0);
            reader.read_exact(&mut req.body[start..])?;
            read_line(reader)?;
        }
    } else if let Some(len) = req.header("content-length") {
        let len: u64 = len
            .parse()
            .map_err(|_| invalid("malformed Content-Length"))?;
        if len > MAX_REQUEST_BYTES {
            return Err(invalid("request body too large"));
        }
        req.body = vec![0; len as usize];
        reader.read_exact(&mut req.body)?;
    }
    Ok(Some(req))
}

fn reason_phrase(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        410 => "Gone",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

fn write_json(out: &mut TcpStream, code: u16, body: &Value, keep_alive: bool) -> io::Result<()> {
    let body = body.to_string();
    let mut response = format!(
        "HTTP/1.1 {code} {}\r\nCache-Control: no-cache, private\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n{}\r\n",
        reason_phrase(code),
        body.len(),
        if keep_alive { "" } else { "Connection: close\r\n" },
    )
    .into_bytes();
    response.extend_from_slice(body.as_bytes());
    out.write_all(&response)?;
    out.flush()
}

fn write_chunk(out: &mut TcpStream, line: &str) -> io::Result<()> {
    // One event per chunk, newline-terminated, as the real server frames them.
    let mut chunk = format!("{:x}\r\n", line.len() + 1).into_bytes();
    chunk.extend_from_slice(line.as_bytes());
    chunk.extend_from_slice(b"\n\r\n");
    out.write_all(&chunk)?;
    out.flush()
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) if stream.set_nonblocking(false).is_ok() => stream,
            Ok(_) => continue,
            Err(_) => {
                if shared.lock().stopping {
                    break;
                }
                thread::sleep(ACCEPT_POLL);
                continue;
            }
        };
        let id = {
            let mut st = shared.lock();
            if st.stopping {
                break;
            }
            let Ok(registered) = stream.try_clone() else {
                continue;
            };
            let id = st.next_id;
            st.next_id += 1;
            st.conns.insert(id, registered);
            id
        };
        let conn_shared = Arc::clone(shared);
        match thread::Builder::new()
            .name(format!("kube-api-conn-{id}"))
            .spawn(move || serve_connection(&conn_shared, stream, id))
        {
            Ok(worker) => workers.push(worker),
            Err(_) => {
                shared.lock().conns.remove(&id);
            }
        }
        workers.retain(|w| !w.is_finished());
    }
    for worker in workers {
        let _ = worker.join();
    }
}

fn serve_connection(shared: &Shared, stream: TcpStream, id: u64) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    if let Ok(read_half) = stream.try_clone() {
        let mut reader = BufReader::new(read_half);
        let mut out = stream;
        loop {
            let req = match read_request(&mut reader, &mut out) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(e) => {
                    if e.kind() == io::ErrorKind::InvalidData {
                        let _ = write_json(
                            &mut out,
                            400,
                            &bad_request(format!("malformed HTTP request: {e}")),
                            false,
                        );
                    }
                    break;
                }
            };
            let keep_alive = req.keep_alive;
            let ok = match handle(shared, &req) {
                Reply::Json(code, body) => write_json(&mut out, code, &body, keep_alive).is_ok(),
                Reply::Watch(watch) => stream_watch(shared, &mut out, &watch),
            };
            if !ok || !keep_alive {
                break;
            }
        }
    }
    shared.lock().conns.remove(&id);
}

enum Reply {
    Json(u16, Value),
    Watch(WatchStart),
}

struct WatchStart {
    /// `None` for a watch that ends after what is queued (the 410 ERROR).
    id: Option<u64>,
    rx: Receiver<WatchMsg>,
    timeout: Duration,
    res: usize,
}

/// Streams a watch; false when the connection is to be closed.
fn stream_watch(shared: &Shared, out: &mut TcpStream, watch: &WatchStart) -> bool {
    let head = "HTTP/1.1 200 OK\r\nCache-Control: no-cache, private\r\nContent-Type: application/json\r\n\
                Transfer-Encoding: chunked\r\n\r\n";
    let start = Instant::now();
    let deadline = start + watch.timeout;
    let mut last_bookmark = start;
    let head_sent = out
        .write_all(head.as_bytes())
        .and_then(|()| out.flush())
        .is_ok();
    if head_sent && let Some(id) = watch.id {
        shared.mark_streaming(id);
    }
    let clean_end = head_sent
        && loop {
            let now = Instant::now();
            if now >= deadline {
                break true;
            }
            match watch.rx.recv_timeout((deadline - now).min(WATCH_POLL)) {
                Ok(WatchMsg::Line(line)) => {
                    if write_chunk(out, &line).is_err() {
                        break false;
                    }
                }
                Ok(WatchMsg::End) => break true,
                Ok(WatchMsg::Cut) | Err(RecvTimeoutError::Disconnected) => break false,
                Err(RecvTimeoutError::Timeout) => {
                    if client_gone(out) {
                        break false;
                    }
                    let Some(id) = watch.id else { continue };
                    let st = shared.lock();
                    if let (Some(every), Some(w)) = (st.bookmark_every, st.watches.get(&id))
                        && w.bookmarks
                        && last_bookmark.elapsed() >= every
                    {
                        // Through the channel, so it follows the events already queued.
                        let _ =
                            w.tx.send(WatchMsg::Line(bookmark_line(watch.res, st.rv, false)));
                        last_bookmark = Instant::now();
                    }
                }
            }
        };
    if let Some(id) = watch.id {
        shared.unregister(id);
    }
    if clean_end
        && out
            .write_all(b"0\r\n\r\n")
            .and_then(|()| out.flush())
            .is_ok()
    {
        return true;
    }
    let _ = out.shutdown(Shutdown::Both);
    false
}

/// Whether the client closed its end (a watch client sends nothing while
/// the stream runs, so readable means closed).
fn client_gone(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let gone = match stream.peek(&mut byte) {
        Ok(n) => n == 0,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    let _ = stream.set_nonblocking(false);
    gone
}

// ---------------------------------------------------------------------------
// Routing.

/// A resource URL: `/api/v1[/namespaces/NS]/PLURAL[/NAME[/SUB]]` or
/// `/apis/GROUP/VERSION[/namespaces/NS]/PLURAL[/NAME[/SUB]]`.
#[derive(Debug)]
struct Target {
    res: usize,
    ns: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

enum Route {
    Resource(Target),
    Version,
    Unknown,
}

fn route(path: &str) -> Route {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Route::Version,
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Route::Unknown,
    };
    let find = |plural: &str| {
        RESOURCES
            .iter()
            .position(|r| r.group == group && r.version == version && r.plural == plural)
    };
    let target = |res: usize, ns: Option<&str>, tail: &[&str]| {
        let (name, sub) = match tail {
            [] => (None, None),
            [name] => (Some(*name), None),
            [name, sub] => (Some(*name), Some(*sub)),
            _ => return Route::Unknown,
        };
        Route::Resource(Target {
            res,
            ns: ns.map(str::to_string),
            name: name.map(str::to_string),
            sub: sub.map(str::to_string),
        })
    };
    match rest {
        ["namespaces", ns, plural, tail @ ..] => match find(plural) {
            Some(res) if RESOURCES[res].namespaced => target(res, Some(ns), tail),
            _ => Route::Unknown,
        },
        [plural, tail @ ..] => match find(plural) {
            Some(res) if RESOURCES[res].namespaced && tail.is_empty() => target(res, None, tail),
            Some(res) if !RESOURCES[res].namespaced => target(res, None, tail),
            _ => Route::Unknown,
        },
        [] => Route::Unknown,
    }
}

fn rbac_verb(method: &str, target: &Target, q: &Query) -> String {
    match method {
        "GET" | "HEAD" if q.flag("watch") => "watch",
        "GET" | "HEAD" if target.name.is_some() => "get",
        "GET" | "HEAD" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if target.name.is_some() => "delete",
        "DELETE" => "deletecollection",
        other => return other.to_ascii_lowercase(),
    }
    .to_string()
}

fn handle(shared: &Shared, req: &HttpRequest) -> Reply {
    let (path, raw_query) = req.target.split_once('?').unwrap_or((&req.target, ""));
    let q = Query::parse(raw_query);
    let route = route(path);
    let mut record = Request {
        method: req.method.clone(),
        path: percent_decode(path, false),
        query: q.0.clone(),
        verb: req.method.to_ascii_lowercase(),
        group: String::new(),
        version: String::new(),
        resource: String::new(),
        namespace: None,
        name: None,
        content_type: req.header("content-type").map(str::to_string),
        body: String::from_utf8_lossy(&req.body).into_owned(),
        code: 0,
    };
    if let Route::Resource(t) = &route {
        let r = &RESOURCES[t.res];
        record.verb = rbac_verb(&req.method, t, &q);
        record.group = r.group.to_string();
        record.version = r.version.to_string();
        record.resource = match &t.sub {
            Some(sub) => format!("{}/{sub}", r.plural),
            None => r.plural.to_string(),
        };
        record.namespace.clone_from(&t.ns);
        record.name.clone_from(&t.name);
    }
    let mut st = shared.lock();
    let authorized = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == shared.token);
    let reply = if st.unavailable {
        Reply::Json(
            503,
            failure(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
                None,
            ),
        )
    } else if !authorized {
        Reply::Json(401, failure(401, "Unauthorized", "Unauthorized", None))
    } else {
        match route {
            Route::Version => Reply::Json(
                200,
                json!({
                    "major": "1", "minor": "33", "gitVersion": "v1.33.0-xlb-test",
                    "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
                    "buildDate": "2025-04-23T00:00:00Z", "goVersion": "go1.24.2", "compiler": "gc",
                    "platform": "linux/amd64",
                }),
            ),
            Route::Unknown => Reply::Json(404, no_such_path()),
            Route::Resource(t) => dispatch(&mut st, req, &t, &q),
        }
    };
    record.code = match &reply {
        Reply::Json(code, _) => *code,
        Reply::Watch(_) => 200,
    };
    st.requests.push(record);
    drop(st);
    reply
}

fn dispatch(st: &mut State, req: &HttpRequest, t: &Target, q: &Query) -> Reply {
    let r = &RESOURCES[t.res];
    let status_only = match t.sub.as_deref() {
        None => false,
        Some("status") if r.status => true,
        Some(_) => return Reply::Json(404, no_such_path()),
    };
    let ns = t.ns.as_deref().unwrap_or_default();
    let answer = match (req.method.as_str(), t.name.as_deref()) {
        ("GET", _) if q.flag("watch") => {
            return match st.start_watch(t.res, t.ns.as_deref(), t.name.as_deref(), q) {
                Ok(watch) => Reply::Watch(watch),
                Err(status) => Reply::Json(status_code(&status), status),
            };
        }
        ("GET", None) => st.list(t.res, t.ns.as_deref(), q),
        ("GET", Some(name)) => st.get(t.res, ns, name),
        ("POST", None) if !status_only && (t.ns.is_some() || !r.namespaced) => {
            match serde_json::from_slice(&req.body) {
                Ok(body) => st.create(t.res, ns, body),
                Err(e) => Err(bad_request(format!("error decoding the request body: {e}"))),
            }
        }
        ("PUT", Some(name)) => match serde_json::from_slice(&req.body) {
            Ok(body) => st.update(t.res, ns, name, body, status_only),
            Err(e) => Err(bad_request(format!("error decoding the request body: {e}"))),
        },
        ("PATCH", Some(name)) => st.patch(t.res, ns, name, req, status_only),
        ("DELETE", Some(name)) if !status_only => st.delete(t.res, ns, name, &req.body),
        _ => Err(method_not_allowed()),
    };
    match answer {
        Ok((code, body)) => Reply::Json(code, body),
        Err(status) => Reply::Json(status_code(&status), status),
    }
}

fn status_code(status: &Value) -> u16 {
    status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(500)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(obj: Value, selector: &str) -> bool {
        let filter = Filter {
            res: 0,
            ns: None,
            labels: parse_label_selector(selector).unwrap(),
            fields: Vec::new(),
        };
        filter.matches(&obj)
    }

    #[test]
    fn label_selectors() {
        let a = json!({"metadata": {"labels": {"app": "a", "tier": "web"}}});
        let none = json!({"metadata": {}});
        assert!(labels(a.clone(), "app"));
        assert!(!labels(none.clone(), "app"));
        assert!(labels(none.clone(), "!app"));
        assert!(labels(a.clone(), "app=a,tier==web"));
        assert!(!labels(a.clone(), "app!=a"));
        assert!(labels(none.clone(), "app!=a"));
        assert!(labels(a.clone(), "app in (b, a),tier"));
        assert!(!labels(a.clone(), "app notin (a,b)"));
        assert!(labels(none, "app notin (a,b)"));
        assert!(parse_label_selector("app in (a").is_err());
        assert!(parse_label_selector("app =").is_err());
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The example of RFC 7386, section 3.
        let mut target = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"], "content": "This will be unchanged"});
        let patch = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null}, "tags": ["example"]});
        merge_patch(&mut target, &patch);
        assert_eq!(
            target,
            json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
                "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("app%20in%20%28a%2Cb%29", true),
            "app in (a,b)"
        );
        assert_eq!(percent_decode("a+b%", true), "a b%");
        assert_eq!(percent_decode("a+b", false), "a+b");
    }

    #[test]
    fn base64url_matches_rfc_4648() {
        // The test vectors of RFC 4648, section 10, without padding.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url_encode(plain.as_bytes()), encoded);
            assert_eq!(base64url_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        assert_eq!(base64url_encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url_decode("Z"), None);
        assert_eq!(base64url_decode("Zm9v!"), None);
    }

    #[test]
    fn continue_tokens_round_trip() {
        let token = encode_continue(42, &("ns".into(), "name".into()));
        assert_eq!(
            decode_continue(&token),
            Some((42, ("ns".into(), "name".into())))
        );
        assert_eq!(decode_continue("not a token"), None);
    }

    #[test]
    fn uids_look_like_v4_uuids() {
        let uid = new_uid();
        assert_eq!(uid.len(), 36);
        assert_eq!(&uid[14..15], "4");
        assert!(matches!(&uid[19..20], "8" | "9" | "a" | "b"), "{uid}");
    }
}
