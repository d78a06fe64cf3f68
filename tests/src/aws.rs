//! The cloud side of the `aws` announce tests: a real moto server (the EC2
//! and IAM APIs), a forwarding proxy in front of it that records every EC2
//! call the daemon makes and can answer some with `RequestLimitExceeded`,
//! and an IMDSv2 responder, the one double (moto has no instance metadata
//! service): it hands out a session token on PUT and answers metadata
//! reads that carry it, and refuses reads without one, as an instance that
//! requires IMDSv2 does.

use std::{
    collections::HashMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::daemon::free_port;

/// A `moto_server` on the host's loopback; killed on drop.
pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
}

impl Moto {
    /// IAM is not enforced until [`Moto::enforce_iam`].
    pub fn start() -> Self {
        let port = free_port();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto_server (cargo xtask setup installs moto[server])");
        let m = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while http(m.addr, "GET", "/moto-api/", "", &[]).map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        m
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request from now on is checked against IAM policies (moto's
    /// `reset-auth`; the body must be text/plain or moto fails with 500).
    pub fn enforce_iam(&self) {
        let r = http(
            self.addr,
            "POST",
            "/moto-api/reset-auth",
            "0",
            &[("Content-Type", "text/plain")],
        );
        assert_eq!(r.map(|r| r.0), Some(200), "moto reset-auth");
    }

    /// An IAM user allowed exactly `actions` (moto checks the Action part
    /// of a policy only); returns its access key id and secret.
    pub fn iam_user(&self, name: &str, actions: &[&str]) -> (String, String) {
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{ "Effect": "Allow", "Action": actions, "Resource": "*" }]
        });
        self.iam_user_with_policy(name, &policy)
    }

    /// An IAM user with `policy` as its one inline policy; returns its
    /// access key id and secret. Made with boto3, which moto brings,
    /// through the unauthenticated setup window.
    pub fn iam_user_with_policy(&self, name: &str, policy: &serde_json::Value) -> (String, String) {
        let script = r#"
import boto3, sys
url, name, policy = sys.argv[1], sys.argv[2], sys.argv[3]
iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
iam.create_user(UserName=name)
iam.put_user_policy(UserName=name, PolicyName="xlb", PolicyDocument=policy)
k = iam.create_access_key(UserName=name)["AccessKey"]
print(k["AccessKeyId"], k["SecretAccessKey"])
"#;
        let out = Command::new("python3")
            .args(["-c", script, &self.url(), name, &policy.to_string()])
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "IAM setup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let mut it = text.split_whitespace();
        (it.next().unwrap().to_owned(), it.next().unwrap().to_owned())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One EC2 call as the proxy saw it: its form parameters, when, and
/// whether the proxy answered it with a throttling error itself.
#[derive(Clone, Debug)]
pub struct Call {
    pub params: HashMap<String, String>,
    pub at: Instant,
    pub throttled: bool,
}

impl Call {
    pub fn action(&self) -> &str {
        self.params.get("Action").map_or("", String::as_str)
    }

    pub fn param(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct ProxyState {
    calls: Vec<Call>,
    /// Action -> how many more of it to answer with RequestLimitExceeded.
    throttle: HashMap<String, u32>,
}

/// Forwards EC2 requests to moto, one per connection, recording them.
pub struct Ec2Proxy {
    pub addr: SocketAddr,
    state: Arc<Mutex<ProxyState>>,
    stop: Arc<AtomicBool>,
}

impl Ec2Proxy {
    /// Serves on `listener` (made in whatever namespace the daemons reach
    /// it from) and forwards to `upstream` from the host's namespace.
    pub fn serve(listener: TcpListener, upstream: SocketAddr) -> Self {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || forward(conn, upstream, &s));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `n` calls of `action` with HTTP 503
    /// `RequestLimitExceeded`, as EC2 does when throttling.
    pub fn throttle(&self, action: &str, n: u32) {
        self.state
            .lock()
            .unwrap()
            .throttle
            .insert(action.to_owned(), n);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn calls_of(&self, action: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.action() == action)
            .collect()
    }
}

impl Drop for Ec2Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

const THROTTLED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message></Error></Errors>\
<RequestID>xlb-test-proxy</RequestID></Response>";

fn forward(conn: TcpStream, upstream: SocketAddr, state: &Mutex<ProxyState>) {
    conn.set_nonblocking(false).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let Some((head, body)) = read_request(&mut reader) else {
        return;
    };
    let params = form(&String::from_utf8_lossy(&body));
    let action = params.get("Action").cloned().unwrap_or_default();
    let throttled = {
        let mut s = state.lock().unwrap();
        let left = s.throttle.get_mut(&action);
        let throttled = match left {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        s.calls.push(Call {
            params,
            at: Instant::now(),
            throttled,
        });
        throttled
    };
    let mut out = conn;
    if throttled {
        let _ = write!(
            out,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{THROTTLED}",
            THROTTLED.len()
        );
        return;
    }
    // To moto, asking it to close after answering, so its answer ends at EOF.
    let Ok(mut up) = TcpStream::connect(upstream) else {
        return;
    };
    let mut head: Vec<String> = head
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(str::to_owned)
        .collect();
    head.push("Connection: close".into());
    let _ = up.write_all(format!("{}\r\n\r\n", head.join("\r\n")).as_bytes());
    let _ = up.write_all(&body);
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer);
    let _ = out.write_all(&answer);
}

/// A request's head (request line and headers, without the blank line)
/// and its body, by Content-Length.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(&line);
    }
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((head.trim_end().to_owned(), body))
}

fn form(body: &str) -> HashMap<String, String> {
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (unescape(k), unescape(v)))
        .collect()
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An IMDSv2 responder for one instance: `PUT /latest/api/token` (with a
/// TTL header) gives a token; `GET /latest/meta-data/...` answers with it
/// and only with it (401 otherwise).
pub struct Imds {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// Metadata reads refused for want of a token.
    pub refused: Arc<Mutex<u32>>,
}

impl Imds {
    pub fn serve(listener: TcpListener, region: &str, mac: &str, eni: &str) -> Self {
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let token = format!("xlb-test-token-{}", addr.port());
        let data: HashMap<String, String> = [
            (
                "/latest/meta-data/placement/region".to_owned(),
                region.to_owned(),
            ),
            ("/latest/meta-data/mac".to_owned(), mac.to_owned()),
            (
                format!("/latest/meta-data/network/interfaces/macs/{mac}/interface-id"),
                eni.to_owned(),
            ),
        ]
        .into();
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(Mutex::new(0));
        let (st, rf) = (stop.clone(), refused.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                conn.set_nonblocking(false).unwrap();
                let (token, data, rf) = (token.clone(), data.clone(), rf.clone());
                // A thread per connection: the SDK may hold its token
                // connection open while it reads on another.
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    // Keep-alive: the SDK reuses its connection.
                    while let Some((head, _)) = read_request(&mut r) {
                        let mut lines = head.lines();
                        let first = lines.next().unwrap_or("");
                        let mut parts = first.split(' ');
                        let (method, path) =
                            (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                        let header = |name: &str| {
                            head.lines().skip(1).find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
                            })
                        };
                        let (status, body) = if method == "PUT" && path == "/latest/api/token" {
                            match header("x-aws-ec2-metadata-token-ttl-seconds") {
                                Some(_) => ("200 OK", token.clone()),
                                None => ("400 Bad Request", String::new()),
                            }
                        } else if header("x-aws-ec2-metadata-token").as_deref() != Some(&token) {
                            *rf.lock().unwrap() += 1;
                            ("401 Unauthorized", String::new())
                        } else {
                            match data.get(path) {
                                Some(v) => ("200 OK", v.clone()),
                                None => ("404 Not Found", String::new()),
                            }
                        };
                        let mut w = &conn;
                        let ttl = if status.starts_with("200") && method == "PUT" {
                            "X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n"
                        } else {
                            ""
                        };
                        if write!(
                        w,
                        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n{ttl}Content-Length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .is_err()
                    {
                        break;
                    }
                    }
                });
            }
        });
        Self {
            addr,
            stop,
            refused,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Imds {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A plain HTTP/1.1 request; (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The test's own EC2 client, straight to moto (not through the proxy).
pub async fn ec2(moto: &Moto) -> aws_sdk_ec2::Client {
    ec2_as(moto, "testing", "testing").await
}

/// A client of moto with these credentials (an IAM user's, once moto
/// enforces IAM).
pub async fn ec2_as(moto: &Moto, key: &str, secret: &str) -> aws_sdk_ec2::Client {
    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_ec2::config::Credentials;
    let conf = aws_config::defaults(BehaviorVersion::latest())
        .http_client(lb_userspace::announce::aws::http_client())
        .endpoint_url(moto.url())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(key, secret, None, None, "test"))
        .load()
        .await;
    aws_sdk_ec2::Client::new(&conf)
}

/// deploy/aws/iam-policy.json as shipped.
pub fn shipped_policy() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/aws/iam-policy.json");
    let text = std::fs::read_to_string(path).expect("deploy/aws/iam-policy.json");
    serde_json::from_str(&text).expect("the IAM policy is JSON")
}

/// The shipped policy as far as moto can check it: moto authorizes EC2
/// requests against the resource `*` and evaluates no EC2 condition keys,
/// so each statement keeps its actions with `"Resource": "*"` and no
/// condition. An action the daemon needs and the policy lacks is still
/// refused; the narrowing to resource types and tag keys goes untested.
pub fn shipped_policy_as_moto_checks_it() -> serde_json::Value {
    let mut p = shipped_policy();
    for st in p["Statement"].as_array_mut().expect("statements") {
        let st = st.as_object_mut().expect("a statement");
        st.insert("Resource".into(), "*".into());
        st.remove("Condition");
    }
    p
}
