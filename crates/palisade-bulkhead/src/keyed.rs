//! Keyed partitions: a limit per key (per tenant, per customer, per
//! upstream host) inside one shared limit, with a bounded number of keys,
//! idle ones dropped.
//!
//! Each key gets its own [`Bulkhead`] of [`per_key_limit`](KeyedBulkheadBuilder::per_key_limit)
//! units when first used, and every permit also takes a unit of the shared
//! [`max_concurrent_calls`](KeyedBulkheadBuilder::max_concurrent_calls), so
//! one tenant cannot take more than its own limit and all tenants together
//! not more than the total. At most [`max_keys`](KeyedBulkheadBuilder::max_keys)
//! keys are kept: a key with nothing in flight and no permit taken for
//! [`idle_after`](KeyedBulkheadBuilder::idle_after) is dropped when a new key
//! needs room (the longest-idle first); if every kept key has calls in
//! flight or is younger than that, a new key is refused with reason `full`.
//! A dropped key starts again from nothing when it comes back. Permits never
//! wait: [`try_acquire`](KeyedBulkhead::try_acquire) takes both units at
//! once or neither.
//!
//! ```
//! use palisade_bulkhead::keyed::KeyedBulkhead;
//!
//! let tenants = KeyedBulkhead::builder()
//!     .max_concurrent_calls(100)
//!     .per_key_limit(2)
//!     .max_keys(1000)
//!     .build()?;
//! let a = tenants.try_acquire(&"acme")?;
//! let b = tenants.try_acquire(&"acme")?;
//! assert!(tenants.try_acquire(&"acme").is_err(), "acme holds its two");
//! let other = tenants.try_acquire(&"globex")?; // another tenant is not held back
//! assert_eq!(tenants.snapshot().in_flight, 3);
//! # drop((a, b, other));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{ConfigError, SharedClock, SystemClock};
use parking_lot::Mutex;

use crate::config::check_limit;
use crate::{Bulkhead, OwnedPermit, Reason, Rejected, Snapshot};

/// Builds a [`KeyedBulkhead`].
#[must_use]
pub struct KeyedBulkheadBuilder {
    name: Arc<str>,
    total: u32,
    per_key: u32,
    max_keys: usize,
    idle_after: Duration,
    clock: Option<SharedClock>,
}

impl fmt::Debug for KeyedBulkheadBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBulkheadBuilder")
            .field("name", &self.name)
            .field("total", &self.total)
            .field("per_key", &self.per_key)
            .field("max_keys", &self.max_keys)
            .field("idle_after", &self.idle_after)
            .finish_non_exhaustive()
    }
}

impl KeyedBulkheadBuilder {
    /// The instance name (default `"default"`; must not be empty).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The limit all keys share, in 1..=2³¹−1 (default 100).
    pub fn max_concurrent_calls(mut self, limit: u32) -> Self {
        self.total = limit;
        self
    }

    /// Each key's own limit, in 1..=2³¹−1 and at most the shared limit (default 10).
    pub fn per_key_limit(mut self, limit: u32) -> Self {
        self.per_key = limit;
        self
    }

    /// The most keys kept at once, at least 1 (default 10,000).
    pub fn max_keys(mut self, keys: usize) -> Self {
        self.max_keys = keys;
        self
    }

    /// How long a key must have had nothing in flight before it may be
    /// dropped to make room (default 60 s; zero: as soon as it is idle).
    pub fn idle_after(mut self, idle: Duration) -> Self {
        self.idle_after = idle;
        self
    }

