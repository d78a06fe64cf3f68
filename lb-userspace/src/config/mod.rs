//! The daemon's TOML config: parsing, validation, and errors that say
//! `FILE:LINE:COLUMN: what is wrong`.
//!
//! A config goes through three steps:
//!
//! 1. toml parses the text into a tree that keeps every key's and value's
//!    byte span (a syntax error stops here);
//! 2. serde reads the tree into the [`model`] types, in the order the file
//!    is written: unknown and missing keys, values of the wrong type, and
//!    each value's own checks (`deserialize_with`, see `check`); the first
//!    error stops it, and is reported in serde's words at toml's span
//!    (steps 1 and 2 go a `[[vip]]` at a time, see `read`, so that memory
//!    follows one VIP's tree and not the whole file's; of the trees, only
//!    where each value starts is kept, see `doc`);
//! 3. `relations` checks what holds between the values: duplicates,
//!    address families, capacities. The earliest conflict in the file is
//!    reported.
//!
//! Every section and key is optional except a VIP's and a backend's
//! `address`; an empty file is a valid config with no VIPs.

use std::path::Path;

mod check;
mod doc;
mod error;
mod health;
mod model;
mod parts;
mod pool;
mod read;
mod relations;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, ErrorKind};
pub use health::{CheckKind, Health, HealthCheck, HttpProbe, Probe, StatusRange, Via};
pub use model::{
    AddressPool, AllocationId, Announce, AnnounceMode, Announcement, Aws, Backend, BackendTarget,
    Bgp, Config, Dataplane, DataplaneMode, Kubernetes, Metrics, Protocol, Vip, XdpMode,
};

use error::{Fault, locate};

/// Reads and parses the config at `path`. Errors, including the file not
/// being readable, name the file as `path` displays.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ConfigError {
        file: origin.clone(),
        line: 1,
        column: 1,
        kind: ErrorKind::Io {
            kind: e.kind(),
            message: e.to_string(),
        },
    })?;
    // Checked here rather than left to read_to_string so that the error can
    // point at the first bad byte.
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let prefix = String::from_utf8_lossy(&e.as_bytes()[..valid]);
        let kind = ErrorKind::Syntax {
            message: "the file is not valid UTF-8".to_owned(),
        };
        locate((valid, kind), &prefix, &origin)
    })?;
    parse(&text, &origin)
}

/// Parses config `text`; `origin` names it in errors (normally its path).
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    // Where values start is kept in 32 bits (`doc`).
    if u32::try_from(text.len()).is_err() {
        let kind = ErrorKind::Syntax {
            message: "the config is larger than 4 GiB".to_owned(),
        };
        return Err(locate((0, kind), "", origin));
    }
    check(text, read::read).map_err(|fault| locate(fault, text, origin))
}

/// [`parse`], but never a `[[vip]]` at a time: the tests hold the two to
/// the same result.
#[cfg(test)]
fn parse_at_once(text: &str, origin: &str) -> Result<Config, ConfigError> {
    check(text, read::at_once).map_err(|fault| locate(fault, text, origin))
}

/// The config as a config file that [`parse`] reads to the same `Config`:
/// every key explicit, so the output also documents the defaults in effect.
pub fn to_toml(config: &Config) -> String {
    toml::to_string(config).expect("a Config is always representable in TOML")
}

fn check<'i>(
    text: &'i str,
    read: fn(&'i str) -> Result<(model::File, doc::Doc<'i>), Fault>,
) -> Result<Config, Fault> {
    let (file, doc) = read(text)?;
    let config = file.into_config();
    relations::check(&config, &doc, text)?;
    Ok(config)
}
