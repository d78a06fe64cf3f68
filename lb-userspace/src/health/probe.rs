//! One probe: a TCP connect, or an HTTP request on it, bounded by a
//! timeout, from a socket that may carry a mark (the DSR path's way into
//! the tunnel) and a chosen source address.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use http_body_util::Empty;
use hyper::{Request, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpSocket, TcpStream};

/// What a probe sends and what counts as a pass.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Ask {
    /// The three-way handshake completes.
    Connect,
    /// An HTTP/1.1 GET answered with a status in `lo..=hi`.
    Http {
        path: String,
        host: Option<String>,
        lo: u16,
        hi: u16,
    },
}

/// Where and how a probe is sent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Probe {
    pub ask: Ask,
    /// The VIP (DSR path) or the backend's own address (direct).
    pub to: SocketAddr,
    /// Bound before connecting: the address a DSR-path answer comes back to.
    pub source: Option<IpAddr>,
    /// `SO_MARK`: steers the probe into the DSR path.
    pub mark: Option<u32>,
    pub timeout: Duration,
}

/// Why a probe failed: what an operator needs to tell a dead service from
/// a broken path.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case", tag = "failure", content = "detail")]
pub enum Failure {
    /// No answer within the timeout: the host or the path drops the probe
    /// (a DSR-path probe also times out when the backend cannot decapsulate
    /// or does not hold the VIP).
    #[error("timed out")]
    Timeout,
    /// The backend refused the connection (nothing listens on the port).
    #[error("connection refused")]
    Refused,
    /// The connection was reset or closed before an answer.
    #[error("connection reset")]
    Reset,
    /// No route, unreachable, or another socket error.
    #[error("{0}")]
    Network(String),
    /// An HTTP answer outside the expected range.
    #[error("HTTP status {0}")]
    Status(u16),
    /// Not an HTTP answer.
    #[error("bad HTTP answer: {0}")]
    Http(String),
}

impl Failure {
    /// A short stable name for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Refused => "refused",
            Self::Reset => "reset",
            Self::Network(_) => "network",
            Self::Status(_) => "status",
            Self::Http(_) => "http",
        }
    }
}

/// Runs one probe; on success, how long it took.
pub async fn run(p: &Probe) -> Result<Duration, Failure> {
    let started = Instant::now();
    match tokio::time::timeout(p.timeout, attempt(p)).await {
        Ok(Ok(())) => Ok(started.elapsed()),
        Ok(Err(f)) => Err(f),
        Err(_) => Err(Failure::Timeout),
    }
}

async fn attempt(p: &Probe) -> Result<(), Failure> {
    let stream = connect(p).await?;
    match &p.ask {
        Ask::Connect => Ok(()),
        Ask::Http { path, host, lo, hi } => {
            let code = get(stream, p.to, path, host.as_deref()).await?;
            if (*lo..=*hi).contains(&code) {
                Ok(())
            } else {
                Err(Failure::Status(code))
            }
        }
    }
}

async fn connect(p: &Probe) -> Result<TcpStream, Failure> {
    let domain = socket2::Domain::for_address(p.to);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
        .map_err(network)?;
    if let Some(mark) = p.mark {
        socket.set_mark(mark).map_err(network)?;
    }
    socket.set_nonblocking(true).map_err(network)?;
    // A probe's socket is short-lived: closed with a reset, it leaves no
    // TIME_WAIT on the router holding ports of a 1,000-backend check set.
    socket.set_linger(Some(Duration::ZERO)).map_err(network)?;
    if let Some(source) = p.source {
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .map_err(network)?;
    }
    let socket = TcpSocket::from_std_stream(std::net::TcpStream::from(socket));
    socket.connect(p.to).await.map_err(io_failure)
}

async fn get(
    stream: TcpStream,
    to: SocketAddr,
    path: &str,
    host: Option<&str>,
) -> Result<u16, Failure> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_failure)?;
    let driver = tokio::spawn(conn);
    let host = host.map_or_else(|| to.to_string(), str::to_owned);
    let request = Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "xlb-health-check")
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| Failure::Http(e.to_string()))?;
    let answer = sender.send_request(request).await;
    driver.abort();
    Ok(answer.map_err(http_failure)?.status().as_u16())
}

fn network(e: std::io::Error) -> Failure {
    Failure::Network(e.to_string())
}

fn io_failure(e: std::io::Error) -> Failure {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => Failure::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof | K::BrokenPipe => {
            Failure::Reset
        }
        K::TimedOut => Failure::Timeout,
        _ => network(e),
    }
}

fn http_failure(e: hyper::Error) -> Failure {
    // hyper wraps the socket's error; a reset mid-request is a reset.
    let io = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>());
    match io {
        Some(io) => io_failure(std::io::Error::new(io.kind(), io.to_string())),
        None if e.is_incomplete_message() => Failure::Reset,
        None => Failure::Http(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn probe(to: SocketAddr, ask: Ask) -> Probe {
        Probe {
            ask,
            to,
            source: None,
            mark: None,
            timeout: Duration::from_millis(500),
        }
    }

    fn http(lo: u16, hi: u16) -> Ask {
        Ask::Http {
            path: "/healthz".into(),
            host: Some("svc.example".into()),
            lo,
            hi,
        }
    }

    /// A one-shot HTTP server answering `answer`, handing back the request.
    async fn server(answer: &'static str) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(got).unwrap()
        });
        (at, task)
    }

    #[tokio::test]
    async fn an_http_answer_in_range_passes_and_the_request_names_path_and_host() {
        let (at, req) = server("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n").await;
        run(&probe(at, http(200, 299))).await.unwrap();
        let req = req.await.unwrap();
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
        assert!(
            req.to_ascii_lowercase().contains("host: svc.example\r\n"),
            "{req}"
        );
    }

    #[tokio::test]
    async fn an_http_answer_out_of_range_fails_with_its_status() {
        let (at, _req) = server("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(
            run(&probe(at, http(200, 399))).await,
            Err(Failure::Status(503))
        );
    }

    #[tokio::test]
    async fn garbage_is_not_an_http_answer() {
        let (at, _req) = server("SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        let got = run(&probe(at, http(200, 399))).await;
        assert!(matches!(got, Err(Failure::Http(_))), "{got:?}");
    }

    #[tokio::test]
    async fn a_closed_port_is_refused() {
        // Bound then dropped: nothing listens there now.
        let at = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(run(&probe(at, Ask::Connect)).await, Err(Failure::Refused));
    }

    #[tokio::test]
    async fn a_server_that_accepts_and_never_answers_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = l.local_addr().unwrap();
        // The backlog completes the handshake; nobody reads or answers.
        let mut p = probe(at, http(200, 399));
        p.timeout = Duration::from_millis(200);
        assert_eq!(run(&p).await, Err(Failure::Timeout));
        assert_eq!(run(&probe(at, Ask::Connect)).await.map(|_| ()), Ok(()));
        drop(l);
    }
}
