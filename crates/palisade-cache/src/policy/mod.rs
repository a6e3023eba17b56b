//! The admission and eviction policy: adaptive W-TinyLFU.
//!
//! New entries enter a small LRU *window*. An entry pushed out of the window
//! is a *candidate* for the main space, an SLRU of *probation* and *protected*
//! segments; it gets in only if the frequency sketch says it is more popular
//! than the entry it would evict (the probation segment's oldest). A hit in
//! probation promotes to protected. The [`Climber`] moves the boundary between
//! window and main: a big window suits recency-heavy workloads, a tiny one
//! frequency-heavy workloads and loops.
//!
//! The policy runs under the cache's maintenance lock; readers never touch it
//! directly but leave their hits in the read buffer.

mod climber;
mod list;
mod sketch;
mod wheel;

use std::sync::Arc;

use crate::entry::{Entry, NEVER};
use crate::event::RemovalCause;
use climber::Climber;
use list::{Links, List, NIL};
use sketch::FrequencySketch;
use wheel::{Filed, TimerWheel};

/// Candidates at least this popular are admitted 1 time in 128 even when
/// they lose, so that an attacker cannot keep a hot victim in place by
/// flooding the sketch with colliding keys (Caffeine's defence).
const ADMIT_FLOOR: u8 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    Free,
    Reserved,
    Window,
    Probation,
    Protected,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    hash: u64,
    weight: u64,
    region: Region,
    filed: Filed,
}

/// An entry the policy took out, and why; the cache removes it from its map.
#[derive(Debug)]
pub(crate) struct Removed<K, V> {
    pub(crate) entry: Arc<Entry<K, V>>,
    pub(crate) cause: RemovalCause,
}

#[derive(Debug)]
pub(crate) struct Policy<K, V> {
    entries: Vec<Option<Arc<Entry<K, V>>>>,
    meta: Vec<Meta>,
    links: Vec<Links>,
    timer_links: Vec<Links>,
    free: Vec<u32>,
    window: List,
    probation: List,
    protected: List,
    window_weight: u64,
    protected_weight: u64,
    total_weight: u64,
    window_max: u64,
    protected_max: u64,
    max: u64,
    sketch: FrequencySketch,
    climber: Climber,
    /// Whether the weight has reached the maximum once (see [`Self::sample`]).
    filled: bool,
    wheel: TimerWheel,
    /// Time to idle, ns (0: none).
    tti: u64,
    /// How long an expired entry is kept for stale-if-error, ns.
    keep_stale: u64,
    rng: fastrand::Rng,
    due: Vec<u32>,
}

impl<K, V> Policy<K, V> {
    pub(crate) fn new(max: u64, tti: u64, keep_stale: u64, now: u64) -> Self {
        let sketch = FrequencySketch::new(max);
        let sample = sketch
            .sample_size()
            .clamp(climber::MIN_SAMPLE, climber::MAX_SAMPLE);
        let climber = Climber::new(max, sample);
        let window_max = max / 100;
        Self {
            entries: Vec::new(),
            meta: Vec::new(),
            links: Vec::new(),
            timer_links: Vec::new(),
            free: Vec::new(),
            window: List::default(),
            probation: List::default(),
            protected: List::default(),
            window_weight: 0,
            protected_weight: 0,
            total_weight: 0,
            window_max,
            protected_max: (max - window_max) * 4 / 5,
            max,
            sketch,
            climber,
            filled: false,
            wheel: TimerWheel::new(now),
            tti,
            keep_stale,
            rng: fastrand::Rng::with_seed(0x5EED_CAFE),
            due: Vec::new(),
        }
    }

    /// The total weight of the entries held (their count when unweighted).
    pub(crate) fn weighted_size(&self) -> u64 {
        self.total_weight
    }

    /// The number of entries held.
    pub(crate) fn len(&self) -> u64 {
        u64::from(self.window.len() + self.probation.len() + self.protected.len())
    }

    /// The window's current share of the capacity, in units of weight.
    pub(crate) fn window_max(&self) -> u64 {
        self.window_max
    }

    /// Reserves a slot for a new entry, before the entry is made.
    pub(crate) fn reserve(&mut self) -> u32 {
        let meta = Meta {
            hash: 0,
            weight: 0,
            region: Region::Reserved,
            filed: None,
        };
        if let Some(idx) = self.free.pop() {
            self.meta[idx as usize] = meta;
            idx
        } else {
            let idx = self.entries.len() as u32;
            self.entries.push(None);
            self.meta.push(meta);
            self.links.push(Links::UNLINKED);
            self.timer_links.push(Links::UNLINKED);
            idx
        }
    }

    /// Gives back a slot reserved for an entry that was not stored.
    #[cfg(test)]
    pub(crate) fn release(&mut self, idx: u32) {
        debug_assert_eq!(self.meta[idx as usize].region, Region::Reserved);
        self.meta[idx as usize].region = Region::Free;
        self.free.push(idx);
    }

