//! The bulkhead's engine: one atomic word for the permits, one lock for the queue.
//!
//! ```text
//!  bit 63     bits 62..32        bits 31..0
//! ┌───────┬──────────────────┬──────────────────┐
//! │queued │ limit (31 bits)  │ in flight (units)│
//! └───────┴──────────────────┴──────────────────┘
//! ```
//!
//! **Taking** units (`try_take`) is one compare-and-swap on the word: it
//! succeeds when nobody is queued and `in_flight + weight <= limit`. **Giving
//! back** is one compare-and-swap while `queued` is clear. Neither takes a
//! lock or allocates.
//!
//! **The queue** (a `VecDeque` of waiters in arrival order, under a mutex) is
//! touched only by callers that wait. The `queued` bit is set, in the same
//! compare-and-swap that sees too little room, by a caller about to join the
//! queue, and cleared under the lock when the queue is empty again. So:
//!
//! - while anyone is queued, `try_take` fails (nobody jumps the queue) and a
//!   give-back goes the slow way: under the lock it subtracts its units and
//!   hands what now fits to the waiters at the head (FIFO: the front; LIFO:
//!   the back), adding their units to the word before it lets go. A waiter is
//!   granted when it is no longer in the queue; it learns so on its next poll.
//! - a give-back that saw `queued` clear cannot strand a waiter: the waiter's
//!   compare-and-swap that set the bit would have failed against the word the
//!   give-back changed, and the waiter would have looked at the room again.
//! - a waiter that leaves (timed out, or its future dropped) takes itself out
//!   under the lock and hands on what its leaving lets through; if it was
//!   granted before it could see it, it gives those units back. No units are
//!   ever held by nobody.
//! - `set_limit` rewrites the limit bits under the lock and hands on what now fits.
//!
//! Ids grow in arrival order, so a waiter finds itself by binary search.
//! Wakers are woken after the lock is released.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering::{self, AcqRel, Relaxed};

/// `Ordering::Acquire`, renamed: `Acquire` is the future's name here.
const ACQUIRE: Ordering = Ordering::Acquire;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::{CachePadded, Listeners, SharedClock, SharedSleeper, Sleep};

use crate::config::{BulkheadBuilder, Config, QueueOrder, check_limit};
use crate::error::{CallError, Reason, Rejected};
use crate::event::Event;
use crate::permit::{OwnedPermit, Permit};
use crate::snapshot::Snapshot;
use palisade_core::ConfigError;
use palisade_core::sync::{AtomicU64, AtomicUsize, Mutex};

const IN_FLIGHT: u64 = 0xFFFF_FFFF;
const LIMIT_SHIFT: u32 = 32;
const LIMIT: u64 = 0x7FFF_FFFF << LIMIT_SHIFT;
const QUEUED: u64 = 1 << 63;
/// The largest limit the word holds: 2³¹ − 1.
pub(crate) const MAX_LIMIT: u32 = 0x7FFF_FFFF;

#[inline]
fn in_flight(word: u64) -> u64 {
    word & IN_FLIGHT
}

#[inline]
fn limit(word: u64) -> u64 {
    (word & LIMIT) >> LIMIT_SHIFT
}

#[inline]
fn fits(word: u64, weight: u32) -> bool {
    in_flight(word) + u64::from(weight) <= limit(word)
}

/// A bulkhead: at most a limit of units held by permits at once. Cheap to
/// clone; clones share one state.
///
/// See the [crate docs](crate) for an example.
#[derive(Clone, Debug)]
pub struct Bulkhead {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    /// In flight, limit and the queued bit: every call reads and writes it.
    word: CachePadded<AtomicU64>,
    queue: Mutex<Queue>,
    /// The queue's length, for snapshots without the lock.
    waiting: AtomicUsize,
    config: Config,
    clock: SharedClock,
    sleeper: Option<SharedSleeper>,
    pub(crate) listeners: Listeners<Event>,
}

