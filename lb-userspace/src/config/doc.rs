//! toml's parse tree, kept beside what serde makes of it: serde's errors
//! carry only a byte span and a message, and the tree says which key is
//! there and what was written. The relation checks find their values'
//! places here too, so the model needs no spans.

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::error::{ErrorKind, Fault};
use super::expected::expected;
use super::quote;

pub(super) struct Doc<'i> {
    text: &'i str,
    root: Spanned<DeTable<'i>>,
}

type Value<'i> = Spanned<DeValue<'i>>;

/// What starts at an error's offset.
#[derive(Default)]
struct Hits<'a, 'i> {
    /// The table's dotted path and the key's name.
    key: Option<(String, &'a str)>,
    /// The key's dotted path and its value (or an element of it).
    value: Option<(String, &'a Value<'i>)>,
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
            Fault::new(span.start, ErrorKind::Syntax { message })
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

    /// The string at `path` as messages quote it.
    pub(super) fn written(&self, path: &str) -> String {
        self.at(path).map(|v| self.found(v)).unwrap_or_default()
    }

    fn at(&self, path: &str) -> Option<&Value<'i>> {
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

    /// serde's error, said the way the rest of the config's errors are.
    pub(super) fn fault(&self, error: &toml::de::Error) -> Fault {
        let at = error.span().map_or(0, |s| s.start);
        let message = error.message();
        let mut hits = Hits::default();
        self.walk(self.root.get_ref(), "", at, &mut hits);

        let kind = if let (Some(_), Some((table, key))) =
            (message.strip_prefix("unknown field `"), hits.key)
        {
            // serde lists the fields after "expected", each in backticks.
            let listed = message.split_once(", expected").map_or("", |(_, l)| l);
            ErrorKind::UnknownKey {
                key: key.to_owned(),
                table: label(&table),
                valid: listed
                    .split('`')
                    .skip(1)
                    .step_by(2)
                    .map(str::to_owned)
                    .collect(),
            }
        } else if let (Some(missing), Some((table, _))) =
            (message.strip_prefix("missing field `"), &hits.value)
        {
            ErrorKind::MissingKey {
                key: missing.trim_end_matches('`').to_owned(),
                table: label(table),
            }
        } else if let Some((field, value)) = hits.value {
            // A check that rejects a value of the right type says what it
            // wants; a value of the wrong type gets the key's own words.
            let from_serde = || {
                message
                    .rsplit_once(", expected ")
                    .map(|(_, e)| e.to_owned())
            };
            let expected = message
                .starts_with("invalid value: ")
                .then(from_serde)
                .flatten()
                .or_else(|| expected(&field))
                .or_else(from_serde);
            match expected {
                Some(expected) => ErrorKind::InvalidValue {
                    found: self.found(value),
                    field,
                    expected,
                },
                None => ErrorKind::Other {
                    message: format!("`{field}`: {message}"),
                },
            }
        } else {
            ErrorKind::Other {
                message: message.to_owned(),
            }
        };
        Fault::new(at, kind)
    }

    fn walk<'a>(&'a self, table: &'a DeTable<'i>, path: &str, at: usize, hits: &mut Hits<'a, 'i>) {
        for (key, value) in table.iter() {
            if key.span().start == at {
                hits.key = Some((path.to_owned(), key.get_ref().as_ref()));
            }
            let field = if path.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{path}.{}", key.get_ref())
            };
            self.visit(value, field, at, hits);
        }
    }

    /// Later hits are deeper, so the innermost value at `at` wins.
    fn visit<'a>(
        &'a self,
        value: &'a Value<'i>,
        field: String,
        at: usize,
        hits: &mut Hits<'a, 'i>,
    ) {
        if value.span().start == at {
            hits.value = Some((field.clone(), value));
        }
        match value.get_ref() {
            DeValue::Table(t) => self.walk(t, &field, at, hits),
            DeValue::Array(items) => {
                for item in items.iter() {
                    self.visit(item, field.clone(), at, hits);
                }
            }
            _ => {}
        }
    }

    /// A value as messages show it.
    fn found(&self, value: &Value<'_>) -> String {
        let span = value.span();
        let kind = match value.get_ref() {
            DeValue::String(s) => return quote::string(s),
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        let source = self.text.get(span.clone()).unwrap_or("");
        // A table made by dotted keys spans just its name (`vip` of
        // `vip.port = 1`), which would read as if that were the value.
        if matches!(value.get_ref(), DeValue::Table(_) | DeValue::Array(_))
            && !source.starts_with(['[', '{'])
        {
            return kind.to_owned();
        }
        quote::source(self.text, span, kind)
    }
}

/// How messages name the table at dotted `path`.
fn label(path: &str) -> String {
    match path {
        "" => "the top level".to_owned(),
        "vip" => "[[vip]]".to_owned(),
        "vip.backends" => "a backend of [[vip]]".to_owned(),
        table => format!("[{table}]"),
    }
}
