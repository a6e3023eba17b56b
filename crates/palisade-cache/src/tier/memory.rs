//! A remote tier inside one process.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use palisade_core::{SharedClock, SystemClock, duration_to_nanos};
use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::{Invalidation, Invalidations, RemoteTier, TierError};

/// A message on the shared channel: who sent it, and what.
type Message<K> = (u64, Invalidation<K>);

/// What the tier keeps for a key: its value, if any, until when, and its
/// version (moved on by every `set` and `remove`; kept after a removal).
struct Entry<V> {
    value: Option<(V, u64)>,
    version: u64,
}

struct Shared<K, V> {
    /// Value, expiry (clock nanoseconds), and the key's version.
    values: Mutex<HashMap<K, Entry<V>>>,
    channel: broadcast::Sender<Message<K>>,
    clock: SharedClock,
    next_member: AtomicU64,
    writes: AtomicU64,
    /// Moved on by `remove_all`; the high 32 bits of every version handed out.
    generation: AtomicU64,
}

/// A remote tier held in memory and shared by the caches that
/// [`connect`](Self::connect) to it: the same semantics as Redis (time to
/// live, invalidations reach every other member), for tests and for several
/// caches in one process.
pub struct InMemoryTier<K, V> {
    shared: Arc<Shared<K, V>>,
    member: u64,
}

impl<K, V> std::fmt::Debug for InMemoryTier<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryTier")
            .field("member", &self.member)
            .finish_non_exhaustive()
    }
}

impl<K, V> InMemoryTier<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A new, empty tier on the system clock; [`connect`](Self::connect) more members to it.
    pub fn new() -> Self {
        Self::with_clock(SystemClock::shared())
    }

    /// A new, empty tier whose time to live follows `clock`.
    pub fn with_clock(clock: SharedClock) -> Self {
        let (channel, _) = broadcast::channel(1024);
        Self {
            shared: Arc::new(Shared {
                values: Mutex::new(HashMap::new()),
                channel,
                clock,
                next_member: AtomicU64::new(1),
                writes: AtomicU64::new(0),
                generation: AtomicU64::new(0),
            }),
            member: 0,
        }
    }

    /// Another member of the same tier, as a second service instance would be.
    #[must_use]
    pub fn connect(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            member: self.shared.next_member.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Tells every member to resynchronise, as a reconnection would.
    pub fn resync_all(&self) {
        let _ = self.shared.channel.send((u64::MAX, Invalidation::Resync));
    }
}

impl<K, V> Default for InMemoryTier<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl<K, V> RemoteTier<K, V> for InMemoryTier<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    async fn get(&self, key: &K) -> Result<Option<V>, TierError> {
        Ok(self.get_versioned(key).await?.0)
    }

    async fn get_versioned(&self, key: &K) -> Result<(Option<V>, u64), TierError> {
        let now = self.shared.clock.now_nanos();
        let mut values = self.shared.values.lock();
        let generation = self.shared.generation.load(Ordering::SeqCst) << 32;
        let Some(entry) = values.get_mut(key) else {
            return Ok((None, generation));
        };
        if entry
            .value
            .as_ref()
            .is_some_and(|(_, expires)| *expires <= now)
        {
            entry.value = None;
        }
        Ok((
            entry.value.as_ref().map(|(v, _)| v.clone()),
            generation | (entry.version & 0xffff_ffff),
        ))
    }

    async fn set(&self, key: &K, value: &V, ttl: Option<Duration>) -> Result<(), TierError> {
        let now = self.shared.clock.now_nanos();
        let expires = ttl.map_or(u64::MAX, |t| now.saturating_add(duration_to_nanos(t)));
        let mut values = self.shared.values.lock();
        let entry = values.entry(key.clone()).or_insert(Entry {
            value: None,
            version: 0,
        });
        entry.value = Some((value.clone(), expires));
        entry.version += 1;
        // Expired values are dropped on read; a sweep every 1,024 writes keeps
        // keys that are never read again from piling up.
        if self.shared.writes.fetch_add(1, Ordering::Relaxed) % 1_024 == 1_023 {
            let before = values.len();
            values.retain(|_, e| e.value.as_ref().is_some_and(|(_, x)| *x > now));
            // Keys without a value are dropped with their versions, so the
            // tier holds no more than its live values; the generation moves
            // on, so that no load that began before writes back at a version
            // that was just forgotten.
            if values.len() < before {
                self.shared.generation.fetch_add(1, Ordering::SeqCst);
            }
        }
        Ok(())
    }

    async fn set_if_absent(
        &self,
        key: &K,
        value: &V,
        ttl: Option<Duration>,
        version: u64,
    ) -> Result<bool, TierError> {
        let now = self.shared.clock.now_nanos();
        let expires = ttl.map_or(u64::MAX, |t| now.saturating_add(duration_to_nanos(t)));
        let mut values = self.shared.values.lock();
        let entry = values.entry(key.clone()).or_insert(Entry {
            value: None,
            version: 0,
        });
        let live = entry.value.as_ref().is_some_and(|(_, x)| *x > now);
        let now_version =
            (self.shared.generation.load(Ordering::SeqCst) << 32) | (entry.version & 0xffff_ffff);
        if live || now_version != version {
            return Ok(false);
        }
        entry.value = Some((value.clone(), expires));
        Ok(true)
    }

    async fn remove(&self, key: &K) -> Result<(), TierError> {
        let mut values = self.shared.values.lock();
        let entry = values.entry(key.clone()).or_insert(Entry {
            value: None,
            version: 0,
        });
        entry.value = None;
        entry.version += 1;
        Ok(())
    }

    async fn publish_invalidation(&self, key: &K) -> Result<(), TierError> {
        // No receiver is not an error: nobody holds a copy to drop.
        let _ = self
            .shared
            .channel
            .send((self.member, Invalidation::Key(key.clone())));
        Ok(())
    }

    async fn remove_all(&self) -> Result<(), TierError> {
        // The generation moves on: no load that began before writes back,
        // whether or not its key had a value.
        let mut values = self.shared.values.lock();
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        values.clear();
        Ok(())
    }

    async fn publish_resync(&self) -> Result<(), TierError> {
        let _ = self
            .shared
            .channel
            .send((self.member, Invalidation::Resync));
        Ok(())
    }

    fn subscribe(&self) -> Invalidations<K> {
        Invalidations::new(self.shared.channel.subscribe(), self.member)
    }
}
