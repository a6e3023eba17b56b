//! The keyed limiter: one GCRA limit per key, each with its own quota, in a
//! table of at most `max_keys` keys.
//!
//! ```text
//!   hash(key) ─▶ shard (RwLock) ─▶ entry { key, TAT: AtomicU64, interval, burst }
//!   known key:  read lock, one compare-and-swap on its TAT (as the direct limiter)
//!   new key:    write lock; room? insert with a full bucket
//!               full?  drop every key whose bucket has refilled (TAT ≤ now);
//!                      none? refuse the new key (key_capacity) until the earliest
//!                      held TAT, and do not look again before then
//! ```
//!
//! **Why no key exceeds its quota.** A key is dropped only when its TAT is at
//! or before now, that is when its bucket is full; a bucket that comes back
//! is full too, so dropping it changes no decision. A key that is still
//! draining is never dropped: it would come back with a fresh burst. When
//! every held key is draining, the price is paid by new keys: they are
//! refused until the earliest of the held keys refills. Existing keys are
//! never refused for capacity. (Tested against a model with eviction, and
//! with 10 million distinct keys for the memory bound.)
//!
//! **Concurrency.** Checks of known keys share a shard's read lock and race
//! only on the key's TAT, by compare-and-swap as in the direct limiter.
//! Inserting and sweeping take the shard's write lock. A shard remembers the
//! earliest TAT it held at its last sweep, so a flood of new keys against a
//! full shard is refused under the read lock, without sweeping again until a
//! key can have refilled.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hashbrown::HashTable;
use palisade_core::{CachePadded, Listeners};
use parking_lot::RwLock;

use crate::clock::LimiterClock;
use crate::config::KeyedRateLimiterBuilder;
use crate::decision::{Decision, Denied, EXHAUSTED, Error, KEY_CAPACITY};
use crate::event::Event;
use crate::gcra::{self, AtomicU64};
use crate::limiter::check_size;
use crate::quota::{Params, Quota};

/// The quota of each key.
pub(crate) type QuotaFn<K> = Arc<dyn Fn(&K) -> Quota + Send + Sync>;

/// A rate limiter with one limit per key (an API key, a client address, a
/// tenant), each key with the quota a function chooses, in bounded memory.
///
/// Memory: at most [`max_keys`](KeyedRateLimiterBuilder::max_keys) keys
/// are held, each as its key plus 20 bytes (its TAT, interval and burst),
/// rounded up to the key's alignment: 32 bytes for a `u64` key, plus
/// the hash table's one control byte and spare capacity.
///
/// The bound costs this: a key whose bucket is not full is never dropped
/// (dropping it would hand it a fresh burst), so when all `max_keys` are
/// draining at once, a **new** key is refused with reason
/// [`KEY_CAPACITY`](crate::KEY_CAPACITY) until the earliest held key has
/// refilled (its `retry_after` says when); keys already held are never
/// refused for capacity. Size `max_keys` for the number of clients active
/// within one burst's refill time (`burst × interval`).
///
/// ```
/// use palisade_rate_limit::{KeyedRateLimiter, ManualClock, Quota, KEY_CAPACITY};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let limiter = KeyedRateLimiter::<u32>::builder()
///     .quota(Quota::per_second(1))
///     .max_keys(2)
///     .shards(1) // one table, so the example does not depend on the hash
///     .clock(clock.shared())
///     .build()?;
/// limiter.check(&1)?;
/// limiter.check(&2)?;
/// // Both held keys are draining: a third key must wait for room.
/// let err = limiter.check(&3).unwrap_err();
/// let denied = err.denied().unwrap();
/// assert_eq!(denied.rejected().reason(), KEY_CAPACITY);
/// assert_eq!(denied.retry_after(), Duration::from_secs(1));
/// // Once they have refilled they carry no information and make room.
/// clock.advance(Duration::from_secs(1));
/// limiter.check(&3)?;
/// assert_eq!(limiter.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct KeyedRateLimiter<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for KeyedRateLimiter<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<K> {
    shards: Box<[CachePadded<RwLock<Shard<K>>>]>,
    mask: u64,
    hasher: hashbrown::DefaultHashBuilder,
    quota: QuotaFn<K>,
    max_keys: usize,
    name: Arc<str>,
    clock: LimiterClock,
    listeners: Listeners<Event>,
}

