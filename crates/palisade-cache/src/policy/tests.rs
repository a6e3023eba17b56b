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

/// A cache-aside replay straight into the policy, as the cache drives it: a
/// hit is a read recorded, a miss adds the key and evicts.
struct Replay {
    policy: Policy<u64, ()>,
    slots: std::collections::HashMap<u64, u32>,
    removed: Vec<Removed<u64, ()>>,
}

impl Replay {
    fn new(capacity: u64) -> Self {
        Self {
            policy: Policy::new(capacity, 0, 0, 0),
            slots: std::collections::HashMap::new(),
            removed: Vec::new(),
        }
    }

    /// Requests `key`; whether it was a hit.
    fn request(&mut self, key: u64) -> bool {
        if let Some(&slot) = self.slots.get(&key) {
            self.policy.record_read(slot, key_tag(key));
            return true;
        }
        let e = entry(&mut self.policy, key);
        self.slots.insert(key, e.slot);
        self.policy.add(e);
        self.policy.evict(&mut self.removed);
        for r in self.removed.drain(..) {
            self.slots.remove(&r.entry.key);
        }
        false
    }

    /// Requests every key of `keys`; how many were hits.
    fn hits(&mut self, keys: impl IntoIterator<Item = u64>) -> usize {
        keys.into_iter().filter(|&k| self.request(k)).count()
    }
}

/// Request `i` of a recency-heavy workload: every key is requested twice,
/// `2 × REUSE` requests apart, and never again (as in the Corda vault trace).
/// Even requests bring a new key, odd ones the key brought `REUSE` keys ago.
/// An LRU of more than `2 × REUSE` entries hits every second request.
fn twice_then_never(i: u64) -> u64 {
    const REUSE: u64 = 100;
    if i.is_multiple_of(2) || i / 2 < REUSE {
        i / 2 + 1_000_000
    } else {
        i / 2 - REUSE + 1_000_000
    }
}

#[test]
fn a_recency_heavy_workload_grows_the_window_to_lrus_hit_ratio() {
    // 1,000 entries: a sample is 20,000 requests, a step 62 entries.
    let mut replay = Replay::new(1_000);
    // The cache is full after 2,000 requests; the climber's first sample
    // runs from there, with the 1 % window (10 entries). A key comes back
    // after 200 others, long out of the window, and the main space turns
    // away every newcomer (its history is empty): under 1 % of the requests
    // hit, where LRU hits 50 %.
    replay.hits((0..12_000).map(twice_then_never));
    let first_sample = replay.hits((12_000..22_000).map(twice_then_never));
    assert!(first_sample < 100, "{first_sample} hits in 10,000 requests");
    assert_eq!(
        replay.policy.window_max(),
        10 + 62,
        "the first move grows the window"
    );
    // Three more samples take the window past the 200 entries between the
    // two requests of a key (LRU needs as many): the hit rate is flat (under
    // 1 %) until then, and the climber keeps growing the window through it.
    replay.hits((22_000..82_000).map(twice_then_never));
    assert_eq!(replay.policy.window_max(), 240);
    // From there on the cache hits every second request, as LRU does (less
    // the few that come back just after their first request left the window
    // in the sample that grew it past 200).
    let later = replay.hits((82_000..102_000).map(twice_then_never));
    assert!(later >= 9_990, "{later} hits in 20,000 requests");
    let then = replay.hits((102_000..122_000).map(twice_then_never));
    assert_eq!(then, 10_000);
}

#[test]
fn a_large_cache_moves_its_window_every_100_000_requests() {
    // 20,000 entries: the sketch's sample, 10 × capacity, is 200,000
    // requests; the climber's is capped at 100,000.
    let mut replay = Replay::new(20_000);
    replay.hits(0..19_999);
    assert_eq!(replay.policy.window_max(), 200);
    // Requests of new keys, all misses; the sample starts with the one that
    // fills the cache, the 20,000th.
    replay.hits(19_999..119_998);
    assert_eq!(replay.policy.window_max(), 200);
    replay.request(119_998);
    assert_eq!(replay.policy.window_max(), 200 + 1_250);
}

#[test]
fn an_update_that_makes_a_protected_entry_heavier_keeps_the_protected_share() {
    let mut policy = Policy::new(100, 0, 0, 0);
    let mut out = Vec::new();
    let mut slots = Vec::new();
    for key in 0..100 {
        let e = entry(&mut policy, key);
        slots.push(e.slot);
        policy.add(e);
        policy.evict(&mut out);
    }
    // Keys 0 to 78 are read once: promoted, they fill the protected share (79).
    for key in 0..79 {
        policy.record_read(slots[key as usize], key_tag(key));
    }
    assert_eq!((policy.protected_weight, policy.protected_max), (79, 79));
    let heavier = Arc::new(Entry {
        weight: 10,
        slot: slots[5],
        ..Arc::into_inner(entry(&mut policy, 5)).unwrap()
    });
    policy.update(heavier);
    // 88 would be protected; the oldest protected keys go back to probation.
    assert_eq!(policy.protected_weight, 79);
    assert_eq!(policy.meta[slots[0] as usize].region, Region::Probation);
}