#[derive(Debug, Default)]
struct Queue {
    /// In arrival order (ids ascending).
    waiters: VecDeque<Waiter>,
    next_id: u64,
    /// Waiters taken out of the queue without units: heavier than a limit
    /// lowered after they joined. Each is told once, by `granted` or `leave`.
    too_heavy: Vec<u64>,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    weight: u32,
    waker: Waker,
}

/// What a caller joining the queue found.
enum Joined {
    /// It got its units at once (the queue was empty, or it became the head and fit).
    Granted,
    /// It waits with this id.
    Queued(u64),
}

impl Queue {
    fn position(&self, id: u64) -> Option<usize> {
        self.waiters.binary_search_by_key(&id, |w| w.id).ok()
    }
}

impl Bulkhead {
    /// A builder with the defaults: 25 concurrent calls, no waiting.
    pub fn builder() -> BulkheadBuilder {
        BulkheadBuilder::default()
    }

    pub(crate) fn from_config(
        config: Config,
        limit: u32,
        clock: SharedClock,
        sleeper: Option<SharedSleeper>,
        listeners: Listeners<Event>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                word: CachePadded(AtomicU64::new(u64::from(limit) << LIMIT_SHIFT)),
                queue: Mutex::new(Queue::default()),
                waiting: AtomicUsize::new(0),
                config,
                clock,
                sleeper,
                listeners,
            }),
        }
    }

    /// The instance name given to the builder.
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// A permit of one unit if one is free now and nobody is queued; never waits.
    ///
    /// # Errors
    /// [`Rejected`] with reason `full` (or `too_heavy`, see [`try_acquire_many`](Self::try_acquire_many)).
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        self.try_acquire_many(1)
    }

    /// A permit of `weight` units if they are free now and nobody is queued;
    /// never waits. A weight of 0 takes nothing and is granted unless the
    /// bulkhead is over a lowered limit or has callers queued.
    ///
    /// # Errors
    /// [`Rejected`] with reason `full`, or `too_heavy` if `weight` is above the limit.
    #[inline]
    pub fn try_acquire_many(&self, weight: u32) -> Result<Permit<'_>, Rejected> {
        self.shared.try_permit(weight)?;
        Ok(Permit::new(self, weight))
    }

    /// As [`try_acquire`](Self::try_acquire), with a permit a `'static` task can hold.
    ///
    /// # Errors
    /// As [`try_acquire`](Self::try_acquire).
    #[inline]
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, Rejected> {
        self.try_acquire_many_owned(1)
    }

    /// As [`try_acquire_many`](Self::try_acquire_many), with a permit a `'static` task can hold.
    ///
    /// # Errors
    /// As [`try_acquire_many`](Self::try_acquire_many).
    #[inline]
    pub fn try_acquire_many_owned(&self, weight: u32) -> Result<OwnedPermit, Rejected> {
        self.shared.try_permit(weight)?;
        Ok(OwnedPermit::new(self.clone(), weight))
    }

    /// A permit of one unit, waiting for it in the queue up to `max_wait` if
    /// the builder set one; otherwise the same as [`try_acquire`](Self::try_acquire).
    ///
    /// Dropping the future leaves the queue; units it was granted but had not
    /// yet seen are given back.
    pub fn acquire(&self) -> Acquire<'_> {
        self.acquire_many(1)
    }

    /// As [`acquire`](Self::acquire), for `weight` units.
    pub fn acquire_many(&self, weight: u32) -> Acquire<'_> {
        Acquire {
            bulkhead: self,
            wait: Wait::new(weight, true),
        }
    }

    /// As [`acquire`](Self::acquire), with a permit a `'static` task can hold.
    pub fn acquire_owned(&self) -> AcquireOwned {
        self.acquire_many_owned(1)
    }

    /// As [`acquire_many`](Self::acquire_many), with a permit a `'static` task can hold.
    pub fn acquire_many_owned(&self, weight: u32) -> AcquireOwned {
        AcquireOwned {
            bulkhead: self.clone(),
            wait: Wait::new(weight, true),
        }
    }

    /// Runs `call` holding a permit of one unit, taken as
    /// [`acquire`](Self::acquire) takes it; the permit is given back when the
    /// call's future finishes or is dropped.
    ///
    /// # Errors
    /// [`CallError::Rejected`] if no permit was given (the call did not run),
    /// [`CallError::Inner`] with the call's own error.
    pub async fn call<T, E, F, Fut>(&self, call: F) -> Result<T, CallError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _permit = self.acquire().await?;
        call().await.map_err(CallError::Inner)
    }

    /// In flight, waiting and the limit, now.
    pub fn snapshot(&self) -> Snapshot {
        let word = self.shared.word.load(ACQUIRE);
        Snapshot {
            in_flight: in_flight(word) as u32,
            waiting: self.shared.waiting.load(Relaxed),
            limit: limit(word) as u32,
        }
    }

    /// Changes the limit. A higher limit lets queued callers in at once; a
    /// lower one takes nothing from calls in flight: new calls get units
    /// again once in-flight units are below the new limit.
    ///
    /// # Errors
    /// A [`ConfigError`] with field `set_limit` for 0 or a limit above 2³¹−1;
    /// the limit is then unchanged.
    pub fn set_limit(&self, new: u32) -> Result<(), ConfigError> {
        check_limit("set_limit", new)?;
        let shared = &*self.shared;
        let mut wakers = Vec::new();
        let from = {
            let mut queue = shared.queue.lock();
            let mut word = shared.word.load(ACQUIRE);
            let from = loop {
                let next = (word & !LIMIT) | (u64::from(new) << LIMIT_SHIFT);
                match shared
                    .word
                    .compare_exchange_weak(word, next, AcqRel, ACQUIRE)
                {
                    Ok(_) => break limit(word) as u32,
                    Err(actual) => word = actual,
                }
            };
            shared.grant(&mut queue, &mut wakers);
            from
        };
        wakers.into_iter().for_each(Waker::wake);
        if from != new {
            shared
                .listeners
                .emit_with(|| Event::LimitChanged { from, to: new });
        }
        Ok(())
    }
}

