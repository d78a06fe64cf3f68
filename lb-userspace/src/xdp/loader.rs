//! Loads the balancer with its sizes and constants, and pins its maps.

use std::path::PathBuf;

use aya::{Ebpf, EbpfLoader, programs::Xdp};
use lb_common::{
    DEFAULT_FLOW_TABLE_SIZE, DEFAULT_MAGLEV_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_VIPS, names,
};

use super::{Maps, objects};
use crate::maglev;

/// Program section names in the objects.
pub const BALANCER_PROGRAM: &str = "xlb_balancer";
pub const DECAP_PROGRAM: &str = "xlb_decap";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid data-plane settings: {0}")]
    Settings(String),
    #[error(transparent)]
    Maglev(#[from] maglev::Error),
    #[error("loading the eBPF object: {0}")]
    Ebpf(#[from] aya::EbpfError),
    #[error("loading program {name}: {source}")]
    Program {
        name: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("the eBPF object has no {0}: was it built from this version of xlb?")]
    Missing(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
    #[error("counting possible CPUs: {0}")]
    Cpus(std::io::Error),
    #[error("mapping {name} into memory: {source}")]
    Mmap {
        name: &'static str,
        source: std::io::Error,
    },
}

/// Sizes and switches fixed when the program is loaded.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The largest Maglev table a VIP gets (prime); each VIP's own size is
    /// chosen from its backend count up to this ([`maglev::table_size`]).
    pub maglev_size: u32,
    /// Slots of the Maglev array, which holds every VIP's table (4 bytes
    /// of kernel memory each).
    pub maglev_slots: u32,
    /// VIP map capacity.
    pub max_vips: u32,
    /// Backend array capacity (ids 1..max_backends; 0 means "none").
    pub max_backends: u32,
    pub flow_table_size: u32,
    /// Log every verdict through aya-log (debugging only).
    pub log: bool,
    /// The longest the program keeps a cached route to a backend when no
    /// route, neighbour or link change is reported: the period at which
    /// the daemon moves the route epoch (`route_epoch`) regardless.
    pub nexthop_ttl: std::time::Duration,
    /// Pin every map under this directory (bpffs), reusing pins found there.
    pub pin_dir: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            maglev_size: DEFAULT_MAGLEV_SIZE,
            maglev_slots: default_maglev_slots(DEFAULT_MAX_VIPS, DEFAULT_MAGLEV_SIZE),
            max_vips: DEFAULT_MAX_VIPS,
            max_backends: DEFAULT_MAX_BACKENDS,
            flow_table_size: DEFAULT_FLOW_TABLE_SIZE,
            log: false,
            nexthop_ttl: std::time::Duration::from_nanos(lb_common::DEFAULT_NEXTHOP_TTL_NS),
            pin_dir: None,
        }
    }
}

/// Slots per VIP the Maglev array has by default: room for tables of up
/// to 4 backends ([`maglev::table_size`] gives 3 backends 307 slots, 4
/// backends 401) and for VIPs whose table is being resized.
pub const DEFAULT_MAGLEV_SLOTS_PER_VIP: u32 = 512;

/// The Maglev array's default size: [`DEFAULT_MAGLEV_SLOTS_PER_VIP`] per
/// VIP, and at least two of the largest tables (one being replaced by its
/// successor), rounded to whole entries of two slots.
pub fn default_maglev_slots(max_vips: u32, largest: u32) -> u32 {
    let slots = (u64::from(max_vips) * u64::from(DEFAULT_MAGLEV_SLOTS_PER_VIP))
        .max(2 * u64::from(largest))
        .min(u64::from(MAX_MAGLEV_SLOTS));
    (slots + slots % 2) as u32
}

/// The most slots the Maglev array may have: 4 GiB of kernel memory, far
/// beyond a router's, and well inside the program's 32-bit slot numbers.
pub const MAX_MAGLEV_SLOTS: u32 = 1 << 30;

impl Settings {
    /// Bits in the VIP filter: about 32 per VIP (a few percent of non-VIP
    /// addresses then look further), a power of two between 2^16 (8 KB)
    /// and 2^27 (16 MB).
    pub fn filter_bits(&self) -> u32 {
        (u64::from(self.max_vips) * 32)
            .next_power_of_two()
            .clamp(1 << 16, 1 << 27) as u32
    }

    /// The program's shift from a 32-bit filter hash to a bit index.
    pub fn filter_shift(&self) -> u8 {
        (32 - self.filter_bits().trailing_zeros()) as u8
    }

