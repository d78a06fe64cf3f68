//! Where each VIP's Maglev table lives in the one Maglev array. Tables have
//! their own sizes, so the array is carved into runs of slots: best fit,
//! and a freed run merged with its free neighbours.

use std::collections::{BTreeMap, BTreeSet};

/// A VIP's table: `size` slots from slot `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Row {
    pub start: u32,
    pub size: u32,
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the Maglev array has no run of {want} free slots ({free} of its {capacity} slots are free, \
     the longest run {longest}); raise dataplane.maglev_slots"
)]
pub struct Full {
    pub want: u32,
    pub free: u64,
    pub longest: u32,
    pub capacity: u32,
}

/// The free runs of the Maglev array.
#[derive(Clone, Debug)]
pub struct Slots {
    capacity: u32,
    /// Free runs, start -> length.
    by_start: BTreeMap<u32, u32>,
    /// The same runs as (length, start): the best fit is the first one at
    /// least as long as asked.
    by_length: BTreeSet<(u32, u32)>,
    /// Released since the last [`Slots::settle`] and not yet free: a packet
    /// that read a VIP's old table position just before the VIP moved may
    /// still be reading there, and must not find another VIP's table.
    pending: Vec<Row>,
    free: u64,
}

impl Slots {
    pub fn new(capacity: u32) -> Self {
        let mut s = Self {
            capacity,
            by_start: BTreeMap::new(),
            by_length: BTreeSet::new(),
            pending: Vec::new(),
            free: 0,
        };
        if capacity > 0 {
            s.insert(0, capacity);
            s.free = u64::from(capacity);
        }
        s
    }

    /// Slots in use (released ones count until they settle).
    pub fn used(&self) -> u64 {
        u64::from(self.capacity) - self.free
    }

    /// Marks a row found in the maps (adopted pins) as taken. A row that
    /// is empty, runs past the end or overlaps one already taken is
    /// refused: its VIP's table is written again elsewhere.
    pub fn claim(&mut self, row: Row) -> bool {
        let end = u64::from(row.start) + u64::from(row.size);
        let Some((&start, &length)) = self.by_start.range(..=row.start).next_back() else {
            return false;
        };
        let run_end = u64::from(start) + u64::from(length);
        if row.size == 0 || end > run_end {
            return false;
        }
        self.remove(start, length);
        if row.start > start {
            self.insert(start, row.start - start);
        }
        if run_end > end {
            self.insert(end as u32, (run_end - end) as u32);
        }
        self.free -= u64::from(row.size);
        true
    }

    /// A run of `size` slots, from the shortest free run that holds it.
    pub fn alloc(&mut self, size: u32) -> Result<Row, Full> {
        let fit = self.by_length.range((size, 0)..).next().copied();
        let Some((length, start)) = fit.filter(|_| size > 0) else {
            return Err(Full {
                want: size,
                free: self.free,
                longest: self.by_length.last().map_or(0, |(l, _)| *l),
                capacity: self.capacity,
            });
        };
        self.remove(start, length);
        if length > size {
            self.insert(start + size, length - size);
        }
        self.free -= u64::from(size);
        Ok(Row { start, size })
    }

    /// Gives a row back; it is free from the next [`Slots::settle`].
    pub fn release(&mut self, row: Row) {
        self.pending.push(row);
    }

    /// Whether released rows wait for [`Slots::settle`].
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Frees the rows released before this call, once no packet can still
    /// be reading them: the program runs inside an RCU read-side section,
    /// so after a grace period ([`wait_for_readers`]) none that saw a VIP
    /// entry naming an old row is left. Where the kernel cannot wait for
    /// one (nohz_full), the time since the rows were released (a reconcile
    /// pass at least) stands in for it.
    pub fn settle(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if let Err(e) = wait_for_readers() {
            tracing::debug!("no RCU grace period to wait for ({e}); freeing Maglev rows as is");
        }
        for row in std::mem::take(&mut self.pending) {
            let (mut start, mut length) = (row.start, row.size);
            let before = self
                .by_start
                .range(..start)
                .next_back()
                .map(|(s, l)| (*s, *l));
            if let Some((s, l)) = before
                && s + l == start
            {
                self.remove(s, l);
                start = s;
                length += l;
            }
            let next = row.start + row.size;
            if let Some(&l) = self.by_start.get(&next) {
                self.remove(next, l);
                length += l;
            }
            self.insert(start, length);
            self.free += u64::from(row.size);
        }
    }

