//! Partitions: named shares of one limit (for example "interactive 90 %,
//! batch 10 %"). A share may borrow what the others leave idle, and is
//! guaranteed its own when it wants it back.
//!
//! The rules, for a call of weight `w` in partition `p`, under one lock:
//!
//! - Units in flight over all partitions never exceed the limit.
//! - Each partition's **guarantee** is `floor(share × limit)` units.
//! - A call that keeps its partition within its guarantee is admitted if
//!   `w` units are free. Beyond the guarantee, it is admitted if `w` fits in
//!   the free units **minus the unused guarantees of the other partitions
//!   that have callers waiting**. So a partition borrows freely what nobody
//!   waits for, and once a caller of another partition waits below its
//!   guarantee, no borrower takes the units it is owed.
//! - Units given back go to waiting partitions below their guarantee first
//!   (the longest-waiting caller first among them), then to the other
//!   waiters in arrival order. No call is ever preempted: a borrower gives its
//!   units back when it finishes, and they go where they are owed.
//!
//! So under contention (callers of every partition waiting) each partition
//! holds at least its guarantee as soon as the borrowed units are back. A
//! partition's callers wait only with [`PartitionedBulkheadBuilder::max_wait`]:
//! without it a call that does not fit is rejected at once, nobody waits,
//! nothing is reserved, and a partition below its guarantee may be refused
//! while others borrow.
//!
//! ```
//! use palisade_bulkhead::partition::PartitionedBulkhead;
//! use palisade_bulkhead::ManualClock;
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let bulkhead = PartitionedBulkhead::builder()
//!     .max_concurrent_calls(10)
//!     .partition("interactive", 0.8)
//!     .partition("batch", 0.2)
//!     .max_wait(Duration::from_secs(1))
//!     .sleeper(clock.sleeper())
//!     .build()?;
//! let interactive = bulkhead.partition("interactive").unwrap();
//! let batch = bulkhead.partition("batch").unwrap();
//!
//! // Nobody interactive: batch borrows all ten units.
//! let borrowed: Vec<_> = (0..10).map(|_| batch.try_acquire().unwrap()).collect();
//! assert_eq!(bulkhead.snapshot().in_flight, 10);
//! assert!(interactive.try_acquire().is_err(), "nothing free");
//! # drop(borrowed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::{ConfigError, SharedSleeper, Sleep};
use parking_lot::Mutex;

use crate::config::check_limit;
use crate::{Reason, Rejected};

/// Builds a [`PartitionedBulkhead`].
#[must_use]
pub struct PartitionedBulkheadBuilder {
    name: Arc<str>,
    limit: u32,
    partitions: Vec<(Arc<str>, f64)>,
    max_wait: Option<Duration>,
    sleeper: Option<SharedSleeper>,
    retry_after: Option<Duration>,
}

