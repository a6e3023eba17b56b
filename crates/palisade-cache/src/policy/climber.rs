//! Tunes the window's share of the capacity by judging two replicas of the
//! policy on the same requests: one whose window is a step smaller than the
//! cache's, one whose window is a step larger ([`Shadow`], each fed the
//! requests of the same hash-sampled share of the keys). The cache's window
//! moves towards the replica that hits more.
//!
//! Comparing the replicas request by request is what makes this quick. A
//! climber that compares the cache's hit rate in one sample with the next
//! (Caffeine's, and this crate's before) needs long samples, or the change
//! of the workload between two samples outweighs the change the step made:
//! a short trace gives it a few moves, a trace shorter than one sample none.
//! Two replicas see the same requests, so only the requests one hits and
//! the other misses count, and a few hundred of those tell a real
//! difference from chance.
//!
//! A period ends when one replica leads by far (five standard deviations of
//! a fair coin's) or the requests that differ reach [`DECIDING`], and then
//! whichever leads wins; or, as a tie, when the replicas have agreed on
//! nearly every request. A period that reaches its longest (32 replica
//! capacities) is won by whichever leads, unless they differed on under
//! 1/64 of its requests: then it is a tie too. The step doubles while
//! the moves keep their direction (up to a quarter of the capacity), so a
//! window far from its best is reached in a few moves, and halves when they
//! turn (down to 1/64), so it settles. A period that ends with the two
//! replicas level leaves the window where it is and widens the probes (the
//! step doubles): where every window near the cache's scores the same (below
//! a workload's reuse distance, say), only a wider probe can find the window
//! past it. The window starts at 1 %, the step at 6.25 % (Caffeine's).
//!
//! The values below were chosen on the replays of `benches/benches/cache_hit_ratio.rs`
//! (every trace and size), not on any one row; ADR 0004 has the measurements.

use super::shadow::Shadow;

/// Entries (units of weight, once scaled) the replicas aim at: a cache up
/// to this size is replicated whole, a larger one on a sampled share of its
/// keys. Replicas of this size follow the hit ratio of the whole cache
/// closely (SHARDS' finding); 512 and 2,048 measured no better.
const SHADOW_ENTRIES: u64 = 1_024;
/// The first step is the capacity over this (6.25 %).
const FIRST_STEP: u64 = 16;
/// The smallest step is the capacity over this.
const MIN_STEP: u64 = 64;
/// The largest step is the capacity over this.
const MAX_STEP: u64 = 4;
/// Requests one replica hits and the other misses before either can win early.
const MIN_DIFFERING: u64 = 16;
/// A replica wins early once its lead squared exceeds this times the
/// differing requests (a lead of five standard deviations of a fair
/// coin's): it is checked at every request, and the differing requests come
/// in runs, so a lower bar (three deviations was measured) moves on chance.
const LEAD_SQUARED: u64 = 25;
/// Differing requests after which the replica ahead wins however narrowly.
const DECIDING: u64 = 512;
/// The fewest sampled requests a period judges on, in replica capacities
/// (entries). The requests one replica hits and the other misses come in
/// runs (on a loop, a stretch of keys that one holds and the other does
/// not), so a lead over a few of them is not yet a result.
const MIN_REQUESTS: u64 = 2;
/// The most sampled requests in a period, in replica capacities.
const PERIOD: u64 = 32;

/// How a period ended.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Won { larger: bool },
    Tie,
}

#[derive(Debug)]
pub(crate) struct Climber {
    smaller: Shadow,
    larger: Shadow,
    /// A key is sampled when the high half of its hash is below this.
    threshold: u64,
    /// The replicas' capacity over the cache's, as a fraction `shadow_max / max`.
    shadow_max: u64,
    max: u64,
    step: u64,
    growing: bool,
    smaller_only: u64,
    larger_only: u64,
    requests: u64,
    /// The fewest sampled requests a period judges on ([`MIN_REQUESTS`]).
    min_requests: u64,
    /// The most sampled requests in a period ([`PERIOD`]).
    period: u64,
    /// Whether both replicas have been full.
    warm: bool,
}

