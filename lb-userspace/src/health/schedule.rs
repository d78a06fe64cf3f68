//! When each target is probed: every `interval`, each lengthened or
//! shortened by up to `jitter_percent`, and the first probe of each target
//! placed at its own point of the interval (from a hash of the target), so
//! 1,000 backends are probed evenly over the interval, not in a burst at
//! start or after every reload.

use std::{
    hash::{Hash, Hasher},
    time::Duration,
};

/// The offset of a target's first probe within `interval`: stable for the
/// same target, spread uniformly over targets.
pub fn phase(target: &impl Hash, interval: Duration) -> Duration {
    let mut h = std::hash::DefaultHasher::new();
    target.hash(&mut h);
    let fraction = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    interval.mul_f64(fraction)
}

/// The wait before the next probe: `interval` ± up to `jitter_percent`.
pub fn next_wait(interval: Duration, jitter_percent: u8, rng: &mut Rng) -> Duration {
    let j = f64::from(jitter_percent.min(100)) / 100.0;
    interval.mul_f64(1.0 + j * (2.0 * rng.unit() - 1.0))
}

/// xorshift64*: jitter needs spread, not secrecy.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn seeded_from_clock() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self::new(now.as_nanos() as u64 ^ u64::from(std::process::id()) << 32)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_probes_of_many_targets_spread_over_the_interval() {
        let interval = Duration::from_secs(1);
        let mut windows = [0u32; 10];
        for i in 0..1_000u32 {
            let p = phase(&(i, "10.0.0.1"), interval);
            assert!(p < interval);
            windows[(p.as_millis() / 100) as usize] += 1;
        }
        // Mean 100 per 100 ms window; the bound is twice that.
        assert!(windows.iter().all(|&n| n < 200 && n > 30), "{windows:?}");
    }

    #[test]
    fn waits_stay_within_the_jitter() {
        let mut rng = Rng::new(7);
        let interval = Duration::from_millis(2_000);
        let waits: Vec<Duration> = (0..10_000)
            .map(|_| next_wait(interval, 10, &mut rng))
            .collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_millis(1_800) && *w <= Duration::from_millis(2_200))
        );
        let mean = waits.iter().sum::<Duration>() / waits.len() as u32;
        assert!(
            mean > Duration::from_millis(1_980) && mean < Duration::from_millis(2_020),
            "{mean:?}"
        );
        assert_eq!(next_wait(interval, 0, &mut rng), interval);
    }
}
