//! Tunes the share of the window by hill climbing on the hit rate, as
//! Caffeine does: after each sample of requests, keep moving the window in the
//! direction that raised the hit rate, with a step that shrinks while the
//! workload is steady and starts again when the hit rate jumps.

/// Share of the capacity moved by a fresh step (3.125 %; Caffeine: 6.25 %).
/// Each move away from the best window costs hit ratio until it is undone;
/// half Caffeine's step halves that cost and still reaches a 40 % window
/// in a few dozen samples.
const STEP_SHARE: f64 = 0.031_25;
/// Each steady sample multiplies the step by this (Caffeine: 0.98): the climb
/// settles sooner, so that sampling noise does not keep it wandering.
const STEP_DECAY: f64 = 0.95;
/// A hit-rate change this large (5 points) restarts the climb with a full step.
const RESTART_THRESHOLD: f64 = 0.05;
/// The fewest requests in a sample. With `10 × capacity` alone, a small
/// cache judges on samples so short that where a sample cuts a looping
/// pattern moves its hit rate by several points, and the climber chases
/// that noise.
pub(crate) const MIN_SAMPLE: u64 = 20_000;

#[derive(Debug)]
pub(crate) struct Climber {
    hits: u64,
    misses: u64,
    sample_size: u64,
    previous_hit_rate: f64,
    /// Signed: positive grows the window.
    step: f64,
    full_step: f64,
}

impl Climber {
    pub(crate) fn new(capacity: u64, sample_size: u64) -> Self {
        let full_step = STEP_SHARE * capacity as f64;
        Self {
            hits: 0,
            misses: 0,
            sample_size,
            previous_hit_rate: 0.0,
            // The first move shrinks the window, which starts at 1 %.
            step: -full_step,
            full_step,
        }
    }

    /// Counts a hit or a miss; at the end of a sample, returns how much the
    /// window should grow (negative: shrink), in units of weight.
    pub(crate) fn record(&mut self, hit: bool) -> i64 {
        if hit {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        let requests = self.hits + self.misses;
        if requests < self.sample_size {
            return 0;
        }
        let hit_rate = self.hits as f64 / requests as f64;
        let change = hit_rate - self.previous_hit_rate;
        let amount = if change >= 0.0 { self.step } else { -self.step };
        self.step = if change.abs() >= RESTART_THRESHOLD {
            self.full_step.copysign(amount)
        } else {
            STEP_DECAY * amount
        };
        self.previous_hit_rate = hit_rate;
        self.hits = 0;
        self.misses = 0;
        amount as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_direction_while_the_hit_rate_rises_and_turns_when_it_falls() {
        let mut climber = Climber::new(3_200, 10);
        // Sample 1: 50 % (up from 0): the first step, -100.
        let moves: Vec<i64> = (0..10).map(|i| climber.record(i < 5)).collect();
        assert_eq!(moves[..9], [0; 9]);
        assert_eq!(moves[9], -100);
        // Sample 2: 60 % (up 10 points): keep direction, full step again.
        let last = (0..10).map(|i| climber.record(i < 6)).last();
        assert_eq!(last, Some(-100));
        // Sample 3: 40 % (down 20 points): turn round.
        let last = (0..10).map(|i| climber.record(i < 4)).last();
        assert_eq!(last, Some(100));
        // Sample 4: 40 % (no change): same direction, then the step decays to 95 %.
        let last = (0..10).map(|i| climber.record(i < 4)).last();
        assert_eq!(last, Some(100));
        let last = (0..10).map(|i| climber.record(i < 4)).last();
        assert_eq!(last, Some(95));
    }
}
