//! A packet socket bound to one interface: sends whole Ethernet frames and
//! holds the interface's membership in Ethernet multicast groups (for as
//! long as it is open; the kernel drops them when it closes, so a daemon
//! that dies leaves no group behind).

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

pub struct Link {
    sock: OwnedFd,
    pub ifindex: u32,
    pub name: String,
    pub mac: [u8; 6],
}

impl Link {
    /// A socket on `name` that receives nothing (protocol 0).
    pub fn open(name: &str) -> io::Result<Self> {
        let (ifindex, mac) = interface(name)?;
        // SAFETY: a plain socket call; the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = sockaddr(ifindex, [0; 6]);
        // SAFETY: a sockaddr_ll of its own size.
        let r = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            sock,
            ifindex,
            name: name.to_owned(),
            mac,
        })
    }

    /// Sends one whole frame (Ethernet header included).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        send(&self.sock, self.ifindex, frame)
    }

    /// Makes the interface accept frames to Ethernet group `mac` (a NIC's
    /// filter drops groups nobody joined before XDP sees them).
    pub fn join(&self, mac: [u8; 6]) -> io::Result<()> {
        self.membership(libc::PACKET_ADD_MEMBERSHIP, mac)
    }

    pub fn leave(&self, mac: [u8; 6]) -> io::Result<()> {
        self.membership(libc::PACKET_DROP_MEMBERSHIP, mac)
    }

    fn membership(&self, op: libc::c_int, mac: [u8; 6]) -> io::Result<()> {
        let mut mr = libc::packet_mreq {
            mr_ifindex: self.ifindex as i32,
            mr_type: libc::PACKET_MR_MULTICAST as u16,
            mr_alen: 6,
            mr_address: [0; 8],
        };
        mr.mr_address[..6].copy_from_slice(&mac);
        // SAFETY: a packet_mreq of its own size.
        let r = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_PACKET,
                op,
                (&mr as *const libc::packet_mreq).cast(),
                size_of::<libc::packet_mreq>() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The index and MAC of interface `name` in this network namespace.
pub(super) fn interface(name: &str) -> io::Result<(u32, [u8; 6])> {
    let ifindex = crate::xdp::attach::index_of(name);
    if ifindex == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {name}"),
        ));
    }
    Ok((ifindex, crate::ifaddr::mac(name)?))
}

/// Sends `frame` (Ethernet header included) out of `ifindex` through the
/// packet socket `sock`.
pub(super) fn send(sock: &OwnedFd, ifindex: u32, frame: &[u8]) -> io::Result<()> {
    let dst: [u8; 6] = frame[..6].try_into().expect("an Ethernet frame");
    let addr = sockaddr(ifindex, dst);
    // SAFETY: `frame` is readable for its length; the address is a
    // sockaddr_ll of its own size.
    let n = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn sockaddr(ifindex: u32, dst: [u8; 6]) -> libc::sockaddr_ll {
    let mut addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: 0,
        sll_ifindex: ifindex as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr: [0; 8],
    };
    addr.sll_addr[..6].copy_from_slice(&dst);
    addr
}
