//! Attaching the balancer to interfaces through pinned bpf_links, so the
//! program stays attached while no daemon runs, and a new daemon swaps its
//! program in atomically (`bpf_link_update`: no packet sees no program).

use aya::programs::{
    Xdp, XdpMode,
    links::{FdLink, LinkError, PinnedLink},
    xdp::XdpLink,
};

use super::pins::PinDir;

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
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// XDP attach mode as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Native,
    Generic,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Generic => "generic",
        }
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
    let native = match mode {
        Mode::Native => match prog.attach(iface, XdpMode::Driver) {
            Ok(id) => Some(id),
            Err(e) => {
                tracing::warn!(%iface, "native XDP refused ({e}); falling back to generic mode");
                None
            }
        },
        Mode::Generic => None,
    };
    let (id, used) = match native {
        Some(id) => (id, Mode::Native),
        None => {
            let id = prog
                .attach(iface, XdpMode::Skb)
                .map_err(|source| AttachError::Attach {
                    iface: iface.into(),
                    mode: "generic",
                    source,
                })?;
            (id, Mode::Generic)
        }
    };
    let link = prog.take_link(id).map_err(|source| AttachError::Replace {
        iface: iface.into(),
        source,
    })?;
    let fd = FdLink::try_from(link).map_err(|source| AttachError::Link {
        path: iface.into(),
        source,
    })?;
    std::fs::create_dir_all(pins.links_dir())?;
    fd.pin(pins.link(iface, used.as_str()))
        .map_err(|source| AttachError::Pin {
            iface: iface.into(),
            source,
        })?;
    Ok(Attached::Fresh { mode: used })
}

/// Whether `iface` exists in this process's network namespace. Not
/// /sys/class/net: sysfs shows the namespace of whoever mounted it.
pub fn interface_exists(iface: &str) -> bool {
    std::ffi::CString::new(iface).is_ok_and(|c| unsafe { libc::if_nametoindex(c.as_ptr()) } != 0)
}