impl Climber {
    /// A climber for a cache of total weight `max` that holds `len` entries
    /// when full (`max` when every entry weighs 1), and whose window is `window`.
    pub(crate) fn new(max: u64, len: u64, window: u64) -> Self {
        let max = max.max(1);
        let len = len.max(1);
        let (threshold, shadow_max) = if len <= SHADOW_ENTRIES {
            (1 << 32, max)
        } else {
            let share = SHADOW_ENTRIES as f64 / len as f64;
            (
                ((1u64 << 32) as f64 * share) as u64,
                ((max as f64 * share).round() as u64).max(1),
            )
        };
        let step = (max / FIRST_STEP).max(1);
        let mut climber = Self {
            smaller: Shadow::new(shadow_max, 0, SHADOW_ENTRIES.min(len)),
            larger: Shadow::new(shadow_max, 0, SHADOW_ENTRIES.min(len)),
            threshold,
            shadow_max,
            max,
            step,
            growing: true,
            smaller_only: 0,
            larger_only: 0,
            requests: 0,
            min_requests: MIN_REQUESTS * SHADOW_ENTRIES.min(len),
            period: PERIOD * SHADOW_ENTRIES.min(len),
            warm: false,
        };
        climber.place_replicas(window);
        climber
    }

    /// The sampling threshold and the replicas' capacity.
    #[cfg(test)]
    pub(crate) fn sample(&self) -> (u64, u64) {
        (self.threshold, self.shadow_max)
    }

    /// Requests of a key whose hash's high half is below this feed the replicas.
    pub(crate) fn sampled_below(&self) -> u64 {
        self.threshold
    }

    /// Whether requests of the key with this hash feed the replicas.
    #[inline]
    pub(crate) fn samples(&self, hash: u64) -> bool {
        (hash >> 32) < self.threshold
    }

    /// A request of a sampled key (`samples` said so) of this weight, when
    /// the cache's window is `window`; returns how much the window should
    /// grow (negative: shrink), in units of weight, or 0.
    pub(crate) fn record(&mut self, hash: u64, weight: u64, window: u64) -> i64 {
        // A replica follows a share of the keys, each at its own weight,
        // in a share of the capacity: the weight is not scaled.
        let weight = weight.max(1);
        let smaller = self.smaller.request(hash, weight);
        let larger = self.larger.request(hash, weight);
        if !self.warm {
            // Until both replicas are full they evict nothing, and their
            // first evictions say more about when each filled than about
            // its window.
            self.warm = self.smaller.is_full() && self.larger.is_full();
            return 0;
        }
        self.smaller_only += u64::from(smaller && !larger);
        self.larger_only += u64::from(larger && !smaller);
        self.requests += 1;
        if self.requests < self.min_requests {
            return 0;
        }
        let differing = self.smaller_only + self.larger_only;
        let lead = self.larger_only.abs_diff(self.smaller_only);
        let won = Outcome::Won {
            larger: self.larger_only > self.smaller_only,
        };
        let far_ahead = differing >= MIN_DIFFERING && lead * lead > LEAD_SQUARED * differing;
        let outcome = if lead > 0 && (far_ahead || differing >= DECIDING) {
            won
        } else if differing < MIN_DIFFERING {
            // The replicas agree on every request but a few: a tie now.
            Outcome::Tie
        } else if self.requests >= self.period {
            // At the end of a period the replica ahead wins, unless the
            // replicas differed on under 1/64 of the requests.
            if lead > 0 && differing * 64 >= self.requests {
                won
            } else {
                Outcome::Tie
            }
        } else {
            return 0;
        };
        self.judge(outcome, window)
    }

    /// Ends a period: moves the window towards the replica that won, or
    /// on a tie widens the probes.
    #[cold]
    fn judge(&mut self, outcome: Outcome, window: u64) -> i64 {
        let largest_step = (self.max / MAX_STEP).max(1);
        let target = match outcome {
            Outcome::Won { larger } => {
                if larger == self.growing {
                    self.step = (self.step * 2).min(largest_step);
                } else {
                    self.growing = larger;
                    self.step = (self.step / 2).max((self.max / MIN_STEP).max(1));
                }
                if self.growing {
                    window.saturating_add(self.step).min(self.max)
                } else {
                    window.saturating_sub(self.step)
                }
            }
            Outcome::Tie => {
                self.step = (self.step * 2).min(largest_step);
                window
            }
        };
        self.place_replicas(target);
        self.smaller_only = 0;
        self.larger_only = 0;
        self.requests = 0;
        target as i64 - window as i64
    }

    /// Puts the replicas' windows a step either side of `window`.
    fn place_replicas(&mut self, window: u64) {
        let smaller = self.scale(window.saturating_sub(self.step));
        let larger = self.scale(window.saturating_add(self.step).min(self.max));
        self.smaller
            .climb(smaller as i64 - self.smaller.window_max() as i64);
        self.larger
            .climb(larger as i64 - self.larger.window_max() as i64);
    }

