//! The cache against a reference model: a map plus a manual clock.
//!
//! The policy decides *which* entries to evict, which a model cannot
//! predict; the removal listener tells the model, which then must agree with
//! the cache exactly: every `get` returns the model's value or nothing, an
//! expired, invalidated, replaced or evicted value is never returned, and the
//! bound holds after every operation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use palisade_cache::{Cache, ManualClock, RemovalCause};
use parking_lot::Mutex;
use proptest::prelude::*;

const CAPACITY: u64 = 8;
const TTL_MS: u64 = 100;
const TTI_MS: u64 = 40;

#[derive(Debug, Clone)]
enum Op {
    Insert(u8),
    Get(u8),
    Invalidate(u8),
    InvalidateAll,
    Advance(u16),
    RunPending,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..24u8).prop_map(Op::Insert),
        8 => (0..24u8).prop_map(Op::Get),
        1 => (0..24u8).prop_map(Op::Invalidate),
        1 => Just(Op::InvalidateAll),
        2 => (0..60u16).prop_map(Op::Advance),
        1 => Just(Op::RunPending),
    ]
}

/// The model's entry: its value (unique per insert), written and last read, in ms.
#[derive(Debug, Clone, Copy)]
struct Held {
    value: u64,
    written: u64,
    accessed: u64,
}

impl Held {
    fn live(&self, now: u64, tti: bool) -> bool {
        let deadline = if tti {
            (self.written + TTL_MS).min(self.accessed + TTI_MS)
        } else {
            self.written + TTL_MS
        };
        now < deadline
    }
}

fn run(ops: &[Op], tti: bool) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let removals: Arc<Mutex<Vec<(u8, u64, RemovalCause)>>> = Arc::default();
    let sink = Arc::clone(&removals);
    let mut builder = Cache::builder()
        .max_capacity(CAPACITY)
        .time_to_live(Duration::from_millis(TTL_MS))
        .clock(clock.shared())
        .removal_listener(move |k: &u8, v: &u64, cause| sink.lock().push((*k, *v, cause)));
    if tti {
        builder = builder.time_to_idle(Duration::from_millis(TTI_MS));
    }
    let cache: Cache<u8, u64> = builder.build().unwrap();
    let mut model: HashMap<u8, Held> = HashMap::new();
    let mut now = 0u64;
    let mut next_value = 0u64;
    for op in ops {
        match *op {
            Op::Insert(k) => {
                next_value += 1;
                cache.insert(k, next_value);
                model.insert(
                    k,
                    Held {
                        value: next_value,
                        written: now,
                        accessed: now,
                    },
                );
            }
            Op::Get(k) => {
                let expected = model.get(&k).filter(|h| h.live(now, tti)).map(|h| h.value);
                prop_assert_eq!(cache.get(&k), expected, "get({}) at {} ms", k, now);
                if expected.is_some()
                    && let Some(held) = model.get_mut(&k)
                {
                    held.accessed = now;
                }
            }
            Op::Invalidate(k) => {
                cache.invalidate(&k);
                model.remove(&k);
            }
            Op::InvalidateAll => {
                cache.invalidate_all();
                model.clear();
            }
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(u64::from(ms)));
                now += u64::from(ms);
            }
            Op::RunPending => cache.run_pending_tasks(),
        }
        // What the cache dropped by itself, the model forgets.
        for (k, v, cause) in removals.lock().drain(..) {
            match cause {
                RemovalCause::Size | RemovalCause::Expired => {
                    prop_assert!(
                        cause != RemovalCause::Expired
                            || model
                                .get(&k)
                                .is_none_or(|h| h.value != v || !h.live(now, tti)),
                        "key {} value {} reported expired while live at {} ms",
                        k,
                        v,
                        now
                    );
                    if model.get(&k).is_some_and(|h| h.value == v) {
                        model.remove(&k);
                    }
                }
                RemovalCause::Explicit | RemovalCause::Replaced => {
                    prop_assert!(model.get(&k).is_none_or(|h| h.value != v));
                }
                other => prop_assert!(false, "a cause the model does not know: {other}"),
            }
        }
        prop_assert!(cache.entry_count() <= CAPACITY);
        prop_assert!(cache.entry_count() >= model.len() as u64);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_cache_agrees_with_the_model_under_time_to_live(ops in prop::collection::vec(op(), 1..300)) {
        run(&ops, false)?;
    }

    #[test]
    fn the_cache_agrees_with_the_model_under_time_to_idle(ops in prop::collection::vec(op(), 1..300)) {
        run(&ops, true)?;
    }
}
