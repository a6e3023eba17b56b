//! `Cache<K, V>`: the map readers search, the policy that decides what stays,
//! and the maintenance that keeps the two in step.
//!
//! Every change to the map (insert, invalidate, eviction, expiry) happens
//! under one maintenance lock, policy first and then the key's shard, so the
//! map and the policy always agree when the lock is let go. Reads take only
//! their shard's read lock and leave their hit in the read buffer; the policy
//! learns of it at the next maintenance.

use std::borrow::Borrow;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::{CachePadded, Listeners, Outcome, SharedClock, duration_to_nanos};
use parking_lot::{Mutex, MutexGuard};

use crate::config::{CacheBuilder, Weigher};
use crate::entry::{Entry, NEVER};
use crate::event::{Event, RemovalCause, RemovalListener};
use crate::expiry::Expiry;
use crate::flight::{Flights, Join, Leader, SharedError, infallible, value_of};
use crate::policy::{Policy, Removed};
use crate::read_buffer::{Push, ReadBuffer};
use crate::stats::{CacheStats, StatsCounter};
use crate::store::Store;

/// A concurrent, bounded, in-process cache with an adaptive W-TinyLFU policy.
///
/// Cloning is cheap and every clone shares the same entries. See the
/// [crate documentation](crate) for an overview and [`CacheBuilder`] for the
/// settings.
pub struct Cache<K, V> {
    pub(crate) inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K, V> fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .field("max_capacity", &self.inner.max)
            .field("entries", &self.inner.entries.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The negative cache keeps failed loads' errors, type-erased.
type NegativeCache<K> = Cache<K, SharedError>;

pub(crate) struct Inner<K, V> {
    pub(crate) name: Arc<str>,
    store: Store<K, V>,
    maintenance: Mutex<Maintenance<K, V>>,
    reads: ReadBuffer,
    /// Which hits are counted but not left in the read buffer.
    recency: CachePadded<Recency>,
    pub(crate) stats: StatsCounter,
    pub(crate) clock: SharedClock,
    max: u64,
    ttl: u64,
    tti: u64,
    /// Some expiry is configured: reads must look at the clock.
    timed: bool,
    expiry: Option<Arc<dyn Expiry<K, V>>>,
    weigher: Option<Weigher<K, V>>,
    listener: Option<Arc<dyn RemovalListener<K, V>>>,
    pub(crate) flights: Arc<Flights<K, V>>,
    negative: Option<Box<NegativeCache<K>>>,
    pub(crate) entries: AtomicU64,
    weighted_size: AtomicU64,
    pub(crate) refresh_after: u64,
    pub(crate) keep_stale: u64,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) hard_timeout: Option<Duration>,
    /// The listeners of [`Event`]s: the user's, and the `otel` and `tracing` adapters.
    pub(crate) events: Listeners<Event>,
}

impl<K, V> Inner<K, V> {
    /// The time, if any expiry or refresh is configured; 0 otherwise, so an
    /// untimed cache never reads the clock.
    #[inline]
    fn now_if_timed(&self) -> u64 {
        if self.timed {
            self.clock.now_nanos()
        } else {
            0
        }
    }

    /// `true` if `entry` may be returned at `now` (from [`now_if_timed`](Self::now_if_timed)).
    #[inline]
    fn is_live(&self, entry: &Entry<K, V>, now: u64) -> bool {
        !self.timed || entry.deadline(self.tti) > now
    }
}

/// A hit that skips the read buffer runs the maintenance (if its lock is
/// free) once in this many such hits on its stripe of the counters, as a
/// buffered hit does when its ring fills.
const SKIPS_PER_MAINTENANCE: u64 = 64;

/// What a reader needs to know to skip the read buffer, published by every
/// maintenance (see [`Policy::recent_after`]).
struct Recency {
    /// [`Policy::recent_after`]: a hit on an entry marked above it may skip.
    after: AtomicU64,
    /// [`Policy::sampled_below`]: a hit on a key whose hash's high half is
    /// below it never skips.
    sampled_below: AtomicU64,
}

struct Maintenance<K, V> {
    policy: Policy<K, V>,
    removed: Vec<Removed<K, V>>,
    /// Hits taken from the read buffer so far.
    buffered_hits: u64,
    /// Lookups already reported to the listeners: each report is the difference.
    reported: Lookups,
}

/// Lookup counts, in total or since the last report.
#[derive(Debug, Clone, Copy, Default)]
struct Lookups {
    hits: u64,
    misses: u64,
    stale: u64,
}

/// What one maintenance run tells the listeners, once the lock is let go.
struct Report {
    lookups: Lookups,
    /// Removals by cause, in the order of `RemovalCause::ALL`.
    removed: [u64; 4],
    entries: u64,
    weighted_size: u64,
}

/// Times a load and counts it as failed unless told otherwise, so that a
/// loader that panics, or a caller dropped mid-load, still counts.
pub(crate) struct LoadTimer<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    cache: Cache<K, V>,
    started: u64,
    done: bool,
}

