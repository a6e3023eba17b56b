//! Keyed partitions: a limit per key inside the shared limit, a bounded
//! number of keys, idle ones dropped, exact counts under threads.

use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use palisade_bulkhead::keyed::KeyedBulkhead;
use palisade_bulkhead::{ManualClock, Reason};

fn tenants(clock: &ManualClock) -> KeyedBulkhead<String> {
    KeyedBulkhead::builder()
        .max_concurrent_calls(5)
        .per_key_limit(2)
        .max_keys(3)
        .idle_after(Duration::from_secs(10))
        .clock(clock.shared())
        .build()
        .unwrap()
}

fn key(s: &str) -> String {
    s.to_owned()
}

#[test]
fn each_key_is_held_to_its_limit_and_all_to_the_shared_one() {
    let clock = ManualClock::new();
    let t = tenants(&clock);
    let a: Vec<_> = (0..2).map(|_| t.try_acquire(&key("a")).unwrap()).collect();
    assert_eq!(
        Reason::of(&t.try_acquire(&key("a")).unwrap_err()),
        Some(Reason::Full)
    );
    let b: Vec<_> = (0..2).map(|_| t.try_acquire(&key("b")).unwrap()).collect();
    let c = t.try_acquire(&key("c")).unwrap();
    // Five in flight: the shared limit. c's second unit is refused by it, and
    // the unit of c's own limit it took is given back.
    assert!(t.try_acquire(&key("c")).is_err());
    assert_eq!(t.key_snapshot(&key("c")).unwrap().in_flight, 1);
    assert_eq!(t.snapshot().in_flight, 5);
    drop((a, b, c));
    assert_eq!(t.snapshot().in_flight, 0);
}

#[test]
fn keys_are_bounded_and_the_longest_idle_is_dropped_for_a_new_one() {
    let clock = ManualClock::new();
    let t = tenants(&clock);
    drop(t.try_acquire(&key("a")).unwrap());
    clock.advance(Duration::from_secs(1));
    drop(t.try_acquire(&key("b")).unwrap());
    let busy = t.try_acquire(&key("c")).unwrap();
    assert_eq!(t.keys(), 3);
    // A fourth key: nobody has been idle for 10 s yet.
    assert_eq!(
        Reason::of(&t.try_acquire(&key("d")).unwrap_err()),
        Some(Reason::Full)
    );
    clock.advance(Duration::from_secs(10));
    // Now a and b are idle long enough; a (idle longest) is dropped, c is busy.
    let d = t.try_acquire(&key("d")).unwrap();
    assert_eq!(t.keys(), 3);
    assert!(t.key_snapshot(&key("a")).is_none());
    assert!(t.key_snapshot(&key("b")).is_some());
    assert_eq!(
        t.key_snapshot(&key("c")).unwrap().in_flight,
        1,
        "a busy key is kept"
    );
    // a comes back and takes b's place; nothing of a's old state is stranded.
    let a = t.try_acquire(&key("a")).unwrap();
    assert!(t.key_snapshot(&key("b")).is_none());
    drop((busy, d, a));
    assert_eq!(t.snapshot().in_flight, 0);
    assert_eq!(t.keys(), 3);
}

#[test]
fn threads_never_exceed_a_key_limit_or_the_shared_limit() {
    let clock = ManualClock::new();
    let t = KeyedBulkhead::builder()
        .max_concurrent_calls(6)
        .per_key_limit(2)
        .max_keys(2)
        .idle_after(Duration::ZERO) // keys come and go all the time
        .clock(clock.shared())
        .build::<u32>()
        .unwrap();
    let per_key: Vec<AtomicU32> = (0..4).map(|_| AtomicU32::new(0)).collect();
    let (total, high_total, high_key) = (AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0));
    std::thread::scope(|s| {
        for th in 0..4u32 {
            let (t, per_key, total, high_total, high_key) =
                (&t, &per_key, &total, &high_total, &high_key);
            s.spawn(move || {
                let mut rng = fastrand::Rng::with_seed(u64::from(th));
                for _ in 0..5_000 {
                    let k = rng.u32(0..4);
                    if let Ok(p) = t.try_acquire(&k) {
                        let n = per_key[k as usize].fetch_add(1, SeqCst) + 1;
                        high_key.fetch_max(n, SeqCst);
                        let m = total.fetch_add(1, SeqCst) + 1;
                        high_total.fetch_max(m, SeqCst);
                        total.fetch_sub(1, SeqCst);
                        per_key[k as usize].fetch_sub(1, SeqCst);
                        drop(p);
                    }
                }
            });
        }
    });
    assert!(high_key.load(SeqCst) <= 2, "{}", high_key.load(SeqCst));
    assert!(high_total.load(SeqCst) <= 4, "at most 2 keys × 2");
    assert!(t.keys() <= 2);
    assert_eq!(t.snapshot().in_flight, 0);
}

#[test]
fn bad_settings_name_the_builder_method() {
    let field =
        |b: palisade_bulkhead::keyed::KeyedBulkheadBuilder| b.build::<u8>().unwrap_err().field();
    assert_eq!(
        field(KeyedBulkhead::builder().max_concurrent_calls(0)),
        "max_concurrent_calls"
    );
    assert_eq!(
        field(KeyedBulkhead::builder().per_key_limit(0)),
        "per_key_limit"
    );
    assert_eq!(
        field(
            KeyedBulkhead::builder()
                .max_concurrent_calls(5)
                .per_key_limit(6)
        ),
        "per_key_limit"
    );
    assert_eq!(field(KeyedBulkhead::builder().max_keys(0)), "max_keys");
    assert_eq!(field(KeyedBulkhead::builder().name("")), "name");
}

#[test]
fn a_new_key_the_shared_limit_refuses_does_not_keep_a_slot() {
    let clock = ManualClock::new();
    let bulkhead = KeyedBulkhead::builder()
        .max_concurrent_calls(5)
        .per_key_limit(2)
        .max_keys(10)
        .clock(clock.shared())
        .build()
        .unwrap();
    let held: Vec<_> = ["a", "a", "b", "b", "c"]
        .iter()
        .map(|k| bulkhead.try_acquire(&key(k)).unwrap())
        .collect();
    assert_eq!(bulkhead.keys(), 3);
    // The shared limit is full: each newcomer is refused and leaves no key.
    for k in ["d", "e", "f"] {
        assert_eq!(bulkhead.try_acquire(&key(k)).unwrap_err().reason(), "full");
    }
    assert_eq!(bulkhead.keys(), 3);
    drop(held);
}