    /// Adds a new entry in its reserved slot: it enters the window.
    pub(crate) fn add(&mut self, entry: Arc<Entry<K, V>>) {
        let idx = entry.slot;
        let weight = u64::from(entry.weight);
        let deadline = entry.deadline(self.tti);
        // The sketch counts this access when the entry leaves the window (see `evict`).
        self.meta[idx as usize] = Meta {
            hash: entry.hash,
            weight,
            region: Region::Window,
            filed: None,
        };
        self.entries[idx as usize] = Some(entry);
        self.window.push_back(&mut self.links, idx);
        self.window_weight += weight;
        self.total_weight += weight;
        self.file(idx, deadline);
        if self.len() > self.sketch.capacity() {
            self.sketch.grow_for(self.len() * 2);
        }
        self.sample(false);
    }

    /// Puts a new value in the slot of the key's current entry.
    pub(crate) fn update(&mut self, entry: Arc<Entry<K, V>>) -> Option<Arc<Entry<K, V>>> {
        let idx = entry.slot;
        let weight = u64::from(entry.weight);
        let deadline = entry.deadline(self.tti);
        let meta = self.meta[idx as usize];
        let old_weight = meta.weight;
        match meta.region {
            Region::Window => self.window_weight = self.window_weight - old_weight + weight,
            Region::Protected => {
                self.protected_weight = self.protected_weight - old_weight + weight;
            }
            Region::Probation => {}
            Region::Free | Region::Reserved => return None,
        }
        self.total_weight = self.total_weight - old_weight + weight;
        self.meta[idx as usize].weight = weight;
        let old = self.entries[idx as usize].replace(entry);
        self.wheel
            .unschedule(&mut self.timer_links, idx, self.meta[idx as usize].filed);
        self.meta[idx as usize].filed = None;
        self.file(idx, deadline);
        self.touch(idx);
        // A heavier value may take the protected segment past its share.
        self.demote_protected_overflow();
        old
    }

    /// Takes the entry in slot `idx` out of the policy.
    pub(crate) fn remove(&mut self, idx: u32) -> Option<Arc<Entry<K, V>>> {
        let meta = self.meta[idx as usize];
        match meta.region {
            Region::Window => {
                self.window.remove(&mut self.links, idx);
                self.window_weight -= meta.weight;
            }
            Region::Probation => self.probation.remove(&mut self.links, idx),
            Region::Protected => {
                self.protected.remove(&mut self.links, idx);
                self.protected_weight -= meta.weight;
            }
            Region::Free | Region::Reserved => return None,
        }
        self.total_weight -= meta.weight;
        self.wheel
            .unschedule(&mut self.timer_links, idx, meta.filed);
        self.meta[idx as usize].region = Region::Free;
        self.meta[idx as usize].filed = None;
        self.free.push(idx);
        self.entries[idx as usize].take()
    }

    /// Records a read hit left in the read buffer as `(slot, low 32 bits of the hash)`.
    /// A slot reused by another key since the read is recognised and skipped.
    pub(crate) fn record_read(&mut self, idx: u32, tag: u32) {
        let Some(&Meta { hash, region, .. }) = self.meta.get(idx as usize) else {
            return;
        };
        if hash as u32 != tag {
            return;
        }
        match region {
            Region::Window => self.window.move_to_back(&mut self.links, idx),
            Region::Probation => self.promote(idx),
            Region::Protected => self.protected.move_to_back(&mut self.links, idx),
            Region::Free | Region::Reserved => return,
        }
        self.sketch.increment(hash);
        self.sample(true);
    }

    /// Reorders slot `idx` after an access.
    fn touch(&mut self, idx: u32) {
        match self.meta[idx as usize].region {
            Region::Window => self.window.move_to_back(&mut self.links, idx),
            Region::Probation => self.promote(idx),
            Region::Protected => self.protected.move_to_back(&mut self.links, idx),
            Region::Free | Region::Reserved => {}
        }
    }

    /// Moves slot `idx` from probation to protected after an access.
    fn promote(&mut self, idx: u32) {
        self.probation.remove(&mut self.links, idx);
        self.protected.push_back(&mut self.links, idx);
        self.meta[idx as usize].region = Region::Protected;
        self.protected_weight += self.meta[idx as usize].weight;
        self.demote_protected_overflow();
    }

    fn demote_protected_overflow(&mut self) {
        while self.protected_weight > self.protected_max {
            let Some(idx) = self.protected.pop_front(&mut self.links) else {
                break;
            };
            self.protected_weight -= self.meta[idx as usize].weight;
            self.meta[idx as usize].region = Region::Probation;
            self.probation.push_back(&mut self.links, idx);
        }
    }

    /// Counts a hit or a miss for the climber, once the cache has been full:
    /// while it fills, nothing is evicted and every key that comes back
    /// hits, so a sample that began then would show a hit rate no window
    /// can keep, and the climber would turn away from the first good move.
    fn sample(&mut self, hit: bool) {
        if !self.filled {
            if self.total_weight < self.max {
                return;
            }
            self.filled = true;
        }
        let adjustment = self.climber.record(hit);
        // Between samples the climber says 0, which would move nothing.
        if adjustment != 0 {
            self.climb(adjustment);
        }
    }

