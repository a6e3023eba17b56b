//! The key → entry map that readers search: shards of hashbrown tables, each
//! behind its own read-write lock, so a hit takes one shard's read lock and
//! nothing global.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use foldhash::SharedSeed;
use foldhash::fast::SeedableRandomState;
use hashbrown::HashTable;
use palisade_core::CachePadded;
use parking_lot::RwLock;

use crate::entry::Entry;

type Shard<K, V> = CachePadded<RwLock<HashTable<Arc<Entry<K, V>>>>>;

/// An entry as the map and the policy share it.
type Shared<K, V> = Arc<Entry<K, V>>;

#[derive(Debug)]
pub(crate) struct Store<K, V> {
    shards: Box<[Shard<K, V>]>,
    mask: usize,
    /// foldhash, as hashbrown's default: seeded per process, or by the caller.
    hasher: SeedableRandomState,
}

impl<K: Hash + Eq, V> Store<K, V> {
    /// `shards` shards (rounded up to a power of two); keys hashed with
    /// `seed` if given, else with a seed drawn per process.
    pub(crate) fn new(shards: usize, seed: Option<u64>) -> Self {
        let shards = shards.next_power_of_two();
        Self {
            shards: (0..shards)
                .map(|_| CachePadded(RwLock::new(HashTable::new())))
                .collect(),
            mask: shards - 1,
            hasher: seed.map_or_else(SeedableRandomState::random, |seed| {
                SeedableRandomState::with_seed(seed, SharedSeed::global_fixed())
            }),
        }
    }

    #[inline]
    pub(crate) fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    #[inline]
    fn shard(&self, hash: u64) -> &RwLock<HashTable<Arc<Entry<K, V>>>> {
        // The table's own bucket uses the low bits and its tag the top 7:
        // the shard takes bits from the middle.
        &self.shards[(hash >> 32) as usize & self.mask]
    }

    /// Runs `read` on the key's entry under the shard's read lock.
    #[inline]
    pub(crate) fn read<Q, R>(
        &self,
        hash: u64,
        key: &Q,
        read: impl FnOnce(&Entry<K, V>) -> R,
    ) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let shard = self.shard(hash).read();
        shard.find(hash, |e| e.key.borrow() == key).map(|e| read(e))
    }

    /// The key's entry.
    pub(crate) fn get<Q>(&self, hash: u64, key: &Q) -> Option<Arc<Entry<K, V>>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let shard = self.shard(hash).read();
        shard.find(hash, |e| e.key.borrow() == key).cloned()
    }

    /// Stores `entry` for its key under the shard's write lock, once `fill`
    /// has completed it from the entry it replaces (if any); returns the
    /// stored entry and the replaced one. `entry` is built before the call,
    /// so that its allocation is not made under the caller's locks; it must
    /// not be shared yet (`fill` gets it mutably).
    pub(crate) fn upsert(
        &self,
        hash: u64,
        mut entry: Shared<K, V>,
        fill: impl FnOnce(&mut Entry<K, V>, Option<&Shared<K, V>>),
    ) -> (Shared<K, V>, Option<Shared<K, V>>) {
        let mut shard = self.shard(hash).write();
        let found = shard.find_entry(hash, |e| e.key == entry.key);
        let new = Arc::get_mut(&mut entry).expect("a new entry is not shared yet");
        match found {
            Ok(mut occupied) => {
                fill(new, Some(occupied.get()));
                let stored = Arc::clone(&entry);
                (stored, Some(std::mem::replace(occupied.get_mut(), entry)))
            }
            Err(absent) => {
                fill(new, None);
                let stored = Arc::clone(&entry);
                absent.into_table().insert_unique(hash, entry, |e| e.hash);
                (stored, None)
            }
        }
    }

    /// Removes the key's entry.
    pub(crate) fn remove<Q>(&self, hash: u64, key: &Q) -> Option<Arc<Entry<K, V>>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let mut shard = self.shard(hash).write();
        shard
            .find_entry(hash, |e| e.key.borrow() == key)
            .ok()
            .map(|occupied| occupied.remove().0)
    }

    /// Removes `entry` if the map still holds that very entry (not a newer one for its key).
    pub(crate) fn remove_exact(&self, entry: &Arc<Entry<K, V>>) -> bool {
        let mut shard = self.shard(entry.hash).write();
        match shard.find_entry(entry.hash, |e| Arc::ptr_eq(e, entry)) {
            Ok(occupied) => {
                occupied.remove();
                true
            }
            Err(_) => false,
        }
    }
}
