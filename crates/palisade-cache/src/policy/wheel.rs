//! A hierarchical timer wheel that finds expired entries without scanning the cache.
//!
//! Five levels of 64 buckets; a bucket of level `l` spans `2^(24 + 6l)` ns
//! (about 16.8 ms, 1.07 s, 68.7 s, 73 min and 78 h), so an expired entry is
//! reclaimed within about 17 ms of its deadline by the next maintenance. An entry is filed in the coarsest
//! level whose bucket is shorter than the time it has left, and filed again
//! one level down when its bucket comes round without it having expired
//! (its deadline may also have moved later: time-to-idle). Deadlines past the
//! last level's reach wait in its buckets and are filed again the same way.
//! Filing, unfiling and advancing are O(1) per entry touched.

use super::list::{Links, List, NIL};

const LEVELS: usize = 5;
const BUCKETS: u64 = 64;
const SHIFTS: [u32; LEVELS] = [24, 30, 36, 42, 48];

#[derive(Debug)]
pub(crate) struct TimerWheel {
    buckets: Box<[[List; BUCKETS as usize]; LEVELS]>,
    /// The time of the last advance, in ns.
    time: u64,
}

/// Where an entry is filed: (level, bucket), or `None` when not filed.
pub(crate) type Filed = Option<(u8, u8)>;

/// The level and bucket an entry was filed in.
pub(crate) type Bucket = (u8, u8);

impl TimerWheel {
    pub(crate) fn new(now: u64) -> Self {
        Self {
            buckets: Box::new([[List::default(); BUCKETS as usize]; LEVELS]),
            time: now,
        }
    }

    /// Files slot `idx` to come round at `deadline`.
    pub(crate) fn schedule(&mut self, links: &mut [Links], idx: u32, deadline: u64) -> Bucket {
        let delta = deadline.saturating_sub(self.time);
        let level = (0..LEVELS - 1)
            .find(|&l| delta < (BUCKETS << SHIFTS[l]))
            .unwrap_or(LEVELS - 1);
        let bucket = ((deadline.max(self.time) >> SHIFTS[level]) & (BUCKETS - 1)) as usize;
        self.buckets[level][bucket].push_back(links, idx);
        (level as u8, bucket as u8)
    }

    /// Takes slot `idx` out of the bucket it was filed in.
    pub(crate) fn unschedule(&mut self, links: &mut [Links], idx: u32, filed: Filed) {
        if let Some((level, bucket)) = filed {
            self.buckets[level as usize][bucket as usize].remove(links, idx);
        }
    }

    /// Moves the wheel to `now` and returns the chains of slots whose buckets
    /// came round; the caller checks each slot's deadline and either expires
    /// it or files it again with [`schedule`](Self::schedule). Walk a chain
    /// with `links[i].next` and read `next` before filing `i` again.
    pub(crate) fn advance(&mut self, now: u64, due: &mut Vec<u32>) {
        if now <= self.time {
            return;
        }
        for (level, &shift) in SHIFTS.iter().enumerate() {
            let from = self.time >> shift;
            let to = now >> shift;
            if from == to {
                break; // coarser levels cannot have turned either
            }
            let turns = (to - from).min(BUCKETS - 1);
            for tick in (to - turns)..=to {
                let head = self.buckets[level][(tick & (BUCKETS - 1)) as usize].take();
                if head != NIL {
                    due.push(head);
                }
            }
        }
        self.time = now;
    }
}
