use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use super::*;

fn entry(policy: &mut Policy<u64, ()>, key: u64) -> Arc<Entry<u64, ()>> {
    weighing(policy, key, 1)
}

/// An entry of `key` that weighs `weight`, in a slot reserved for it.
fn weighing(policy: &mut Policy<u64, ()>, key: u64, weight: u32) -> Arc<Entry<u64, ()>> {
    let slot = policy.reserve();
    entry_in(slot, key, weight)
}

/// A new entry (or value) of `key` for slot `slot`.
fn entry_in(slot: u32, key: u64, weight: u32) -> Arc<Entry<u64, ()>> {
    Arc::new(Entry {
        key,
        value: (),
        hash: test_hash(key),
        slot,
        weight,
        written_at: 0,
        expires_at: NEVER,
        accessed_at: AtomicU64::new(0),
        refreshing: AtomicBool::new(false),
        mark: AtomicU64::new(0),
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
    test_hash(key) as u32
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
            mark: AtomicU64::new(0),
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
    /// The weight of every entry (1: a cache bounded by its entry count).
    weight: u32,
}

impl Replay {
    fn new(capacity: u64) -> Self {
        Self::weighed(capacity, 1)
    }

    fn weighed(capacity: u64, weight: u32) -> Self {
        Self {
            policy: Policy::new(capacity, 0, 0, 0),
            slots: std::collections::HashMap::new(),
            removed: Vec::new(),
            weight,
        }
    }

    /// Requests `key`; whether it was a hit.
    fn request(&mut self, key: u64) -> bool {
        if let Some(&slot) = self.slots.get(&key) {
            self.policy.record_read(slot, key_tag(key));
            return true;
        }
        let e = weighing(&mut self.policy, key, self.weight);
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
/// `2 × reuse` requests apart, and never again (as in the Corda vault trace).
/// Even requests bring a new key, odd ones the key brought `reuse` keys ago.
/// Between a key's two requests come `2 × reuse - 1` others, so an LRU of
/// `2 × reuse` entries hits every second request; a W-TinyLFU whose window
/// is smaller hits almost none, since the main space turns away every
/// newcomer (its history is empty).
fn twice_then_never(i: u64, reuse: u64) -> u64 {
    if i.is_multiple_of(2) || i / 2 < reuse {
        i / 2 + 1_000_000
    } else {
        i / 2 - reuse + 1_000_000
    }
}

#[test]
fn a_recency_heavy_workload_grows_the_window_to_lrus_hit_ratio() {
    // 1,000 entries, replicated whole by the climber; the window starts at
    // 1 % (10). LRU needs 200 entries here and hits every second request.
    let mut replay = Replay::new(1_000);
    let request = |i| twice_then_never(i, 100);
    // Full after 2,000 requests; from there a window under 200 entries hits
    // almost nothing.
    replay.hits((0..2_000).map(request));
    let early = replay.hits((2_000..12_000).map(request));
    // About 1 %, against LRU's 50 %.
    assert!(early < 10_000 / 50, "{early} hits in 10,000 requests");
    assert!(replay.policy.window_max() < 200);
    // Within 50,000 requests the climber has found a window past 200.
    replay.hits((12_000..50_000).map(request));
    assert!(replay.policy.window_max() >= 200);
    // From there on the cache hits every second request, as LRU does.
    let later = replay.hits((50_000..70_000).map(request));
    assert_eq!(later, 10_000);
}

#[test]
fn a_large_cache_judges_on_a_share_of_its_keys_and_adapts_too() {
    // 20,000 entries: the replicas follow 1,024 entries' worth of the keys
    // (5 %). LRU needs 2,000 entries here; the window starts at 200.
    let mut replay = Replay::new(20_000);
    let request = |i| twice_then_never(i, 1_000);
    replay.hits((0..40_000).map(request));
    let early = replay.hits((40_000..140_000).map(request));
    assert!(early < 100_000 / 100, "{early} hits in 100,000 requests");
    // Within 1,000,000 requests (50 times the capacity) every second request hits.
    replay.hits((140_000..1_000_000).map(request));
    let later = replay.hits((1_000_000..1_100_000).map(request));
    assert_eq!(later, 50_000);
}

#[test]
fn a_weighed_cache_samples_by_its_entry_count_once_full() {
    // Weight 100 each, 1,000,000 in all: 10,000 entries when full.
    let mut policy = Policy::new(1_000_000, 0, 0, 0);
    let mut out = Vec::new();
    // Made as if every entry weighed 1: a share of 1,024 in 1,000,000.
    assert_eq!(policy.climber.sample(), (4_398_046, 1_024));
    for key in 0..10_000 {
        let e = weighing(&mut policy, key, 100);
        policy.add(e);
        policy.evict(&mut out);
    }
    assert!(out.is_empty());
    // Full: 1,024 entries of 10,000, and the replicas' capacity in weight to match.
    assert_eq!(policy.climber.sample(), (439_804_651, 102_400));
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
    assert_eq!(policy.segments.protected_weight_and_max(), (79, 79));
    let heavier = Arc::new(Entry {
        weight: 10,
        slot: slots[5],
        ..Arc::into_inner(weighing(&mut policy, 5, 1)).unwrap()
    });
    policy.update(heavier);
    // 88 would be protected; the oldest protected keys go back to probation.
    assert_eq!(policy.segments.protected_weight_and_max().0, 79);
    assert!(policy.segments.in_probation(slots[0]));
}

#[test]
fn a_weighed_recency_heavy_workload_grows_the_window_when_weights_do_not_divide_the_capacity() {
    // The recency test's workload on 1,000 entries of weight 3 in a
    // capacity of 3,001 (not 3,000): replicated whole; a replica's weight
    // after an eviction is at most 3,000, never its maximum, and it must
    // count as full all the same, or the window stays at 1 % for good.
    let mut replay = Replay::weighed(3_001, 3);
    let request = |i| twice_then_never(i, 100);
    replay.hits((0..50_000).map(request));
    assert!(
        replay.policy.window_max() >= 600,
        "window {} after 50,000 requests",
        replay.policy.window_max()
    );
    let later = replay.hits((50_000..70_000).map(request));
    assert_eq!(later, 10_000);
}

/// Whether a reader would leave this hit out of the read buffer, as
/// `Cache::get_hashed` decides with what the last maintenance published.
fn skipped(policy: &Policy<u64, ()>, slot: u32) -> bool {
    let entry = policy.entries[slot as usize].as_ref().unwrap();
    (entry.hash >> 32) >= policy.sampled_below()
        && entry.mark.load(Ordering::Relaxed) > policy.recent_after()
}

#[test]
fn only_entries_of_the_protected_segment_are_ever_marked_recent() {
    // Hot and cold keys, updates, removals and forced climbs of the window
    // (by 1,200 entries, to 61 % of the capacity, and back), with readers skipping
    // what the policy says they may: after every step, an entry marked
    // above the threshold is in the protected segment, so no hit that would promote
    // an entry out of probation, or reorder the window, is ever left out.
    let capacity = 2_000;
    let mut policy: Policy<u64, ()> = Policy::new(capacity, 0, 0, 0);
    let mut slots = std::collections::HashMap::new();
    let mut removed = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut skips, mut recorded) = (0u64, 0u64);
    for step in 0..30_000u32 {
        // Mostly keys that fit, so that the protected segment fills.
        let key = if rng.u8(..100) < 85 {
            rng.u64(..2_500)
        } else {
            rng.u64(..20_000)
        };
        match rng.u8(..100) {
            0 => {
                if let Some(slot) = slots.remove(&key) {
                    policy.remove(slot);
                }
            }
            2..=4 => {
                if let Some(&slot) = slots.get(&key) {
                    let e = entry_in(slot, key, 1);
                    policy.update(e);
                }
            }
            _ => {
                if let Some(&slot) = slots.get(&key) {
                    if skipped(&policy, slot) {
                        skips += 1;
                    } else {
                        recorded += 1;
                        policy.record_read(slot, key_tag(key));
                    }
                } else {
                    let e = entry(&mut policy, key);
                    slots.insert(key, e.slot);
                    policy.add(e);
                    policy.evict(&mut removed);
                    for r in removed.drain(..) {
                        slots.remove(&r.entry.key);
                    }
                }
            }
        }
        if step % 7_919 == 0 {
            // Much of the capacity to the window (demoting most of the
            // protected segment at once), or back.
            policy
                .segments
                .climb(if step % 2 == 0 { 1_200 } else { -1_200 });
        }
        // Marks, not `skipped`: the climber's sampled keys are never
        // skipped, but their marks obey the same rule.
        let recent_after = policy.recent_after();
        for &slot in slots.values() {
            let mark = policy.entries[slot as usize]
                .as_ref()
                .unwrap()
                .mark
                .load(Ordering::Relaxed);
            if mark > recent_after {
                assert!(policy.segments.is_protected(slot), "step {step}");
            }
        }
    }
    // The shortcut is taken, and not for every hit.
    assert!(
        skips > 2_000 && recorded > 2_000,
        "{skips} skipped, {recorded} recorded"
    );
}

/// A cache of 2,000 entries, filled, then every key read once: the 1,980
/// keys in probation are promoted in turn (the protected segment keeping
/// the newest 1,584 of them; key k's promotion is the (k + 1)-th mark), the
/// 20 in the window stay there.
fn promoted_in_turn() -> Replay {
    let mut replay = Replay::new(2_000);
    for key in 0..2_000 {
        replay.request(key);
    }
    for key in 0..2_000 {
        replay.request(key);
    }
    assert_eq!(replay.policy.segments.protected_len(), 1_584);
    assert_eq!(replay.policy.marks, 1_980);
    replay
}

fn mark_of(replay: &Replay, key: u64) -> u64 {
    let slot = replay.slots[&key];
    replay.policy.entries[slot as usize]
        .as_ref()
        .unwrap()
        .mark
        .load(Ordering::Relaxed)
}

#[test]
fn a_read_of_a_protected_entry_is_skipped_until_it_is_demoted() {
    let mut replay = promoted_in_turn();
    let mark = |replay: &Replay, key| mark_of(replay, key);
    assert_eq!(mark(&replay, 1_979), 1_980);
    assert_eq!(mark(&replay, 396), 397, "the oldest protected entry");
    assert_eq!(mark(&replay, 395), 396);
    assert!(
        replay.policy.segments.in_probation(replay.slots[&395]),
        "demoted"
    );
    assert_eq!(mark(&replay, 1_999), 0, "a window entry is never marked");
    // 1,980 marks less the 1,584 entries the segment holds: keys 396 to
    // 1,979, the segment's entries, are marked recent; key 395 is not.
    assert_eq!(replay.policy.recent_after(), 396);
    // Of those, the keys the climber samples are still recorded, the others skipped.
    let policy = &replay.policy;
    let sampled = |key: u64| (test_hash(key) >> 32) < policy.sampled_below();
    let skips: Vec<u64> = (0..2_000)
        .filter(|key| skipped(policy, replay.slots[key]))
        .collect();
    let expected: Vec<u64> = (396..1_980).filter(|&key| !sampled(key)).collect();
    assert_eq!(skips, expected);
    assert!(expected.len() > 500 && expected.len() < 1_584 - 500);
    // A read of key 395 promotes it again, which demotes key 396, the
    // segment's oldest: from then on 396 is recorded, 395 may skip.
    replay.request(395);
    assert!(replay.policy.segments.in_probation(replay.slots[&396]));
    assert_eq!(mark(&replay, 395), 1_981);
    assert_eq!(replay.policy.recent_after(), 397);
    assert!(mark(&replay, 396) <= replay.policy.recent_after());
}

#[test]
fn a_value_replaced_in_probation_is_promoted_with_a_mark_and_demotes_the_oldest_past_the_threshold()
{
    // The update promotes key 0's entry, which demotes key 396: without a
    // mark for the promotion the threshold would stay at 396, and key 396,
    // now in probation with mark 397, would be skipped.
    let mut replay = promoted_in_turn();
    let slot = replay.slots[&0];
    assert!(replay.policy.segments.in_probation(slot));
    replay.policy.update(entry_in(slot, 0, 1));
    assert!(replay.policy.segments.is_protected(slot));
    assert!(replay.policy.segments.in_probation(replay.slots[&396]));
    assert_eq!(mark_of(&replay, 0), 1_981);
    assert_eq!(mark_of(&replay, 396), 397);
    assert_eq!(replay.policy.recent_after(), 397);
}

#[test]
fn the_sketch_keeps_at_least_two_words_per_entry_and_does_not_grow_past_the_maximum() {
    // 3,000 entries: 8,192 words (the power of two at or above 6,000),
    // not 4,096, which would be one word and a third per entry.
    let mut replay = Replay::new(3_000);
    for key in 0..3_000 {
        replay.request(key);
        let (sketch_bytes, _) = replay.policy.segments.heap_bytes();
        assert!(sketch_bytes / 8 >= 2 * replay.policy.len() as usize);
    }
    assert_eq!(replay.policy.segments.heap_bytes().0, 8_192 * 8);
    // Full: newcomers (each one over the maximum until evicted) leave it.
    for key in 3_000..10_000 {
        replay.request(key);
    }
    assert_eq!(replay.policy.segments.heap_bytes().0, 8_192 * 8);
}
