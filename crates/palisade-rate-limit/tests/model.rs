//! Property tests against a small model: the continuous-state leaky bucket
//! (a different formulation of the same algorithm: a level that drains by one
//! nanosecond per nanosecond), on a manual clock, with exact admission times.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::noop_waker;
use palisade_rate_limit::{
    Clock, Decision, EXHAUSTED, Error, KEY_CAPACITY, KeyedRateLimiter, ManualClock, Quota,
    RateLimiter,
};
use proptest::prelude::*;

/// The model's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Admitted after waiting this long (0: at once), leaving this many free.
    Admitted {
        wait: u64,
        remaining: u32,
    },
    Refused {
        retry_after: u64,
    },
    TooLarge,
}

/// A leaky bucket: `level` ns of work, drained since `at`.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    level: u64,
    at: u64,
}

impl Bucket {
    fn level_at(&self, now: u64) -> u64 {
        self.level.saturating_sub(now - self.at)
    }

    /// `n` requests at `now`, admitted if they fit within `max_wait`.
    fn request(&mut self, now: u64, emission: u64, burst: u32, n: u32, max_wait: u64) -> Answer {
        if n > burst {
            return Answer::TooLarge;
        }
        let tolerance = emission * u64::from(burst);
        if n == 0 {
            // Admitted and changes nothing, even behind waiters.
            let free = tolerance.saturating_sub(self.level_at(now));
            return Answer::Admitted {
                wait: 0,
                remaining: (free / emission) as u32,
            };
        }
        let need = self.level_at(now) + emission * u64::from(n);
        let over = need.saturating_sub(tolerance);
        if over > max_wait {
            return Answer::Refused { retry_after: over };
        }
        self.level = need;
        self.at = now;
        // Free cells when the wait ends: tolerance minus the level then.
        let level_then = need - over;
        Answer::Admitted {
            wait: over,
            remaining: ((tolerance - level_then) / emission) as u32,
        }
    }
}

type Pending = Pin<Box<dyn Future<Output = Result<Decision, Error>>>>;

fn poll(f: &mut Pending) -> Poll<Result<Decision, Error>> {
    let waker = noop_waker();
    f.as_mut().poll(&mut Context::from_waker(&waker))
}

#[derive(Debug, Clone)]
enum Op {
    Check(u32),
    Acquire(u32),
}