impl Shared {
    #[inline]
    fn rejection(&self, reason: Reason) -> Rejected {
        reason.rejection(self.config.retry_after)
    }

    /// A refusal of `weight` units for `reason` that waited for nothing:
    /// reported to the listeners, with the configured hint. (The layer's
    /// `poll_ready` is its only caller.)
    #[cfg(feature = "tower")]
    pub(crate) fn refuse_now(&self, weight: u32, reason: Reason) -> Rejected {
        self.listeners.emit_with(|| Event::Rejected {
            weight,
            reason,
            waited: None,
        });
        self.rejection(reason)
    }

    /// Takes `weight` units now or says why not; emits the event.
    #[inline]
    fn try_permit(&self, weight: u32) -> Result<(), Rejected> {
        match self.try_take(weight) {
            Ok(()) => {
                self.listeners.emit_with(|| Event::Permitted {
                    weight,
                    waited: None,
                });
                Ok(())
            }
            Err(reason) => {
                self.listeners.emit_with(|| Event::Rejected {
                    weight,
                    reason,
                    waited: None,
                });
                Err(self.rejection(reason))
            }
        }
    }

    /// One compare-and-swap: the units, if they fit and nobody is queued.
    #[inline]
    pub(crate) fn try_take(&self, weight: u32) -> Result<(), Reason> {
        let mut word = self.word.load(Relaxed);
        loop {
            if u64::from(weight) > limit(word) {
                return Err(Reason::TooHeavy);
            }
            if word & QUEUED != 0 || !fits(word, weight) {
                return Err(Reason::Full);
            }
            match self
                .word
                .compare_exchange_weak(word, word + u64::from(weight), AcqRel, Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(actual) => word = actual,
            }
        }
    }

