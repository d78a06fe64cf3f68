//! Addresses of local interfaces (the IPIP outer source when the config
//! names none).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The first global address of `iface` in the requested family.
pub fn first(iface: &str, v4: bool) -> Option<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list we free below; we only read it.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() && found.is_none() {
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }.to_string_lossy();
        if name != iface {
            continue;
        }
        let fam = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if v4 && fam == libc::AF_INET {
            let sa = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
            found = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))));
        } else if !v4 && fam == libc::AF_INET6 {
            let sa = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
            let a = Ipv6Addr::from(sa.sin6_addr.s6_addr);
            // Link-local addresses cannot be a tunnel source across routers.
            if (a.segments()[0] & 0xffc0) != 0xfe80 {
                found = Some(IpAddr::V6(a));
            }
        }
    }
    unsafe { libc::freeifaddrs(head) };
    found
}

/// The hardware (MAC) address of `iface`, from SIOCGIFHWADDR: the
/// interface of this process's network namespace, whatever sysfs shows.
pub fn mac(iface: &str) -> std::io::Result<[u8; 6]> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let name = iface.as_bytes();
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= req.ifr_name.len() || name.contains(&0) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{iface:?} is not an interface name"),
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a plain datagram socket, owned (and closed) by `sock`.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // ioctl's request is an unsigned long in glibc and an int in musl (the
    // static aarch64 build); `Ioctl` names whichever this libc takes.
    let request = libc::SIOCGIFHWADDR as libc::Ioctl;
    // SAFETY: SIOCGIFHWADDR reads ifr_name and writes ifr_hwaddr of `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(std::array::from_fn(|i| data[i] as u8))
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_has_the_zero_mac_and_a_missing_interface_is_an_error() {
        assert_eq!(super::mac("lo").expect("lo exists"), [0; 6]);
        assert!(super::mac("xlb-no-such-if").is_err());
        assert!(super::mac("").is_err());
    }
}
