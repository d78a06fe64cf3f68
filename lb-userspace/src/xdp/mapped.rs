//! A `BPF_F_MMAPABLE` array mapped into our memory: whole rows written with
//! plain stores instead of one update syscall per element.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::MapData;

use super::LoadError;

/// The elements of an mmapable array, each `round_up(value_size, 8)` = 8
/// bytes apart (both users store at most 64 bits per element). The program
/// reads concurrently: every element is written with one aligned store, so
/// it is seen old or new, never torn.
pub(super) struct MappedArray {
    _map: MapData,
    base: NonNull<u64>,
    len_bytes: usize,
    /// Elements.
    pub(super) len: usize,
}

// SAFETY: the mapping is owned by this value and only touched through
// `&self`/`&mut self`.
unsafe impl Send for MappedArray {}
unsafe impl Sync for MappedArray {}

impl MappedArray {
    pub(super) fn new(map: MapData, name: &'static str) -> Result<Self, LoadError> {
        let info = map
            .info()
            .map_err(|source| LoadError::Map { name, source })?;
        let len = info.max_entries() as usize;
        let page = 4096usize;
        let len_bytes = (len * size_of::<u64>()).div_ceil(page) * page;
        let base = map_pages(&map, 0, len_bytes, libc::PROT_READ | libc::PROT_WRITE)
            .map_err(|source| LoadError::Mmap { name, source })?;
        Ok(Self {
            _map: map,
            base,
            len_bytes,
            len,
        })
    }

    /// Element `i`. Panics when out of range (callers check).
    pub(super) fn get(&self, i: usize) -> u64 {
        assert!(i < self.len, "element {i} of {}", self.len);
        // SAFETY: in bounds of the mapping.
        unsafe { std::ptr::read_volatile(self.base.as_ptr().add(i)) }
    }

    pub(super) fn set(&mut self, i: usize, v: u64) {
        assert!(i < self.len, "element {i} of {}", self.len);
        // SAFETY: in bounds of the mapping; one aligned store.
        unsafe { std::ptr::write_volatile(self.base.as_ptr().add(i), v) }
    }
}

/// Maps `bytes` (whole pages) of a BPF_F_MMAPABLE array's values, from
/// byte `offset` (page-aligned), shared with the kernel: stores land in the
/// map. The caller unmaps it.
pub(super) fn map_pages(
    map: &MapData,
    offset: u64,
    bytes: usize,
    prot: libc::c_int,
) -> std::io::Result<NonNull<u64>> {
    let fd = map.fd().as_fd().as_raw_fd();
    // SAFETY: a new shared mapping of whole pages of the map's values,
    // inside the array (the callers size it), at a page-aligned offset;
    // nothing of ours is overwritten.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            prot,
            libc::MAP_SHARED,
            fd,
            offset as libc::off_t,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(NonNull::new(p.cast()).expect("mmap never returns null on success"))
}

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len_bytes) };
    }
}
