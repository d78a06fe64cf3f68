//! Id allocation for VIP rows and backend entries.

/// Ids in `first..capacity`, handed out round-robin from a cursor so a
/// just-released id is the last to be reused: stale flow-table entries that
/// still name it have the longest time to age out.
#[derive(Clone, Debug)]
pub struct IdPool {
    used: Vec<bool>,
    first: u32,
    cursor: u32,
    in_use: usize,
}

impl IdPool {
    pub fn new(first: u32, capacity: u32) -> Self {
        Self {
            used: vec![false; capacity as usize],
            first,
            cursor: first,
            in_use: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.used.len() - self.first as usize
    }

    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Marks an id found in the maps as taken.
    pub fn claim(&mut self, id: u32) -> bool {
        match self.used.get_mut(id as usize) {
            Some(u) if id >= self.first && !*u => {
                *u = true;
                self.in_use += 1;
                self.cursor = id + 1;
                true
            }
            _ => false,
        }
    }

    pub fn alloc(&mut self) -> Option<u32> {
        let n = self.used.len() as u32;
        if self.in_use >= self.capacity() {
            return None;
        }
        let mut id = self.cursor;
        loop {
            if id >= n {
                id = self.first;
            }
            if !self.used[id as usize] {
                self.used[id as usize] = true;
                self.in_use += 1;
                self.cursor = id + 1;
                return Some(id);
            }
            id += 1;
        }
    }

    pub fn release(&mut self, id: u32) {
        if let Some(u) = self.used.get_mut(id as usize)
            && *u
        {
            *u = false;
            self.in_use -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::IdPool;

    #[test]
    fn released_ids_are_reused_last() {
        let mut p = IdPool::new(1, 5);
        assert_eq!(
            (p.alloc(), p.alloc(), p.alloc(), p.alloc()),
            (Some(1), Some(2), Some(3), Some(4))
        );
        assert_eq!(p.alloc(), None);
        p.release(2);
        p.release(1);
        assert_eq!(
            p.alloc(),
            Some(1),
            "wraps to the lowest free id after the cursor"
        );
        assert_eq!(p.alloc(), Some(2));
        assert!(!p.claim(0) && !p.claim(9));
    }
}
