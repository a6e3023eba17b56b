//! Where readers leave their hits for the policy, without taking its lock.
//!
//! A few stripes of small rings, one stripe per thread (by a thread-local
//! number), so two threads rarely write the same cache line. Each ring is a
//! bounded queue with a sequence number per place (Vyukov's design): a reader
//! claims a place with one compare-and-swap on the stripe's tail, writes
//! `slot << 32 | hash tag`, then publishes it by moving the place's sequence
//! on; the drain, under the maintenance lock, takes places in order while
//! their sequence says they are written, and hands each place back to the
//! next lap. When a stripe is full the reader says so, and the cache drains
//! every stripe if the maintenance lock is free. If it is busy, the hit is
//! dropped: the policy's order is a statistic, and losing a few hits under
//! contention costs less hit ratio than making readers wait (Caffeine does
//! the same). A hit is dropped only then.

#[cfg(palisade_loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(palisade_loom))]
use std::sync::atomic::{AtomicU64, Ordering};

use palisade_core::CachePadded;

use crate::stripe::{stripe_count, thread_hint};

#[cfg(not(palisade_loom))]
const RING: u64 = 16;
/// Small under loom, so that its models reach a full ring and wrap round.
#[cfg(palisade_loom)]
const RING: u64 = 2;

/// One place of a ring. `seq == pos`: free for the write of position `pos`;
/// `seq == pos + 1`: written, waiting for the drain; the drain then sets it
/// to `pos + RING`, freeing it for the next lap.
#[derive(Debug)]
struct Place {
    seq: AtomicU64,
    value: AtomicU64,
}

#[derive(Debug)]
struct Stripe {
    /// Next position to claim.
    tail: CachePadded<AtomicU64>,
    /// Next position to drain; written only under the maintenance lock.
    head: AtomicU64,
    ring: [Place; RING as usize],
}

/// What a reader should do after leaving a hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Recorded; nothing to do.
    Done,
    /// Recorded, and the stripe is now full: drain if the lock is free.
    Drain,
    /// The stripe was full and the hit was not recorded: drain, then retry once.
    Full,
}

#[derive(Debug)]
pub(crate) struct ReadBuffer {
    stripes: Box<[Stripe]>,
    mask: usize,
}

impl Stripe {
    fn new() -> Self {
        Self {
            tail: CachePadded(AtomicU64::new(0)),
            head: AtomicU64::new(0),
            ring: std::array::from_fn(|i| Place {
                seq: AtomicU64::new(i as u64),
                value: AtomicU64::new(0),
            }),
        }
    }
}

impl ReadBuffer {
    pub(crate) fn new() -> Self {
        Self::with_stripes(stripe_count(2))
    }