fn op() -> impl Strategy<Value = (u64, Op)> {
    (
        prop_oneof![Just(0u64), 0u64..2_000, 0u64..50_000],
        prop_oneof![
            3 => (0u32..5).prop_map(Op::Check),
            1 => (1u32..4).prop_map(Op::Acquire),
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Every check and every wait gives exactly the model's answer, and every
    /// waiter is admitted exactly at the time the model says, not a
    /// nanosecond earlier or later.
    #[test]
    fn the_limiter_admits_exactly_when_the_model_does(
        count in 1u32..20,
        period in 1_000u64..100_000,
        burst in 1u32..6,
        max_wait in prop_oneof![Just(0u64), 0u64..20_000],
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let quota = Quota::new(count, Duration::from_nanos(period)).burst(burst);
        // Rounded up, as the quota says.
        let emission = period.div_ceil(u64::from(count));
        let clock = ManualClock::new();
        let limiter = RateLimiter::builder()
            .quota(quota)
            .clock(clock.shared())
            .sleeper(clock.sleeper())
            .max_wait(Duration::from_nanos(max_wait))
            .build()
            .unwrap();
        let mut model = Bucket::default();
        let mut pending: Vec<(u64, u32, Pending)> = Vec::new();
        for (advance, op) in ops {
            clock.advance(Duration::from_nanos(advance));
            let now = clock.now_nanos();
            // Waiters due by now are admitted now; the others are still waiting.
            let mut still = Vec::new();
            for (due, remaining, mut f) in pending.drain(..) {
                match poll(&mut f) {
                    Poll::Ready(Ok(d)) => {
                        prop_assert!(now >= due, "admitted at {now}, due at {due}");
                        prop_assert_eq!(d.remaining(), remaining);
                    }
                    Poll::Ready(Err(e)) => prop_assert!(false, "waiter failed: {e}"),
                    Poll::Pending => {
                        prop_assert!(now < due, "still waiting at {now}, due at {due}");
                        still.push((due, remaining, f));
                    }
                }
            }
            pending = still;
            match op {
                Op::Check(n) => {
                    let expected = model.request(now, emission, burst, n, 0);
                    match (limiter.check_n(n), expected) {
                        (Ok(d), Answer::Admitted { wait: 0, remaining }) => {
                            prop_assert_eq!(d.remaining(), remaining);
                        }
                        (Err(Error::Denied(d)), Answer::Refused { retry_after }) => {
                            prop_assert_eq!(d.retry_after(), Duration::from_nanos(retry_after));
                            prop_assert_eq!(d.rejected().reason(), EXHAUSTED);
                        }
                        (Err(Error::InsufficientCapacity { .. }), Answer::TooLarge) => {}
                        (got, want) => prop_assert!(false, "check_n({n}) at {now}: {got:?}, model {want:?}"),
                    }
                }
                Op::Acquire(n) => {
                    let expected = model.request(now, emission, burst, n, max_wait);
                    let l = limiter.clone();
                    let mut f: Pending = Box::pin(async move { l.acquire_n(n).await });
                    match (poll(&mut f), expected) {
                        (Poll::Ready(Ok(d)), Answer::Admitted { wait: 0, remaining }) => {
                            prop_assert_eq!(d.remaining(), remaining);
                        }
                        (Poll::Pending, Answer::Admitted { wait, remaining }) if wait > 0 => {
                            pending.push((now + wait, remaining, f));
                        }
                        (Poll::Ready(Err(Error::Denied(d))), Answer::Refused { retry_after }) => {
                            prop_assert_eq!(d.retry_after(), Duration::from_nanos(retry_after));
                        }
                        (Poll::Ready(Err(Error::InsufficientCapacity { .. })), Answer::TooLarge) => {}
                        (got, want) => prop_assert!(false, "acquire_n({n}) at {now}: {got:?}, model {want:?}"),
                    }
                }
            }
        }
    }
}

// ---- keyed, with eviction ------------------------------------------------------

/// Each key's quota, as the limiter's quota function gives it: key k gets
/// `1 + k % 3` requests per `1000 · (1 + k % 2)` ns, burst `1 + k % 4`.
fn quota_of(key: u8) -> Quota {
    Quota::new(
        1 + u32::from(key % 3),
        Duration::from_nanos(1_000 * (1 + u64::from(key % 2))),
    )
    .burst(1 + u32::from(key % 4))
}

fn params_of(key: u8) -> (u64, u32) {
    let q = quota_of(key);
    (q.emission_interval().as_nanos() as u64, q.burst_size())
}

/// The keyed model: a bucket per held key, at most `capacity`; a full table
/// drops the keys whose bucket is empty (level 0), and refuses a new key if
/// none is, until the earliest time a held bucket can be empty (as of that
/// sweep, or of a key inserted since: the table does not look again before then).
struct KeyedModel {
    capacity: usize,
    held: HashMap<u8, Bucket>,
    next_sweep: u64,
}

impl KeyedModel {
    fn request(&mut self, key: u8, now: u64, n: u32) -> Result<Answer, u64> {
        let (emission, burst) = params_of(key);
        if n > burst {
            return Ok(Answer::TooLarge);
        }
        if !self.held.contains_key(&key) {
            if n == 0 {
                return Ok(Answer::Admitted {
                    wait: 0,
                    remaining: burst,
                });
            }
            if self.held.len() >= self.capacity {
                if now >= self.next_sweep {
                    self.held.retain(|_, b| b.level_at(now) > 0);
                    self.next_sweep = self
                        .held
                        .values()
                        .map(|b| b.at + b.level)
                        .min()
                        .unwrap_or(0);
                }
                if self.held.len() >= self.capacity {
                    return Err(self.next_sweep - now);
                }
            }
            self.held.insert(key, Bucket { level: 0, at: now });
            let b = self.held.get_mut(&key).unwrap();
            let answer = b.request(now, emission, burst, n, 0);
            // The earliest a held bucket can be empty is no later than this one's.
            self.next_sweep = self.next_sweep.min(b.at + b.level);
            return Ok(answer);
        }
        Ok(self
            .held
            .get_mut(&key)
            .unwrap()
            .request(now, emission, burst, n, 0))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// With eviction under way, every answer is the model's; and whatever the
    /// eviction did, the requests admitted for each key, replayed alone into
    /// an unbounded bucket, are all admitted: no key ever got more than its quota.
    #[test]
    fn keyed_with_eviction_matches_the_model_and_no_key_exceeds_its_quota(
        max_keys in 1usize..5,
        ops in proptest::collection::vec(
            (prop_oneof![Just(0u64), 0u64..1_500, 0u64..6_000], 0u8..8, 0u32..4),
            1..120,
        ),
    ) {
        let clock = ManualClock::new();
        let limiter = KeyedRateLimiter::<u8>::builder()
            .quota_fn(|k| quota_of(*k))
            .max_keys(max_keys)
            .shards(1)
            .clock(clock.shared())
            .build()
            .unwrap();
        let mut model = KeyedModel { capacity: max_keys, held: HashMap::new(), next_sweep: 0 };
        let mut admitted: HashMap<u8, Vec<(u64, u32)>> = HashMap::new();
        for (advance, key, n) in ops {
            clock.advance(Duration::from_nanos(advance));
            let now = clock.now_nanos();
            match (limiter.check_n(&key, n), model.request(key, now, n)) {
                (Ok(d), Ok(Answer::Admitted { wait: 0, remaining })) => {
                    prop_assert_eq!(d.remaining(), remaining);
                    admitted.entry(key).or_default().push((now, n));
                }
                (Err(Error::Denied(d)), Ok(Answer::Refused { retry_after })) => {
                    prop_assert_eq!(d.rejected().reason(), EXHAUSTED);
                    prop_assert_eq!(d.retry_after(), Duration::from_nanos(retry_after));
                }
                (Err(Error::Denied(d)), Err(room_in)) => {
                    prop_assert_eq!(d.rejected().reason(), KEY_CAPACITY);
                    prop_assert_eq!(d.retry_after(), Duration::from_nanos(room_in));
                }
                (Err(Error::InsufficientCapacity { .. }), Ok(Answer::TooLarge)) => {}
                (got, want) => prop_assert!(false, "key {key} n {n} at {now}: {got:?}, model {want:?}"),
            }
            prop_assert!(limiter.len() <= max_keys);
        }
        for (key, requests) in admitted {
            let (emission, burst) = params_of(key);
            let mut alone = Bucket::default();
            for (at, n) in requests {
                let a = alone.request(at, emission, burst, n, 0);
                prop_assert!(matches!(a, Answer::Admitted { wait: 0, .. }), "key {key} over its quota at {at}: {a:?}");
            }
        }
    }
}

/// A key inserted after a sweep may refill before every key the sweep kept:
/// a full table must look again when it has, not when the kept ones do.
#[test]
fn a_full_table_makes_room_as_soon_as_any_held_key_has_refilled() {
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::<&'static str>::builder()
        .quota_fn(|k| {
            if k.starts_with("slow") {
                Quota::per_hour(1)
            } else {
                Quota::per_second(1_000)
            }
        })
        .max_keys(2)
        .shards(1)
        .clock(clock.shared())
        .build()
        .unwrap();
    let ms = Duration::from_millis(1);
    limiter.check(&"slow").unwrap();
    limiter.check(&"fast-1").unwrap(); // refilled 1 ms from now
    clock.advance(ms);
    limiter.check(&"fast-2").unwrap(); // a sweep dropped fast-1; slow stays for an hour
    clock.advance(ms);
    // fast-2 has refilled: it makes room now, not in an hour.
    limiter.check(&"fast-3").unwrap();
    assert_eq!(limiter.len(), 2);
    assert!(limiter.snapshot(&"fast-2").is_none());
}