    /// Gives `weight` units back: one compare-and-swap, or the lock while anyone is queued.
    #[inline]
    pub(crate) fn give_back(&self, weight: u32) {
        let mut word = self.word.load(Relaxed);
        loop {
            if word & QUEUED != 0 {
                return self.give_back_slow(weight);
            }
            match self
                .word
                .compare_exchange_weak(word, word - u64::from(weight), AcqRel, Relaxed)
            {
                Ok(_) => return,
                Err(actual) => word = actual,
            }
        }
    }

    #[cold]
    fn give_back_slow(&self, weight: u32) {
        let mut wakers = Vec::new();
        {
            let mut queue = self.queue.lock();
            self.word.fetch_sub(u64::from(weight), AcqRel);
            self.grant(&mut queue, &mut wakers);
        }
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Under the lock: hands units to the waiters at the head while they fit,
    /// and clears the queued bit once the queue is empty.
    fn grant(&self, queue: &mut Queue, wakers: &mut Vec<Waker>) {
        loop {
            let word = self.word.load(ACQUIRE);
            let head = match self.config.order {
                QueueOrder::Fifo => queue.waiters.front(),
                QueueOrder::Lifo => queue.waiters.back(),
            };
            match head {
                None => {
                    if word & QUEUED != 0
                        && self
                            .word
                            .compare_exchange_weak(word, word & !QUEUED, AcqRel, ACQUIRE)
                            .is_err()
                    {
                        continue;
                    }
                    break;
                }
                Some(head) if u64::from(head.weight) > limit(word) => {
                    // The limit came down below its weight: it can never
                    // fit, and would hold back everyone behind it.
                    let refused = match self.config.order {
                        QueueOrder::Fifo => queue.waiters.pop_front(),
                        QueueOrder::Lifo => queue.waiters.pop_back(),
                    };
                    if let Some(w) = refused {
                        queue.too_heavy.push(w.id);
                        wakers.push(w.waker);
                    }
                }
                Some(head) if fits(word, head.weight) => {
                    let next = word + u64::from(head.weight);
                    if self
                        .word
                        .compare_exchange_weak(word, next, AcqRel, ACQUIRE)
                        .is_err()
                    {
                        continue;
                    }
                    let granted = match self.config.order {
                        QueueOrder::Fifo => queue.waiters.pop_front(),
                        QueueOrder::Lifo => queue.waiters.pop_back(),
                    };
                    wakers.extend(granted.map(|w| w.waker));
                }
                Some(_) => break,
            }
        }
        self.waiting.store(queue.waiters.len(), Relaxed);
    }

    /// Joins the queue (or gets the units, if they fit and nobody is ahead).
    /// `bounded`: whether `max_waiting` applies.
    fn join(&self, weight: u32, waker: &Waker, bounded: bool) -> Result<Joined, Reason> {
        let mut wakers = Vec::new();
        let joined = {
            let mut queue = self.queue.lock();
            let mut word = self.word.load(ACQUIRE);
            loop {
                if u64::from(weight) > limit(word) {
                    return Err(Reason::TooHeavy);
                }
                if queue.waiters.is_empty() && fits(word, weight) {
                    match self.word.compare_exchange_weak(
                        word,
                        word + u64::from(weight),
                        AcqRel,
                        ACQUIRE,
                    ) {
                        Ok(_) => return Ok(Joined::Granted),
                        Err(actual) => {
                            word = actual;
                            continue;
                        }
                    }
                }
                if bounded && queue.waiters.len() >= self.config.max_waiting {
                    return Err(Reason::Full);
                }
                if word & QUEUED == 0 {
                    // Set in the same step that saw too little room: a
                    // give-back after this sees it and comes to the queue.
                    match self
                        .word
                        .compare_exchange_weak(word, word | QUEUED, AcqRel, ACQUIRE)
                    {
                        Ok(_) => break,
                        Err(actual) => {
                            word = actual;
                            continue;
                        }
                    }
                }
                break;
            }
            let id = queue.next_id;
            queue.next_id += 1;
            queue.waiters.push_back(Waiter {
                id,
                weight,
                waker: waker.clone(),
            });
            // With LIFO the newcomer is the head, and may fit where the others did not.
            self.grant(&mut queue, &mut wakers);
            if queue.position(id).is_some() {
                Joined::Queued(id)
            } else {
                wakers.retain(|w| !w.will_wake(waker));
                Joined::Granted
            }
        };
        wakers.into_iter().for_each(Waker::wake);
        Ok(joined)
    }

    /// Where the waiter `id` is; while it waits, keeps its waker fresh.
    fn granted(&self, id: u64, waker: &Waker) -> Queued {
        let mut queue = self.queue.lock();
        match queue.position(id) {
            Some(at) => {
                let waiter = &mut queue.waiters[at];
                if !waiter.waker.will_wake(waker) {
                    waiter.waker.clone_from(waker);
                }
                Queued::Waiting
            }
            None => match queue.too_heavy.iter().position(|r| *r == id) {
                Some(at) => {
                    queue.too_heavy.swap_remove(at);
                    Queued::TooHeavy
                }
                None => Queued::Granted,
            },
        }
    }

    /// Takes the waiter `id` out of the queue; `false` if it had been granted
    /// (a waiter refused as too heavy left with nothing: `true`).
    fn leave(&self, id: u64) -> bool {
        let mut wakers = Vec::new();
        let left = {
            let mut queue = self.queue.lock();
            match queue.position(id) {
                Some(at) => {
                    queue.waiters.remove(at);
                    // Its leaving may let those behind it in, or empty the queue.
                    self.grant(&mut queue, &mut wakers);
                    true
                }
                None => match queue.too_heavy.iter().position(|r| *r == id) {
                    Some(at) => {
                        queue.too_heavy.swap_remove(at);
                        true
                    }
                    None => false,
                },
            }
        };
        wakers.into_iter().for_each(Waker::wake);
        left
    }

    fn waited_since(&self, since: u64) -> Duration {
        Duration::from_nanos(self.clock.now_nanos().saturating_sub(since))
    }
}

/// What a queued waiter finds when it looks.
enum Queued {
    Waiting,
    Granted,
    /// Taken out of the queue: the limit came down below its weight.
    TooHeavy,
}

/// Where a wait for units is.
enum Stage {
    Start,
    Queued {
        id: u64,
        sleep: Option<Sleep>,
        since: u64,
    },
    Done,
}

/// A wait for `weight` units: the state behind [`Acquire`], [`AcquireOwned`]
/// and the tower layer's `poll_ready`. Its owner passes the bulkhead in and
/// must call [`cancel`](Self::cancel) when it is dropped.
#[derive(Debug)]
pub(crate) struct Wait {
    weight: u32,
    /// `max_wait` and `max_waiting` apply (the tower layer's backpressure waits unbounded).
    bounded: bool,
    stage: Stage,
}

impl std::fmt::Debug for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Start => "Start",
            Self::Queued { .. } => "Queued",
            Self::Done => "Done",
        })
    }
}

