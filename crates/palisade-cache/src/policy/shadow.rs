//! A scaled-down replica of the cache's policy, fed the requests of a
//! hash-sampled share of the keys (spatial sampling, as in SHARDS and
//! Caffeine's simulator): a key is in the sample or not by its hash, so the
//! replica sees every request of the keys it follows, and a cache of
//! `share × capacity` over those keys behaves as the whole cache does over
//! all of them.
//!
//! It holds hashes and weights only, and decides with the cache's own
//! [`Segments`], so it differs from the cache in nothing but its size and its
//! window.

use hashbrown::HashTable;

use super::segments::Segments;

#[derive(Debug)]
pub(crate) struct Shadow {
    segments: Segments,
    /// The slot of each hash held.
    slots: HashTable<u32>,
    evicted: Vec<u32>,
}

impl Shadow {
    pub(crate) fn new(max: u64, window_max: u64) -> Self {
        Self {
            segments: Segments::new(max, window_max),
            slots: HashTable::new(),
            evicted: Vec::new(),
        }
    }

    pub(crate) fn window_max(&self) -> u64 {
        self.segments.window_max()
    }

    /// Whether it holds as much as it can (the last request evicted, or came close).
    pub(crate) fn is_full(&self) -> bool {
        self.segments.weighted_size() >= self.segments.max()
    }

    /// Moves the window boundary by `amount` units of weight, as the cache's `climb` does.
    pub(crate) fn climb(&mut self, amount: i64) {
        self.segments.climb(amount);
    }

    /// One request of the key with this hash, cache-aside: a hit reorders
    /// it, a miss adds it and evicts. Whether it hit.
    pub(crate) fn request(&mut self, hash: u64, weight: u64) -> bool {
        let held = self.slots.find(hash, |&i| self.segments.hash(i) == hash);
        if let Some(&idx) = held {
            // The low half of the hash is the slot's tag, as for a read the cache recorded.
            self.segments.record_read(idx, hash as u32);
            return true;
        }
        // Heavier than the whole replica: the cache would not keep it either.
        if weight > self.segments.max() {
            return false;
        }
        let idx = self.segments.reserve();
        self.segments.add(idx, hash, weight);
        let segments = &self.segments;
        self.slots.insert_unique(hash, idx, |&i| segments.hash(i));
        self.segments.evict(&mut self.evicted);
        for idx in self.evicted.drain(..) {
            let hash = self.segments.hash(idx);
            if let Ok(found) = self.slots.find_entry(hash, |&i| i == idx) {
                found.remove();
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_what_fits_and_turns_away_one_hit_newcomers_once_full() {
        let mut shadow = Shadow::new(4, 0);
        // Four keys fill it; each comes back and hits.
        assert!((1..=4).all(|h| !shadow.request(h, 1)));
        assert!((1..=4).all(|h| shadow.request(h, 1)));
        // A newcomer has no history: it loses to every incumbent, which has one.
        assert!(!shadow.request(5, 1));
        assert!(!shadow.request(5, 1), "turned away the first time");
        assert!((1..=4).all(|h| shadow.request(h, 1)));
    }

    #[test]
    fn an_entry_heavier_than_the_replica_is_not_held() {
        let mut shadow = Shadow::new(4, 0);
        assert!(!shadow.request(1, 5));
        assert!(!shadow.request(1, 5));
        assert_eq!(shadow.segments.weighted_size(), 0);
    }
}
#[cfg(test)]
mod probe {
    use super::*;
    #[test]
    fn probe_loop_windows() {
        for w in [0u64, 10, 125, 250, 490] {
            let mut s = Shadow::new(1000, w);
            let mut hits = [0u64; 6];
            for i in 0..60_000u64 {
                let h = (i % 1500).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                if s.request(h, 1) {
                    hits[(i / 10_000) as usize] += 1;
                }
            }
            eprintln!("window {w}: {hits:?}");
        }
    }
}