    /// A buffer of `stripes` stripes, a power of two.
    fn with_stripes(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes).map(|_| Stripe::new()).collect(),
            mask: stripes - 1,
        }
    }

    /// Leaves a hit on slot `slot` of a key whose hash ends in `tag`.
    #[inline]
    pub(crate) fn push(&self, slot: u32, tag: u32) -> Push {
        let stripe = &self.stripes[thread_hint() & self.mask];
        let mut pos = stripe.tail.load(Ordering::Relaxed);
        loop {
            let place = &stripe.ring[(pos % RING) as usize];
            let seq = place.seq.load(Ordering::Acquire);
            // Signed: how far the place is from being free for `pos`.
            let lag = seq.wrapping_sub(pos) as i64;
            match lag.cmp(&0) {
                std::cmp::Ordering::Equal => {
                    match stripe.tail.compare_exchange_weak(
                        pos,
                        pos + 1,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => {
                            place
                                .value
                                .store(u64::from(slot) << 32 | u64::from(tag), Ordering::Relaxed);
                            place.seq.store(pos + 1, Ordering::Release);
                            let head = stripe.head.load(Ordering::Relaxed);
                            return if pos + 1 - head.min(pos + 1) >= RING {
                                Push::Drain
                            } else {
                                Push::Done
                            };
                        }
                        Err(now) => pos = now, // another reader took the place
                    }
                }
                // The place still holds the last lap's hit: the ring is full.
                std::cmp::Ordering::Less => return Push::Full,
                // We are behind: look again.
                std::cmp::Ordering::Greater => pos = stripe.tail.load(Ordering::Relaxed),
            }
        }
    }

    /// Hands every recorded hit to `record(slot, tag)`; call under the maintenance lock.
    pub(crate) fn drain(&self, mut record: impl FnMut(u32, u32)) {
        for stripe in &*self.stripes {
            let mut head = stripe.head.load(Ordering::Relaxed);
            loop {
                let place = &stripe.ring[(head % RING) as usize];
                if place.seq.load(Ordering::Acquire) != head + 1 {
                    break; // not written yet: the next drain takes it
                }
                let value = place.value.load(Ordering::Relaxed);
                place.seq.store(head + RING, Ordering::Release);
                record((value >> 32) as u32, value as u32);
                head += 1;
            }
            stripe.head.store(head, Ordering::Relaxed);
        }
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn hands_back_every_hit_in_order_and_reports_a_full_stripe() {
        let buffer = ReadBuffer::new();
        let mut pushes = Vec::new();
        for i in 0..17u32 {
            pushes.push(buffer.push(i, i * 3));
        }
        assert_eq!(pushes[..15], [Push::Done; 15]);
        assert_eq!(pushes[15], Push::Drain);
        assert_eq!(pushes[16], Push::Full);
        let mut seen = Vec::new();
        buffer.drain(|slot, tag| seen.push((slot, tag)));
        assert_eq!(seen, (0..16).map(|i| (i, i * 3)).collect::<Vec<_>>());
        assert_eq!(buffer.push(u32::MAX, u32::MAX), Push::Done);
        seen.clear();
        buffer.drain(|slot, tag| seen.push((slot, tag)));
        assert_eq!(seen, vec![(u32::MAX, u32::MAX)]);
    }

    #[test]
    fn every_hit_from_many_threads_is_drained_exactly_once_when_none_is_dropped() {
        // Each thread waits for a drain rather than dropping, so counts are exact.
        let buffer = ReadBuffer::new();
        let drained = parking_lot::Mutex::new(vec![0u32; 4]);
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                let buffer = &buffer;
                let drained = &drained;
                scope.spawn(move || {
                    for _ in 0..10_000 {
                        loop {
                            match buffer.push(t, 0) {
                                Push::Done | Push::Drain => break,
                                Push::Full => {
                                    let mut counts = drained.lock();
                                    buffer.drain(|slot, _| counts[slot as usize] += 1);
                                }
                            }
                        }
                    }
                });
            }
        });
        let mut counts = drained.lock();
        buffer.drain(|slot, _| counts[slot as usize] += 1);
        assert_eq!(*counts, vec![10_000; 4]);
    }
}

/// Every interleaving of two readers sharing a stripe with two drains
/// running meanwhile (so that places are reused): each hit the buffer
/// accepted is drained exactly once.
///
/// Run with `RUSTFLAGS="--cfg palisade_loom" CARGO_TARGET_DIR=target/loom
/// cargo test -p palisade-cache --lib --release loom`.
#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::{Arc, Mutex};
    use loom::thread;

    #[test]
    fn loom_accepted_hits_are_drained_exactly_once() {
        // Bounded preemptions keep the model to a few minutes; three are
        // enough for a reader to stop between claiming and publishing while
        // the other reader and a drain run.
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let buffer = Arc::new(ReadBuffer::with_stripes(1));
            let drained = Arc::new(Mutex::new(Vec::new()));
            let readers: Vec<_> = (0..2u32)
                .map(|t| {
                    let buffer = Arc::clone(&buffer);
                    thread::spawn(move || {
                        (0..2u32)
                            .filter(|i| buffer.push(t * 10 + i, 0) != Push::Full)
                            .map(|i| t * 10 + i)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for _ in 0..2 {
                // Under the maintenance lock: one drain at a time.
                let mut seen = drained.lock().unwrap();
                buffer.drain(|slot, _| seen.push(slot));
            }
            let mut accepted: Vec<u32> = readers
                .into_iter()
                .flat_map(|r| r.join().unwrap())
                .collect();
            let mut seen = drained.lock().unwrap();
            buffer.drain(|slot, _| seen.push(slot));
            accepted.sort_unstable();
            seen.sort_unstable();
            assert_eq!(*seen, accepted);
        });
    }
}