impl Wait {
    pub(crate) fn new(weight: u32, bounded: bool) -> Self {
        Self {
            weight,
            bounded,
            stage: Stage::Start,
        }
    }

    /// Ready with `Ok` once the units are held (the caller then owns them), or
    /// with the rejection. After `Ready`, the wait must not be polled again.
    pub(crate) fn poll_units(
        &mut self,
        shared: &Shared,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Rejected>> {
        let Self {
            weight,
            bounded,
            stage,
        } = self;
        let (weight, bounded) = (*weight, *bounded);
        match stage {
            Stage::Start => {
                let waits = !bounded || shared.config.max_wait.is_some();
                match shared.try_take(weight) {
                    Ok(()) => return shared.permitted(stage, weight, None),
                    Err(Reason::Full) if waits => {}
                    Err(reason) => return shared.refused(stage, weight, reason, None),
                }
                match shared.join(weight, cx.waker(), bounded) {
                    Ok(Joined::Granted) => return shared.permitted(stage, weight, None),
                    Err(reason) => return shared.refused(stage, weight, reason, None),
                    Ok(Joined::Queued(id)) => {
                        let max_wait = if bounded {
                            shared.config.max_wait
                        } else {
                            None
                        };
                        *stage = Stage::Queued {
                            id,
                            sleep: max_wait
                                .and_then(|d| shared.sleeper.as_ref().map(|s| s.sleep(d))),
                            since: shared.clock.now_nanos(),
                        };
                    }
                }
            }
            Stage::Queued { id, since, .. } => match shared.granted(*id, cx.waker()) {
                Queued::Waiting => {}
                Queued::Granted => {
                    let waited = shared.waited_since(*since);
                    return shared.permitted(stage, weight, Some(waited));
                }
                Queued::TooHeavy => {
                    let waited = shared.waited_since(*since);
                    return shared.refused(stage, weight, Reason::TooHeavy, Some(waited));
                }
            },
            Stage::Done => return Poll::Pending,
        }
        let Stage::Queued { id, sleep, since } = stage else {
            return Poll::Pending;
        };
        if let Some(sleep) = sleep
            && sleep.as_mut().poll(cx).is_ready()
        {
            let (id, since) = (*id, *since);
            let waited = Some(shared.waited_since(since));
            return if shared.leave(id) {
                shared.refused(stage, weight, Reason::TimedOut, waited)
            } else {
                // Granted as the time ran out: take it.
                shared.permitted(stage, weight, waited)
            };
        }
        Poll::Pending
    }

    /// Leaves the queue if queued; units granted but not yet seen are given back.
    pub(crate) fn cancel(&mut self, shared: &Shared) {
        if let Stage::Queued { id, .. } = self.stage {
            self.stage = Stage::Done;
            if !shared.leave(id) {
                shared.give_back(self.weight);
            }
        }
    }
}

impl Shared {
    fn refused(
        &self,
        stage: &mut Stage,
        weight: u32,
        reason: Reason,
        waited: Option<Duration>,
    ) -> Poll<Result<(), Rejected>> {
        *stage = Stage::Done;
        self.listeners.emit_with(|| Event::Rejected {
            weight,
            reason,
            waited,
        });
        Poll::Ready(Err(self.rejection(reason)))
    }