    /// The clock that measures idleness (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the settings and builds the bulkhead.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the method: a bad shared limit
    /// (`max_concurrent_calls`), a bad per-key limit or one above the shared
    /// limit (`per_key_limit`), zero keys (`max_keys`), an empty name.
    pub fn build<K>(self) -> Result<KeyedBulkhead<K>, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        check_limit("max_concurrent_calls", self.total)?;
        check_limit("per_key_limit", self.per_key)?;
        if self.per_key > self.total {
            return Err(ConfigError::new(
                "per_key_limit",
                format!(
                    "must not be above max_concurrent_calls ({}), got {}",
                    self.total, self.per_key
                ),
            ));
        }
        palisade_core::config::check_nonzero("max_keys", self.max_keys as u64)?;
        let total = Bulkhead::builder()
            .name(Arc::clone(&self.name))
            .max_concurrent_calls(self.total)
            .build()?;
        Ok(KeyedBulkhead {
            inner: Arc::new(Inner {
                total,
                per_key: self.per_key,
                max_keys: self.max_keys,
                idle_after: palisade_core::duration_to_nanos(self.idle_after),
                clock: self.clock.unwrap_or_else(SystemClock::shared),
                keys: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// A limit per key inside one shared limit; see the [module docs](self).
/// Cheap to clone; clones share the keys.
pub struct KeyedBulkhead<K> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for KeyedBulkhead<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct Inner<K> {
    total: Bulkhead,
    per_key: u32,
    max_keys: usize,
    idle_after: u64,
    clock: SharedClock,
    keys: Mutex<HashMap<K, Entry>>,
}

struct Entry {
    bulkhead: Bulkhead,
    /// When a permit of this key was last taken (clock nanoseconds).
    last_used: u64,
}

impl<K> fmt::Debug for KeyedBulkhead<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBulkhead")
            .field("name", &self.inner.total.name())
            .field("keys", &self.inner.keys.lock().len())
            .finish_non_exhaustive()
    }
}

impl KeyedBulkhead<()> {
    /// A builder with the defaults: 100 shared, 10 per key, 10,000 keys, idle after 60 s.
    pub fn builder() -> KeyedBulkheadBuilder {
        KeyedBulkheadBuilder {
            name: Arc::from("default"),
            total: 100,
            per_key: 10,
            max_keys: 10_000,
            idle_after: Duration::from_secs(60),
            clock: None,
        }
    }
}

impl<K: Hash + Eq + Clone> KeyedBulkhead<K> {
    /// One unit of `key`'s limit and one of the shared limit, now, or neither.
    ///
    /// # Errors
    /// [`Rejected`] with reason `full`: the key holds its limit, the shared
    /// limit is taken, or the key is new and no kept key can make room.
    pub fn try_acquire(&self, key: &K) -> Result<KeyedPermit, Rejected> {
        let inner = &*self.inner;
        let now = inner.clock.now_nanos();
        // The key's unit is taken under the lock that drops idle keys, so a
        // key is never dropped between being found and being used.
        let (own, inserted) = {
            let mut keys = inner.keys.lock();
            if let Some(entry) = keys.get_mut(key) {
                entry.last_used = now;
                (entry.bulkhead.try_acquire_owned()?, false)
            } else {
                if keys.len() >= inner.max_keys
                    && !Self::drop_one_idle(&mut keys, now, inner.idle_after)
                {
                    return Err(Reason::Full.rejection(None));
                }
                let bulkhead = Bulkhead::builder()
                    .max_concurrent_calls(inner.per_key)
                    .build()
                    .map_err(|_| Reason::Full.rejection(None))?;
                let own = bulkhead.try_acquire_owned()?;
                keys.insert(
                    key.clone(),
                    Entry {
                        bulkhead,
                        last_used: now,
                    },
                );
                (own, true)
            }
        };
        // Then the shared unit. A refusal gives the key's back, and a key
        // made for this call leaves again if nothing else holds it, so
        // refused newcomers cannot fill the key table.
        let shared = match inner.total.try_acquire_owned() {
            Ok(shared) => shared,
            Err(rejected) => {
                drop(own);
                if inserted {
                    let mut keys = inner.keys.lock();
                    if keys
                        .get(key)
                        .is_some_and(|e| e.bulkhead.snapshot().in_flight == 0)
                    {
                        keys.remove(key);
                    }
                }
                return Err(rejected);
            }
        };
        Ok(KeyedPermit {
            _own: own,
            _shared: shared,
        })
    }

    /// Drops the longest-idle key with nothing in flight and idle long enough; `false` if none is.
    fn drop_one_idle(keys: &mut HashMap<K, Entry>, now: u64, idle_after: u64) -> bool {
        let victim = keys
            .iter()
            .filter(|(_, e)| {
                e.bulkhead.snapshot().in_flight == 0
                    && now.saturating_sub(e.last_used) >= idle_after
            })
            .min_by_key(|(_, e)| e.last_used)
            .map(|(k, _)| k.clone());
        victim.is_some_and(|k| keys.remove(&k).is_some())
    }

    /// How many keys are kept now.
    pub fn keys(&self) -> usize {
        self.inner.keys.lock().len()
    }

    /// The shared limit now: units in flight over all keys, and the limit.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.total.snapshot()
    }

    /// One key now, if it is kept: its units in flight and its limit.
    pub fn key_snapshot(&self, key: &K) -> Option<Snapshot> {
        self.inner
            .keys
            .lock()
            .get(key)
            .map(|e| e.bulkhead.snapshot())
    }
}

/// A unit of one key and a unit of the shared limit; both given back when dropped.
#[derive(Debug)]
#[must_use = "a permit gives its units back as soon as it is dropped"]
pub struct KeyedPermit {
    _own: OwnedPermit,
    _shared: OwnedPermit,
}