    pub fn validate(&self) -> Result<(), LoadError> {
        if !maglev::is_prime(self.maglev_size) {
            return Err(maglev::Error::NotPrime(self.maglev_size).into());
        }
        if self.max_vips == 0 || self.maglev_slots < 2 || self.maglev_slots > MAX_MAGLEV_SLOTS {
            return Err(LoadError::Settings(format!(
                "max_vips ({}) must be at least 1 and maglev_slots ({}) between 2 and {MAX_MAGLEV_SLOTS}",
                self.max_vips, self.maglev_slots
            )));
        }
        if self.max_backends < 2 || self.flow_table_size == 0 {
            return Err(LoadError::Settings(format!(
                "max_backends ({}) must be at least 2 and flow_table_size ({}) at least 1",
                self.max_backends, self.flow_table_size
            )));
        }
        Ok(())
    }
}

/// A loaded (not yet attached) balancer and its maps.
pub struct Balancer {
    pub ebpf: Ebpf,
    pub maps: Maps,
    pub settings: Settings,
}

impl Balancer {
    /// Loads the balancer program through the verifier.
    pub fn load(settings: &Settings) -> Result<Self, LoadError> {
        Self::load_object(objects::BALANCER, settings, &[])
    }

    /// Loads a balancer build (the benchmark brings its own, and sets its
    /// stage stop) with further one-byte `.rodata` constants `consts` set
    /// by name; each must exist in the object.
    pub fn load_object(
        object: &[u8],
        settings: &Settings,
        consts: &[(&str, u8)],
    ) -> Result<Self, LoadError> {
        settings.validate()?;
        let maglev_entries = settings
            .maglev_slots
            .div_ceil(lb_common::MAGLEV_SLOTS_PER_ENTRY);
        let log = u8::from(settings.log);
        let filter_shift = settings.filter_shift();
        let mut loader = EbpfLoader::new();
        loader
            .override_global(names::GLOBAL_LOG, &log, false)
            .override_global(names::GLOBAL_FILTER_SHIFT, &filter_shift, true)
            .map_max_entries(names::VIP_FILTER, settings.filter_bits() / 64)
            .map_max_entries(names::VIPS, settings.max_vips)
            .map_max_entries(names::VIP_STATS, settings.max_vips)
            .map_max_entries(names::MAGLEV, maglev_entries)
            .map_max_entries(names::BACKENDS, settings.max_backends)
            .map_max_entries(names::BACKEND_STATS, settings.max_backends)
            .map_max_entries(names::NEXTHOPS, settings.max_backends)
            .map_max_entries(names::FLOWS, settings.flow_table_size)
            .map_max_entries(names::OWNED, settings.max_vips);
        for (name, value) in consts {
            loader.override_global(name, value, true);
        }
        if let Some(dir) = &settings.pin_dir {
            for name in PINNED {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(object)?;
        if settings.log {
            // Best effort: without a reader the records are simply dropped.
            if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf) {
                tracing::warn!("aya-log not initialised: {e}");
            }
        }
        let prog: &mut Xdp = ebpf
            .program_mut(BALANCER_PROGRAM)
            .ok_or(LoadError::Missing(BALANCER_PROGRAM))?
            .try_into()
            .map_err(|source| LoadError::Program {
                name: BALANCER_PROGRAM,
                source,
            })?;
        prog.load().map_err(|source| LoadError::Program {
            name: BALANCER_PROGRAM,
            source,
        })?;
        let maps = Maps::take(&mut ebpf)?;
        Ok(Self {
            ebpf,
            maps,
            settings: settings.clone(),
        })
    }

    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(BALANCER_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Balancer::load_object")
    }

    pub fn program_mut(&mut self) -> &mut Xdp {
        self.ebpf
            .program_mut(BALANCER_PROGRAM)
            .and_then(|p| p.try_into().ok())
            .expect("loaded in Balancer::load_object")
    }
}

/// Maps that carry state worth keeping across a restart (the route cache
/// too: its entries expire on their own and are emptied on every backend
/// rewrite, and `xlb status` opens every map `Maps` holds).
pub const PINNED: [&str; 15] = [
    names::IFACES_LOW,
    names::ROUTE_EPOCH,
    names::VIP_FILTER,
    names::NEXTHOPS,
    names::IFACES,
    names::VIPS,
    names::BACKENDS,
    names::MAGLEV,
    names::FLOWS,
    names::CONFIG,
    names::STATS,
    names::VIP_STATS,
    names::BACKEND_STATS,
    names::OWNED,
    names::LIVENESS,
];

/// Loads any single-program object (the decapsulator; the benchmark's
/// floors) and returns it with its program loaded.
pub fn load_simple(object: &[u8], program: &'static str) -> Result<Ebpf, LoadError> {
    let mut ebpf = EbpfLoader::new().load(object)?;
    let prog: &mut Xdp = ebpf
        .program_mut(program)
        .ok_or(LoadError::Missing(program))?
        .try_into()
        .map_err(|source| LoadError::Program {
            name: program,
            source,
        })?;
    prog.load().map_err(|source| LoadError::Program {
        name: program,
        source,
    })?;
    Ok(ebpf)
}