    /// Moves the window boundary by `amount` units of weight (the climber's decision).
    fn climb(&mut self, amount: i64) {
        if amount > 0 {
            let quota = amount.unsigned_abs().min(self.protected_max);
            self.window_max += quota;
            self.protected_max -= quota;
        } else if amount < 0 {
            let quota = amount.unsigned_abs().min(self.window_max);
            self.window_max -= quota;
            self.protected_max += quota;
        }
        self.protected_max = self.protected_max.min(self.max - self.window_max);
        self.demote_protected_overflow();
    }

    /// Evicts until the weight is within the maximum, moving the window's
    /// overflow to the main space if it beats the entries it would evict.
    pub(crate) fn evict(&mut self, out: &mut Vec<Removed<K, V>>) {
        while self.window_weight > self.window_max {
            let Some(candidate) = self.window.pop_front(&mut self.links) else {
                break;
            };
            let weight = self.meta[candidate as usize].weight;
            self.window_weight -= weight;
            self.meta[candidate as usize].region = Region::Probation;
            self.probation.push_back(&mut self.links, candidate);
            let candidate_hash = self.meta[candidate as usize].hash;
            let mut judged = false;
            while self.total_weight > self.max {
                let victim = [self.probation.front(), self.protected.front()]
                    .into_iter()
                    .find(|&v| v != NIL && v != candidate)
                    .unwrap_or(NIL);
                if victim == NIL {
                    break;
                }
                let admitted = self.admit(candidate, victim);
                if !judged {
                    self.sketch.increment(candidate_hash);
                    judged = true;
                }
                if admitted {
                    self.evict_slot(victim, out);
                } else {
                    self.evict_slot(candidate, out);
                    break;
                }
            }
            if !judged {
                self.sketch.increment(candidate_hash);
            }
        }
        while self.total_weight > self.max {
            let victim = [
                self.probation.front(),
                self.protected.front(),
                self.window.front(),
            ]
            .into_iter()
            .find(|&v| v != NIL)
            .unwrap_or(NIL);
            if victim == NIL {
                break;
            }
            self.evict_slot(victim, out);
        }
    }

    /// Whether the candidate should replace the victim.
    ///
    /// The candidate is judged on its history *before* the access that
    /// brought it in, which the sketch counts only after this judgement
    /// (Caffeine counts it on insert). Counted first, a newcomer on a loop
    /// larger than the cache always beats the incumbent it is compared with,
    /// which has not been seen yet on this pass, and the cache degrades to
    /// LRU: a hit ratio of 0 on a loop. Judged on its history, it ties and is
    /// turned away, so the cache keeps a fixed part of the loop, which is
    /// the best any cache can do there.
    fn admit(&mut self, candidate: u32, victim: u32) -> bool {
        let candidate_freq = self.sketch.frequency(self.meta[candidate as usize].hash);
        let victim_freq = self.sketch.frequency(self.meta[victim as usize].hash);
        if candidate_freq > victim_freq {
            true
        } else if candidate_freq >= ADMIT_FLOOR {
            self.rng.u32(..).trailing_zeros() >= 7
        } else {
            false
        }
    }

    fn evict_slot(&mut self, idx: u32, out: &mut Vec<Removed<K, V>>) {
        if let Some(entry) = self.remove(idx) {
            out.push(Removed {
                entry,
                cause: RemovalCause::Size,
            });
        }
    }

    /// Files slot `idx` in the timer wheel if its entry expires.
    fn file(&mut self, idx: u32, deadline: u64) {
        if deadline != NEVER {
            let reclaim_at = deadline.saturating_add(self.keep_stale);
            self.meta[idx as usize].filed =
                Some(self.wheel.schedule(&mut self.timer_links, idx, reclaim_at));
        }
    }

    /// Takes out every entry whose deadline (plus the stale allowance) has passed.
    pub(crate) fn expire(&mut self, now: u64, out: &mut Vec<Removed<K, V>>) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(now, &mut due);
        for &head in &due {
            let mut at = head;
            while at != NIL {
                let next = self.timer_links[at as usize].next;
                self.timer_links[at as usize] = Links::UNLINKED;
                self.meta[at as usize].filed = None;
                let deadline = self.entries[at as usize]
                    .as_ref()
                    .map_or(NEVER, |e| e.deadline(self.tti));
                if deadline.saturating_add(self.keep_stale) <= now {
                    if let Some(entry) = self.remove(at) {
                        out.push(Removed {
                            entry,
                            cause: RemovalCause::Expired,
                        });
                    }
                } else {
                    self.file(at, deadline);
                }
                at = next;
            }
        }
        due.clear();
        self.due = due;
    }

    /// Every entry held, for `invalidate_all` and iteration.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Arc<Entry<K, V>>> {
        self.entries.iter().flatten()
    }
}

#[cfg(test)]
mod tests;
