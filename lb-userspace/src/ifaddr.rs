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