    fn permitted(
        &self,
        stage: &mut Stage,
        weight: u32,
        waited: Option<Duration>,
    ) -> Poll<Result<(), Rejected>> {
        *stage = Stage::Done;
        self.listeners
            .emit_with(|| Event::Permitted { weight, waited });
        Poll::Ready(Ok(()))
    }
}

/// The future of [`Bulkhead::acquire`] and [`Bulkhead::acquire_many`]: a
/// [`Permit`], or the [`Rejected`] that says why not.
///
/// Dropping it leaves the queue and never strands units.
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<'a> {
    bulkhead: &'a Bulkhead,
    wait: Wait,
}

impl<'a> Future for Acquire<'a> {
    type Output = Result<Permit<'a>, Rejected>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.wait
            .poll_units(&this.bulkhead.shared, cx)
            .map_ok(|()| Permit::new(this.bulkhead, this.wait.weight))
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        self.wait.cancel(&self.bulkhead.shared);
    }
}

impl std::fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire")
            .field("bulkhead", &self.bulkhead.name())
            .field("wait", &self.wait)
            .finish()
    }
}

/// The future of [`Bulkhead::acquire_owned`] and [`Bulkhead::acquire_many_owned`]:
/// an [`OwnedPermit`], or the [`Rejected`] that says why not.
///
/// Dropping it leaves the queue and never strands units.
#[must_use = "futures do nothing unless polled"]
pub struct AcquireOwned {
    bulkhead: Bulkhead,
    wait: Wait,
}

impl Future for AcquireOwned {
    type Output = Result<OwnedPermit, Rejected>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.wait
            .poll_units(&this.bulkhead.shared, cx)
            .map_ok(|()| OwnedPermit::new(this.bulkhead.clone(), this.wait.weight))
    }
}

impl Drop for AcquireOwned {
    fn drop(&mut self) {
        self.wait.cancel(&self.bulkhead.shared);
    }
}

