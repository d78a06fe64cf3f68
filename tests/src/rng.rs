//! splitmix64: a small seeded generator for the tests' random inputs, the
//! same sequence for the same seed on every machine (a failing seed,
//! printed, replays the failure).

pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (modulo bias aside, which no test here minds).
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }
}

/// A number from the environment, decimal or `0x` hex; none when unset,
/// a panic naming the variable when it is not a number.
pub fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    Some(if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16).unwrap_or_else(|e| panic!("{name}={v}: {e}"))
    } else {
        v.parse().unwrap_or_else(|e| panic!("{name}={v}: {e}"))
    })
}

/// A seeded test's seed: `XLB_SEED` to replay one, else a fresh one from
/// the clock and the process id. The test prints it on failure.
pub fn seed() -> u64 {
    env_u64("XLB_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
    })
}
