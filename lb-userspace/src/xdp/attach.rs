//! Attaching the balancer to interfaces through pinned bpf_links, so the
//! program stays attached while no daemon runs, and a new daemon swaps its
//! program in atomically (`bpf_link_update`: no packet sees no program).

use aya::programs::{
    Xdp, XdpMode as Flags,
    links::{FdLink, LinkError, PinnedLink},
    xdp::{XdpLink, XdpLinkId},
};

use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp},
};

use super::pins::PinDir;
use crate::config::XdpMode as Mode;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("interface {0} does not exist")]
    NoInterface(String),
    #[error("attaching XDP to {iface} ({mode}): {source}")]
    Attach {
        iface: String,
        mode: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("pinned link {path}: {source}")]
    Link { path: String, source: LinkError },
    #[error("replacing the program on {iface}'s pinned link: {source}")]
    Replace {
        iface: String,
        source: aya::programs::ProgramError,
    },
    #[error("pinning the link of {iface}: {source}")]
    Pin {
        iface: String,
        source: aya::pin::PinError,
    },
    #[error("reading the MAC address of {iface}: {source}")]
    Mac {
        iface: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Maps(#[from] super::maps::MapsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The mode's name in logs and link pins.
pub fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Native => "native",
        Mode::Generic => "generic",
    }
}

/// How an interface ended up running the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    /// A link left by an earlier daemon now runs this program.
    Adopted {
        mode: String,
    },
    Fresh {
        mode: Mode,
    },
}

/// Runs `prog` on `iface`: through the interface's pinned link if there is
/// one, else through a new link (native first, generic when the driver
/// refuses, with the reason logged) that is then pinned.
pub fn attach(
    prog: &mut Xdp,
    pins: &PinDir,
    iface: &str,
    mode: Mode,
) -> Result<Attached, AttachError> {
    if !interface_exists(iface) {
        return Err(AttachError::NoInterface(iface.into()));
    }
    if let Some(pin) = pins.links().into_iter().find(|l| l.iface == iface) {
        let path = pin.path.display().to_string();
        let pinned = PinnedLink::from_pin(&pin.path).map_err(|source| AttachError::Link {
            path: path.clone(),
            source,
        })?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .map_err(|source| AttachError::Link { path, source })?;
        let id = prog
            .attach_to_link(link)
            .map_err(|source| AttachError::Replace {
                iface: iface.into(),
                source,
            })?;
        // Owned here and dropped: that closes our fd; the pin keeps the link.
        drop(prog.take_link(id).map_err(|source| AttachError::Replace {
            iface: iface.into(),
            source,
        })?);
        return Ok(Attached::Adopted { mode: pin.mode });
    }
    let (id, used) = attach_with_fallback(prog, iface, mode)?;
    let link = prog.take_link(id).map_err(|source| AttachError::Replace {
        iface: iface.into(),
        source,
    })?;
    let fd = FdLink::try_from(link).map_err(|source| AttachError::Link {
        path: iface.into(),
        source,
    })?;
    std::fs::create_dir_all(pins.links_dir())?;
    fd.pin(pins.link(iface, mode_name(used)))
        .map_err(|source| AttachError::Pin {
            iface: iface.into(),
            source,
        })?;
    Ok(Attached::Fresh { mode: used })
}

/// Attaches `prog` to `iface` in `mode`; native falls back to generic when
/// the driver refuses, with the reason logged. Returns the mode used.
pub fn attach_with_fallback(
    prog: &mut Xdp,
    iface: &str,
    mode: Mode,
) -> Result<(XdpLinkId, Mode), AttachError> {
    if mode == Mode::Native {
        match prog.attach(iface, Flags::Driver) {
            Ok(id) => return Ok((id, Mode::Native)),
            Err(e) => {
                tracing::warn!(%iface, "native XDP refused ({e}); falling back to generic mode");
            }
        }
    }
    let id = prog
        .attach(iface, Flags::Skb)
        .map_err(|source| AttachError::Attach {
            iface: iface.into(),
            mode: "generic",
            source,
        })?;
    Ok((id, Mode::Generic))
}

/// The id of the XDP program each interface runs (`None`: none, or the
/// interface is gone), from the kernel's link table.
pub fn running(ifaces: &[String]) -> std::io::Result<Vec<Option<u32>>> {
    let mut chan = crate::netlink::Channel::open(netlink_sys::constants::NETLINK_ROUTE)?;
    let mut ids = Vec::with_capacity(ifaces.len());
    for iface in ifaces {
        let index = index_of(iface);
        if index == 0 {
            ids.push(None);
            continue;
        }
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let links = match chan.request(RouteNetlinkMessage::GetLink(msg), 0, false) {
            Ok(l) => l,
            // Deleted between the two calls.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                ids.push(None);
                continue;
            }
            Err(e) => return Err(e),
        };
        let id = links.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Xdp(x) => x.iter().find_map(|x| match x {
                    LinkXdp::ProgId(id) if *id != 0 => Some(*id),
                    _ => None,
                }),
                _ => None,
            }),
            _ => None,
        });
        ids.push(id);
    }
    Ok(ids)
}

/// The ifindex of `iface` in this network namespace, 0 when it has none.
pub fn index_of(iface: &str) -> u32 {
    std::ffi::CString::new(iface).map_or(0, |c| unsafe { libc::if_nametoindex(c.as_ptr()) })
}

/// Whether `iface` exists in this process's network namespace. Not
/// /sys/class/net: sysfs shows the namespace of whoever mounted it.
pub fn interface_exists(iface: &str) -> bool {
    index_of(iface) != 0
}
