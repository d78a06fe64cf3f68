//! What can be wrong with a config, and where.

use lb_common::Encap;

use super::position::line_column;

/// A config error at a place in a file. `line` and `column` are 1-based and
/// the column counts characters; errors that are not about a place in the
/// text (the file cannot be read) point at 1:1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {kind}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub kind: ErrorKind,
}

/// Field names in messages are dotted TOML paths without array indices
/// (`vip.backends.weight`): the line and column already say which element.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read the config file: {message}")]
    Io {
        kind: std::io::ErrorKind,
        message: String,
    },

    #[error("invalid TOML: {message}")]
    Syntax { message: String },

    #[error("unknown key `{key}` in {table} (valid keys: {})", valid.join(", "))]
    UnknownKey {
        key: String,
        table: String,
        valid: Vec<String>,
    },

    #[error("{table} has no `{key}`, which is required")]
    MissingKey { key: String, table: String },

    /// A value of the wrong TOML type, or one its key does not accept.
    #[error("`{field}` must be {expected}; found {found}")]
    InvalidValue {
        field: String,
        expected: String,
        found: String,
    },

    /// What serde said, for the rare error no other kind describes.
    #[error("{message}")]
    Other { message: String },

    #[error(
        "`dataplane.maglev_table_size` = {size} is too small for VIP {vip} (line {vip_line}) with {backends} backends: it needs at least {} slots, 2 per backend; use a larger prime such as 65537, 131071 or 262147",
        2 * *backends as u64
    )]
    MaglevTooSmall {
        size: u32,
        vip: String,
        vip_line: usize,
        backends: usize,
    },

    /// The Maglev array holds `max_vips` tables of `maglev_table_size` slots
    /// and is indexed by a u32.
    #[error(
        "`dataplane.max_vips` × `dataplane.maglev_table_size` = {max_vips} × {maglev_table_size} = {} exceeds 4294967295, the largest Maglev array the data plane can index",
        *max_vips as u64 * *maglev_table_size as u64
    )]
    MaglevArrayTooLarge {
        max_vips: u32,
        maglev_table_size: u32,
    },

    #[error("too many VIPs: VIP {vip} is number {count} but `dataplane.max_vips` is {max_vips}")]
    TooManyVips {
        vip: String,
        count: usize,
        max_vips: u32,
    },

    #[error(
        "too many backends: backend {backend} of VIP {vip} needs backend entry {count} (every VIP's backends count, one entry each) but `dataplane.max_backends` = {max_backends} holds {} (id 0 is reserved)",
        max_backends.saturating_sub(1)
    )]
    TooManyBackends {
        vip: String,
        backend: String,
        count: usize,
        max_backends: u32,
    },

    #[error("duplicate VIP {vip}: already defined at line {first_line}")]
    DuplicateVip { vip: String, first_line: usize },

    #[error("duplicate backend {backend} in VIP {vip}: already listed at line {first_line}")]
    DuplicateBackend {
        vip: String,
        backend: String,
        first_line: usize,
    },

    /// `pool` and `other` as written; `shared` is the addresses both hold.
    #[error(
        "`kubernetes.pools` entry {pool} overlaps {other} (line {other_line}): both hold {shared}; an address may be in one pool only"
    )]
    PoolOverlap {
        pool: String,
        other: String,
        other_line: usize,
        shared: String,
    },

    /// Two Lease timings, named by their keys in `[kubernetes]`, in the
    /// wrong order; a timing the file does not set takes part with its
    /// default.
    #[error(
        "`kubernetes.{shorter}` = {shorter_ms}{} must be less than `kubernetes.{longer}` = {longer_ms}{}: {}",
        default_note(*shorter_is_default),
        default_note(*longer_is_default),
        why_shorter(shorter)
    )]
    LeaseTimingOrder {
        shorter: &'static str,
        shorter_ms: u32,
        shorter_is_default: bool,
        longer: &'static str,
        longer_ms: u32,
        longer_is_default: bool,
    },

    #[error(
        "backend {backend} is {} but VIP {vip} is {}: {}",
        family_name(!*vip_is_v4),
        family_name(*vip_is_v4),
        why_same_family(*encap)
    )]
    FamilyMismatch {
        vip: String,
        backend: String,
        vip_is_v4: bool,
        encap: Encap,
    },
}

fn default_note(is_default: bool) -> &'static str {
    if is_default { " (the default)" } else { "" }
}

/// Why the Lease timing `shorter` must be less than the one it is compared to.
fn why_shorter(shorter: &str) -> &'static str {
    if shorter == "retry_period_ms" {
        "a leader must get another try at renewing its Lease before the deadline makes it step down"
    } else {
        "a leader that cannot renew must step down before its Lease expires and another node takes over its VIPs"
    }
}

fn family_name(v4: bool) -> &'static str {
    if v4 { "IPv4" } else { "IPv6" }
}

fn why_same_family(encap: Encap) -> &'static str {
    match encap {
        Encap::Ipip => "its encap \"ipip\" carries IPv4 in IPv4 and IPv6 in IPv6 only",
        Encap::L2 => {
            "its encap \"l2\" delivers packets still addressed to the VIP, so the backend must be of the same family"
        }
    }
}

/// An error at a byte offset, before it is turned into a line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Fault {
    pub(super) at: usize,
    pub(super) kind: ErrorKind,
}

impl Fault {
    pub(super) fn new(at: usize, kind: ErrorKind) -> Self {
        Self { at, kind }
    }

    pub(super) fn locate(self, text: &str, origin: &str) -> ConfigError {
        let (line, column) = line_column(text, self.at);
        ConfigError {
            file: origin.to_owned(),
            line,
            column,
            kind: self.kind,
        }
    }
}

/// Collects every conflict between values so that the one reported is the
/// first in the document, whatever order the checks ran in.
#[derive(Debug, Default)]
pub(super) struct Faults(Vec<Fault>);

impl Faults {
    pub(super) fn push(&mut self, at: usize, kind: ErrorKind) {
        self.0.push(Fault::new(at, kind));
    }

    /// `Err` with the earliest fault, if any; of two at the same place, the
    /// one found first.
    pub(super) fn finish(self) -> Result<(), Fault> {
        match self.0.into_iter().min_by_key(|f| f.at) {
            Some(fault) => Err(fault),
            None => Ok(()),
        }
    }
}
