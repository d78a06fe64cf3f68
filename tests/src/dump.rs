//! A full dump of the maps the reconciler writes, to compare states byte
//! for byte (every entry is a `Pod` value compared with `==`).

use std::collections::{BTreeMap, BTreeSet};

use lb_common::{Backend, NO_BACKEND, VipInfo, VipKey};
use lb_userspace::xdp::Maps;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dump {
    pub vips: BTreeMap<VipKey, VipInfo>,
    /// Non-zero entries of the backend array.
    pub backends: BTreeMap<u32, Backend>,
    /// Maglev rows holding any backend.
    pub rows: BTreeMap<u32, Vec<u32>>,
    pub config: lb_common::Config,
}

pub fn dump(m: &Maps) -> Dump {
    let vips = m.vips.iter().map(|e| e.expect("VIP map entry")).collect();
    let backends = (0..m.max_backends())
        .map(|i| (i, m.backend(i).expect("backend entry")))
        .filter(|(_, b)| *b != Backend::default())
        .collect();
    let rows = m
        .vips
        .iter()
        .map(|e| e.expect("VIP map entry").1)
        .map(|v| (v.vip_id, m.read_maglev(&v).expect("Maglev row")))
        .filter(|(_, r)| r.iter().any(|&s| s != NO_BACKEND))
        .collect();
    Dump {
        vips,
        backends,
        rows,
        config: m.config().expect("config entry"),
    }
}

/// Entries that differ: (VIP entries, backend entries, Maglev rows, config).
pub fn changed(a: &Dump, b: &Dump) -> (usize, usize, usize, usize) {
    fn diff<K: Ord + Clone, V: PartialEq>(x: &BTreeMap<K, V>, y: &BTreeMap<K, V>) -> usize {
        let keys: BTreeSet<K> = x.keys().chain(y.keys()).cloned().collect();
        keys.iter().filter(|k| x.get(*k) != y.get(*k)).count()
    }
    (
        diff(&a.vips, &b.vips),
        diff(&a.backends, &b.backends),
        diff(&a.rows, &b.rows),
        usize::from(a.config != b.config),
    )
}
