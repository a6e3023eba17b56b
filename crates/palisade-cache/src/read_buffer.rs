//! Where readers leave their hits for the policy, without taking its lock.
//!
//! A few stripes of small rings, one stripe per thread (by a thread-local
//! number), so two threads rarely write the same cache line. A reader claims
//! a place with one compare-and-swap and stores `slot << 32 | hash tag`; when
//! its stripe is full it says so, and the cache then drains every stripe
//! under the maintenance lock. If that lock is busy, the hit is dropped: the
//! policy's order is a statistic, and losing a few hits under contention
//! costs less hit ratio than making readers wait (Caffeine does the same).
//! A hit is dropped only then, or when its stripe is full.

use std::sync::atomic::{AtomicU64, Ordering};

use palisade_core::CachePadded;

use crate::stripe::{stripe_count, thread_hint};

const RING: u64 = 16;
const EMPTY: u64 = 0;

#[derive(Debug, Default)]
struct Stripe {
    /// Next place to claim.
    tail: CachePadded<AtomicU64>,
    /// Next place to drain; written only under the maintenance lock.
    head: AtomicU64,
    ring: [AtomicU64; RING as usize],
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

impl ReadBuffer {
    pub(crate) fn new() -> Self {
        let stripes = stripe_count(2);
        Self {
            stripes: (0..stripes).map(|_| Stripe::default()).collect(),
            mask: stripes - 1,
        }
    }

    /// Leaves a hit on slot `slot` (never `u32::MAX`) of a key whose hash ends in `tag`.
    #[inline]
    pub(crate) fn push(&self, slot: u32, tag: u32) -> Push {
        let stripe = &self.stripes[thread_hint() & self.mask];
        let value = (u64::from(slot) << 32 | u64::from(tag)).wrapping_add(1);
        let mut tail = stripe.tail.load(Ordering::Relaxed);
        let head = loop {
            let head = stripe.head.load(Ordering::Acquire);
            if tail.wrapping_sub(head) >= RING {
                return Push::Full;
            }
            match stripe.tail.compare_exchange_weak(
                tail,
                tail + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break head,
                Err(now) => tail = now, // another thread on this stripe took the place
            }
        };
        stripe.ring[(tail % RING) as usize].store(value, Ordering::Release);
        if tail + 1 - head >= RING {
            Push::Drain
        } else {
            Push::Done
        }
    }

    /// Hands every recorded hit to `record(slot, tag)`; call under the maintenance lock.
    pub(crate) fn drain(&self, mut record: impl FnMut(u32, u32)) {
        for stripe in &*self.stripes {
            let mut head = stripe.head.load(Ordering::Relaxed);
            let tail = stripe.tail.load(Ordering::Acquire);
            while head != tail {
                let value = stripe.ring[(head % RING) as usize].swap(EMPTY, Ordering::Acquire);
                if value == EMPTY {
                    break; // claimed but not yet written: the next drain takes it
                }
                let value = value.wrapping_sub(1);
                record((value >> 32) as u32, value as u32);
                head += 1;
            }
            stripe.head.store(head, Ordering::Release);
        }
    }
}

#[cfg(test)]
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
        assert_eq!(buffer.push(u32::MAX - 1, u32::MAX), Push::Done);
        seen.clear();
        buffer.drain(|slot, tag| seen.push((slot, tag)));
        assert_eq!(seen, vec![(u32::MAX - 1, u32::MAX)]);
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