impl<K, V> LoadTimer<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub(crate) fn start(cache: &Cache<K, V>) -> Self {
        Self {
            cache: cache.clone(),
            started: cache.inner.clock.now_nanos(),
            done: false,
        }
    }

    pub(crate) fn finish(mut self, ok: bool) {
        self.done = true;
        self.cache.record_load(ok, self.started);
    }
}

impl<K, V> Drop for LoadTimer<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn drop(&mut self) {
        if !self.done {
            self.cache.record_load(false, self.started);
        }
    }
}

/// A value read from the cache together with what refresh-ahead needs.
pub(crate) struct Found<V> {
    pub(crate) value: V,
    /// The value is older than `refresh_after` and this caller claimed its refresh.
    pub(crate) refresh: bool,
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A builder; `max_capacity` is required.
    ///
    /// ```
    /// use palisade_cache::Cache;
    /// use std::time::Duration;
    ///
    /// let cache: Cache<u64, String> = Cache::builder()
    ///     .max_capacity(10_000)
    ///     .time_to_live(Duration::from_secs(300))
    ///     .build()
    ///     .unwrap();
    /// # let _ = cache;
    /// ```
    pub fn builder() -> CacheBuilder<K, V> {
        CacheBuilder::default()
    }

    pub(crate) fn from_builder(b: CacheBuilder<K, V>) -> Self {
        let max = b.max_capacity.unwrap_or(1);
        let now = b.clock.now_nanos();
        let ttl = b.time_to_live.map_or(NEVER, duration_to_nanos);
        let tti = b.time_to_idle.map_or(0, duration_to_nanos);
        let keep_stale = b.max_stale.map_or(0, duration_to_nanos);
        let refresh_after = b.refresh_after.map_or(0, duration_to_nanos);
        let negative = b.negative_ttl.map(|ttl| {
            // Reports nothing of its own: it has no listeners.
            let negative: CacheBuilder<K, SharedError> = CacheBuilder {
                name: Arc::from(format!("{}.negative", b.name)),
                max_capacity: Some(max),
                time_to_live: Some(ttl),
                clock: Arc::clone(&b.clock),
                shards: b.shards,
                hash_seed: b.hash_seed,
                ..CacheBuilder::default()
            };
            Box::new(Cache::from_builder(negative))
        });
        let shards = b
            .shards
            .unwrap_or_else(|| crate::stripe::stripe_count(4).clamp(16, 1024));
        #[allow(unused_mut)]
        let mut events = b.listeners;
        #[cfg(feature = "tracing")]
        if b.tracing {
            events.push(Arc::new(crate::tracing_listener::TracingListener {
                name: Arc::clone(&b.name),
            }));
        }
        #[cfg(feature = "otel")]
        if let Some(source) = b.otel {
            events.push(Arc::new(crate::telemetry::OtelListener::new(
                source, &b.name,
            )));
        }
        let inner = Arc::new(Inner {
            store: Store::new(shards, b.hash_seed),
            maintenance: Mutex::new(Maintenance {
                policy: Policy::new(max, tti, keep_stale, now),
                removed: Vec::new(),
                buffered_hits: 0,
                reported: Lookups::default(),
            }),
            reads: ReadBuffer::new(),
            recency: CachePadded(Recency {
                after: AtomicU64::new(0),
                sampled_below: AtomicU64::new(u64::MAX),
            }),
            stats: StatsCounter::new(),
            clock: b.clock,
            max,
            ttl,
            tti,
            timed: ttl != NEVER || tti != 0 || b.expiry.is_some() || refresh_after != 0,
            expiry: b.expiry,
            weigher: b.weigher,
            listener: b.listener,
            flights: Arc::new(Flights::new()),
            negative,
            entries: AtomicU64::new(0),
            weighted_size: AtomicU64::new(0),
            refresh_after,
            keep_stale,
            soft_timeout: b.soft_timeout,
            hard_timeout: b.hard_timeout,
            name: b.name,
            events,
        });
        Self { inner }
    }

