//! How messages show the value that is wrong.

use std::ops::Range;

/// Longer values are cut: the line and column already find them.
const MAX_CHARS: usize = 60;

/// A string value in double quotes, escaped, whichever TOML quotes the file
/// used, so that a multi-line or literal string reads the same as any other.
pub(super) fn string(s: &str) -> String {
    let head: String = s.chars().take(MAX_CHARS).collect();
    let cut = if head.len() < s.len() { "..." } else { "" };
    format!("\"{}{cut}\"", head.escape_debug())
}

/// Any other value as written at `span`, when that fits on one line; else
/// `kind` ("an array").
pub(super) fn source(text: &str, span: Range<usize>, kind: &str) -> String {
    match text.get(span) {
        Some(src) if !src.is_empty() && !src.contains('\n') => {
            let head: String = src.chars().take(MAX_CHARS).collect();
            let cut = if head.len() < src.len() { "..." } else { "" };
            format!("{head}{cut}")
        }
        _ => kind.to_owned(),
    }
}
