//! A deliberately small HTTP/1.1 server for the exporter: one request per
//! connection, `Connection: close`, bounded request heads, timeouts, and a
//! bounded number of concurrent connections.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::{CONTENT_TYPE, Snapshot, render_owned};

/// Largest request head (request line + headers) accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client gets to send its whole request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client gets to take the whole response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the response, how long unread client data is drained before the
/// socket is closed (closing with unread data would send a RST, which can
/// make the client lose the response).
const LINGER: Duration = Duration::from_secs(1);
/// Most client bytes drained after the response.
const MAX_DRAIN: usize = 64 * 1024;
/// Connections served at once; further ones wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// Pause after a transient accept error (e.g. out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

type SnapshotFn = Arc<dyn Fn() -> Result<Snapshot, String> + Send + Sync>;

/// Serves `GET /metrics` (and `GET /healthz` → 200 `ok`) on `listener` until
/// the task is dropped/aborted (which also aborts the connections in flight).
///
/// `snapshot` is called on every scrape, on tokio's blocking thread pool (it
/// may read kernel maps); if it returns `Err(text)` the reply is 503 with that
/// text. `HEAD` is answered like `GET` without the body; other methods get
/// 405, other paths 404, malformed requests 400.
///
/// Returns only if the listener itself is unusable; transient accept errors
/// are logged and retried.
pub async fn serve(
    listener: TcpListener,
    snapshot: Arc<dyn Fn() -> Result<Snapshot, String> + Send + Sync>,
) -> io::Result<()> {
    let mut connections = JoinSet::new();
    loop {
        // At the limit, stop accepting until a connection finishes.
        if connections.len() >= MAX_CONNECTIONS {
            connections.join_next().await;
            continue;
        }
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let snapshot = Arc::clone(&snapshot);
                    connections.spawn(async move {
                        if let Err(e) = handle(stream, &snapshot).await {
                            tracing::debug!(%peer, error = %e, "metrics: connection error");
                        }
                    });
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
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Accept errors that mean the listening socket itself is broken, as
/// opposed to per-connection or resource-exhaustion errors.
fn is_fatal_accept_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT)
    )
}

/// Serves one connection: one request, one response, close.
async fn handle(mut stream: TcpStream, snapshot: &SnapshotFn) -> io::Result<()> {
    let response = match timeout(READ_TIMEOUT, read_head(&stream)).await {
        Err(_elapsed) => Response::text(408, "request timeout\n").encode(false),
        Ok(Err(HeadError::Io(e))) => return Err(e),
        Ok(Err(HeadError::Closed)) => return Ok(()),
        Ok(Err(HeadError::Incomplete)) => Response::text(400, "bad request\n").encode(false),
        Ok(Err(HeadError::TooLarge)) => {
            Response::text(431, "request header too large\n").encode(false)
        }
        Ok(Ok(head)) => match parse_request_line(&head) {
            None => Response::text(400, "bad request\n").encode(false),
            Some(req) => respond(&req, snapshot).await,
        },
    };
    timeout(WRITE_TIMEOUT, write_all(&stream, &response))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "writing the response timed out"))??;
    // Half-close, then drain what the client may still send so that closing
    // does not turn into a RST that could discard the response.
    poll_fn(|cx| Pin::new(&mut stream).poll_shutdown(cx)).await?;
    let _ = timeout(LINGER, drain(&stream)).await;
    Ok(())
}

async fn respond(req: &Request<'_>, snapshot: &SnapshotFn) -> Vec<u8> {
    let head_only = match req.method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let mut r = Response::text(405, "method not allowed\n");
            r.allow = true;
            return r.encode(false);
        }
    };
    let response = match req.path {
        "/metrics" => {
            let snapshot = Arc::clone(snapshot);
            let result = tokio::task::spawn_blocking(move || snapshot().map(render_owned)).await;
            match result {
                Ok(Ok(body)) => Response {
                    status: 200,
                    content_type: CONTENT_TYPE,
                    body: body.into_bytes(),
                    allow: false,
                },
                Ok(Err(text)) => {
                    tracing::warn!(error = %text, "metrics: snapshot failed");
                    Response::text(503, text)
                }
                Err(e) => {
                    tracing::error!(error = %e, "metrics: snapshot panicked");
                    Response::text(500, "internal error: snapshot failed\n")
                }
            }
        }
        "/healthz" => Response::text(200, "ok"),
        _ => Response::text(404, "not found\n"),
    };
    response.encode(head_only)
}

#[derive(Debug)]
struct Response {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Add `Allow: GET, HEAD` (for 405).
    allow: bool,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: TEXT_PLAIN,
            body: body.into().into_bytes(),
            allow: false,
        }
    }

    fn encode(self, head_only: bool) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len()
        );
        if self.allow {
            head.push_str("Allow: GET, HEAD\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

#[derive(Debug)]
enum HeadError {
    /// The client closed the connection without sending anything.
    Closed,
    /// The client closed the connection in the middle of the head.
    Incomplete,
    /// The head exceeds [`MAX_HEAD`].
    TooLarge,
    Io(io::Error),
}

/// Reads up to and including the blank line ending the request head.
/// Anything after it (a body, pipelined requests) is ignored.
async fn read_head(stream: &TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        stream.readable().await.map_err(HeadError::Io)?;
        let n = match stream.try_read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Incomplete),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        };
        // The terminator may straddle two reads.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(pos) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            let end = from + pos + 4;
            if end > MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Request<'a> {
    method: &'a str,
    /// The target's path, without the query.
    path: &'a str,
}

