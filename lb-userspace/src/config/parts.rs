//! A config cut before each of its `[[vip]]` tables, so that it can be
//! parsed a part at a time: toml lexes a whole document into one token
//! vector and then builds its whole tree, about 5 KB for every `[[vip]]` of
//! three backends, which is what a 100,000-VIP file cost to read.
//!
//! toml's own lexer finds the cuts, so a `[[vip]]` inside a string or a
//! comment is not one; a cut is made only where a line starts outside any
//! array or inline table, where a TOML parser starts afresh whatever came
//! before. Text that is not valid TOML may be cut wrongly: the reader then
//! parses the whole file, which finds the error where it is.

use toml_parser::Source;
use toml_parser::lexer::{Lexer, TokenKind};

/// The parts of `text`, in order, each with its byte offset: the part
/// before the first `[[vip]]` (possibly empty), then one part from each
/// `[[vip]]` header to the next.
pub(super) struct Parts<'i> {
    text: &'i str,
    tokens: Lexer<'i>,
    /// Where the part being read starts.
    start: usize,
    /// Open `[` and `{` so far; negative once the text closes more than it
    /// opened, and then no more cuts are made.
    depth: i64,
    at_line_start: bool,
    done: bool,
}

impl<'i> Parts<'i> {
    pub(super) fn new(text: &'i str) -> Self {
        Self {
            text,
            tokens: Source::new(text).lex(),
            start: 0,
            depth: 0,
            at_line_start: true,
            done: false,
        }
    }
}

impl<'i> Iterator for Parts<'i> {
    type Item = (usize, &'i str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        for token in self.tokens.by_ref() {
            let at = token.span().start();
            match token.kind() {
                TokenKind::Newline => {
                    self.at_line_start = true;
                    continue;
                }
                TokenKind::Whitespace => continue,
                TokenKind::LeftSquareBracket => {
                    let cut =
                        self.at_line_start && self.depth == 0 && is_vip_header(&self.text[at..]);
                    self.depth += 1;
                    self.at_line_start = false;
                    // The first header closes the part before it even when
                    // that part is empty: the first part is never a VIP's.
                    if cut {
                        let part = (self.start, &self.text[self.start..at]);
                        self.start = at;
                        return Some(part);
                    }
                    continue;
                }
                TokenKind::LeftCurlyBracket => self.depth += 1,
                TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => {
                    // Below 0 stays below 0: nothing is cut after a stray
                    // closing bracket.
                    self.depth -= 1;
                    if self.depth < 0 {
                        self.depth = i64::MIN / 2;
                    }
                }
                _ => {}
            }
            self.at_line_start = false;
        }
        self.done = true;
        Some((self.start, &self.text[self.start..]))
    }
}

/// Whether `text` starts with a `[[vip]]` header (spaces and tabs allowed
/// inside, as in `[[ vip ]]`). A quoted key (`[["vip"]]`) is not
/// recognised: the part before it then holds two VIPs, which is only
/// slower.
fn is_vip_header(text: &str) -> bool {
    fn blank(s: &str) -> &str {
        s.trim_start_matches([' ', '\t'])
    }
    text.strip_prefix("[[")
        .and_then(|s| blank(s).strip_prefix("vip"))
        .is_some_and(|s| blank(s).starts_with("]]"))
}
