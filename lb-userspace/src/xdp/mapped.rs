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
        let fd = map.fd().as_fd().as_raw_fd();
        // SAFETY: a shared mapping of a BPF_F_MMAPABLE array of `len`
        // 8-byte elements.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(LoadError::Mmap {
                name,
                source: std::io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(p.cast::<u64>()).expect("mmap never returns null on success");
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

impl Drop for MappedArray {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len_bytes) };
    }
}