struct Shard<K> {
    table: HashTable<Entry<K>>,
    capacity: usize,
    /// No held key can have refilled before this time (ns): the earliest TAT
    /// at the last sweep, lowered by every key inserted since (a held key's
    /// TAT only grows). Read under the read lock, written under the write lock.
    next_sweep: AtomicU64,
}

struct Entry<K> {
    key: K,
    tat: AtomicU64,
    emission: u64,
    burst: u32,
}

impl<K> Entry<K> {
    #[inline]
    fn params(&self) -> Params {
        Params {
            emission: self.emission,
            burst: self.burst,
        }
    }
}

/// Shard index bits: below hashbrown's top 7 control bits, above the bits
/// it indexes buckets with in a shard-sized table.
const SHARD_SHIFT: u32 = 40;

impl<K> KeyedRateLimiter<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// A builder; a quota (or a quota function) is required.
    pub fn builder() -> KeyedRateLimiterBuilder<K> {
        KeyedRateLimiterBuilder::new()
    }

    pub(crate) fn from_parts(
        name: Arc<str>,
        quota: QuotaFn<K>,
        max_keys: usize,
        shards: usize,
        clock: LimiterClock,
        listeners: Listeners<Event>,
    ) -> Self {
        let base = max_keys / shards;
        let extra = max_keys % shards;
        let shards = (0..shards)
            .map(|i| {
                CachePadded(RwLock::new(Shard {
                    table: HashTable::new(),
                    capacity: base + usize::from(i < extra),
                    next_sweep: AtomicU64::new(0),
                }))
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Self {
            inner: Arc::new(Inner {
                mask: shards.len() as u64 - 1,
                shards,
                hasher: hashbrown::DefaultHashBuilder::default(),
                quota,
                max_keys,
                name,
                clock,
                listeners,
            }),
        }
    }

    /// The instance name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The most keys held at once.
    pub fn max_keys(&self) -> usize {
        self.inner.max_keys
    }

    /// How many keys are held now (never more than [`max_keys`](Self::max_keys)).
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.read().table.len()).sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn shard(&self, hash: u64) -> &RwLock<Shard<K>> {
        &self.inner.shards[((hash >> SHARD_SHIFT) & self.inner.mask) as usize]
    }

    /// Admits one request for `key` now, or refuses it.
    ///
    /// # Errors
    /// [`Error::Denied`] when the key's quota is spent ([`EXHAUSTED`](crate::EXHAUSTED))
    /// or when the key is new and the table has no room
    /// ([`KEY_CAPACITY`](crate::KEY_CAPACITY)); [`Error::InvalidQuota`] when the
    /// quota function returned an invalid quota for a new key.
    #[inline]
    pub fn check(&self, key: &K) -> Result<Decision, Error> {
        self.check_n(key, 1)
    }

    /// Admits `n` requests for `key` at once, or none. `n = 0` is admitted
    /// and stores nothing.
    ///
    /// # Errors
    /// As [`check`](Self::check), and [`Error::InsufficientCapacity`] when
    /// `n` is over the key's burst.
    pub fn check_n(&self, key: &K, n: u32) -> Result<Decision, Error> {
        let hash = self.inner.hasher.hash_one(key);
        let shard = self.shard(hash);
        let now = self.inner.clock.now();
        {
            let guard = shard.read();
            if let Some(entry) = guard.table.find(hash, |e| e.key == *key) {
                let params = entry.params();
                if n == 0 {
                    return Ok(Decision::new(
                        now,
                        entry.tat.load(Ordering::Acquire),
                        params,
                    ));
                }
                check_size(n, params)?;
                let taken = gcra::take(&entry.tat, now, params, n, 0);
                drop(guard);
                return self.report(now, taken, params, n);
            }
            if guard.table.len() >= guard.capacity {
                let next = guard.next_sweep.load(Ordering::Relaxed);
                if now < next {
                    drop(guard);
                    return self.no_room(key, now, next, n);
                }
            }
        }
        self.insert(shard, hash, key, now, n)
    }

    #[inline]
    fn report(
        &self,
        now: u64,
        taken: Result<gcra::Taken, gcra::Refused>,
        params: Params,
        n: u32,
    ) -> Result<Decision, Error> {
        match taken {
            Ok(taken) => {
                self.inner.listeners.emit_with(|| Event::Acquired {
                    permits: n,
                    waited: None,
                });
                Ok(Decision::new(now, taken.tat, params))
            }
            Err(refused) => {
                self.inner.listeners.emit_with(|| Event::Rejected {
                    permits: n,
                    reason: EXHAUSTED,
                    retry_after: Duration::from_nanos(refused.retry_after),
                });
                Err(Error::Denied(Denied::new(
                    EXHAUSTED,
                    refused.retry_after,
                    Decision::new(now, refused.tat, params),
                )))
            }
        }
    }

    /// A new key against a shard full of draining keys: refused until `next`.
    /// Its decision shows the key's limit with nothing remaining.
    #[cold]
    fn no_room(&self, key: &K, now: u64, next: u64, n: u32) -> Result<Decision, Error> {
        let params = self.params_of(key)?;
        if n == 0 {
            return Ok(Decision::new(now, now, params));
        }
        check_size(n, params)?;
        let retry_after = next.saturating_sub(now);
        self.inner.listeners.emit_with(|| Event::Rejected {
            permits: n,
            reason: KEY_CAPACITY,
            retry_after: Duration::from_nanos(retry_after),
        });
        Err(Error::Denied(Denied::new(
            KEY_CAPACITY,
            retry_after,
            Decision::new(now, now + params.tolerance(), params),
        )))
    }

    fn params_of(&self, key: &K) -> Result<Params, Error> {
        (self.inner.quota)(key)
            .params("quota_fn")
            .map_err(Error::InvalidQuota)
    }

    #[cold]
    fn insert(
        &self,
        shard: &RwLock<Shard<K>>,
        hash: u64,
        key: &K,
        now: u64,
        n: u32,
    ) -> Result<Decision, Error> {
        // Asked before the write lock: the user's function may be slow.
        let params = self.params_of(key)?;
        if n == 0 {
            return Ok(Decision::new(now, now, params));
        }
        check_size(n, params)?;
        let mut guard = shard.write();
        // Read again under the lock: while the quota function ran, another
        // thread may have inserted this key, drained it and seen it swept;
        // a fresh entry dated by the earlier reading would hand out a burst
        // on top of what that one took.
        let now = now.max(self.inner.clock.now());
        if let Some(entry) = guard.table.find(hash, |e| e.key == *key) {
            // Inserted meanwhile by another thread: its quota, not ours.
            let params = entry.params();
            check_size(n, params)?;
            let taken = gcra::take(&entry.tat, now, params, n, 0);
            drop(guard);
            return self.report(now, taken, params, n);
        }
        let mut evicted = 0;
        if guard.table.len() >= guard.capacity {
            let next = guard.next_sweep.load(Ordering::Relaxed);
            if now >= next {
                evicted = self.sweep_shard(&mut guard, now);
            }
            if guard.table.len() >= guard.capacity {
                let next = guard.next_sweep.load(Ordering::Relaxed);
                drop(guard);
                self.emit_evicted(evicted);
                return self.no_room(key, now, next, n);
            }
        }
        let tat = now + params.emission * u64::from(n);
        // Still a lower bound of the held keys' TATs (they only grow).
        let next = guard.next_sweep.load(Ordering::Relaxed);
        guard.next_sweep.store(next.min(tat), Ordering::Relaxed);
        let hasher = &self.inner.hasher;
        guard.table.insert_unique(
            hash,
            Entry {
                key: key.clone(),
                tat: AtomicU64::new(tat),
                emission: params.emission,
                burst: params.burst,
            },
            |e| hasher.hash_one(&e.key),
        );
        drop(guard);
        self.emit_evicted(evicted);
        self.inner.listeners.emit_with(|| Event::Acquired {
            permits: n,
            waited: None,
        });
        Ok(Decision::new(now, tat, params))
    }

    /// Drops the shard's refilled keys and notes the earliest TAT left.
    ///
    /// Removing in place leaves tombstones, which would make the hash table
    /// grow past its size once they fill it, so a shard that keeps evicting
    /// would double its memory without holding one key more. The table is
    /// then shrunk to what it keeps, which rehashes it without them.
    fn sweep_shard(&self, shard: &mut Shard<K>, now: u64) -> usize {
        let before = shard.table.len();
        shard.table.retain(|e| e.tat.load(Ordering::Acquire) > now);
        let kept = shard.table.len();
        // Rehashing into a table sized for what is kept drops the tombstones
        // and gives memory back (a sweep must never take more).
        let hasher = &self.inner.hasher;
        shard.table.shrink_to(kept, |e| hasher.hash_one(&e.key));
        let earliest = shard
            .table
            .iter()
            .map(|e| e.tat.load(Ordering::Acquire))
            .min()
            .unwrap_or(0);
        shard.next_sweep.store(earliest, Ordering::Relaxed);
        before - kept
    }

    fn emit_evicted(&self, count: usize) {
        if count > 0 {
            self.inner
                .listeners
                .emit_with(|| Event::KeysEvicted { count });
        }
    }

    /// The state of `key`'s limit now, taking nothing; `None` if the key is
    /// not held (its bucket is then full, under the quota the function gives it).
    pub fn snapshot(&self, key: &K) -> Option<Decision> {
        let hash = self.inner.hasher.hash_one(key);
        let guard = self.shard(hash).read();
        let entry = guard.table.find(hash, |e| e.key == *key)?;
        Some(Decision::new(
            self.inner.clock.now(),
            entry.tat.load(Ordering::Acquire),
            entry.params(),
        ))
    }

    /// Asks the quota function again for `key`, if it is held, and applies
    /// the answer: what the key already owes stays owed, then the new quota
    /// applies. Returns whether the key was held.
    ///
    /// # Errors
    /// [`Error::InvalidQuota`] when the function now returns an invalid
    /// quota; the old one then stays.
    pub fn refresh_quota(&self, key: &K) -> Result<bool, Error> {
        let params = self.params_of(key)?;
        let hash = self.inner.hasher.hash_one(key);
        let mut guard = self.shard(hash).write();
        Ok(match guard.table.find_mut(hash, |e| e.key == *key) {
            Some(entry) => {
                entry.emission = params.emission;
                entry.burst = params.burst;
                true
            }
            None => false,
        })
    }

    /// Drops every key whose bucket has refilled completely (they carry no
    /// information), and returns how many. Never needed for the bound, which
    /// holds anyway; useful to give memory back after a burst of clients.
    pub fn sweep(&self) -> usize {
        let now = self.inner.clock.now();
        let mut evicted = 0;
        for shard in &*self.inner.shards {
            evicted += self.sweep_shard(&mut shard.write(), now);
        }
        self.emit_evicted(evicted);
        evicted
    }
}

impl<K> fmt::Debug for KeyedRateLimiter<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimiter")
            .field("name", &self.inner.name)
            .field("max_keys", &self.inner.max_keys)
            .field("shards", &self.inner.shards.len())
            .finish_non_exhaustive()
    }
}
