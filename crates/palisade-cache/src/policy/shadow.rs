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
    /// The slot of each hash held, under [`table_hash`].
    slots: HashTable<u32>,
    evicted: Vec<u32>,
    /// Whether it has evicted: full, even if the weights held do not add up
    /// to the maximum exactly.
    has_evicted: bool,
}

/// The hash a replica's table files a key's hash under. Sampled keys share
/// the high bits of their hash (all below the sampling threshold), and
/// hashbrown's control bytes are the top 7 bits: filed as it is, every key
/// of a small share would have the same control byte.
fn table_hash(hash: u64) -> u64 {
    hash.rotate_left(32)
}

impl Shadow {
    /// A replica of total weight `max`, its window `window_max`, with room
    /// for the `entries` it is expected to hold: sized up front, so that its
    /// sketch does not grow (and start its counts over) as it fills.
    pub(crate) fn new(max: u64, window_max: u64, entries: u64) -> Self {
        let mut segments = Segments::new(max, window_max);
        segments.make_room(entries);
        Self {
            segments,
            slots: HashTable::with_capacity(entries as usize + 1),
            evicted: Vec::new(),
            has_evicted: false,
        }
    }

    pub(crate) fn window_max(&self) -> u64 {
        self.segments.window_max()
    }

    /// Whether it holds as much as it can: it has evicted, or weighs its maximum.
    pub(crate) fn is_full(&self) -> bool {
        self.has_evicted || self.segments.weighted_size() >= self.segments.max()
    }

    /// Moves the window boundary by `amount` units of weight, as the cache's `climb` does.
    pub(crate) fn climb(&mut self, amount: i64) {
        self.segments.climb(amount);
    }

    /// One request of the key with this hash, cache-aside: a hit reorders
    /// it, a miss adds it and evicts. Whether it hit.
    pub(crate) fn request(&mut self, hash: u64, weight: u64) -> bool {
        let held = self
            .slots
            .find(table_hash(hash), |&i| self.segments.hash(i) == hash);
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
        self.slots
            .insert_unique(table_hash(hash), idx, |&i| table_hash(segments.hash(i)));
        self.segments.evict(&mut self.evicted);
        self.has_evicted |= !self.evicted.is_empty();
        for idx in self.evicted.drain(..) {
            let hash = table_hash(self.segments.hash(idx));
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
        let mut shadow = Shadow::new(4, 0, 4);
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
        let mut shadow = Shadow::new(4, 0, 4);
        assert!(!shadow.request(1, 5));
        assert!(!shadow.request(1, 5));
        assert_eq!(shadow.segments.weighted_size(), 0);
    }

    #[test]
    fn a_full_replica_of_1024_entries_stays_in_the_room_it_was_made_with() {
        // Run on distinct keys, as `request` runs them (add, then evict).
        let mut shadow = Shadow::new(1_024, 0, 1_024);
        let before = (shadow.segments.heap_bytes(), shadow.slots.capacity());
        for key in 0..5_000u64 {
            shadow.request(super::super::test_hash(key), 1);
        }
        assert_eq!(shadow.segments.len(), 1_024);
        assert_eq!(
            (shadow.segments.heap_bytes(), shadow.slots.capacity()),
            before
        );
        // A 16 KiB sketch (2,048 words), 1,025 slots of 24 + 8 bytes.
        assert_eq!(before.0, (16_384, 32_800));
    }
}
