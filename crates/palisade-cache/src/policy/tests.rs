use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use super::*;

fn entry(policy: &mut Policy<u64, ()>, key: u64) -> Arc<Entry<u64, ()>> {
    let slot = policy.reserve();
    Arc::new(Entry {
        key,
        value: (),
        hash: key.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        slot,
        weight: 1,
        written_at: 0,
        expires_at: NEVER,
        accessed_at: AtomicU64::new(0),
        refreshing: AtomicBool::new(false),
    })
}

fn keys(out: &[Removed<u64, ()>]) -> Vec<u64> {
    out.iter().map(|r| r.entry.key).collect()
}

#[test]
fn a_popular_main_entry_is_kept_over_a_one_hit_candidate() {
    let mut policy = Policy::new(100, 0, 0, 0);
    let mut out = Vec::new();
    let mut slots = Vec::new();
    for key in 0..100 {
        let e = entry(&mut policy, key);
        slots.push(e.slot);
        policy.add(e);
        policy.evict(&mut out);
    }
    assert!(out.is_empty());
    // Key 0 is now in probation; make it popular.
    for _ in 0..5 {
        policy.record_read(slots[0], key_tag(0));
    }
    // A stream of one-hit keys: each one loses against the popular or
    // equally unpopular victims and is evicted itself.
    for key in 100..200 {
        let e = entry(&mut policy, key);
        policy.add(e);
        policy.evict(&mut out);
        assert_eq!(policy.len(), 100);
    }
    assert_eq!(out.len(), 100);
    assert!(!keys(&out).contains(&0), "the popular key was evicted");
}

fn key_tag(key: u64) -> u32 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15) as u32
}

#[test]
fn the_weight_never_exceeds_the_maximum_after_eviction() {
    let mut policy = Policy::new(10, 0, 0, 0);
    let mut out = Vec::new();
    for key in 0..1_000u64 {
        let e = entry(&mut policy, key % 37);
        if out
            .iter()
            .any(|r: &Removed<u64, ()>| r.entry.key == key % 37)
            || key < 37
        {
            policy.add(e);
        } else {
            policy.release(e.slot);
        }
        policy.evict(&mut out);
        assert!(policy.weighted_size() <= 10);
        out.retain(|r| r.entry.key != key % 37);
    }
}

#[test]
fn expired_entries_come_out_of_the_wheel_with_their_cause() {
    let mut policy: Policy<u64, ()> = Policy::new(100, 0, 0, 0);
    let mut out = Vec::new();
    for (key, ttl_ms) in [(1u64, 10u64), (2, 2_000), (3, 90_000)] {
        let slot = policy.reserve();
        policy.add(Arc::new(Entry {
            key,
            value: (),
            hash: key,
            slot,
            weight: 1,
            written_at: 0,
            expires_at: ttl_ms * 1_000_000,
            accessed_at: AtomicU64::new(0),
            refreshing: AtomicBool::new(false),
        }));
    }
    let ms = 1_000_000;
    policy.expire(9 * ms, &mut out);
    assert!(out.is_empty());
    policy.expire(40 * ms, &mut out);
    assert_eq!(keys(&out), vec![1]);
    assert_eq!(out[0].cause, RemovalCause::Expired);
    policy.expire(1_999 * ms, &mut out);
    assert_eq!(keys(&out), vec![1]);
    policy.expire(2_100 * ms, &mut out);
    assert_eq!(keys(&out), vec![1, 2]);
    policy.expire(89_000 * ms, &mut out);
    assert_eq!(keys(&out), vec![1, 2]);
    policy.expire(91_000 * ms, &mut out);
    assert_eq!(keys(&out), vec![1, 2, 3]);
    assert_eq!(policy.len(), 0);
}
