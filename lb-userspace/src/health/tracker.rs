//! A backend's health from its probes: `fall` failures in a row take it
//! down, `rise` passes in a row bring it up. One probe result never flips
//! it (unless rise or fall is 1), so a flapping backend changes state at
//! most once per `rise` + `fall` probes, and each change is reported once.

use serde::{Deserialize, Serialize};

/// What the checker believes of a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not enough probes yet: kept in rotation, as before checks existed.
    #[default]
    Unknown,
    Up,
    /// Out of the Maglev table; its flows are re-hashed.
    Down,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    state: State,
    /// Consecutive results disagreeing with `state` (for Unknown: passes
    /// counted positive, failures negative).
    passes: u32,
    failures: u32,
}

impl Tracker {
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            state: State::Unknown,
            passes: 0,
            failures: 0,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Takes a probe's result; returns the new state when it changed.
    pub fn record(&mut self, passed: bool) -> Option<State> {
        if passed {
            self.failures = 0;
            self.passes = self.passes.saturating_add(1);
        } else {
            self.passes = 0;
            self.failures = self.failures.saturating_add(1);
        }
        let next = match self.state {
            State::Unknown | State::Down if self.passes >= self.rise => State::Up,
            State::Unknown | State::Up if self.failures >= self.fall => State::Down,
            s => s,
        };
        (next != self.state).then(|| {
            self.state = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An oracle of its own: the state after a sequence is decided by the
    /// last run of equal results long enough to count, scanning forward.
    fn oracle(rise: u32, fall: u32, results: &[bool]) -> (State, usize) {
        let (mut state, mut run, mut last, mut changes) = (State::Unknown, 0u32, None, 0);
        for &r in results {
            run = if last == Some(r) { run + 1 } else { 1 };
            last = Some(r);
            let target = if r { State::Up } else { State::Down };
            let needed = if r { rise } else { fall };
            if state != target && run >= needed {
                state = target;
                changes += 1;
            }
        }
        (state, changes)
    }

    #[test]
    fn fall_failures_take_it_down_and_rise_passes_bring_it_back() {
        let mut t = Tracker::new(2, 3);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), None);
        assert_eq!(t.record(false), Some(State::Down));
        assert_eq!(t.record(false), None, "reported once");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(false), None, "a pass and a failure: still down");
        assert_eq!(t.record(true), None);
        assert_eq!(t.record(true), Some(State::Up));
    }

    #[test]
    fn matches_an_independent_oracle_on_random_sequences() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let rise = (next() % 4 + 1) as u32;
            let fall = (next() % 4 + 1) as u32;
            let len = (next() % 40) as usize;
            // Biased runs, so long streaks happen.
            let bias = next() % 100;
            let results: Vec<bool> = (0..len).map(|_| next() % 100 >= bias).collect();
            let mut t = Tracker::new(rise, fall);
            let changes = results.iter().filter_map(|&r| t.record(r)).count();
            let (state, expected_changes) = oracle(rise, fall, &results);
            assert_eq!(t.state(), state, "rise {rise} fall {fall} {results:?}");
            assert_eq!(
                changes, expected_changes,
                "rise {rise} fall {fall} {results:?}"
            );
        }
    }
}
