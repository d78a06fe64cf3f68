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