impl fmt::Debug for PartitionedBulkheadBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedBulkheadBuilder")
            .field("name", &self.name)
            .field("limit", &self.limit)
            .field("partitions", &self.partitions)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl PartitionedBulkheadBuilder {
    /// The instance name (default `"default"`; must not be empty).
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = name.into();
        self
    }

    /// The limit all partitions share, in 1..=2³¹−1 (default 25).
    pub fn max_concurrent_calls(mut self, limit: u32) -> Self {
        self.limit = limit;
        self
    }

    /// Adds a partition with `share` of the limit guaranteed, in (0, 1]. The
    /// shares must add up to 1, and the names be distinct.
    pub fn partition(mut self, name: impl Into<Arc<str>>, share: f64) -> Self {
        self.partitions.push((name.into(), share));
        self
    }

    /// Lets callers wait up to this long for units (default: they do not
    /// wait, and nothing is reserved for anyone; see the [module docs](self)).
    /// Needs a [`sleeper`](Self::sleeper).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// What `max_wait` waits on (required with `max_wait`). A `ManualClock` is a sleeper.
    pub fn sleeper(mut self, sleeper: SharedSleeper) -> Self {
        self.sleeper = Some(sleeper);
        self
    }

    /// The wait every rejection suggests (default: none).
    pub fn retry_after(mut self, hint: Duration) -> Self {
        self.retry_after = Some(hint);
        self
    }

    /// Validates the settings and builds the bulkhead.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the method: no partition, a share outside
    /// (0, 1], shares that do not add up to 1 or a name used twice
    /// (`partition`); a bad limit (`max_concurrent_calls`); a zero `max_wait`,
    /// `max_wait` without a sleeper (`sleeper`); a zero `retry_after`; an empty name.
    pub fn build(self) -> Result<PartitionedBulkhead, ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        check_limit("max_concurrent_calls", self.limit)?;
        if self.partitions.is_empty() {
            return Err(ConfigError::new("partition", "add at least one partition"));
        }
        for (i, (name, share)) in self.partitions.iter().enumerate() {
            palisade_core::config::check_ratio("partition", *share)?;
            if self.partitions[..i].iter().any(|(n, _)| n == name) {
                return Err(ConfigError::new(
                    "partition",
                    format!("the name `{name}` is used twice"),
                ));
            }
        }
        let sum: f64 = self.partitions.iter().map(|(_, s)| s).sum();
        if (sum - 1.0).abs() > 1e-9 {
            return Err(ConfigError::new(
                "partition",
                format!("the shares must add up to 1, got {sum}"),
            ));
        }
        if let Some(d) = self.max_wait {
            palisade_core::config::check_positive_duration("max_wait", d)?;
            if self.sleeper.is_none() {
                return Err(ConfigError::new("sleeper", "max_wait needs a sleeper"));
            }
        }
        if let Some(d) = self.retry_after {
            palisade_core::config::check_positive_duration("retry_after", d)?;
        }
        let parts = self
            .partitions
            .iter()
            .map(|(name, share)| Part {
                name: Arc::clone(name),
                guarantee: (share * f64::from(self.limit) + 1e-9).floor() as u32,
                in_flight: 0,
                waiters: VecDeque::new(),
            })
            .collect();
        Ok(PartitionedBulkhead {
            shared: Arc::new(Shared {
                name: self.name,
                max_wait: self.max_wait,
                sleeper: self.sleeper,
                retry_after: self.retry_after.map(palisade_core::duration_to_nanos),
                state: Mutex::new(State {
                    limit: self.limit,
                    total: 0,
                    parts,
                    next_id: 0,
                }),
            }),
        })
    }
}

/// One limit shared by named partitions; see the [module docs](self).
/// Cheap to clone; clones share the state.
#[derive(Clone)]
pub struct PartitionedBulkhead {
    shared: Arc<Shared>,
}

struct Shared {
    name: Arc<str>,
    max_wait: Option<Duration>,
    sleeper: Option<SharedSleeper>,
    retry_after: Option<u64>,
    state: Mutex<State>,
}

struct State {
    limit: u32,
    total: u32,
    parts: Vec<Part>,
    next_id: u64,
}

struct Part {
    name: Arc<str>,
    guarantee: u32,
    in_flight: u32,
    /// In arrival order (ids ascending).
    waiters: VecDeque<Waiter>,
}

struct Waiter {
    id: u64,
    weight: u32,
    waker: Waker,
}

impl State {
    /// The units owed to the other partitions with callers waiting.
    fn reserved_for_others(&self, me: usize) -> u32 {
        self.parts
            .iter()
            .enumerate()
            .filter(|(j, p)| *j != me && !p.waiters.is_empty())
            .map(|(_, p)| p.guarantee.saturating_sub(p.in_flight))
            .sum()
    }

    /// Within its own guarantee a partition may take any free unit; beyond
    /// it, only what is neither taken nor owed to a waiting partition.
    fn admissible(&self, me: usize, weight: u32) -> bool {
        let free = self.limit.saturating_sub(self.total);
        let part = &self.parts[me];
        let within = u64::from(part.in_flight) + u64::from(weight) <= u64::from(part.guarantee);
        (within && weight <= free)
            || u64::from(weight) <= u64::from(free.saturating_sub(self.reserved_for_others(me)))
    }

    fn take(&mut self, me: usize, weight: u32) {
        self.total += weight;
        self.parts[me].in_flight += weight;
    }

