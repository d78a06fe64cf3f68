//! The exporter's HTTP server: hyper's HTTP/1 connection driver behind an
//! accept loop that bounds how many connections are open at once.
//!
//! One request per connection (keep-alive off). Prometheus scrapes a target
//! every few seconds at most, so a TCP handshake per scrape costs nothing,
//! while a kept-alive connection would hold one of the few connection slots
//! idle between scrapes and need its own idle timeout; closing after each
//! response keeps every slot busy only while a request is being served.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::{CONTENT_TYPE, Snapshot, render_owned};

/// Why a scrape could not read the data plane; its text is the 503 body.
pub type ScrapeError = Box<dyn std::error::Error + Send + Sync>;

/// What the server asks the daemon, each call made on tokio's blocking pool
/// (a scrape reads kernel maps and may take a lock the reconciler holds).
#[derive(Clone)]
pub struct Endpoints {
    /// Answers `/metrics`: the data plane's counters now.
    pub scrape: Arc<dyn Fn() -> Result<Snapshot, ScrapeError> + Send + Sync>,
    /// Answers `/healthz`.
    pub health: Arc<dyn Fn() -> Health + Send + Sync>,
}

/// Whether the daemon serves traffic as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// `/healthz` answers 200 `ok`.
    Ready,
    /// `/healthz` answers 503 with the reason as its body.
    Unready(String),
}

/// How long and how many; `Default` holds the production values.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time a client gets, from the moment its connection is taken, to send
    /// the whole request head; then the connection is closed without a reply.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog,
    /// not accepted, until one finishes.
    pub max_connections: usize,
    /// Longest a connection stays open whatever it is doing: bounds a scrape
    /// that hangs and a client that never reads the response.
    pub connection_timeout: Duration,
    /// After shutdown, how long requests in flight get to finish before
    /// their connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 64,
            connection_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Largest request head (request line + headers); larger ones get 431.
const MAX_HEAD: usize = 8 * 1024;
/// Pause after a transient accept error (e.g. out of file descriptors), so
/// the loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

/// Serves `GET`/`HEAD` on `/metrics` and `/healthz` until `shutdown`
/// resolves; then stops accepting and gives requests in flight
/// [`Limits::shutdown_grace`] to finish. Dropping the future instead drops
/// every connection at once.
///
/// `/metrics` is 200 with the OpenMetrics text, or 503 with the error's text
/// when the scrape fails; `/healthz` follows [`Health`]; `/livez` is always
/// 200 `ok` and asks the daemon nothing. Other paths get
/// 404, other methods 405, malformed requests 400 (hyper's own answer), a
/// panic in an endpoint 500.
///
/// Returns an error only if the listening socket itself is unusable;
/// transient accept errors are logged and retried.
pub async fn serve(
    listener: TcpListener,
    endpoints: Endpoints,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let mut shutdown = pin!(shutdown);
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(MAX_HEAD)
        .keep_alive(false);
    // A limit of 0 would never accept; one connection at a time is the least.
    let max_connections = limits.max_connections.max(1);
    let mut connections = JoinSet::new();
    loop {
        let room = connections.len() < max_connections;
        tokio::select! {
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "metrics: connection task failed");
                }
            }
            accepted = listener.accept(), if room => match accepted {
                Ok((stream, peer)) => {
                    let endpoints = endpoints.clone();
                    let deadline = limits.connection_timeout;
                    connections.spawn(connection(&http, stream, peer, endpoints, deadline));
                }
                Err(e) if is_fatal_accept_error(&e) => {
                    tracing::error!(error = %e, "metrics: listener failed");
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    // Refuse new connections now rather than leave them in the backlog.
    drop(listener);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = connections.len(),
            "metrics: dropping connections still open after the shutdown grace period"
        );
    }
    Ok(())
}

/// Accept errors that mean the listening socket itself is broken, as
/// opposed to per-connection or resource-exhaustion errors.
fn is_fatal_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT)
    )
}

