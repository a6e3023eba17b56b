//! A count-min sketch of 4-bit counters that estimates how often a key was
//! seen recently (TinyLFU's frequency estimate).
//!
//! Sixteen counters share one `u64`; a key's four counters lie in four
//! different words of one 64-byte block, so counting a key costs one cache
//! miss rather than four (Caffeine's layout). Its estimate is the smallest
//! of the four, and a sighting adds one only to the counters at that
//! smallest value (the *conservative update* of Estan and Varghese): a
//! counter a key shares with a more popular one is already above the key's
//! estimate, and counting it up too would only inflate the estimates of the
//! other keys that share it. After `5 × capacity` increments every counter
//! is halved, so the estimate follows recent popularity rather than
//! all-time counts.

/// The first table: 8 KiB.
const INITIAL_WORDS: u64 = 1 << 10;
/// The largest table: 512 MiB, for 64 million entries.
const MAX_WORDS: u64 = 1 << 26;

const RESET_MASK: u64 = 0x7777_7777_7777_7777;
const ONE_MASK: u64 = 0x1111_1111_1111_1111;

#[derive(Debug)]
pub(crate) struct FrequencySketch {
    table: Box<[u64]>,
    mask: usize,
    additions: u64,
    sample_size: u64,
}

impl FrequencySketch {
    /// A sketch for about `capacity` distinct entries; its table starts at
    /// two words per entry (a power of two, as [`grow_for`](Self::grow_for)
    /// sizes it for a full cache), but no more than [`INITIAL_WORDS`], and
    /// grows with `grow_for`, so a cache that never fills (or is bounded by
    /// weight, in bytes say) does not pay for a table it does not use.
    pub(crate) fn new(capacity: u64) -> Self {
        let words = capacity
            .saturating_mul(2)
            .clamp(16, INITIAL_WORDS)
            .next_power_of_two() as usize;
        Self {
            table: vec![0; words].into_boxed_slice(),
            // Blocks of 8 words: the mask picks a block's first word.
            mask: (words / 8 - 1) << 3,
            additions: 0,
            sample_size: capacity.clamp(16, MAX_WORDS).saturating_mul(5),
        }
    }

    /// Makes room for `entries` distinct entries (one word each, a power of
    /// two, at most [`MAX_WORDS`]); the counts start over when it grows, as
    /// they do in Caffeine.
    pub(crate) fn grow_for(&mut self, entries: u64) {
        let words = entries.clamp(16, MAX_WORDS).next_power_of_two() as usize;
        if words > self.table.len() {
            self.table = vec![0; words].into_boxed_slice();
            self.mask = (words / 8 - 1) << 3;
            self.additions = 0;
        }
    }

    /// Entries the table is sized for.
    pub(crate) fn capacity(&self) -> u64 {
        self.table.len() as u64
    }

    /// Number of increments between two halvings.
    #[cfg(test)]
    pub(crate) fn sample_size(&self) -> u64 {
        self.sample_size
    }

