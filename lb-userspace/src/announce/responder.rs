//! ARP and neighbour discovery answered from userspace, for the IPVS data
//! plane (no XDP program runs there). One thread per interface reads ARP
//! and neighbour solicitations from packet sockets and answers those for
//! claimed addresses ([`super::answer`]), under the same liveness gate as
//! the XDP program: a heartbeat older than its bound silences it.
//!
//! IPVS needs every VIP local (a `local` route), and the kernel answers
//! ARP for any local address unless `arp_ignore` says otherwise:
//! [`quiet_kernel`] makes it answer only for addresses on the interface
//! asked on, so the elected node is the only one answering for a VIP.
//! (IPv6 answers only for interface addresses anyway.)

use std::{
    collections::BTreeSet,
    io,
    net::IpAddr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use super::{
    answer::answer,
    claimer::Claimer,
    link::{interface, send},
};
use crate::xdp::claims::monotonic_ns;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// What the responder answered, counted as the XDP program counts its
/// `arp_replied` and `ndp_advertised` outcomes.
#[derive(Debug, Default)]
pub struct Answered {
    arp: AtomicU64,
    ndp: AtomicU64,
}

impl Answered {
    /// By the XDP outcome's name, so the metrics read alike on both data
    /// planes.
    pub fn outcomes(&self) -> [(&'static str, u64); 2] {
        use lb_common::Outcome;
        [
            (Outcome::ArpReplied.name(), self.arp.load(Ordering::Relaxed)),
            (
                Outcome::NdpAdvertised.name(),
                self.ndp.load(Ordering::Relaxed),
            ),
        ]
    }

    fn count(&self, reply: &[u8]) {
        let arp = reply.get(12..14) == Some(&ETH_P_ARP.to_be_bytes()[..]);
        let n = if arp { &self.arp } else { &self.ndp };
        n.fetch_add(1, Ordering::Relaxed);
    }
}

/// Shared between the announcer and the threads.
#[derive(Default)]
struct Shared {
    owned: RwLock<BTreeSet<IpAddr>>,
    answered: Arc<Answered>,
    /// CLOCK_MONOTONIC ns of the last heartbeat, and the bound.
    stamp_ns: AtomicU64,
    bound_ns: AtomicU64,
    stop: AtomicBool,
}

impl Shared {
    fn fresh(&self) -> bool {
        let bound = self.bound_ns.load(Ordering::Relaxed);
        monotonic_ns().saturating_sub(self.stamp_ns.load(Ordering::Relaxed)) < bound
    }
}

pub struct Responder {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Responder {
    /// Listens on each of `interfaces`.
    pub fn start(interfaces: &[String]) -> io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        for name in interfaces {
            let (ifindex, mac) = interface(name)?;
            let sockets = [
                listen(ifindex, ETH_P_ARP, None)?,
                listen(ifindex, ETH_P_IPV6, Some(SOLICITATIONS))?,
            ];
            for sock in sockets {
                let shared = shared.clone();
                let name = name.clone();
                threads.push(
                    std::thread::Builder::new()
                        .name(format!("xlb-respond-{name}"))
                        .spawn(move || serve(&sock, ifindex, mac, &shared, &name))?,
                );
            }
        }
        Ok(Self { shared, threads })
    }

    /// Its answer counts, readable after the responder is handed over.
    pub fn answered(&self) -> Arc<Answered> {
        self.shared.answered.clone()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Claimer for Responder {
    fn claim(&mut self, a: IpAddr) -> Result<(), String> {
        self.shared.owned.write().expect("not poisoned").insert(a);
        Ok(())
    }

    fn release(&mut self, a: IpAddr) -> Result<(), String> {
        self.shared.owned.write().expect("not poisoned").remove(&a);
        Ok(())
    }

    fn claimed(&self) -> BTreeSet<IpAddr> {
        self.shared.owned.read().expect("not poisoned").clone()
    }

    fn beat(&mut self, bound: Duration) -> Result<(), String> {
        let bound = bound.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.shared.bound_ns.store(bound, Ordering::Relaxed);
        self.shared
            .stamp_ns
            .store(monotonic_ns(), Ordering::Relaxed);
        Ok(())
    }

    fn silence(&mut self) -> Result<(), String> {
        self.shared.bound_ns.store(0, Ordering::Relaxed);
        Ok(())
    }
}

/// Answers what arrives on `sock` until told to stop.
fn serve(sock: &OwnedFd, ifindex: u32, mac: [u8; 6], shared: &Shared, name: &str) {
    let mut buf = [0u8; 2048];
    while !shared.stop.load(Ordering::Relaxed) {
        let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_ll>() as u32;
        // SAFETY: the buffer and the address are ours, of the sizes given.
        let n = unsafe {
            libc::recvfrom(
                sock.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        // A timeout (to look at `stop`), or an interrupted call.
        if n <= 0 {
            continue;
        }
        // Our own replies come back as outgoing frames.
        if from.sll_pkttype == libc::PACKET_OUTGOING || !shared.fresh() {
            continue;
        }
        let reply = {
            let owned = shared.owned.read().expect("not poisoned");
            answer(&buf[..n as usize], mac, |a| owned.contains(&a))
        };
        if let Some(reply) = reply {
            match send(sock, ifindex, &reply) {
                Ok(()) => shared.answered.count(&reply),
                Err(e) => tracing::warn!(iface = %name, "responder: reply not sent: {e}"),
            }
        }
    }
}

/// ip6 next header 58 (ICMPv6) and ICMPv6 type 135: neighbour
/// solicitations only, so IPv6 traffic does not all come up here.
const SOLICITATIONS: &[libc::sock_filter] = &[
    libc::sock_filter {
        code: 0x30, // ld byte [20]
        jt: 0,
        jf: 0,
        k: 20,
    },
    libc::sock_filter {
        code: 0x15, // jeq #58
        jt: 0,
        jf: 3,
        k: 58,
    },
    libc::sock_filter {
        code: 0x30, // ld byte [54]
        jt: 0,
        jf: 0,
        k: 54,
    },
    libc::sock_filter {
        code: 0x15, // jeq #135
        jt: 0,
        jf: 1,
        k: 135,
    },
    libc::sock_filter {
        code: 0x06, // ret whole frame
        jt: 0,
        jf: 0,
        k: 0xffff,
    },
    libc::sock_filter {
        code: 0x06, // ret 0: dropped
        jt: 0,
        jf: 0,
        k: 0,
    },
];

/// A packet socket on `ifindex` for `protocol`, with `filter`, timing out
/// every 200 ms.
fn listen(
    ifindex: u32,
    protocol: u16,
    filter: Option<&[libc::sock_filter]>,
) -> io::Result<OwnedFd> {
    // SAFETY: plain socket calls on a descriptor owned below; every
    // pointer passed is to a value of the size given.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(protocol.to_be()),
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        if let Some(f) = filter {
            let prog = libc::sock_fprog {
                len: f.len() as u16,
                filter: f.as_ptr().cast_mut(),
            };
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                (&prog as *const libc::sock_fprog).cast(),
                size_of::<libc::sock_fprog>() as u32,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = protocol.to_be();
        addr.sll_ifindex = ifindex as i32;
        if libc::bind(
            fd,
            (&addr as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as u32,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }
}

/// The kernel answers ARP only for addresses of the interface asked on
/// (`arp_ignore = 1`), and names only such a source in its own requests
/// (`arp_announce = 2`): VIPs made local for IPVS are then answered by the
/// announcer alone. Returns what it changed.
pub fn quiet_kernel(interfaces: &[String]) -> Result<Vec<String>, String> {
    let mut changed = Vec::new();
    for conf in std::iter::once("all").chain(interfaces.iter().map(String::as_str)) {
        for (key, want) in [("arp_ignore", "1"), ("arp_announce", "2")] {
            let path = format!("/proc/sys/net/ipv4/conf/{conf}/{key}");
            let now = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
            if now.trim() != want {
                std::fs::write(&path, want).map_err(|e| format!("{path}: {e}"))?;
                changed.push(format!("net.ipv4.conf.{conf}.{key}={want}"));
            }
        }
    }
    Ok(changed)
}