/// Serves one connection to its end, bounded by `deadline`.
fn connection(
    http: &http1::Builder,
    stream: TcpStream,
    peer: SocketAddr,
    endpoints: Endpoints,
    deadline: Duration,
) -> impl Future<Output = ()> + Send + 'static {
    let service = service_fn(move |req: Request<Incoming>| {
        let endpoints = endpoints.clone();
        // A request body, if any, is not read: no endpoint takes one.
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        async move { Ok::<_, Infallible>(respond(&method, &path, &endpoints).await) }
    });
    let conn = http.serve_connection(TokioIo::new(stream), service);
    async move {
        match tokio::time::timeout(deadline, conn).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metrics: connection error"),
            Err(_elapsed) => tracing::debug!(%peer, "metrics: connection timed out"),
        }
    }
}

async fn respond(method: &Method, path: &str, endpoints: &Endpoints) -> Response<Full<Bytes>> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    // hyper lets `*` and authority-form targets through; neither names a
    // resource here. Absolute-form targets come with a proper path.
    match path {
        "/metrics" => scrape(endpoints).await,
        "/healthz" => health(endpoints).await,
        // For a liveness probe: an answer means the runtime runs; asking
        // the daemon would make a failed reconcile restart the process.
        "/livez" => text(StatusCode::OK, "ok"),
        path if path.starts_with('/') => text(StatusCode::NOT_FOUND, "not found\n"),
        _ => text(StatusCode::BAD_REQUEST, "bad request\n"),
    }
}

async fn scrape(endpoints: &Endpoints) -> Response<Full<Bytes>> {
    let scrape = Arc::clone(&endpoints.scrape);
    match tokio::task::spawn_blocking(move || scrape().map(render_owned)).await {
        Ok(Ok(body)) => reply(StatusCode::OK, CONTENT_TYPE, body),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: scrape failed");
            text(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e) => {
            tracing::error!(error = %e, "metrics: scrape panicked");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: scrape failed\n",
            )
        }
    }
}

async fn health(endpoints: &Endpoints) -> Response<Full<Bytes>> {
    let health = Arc::clone(&endpoints.health);
    match tokio::task::spawn_blocking(move || health()).await {
        Ok(Health::Ready) => text(StatusCode::OK, "ok"),
        Ok(Health::Unready(reason)) => text(StatusCode::SERVICE_UNAVAILABLE, reason),
        Err(e) => {
            tracing::error!(error = %e, "metrics: health check panicked");
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error: health check failed\n",
            )
        }
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    reply(status, TEXT_PLAIN, body.into())
}