    /// Like [`Slots::alloc`], but when no run is long enough and rows are
    /// waiting to be freed, settles them first (a grace period: a few
    /// milliseconds) and tries again.
    pub fn alloc_settling(&mut self, size: u32) -> Result<Row, Full> {
        match self.alloc(size) {
            Err(_) if self.has_pending() => {
                self.settle();
                self.alloc(size)
            }
            r => r,
        }
    }

    fn insert(&mut self, start: u32, length: u32) {
        self.by_start.insert(start, length);
        self.by_length.insert((length, start));
    }

    fn remove(&mut self, start: u32, length: u32) {
        self.by_start.remove(&start);
        self.by_length.remove(&(length, start));
    }
}

/// Waits for an RCU grace period (`membarrier(MEMBARRIER_CMD_GLOBAL)` is
/// `synchronize_rcu()`): every program run that started before it has
/// ended, so none still reads what the maps no longer name.
pub fn wait_for_readers() -> std::io::Result<()> {
    const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;
    // SAFETY: membarrier takes two integer arguments and touches no memory
    // of ours.
    let r = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a slot-by-slot model: random allocations, releases and
    /// settles never hand out a slot twice, never lose one, and fail only
    /// when no run of free slots is long enough.
    #[test]
    fn matches_a_slot_by_slot_model() {
        let mut rng = 0x51075_u64;
        let mut next = move |n: u32| {
            rng = rng
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (rng >> 33) as u32 % n
        };
        let capacity = 5_000;
        let mut slots = Slots::new(capacity);
        let mut owner = vec![false; capacity as usize];
        let mut rows: Vec<Row> = Vec::new();
        let mut pending: Vec<Row> = Vec::new();
        for step in 0..20_000 {
            match next(10) {
                0..=4 => {
                    let size = 1 + next(400);
                    let longest = owner.split(|&o| o).map(<[bool]>::len).max().unwrap_or(0) as u32;
                    match slots.alloc(size) {
                        Ok(row) => {
                            for s in row.start..row.start + row.size {
                                assert!(!owner[s as usize], "step {step}: slot {s} given twice");
                                owner[s as usize] = true;
                            }
                            rows.push(row);
                        }
                        Err(full) => {
                            assert!(
                                size > longest,
                                "step {step}: {size} refused, {longest} free"
                            );
                            assert_eq!(full.longest, longest);
                        }
                    }
                }
                5..=8 if !rows.is_empty() => {
                    let row = rows.swap_remove(next(rows.len() as u32) as usize);
                    slots.release(row);
                    pending.push(row);
                }
                _ => {
                    slots.settle();
                    for row in pending.drain(..) {
                        for s in row.start..row.start + row.size {
                            owner[s as usize] = false;
                        }
                    }
                }
            }
            let used = owner.iter().filter(|&&o| o).count() as u64;
            assert_eq!(slots.used(), used, "step {step}");
        }
    }

    #[test]
    fn released_rows_wait_for_settle_and_merge() {
        let mut s = Slots::new(30);
        let (a, b, c) = (
            s.alloc(10).unwrap(),
            s.alloc(10).unwrap(),
            s.alloc(10).unwrap(),
        );
        s.release(b);
        assert!(s.alloc(10).is_err(), "not free before settle");
        s.release(a);
        s.release(c);
        s.settle();
        assert_eq!(s.alloc(30), Ok(Row { start: 0, size: 30 }), "merged");
    }

    #[test]
    fn claims_refuse_overlaps_and_overruns() {
        let mut s = Slots::new(100);
        assert!(s.claim(Row {
            start: 10,
            size: 20
        }));
        assert!(
            !s.claim(Row {
                start: 25,
                size: 10
            }),
            "overlap"
        );
        assert!(
            !s.claim(Row {
                start: 95,
                size: 10
            }),
            "past the end"
        );
        assert!(!s.claim(Row { start: 50, size: 0 }), "empty");
        assert!(s.claim(Row {
            start: 30,
            size: 70
        }));
        assert_eq!(s.alloc(10), Ok(Row { start: 0, size: 10 }));
        assert_eq!(s.used(), 100);
    }
}
