//! The text read into the file's model and what the relation checks need
//! of its tree: a `[[vip]]` at a time when that reads it as the whole file
//! would, else all at once.
//!
//! Read at once, a 100,000-VIP file took about 600 MB: toml's tokens and
//! tree of the whole file are alive together. A part at a time, only one
//! VIP's are. Errors are the same either way: any part toml or serde would
//! not read, or two parts that set the same table (toml decides whether
//! they may), and the whole file is read at once, so the error reported is
//! the one it has always been.

use serde::Deserialize;
use toml::Spanned;
use toml::de::DeTable;

use super::doc::{self, Doc};
use super::error::Fault;
use super::model::{File, VipEntry};
use super::parts::Parts;

pub(super) fn read(text: &str) -> Result<(File, Doc<'_>), Fault> {
    match by_parts(text) {
        Some(read) => read,
        None => at_once(text),
    }
}

pub(super) fn at_once(text: &str) -> Result<(File, Doc<'_>), Fault> {
    let root = doc::parse(text, 0)?;
    let mut doc = Doc::new(text);
    // A first part always goes in.
    doc.add(0, &root);
    let file =
        File::deserialize(toml::de::Deserializer::from(root)).map_err(|e| doc::invalid(&e, 0))?;
    Ok((file, doc))
}

/// `None` when the parts do not read as the whole file would; otherwise
/// the file, or its first error in the order serde reads the whole file:
/// the tables before the first `[[vip]]`, the VIPs, then the tables after.
fn by_parts(text: &str) -> Option<Result<(File, Doc<'_>), Fault>> {
    let mut parts = Parts::new(text);
    // With no `[[vip]]` to cut at, at once is as cheap and exactly as before.
    let (first, second) = (parts.next()?, parts.next()?);
    let mut doc = Doc::new(text);
    let mut vips = Vec::new();
    let mut vip_error = None;
    for (index, (offset, part)) in [first, second].into_iter().chain(parts).enumerate() {
        let mut root = doc::parse(part, offset).ok()?;
        let first = index == 0;
        // The first part ends at the first `[[vip]]` (one not recognised
        // as such leaves the rest in it: read at once).
        if (first && root.get_ref().contains_key("vip")) || !doc.add(offset, &root) {
            return None;
        }
        if first || vip_error.is_some() {
            continue;
        }
        // The other tables of the part are read with the first part's,
        // after the VIPs; the part's tree is dropped once its VIP is read.
        let mut vip = DeTable::new();
        if let Some((key, value)) = root.get_mut().remove_entry("vip") {
            vip.insert(key, value);
        }
        let vip = Spanned::new(root.span(), vip);
        match VipPart::deserialize(toml::de::Deserializer::from(vip)) {
            Ok(part) => vips.extend(part.vip),
            Err(e) => vip_error = Some(doc::invalid(&e, offset)),
        }
    }
    let mut file = File::default();
    let mut vips = Some(vips);
    for (offset, tables) in doc.tables() {
        if *offset > 0
            && let Some(vips) = vips.take()
        {
            if let Some(fault) = vip_error.take() {
                return Some(Err(fault));
            }
            file.vip = vips;
        }
        match File::deserialize(toml::de::Deserializer::from(tables.clone())) {
            Ok(part) => file.merge(part),
            Err(e) => return Some(Err(doc::invalid(&e, *offset))),
        }
    }
    if let Some(vips) = vips.take() {
        if let Some(fault) = vip_error {
            return Some(Err(fault));
        }
        file.vip = vips;
    }
    Some(Ok((file, doc)))
}

/// A part's `[[vip]]` as [`File`] reads it, without the rest of a `File`
/// to build, move and drop for every VIP.
#[derive(Deserialize)]
struct VipPart {
    vip: Vec<VipEntry>,
}
