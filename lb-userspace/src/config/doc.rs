//! toml's parse tree, kept beside what serde makes of it: syntax errors
//! stop here, and the relation checks find their values' places in it, so
//! the model needs no spans.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ErrorKind, Fault};

pub(super) struct Doc<'i> {
    text: &'i str,
    root: Spanned<DeTable<'i>>,
}

impl<'i> Doc<'i> {
    pub(super) fn parse(text: &'i str) -> Result<Self, Fault> {
        let root = DeTable::parse(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let mut message = e.message().trim_end().to_owned();
            // toml's message does not say which key; its span does.
            if message == "duplicate key"
                && let Some(key) = text.get(span.clone()).filter(|k| !k.is_empty())
            {
                message = format!("duplicate key `{key}`");
            }
            (span.start, ErrorKind::Syntax { message })
        })?;
        Ok(Self { text, root })
    }

    pub(super) fn deserializer(&self) -> toml::de::Deserializer<'i> {
        toml::de::Deserializer::from(self.root.clone())
    }

    /// Where the value at `path` starts, if the file sets it: dotted keys
    /// with array indices as numbers (`vip.2.backends.0.address`).
    pub(super) fn start(&self, path: &str) -> Option<usize> {
        self.at(path).map(|v| v.span().start)
    }

    /// The value at `path` as the file writes it.
    pub(super) fn written(&self, path: &str) -> &'i str {
        let span = self.at(path).map_or(0..0, Spanned::span);
        self.text.get(span).unwrap_or_default()
    }

    fn at(&self, path: &str) -> Option<&Spanned<DeValue<'i>>> {
        let mut steps = path.split('.');
        let mut value = self.root.get_ref().get(steps.next()?)?;
        for step in steps {
            value = match step.parse::<usize>() {
                Ok(index) => value.get_ref().get(index),
                Err(_) => value.get_ref().get(step),
            }?;
        }
        Some(value)
    }
}

/// serde's error at its span, after the dotted path of the key it is about.
pub(super) fn invalid(error: &toml::de::Error) -> Fault {
    // toml keeps that path to itself but for its Display, which ends with
    // "in `dataplane.mode`" when it has no text to quote (as here: the
    // deserializer was made from the tree).
    let shown = error.to_string();
    let message = match shown.trim_end().rsplit_once("\nin `") {
        Some((_, path)) => format!("{}: {}", path.trim_end_matches('`'), error.message()),
        None => error.message().to_owned(),
    };
    let at = error.span().map_or(0, |s| s.start);
    (at, ErrorKind::Invalid { message })
}
