//! What the relation checks need of toml's parse tree once serde has read
//! it: where each value starts, so that the model needs no spans. The
//! top-level tables but `vip` are kept as parsed (a config has a handful);
//! of each `[[vip]]` only the start of every value, 8 bytes each, since a
//! config may have a million VIPs and their trees would cost kilobytes
//! apiece.

use std::collections::HashMap;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ErrorKind, Fault};

pub(super) struct Doc<'i> {
    text: &'i str,
    /// Each part's top-level tables but `vip`, with the part's offset in
    /// `text` (toml's spans count from the start of the part).
    tables: Vec<(usize, Spanned<DeTable<'i>>)>,
    vips: VipStarts,
}

impl<'i> Doc<'i> {
    pub(super) fn new(text: &'i str) -> Self {
        Self {
            text,
            tables: Vec::new(),
            vips: VipStarts::default(),
        }
    }

    /// Takes in a part of the text read at `offset`: its `[[vip]]` tables
    /// are numbered after those already in. False, and nothing taken in, if
    /// the part sets a top-level table (but `vip`) that an earlier one also
    /// sets: only toml, reading them together, knows whether they may.
    pub(super) fn add(&mut self, offset: usize, root: &Spanned<DeTable<'i>>) -> bool {
        let tables = root.get_ref();
        let seen = |key: &str| {
            self.tables
                .iter()
                .any(|(_, t)| t.get_ref().contains_key(key))
        };
        if tables
            .keys()
            .any(|k| k.get_ref() != "vip" && seen(k.get_ref()))
        {
            return false;
        }
        if let Some(vips) = tables.get("vip") {
            if let DeValue::Array(vips) = vips.get_ref() {
                for vip in vips.iter() {
                    self.vips.add(offset, vip);
                }
            } else {
                // Not an array of tables: serde refuses it.
                self.vips.add(offset, vips);
            }
        }
        let mut rest = DeTable::new();
        for (key, value) in tables.iter().filter(|(k, _)| k.get_ref() != "vip") {
            rest.insert(key.clone(), value.clone());
        }
        if !rest.is_empty() {
            self.tables.push((offset, Spanned::new(root.span(), rest)));
        }
        true
    }

    /// The top-level tables but `vip` of each part, in order, with the
    /// part's offset.
    pub(super) fn tables(&self) -> impl Iterator<Item = &(usize, Spanned<DeTable<'i>>)> {
        self.tables.iter()
    }

    /// Where the value at `path` starts, if the file sets it: dotted keys
    /// with array indices as numbers (`vip.2.backends.0.address`).
    pub(super) fn start(&self, path: &str) -> Option<usize> {
        match path.strip_prefix("vip.") {
            Some(rest) => {
                let (index, within) = rest.split_once('.').unwrap_or((rest, ""));
                self.vips.start(index.parse().ok()?, within)
            }
            None => self.at(path).map(|(offset, v)| offset + v.span().start),
        }
    }

    /// The value at `path` as the file writes it; only outside `[[vip]]`
    /// tables, whose text is not kept.
    pub(super) fn written(&self, path: &str) -> &'i str {
        debug_assert!(!path.starts_with("vip."), "no text is kept of {path}");
        let span = self.at(path).map_or(0..0, |(offset, v)| {
            let span = v.span();
            offset + span.start..offset + span.end
        });
        self.text.get(span).unwrap_or_default()
    }

    fn at(&self, path: &str) -> Option<(usize, &Spanned<DeValue<'i>>)> {
        let mut steps = path.split('.');
        let first = steps.next()?;
        let (offset, mut value) = self
            .tables
            .iter()
            .find_map(|(offset, t)| Some((*offset, t.get_ref().get(first)?)))?;
        for step in steps {
            value = match step.parse::<usize>() {
                Ok(index) => value.get_ref().get(index),
                Err(_) => value.get_ref().get(step),
            }?;
        }
        Some((offset, value))
    }
}

/// Where every value of every `[[vip]]` starts, by its path within the VIP
/// (`backends.0.address`), each path stored once.
#[derive(Default)]
struct VipStarts {
    paths: HashMap<Box<str>, u32>,
    /// (path, start) of each value, VIP after VIP, each VIP's sorted by
    /// path: a VIP may have tens of thousands of backends.
    starts: Vec<(u32, u32)>,
    /// Where each VIP's values begin in `starts`.
    first: Vec<usize>,
}

impl VipStarts {
    fn add(&mut self, offset: usize, vip: &Spanned<DeValue<'_>>) {
        let from = self.starts.len();
        self.first.push(from);
        self.walk(offset, vip, &mut String::new());
        self.starts[from..].sort_unstable_by_key(|&(path, _)| path);
    }

    fn walk(&mut self, offset: usize, value: &Spanned<DeValue<'_>>, path: &mut String) {
        let id = match self.paths.get(path.as_str()) {
            Some(&id) => id,
            None => {
                let id = self.paths.len() as u32;
                self.paths.insert(path.as_str().into(), id);
                id
            }
        };
        // The config's text is at most u32::MAX bytes (see `parse`).
        self.starts.push((id, (offset + value.span().start) as u32));
        let mut step = |path: &mut String, name: &dyn std::fmt::Display, value| {
            use std::fmt::Write as _;
            let len = path.len();
            if len > 0 {
                path.push('.');
            }
            let _ = write!(path, "{name}");
            self.walk(offset, value, path);
            path.truncate(len);
        };
        match value.get_ref() {
            DeValue::Table(table) => {
                for (key, value) in table.iter() {
                    step(path, key.get_ref(), value);
                }
            }
            DeValue::Array(array) => {
                for (index, value) in array.iter().enumerate() {
                    step(path, &index, value);
                }
            }
            _ => {}
        }
    }

    fn start(&self, vip: usize, path: &str) -> Option<usize> {
        let &id = self.paths.get(path)?;
        let from = *self.first.get(vip)?;
        let to = self
            .first
            .get(vip + 1)
            .copied()
            .unwrap_or(self.starts.len());
        let starts = &self.starts[from..to];
        let found = starts.binary_search_by_key(&id, |&(path, _)| path).ok()?;
        Some(starts[found].1 as usize)
    }
}

/// Parses the part of a config that starts at byte `offset`; a syntax
/// error is placed in the whole text.
pub(super) fn parse(part: &str, offset: usize) -> Result<Spanned<DeTable<'_>>, Fault> {
    DeTable::parse(part).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let mut message = e.message().trim_end().to_owned();
        // toml's message does not say which key; its span does.
        if message == "duplicate key"
            && let Some(key) = part.get(span.clone()).filter(|k| !k.is_empty())
        {
            message = format!("duplicate key `{key}`");
        }
        (offset + span.start, ErrorKind::Syntax { message })
    })
}

/// serde's error at its span in the part read at `offset`, after the dotted
/// path of the key it is about.
pub(super) fn invalid(error: &toml::de::Error, offset: usize) -> Fault {
    // toml keeps that path to itself but for its Display, which ends with
    // "in `dataplane.mode`" when it has no text to quote (as here: the
    // deserializer was made from the tree).
    let shown = error.to_string();
    let message = match shown.trim_end().rsplit_once("\nin `") {
        Some((_, path)) => format!("{}: {}", path.trim_end_matches('`'), error.message()),
        None => error.message().to_owned(),
    };
    let at = error.span().map_or(0, |s| s.start);
    (offset + at, ErrorKind::Invalid { message })
}
