//! The bulkhead against a small model: the same operations on both, the same
//! answers and the same snapshot after every one.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_bulkhead::{AcquireOwned, Bulkhead, ManualClock, OwnedPermit, QueueOrder, Reason};
use proptest::prelude::*;

const MAX_WAIT_MS: u64 = 100;
const MAX_WAITING: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    TryAcquire(u32),
    Acquire(u32),
    /// Poll the i-th (mod len) pending waiter.
    Poll(usize),
    /// Drop the i-th (mod len) pending waiter.
    DropWaiter(usize),
    /// Drop the i-th (mod len) permit.
    DropPermit(usize),
    SetLimit(u32),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u32..4).prop_map(Op::TryAcquire),
        3 => (0u32..4).prop_map(Op::Acquire),
        3 => any::<usize>().prop_map(Op::Poll),
        1 => any::<usize>().prop_map(Op::DropWaiter),
        3 => any::<usize>().prop_map(Op::DropPermit),
        1 => (1u32..5).prop_map(Op::SetLimit),
        2 => (0u64..80).prop_map(Op::Advance),
    ]
}

/// What the model says an operation returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Granted,
    Rejected(Reason),
    Pending,
    Done,
}

#[derive(Debug)]
struct ModelWaiter {
    id: u64,
    weight: u32,
    since: u64,
    /// Granted by a release but not yet polled.
    granted: bool,
    /// Taken out of the queue as heavier than a lowered limit, not yet polled.
    too_heavy: bool,
}

#[derive(Debug)]
struct Model {
    order: QueueOrder,
    limit: u32,
    in_flight: u32,
    now: u64,
    /// Queued waiters in arrival order (ids of `waiters`).
    queue: VecDeque<u64>,
    /// Every pending waiter future, in creation order.
    waiters: Vec<ModelWaiter>,
    permits: Vec<u32>,
    next_id: u64,
}

impl Model {
    fn fits(&self, w: u32) -> bool {
        self.in_flight + w <= self.limit
    }

    fn weight_of(&self, id: u64) -> u32 {
        self.waiters.iter().find(|w| w.id == id).unwrap().weight
    }

    fn grant(&mut self) {
        loop {
            let head = match self.order {
                QueueOrder::Fifo => self.queue.front(),
                QueueOrder::Lifo => self.queue.back(),
                _ => unreachable!(),
            };
            let Some(&id) = head else { break };
            let w = self.weight_of(id);
            if w > self.limit {
                // It can never fit the lowered limit: out, refused.
                match self.order {
                    QueueOrder::Fifo => self.queue.pop_front(),
                    _ => self.queue.pop_back(),
                };
                self.waiters
                    .iter_mut()
                    .find(|x| x.id == id)
                    .unwrap()
                    .too_heavy = true;
                continue;
            }
            if !self.fits(w) {
                break;
            }
            self.in_flight += w;
            match self.order {
                QueueOrder::Fifo => self.queue.pop_front(),
                _ => self.queue.pop_back(),
            };
            self.waiters
                .iter_mut()
                .find(|x| x.id == id)
                .unwrap()
                .granted = true;
        }
    }

    fn release(&mut self, w: u32) {
        self.in_flight -= w;
        self.grant();
    }

    fn try_take(&self, w: u32) -> Result<(), Reason> {
        if w > self.limit {
            Err(Reason::TooHeavy)
        } else if !self.queue.is_empty() || !self.fits(w) {
            Err(Reason::Full)
        } else {
            Ok(())
        }
    }

    fn try_acquire(&mut self, w: u32) -> Answer {
        match self.try_take(w) {
            Ok(()) => {
                self.in_flight += w;
                self.permits.push(w);
                Answer::Granted
            }
            Err(r) => Answer::Rejected(r),
        }
    }