    /// The cache's name (`palisade.instance` in telemetry).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The live value for `key`, if any. Allocates nothing and waits for no
    /// lock but its shard's; every 16th hit or so on a thread may apply the
    /// buffered reads if the maintenance lock happens to be free.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.inner.store.hash(key);
        self.get_hashed(hash, key, false).map(|found| found.value)
    }

    /// `true` if `key` has a live value; counts as a read.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// The live value for `key`; with `claim_refresh`, also claims the
    /// refresh of a value older than `refresh_after` (only `LoadingCache`,
    /// which then reloads it, asks).
    #[inline]
    pub(crate) fn get_hashed<Q>(&self, hash: u64, key: &Q, claim_refresh: bool) -> Option<Found<V>>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        let inner = &*self.inner;
        let now = inner.now_if_timed();
        // A key the climber samples is always recorded; others skip the
        // buffer if the policy marked their entry recently.
        let recent_after = if (hash >> 32) < inner.recency.sampled_below.load(Ordering::Relaxed) {
            u64::MAX
        } else {
            inner.recency.after.load(Ordering::Relaxed)
        };
        let found = inner
            .store
            .read(hash, key, |e| {
                if !inner.is_live(e, now) {
                    return None;
                }
                if inner.tti != 0 {
                    e.accessed_at.store(now, Ordering::Relaxed);
                }
                let refresh = claim_refresh
                    && inner.refresh_after != 0
                    && now.saturating_sub(e.written_at) >= inner.refresh_after
                    && e.start_refresh();
                let recent = e.mark.load(Ordering::Relaxed) > recent_after;
                Some((e.value.clone(), e.slot, refresh, recent))
            })
            .flatten();
        if let Some((value, slot, refresh, recent)) = found {
            if recent {
                // No note, so the buffer never fills: run the maintenance
                // now and then all the same, or a cache whose reads all
                // skip would never reclaim expired entries nor report.
                if inner
                    .stats
                    .unbuffered_hit()
                    .is_multiple_of(SKIPS_PER_MAINTENANCE)
                {
                    self.try_maintain();
                }
            } else {
                self.record_read(slot, hash as u32);
            }
            Some(Found { value, refresh })
        } else {
            inner.stats.miss();
            None
        }
    }

    /// An expired value still kept for stale-if-error, without counting a read.
    pub(crate) fn get_stale(&self, hash: u64, key: &K) -> Option<V> {
        let inner = &*self.inner;
        let now = inner.clock.now_nanos();
        inner
            .store
            .read(hash, key, |e| {
                let deadline = e.deadline(inner.tti);
                (deadline <= now && deadline.saturating_add(inner.keep_stale) > now)
                    .then(|| e.value.clone())
            })
            .flatten()
    }

    /// Ends the refresh claimed by a read, so a later read may try again.
    pub(crate) fn end_refresh(&self, hash: u64, key: &K) {
        if let Some(entry) = self.inner.store.get(hash, key) {
            entry.end_refresh();
        }
    }

    #[inline]
    fn record_read(&self, slot: u32, tag: u32) {
        let inner = &*self.inner;
        match inner.reads.push(slot, tag) {
            Push::Done => {}
            Push::Drain => {
                self.try_maintain();
            }
            Push::Full => {
                if !self.try_maintain() || inner.reads.push(slot, tag) == Push::Full {
                    inner.stats.unbuffered_hit();
                }
            }
        }
    }

    /// Runs the maintenance if its lock is free; whether it ran.
    fn try_maintain(&self) -> bool {
        let Some(mut m) = self.inner.maintenance.try_lock() else {
            return false;
        };
        self.maintain(&mut m);
        self.finish(m);
        true
    }

    /// Stores `value` for `key`, replacing any value it had. A load of the
    /// key under way is superseded: its value is not stored over this one.
    pub fn insert(&self, key: K, value: V) {
        let hash = self.inner.store.hash(&key);
        self.insert_hashed(hash, key, value, None);
    }

    /// Stores a value loaded for `key` unless the key was written during the load.
    pub(crate) fn insert_loaded(&self, hash: u64, key: K, value: V, leader: &Leader<K, V>) {
        self.insert_hashed(hash, key, value, Some(leader));
    }

    fn insert_hashed(&self, hash: u64, key: K, value: V, loaded_by: Option<&Leader<K, V>>) {
        let inner = &*self.inner;
        if let Some(negative) = &inner.negative {
            negative.invalidate(&key);
        }
        // A weight of 0 counts as 1: the bound then also bounds the entry count.
        let weight = inner.weigher.as_ref().map_or(1, |w| w(&key, &value).max(1));
        if u64::from(weight) > inner.max {
            // A superseded load stores nothing, and removes nothing either.
            if loaded_by.is_some_and(|leader| leader.flight().is_superseded()) {
                return;
            }
            // Heavier than the whole cache: never stored. The older value
            // goes as replaced (a new value was written for its key), and the
            // new one is reported as evicted for its size.
            self.remove_replaced(hash, &key);
            if let Some(listener) = &inner.listener {
                listener.on_removal(&key, &value, RemovalCause::Size);
            }
            inner.stats.removal(RemovalCause::Size);
            inner.events.emit_with(|| Event::Removed {
                cause: RemovalCause::Size,
                count: 1,
            });
            return;
        }
        let now = inner.now_if_timed();
        // Made before the maintenance lock is taken, so that the allocation
        // is not made while other writers wait; the slot and, with an
        // `Expiry`, the deadline are filled in under the lock.
        let entry = Arc::new(Entry {
            key,
            value,
            hash,
            slot: 0,
            weight,
            written_at: now,
            expires_at: now.saturating_add(inner.ttl),
            accessed_at: AtomicU64::new(now),
            refreshing: AtomicBool::new(false),
            mark: AtomicU64::new(0),
        });
        let mut m = self.lock_maintenance();
        if loaded_by.is_some_and(|leader| leader.flight().is_superseded()) {
            return;
        }
        self.maintain(&mut m);
        // The user's `Expiry` runs before the shard is locked (the entry it
        // sees cannot change: writers hold the maintenance lock), so it may
        // read the cache.
        let lifetime =
            inner
                .expiry
                .as_ref()
                .and_then(|expiry| match inner.store.get(hash, &entry.key) {
                    Some(old) => {
                        let left = old.deadline(inner.tti);
                        let remaining =
                            (left != NEVER).then(|| Duration::from_nanos(left.saturating_sub(now)));
                        expiry.expire_after_update(&entry.key, &entry.value, remaining)
                    }
                    None => expiry.expire_after_create(&entry.key, &entry.value),
                });
        let expires_at = lifetime
            .map_or(NEVER, |d| now.saturating_add(duration_to_nanos(d)))
            .min(now.saturating_add(inner.ttl));
        // A new key gets a slot of its own; a replaced value's keeps the old one.
        let policy = &mut m.policy;
        let (entry, replaced) = inner.store.upsert(hash, entry, |new, old| {
            new.slot = old.map_or_else(|| policy.reserve(), |o| o.slot);
            new.expires_at = expires_at;
        });
        if loaded_by.is_none() {
            // After the write, under the lock: see `Flights::supersede`.
            inner.flights.supersede(hash, &entry.key);
        }
        if let Some(old) = replaced {
            m.policy.update(entry);
            m.removed.push(Removed {
                entry: old,
                cause: RemovalCause::Replaced,
            });
        } else {
            m.policy.add(entry);
        }
        let m_ref = &mut *m;
        let from = m_ref.removed.len();
        m_ref.policy.evict(&mut m_ref.removed);
        self.take_out(m_ref, from);
        self.finish(m);
    }

    /// Removes `key`'s value, if any.
    pub fn invalidate<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.store.hash(key);
        if let Some(negative) = &inner.negative {
            negative.invalidate(key);
        }
        self.remove_with(hash, key, RemovalCause::Explicit);
    }

    /// Removes `key`'s value as replaced by one that could not be stored.
    fn remove_replaced(&self, hash: u64, key: &K) {
        if let Some(negative) = &self.inner.negative {
            negative.invalidate(key);
        }
        self.remove_with(hash, key, RemovalCause::Replaced);
    }

    fn remove_with<Q>(&self, hash: u64, key: &Q, cause: RemovalCause)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let mut m = self.lock_maintenance();
        if let Some(entry) = inner.store.remove(hash, key) {
            m.policy.remove(entry.slot);
            m.removed.push(Removed { entry, cause });
        }
        // A load under way read the value from before this removal: it must
        // not be stored, whether or not the key had a value. After the
        // removal, under the lock: see `Flights::supersede`.
        inner.flights.supersede(hash, key);
        self.finish(m);
    }

    /// Removes every value.
    pub fn invalidate_all(&self) {
        let inner = &*self.inner;
        if let Some(negative) = &inner.negative {
            negative.invalidate_all();
        }
        let mut m = self.lock_maintenance();
        let all: Vec<_> = m.policy.entries().cloned().collect();
        for entry in all {
            inner.store.remove_exact(&entry);
            m.policy.remove(entry.slot);
            m.removed.push(Removed {
                entry,
                cause: RemovalCause::Explicit,
            });
        }
        // After the removals, under the lock: see `Flights::supersede`.
        inner.flights.supersede_all();
        self.finish(m);
    }

    /// Does the pending work now instead of at the next write or full read
    /// buffer: applies buffered reads, reclaims expired entries, evicts.
    /// Tests call it before counting entries; services need not.
    pub fn run_pending_tasks(&self) {
        let mut m = self.lock_maintenance();
        self.maintain(&mut m);
        let m_ref = &mut *m;
        let from = m_ref.removed.len();
        m_ref.policy.evict(&mut m_ref.removed);
        self.take_out(m_ref, from);
        self.finish(m);
        if let Some(negative) = &self.inner.negative {
            negative.run_pending_tasks();
        }
    }

    /// Takes the maintenance lock, spinning briefly before sleeping on it.
    ///
    /// The lock is held for well under a microsecond, while parking a thread
    /// and waking it costs several: on a write-heavy mix over two cores,
    /// sleeping at once made writes four times slower.
    fn lock_maintenance(&self) -> MutexGuard<'_, Maintenance<K, V>> {
        const SPINS: u32 = 200;
        let lock = &self.inner.maintenance;
        for _ in 0..SPINS {
            if !lock.is_locked()
                && let Some(guard) = lock.try_lock()
            {
                return guard;
            }
            std::hint::spin_loop();
        }
        lock.lock()
    }

    /// Applies buffered reads and reclaims expired entries.
    fn maintain(&self, m: &mut Maintenance<K, V>) {
        let inner = &*self.inner;
        let policy = &mut m.policy;
        let mut hits = 0;
        inner.reads.drain(|slot, tag| {
            hits += 1;
            policy.record_read(slot, tag);
        });
        m.buffered_hits += hits;
        if inner.timed {
            let from = m.removed.len();
            m.policy.expire(inner.clock.now_nanos(), &mut m.removed);
            self.take_out(m, from);
        }
    }

    /// Takes the entries the policy evicted or expired (`m.removed[from..]`)
    /// out of the map at once, so that the map never holds an entry the
    /// policy has let go of.
    fn take_out(&self, m: &Maintenance<K, V>, from: usize) {
        for removed in &m.removed[from..] {
            if removed.cause.was_evicted() {
                self.inner.store.remove_exact(&removed.entry);
            }
        }
    }

    /// Counts every removal, lets go of the lock, then tells the listeners:
    /// a listener may use the cache (it runs after the lock is released).
    fn finish(&self, mut m: MutexGuard<'_, Maintenance<K, V>>) {
        let inner = &*self.inner;
        for removed in &m.removed {
            inner.stats.removal(removed.cause);
        }
        // Stored only when changed: every reader loads this line.
        let recency = &inner.recency;
        let after = m.policy.recent_after();
        if recency.after.load(Ordering::Relaxed) != after {
            recency.after.store(after, Ordering::Relaxed);
        }
        let sampled_below = m.policy.sampled_below();
        if recency.sampled_below.load(Ordering::Relaxed) != sampled_below {
            recency
                .sampled_below
                .store(sampled_below, Ordering::Relaxed);
        }
        let (entries, weighted_size) = (m.policy.len(), m.policy.weighted_size());
        inner.entries.store(entries, Ordering::Relaxed);
        inner.weighted_size.store(weighted_size, Ordering::Relaxed);
        let report = (!inner.events.is_empty()).then(|| {
            // Lookups are counted where they happen (striped, or in the read
            // buffer); listeners hear the difference since the last report,
            // so a lookup costs nothing more with telemetry on.
            let s = inner.stats.snapshot();
            let total = Lookups {
                hits: s.hits + m.buffered_hits,
                misses: s.misses,
                stale: s.stale_hits,
            };
            let last = std::mem::replace(&mut m.reported, total);
            let mut removed = [0; 4];
            for r in &m.removed {
                removed[RemovalCause::ALL
                    .iter()
                    .position(|c| *c == r.cause)
                    .unwrap_or(0)] += 1;
            }
            Report {
                lookups: Lookups {
                    hits: total.hits.saturating_sub(last.hits),
                    misses: total.misses.saturating_sub(last.misses),
                    stale: total.stale.saturating_sub(last.stale),
                },
                removed,
                entries,
                weighted_size,
            }
        });
        match &inner.listener {
            Some(listener) if !m.removed.is_empty() => {
                let removed = std::mem::take(&mut m.removed);
                drop(m);
                for r in &removed {
                    listener.on_removal(&r.entry.key, &r.entry.value, r.cause);
                }
            }
            _ => {
                // The last references to what a write removes (usually one
                // entry, or two) are dropped after the lock is let go, so that
                // other writers do not wait for the memory to be freed; the
                // vector keeps its capacity (no allocation per write).
                let mut removed = m.removed.drain(..);
                let later = [removed.next(), removed.next()];
                drop(removed);
                drop(m);
                drop(later);
            }
        }
        if let Some(r) = report {
            let Lookups {
                hits,
                misses,
                stale,
            } = r.lookups;
            if hits + misses + stale > 0 {
                inner.events.emit_with(|| Event::Lookups {
                    hits,
                    misses,
                    stale,
                });
            }
            for (cause, count) in RemovalCause::ALL.into_iter().zip(r.removed) {
                if count > 0 {
                    inner.events.emit_with(|| Event::Removed { cause, count });
                }
            }
            inner.events.emit_with(|| Event::Sizes {
                entries: r.entries,
                weighted_size: r.weighted_size,
            });
        }
    }

    /// The number of entries held, as of the last maintenance (expired
    /// entries count until they are reclaimed; see [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.inner.entries.load(Ordering::Relaxed)
    }

    /// The total weight held (the entry count without a weigher), as of the last maintenance.
    pub fn weighted_size(&self) -> u64 {
        self.inner.weighted_size.load(Ordering::Relaxed)
    }

    /// The configured bound.
    pub fn max_capacity(&self) -> u64 {
        self.inner.max
    }

    /// The admission window's current size in units of weight: the
    /// climber's latest choice, for the curious and for tests.
    pub fn window_capacity(&self) -> u64 {
        self.lock_maintenance().policy.window_max()
    }

    /// What the cache has done so far. Applies the buffered reads first
    /// (briefly taking the maintenance lock), so hits are exact.
    pub fn stats(&self) -> CacheStats {
        let mut m = self.lock_maintenance();
        self.maintain(&mut m);
        let buffered_hits = m.buffered_hits;
        self.finish(m);
        let mut stats = self.inner.stats.snapshot();
        stats.hits += buffered_hits;
        stats
    }

    /// The value for `key`, loading it with `init` on a miss.
    ///
    /// However many callers miss the same key at once, one `init` runs and
    /// every caller gets its value. If that caller's future is dropped or its
    /// `init` panics, a waiting caller runs its own `init` instead.
    pub async fn get_with(&self, key: K, init: impl Future<Output = V>) -> V {
        value_of(self.try_get_with(key, infallible(init)).await)
    }

    /// The value for `key`, loading it with the fallible `init` on a miss.
    ///
    /// One load per key at a time, as [`get_with`](Self::get_with). An error
    /// is handed to every caller waiting on that load and is not cached,
    /// unless [`negative_ttl`](CacheBuilder::negative_ttl) is set: then
    /// callers get the same error until it expires.
    pub async fn try_get_with<E>(
        &self,
        key: K,
        init: impl Future<Output = Result<V, E>>,
    ) -> Result<V, Arc<E>>
    where
        E: Send + Sync + 'static,
    {
        let hash = self.inner.store.hash(&key);
        let leader = loop {
            if let Some(found) = self.get_hashed(hash, &key, false) {
                return Ok(found.value);
            }
            if let Some(error) = self.negative_hit(&key) {
                return Err(error);
            }
            match self.inner.flights.join(hash, &key) {
                Join::Waiter(flight) => match flight.wait().await {
                    Some(Ok(value)) => return Ok(value),
                    Some(Err(error)) => {
                        if let Ok(error) = error.downcast::<E>() {
                            return Err(error);
                        }
                        // A load of another error type failed: load our own way.
                    }
                    None => {} // the leader gave up: start over
                },
                Join::Leader(leader) => break leader,
            }
        };
        // The value may have been stored between our miss and our joining.
        if let Some(value) = self.peek(hash, &key) {
            leader.finish(Ok(value.clone()));
            return Ok(value);
        }
        let timer = LoadTimer::start(self);
        let result = init.await;
        timer.finish(result.is_ok());
        match result {
            Ok(value) => {
                self.insert_loaded(hash, key, value.clone(), &leader);
                leader.finish(Ok(value.clone()));
                Ok(value)
            }
            Err(error) => {
                let error = Arc::new(error);
                if !leader.flight().is_superseded() {
                    self.remember_failure(key, Arc::clone(&error) as SharedError);
                }
                leader.finish(Err(Arc::clone(&error) as SharedError));
                Err(error)
            }
        }
    }

    /// `true` while `key`'s entry is the one a read claimed for refresh.
    pub(crate) fn is_claimed_for_refresh(&self, hash: u64, key: &K) -> bool {
        self.inner
            .store
            .get(hash, key)
            .is_some_and(|e| e.refreshing.load(Ordering::Acquire))
    }

    /// The live value for `key`, without counting a read or touching the policy.
    pub(crate) fn peek(&self, hash: u64, key: &K) -> Option<V> {
        let inner = &*self.inner;
        let now = inner.now_if_timed();
        inner
            .store
            .read(hash, key, |e| {
                inner.is_live(e, now).then(|| e.value.clone())
            })
            .flatten()
    }

    pub(crate) fn record_load(&self, ok: bool, started: u64) {
        let nanos = self.inner.clock.now_nanos().saturating_sub(started);
        self.inner.stats.load(ok, nanos);
        self.inner.events.emit_with(|| Event::LoadFinished {
            outcome: if ok {
                Outcome::Success
            } else {
                Outcome::Failure
            },
            duration: Duration::from_nanos(nanos),
        });
    }

    /// Caches a failed load's error when negative caching is on.
    pub(crate) fn remember_failure(&self, key: K, error: SharedError) {
        if let Some(negative) = &self.inner.negative {
            negative.insert(key, error);
        }
    }

    /// The cached error of a recent failed load, typed as `E`.
    pub(crate) fn negative_hit<E: Send + Sync + 'static>(&self, key: &K) -> Option<Arc<E>> {
        let negative = self.inner.negative.as_ref()?;
        negative.get(key)?.downcast::<E>().ok()
    }

    pub(crate) fn hash_key(&self, key: &K) -> u64 {
        self.inner.store.hash(key)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;
    use std::sync::OnceLock;
    use std::sync::atomic::AtomicUsize;

    /// The cache whose lock [`Probe`]'s drop looks at.
    static CACHE: OnceLock<Cache<u64, Probe>> = OnceLock::new();
    /// Probes dropped while the cache's maintenance lock was held.
    static DROPPED_UNDER_LOCK: AtomicUsize = AtomicUsize::new(0);
    /// Probes dropped in all.
    static DROPPED: AtomicUsize = AtomicUsize::new(0);

    #[derive(Clone)]
    struct Probe;

    impl Drop for Probe {
        fn drop(&mut self) {
            if let Some(cache) = CACHE.get() {
                DROPPED.fetch_add(1, Ordering::SeqCst);
                if cache.inner.maintenance.is_locked() {
                    DROPPED_UNDER_LOCK.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    #[test]
    fn replaced_and_evicted_values_are_dropped_after_the_maintenance_lock_is_let_go() {
        let cache = CACHE.get_or_init(|| Cache::builder().max_capacity(2).build().unwrap());
        cache.insert(1, Probe);
        cache.insert(1, Probe); // replaces the first value
        cache.insert(2, Probe);
        cache.insert(3, Probe); // one of the three is evicted
        cache.run_pending_tasks();
        assert_eq!(cache.entry_count(), 2);
        assert_eq!(DROPPED.load(Ordering::SeqCst), 2);
        assert_eq!(DROPPED_UNDER_LOCK.load(Ordering::SeqCst), 0);
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod recency_tests {
    use super::*;

    /// More entries than the climber samples whole, so that hits on the
    /// protected entries of unsampled keys skip the read buffer.
    const CAPACITY: u64 = 4_096;
    /// The keys read again: fewer than the protected segment holds (a
    /// loop over more than it holds demotes each entry before it is read).
    const HOT: u64 = 1_000;

    fn full_cache() -> Cache<u64, u64> {
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(CAPACITY)
            .hash_seed(3)
            .build()
            .unwrap();
        for key in 0..CAPACITY {
            cache.insert(key, key);
        }
        cache
    }

    #[test]
    fn most_hits_on_protected_entries_skip_the_read_buffer() {
        // One thread: no hit is dropped for a busy lock, so every hit
        // that did not skip reached the policy.
        let cache = full_cache();
        for _ in 0..5 {
            for key in 0..HOT {
                assert_eq!(cache.get(&key), Some(key));
            }
        }
        cache.run_pending_tasks();
        let hits = cache.stats().hits;
        assert_eq!(hits, 5 * HOT);
        // Recorded: the first round (which promotes the keys), the climber's
        // sampled quarter of the keys in every round, and the entries whose
        // marks those moves aged out. Without the shortcut all 5,000 are.
        let buffered = cache.inner.maintenance.lock().buffered_hits;
        assert!(
            buffered <= hits * 3 / 4,
            "{buffered} of {hits} hits buffered"
        );
    }

    /// Keys of `HOT` and up live a second; the hot ones forever.
    struct ColdKeysExpire;

    impl Expiry<u64, u64> for ColdKeysExpire {
        fn expire_after_create(&self, key: &u64, _: &u64) -> Option<Duration> {
            (*key >= HOT).then_some(Duration::from_secs(1))
        }
    }

    #[test]
    fn reads_that_skip_the_read_buffer_still_reclaim_expired_entries() {
        // Only hits on the hot keys, which all skip the buffer once their
        // entries are protected: maintenance must still run, or the cold
        // keys' expired entries are never reclaimed.
        let clock = palisade_core::ManualClock::new();
        let cache: Cache<u64, u64> = Cache::builder()
            .max_capacity(CAPACITY)
            .hash_seed(3)
            .clock(clock.shared())
            .expiry(ColdKeysExpire)
            .build()
            .unwrap();
        for key in 0..CAPACITY {
            cache.insert(key, key);
        }
        let sampled_below = cache.inner.recency.sampled_below.load(Ordering::Relaxed);
        let unsampled: Vec<u64> = (0..HOT)
            .filter(|&key| (cache.hash_key(&key) >> 32) >= sampled_below)
            .collect();
        for &key in &unsampled {
            assert_eq!(cache.get(&key), Some(key));
        }
        cache.run_pending_tasks();
        clock.advance(Duration::from_secs(2));
        for _ in 0..100 {
            for &key in &unsampled {
                assert_eq!(cache.get(&key), Some(key));
            }
        }
        assert_eq!(
            cache.entry_count(),
            HOT,
            "the expired entries are reclaimed"
        );
        assert_eq!(cache.stats().expired, CAPACITY - HOT);
    }

    #[test]
    fn hits_that_skip_the_read_buffer_are_counted_exactly_from_many_threads() {
        const THREADS: u64 = 4;
        const ROUNDS: u64 = 5;
        let cache = full_cache();
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for _ in 0..ROUNDS {
                        for key in (0..HOT).chain(CAPACITY..CAPACITY + 100) {
                            assert_eq!(cache.get(&key), (key < HOT).then_some(key));
                        }
                    }
                });
            }
        });
        cache.run_pending_tasks();
        let stats = cache.stats();
        assert_eq!(stats.hits, THREADS * ROUNDS * HOT);
        assert_eq!(stats.misses, THREADS * ROUNDS * 100);
        assert_eq!(cache.entry_count(), CAPACITY);
    }
}