    /// Hands units to waiters: partitions below their guarantee first, then
    /// the rest, the longest-waiting head first within each.
    fn grant(&mut self, wakers: &mut Vec<Waker>) {
        loop {
            let mut order: Vec<(bool, u64, usize)> = self
                .parts
                .iter()
                .enumerate()
                .filter_map(|(j, p)| {
                    p.waiters
                        .front()
                        .map(|w| (p.in_flight >= p.guarantee, w.id, j))
                })
                .collect();
            order.sort_unstable();
            let Some(j) = order.into_iter().map(|(_, _, j)| j).find(|&j| {
                let head = self.parts[j].waiters.front().map_or(0, |w| w.weight);
                self.admissible(j, head)
            }) else {
                break;
            };
            let waiter = self.parts[j].waiters.pop_front().expect("a head");
            self.take(j, waiter.weight);
            wakers.push(waiter.waker);
        }
    }
}

/// In flight and waiting, for the whole bulkhead or one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionSnapshot {
    /// Units held now.
    pub in_flight: u32,
    /// Callers waiting.
    pub waiting: usize,
    /// The limit (the whole bulkhead) or the guarantee (a partition).
    pub limit: u32,
}

impl fmt::Debug for PartitionedBulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionedBulkhead")
            .field("name", &self.shared.name)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl PartitionedBulkhead {
    /// A builder with a limit of 25, no partitions yet and no waiting.
    pub fn builder() -> PartitionedBulkheadBuilder {
        PartitionedBulkheadBuilder {
            name: Arc::from("default"),
            limit: 25,
            partitions: Vec::new(),
            max_wait: None,
            sleeper: None,
            retry_after: None,
        }
    }

    /// The instance name given to the builder.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The partition called `name`, if there is one.
    pub fn partition(&self, name: &str) -> Option<Partition> {
        let index = self
            .shared
            .state
            .lock()
            .parts
            .iter()
            .position(|p| &*p.name == name)?;
        Some(Partition {
            shared: Arc::clone(&self.shared),
            index,
        })
    }

    /// The whole bulkhead now: units in flight, callers waiting, the limit.
    pub fn snapshot(&self) -> PartitionSnapshot {
        let state = self.shared.state.lock();
        PartitionSnapshot {
            in_flight: state.total,
            waiting: state.parts.iter().map(|p| p.waiters.len()).sum(),
            limit: state.limit,
        }
    }
}

/// One partition of a [`PartitionedBulkhead`]: where its callers take permits.
#[derive(Clone)]
pub struct Partition {
    shared: Arc<Shared>,
    index: usize,
}

