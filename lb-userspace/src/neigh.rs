//! Keeps the kernel's neighbour entries for backends resolved. XDP cannot
//! ARP or solicit: `bpf_fib_lookup` only reads the neighbour table, and
//! packets it forwards never refresh an entry. A datagram to each backend's
//! discard port, sent through the stack now and then, makes the kernel
//! resolve the address and keep confirming it.

use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Sends one empty datagram to port 9 of each address. Returns the
/// addresses the kernel has no route to (with the reason): the data plane
/// drops their flows (`drop_no_route`), so the daemon says so by name.
pub fn touch(addrs: &[IpAddr]) -> Vec<(IpAddr, std::io::Error)> {
    let mut unreachable = Vec::new();
    for a in addrs {
        let bind = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        let sent = UdpSocket::bind(bind).and_then(|s| s.send_to(&[], SocketAddr::new(*a, 9)));
        if let Err(e) = sent
            && matches!(
                e.raw_os_error(),
                Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
            )
        {
            unreachable.push((*a, e));
        }
    }
    unreachable
}

/// Turns on IP forwarding for `iface` (both families): `bpf_fib_lookup`
/// refuses to route for an interface that does not forward.
pub fn enable_forwarding(iface: &str) -> std::io::Result<()> {
    for path in [
        format!("/proc/sys/net/ipv4/conf/{iface}/forwarding"),
        format!("/proc/sys/net/ipv6/conf/{iface}/forwarding"),
    ] {
        if std::fs::read_to_string(&path)?.trim() != "1" {
            std::fs::write(&path, "1")?;
            tracing::info!(%iface, "enabled IP forwarding ({path})");
        }
    }
    Ok(())
}

/// At start: asks for every backend's neighbour and waits (up to a second)
/// until the IPv4 ones are resolved, so the first flows are not dropped
/// while ARP is in flight. IPv6 neighbours get a short grace period: the
/// kernel keeps no /proc table of them to poll.
pub fn resolve(addrs: &[IpAddr]) -> Vec<(IpAddr, std::io::Error)> {
    let unreachable = touch(addrs);
    let v4: Vec<String> = addrs
        .iter()
        .filter(|a| a.is_ipv4() && !unreachable.iter().any(|(u, _)| u == *a))
        .map(ToString::to_string)
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        let arp = std::fs::read_to_string("/proc/net/arp").unwrap_or_default();
        // Columns: IP address, HW type, Flags (bit 0x2: complete), HW address, ...
        let done = v4.iter().all(|a| {
            arp.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let flags = f
                    .get(2)
                    .and_then(|x| u32::from_str_radix(x.trim_start_matches("0x"), 16).ok());
                f.first() == Some(&a.as_str()) && flags.is_some_and(|x| x & 0x2 != 0)
            })
        });
        if done {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    if addrs.iter().any(IpAddr::is_ipv6) {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    unreachable
}
