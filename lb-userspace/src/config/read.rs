//! From toml's parse tree to [`RawConfig`]: unknown keys, missing required
//! keys and values of the wrong TOML type are found here.
//!
//! This walks toml's span-keeping tree by hand instead of deriving
//! `Deserialize` with `deny_unknown_fields`: serde stops at its first error
//! and visits keys in name order (toml is built without `preserve_order`),
//! so it could not report the error that comes first in the file, and its
//! unknown-field message does not say which table the key was in.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::error::{ErrorKind, Faults};
use super::quote;
use super::raw::{
    RawAnnounce, RawBackend, RawConfig, RawDataplane, RawKubernetes, RawMetrics, RawVip,
};
use super::schema::{self, Table};

type Key<'i> = Spanned<DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;

pub(super) fn read(doc: &DeTable<'_>, text: &str, faults: &mut Faults) -> RawConfig {
    Reader { text, faults }.config(doc)
}

struct Reader<'a> {
    text: &'a str,
    faults: &'a mut Faults,
}

impl Reader<'_> {
    fn config(&mut self, doc: &DeTable<'_>) -> RawConfig {
        let mut raw = RawConfig::default();
        for (key, value) in doc.iter() {
            let name = key.get_ref().as_ref();
            match name {
                "dataplane" => {
                    if let Some(t) = self.table(Table::Root, name, value) {
                        raw.dataplane = self.dataplane(t);
                    }
                }
                "metrics" => {
                    if let Some(t) = self.table(Table::Root, name, value) {
                        raw.metrics = self.metrics(t);
                    }
                }
                "vip" => raw.vips = self.vips(value),
                "kubernetes" => {
                    if let Some(t) = self.table(Table::Root, name, value) {
                        raw.kubernetes = self.kubernetes(t);
                    }
                }
                "announce" => {
                    if let Some(t) = self.table(Table::Root, name, value) {
                        raw.announce = self.announce(t);
                    }
                }
                _ => self.unknown(Table::Root, key),
            }
        }
        raw
    }

    fn dataplane(&mut self, t: &DeTable<'_>) -> RawDataplane {
        const T: Table = Table::Dataplane;
        let mut d = RawDataplane::default();
        for (key, value) in t.iter() {
            let name = key.get_ref().as_ref();
            match name {
                "mode" => d.mode = self.string(T, name, value),
                "interfaces" => d.interfaces = self.strings(T, name, value),
                "xdp_mode" => d.xdp_mode = self.string(T, name, value),
                "pin_path" => d.pin_path = self.string(T, name, value),
                "state_dir" => d.state_dir = self.string(T, name, value),
                "encap" => d.encap = self.string(T, name, value),
                "scheduler" => d.scheduler = self.string(T, name, value),
                "maglev_table_size" => d.maglev_table_size = self.integer(T, name, value),
                "flow_table_size" => d.flow_table_size = self.integer(T, name, value),
                "max_vips" => d.max_vips = self.integer(T, name, value),
                "max_backends" => d.max_backends = self.integer(T, name, value),
                "ipip_source_v4" => d.ipip_source_v4 = self.string(T, name, value),
                "ipip_source_v6" => d.ipip_source_v6 = self.string(T, name, value),
                "nexthop_ttl_ms" => d.nexthop_ttl_ms = self.integer(T, name, value),
                _ => self.unknown(T, key),
            }
        }
        d
    }

    fn metrics(&mut self, t: &DeTable<'_>) -> RawMetrics {
        const T: Table = Table::Metrics;
        let mut m = RawMetrics::default();
        for (key, value) in t.iter() {
            let name = key.get_ref().as_ref();
            match name {
                "listen" => m.listen = self.string(T, name, value),
                _ => self.unknown(T, key),
            }
        }
        m
    }

    fn vips(&mut self, value: &Value<'_>) -> Vec<RawVip> {
        let DeValue::Array(items) = value.get_ref() else {
            return self.wrong(Table::Root, "vip", value).unwrap_or_default();
        };
        items
            .iter()
            .filter_map(|item| {
                let t = self.table(Table::Root, "vip", item)?;
                Some(self.vip(t, item.span().start))
            })
            .collect()
    }

    /// `at` is where the VIP starts, for saying it lacks an address.
    fn vip(&mut self, t: &DeTable<'_>, at: usize) -> RawVip {
        const T: Table = Table::Vip;
        let mut v = RawVip::default();
        let mut has_address = false;
        for (key, value) in t.iter() {
            let name = key.get_ref().as_ref();
            match name {
                "address" => {
                    has_address = true;
                    v.address = self.string(T, name, value);
                }
                "port" => v.port = self.integer(T, name, value),
                "protocol" => v.protocol = self.string(T, name, value),
                "encap" => v.encap = self.string(T, name, value),
                "scheduler" => v.scheduler = self.string(T, name, value),
                "backends" => v.backends = self.backends(value),
                _ => self.unknown(T, key),
            }
        }
        if !has_address {
            self.missing(T, "address", at);
        }
        v
    }

    fn backends(&mut self, value: &Value<'_>) -> Option<Spanned<Vec<RawBackend>>> {
        let DeValue::Array(items) = value.get_ref() else {
            return self.wrong(Table::Vip, "backends", value);
        };
        let backends = items
            .iter()
            .filter_map(|item| {
                let t = self.table(Table::Vip, "backends", item)?;
                Some(self.backend(t, item.span().start))
            })
            .collect();
        Some(Spanned::new(value.span(), backends))
    }

    fn backend(&mut self, t: &DeTable<'_>, at: usize) -> RawBackend {
        const T: Table = Table::Backend;
        let mut b = RawBackend::default();
        let mut has_address = false;
        for (key, value) in t.iter() {
            let name = key.get_ref().as_ref();
            match name {
                "address" => {
                    has_address = true;
                    b.address = self.string(T, name, value);
                }
                "weight" => b.weight = self.integer(T, name, value),
                _ => self.unknown(T, key),
            }
        }
        if !has_address {
            self.missing(T, "address", at);
        }
        b
    }

    fn kubernetes(&mut self, t: &DeTable<'_>) -> RawKubernetes {
        const T: Table = Table::Kubernetes;
        let mut k = RawKubernetes::default();
        for (key, value) in t.iter() {
            let name = key.get_ref().as_ref();
            match name {
                "enabled" => k.enabled = self.boolean(T, name, value),
                "load_balancer_class" => k.load_balancer_class = self.string(T, name, value),
                "include_unclassed" => k.include_unclassed = self.boolean(T, name, value),
                "kubeconfig" => k.kubeconfig = self.string(T, name, value),
                "backend_target" => k.backend_target = self.string(T, name, value),
                "pools" => k.pools = self.strings(T, name, value),
                "lease_namespace" => k.lease_namespace = self.string(T, name, value),
                "node_name" => k.node_name = self.string(T, name, value),
                "lease_duration_ms" => k.lease_duration_ms = self.integer(T, name, value),
                "renew_deadline_ms" => k.renew_deadline_ms = self.integer(T, name, value),
                "retry_period_ms" => k.retry_period_ms = self.integer(T, name, value),
                _ => self.unknown(T, key),
            }
        }
        k
    }

    fn announce(&mut self, t: &DeTable<'_>) -> RawAnnounce {
        const T: Table = Table::Announce;
        let mut a = RawAnnounce::default();
        for (key, value) in t.iter() {
            let name = key.get_ref().as_ref();
            match name {
                "mode" => a.mode = self.string(T, name, value),
                _ => self.unknown(T, key),
            }
        }
        a
    }

    fn table<'v, 'i>(
        &mut self,
        parent: Table,
        key: &str,
        value: &'v Value<'i>,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => self.wrong(parent, key, value),
        }
    }

    fn string(&mut self, table: Table, key: &str, value: &Value<'_>) -> Option<Spanned<String>> {
        match value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(value.span(), s.to_string())),
            _ => self.wrong(table, key, value),
        }
    }

    fn strings(
        &mut self,
        table: Table,
        key: &str,
        value: &Value<'_>,
    ) -> Option<Vec<Spanned<String>>> {
        let DeValue::Array(items) = value.get_ref() else {
            return self.wrong(table, key, value);
        };
        // Report every bad element, not just the first, so that the earliest
        // error in the file wins over later ones elsewhere.
        let strings: Vec<_> = items
            .iter()
            .filter_map(|item| self.string(table, key, item))
            .collect();
        (strings.len() == items.len()).then_some(strings)
    }

    fn integer(&mut self, table: Table, key: &str, value: &Value<'_>) -> Option<Spanned<i64>> {
        match value.get_ref() {
            // TOML allows integers that do not fit an i64 through the parser;
            // those are out of every range here, so report them as such.
            DeValue::Integer(n) => match i64::from_str_radix(n.as_str(), n.radix()) {
                Ok(n) => Some(Spanned::new(value.span(), n)),
                Err(_) => self.wrong(table, key, value),
            },
            _ => self.wrong(table, key, value),
        }
    }

    fn boolean(&mut self, table: Table, key: &str, value: &Value<'_>) -> Option<Spanned<bool>> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(Spanned::new(value.span(), *b)),
            _ => self.wrong(table, key, value),
        }
    }

    /// Reports `value` as unfit for `key`; `None` so callers can return it.
    fn wrong<T>(&mut self, table: Table, key: &str, value: &Value<'_>) -> Option<T> {
        let kind = match value.get_ref() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        let span = value.span();
        let found = match value.get_ref() {
            DeValue::String(s) => quote::string(s),
            // A table made by dotted keys spans just its name (`vip` of
            // `vip.port = 1`), which would read as if that were the value.
            DeValue::Table(_) | DeValue::Array(_)
                if !text_at(self.text, span.clone()).starts_with(['[', '{']) =>
            {
                kind.to_owned()
            }
            _ => quote::source(self.text, span.clone(), kind),
        };
        self.faults
            .push(span.start, schema::invalid(table, key, found));
        None
    }

    fn unknown(&mut self, table: Table, key: &Key<'_>) {
        self.faults.push(
            key.span().start,
            ErrorKind::UnknownKey {
                key: key.get_ref().to_string(),
                table: table.label(),
                valid: table.keys(),
            },
        );
    }

    fn missing(&mut self, table: Table, key: &'static str, at: usize) {
        self.faults.push(
            at,
            ErrorKind::MissingKey {
                key,
                table: table.label(),
            },
        );
    }
}

fn text_at(text: &str, span: Range<usize>) -> &str {
    text.get(span).unwrap_or("")
}