    /// The key's block (its first word) and the hash that picks its four
    /// counters: counter `i` is in word `2i` or `2i + 1` of the block (bit
    /// `8i` of the hash), at the nibble bits `8i + 1 ..= 8i + 4` choose.
    #[inline]
    fn locate(&self, hash: u64) -> (usize, u64) {
        let block_hash = (hash ^ (hash >> 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let block = ((block_hash >> 24) as usize) & self.mask;
        let counter_hash = (block_hash ^ (block_hash >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        (block, counter_hash)
    }

    /// The key's block (its first word), and the word within the block and
    /// the bit shift of each of its four counters.
    #[inline]
    fn counters(&self, hash: u64) -> (usize, [(usize, u32); 4]) {
        let (block, counter_hash) = self.locate(hash);
        let counters = [0, 1, 2, 3].map(|i| {
            let h = counter_hash >> (i * 8);
            ((h & 1) as usize + (i << 1), (((h >> 1) & 15) as u32) * 4)
        });
        (block, counters)
    }

    /// The estimated recent frequency of the key, 0 to 15.
    pub(crate) fn frequency(&self, hash: u64) -> u8 {
        let (block, counters) = self.counters(hash);
        let words: &[u64; 8] = self.table[block..block + 8]
            .try_into()
            .expect("the mask keeps a block inside the table");
        counters
            .iter()
            .map(|&(word, shift)| (words[word] >> shift) & 0xF)
            .fold(15, u64::min) as u8
    }

    /// Counts one more sighting of the key: adds one to those of its
    /// counters at its estimate (the smallest), unless that is 15 already.
    #[inline]
    pub(crate) fn increment(&mut self, hash: u64) {
        let (block, counters) = self.counters(hash);
        let words: &mut [u64; 8] = (&mut self.table[block..block + 8])
            .try_into()
            .expect("the mask keeps a block inside the table");
        let estimate = counters
            .iter()
            .map(|&(word, shift)| (words[word] >> shift) & 0xF)
            .fold(15, u64::min);
        if estimate == 15 {
            return;
        }
        for (word, shift) in counters {
            if (words[word] >> shift) & 0xF == estimate {
                words[word] += 1 << shift;
            }
        }
        self.additions += 1;
        if self.additions >= self.sample_size {
            self.halve();
        }
    }

    /// Halves every counter (the "aging" of TinyLFU).
    #[cold]
    fn halve(&mut self) {
        let mut odd = 0u64;
        for word in &mut self.table {
            odd += u64::from((*word & ONE_MASK).count_ones());
            *word = (*word >> 1) & RESET_MASK;
        }
        self.additions = (self.additions - odd / 4) / 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_up_to_fifteen_and_tells_keys_apart() {
        let mut sketch = FrequencySketch::new(1024);
        for _ in 0..20 {
            sketch.increment(42);
        }
        for _ in 0..3 {
            sketch.increment(7);
        }
        assert_eq!(sketch.frequency(42), 15);
        assert_eq!(sketch.frequency(7), 3);
        assert_eq!(sketch.frequency(99), 0);
    }

    #[test]
    fn a_small_cache_starts_with_two_words_per_entry() {
        assert_eq!(FrequencySketch::new(100).capacity(), 256);
        assert_eq!(FrequencySketch::new(512).capacity(), 1 << 10);
        assert_eq!(FrequencySketch::new(4).capacity(), 16);
    }

    #[test]
    fn the_table_starts_small_and_grows_with_the_entries() {
        let mut sketch = FrequencySketch::new(1 << 30); // a cache bounded by bytes, say
        assert_eq!(sketch.capacity(), 1 << 10);
        sketch.increment(5);
        sketch.grow_for(5_000);
        assert_eq!(sketch.capacity(), 1 << 13);
        assert_eq!(sketch.frequency(5), 0, "counts start over");
        sketch.grow_for(100);
        assert_eq!(sketch.capacity(), 1 << 13, "never shrinks");
    }

    #[test]
    fn a_sighting_counts_up_only_the_counters_at_the_estimate() {
        let mut sketch = FrequencySketch::new(1024);
        let counters = |sketch: &FrequencySketch, key: u64| {
            let (block, counters) = sketch.counters(key);
            counters.map(|(word, shift)| (block + word, shift))
        };
        // Two keys that share exactly one counter.
        let popular = 1;
        let shared = |key: u64| {
            let theirs = counters(&sketch, popular);
            counters(&sketch, key)
                .iter()
                .filter(|c| theirs.contains(c))
                .count()
        };
        let rare = (2..100_000).find(|&key| shared(key) == 1).unwrap();
        let (word, shift) = *counters(&sketch, rare)
            .iter()
            .find(|c| counters(&sketch, popular).contains(c))
            .unwrap();
        for _ in 0..5 {
            sketch.increment(popular);
        }
        sketch.increment(rare);
        sketch.increment(rare);
        assert_eq!(sketch.frequency(rare), 2);
        assert_eq!(sketch.frequency(popular), 5);
        assert_eq!((sketch.table[word] >> shift) & 0xF, 5, "left alone");
    }

    #[test]
    fn halves_every_counter_after_the_sample_size() {
        let mut sketch = FrequencySketch::new(16);
        assert_eq!(sketch.sample_size(), 80);
        for _ in 0..8 {
            sketch.increment(1);
        }
        // 72 more increments of other keys reach the sample size of 80.
        for key in 0..72u64 {
            sketch.increment(1_000 + key * 7919);
        }
        assert_eq!(sketch.frequency(1), 4);
    }
}
