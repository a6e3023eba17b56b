//! W-TinyLFU's state machine over slot indices: the window, the probation
//! and protected segments, the frequency sketch and the admission rule.
//!
//! It knows slots, hashes and weights, not entries: the [`Policy`](super::Policy)
//! keeps the entries and their timers beside it, and each
//! [`Shadow`](super::shadow::Shadow) runs one of these on sampled hashes alone,
//! so the replicas the climber judges decide exactly as the cache does.

use super::list::{Links, List, NIL};
use super::sketch::FrequencySketch;

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
}

#[derive(Debug)]
pub(crate) struct Segments {
    meta: Vec<Meta>,
    links: Vec<Links>,
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
    rng: fastrand::Rng,
}

impl Segments {
    /// Segments for a total weight of `max`, the window `window_max` of it,
    /// the protected segment 80 % of the rest.
    pub(crate) fn new(max: u64, window_max: u64) -> Self {
        Self {
            meta: Vec::new(),
            links: Vec::new(),
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
            sketch: FrequencySketch::new(max),
            rng: fastrand::Rng::with_seed(0x5EED_CAFE),
        }
    }

    /// The total weight held (the entry count when unweighted).
    pub(crate) fn weighted_size(&self) -> u64 {
        self.total_weight
    }

    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// The number of entries held.
    pub(crate) fn len(&self) -> u64 {
        u64::from(self.window.len() + self.probation.len() + self.protected.len())
    }

    /// The window's share of the capacity, in units of weight.
    pub(crate) fn window_max(&self) -> u64 {
        self.window_max
    }

    /// Whether slot `idx` holds an entry of the protected segment.
    pub(crate) fn is_protected(&self, idx: u32) -> bool {
        self.meta[idx as usize].region == Region::Protected
    }

    /// The number of entries in the protected segment.
    pub(crate) fn protected_len(&self) -> u32 {
        self.protected.len()
    }

    /// The weight of the entry in slot `idx`.
    pub(crate) fn weight(&self, idx: u32) -> u64 {
        self.meta[idx as usize].weight
    }

    /// The hash of the entry in slot `idx`, or of the last one it held.
    pub(crate) fn hash(&self, idx: u32) -> u64 {
        self.meta[idx as usize].hash
    }

    /// Makes room for `entries` entries up front: their slots, and a sketch
    /// of twice as many counters' words (what [`add`](Self::add) would grow
    /// it to, starting its counts over, as the entries come).
    pub(crate) fn make_room(&mut self, entries: u64) {
        let slots = entries as usize + 1;
        self.meta.reserve_exact(slots);
        self.links.reserve_exact(slots);
        self.sketch.grow_for(entries.saturating_mul(2));
    }

    /// Heap bytes of the sketch, and of the slots' metadata and links.
    #[cfg(test)]
    pub(crate) fn heap_bytes(&self) -> (usize, usize) {
        (
            self.sketch.capacity() as usize * 8,
            self.meta.capacity() * std::mem::size_of::<Meta>()
                + self.links.capacity() * std::mem::size_of::<Links>(),
        )
    }

    /// The protected segment's weight and its share.
    #[cfg(test)]
    pub(crate) fn protected_weight_and_max(&self) -> (u64, u64) {
        (self.protected_weight, self.protected_max)
    }

    /// Whether slot `idx` is in the probation segment.
    #[cfg(test)]
    pub(crate) fn in_probation(&self, idx: u32) -> bool {
        self.meta[idx as usize].region == Region::Probation
    }

    /// Reserves a slot for a new entry: a free one, or a new one after the last.
    pub(crate) fn reserve(&mut self) -> u32 {
        let meta = Meta {
            hash: 0,
            weight: 0,
            region: Region::Reserved,
        };
        if let Some(idx) = self.free.pop() {
            self.meta[idx as usize] = meta;
            idx
        } else {
            self.meta.push(meta);
            self.links.push(Links::UNLINKED);
            (self.meta.len() - 1) as u32
        }
    }

    /// Gives back a slot reserved for an entry that was not stored.
    #[cfg(test)]
    pub(crate) fn release(&mut self, idx: u32) {
        debug_assert_eq!(self.meta[idx as usize].region, Region::Reserved);
        self.meta[idx as usize].region = Region::Free;
        self.free.push(idx);
    }

    /// Adds a new entry in its reserved slot: it enters the window. The
    /// sketch counts this access when the entry leaves the window (see [`evict`](Self::evict)).
    pub(crate) fn add(&mut self, idx: u32, hash: u64, weight: u64) {
        self.meta[idx as usize] = Meta {
            hash,
            weight,
            region: Region::Window,
        };
        self.window.push_back(&mut self.links, idx);
        self.window_weight += weight;
        self.total_weight += weight;
        // Two words (32 counters) per entry held: fewer collide, and the
        // sketch also remembers keys no longer held. Counted up to the
        // maximum, so the one entry over it before an eviction does not
        // grow the table (and start its counts over) as the cache fills.
        let entries = self.len().min(self.max);
        if entries * 2 > self.sketch.capacity() {
            self.sketch.grow_for(entries * 2);
        }
    }

    /// A new weight for the entry in slot `idx`, which counts as an access
    /// (without a sketch increment); false if the slot holds no entry.
    pub(crate) fn update(&mut self, idx: u32, weight: u64) -> bool {
        let meta = self.meta[idx as usize];
        match meta.region {
            Region::Window => self.window_weight = self.window_weight - meta.weight + weight,
            Region::Protected => {
                self.protected_weight = self.protected_weight - meta.weight + weight;
            }
            Region::Probation => {}
            Region::Free | Region::Reserved => return false,
        }
        self.total_weight = self.total_weight - meta.weight + weight;
        self.meta[idx as usize].weight = weight;
        self.touch(idx);
        // A heavier value may take the protected segment past its share.
        self.demote_protected_overflow();
        true
    }

    /// Takes the entry in slot `idx` out and frees the slot; false if it held none.
    pub(crate) fn remove(&mut self, idx: u32) -> bool {
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
            Region::Free | Region::Reserved => return false,
        }
        self.total_weight -= meta.weight;
        self.meta[idx as usize].region = Region::Free;
        self.free.push(idx);
        true
    }

    /// Records a read hit left in the read buffer as `(slot, low 32 bits of
    /// the hash)`, and returns the hash. A slot reused by another key since
    /// the read is recognised and skipped (`None`).
    pub(crate) fn record_read(&mut self, idx: u32, tag: u32) -> Option<u64> {
        let &Meta { hash, region, .. } = self.meta.get(idx as usize)?;
        if hash as u32 != tag {
            return None;
        }
        match region {
            Region::Window => self.window.move_to_back(&mut self.links, idx),
            Region::Probation => self.promote(idx),
            Region::Protected => self.protected.move_to_back(&mut self.links, idx),
            Region::Free | Region::Reserved => return None,
        }
        self.sketch.increment(hash);
        Some(hash)
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

    /// Moves the window boundary by `amount` units of weight (positive: grow).
    pub(crate) fn climb(&mut self, amount: i64) {
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
    /// The slots evicted are freed and pushed to `out`.
    pub(crate) fn evict(&mut self, out: &mut Vec<u32>) {
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

    fn evict_slot(&mut self, idx: u32, out: &mut Vec<u32>) {
        if self.remove(idx) {
            out.push(idx);
        }
    }
}