    /// A window of the cache's in the replicas' units of capacity.
    fn scale(&self, window: u64) -> u64 {
        if self.shadow_max == self.max {
            window
        } else {
            (u128::from(window) * u128::from(self.shadow_max) / u128::from(self.max)) as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds the sampled ones of `keys`, each weighing `weight`, to the
    /// climber as a cache with window `window` would; the moves it asked for.
    fn replay(
        climber: &mut Climber,
        window: &mut u64,
        weight: u64,
        keys: impl IntoIterator<Item = u64>,
    ) -> Vec<i64> {
        let mut moves = Vec::new();
        for hash in keys.into_iter().map(super::super::test_hash) {
            if climber.samples(hash) {
                let amount = climber.record(hash, weight, *window);
                if amount != 0 {
                    *window = (*window as i64 + amount) as u64;
                    moves.push(amount);
                }
            }
        }
        moves
    }

    /// The first `count` keys from 0 up that `climber` samples.
    fn sampled_keys(climber: &Climber, count: usize) -> Vec<u64> {
        (0..)
            .filter(|&key| climber.samples(super::super::test_hash(key)))
            .take(count)
            .collect()
    }

    #[test]
    fn a_small_cache_is_replicated_whole_a_large_one_on_a_share_of_its_keys() {
        let small = Climber::new(1_000, 1_000, 10);
        assert_eq!((small.threshold, small.shadow_max), (1 << 32, 1_000));
        let large = Climber::new(100_000, 100_000, 1_000);
        assert_eq!(large.shadow_max, 1_024);
        assert_eq!(large.threshold, 43_980_465);
        // The smaller replica's window is a step (6,250) below 1,000: 0; the larger's, 7,250 scaled.
        assert_eq!(
            (large.smaller.window_max(), large.larger.window_max()),
            (0, 74)
        );
    }

    #[test]
    fn on_a_plateau_the_window_stays_and_the_probes_widen() {
        // Every key new: both replicas always miss. They are full after
        // 1,000 requests; from then on each 2,000 (twice their capacity)
        // end in a tie, which doubles the step (62, then 124, 248 and the
        // largest, a quarter of the capacity) and moves nothing.
        let mut climber = Climber::new(1_000, 1_000, 10);
        let mut window = 10;
        let moves = replay(&mut climber, &mut window, 1, 0..9_000);
        assert!(moves.is_empty(), "{moves:?}");
        assert_eq!(window, 10);
        assert_eq!(climber.step, 250);
        assert_eq!(
            (climber.smaller.window_max(), climber.larger.window_max()),
            (0, 260)
        );
    }

    #[test]
    fn a_loop_larger_than_the_cache_shrinks_the_window_and_the_step_grows_while_it_wins() {
        // A loop of 1,500 keys over 1,000 entries: the smaller the window the
        // more of the loop the main space keeps.
        let mut climber = Climber::new(1_000, 1_000, 10);
        let mut window = 400;
        climber.place_replicas(window);
        let moves = replay(&mut climber, &mut window, 1, (0..60_000).map(|i| i % 1_500));
        // The first clear result turns round (the step halves to 31), each
        // next one in the same direction doubles it (62, 124, then 248,
        // which the window's 183 left cut short) until the window reaches 0,
        // where it stays.
        assert_eq!(moves, [-31, -62, -124, -183]);
        assert_eq!(window, 0);
    }

    #[test]
    fn a_weighed_caches_replicas_hold_a_share_of_its_entries_at_their_weight() {
        // 10,000 entries of weight 100: the replicas follow 10.24 % of the
        // keys and 102,400 units of weight, 1,024 entries of weight 100.
        let mut climber = Climber::new(1_000_000, 10_000, 10_000);
        assert_eq!(climber.sample(), (439_804_651, 102_400));
        // Twice as many distinct sampled keys as that fill both replicas
        // (scaled to the replicas' share, each would weigh 10, and 2,048 of
        // them 20,480 of 102,400: a replica ten times too large for its keys).
        let keys = sampled_keys(&climber, 2_048);
        replay(&mut climber, &mut 10_000, 100, keys);
        assert!(climber.smaller.is_full() && climber.larger.is_full());
    }

    #[test]
    fn replicas_warm_up_when_the_weights_do_not_divide_their_capacity() {
        // Weight 1,000, entries of 3: 333 of them, replicated whole. After
        // an eviction a replica weighs at most 999, never its maximum; it
        // is full all the same.
        let mut climber = Climber::new(1_000, 333, 10);
        let keys = sampled_keys(&climber, 10_000);
        replay(&mut climber, &mut 10, 3, keys);
        assert!(climber.warm, "the replicas never counted as full");
    }
}
