//! The traffic of the peers benchmark and the clocks and counters that
//! measure it: TCP connects timed one by one, HTTP load by wrk, UDP
//! datagrams sent flat out or at a fixed rate, the backends' UDP counters
//! and the machine's CPU time from /proc.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};

use super::{Http, Quantiles};
use crate::netns::NetNs;

/// Connects `count` times from `ns`, to `targets` in turn, one connection
/// at a time; the time of each `connect` (SYN out to SYN-ACK in, and the
/// ACK written), in microseconds. Each connection is reset on close
/// (SO_LINGER 0), which leaves no TIME_WAIT to run out of ports with and
/// ends the NAT configurations' conntrack entries at once.
pub fn connect_times(ns: &NetNs, targets: &[SocketAddr], count: usize) -> Result<Vec<f64>> {
    ensure!(!targets.is_empty(), "no target to connect to");
    ns.run(|| {
        let mut us = Vec::with_capacity(count);
        for i in 0..count {
            let to = targets[i % targets.len()];
            let t = Instant::now();
            let c = TcpStream::connect_timeout(&to, Duration::from_secs(3))
                .with_context(|| format!("connect {i} to {to}"))?;
            us.push(t.elapsed().as_secs_f64() * 1e6);
            reset_on_close(&c)?;
        }
        Ok(us)
    })
}

fn reset_on_close(c: &TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            c.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    Ok(())
}

/// wrk from `ns` against `url`: `connections` kept-alive connections on one
/// thread for `duration`.
pub fn wrk(ns: &NetNs, url: &str, connections: u32, duration: Duration) -> Result<Http> {
    let out = ns
        .command("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs().max(1)),
            "--latency",
            url,
        ])
        .output()
        .context("run wrk (Debian package wrk; cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "wrk {url}: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_wrk(&text).with_context(|| format!("wrk's output for {url}:\n{text}"))
}

/// Requests/s and the 50% and 99% lines of `wrk --latency`'s output;
/// errors when wrk saw any socket error or non-2xx/3xx answer.
fn parse_wrk(text: &str) -> Result<Http> {
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    for line in text.lines().map(str::trim) {
        let mut w = line.split_whitespace();
        match (w.next(), w.next()) {
            (Some("Requests/sec:"), Some(v)) => rps = Some(v.parse::<f64>()?),
            (Some("50%"), Some(v)) => p50 = Some(wrk_ms(v)?),
            (Some("99%"), Some(v)) => p99 = Some(wrk_ms(v)?),
            (Some("Socket"), Some("errors:")) => bail!("wrk: {line}"),
            (Some("Non-2xx"), _) => bail!("wrk: {line}"),
            _ => {}
        }
    }
    Ok(Http {
        requests_per_s: rps.context("no Requests/sec line")?,
        latency_ms: Quantiles {
            median: p50.context("no 50% line")?,
            p99: p99.context("no 99% line")?,
        },
    })
}

/// A wrk duration (`812.00us`, `1.23ms`, `2.00s`) in milliseconds.
fn wrk_ms(v: &str) -> Result<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1e3)
    } else {
        bail!("unknown unit in {v:?}")
    };
    Ok(num.parse::<f64>().with_context(|| v.to_string())? * scale)
}

/// Payload of every datagram: with UDP, IP and Ethernet headers a 60-byte
/// frame, the smallest Ethernet carries.
const PAYLOAD: [u8; 18] = *b"xlb-peers-datagram";
/// Datagrams per sendmmsg call.
const BATCH: usize = 32;

/// How fast [`udp_send`] sends.
#[derive(Clone, Copy, Debug)]
pub enum Rate {
    /// As fast as one thread can.
    FlatOut,
    /// About this many datagrams per second, a whole batch at a time.
    PerSecond(u64),
}

/// Sends UDP datagrams from `ns` for `duration`, from `flows` sockets (so
/// as many source ports, each a flow the balancers spread) connected to
/// `targets` in turn, taking turns a batch at a time; returns how many
/// were sent.
pub fn udp_send(
    ns: &NetNs,
    targets: &[SocketAddr],
    flows: usize,
    rate: Rate,
    duration: Duration,
) -> Result<u64> {
    ensure!(!targets.is_empty(), "no target to send to");
    ns.run(|| {
        let socks = (0..flows)
            .map(|i| {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.connect(targets[i % targets.len()])?;
                Ok(s)
            })
            .collect::<std::io::Result<Vec<_>>>()
            .context("UDP sockets")?;
        let start = Instant::now();
        let mut sent = 0u64;
        let mut turn = 0usize;
        // Paced, always whole batches, each when it falls due: the system
        // call's cost per datagram stays the same from run to run however
        // late the sleeps wake. A batch is at most a millisecond's worth,
        // so that a short run still takes turns over every flow.
        let batch = match rate {
            Rate::FlatOut => BATCH,
            Rate::PerSecond(pps) => (pps / 1_000).clamp(1, BATCH as u64) as usize,
        };
        while start.elapsed() < duration {
            if let Rate::PerSecond(pps) = rate {
                let due =
                    start + Duration::from_secs_f64((sent + batch as u64) as f64 / pps as f64);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            sent += send_batch(&socks[turn % socks.len()], batch) as u64;
            turn += 1;
        }
        Ok(sent)
    })
}

/// One sendmmsg of `n` copies of the payload on a connected socket; how
/// many went (a full socket buffer sends fewer, and that is counted).
fn send_batch(s: &UdpSocket, n: usize) -> usize {
    let mut iov = libc::iovec {
        iov_base: PAYLOAD.as_ptr() as *mut libc::c_void,
        iov_len: PAYLOAD.len(),
    };
    let mut msgs: Vec<libc::mmsghdr> = (0..n)
        .map(|_| {
            // SAFETY: an all-zero mmsghdr is a valid empty message.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: `msgs` holds `n` initialised headers whose one iovec points at
    // a live buffer; the socket is connected, so no address is needed.
    let rc = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) };
    rc.max(0) as usize
}

/// The UDP counters of one namespace (/proc/net/snmp as seen from it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpCounters {
    /// Datagrams the UDP layer accepted: delivered to a socket, or with no
    /// socket on the port, or dropped for a full receive buffer.
    pub arrived: u64,
    /// Datagrams with a bad checksum: a forwarding bug, never load.
    pub bad_checksum: u64,
}

