//! The daemon's TOML config: parsing, validation, and errors that say
//! `FILE:LINE:COLUMN: what is wrong`.
//!
//! A config goes through three steps:
//!
//! 1. toml parses the text into a tree that keeps every key's and value's
//!    byte span (a syntax error stops here);
//! 2. `read` walks the tree into `raw` structs: unknown keys, missing
//!    required keys, values of the wrong TOML type;
//! 3. `validate` turns those into the [`Config`] the daemon uses: first each
//!    value on its own (names, addresses, ranges), then, once every value is
//!    valid, how they relate (duplicates, address families, capacities).
//!
//! One error is reported: the earliest in the file among those of steps 2
//! and 3's per-value checks, else the earliest conflict between values.
//!
//! Every section and key is optional except a VIP's and a backend's
//! `address`; an empty file is a valid config with no VIPs.

use std::path::Path;

use toml::de::DeTable;

mod error;
mod model;
mod position;
mod quote;
mod raw;
mod read;
mod render;
mod schema;
mod validate;

#[cfg(test)]
mod tests;

pub use error::{ConfigError, ErrorKind};
pub use model::{
    AddressPool, Announce, AnnounceMode, Backend, BackendTarget, Config, Dataplane, DataplaneMode,
    Kubernetes, Metrics, Protocol, Vip, XdpMode,
};
pub use render::to_toml;

use error::{Fault, Faults};

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
        Fault::new(valid, kind).locate(&prefix, &origin)
    })?;
    parse(&text, &origin)
}

/// Parses config `text`; `origin` names it in errors (normally its path).
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    check(text).map_err(|fault| fault.locate(text, origin))
}

fn check(text: &str) -> Result<Config, Fault> {
    let doc = DeTable::parse(text).map_err(|e| syntax_error(text, &e))?;

    let mut faults = Faults::default();
    let raw = read::read(doc.get_ref(), text, &mut faults);
    let checked = validate::values(&raw, text, &mut faults);
    faults.finish()?;

    let mut faults = Faults::default();
    validate::relations(&checked, text, &mut faults);
    faults.finish()?;

    Ok(checked.config)
}

fn syntax_error(text: &str, error: &toml::de::Error) -> Fault {
    let span = error.span().unwrap_or(0..0);
    let mut message = error.message().trim_end().to_owned();
    // toml's message does not say which key; its span does.
    if message == "duplicate key"
        && let Some(key) = text.get(span.clone()).filter(|k| !k.is_empty())
    {
        message = format!("duplicate key `{key}`");
    }
    Fault::new(span.start, ErrorKind::Syntax { message })
}