/// Parses `METHOD SP request-target SP HTTP/1.x` from a request head.
/// Header fields are not needed and not interpreted.
fn parse_request_line(head: &[u8]) -> Option<Request<'_>> {
    let line_end = head.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&head[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_alphabetic())
        || !version.starts_with("HTTP/1.")
    {
        return None;
    }
    // Origin form ("/metrics?x=y"); the absolute form ("http://host/metrics")
    // is accepted too, as HTTP/1.1 servers must.
    let target = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    if !target.starts_with('/') {
        return None;
    }
    let path = target.split(['?', '#']).next().unwrap_or(target);
    Some(Request { method, path })
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads and discards client data until EOF, an error, or [`MAX_DRAIN`].
async fn drain(stream: &TcpStream) {
    let mut chunk = [0u8; 2048];
    let mut total = 0;
    while total < MAX_DRAIN {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::render;
    use crate::metrics::tests::sample;
    use std::io::{Read, Write};
    use std::net::SocketAddr;

    fn ok_snapshot() -> SnapshotFn {
        Arc::new(|| Ok(sample()))
    }

    async fn start(snapshot: SnapshotFn) -> (SocketAddr, tokio::task::JoinHandle<io::Result<()>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local_addr");
        (addr, tokio::spawn(serve(listener, snapshot)))
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
            s.set_read_timeout(Some(Duration::from_secs(10)))
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

    #[tokio::test]
    async fn serves_metrics() {
        let (addr, server) = start(ok_snapshot()).await;
        let r = get(addr, "/metrics").await;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("content-type"), Some(CONTENT_TYPE));
        assert_eq!(r.header("connection"), Some("close"));
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
        // Query strings are ignored.
        assert_eq!(get(addr, "/metrics?x=1").await.status, 200);
        server.abort();
    }

    #[tokio::test]
    async fn healthz_404_405_head() {
        let (addr, server) = start(ok_snapshot()).await;

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
        assert!(r.body.is_empty());
        assert_eq!(
            r.header("content-length"),
            Some(render(&sample()).len().to_string().as_str())
        );
        server.abort();
    }

    #[tokio::test]
    async fn snapshot_error_is_503() {
        let (addr, server) =
            start(Arc::new(|| Err("flow map unreadable: EPERM".to_string()))).await;
        let r = get(addr, "/metrics").await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.body_str(), "flow map unreadable: EPERM");
        // Health does not depend on the snapshot.
        assert_eq!(get(addr, "/healthz").await.status, 200);
        server.abort();
    }

    #[tokio::test]
    async fn snapshot_panic_is_500_and_server_survives() {
        let (addr, server) = start(Arc::new(|| panic!("boom"))).await;
        assert_eq!(get(addr, "/metrics").await.status, 500);
        assert_eq!(get(addr, "/healthz").await.status, 200);
        server.abort();
    }

    #[tokio::test]
    async fn survives_bad_input() {
        let (addr, server) = start(ok_snapshot()).await;

        for garbage in [
            b"\x00\xff\xfe garbage \r\n\r\n".to_vec(),
            b"GET\r\n\r\n".to_vec(),
            b"GET /metrics\r\n\r\n".to_vec(),
            b"GET /metrics HTTP/1.1 extra\r\n\r\n".to_vec(),
            b"GET metrics HTTP/1.1\r\n\r\n".to_vec(),
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

        // Head cut short by the client's half-close.
        let r = tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost:")
                .expect("send");
            s.shutdown(std::net::Shutdown::Write).expect("shutdown");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            out
        })
        .await
        .expect("client");
        assert!(r.starts_with("HTTP/1.1 400 "), "{r:?}");

        // Oversized head.
        let mut big = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
        big.resize(3 * MAX_HEAD, b'a');
        big.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exchange(addr, big).await.status, 431);

        // Connect and hang up without a word.
        drop(tokio::net::TcpStream::connect(addr).await.expect("connect"));

        // Still serving.
        let r = get(addr, "/metrics").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body_str(), render(&sample()));
        assert!(!server.is_finished());
        server.abort();
    }

    #[tokio::test]
    async fn concurrent_scrapes() {
        let (addr, server) = start(ok_snapshot()).await;
        // A client that never finishes its head must not block others.
        let idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let replies: Vec<_> = (0..16)
            .map(|_| tokio::spawn(get(addr, "/metrics")))
            .collect();
        for r in replies {
            assert_eq!(r.await.expect("join").status, 200);
        }
        drop(idle);
        server.abort();
    }

    #[test]
    fn request_line_parsing() {
        fn p(s: &str) -> Option<Request<'_>> {
            parse_request_line(s.as_bytes())
        }
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\n\r\n"),
            Some(Request {
                method: "GET",
                path: "/metrics"
            })
        );
        assert_eq!(
            p("GET /metrics?name[]=x HTTP/1.0\r\nA: b\r\n\r\n"),
            Some(Request {
                method: "GET",
                path: "/metrics"
            })
        );
        assert_eq!(
            p("GET http://h:9100/healthz HTTP/1.1\r\n\r\n"),
            Some(Request {
                method: "GET",
                path: "/healthz"
            })
        );
        assert_eq!(p("GET * HTTP/1.1\r\n\r\n"), None);
        assert_eq!(p("PRI * HTTP/2.0\r\n\r\n"), None);
        assert_eq!(p("G\u{e9}T / HTTP/1.1\r\n\r\n"), None);
        assert_eq!(p(""), None);
    }
}
