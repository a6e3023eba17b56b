//! One load per key, however many callers wait for it.
//!
//! The first caller to miss becomes the *leader* and holds a [`Leader`]
//! guard; later callers find the key's [`Flight`] and wait on it. The leader
//! publishes the outcome to every waiter. If the leader goes away without an
//! outcome (its future was dropped, or its loader panicked), the guard's
//! `Drop` marks the flight abandoned and wakes the waiters, who start over:
//! one of them becomes the next leader. Nobody waits for a load nobody runs.

use std::any::Any;
use std::borrow::Borrow;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};

use hashbrown::HashTable;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// A failed load's error, shared by every waiter and typed again by the caller.
pub(crate) type SharedError = Arc<dyn Any + Send + Sync>;

/// `init` as a load that cannot fail, for the `get_with`s built on `try_get_with`.
pub(crate) async fn infallible<V>(init: impl Future<Output = V>) -> Result<V, Infallible> {
    Ok(init.await)
}

/// The value of a load that cannot fail.
pub(crate) fn value_of<V>(result: Result<V, Arc<Infallible>>) -> V {
    match result {
        Ok(value) => value,
        Err(never) => match *never {},
    }
}

enum State<V> {
    Running,
    Done(Result<V, SharedError>),
    Abandoned,
}

pub(crate) struct Flight<V> {
    state: Mutex<State<V>>,
    done: Notify,
    /// Set when the key was written or invalidated during the load: the
    /// loaded value (or error) is then handed to the waiters already there
    /// but not stored, so it cannot overwrite a newer value; the flight is
    /// also taken out of the table, so later callers load afresh.
    superseded: AtomicBool,
}

impl<V: Clone> Flight<V> {
    /// Waits for the outcome; `None` if the leader gave up.
    pub(crate) async fn wait(&self) -> Option<Result<V, SharedError>> {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match &*self.state.lock() {
                State::Running => {}
                State::Done(result) => return Some(result.clone()),
                State::Abandoned => return None,
            }
            notified.await;
        }
    }

    pub(crate) fn is_superseded(&self) -> bool {
        self.superseded.load(Ordering::Acquire)
    }
}

/// A key's flight, filed under the key's hash.
type Filed<K, V> = (u64, K, Arc<Flight<V>>);

struct Shard<K, V> {
    table: Mutex<HashTable<Filed<K, V>>>,
}

/// The loads under way, by key.
pub(crate) struct Flights<K, V> {
    shards: Box<[Shard<K, V>]>,
    /// How many flights the tables hold, so that a write with no load under
    /// way (nearly every write) skips the shard lock in `supersede`.
    registered: AtomicUsize,
}

/// What [`Flights::join`] made of the caller.
pub(crate) enum Join<K: Eq + Clone, V> {
    Leader(Leader<K, V>),
    Waiter(Arc<Flight<V>>),
}

impl<K: Eq + Clone, V> Flights<K, V> {
    pub(crate) fn new() -> Self {
        Self {
            shards: (0..16)
                .map(|_| Shard {
                    table: Mutex::new(HashTable::new()),
                })
                .collect(),
            registered: AtomicUsize::new(0),
        }
    }

    fn shard(&self, hash: u64) -> &Shard<K, V> {
        &self.shards[(hash >> 40) as usize & (self.shards.len() - 1)]
    }

    /// Joins the key's load, or starts one with the caller as leader.
    pub(crate) fn join(self: &Arc<Self>, hash: u64, key: &K) -> Join<K, V> {
        let mut table = self.shard(hash).table.lock();
        if let Some((_, _, flight)) = table.find(hash, |(h, k, _)| *h == hash && k == key) {
            return Join::Waiter(Arc::clone(flight));
        }
        let flight = Arc::new(Flight {
            state: Mutex::new(State::Running),
            done: Notify::new(),
            superseded: AtomicBool::new(false),
        });
        table.insert_unique(
            hash,
            (hash, key.clone(), Arc::clone(&flight)),
            |(h, _, _)| *h,
        );
        self.registered.fetch_add(1, Ordering::SeqCst);
        // Dekker's pattern with `supersede`: the writer writes the value,
        // fences, then reads `registered`; the leader registers, fences, then
        // (its caller) reads the value again. With both fences, either the
        // writer sees this load and supersedes it, or the re-check sees the
        // written value; never neither.
        fence(Ordering::SeqCst);
        Join::Leader(Leader {
            flights: Arc::clone(self),
            hash,
            flight,
            finished: false,
        })
    }

    /// Marks the key's running load, if any, as superseded by a write or an
    /// invalidation. Called under the maintenance lock *after* the write or
    /// removal, so that a load that registers later finds the new state when
    /// it re-checks the cache, and one registered earlier is marked before
    /// it can store (storing takes the maintenance lock and looks at the mark).
    pub(crate) fn supersede<Q>(&self, hash: u64, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        // See `join`: the value this supersedes for is written before here.
        fence(Ordering::SeqCst);
        if self.registered.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut table = self.shard(hash).table.lock();
        if let Ok(entry) = table.find_entry(hash, |(h, k, _)| *h == hash && k.borrow() == key) {
            self.registered.fetch_sub(1, Ordering::SeqCst);
            // Detached as well as marked: callers from now on start a load
            // of their own instead of joining one that read the old value.
            let ((_, _, flight), _) = entry.remove();
            flight.superseded.store(true, Ordering::Release);
        }
    }

    /// Marks every running load as superseded, and detaches it.
    pub(crate) fn supersede_all(&self) {
        for shard in &self.shards {
            for (_, _, flight) in shard.table.lock().drain() {
                self.registered.fetch_sub(1, Ordering::SeqCst);
                flight.superseded.store(true, Ordering::Release);
            }
        }
    }

    fn remove(&self, hash: u64, flight: &Arc<Flight<V>>) {
        let mut table = self.shard(hash).table.lock();
        if let Ok(entry) = table.find_entry(hash, |(_, _, f)| Arc::ptr_eq(f, flight)) {
            entry.remove();
            self.registered.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// The leader's duty to finish the flight; dropping it unfinished abandons it.
pub(crate) struct Leader<K: Eq + Clone, V> {
    flights: Arc<Flights<K, V>>,
    hash: u64,
    flight: Arc<Flight<V>>,
    finished: bool,
}

impl<K: Eq + Clone, V> Leader<K, V> {
    pub(crate) fn flight(&self) -> &Arc<Flight<V>> {
        &self.flight
    }

    /// Publishes the outcome to every waiter and ends the flight.
    pub(crate) fn finish(mut self, result: Result<V, SharedError>) {
        self.end(State::Done(result));
    }

    fn end(&mut self, state: State<V>) {
        self.finished = true;
        *self.flight.state.lock() = state;
        self.flights.remove(self.hash, &self.flight);
        self.flight.done.notify_waiters();
    }
}

impl<K: Eq + Clone, V> Drop for Leader<K, V> {
    fn drop(&mut self) {
        if !self.finished {
            self.end(State::Abandoned);
        }
    }
}
