//! Tunes the share of the window by hill climbing on the hit rate, as
//! Caffeine does: after each sample of requests, keep moving the window in the
//! direction that raised the hit rate, with a step that shrinks while the
//! workload is steady and starts again when the hit rate jumps.
//!
//! The first move grows the window (Caffeine's shrinks it). The window starts
//! at 1 %; shrinking first takes it to 0 on the first sample, and where every
//! window below the reuse distance scores about the same (a recency-heavy
//! workload whose keys come back after a few hundred requests), the hit rate
//! does not move, so the climber keeps its direction and stays at 0 for good.
//! Growing first, the hit rate rises on such a workload and the climb goes
//! on; on a frequency-heavy one it falls and the climber turns round after
//! one sample.

/// Share of the capacity moved by a fresh step (Caffeine's 6.25 %): a window
/// of 20 to 40 % (what recency-heavy traces need) is a handful of samples away.
const STEP_SHARE: f64 = 0.062_5;
/// Each steady sample multiplies the step by this (Caffeine: 0.98): the climb
/// settles sooner, so that sampling noise does not keep it wandering.
const STEP_DECAY: f64 = 0.95;
/// A hit-rate change this large (5 points) restarts the climb with a full step.
const RESTART_THRESHOLD: f64 = 0.05;
/// How far the hit rate may fall below the best one since the last turn
/// before the climber turns round (0.5 point). Turning at the first sample
/// that is worse than the one before, as Caffeine does, makes a climber on a
/// plateau (every window below the reuse distance scoring about the same)
/// turn on sampling noise and wander round its starting point; measuring
/// from the best sample instead still turns on a slow decline.
const PLATEAU: f64 = 0.005;

/// The fewest requests in a sample. With `10 × capacity` alone, a small
/// cache judges on samples so short that where a sample cuts a looping
/// pattern moves its hit rate by several points, and the climber chases
/// that noise.
pub(crate) const MIN_SAMPLE: u64 = 20_000;
/// The most requests in a sample. With `10 × capacity` alone, a cache of
/// 100,000 entries moves its window once per million requests: on a trace of
/// a million requests it never adapts. A sample of 100,000 requests is
/// already long enough for its hit rate to be steady.
pub(crate) const MAX_SAMPLE: u64 = 100_000;

#[derive(Debug)]
pub(crate) struct Climber {
    hits: u64,
    /// Requests still to come in this sample.
    left: u64,
    sample_size: u64,
    previous_hit_rate: f64,
    /// The best hit rate since the climber last turned round.
    best_hit_rate: f64,
    /// Signed: positive grows the window.
    step: f64,
    full_step: f64,
}

impl Climber {
    pub(crate) fn new(capacity: u64, sample_size: u64) -> Self {
        let full_step = STEP_SHARE * capacity as f64;
        Self {
            hits: 0,
            left: sample_size.max(1),
            sample_size,
            previous_hit_rate: 0.0,
            best_hit_rate: 0.0,
            // The first move grows the window, which starts at 1 % (see the module's docs).
            step: full_step,
            full_step,
        }
    }

    /// Counts a hit or a miss; at the end of a sample, returns how much the
    /// window should grow (negative: shrink), in units of weight.
    #[inline]
    pub(crate) fn record(&mut self, hit: bool) -> i64 {
        self.hits += u64::from(hit);
        self.left -= 1;
        if self.left != 0 {
            return 0;
        }
        self.end_sample()
    }

    /// Judges the sample just ended and starts the next one.
    #[cold]
    fn end_sample(&mut self) -> i64 {
        let requests = self.sample_size.max(1);
        let hit_rate = self.hits as f64 / requests as f64;
        let change = hit_rate - self.previous_hit_rate;
        let turn = hit_rate < self.best_hit_rate - PLATEAU;
        let amount = if turn { -self.step } else { self.step };
        self.best_hit_rate = if turn {
            hit_rate
        } else {
            self.best_hit_rate.max(hit_rate)
        };
        self.step = if change.abs() >= RESTART_THRESHOLD {
            self.full_step.copysign(amount)
        } else {
            STEP_DECAY * amount
        };
        self.previous_hit_rate = hit_rate;
        self.hits = 0;
        self.left = requests;
        amount as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_grows_then_keeps_direction_while_the_hit_rate_rises_and_turns_when_it_falls() {
        let mut climber = Climber::new(3_200, 10);
        // Sample 1: 50 % (up from 0): the first step grows the window by 6.25 %, 200.
        let moves: Vec<i64> = (0..10).map(|i| climber.record(i < 5)).collect();
        assert_eq!(moves[..9], [0; 9]);
        assert_eq!(moves[9], 200);
        // Sample 2: 60 % (up 10 points): keep direction, full step again.
        let last = (0..10).map(|i| climber.record(i < 6)).last();
        assert_eq!(last, Some(200));
        // Sample 3: 40 % (down 20 points): turn round.
        let last = (0..10).map(|i| climber.record(i < 4)).last();
        assert_eq!(last, Some(-200));
        // Sample 4: 40 % (no change): same direction, then the step decays to 95 %.
        let last = (0..10).map(|i| climber.record(i < 4)).last();
        assert_eq!(last, Some(-200));
        let last = (0..10).map(|i| climber.record(i < 4)).last();
        assert_eq!(last, Some(-190));
    }
}
