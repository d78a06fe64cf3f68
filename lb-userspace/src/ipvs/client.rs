//! Talking to the kernel's IPVS over generic netlink: resolve the family,
//! list services and destinations, change them one at a time.

use crate::vip::Vip;
use std::io;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_generic::{
    GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};

use super::{
    IpvsError,
    message::{DestEntry, FAMILY, IpvsMessage, ServiceEntry, cmd},
};
use crate::netlink::Channel;

pub struct Ipvs {
    chan: Channel,
    family: u16,
    version: String,
}

impl Ipvs {
    /// Connects to the IPVS family of this network namespace's kernel. When
    /// the family is missing, asks for the `ip_vs` module once (the kernel
    /// may not autoload it) before giving up.
    pub fn connect() -> Result<Self, IpvsError> {
        let mut chan = Channel::open(netlink_sys::constants::NETLINK_GENERIC)
            .map_err(|e| IpvsError::Unavailable(format!("generic netlink socket: {e}")))?;
        let family = match resolve(&mut chan) {
            Ok(id) => id,
            Err(first) => {
                let loaded = modprobe("ip_vs");
                resolve(&mut chan).map_err(|_| {
                    IpvsError::Unavailable(format!(
                        "the kernel has no IPVS (generic netlink family {FAMILY}: {first}; modprobe ip_vs: {loaded})"
                    ))
                })?
            }
        };
        let mut ipvs = Self {
            chan,
            family,
            version: String::new(),
        };
        ipvs.version = ipvs
            .call(
                IpvsMessage {
                    cmd: cmd::GET_INFO,
                    attrs: Vec::new(),
                },
                0,
                false,
            )
            .ok()
            .and_then(|r| r.first().and_then(IpvsMessage::parse_version))
            .unwrap_or_default();
        Ok(ipvs)
    }

    /// The kernel's IPVS version, e.g. `1.2.1`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn services(&mut self) -> Result<Vec<ServiceEntry>, IpvsError> {
        let replies = self
            .call(
                IpvsMessage {
                    cmd: cmd::GET_SERVICE,
                    attrs: Vec::new(),
                },
                0,
                true,
            )
            .map_err(|e| IpvsError::kernel("listing services", "", e))?;
        let mut out = Vec::new();
        for r in replies {
            if let Some(s) = r.parse_service().map_err(IpvsError::decode)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    pub fn dests(&mut self, key: &Vip) -> Result<Vec<DestEntry>, IpvsError> {
        self.call(IpvsMessage::service(cmd::GET_DEST, key, None), 0, true)
            .map_err(|e| IpvsError::kernel("listing destinations of", key, e))?
            .iter()
            .map(|r| r.parse_dest().map_err(IpvsError::decode))
            .collect()
    }

    pub fn add_service(&mut self, key: &Vip, sched: &str, flags: u32) -> Result<(), IpvsError> {
        self.put_service(cmd::NEW_SERVICE, key, sched, flags)
    }

    pub fn set_service(&mut self, key: &Vip, sched: &str, flags: u32) -> Result<(), IpvsError> {
        self.put_service(cmd::SET_SERVICE, key, sched, flags)
    }

    fn put_service(
        &mut self,
        command: u8,
        key: &Vip,
        sched: &str,
        flags: u32,
    ) -> Result<(), IpvsError> {
        let (create, what) = if command == cmd::NEW_SERVICE {
            (NLM_F_CREATE | NLM_F_EXCL, "creating")
        } else {
            (0, "updating")
        };
        self.call(
            IpvsMessage::service(command, key, Some((sched, flags))),
            create,
            false,
        )
        .map(drop)
        .map_err(|e| service_error(what, key, sched, e))
    }

    pub fn del_service(&mut self, key: &Vip) -> Result<(), IpvsError> {
        self.call(IpvsMessage::service(cmd::DEL_SERVICE, key, None), 0, false)
            .map(drop)
            .map_err(|e| IpvsError::kernel("deleting service", key, e))
    }

    pub fn add_dest(&mut self, key: &Vip, d: &DestEntry) -> Result<(), IpvsError> {
        self.call(
            IpvsMessage::dest(cmd::NEW_DEST, key, d),
            NLM_F_CREATE | NLM_F_EXCL,
            false,
        )
        .map(drop)
        .map_err(|e| IpvsError::kernel("adding destination", format!("{} to {key}", d.address), e))
    }

    pub fn set_dest(&mut self, key: &Vip, d: &DestEntry) -> Result<(), IpvsError> {
        self.call(IpvsMessage::dest(cmd::SET_DEST, key, d), 0, false)
            .map(drop)
            .map_err(|e| {
                IpvsError::kernel("updating destination", format!("{} of {key}", d.address), e)
            })
    }

    pub fn del_dest(&mut self, key: &Vip, d: &DestEntry) -> Result<(), IpvsError> {
        self.call(IpvsMessage::dest(cmd::DEL_DEST, key, d), 0, false)
            .map(drop)
            .map_err(|e| {
                IpvsError::kernel("deleting destination", format!("{} of {key}", d.address), e)
            })
    }

    fn call(&mut self, m: IpvsMessage, flags: u16, dump: bool) -> io::Result<Vec<IpvsMessage>> {
        let mut g = GenlMessage::from_payload(m);
        g.set_resolved_family_id(self.family);
        Ok(self
            .chan
            .request(g, flags, dump)?
            .into_iter()
            .map(|g| g.payload)
            .collect())
    }
}

/// The scheduler is the usual reason a service is refused: say so.
fn service_error(what: &str, key: &Vip, sched: &str, e: io::Error) -> IpvsError {
    if e.raw_os_error() == Some(libc::ENOENT) {
        IpvsError::Scheduler {
            service: key.to_string(),
            scheduler: sched.to_string(),
        }
    } else {
        IpvsError::kernel(&format!("{what} service"), key, e)
    }
}

fn resolve(chan: &mut Channel) -> io::Result<u16> {
    let mut req = GenlMessage::from_payload(GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(FAMILY.to_string())],
    });
    req.finalize();
    let replies = chan.request(req, 0, false)?;
    replies
        .iter()
        .flat_map(|r| r.payload.nlas.iter())
        .find_map(|a| match a {
            GenlCtrlAttrs::FamilyId(id) => Some(*id),
            _ => None,
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no family id in the reply"))
}

/// Loads a kernel module with the system's modprobe; says what happened.
fn modprobe(module: &str) -> String {
    match std::process::Command::new("modprobe").arg(module).output() {
        Ok(o) if o.status.success() => "loaded".into(),
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
        Err(e) => format!("cannot run modprobe: {e}"),
    }
}
