//! Keeps the kernel's neighbour entries for backends resolved. XDP cannot
//! ARP or solicit: `bpf_fib_lookup` only reads the neighbour table, and
//! packets it forwards never refresh an entry. A datagram to each backend's
//! discard port, sent through the stack now and then, makes the kernel
//! resolve the address and keep confirming it.

use std::net::{IpAddr, SocketAddr, UdpSocket};

/// Sends one empty datagram to port 9 of each address (errors ignored: an
/// unreachable backend is reported by the data plane's counters).
pub fn touch(addrs: &[IpAddr]) {
    let v4 = UdpSocket::bind("0.0.0.0:0").ok();
    let v6 = UdpSocket::bind("[::]:0").ok();
    for a in addrs {
        let sock = if a.is_ipv4() {
            v4.as_ref()
        } else {
            v6.as_ref()
        };
        if let Some(s) = sock {
            let _ = s.send_to(&[], SocketAddr::new(*a, 9));
        }
    }
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