/// A response with a body of known length; hyper writes `Content-Length`
/// from it, and leaves the body out for `HEAD`.
fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Counters read at one instant; a cache must not serve them later.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::render;
    use crate::metrics::tests::sample;
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use futures::channel::oneshot;
    use tokio::task::JoinHandle;

    fn endpoints(
        scrape: impl Fn() -> Result<Snapshot, ScrapeError> + Send + Sync + 'static,
        health: impl Fn() -> Health + Send + Sync + 'static,
    ) -> Endpoints {
        Endpoints {
            scrape: Arc::new(scrape),
            health: Arc::new(health),
        }
    }

    fn healthy() -> Endpoints {
        endpoints(|| Ok(sample()), || Health::Ready)
    }

    /// A server on an ephemeral loopback port, stopped by `stop`.
    struct Server {
        addr: SocketAddr,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<io::Result<()>>,
    }

    impl Server {
        async fn start(endpoints: Endpoints, limits: Limits) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("local_addr");
            let (stop, stopped) = oneshot::channel::<()>();
            let shutdown = async move {
                let _ = stopped.await;
            };
            let task = tokio::spawn(serve(listener, endpoints, limits, shutdown));
            Server {
                addr,
                stop: Some(stop),
                task,
            }
        }

        /// Resolves the shutdown future and waits (boundedly) for `serve`.
        async fn stop(mut self) -> Duration {
            let t = Instant::now();
            let _ = self.stop.take().expect("stopped twice").send(());
            tokio::time::timeout(Duration::from_secs(15), &mut self.task)
                .await
                .expect("serve did not return within 15 s of shutdown")
                .expect("serve task panicked")
                .expect("serve returned an error");
            t.elapsed()
        }
    }

    #[derive(Debug)]
    struct Reply {
        status: u16,
        head: String,
        body: Vec<u8>,
    }

    impl Reply {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim())
            })
        }
        fn body_str(&self) -> &str {
            std::str::from_utf8(&self.body).expect("utf-8 body")
        }
    }

    /// Sends `raw` with a plain blocking socket and reads until the server
    /// closes.
    async fn exchange(addr: SocketAddr, raw: Vec<u8>) -> Reply {
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            s.write_all(&raw).expect("send");
            let mut out = Vec::new();
            s.read_to_end(&mut out).expect("read reply");
            let split = out
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(&out)));
            let head = String::from_utf8(out[..split].to_vec()).expect("utf-8 head");
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("status code");
            Reply {
                status,
                head,
                body: out[split + 4..].to_vec(),
            }
        })
        .await
        .expect("client task")
    }

    async fn get(addr: SocketAddr, path: &str) -> Reply {
        exchange(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes(),
        )
        .await
    }

    async fn assert_scrapes(addr: SocketAddr) {
        let r = get(addr, "/metrics").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body_str(), render(&sample()));
    }

    #[tokio::test]
    async fn serves_metrics() {
        let server = Server::start(healthy(), Limits::default()).await;
        let r = get(server.addr, "/metrics").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(
            r.header("content-length"),
            Some(r.body.len().to_string().as_str())
        );
        assert_eq!(r.body_str(), render(&sample()));
        assert!(
            r.body_str()
                .lines()
                .any(|l| l == r#"xlb_packets_total{outcome="tx"} 12"#)
        );
        // Query strings are ignored; HTTP/1.0 and the absolute form work.
        assert_eq!(get(server.addr, "/metrics?x=1").await.status, 200);
        let r = exchange(
            server.addr,
            b"GET /metrics?name[]=x HTTP/1.0\r\nA: b\r\n\r\n".to_vec(),
        )
        .await;
        assert_eq!(r.status, 200, "{r:?}");
        let r = exchange(
            server.addr,
            b"GET http://h:9100/healthz HTTP/1.1\r\nHost: h:9100\r\n\r\n".to_vec(),
        )
        .await;
        assert_eq!((r.status, r.body_str()), (200, "ok"), "{r:?}");
        server.stop().await;
    }

    #[tokio::test]
    async fn healthz_404_405_head() {
        let server = Server::start(healthy(), Limits::default()).await;
        let addr = server.addr;

        let r = get(addr, "/healthz").await;
        assert_eq!((r.status, r.body_str()), (200, "ok"));

        let r = get(addr, "/nope").await;
        assert_eq!(r.status, 404, "{r:?}");

        let r = exchange(
            addr,
            b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi".to_vec(),
        )
        .await;
        assert_eq!(r.status, 405, "{r:?}");
        assert_eq!(r.header("allow"), Some("GET, HEAD"));

        let r = exchange(addr, b"HEAD /metrics HTTP/1.1\r\n\r\n".to_vec()).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body.is_empty(), "{r:?}");
        assert_eq!(
            r.header("content-length"),
            Some(render(&sample()).len().to_string().as_str())
        );

        let r = exchange(addr, b"HEAD /healthz HTTP/1.1\r\n\r\n".to_vec()).await;
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.body.is_empty(), "{r:?}");
        server.stop().await;
    }

    #[tokio::test]
    async fn healthz_follows_health() {
        let server = Server::start(
            endpoints(
                || Ok(sample()),
                || Health::Unready("data plane not attached".into()),
            ),
            Limits::default(),
        )
        .await;
        let r = get(server.addr, "/healthz").await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.body_str(), "data plane not attached");
        assert_eq!(r.header("content-type"), Some(TEXT_PLAIN));
        // Liveness does not depend on health.
        let r = get(server.addr, "/livez").await;
        assert_eq!((r.status, r.body_str()), (200, "ok"), "{r:?}");
        // Metrics do not depend on health.
        assert_scrapes(server.addr).await;
        server.stop().await;

        let server = Server::start(
            endpoints(|| Ok(sample()), || panic!("boom")),
            Limits::default(),
        )
        .await;
        assert_eq!(get(server.addr, "/healthz").await.status, 500);
        assert_scrapes(server.addr).await;
        server.stop().await;
    }

    #[tokio::test]
    async fn scrape_error_is_503() {
        let server = Server::start(
            endpoints(
                || Err("flow map unreadable: EPERM".into()),
                || Health::Ready,
            ),
            Limits::default(),
        )
        .await;
        let r = get(server.addr, "/metrics").await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.body_str(), "flow map unreadable: EPERM");
        // Health does not depend on the scrape.
        assert_eq!(get(server.addr, "/healthz").await.status, 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn scrape_panic_is_500_and_server_survives() {
        let server = Server::start(
            endpoints(|| panic!("boom"), || Health::Ready),
            Limits::default(),
        )
        .await;
        assert_eq!(get(server.addr, "/metrics").await.status, 500);
        assert_eq!(get(server.addr, "/healthz").await.status, 200);
        server.stop().await;
    }

    #[tokio::test]
    async fn survives_bad_input() {
        let server = Server::start(healthy(), Limits::default()).await;
        let addr = server.addr;

        for garbage in [
            b"\x00\xff\xfe garbage \r\n\r\n".to_vec(),
            b"GET\r\n\r\n".to_vec(),
            b"GET /metrics\r\n\r\n".to_vec(),
            b"GET /metrics HTTP/1.1 extra\r\n\r\n".to_vec(),
            b"GET metrics HTTP/1.1\r\n\r\n".to_vec(),
            b"GET * HTTP/1.1\r\n\r\n".to_vec(),
            b"GET /metrics SPDY/3\r\n\r\n".to_vec(),
        ] {
            let r = exchange(addr, garbage.clone()).await;
            assert_eq!(
                r.status,
                400,
                "{:?} -> {r:?}",
                String::from_utf8_lossy(&garbage)
            );
        }

        // Head cut short by the client's half-close: closed without a reply.
        let r = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
                .expect("send");
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            out
        })
        .await
        .expect("client");
        assert!(r.is_empty() || r.starts_with("HTTP/1.1 400 "), "{r:?}");

        // Oversized head.
        let mut big = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        big.resize(3 * MAX_HEAD, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exchange(addr, big).await.status, 431);

        // Connect and hang up without a word.
        drop(tokio::net::TcpStream::connect(addr).await.expect("connect"));

        // Still serving.
        assert_scrapes(addr).await;
        assert!(!server.task.is_finished());
        server.stop().await;
    }

    /// One header byte a second: cut at the header-read timeout, and the
    /// server goes on serving.
    #[tokio::test]
    async fn slowloris_is_cut_at_the_header_timeout() {
        let timeout = Duration::from_secs(1);
        let limits = Limits {
            header_read_timeout: timeout,
            ..Limits::default()
        };
        let server = Server::start(healthy(), limits).await;
        let addr = server.addr;
        let cut_after = tokio::task::spawn_blocking(move || {
            let head = b"GET /metrics HTTP/1.1\r\nX-Slow: "
                .iter()
                .copied()
                .chain(std::iter::repeat(b'a'));
            let start = Instant::now();
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            let mut buf = [0u8; 512];
            for byte in head {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "a client sending a header byte a second was not cut within 20 s"
                );
                if s.write_all(&[byte]).is_err() {
                    return start.elapsed();
                }
                match s.read(&mut buf) {
                    Ok(0) => return start.elapsed(),
                    Ok(n) => panic!(
                        "unexpected reply to an unfinished head: {:?}",
                        String::from_utf8_lossy(&buf[..n])
                    ),
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    // Reset: hyper closed with our bytes unread.
                    Err(_) => return start.elapsed(),
                }
            }
            unreachable!("the header bytes never end")
        })
        .await
        .expect("slow client");
        assert!(
            cut_after >= timeout,
            "cut after {cut_after:?}, before the timeout"
        );
        assert_scrapes(addr).await;
        server.stop().await;
    }

    /// 200 scrapes at once, each on its own connection, with room for 16:
    /// all answered in full, never more than 16 at a time, and the server
    /// goes on serving.
    #[tokio::test]
    async fn concurrent_scrapes_beyond_the_connection_limit() {
        let (running, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (r, p) = (running.clone(), peak.clone());
        let scrape = move || {
            let now = r.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            // Long enough for scrapes to overlap and the limit to bite.
            std::thread::sleep(Duration::from_millis(10));
            r.fetch_sub(1, Ordering::SeqCst);
            Ok(sample())
        };
        let limits = Limits {
            max_connections: 16,
            ..Limits::default()
        };
        let server = Server::start(endpoints(scrape, || Health::Ready), limits).await;
        let addr = server.addr;
        let expected = render(&sample());
        let replies: Vec<_> = (0..200)
            .map(|_| tokio::spawn(get(addr, "/metrics")))
            .collect();
        for (i, r) in replies.into_iter().enumerate() {
            let r = r.await.expect("client panicked");
            assert_eq!(r.status, 200, "scrape {i}: {r:?}");
            assert_eq!(r.body_str(), expected, "scrape {i}");
        }
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= 16, "{peak} scrapes ran at once with room for 16");
        assert_scrapes(addr).await;
        server.stop().await;
    }

    /// At the limit, a new connection is not served until one closes.
    #[tokio::test]
    async fn connections_beyond_the_limit_wait() {
        let limits = Limits {
            max_connections: 2,
            header_read_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let server = Server::start(healthy(), limits).await;
        let addr = server.addr;
        let idle: Vec<_> =
            futures::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(addr)))
                .await
                .into_iter()
                .map(|c| c.expect("connect"))
                .collect();
        let mut waiting = tokio::spawn(get(addr, "/healthz"));
        // Whatever the timing, this scrape cannot be served while both
        // slots are held (the idle clients outlast this wait).
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut waiting)
                .await
                .is_err(),
            "a connection beyond the limit was served"
        );
        drop(idle);
        let r = tokio::time::timeout(Duration::from_secs(15), waiting)
            .await
            .expect("the waiting connection was not served once slots freed")
            .expect("client panicked");
        assert_eq!((r.status, r.body_str()), (200, "ok"));
        server.stop().await;
    }

    /// On shutdown a request in flight is answered, an idle connection is
    /// dropped after the grace period, new connections are refused.
    #[tokio::test]
    async fn shutdown_finishes_in_flight_requests_then_returns() {
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let started_tx = std::sync::Mutex::new(started_tx);
        let scrape = move || {
            let _ = started_tx.lock().expect("lock").send(());
            std::thread::sleep(Duration::from_millis(300));
            Ok(sample())
        };
        let grace = Duration::from_secs(1);
        let limits = Limits {
            shutdown_grace: grace,
            // The idle client must outlast the grace period, not be cut first.
            header_read_timeout: Duration::from_secs(60),
            ..Limits::default()
        };
        let server = Server::start(endpoints(scrape, || Health::Ready), limits).await;
        let addr = server.addr;
        let idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let in_flight = tokio::spawn(get(addr, "/metrics"));
        tokio::task::spawn_blocking(move || {
            started_rx
                .recv_timeout(Duration::from_secs(15))
                .expect("the scrape did not start within 15 s");
        })
        .await
        .expect("waiter");
        let took = server.stop().await;
        assert!(
            took < grace + Duration::from_secs(5),
            "serve took {took:?} to return after shutdown"
        );
        let r = in_flight.await.expect("client panicked");
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body_str(), render(&sample()));
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "still accepting after shutdown"
        );
        drop(idle);
    }
}