impl std::ops::Sub for UdpCounters {
    type Output = Self;
    fn sub(self, o: Self) -> Self {
        Self {
            arrived: self.arrived - o.arrived,
            bad_checksum: self.bad_checksum - o.bad_checksum,
        }
    }
}

/// `ns`'s UDP counters.
pub fn udp_counters(ns: &NetNs) -> Result<UdpCounters> {
    // /proc/thread-self: the namespace of this thread, which `run` moved;
    // /proc/self/net would be the process's.
    let text = ns.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))?;
    parse_snmp_udp(&text)
}

fn parse_snmp_udp(text: &str) -> Result<UdpCounters> {
    let mut lines = text.lines().filter(|l| l.starts_with("Udp: "));
    let (names, values) = (
        lines.next().context("no Udp: header in snmp")?,
        lines.next().context("no Udp: values in snmp")?,
    );
    let field = |name: &str| -> Result<u64> {
        let i = names
            .split_whitespace()
            .position(|n| n == name)
            .with_context(|| format!("no Udp field {name}"))?;
        Ok(values
            .split_whitespace()
            .nth(i)
            .context("short Udp values")?
            .parse()?)
    };
    Ok(UdpCounters {
        arrived: field("InDatagrams")? + field("NoPorts")? + field("RcvbufErrors")?,
        bad_checksum: field("InCsumErrors")?,
    })
}

/// Kernel CPU time of the whole machine so far: system, irq and softirq
/// over every CPU (/proc/stat). Forwarding is all kernel work (the
/// sender's system calls, the balancer, the receivers); user time is left
/// out, which keeps whatever else the machine runs (compilers) out of most
/// of the figure.
pub fn kernel_cpu() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    parse_stat_cpu(&stat)
}

fn parse_stat_cpu(stat: &str) -> Result<Duration> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("/proc/stat cpu line")?;
    ensure!(f.len() >= 8, "short cpu line in /proc/stat: {line}");
    // user nice system idle iowait irq softirq steal.
    let busy = f[2] + f[5] + f[6];
    // SAFETY: sysconf reads a constant of the C library.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_micros(busy * 1_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let out = "Running 2s test @ http://10.99.0.1/\n  1 threads and 16 connections\n  Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   812.53us  201.00us   3.10ms   80.00%\n  Latency Distribution\n     50%  790.00us\n     75%    1.02ms\n     90%    1.50ms\n     99%    2.25ms\n  41234 requests in 2.00s, 3.10MB read\nRequests/sec:  20617.00\nTransfer/sec:      1.55MB\n";
        let h = parse_wrk(out).unwrap();
        assert_eq!(h.requests_per_s, 20617.0);
        assert!((h.latency_ms.median - 0.79).abs() < 1e-9);
        assert!((h.latency_ms.p99 - 2.25).abs() < 1e-9);
        let bad = format!("{out}  Socket errors: connect 0, read 3, write 0, timeout 0\n");
        assert!(parse_wrk(&bad).is_err());
        assert!(parse_wrk("Requests/sec: 1\n").is_err());
        assert_eq!(wrk_ms("2.00s").unwrap(), 2000.0);
        assert!(wrk_ms("3m").is_err());
    }

    #[test]
    fn snmp_udp_counters_are_read() {
        let t = "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors InCsumErrors IgnoredMulti MemErrors\nUdp: 10 5 0 3 2 0 1 0 0\nUdpLite: InDatagrams NoPorts\nUdpLite: 0 0\n";
        let c = parse_snmp_udp(t).unwrap();
        assert_eq!(
            c,
            UdpCounters {
                arrived: 17,
                bad_checksum: 1
            }
        );
    }

    #[test]
    fn stat_kernel_time_is_system_irq_and_softirq() {
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        let t = format!("cpu  777 1 {hz} 999999 5555 {hz} {hz} 3 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n");
        assert_eq!(parse_stat_cpu(&t).unwrap(), Duration::from_secs(3));
    }
}