impl fmt::Debug for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partition")
            .field("snapshot", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl Partition {
    /// This partition now: units it holds, its callers waiting, its guarantee.
    pub fn snapshot(&self) -> PartitionSnapshot {
        let state = self.shared.state.lock();
        let p = &state.parts[self.index];
        PartitionSnapshot {
            in_flight: p.in_flight,
            waiting: p.waiters.len(),
            limit: p.guarantee,
        }
    }

    fn rejection(&self, reason: Reason) -> Rejected {
        reason.rejection(self.shared.retry_after)
    }

    /// A permit of one unit now if the rules admit it; never waits.
    ///
    /// # Errors
    /// [`Rejected`] with reason `full`.
    pub fn try_acquire(&self) -> Result<PartitionPermit, Rejected> {
        self.try_acquire_many(1)
    }

    /// A permit of `weight` units now if the rules admit it; never waits.
    ///
    /// # Errors
    /// [`Rejected`] with reason `full`, or `too_heavy` above the limit.
    pub fn try_acquire_many(&self, weight: u32) -> Result<PartitionPermit, Rejected> {
        let mut state = self.shared.state.lock();
        if weight > state.limit {
            return Err(self.rejection(Reason::TooHeavy));
        }
        if !state.parts[self.index].waiters.is_empty() || !state.admissible(self.index, weight) {
            return Err(self.rejection(Reason::Full));
        }
        state.take(self.index, weight);
        drop(state);
        Ok(PartitionPermit {
            partition: self.clone(),
            weight,
        })
    }

    /// A permit of one unit, waiting up to `max_wait` if the builder set one.
    pub fn acquire(&self) -> PartitionAcquire {
        self.acquire_many(1)
    }

    /// A permit of `weight` units, waiting up to `max_wait` if the builder set one.
    /// Dropping the future leaves the queue and never strands units.
    pub fn acquire_many(&self, weight: u32) -> PartitionAcquire {
        PartitionAcquire {
            partition: self.clone(),
            weight,
            stage: Stage::Start,
        }
    }

    /// Gives `weight` units back and hands on what that lets in.
    fn give_back(&self, weight: u32) {
        let mut wakers = Vec::new();
        {
            let mut state = self.shared.state.lock();
            state.total -= weight;
            state.parts[self.index].in_flight -= weight;
            state.grant(&mut wakers);
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Takes waiter `id` out; `false` if it had been granted.
    fn leave(&self, id: u64) -> bool {
        let mut wakers = Vec::new();
        let left = {
            let mut state = self.shared.state.lock();
            let queue = &mut state.parts[self.index].waiters;
            match queue.binary_search_by_key(&id, |w| w.id) {
                Ok(at) => {
                    queue.remove(at);
                    // No longer waiting: what it reserved may go to others.
                    state.grant(&mut wakers);
                    true
                }
                Err(_) => false,
            }
        };
        wakers.into_iter().for_each(Waker::wake);
        left
    }
}

/// Units of one partition; given back when dropped.
#[must_use = "a permit gives its units back as soon as it is dropped"]
pub struct PartitionPermit {
    partition: Partition,
    weight: u32,
}

impl fmt::Debug for PartitionPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionPermit")
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}

impl PartitionPermit {
    /// The units it holds.
    pub fn weight(&self) -> u32 {
        self.weight
    }
}

impl Drop for PartitionPermit {
    fn drop(&mut self) {
        self.partition.give_back(self.weight);
    }
}

enum Stage {
    Start,
    Queued { id: u64, sleep: Option<Sleep> },
    Done,
}

/// The future of [`Partition::acquire`]: a [`PartitionPermit`] or the rejection.
#[must_use = "futures do nothing unless polled"]
pub struct PartitionAcquire {
    partition: Partition,
    weight: u32,
    stage: Stage,
}

impl fmt::Debug for PartitionAcquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionAcquire")
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}

impl PartitionAcquire {
    fn permit(&mut self) -> Poll<Result<PartitionPermit, Rejected>> {
        self.stage = Stage::Done;
        Poll::Ready(Ok(PartitionPermit {
            partition: self.partition.clone(),
            weight: self.weight,
        }))
    }
}

impl Future for PartitionAcquire {
    type Output = Result<PartitionPermit, Rejected>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let shared = Arc::clone(&this.partition.shared);
        match &mut this.stage {
            Stage::Start => {
                let mut state = shared.state.lock();
                let me = this.partition.index;
                if this.weight > state.limit {
                    this.stage = Stage::Done;
                    return Poll::Ready(Err(this.partition.rejection(Reason::TooHeavy)));
                }
                if state.parts[me].waiters.is_empty() && state.admissible(me, this.weight) {
                    state.take(me, this.weight);
                    drop(state);
                    return this.permit();
                }
                let Some(max_wait) = shared.max_wait else {
                    this.stage = Stage::Done;
                    return Poll::Ready(Err(this.partition.rejection(Reason::Full)));
                };
                let id = state.next_id;
                state.next_id += 1;
                state.parts[me].waiters.push_back(Waiter {
                    id,
                    weight: this.weight,
                    waker: cx.waker().clone(),
                });
                // Its waiting may change what others may take, never what it may.
                drop(state);
                this.stage = Stage::Queued {
                    id,
                    sleep: shared.sleeper.as_ref().map(|s| s.sleep(max_wait)),
                };
            }
            Stage::Queued { id, .. } => {
                let id = *id;
                let mut state = shared.state.lock();
                let queue = &mut state.parts[this.partition.index].waiters;
                if let Ok(at) = queue.binary_search_by_key(&id, |w| w.id) {
                    queue[at].waker.clone_from(cx.waker());
                } else {
                    drop(state);
                    return this.permit();
                }
            }
            Stage::Done => return Poll::Pending,
        }
        let Stage::Queued { id, sleep } = &mut this.stage else {
            return Poll::Pending;
        };
        if let Some(sleep) = sleep
            && sleep.as_mut().poll(cx).is_ready()
        {
            let id = *id;
            this.stage = Stage::Done;
            return if this.partition.leave(id) {
                Poll::Ready(Err(this.partition.rejection(Reason::TimedOut)))
            } else {
                this.permit()
            };
        }
        Poll::Pending
    }
}

impl Drop for PartitionAcquire {
    fn drop(&mut self) {
        if let Stage::Queued { id, .. } = self.stage {
            self.stage = Stage::Done;
            if !self.partition.leave(id) {
                self.partition.give_back(self.weight);
            }
        }
    }
}
