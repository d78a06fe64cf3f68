//! What can be wrong with a config, and where.

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("cannot read the config file: {message}")]
    Io {
        kind: std::io::ErrorKind,
        message: String,
    },

    #[error("invalid TOML: {message}")]
    Syntax { message: String },

    /// A key or a value serde would not read (unknown or missing key, wrong
    /// type, a value its key's check rejects), in serde's words after the
    /// dotted path of the key (`dataplane.mode: unknown variant ...`).
    #[error("{message}")]
    Invalid { message: String },

    /// Values each valid on their own that do not go together: duplicates,
    /// address families, capacities, overlapping pools, Lease timings.
    #[error("{message}")]
    Conflict { message: String },
}

/// An error at a byte offset, before it is turned into a line and column.
pub(super) type Fault = (usize, ErrorKind);

pub(super) fn locate((at, kind): Fault, text: &str, origin: &str) -> ConfigError {
    let (line, column) = line_column(text, at);
    ConfigError {
        file: origin.to_owned(),
        line,
        column,
        kind,
    }
}

/// 1-based line and column of byte `offset` in `text`. The column counts
/// characters, not bytes, so it matches what an editor shows after a
/// non-ASCII character. Offsets past the end point just after the last
/// character, where "unexpected end of file" errors belong.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    // A span never starts inside a character, but be safe rather than panic
    // while reporting an error.
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    let line = before.matches('\n').count() + 1;
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