impl std::fmt::Debug for AcquireOwned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcquireOwned")
            .field("bulkhead", &self.bulkhead.name())
            .field("wait", &self.wait)
            .finish()
    }
}

/// Every interleaving of taking, giving back, queueing and leaving, up to
/// loom's preemption bound. Run with
/// `RUSTFLAGS="--cfg palisade_loom" cargo test -p palisade-bulkhead --lib --release loom`.
#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::atomic::AtomicUsize as LoomUsize;
    use std::sync::atomic::Ordering::SeqCst;

    /// A wait that is never bounded, as the tower layer's backpressure waits.
    struct Waiting<'a> {
        bulkhead: &'a Bulkhead,
        wait: Wait,
    }

    impl Future for Waiting<'_> {
        type Output = Result<(), Rejected>;
        fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = &mut *self;
            this.wait.poll_units(&this.bulkhead.shared, cx)
        }
    }

    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.wait.cancel(&self.bulkhead.shared);
        }
    }

    /// Wakes by unparking the loom thread that waits.
    struct Unpark(loom::thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }

    /// Polls until ready, parking in between: if nothing ever wakes the
    /// thread, every thread is blocked and loom reports the deadlock.
    fn block_on<F: Future>(future: F) -> F::Output {
        let waker = Waker::from(Arc::new(Unpark(loom::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            loom::thread::park();
        }
    }

    fn bulkhead(limit: u32) -> Bulkhead {
        Bulkhead::builder()
            .max_concurrent_calls(limit)
            .build()
            .unwrap()
    }

    #[test]
    fn loom_two_takers_never_both_hold_one_unit() {
        loom::model(|| {
            let bulkhead = bulkhead(1);
            let holders = Arc::new(LoomUsize::new(0));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (bulkhead, holders) = (bulkhead.clone(), Arc::clone(&holders));
                    loom::thread::spawn(move || {
                        if let Ok(permit) = bulkhead.try_acquire() {
                            assert_eq!(holders.fetch_add(1, SeqCst), 0);
                            holders.fetch_sub(1, SeqCst);
                            drop(permit);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(bulkhead.snapshot().in_flight, 0);
            assert!(bulkhead.try_acquire().is_ok());
        });
    }

    #[test]
    fn loom_a_waiter_is_woken_by_a_give_back_on_another_thread() {
        loom::model(|| {
            let bulkhead = bulkhead(1);
            let permit = bulkhead.try_acquire_owned().unwrap();
            let releaser = loom::thread::spawn(move || drop(permit));
            // block_on parks until woken: a lost wake-up is a deadlock loom reports.
            let got = block_on(Waiting {
                bulkhead: &bulkhead,
                wait: Wait::new(1, false),
            });
            assert!(got.is_ok());
            assert_eq!(bulkhead.snapshot().in_flight, 1);
            bulkhead.shared.give_back(1);
            releaser.join().unwrap();
            let s = bulkhead.snapshot();
            assert_eq!((s.in_flight, s.waiting), (0, 0));
            assert!(bulkhead.try_acquire().is_ok(), "the queued bit was cleared");
        });
    }

    #[test]
    fn loom_a_waiter_leaving_as_it_is_granted_strands_nothing() {
        loom::model(|| {
            let bulkhead = bulkhead(1);
            let permit = bulkhead.try_acquire_owned().unwrap();
            let mut waiting = Box::pin(Waiting {
                bulkhead: &bulkhead,
                wait: Wait::new(1, false),
            });
            let mut cx = Context::from_waker(Waker::noop());
            assert!(waiting.as_mut().poll(&mut cx).is_pending());
            let releaser = loom::thread::spawn(move || drop(permit));
            // Dropped while the give-back may be handing it the unit.
            drop(waiting);
            releaser.join().unwrap();
            let s = bulkhead.snapshot();
            assert_eq!((s.in_flight, s.waiting), (0, 0));
            assert!(bulkhead.try_acquire().is_ok());
        });
    }
}