    /// The first poll of a new acquire future.
    fn acquire(&mut self, w: u32) -> Answer {
        match self.try_take(w) {
            Ok(()) => return self.try_acquire(w),
            Err(Reason::TooHeavy) => return Answer::Rejected(Reason::TooHeavy),
            Err(_) => {}
        }
        if self.queue.is_empty() && self.fits(w) {
            return self.try_acquire(w);
        }
        if self.queue.len() >= MAX_WAITING {
            return Answer::Rejected(Reason::Full);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue.push_back(id);
        self.waiters.push(ModelWaiter {
            id,
            weight: w,
            since: self.now,
            granted: false,
            too_heavy: false,
        });
        self.grant();
        let me = self.waiters.last().unwrap();
        if me.granted {
            self.waiters.pop();
            self.permits.push(w);
            Answer::Granted
        } else {
            Answer::Pending
        }
    }

    fn poll(&mut self, at: usize) -> Answer {
        let waiter = &self.waiters[at];
        let (id, w) = (waiter.id, waiter.weight);
        if waiter.granted {
            self.waiters.remove(at);
            self.permits.push(w);
            return Answer::Granted;
        }
        if waiter.too_heavy {
            self.waiters.remove(at);
            return Answer::Rejected(Reason::TooHeavy);
        }
        if self.now - waiter.since >= MAX_WAIT_MS * 1_000_000 {
            self.waiters.remove(at);
            self.queue.retain(|&q| q != id);
            self.grant();
            return Answer::Rejected(Reason::TimedOut);
        }
        Answer::Pending
    }

    fn drop_waiter(&mut self, at: usize) {
        let waiter = self.waiters.remove(at);
        if waiter.granted {
            self.release(waiter.weight);
        } else {
            self.queue.retain(|&q| q != waiter.id);
            self.grant();
        }
    }
}

fn answer<T>(poll: Poll<Result<T, palisade_bulkhead::Rejected>>) -> (Answer, Option<T>) {
    match poll {
        Poll::Ready(Ok(p)) => (Answer::Granted, Some(p)),
        Poll::Ready(Err(r)) => (Answer::Rejected(Reason::of(&r).unwrap()), None),
        Poll::Pending => (Answer::Pending, None),
    }
}

fn run(order: QueueOrder, limit: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let bulkhead = Bulkhead::builder()
        .max_concurrent_calls(limit)
        .max_wait(Duration::from_millis(MAX_WAIT_MS))
        .max_waiting(MAX_WAITING)
        .queue_order(order)
        .sleeper(clock.sleeper())
        .clock(clock.shared())
        .build()
        .unwrap();
    let mut model = Model {
        order,
        limit,
        in_flight: 0,
        now: 0,
        queue: VecDeque::new(),
        waiters: Vec::new(),
        permits: Vec::new(),
        next_id: 0,
    };
    let mut waiters: Vec<Pin<Box<AcquireOwned>>> = Vec::new();
    let mut permits: Vec<OwnedPermit> = Vec::new();
    let mut cx = Context::from_waker(Waker::noop());
    for op in ops {
        let (expected, got) = match *op {
            Op::TryAcquire(w) => {
                let expected = model.try_acquire(w);
                let got = match bulkhead.try_acquire_many_owned(w) {
                    Ok(p) => {
                        permits.push(p);
                        Answer::Granted
                    }
                    Err(r) => Answer::Rejected(Reason::of(&r).unwrap()),
                };
                (expected, got)
            }
            Op::Acquire(w) => {
                let expected = model.acquire(w);
                let mut fut = Box::pin(bulkhead.acquire_many_owned(w));
                let (got, permit) = answer(fut.as_mut().poll(&mut cx));
                if got == Answer::Pending {
                    waiters.push(fut);
                }
                permits.extend(permit);
                (expected, got)
            }
            Op::Poll(i) if !waiters.is_empty() => {
                let at = i % waiters.len();
                let expected = model.poll(at);
                let (got, permit) = answer(waiters[at].as_mut().poll(&mut cx));
                if got != Answer::Pending {
                    drop(waiters.remove(at));
                }
                permits.extend(permit);
                (expected, got)
            }
            Op::DropWaiter(i) if !waiters.is_empty() => {
                let at = i % waiters.len();
                model.drop_waiter(at);
                drop(waiters.remove(at));
                (Answer::Done, Answer::Done)
            }
            Op::DropPermit(i) if !permits.is_empty() => {
                let at = i % permits.len();
                let w = model.permits.remove(at);
                model.release(w);
                let p = permits.remove(at);
                prop_assert_eq!(p.weight(), w);
                (Answer::Done, Answer::Done)
            }
            Op::SetLimit(n) => {
                model.limit = n;
                model.grant();
                bulkhead.set_limit(n).unwrap();
                (Answer::Done, Answer::Done)
            }
            Op::Advance(ms) => {
                model.now += ms * 1_000_000;
                clock.advance(Duration::from_millis(ms));
                (Answer::Done, Answer::Done)
            }
            _ => (Answer::Done, Answer::Done),
        };
        prop_assert_eq!(expected, got, "after {:?}", op);
        let snap = bulkhead.snapshot();
        prop_assert_eq!(snap.in_flight, model.in_flight, "in flight after {:?}", op);
        prop_assert_eq!(snap.waiting, model.queue.len(), "waiting after {:?}", op);
        prop_assert_eq!(snap.limit, model.limit);
        prop_assert_eq!(permits.len(), model.permits.len());
    }
    // Everything dropped: every unit comes back.
    drop(waiters);
    drop(permits);
    let snap = bulkhead.snapshot();
    prop_assert_eq!((snap.in_flight, snap.waiting), (0, 0));
    prop_assert!(bulkhead.try_acquire_many(snap.limit).is_ok());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn fifo_matches_the_model(limit in 1u32..5, ops in prop::collection::vec(op(), 1..60)) {
        run(QueueOrder::Fifo, limit, &ops)?;
    }

    #[test]
    fn lifo_matches_the_model(limit in 1u32..5, ops in prop::collection::vec(op(), 1..60)) {
        run(QueueOrder::Lifo, limit, &ops)?;
    }
}
