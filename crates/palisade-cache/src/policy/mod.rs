//! The admission and eviction policy: adaptive W-TinyLFU.
//!
//! New entries enter a small LRU *window*. An entry pushed out of the window
//! is a *candidate* for the main space, an SLRU of *probation* and *protected*
//! segments; it gets in only if the frequency sketch says it is more popular
//! than the entry it would evict (the probation segment's oldest). A hit in
//! probation promotes to protected. The [`Climber`] moves the boundary between
//! window and main: a big window suits recency-heavy workloads, a tiny one
//! frequency-heavy workloads and loops.
//!
//! The segments' state machine is [`Segments`], over slot indices; this
//! type keeps the entries and their expiry timers beside it, and the
//! climber's replicas ([`shadow`]) run the same [`Segments`] on hashes.
//!
//! The policy runs under the cache's maintenance lock; readers never touch it
//! directly but leave their hits in the read buffer.

mod climber;
mod list;
mod segments;
mod shadow;
mod sketch;
mod wheel;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::entry::{Entry, NEVER};
use crate::event::RemovalCause;
use climber::Climber;
use list::{Links, NIL};
use segments::Segments;
use wheel::{Filed, TimerWheel};

/// An entry the policy took out, and why; the cache removes it from its map.
#[derive(Debug)]
pub(crate) struct Removed<K, V> {
    pub(crate) entry: Arc<Entry<K, V>>,
    pub(crate) cause: RemovalCause,
}

#[derive(Debug)]
pub(crate) struct Policy<K, V> {
    segments: Segments,
    /// By slot, beside the segments' own state: the entry, its timer links
    /// and where the timer wheel filed it.
    entries: Vec<Option<Arc<Entry<K, V>>>>,
    timer_links: Vec<Links>,
    filed: Vec<Filed>,
    climber: Climber,
    /// Whether the weight has reached the maximum once (see [`Self::observe`]).
    filled: bool,
    /// Marks given so far (see [`Self::stamp`]): the clock of [`Entry::mark`].
    marks: u64,
    evicted: Vec<u32>,
    wheel: TimerWheel,
    /// Time to idle, ns (0: none).
    tti: u64,
    /// How long an expired entry is kept for stale-if-error, ns.
    keep_stale: u64,
    due: Vec<u32>,
}

impl<K, V> Policy<K, V> {
    pub(crate) fn new(max: u64, tti: u64, keep_stale: u64, now: u64) -> Self {
        let window = max / 100;
        Self {
            segments: Segments::new(max, window),
            entries: Vec::new(),
            timer_links: Vec::new(),
            filed: Vec::new(),
            // Sized as if every entry weighed 1; `observe` corrects that
            // once the cache is full.
            climber: Climber::new(max, max, window),
            filled: false,
            marks: 0,
            evicted: Vec::new(),
            wheel: TimerWheel::new(now),
            tti,
            keep_stale,
            due: Vec::new(),
        }
    }

    /// The total weight of the entries held (their count when unweighted).
    pub(crate) fn weighted_size(&self) -> u64 {
        self.segments.weighted_size()
    }

    /// The number of entries held.
    pub(crate) fn len(&self) -> u64 {
        self.segments.len()
    }

    /// The window's current share of the capacity, in units of weight.
    pub(crate) fn window_max(&self) -> u64 {
        self.segments.window_max()
    }

    /// Reserves a slot for a new entry, before the entry is made.
    pub(crate) fn reserve(&mut self) -> u32 {
        let idx = self.segments.reserve();
        if idx as usize == self.entries.len() {
            self.entries.push(None);
            self.timer_links.push(Links::UNLINKED);
            self.filed.push(None);
        }
        idx
    }

    /// Gives back a slot reserved for an entry that was not stored.
    #[cfg(test)]
    pub(crate) fn release(&mut self, idx: u32) {
        self.segments.release(idx);
    }

    /// Adds a new entry in its reserved slot: it enters the window.
    pub(crate) fn add(&mut self, entry: Arc<Entry<K, V>>) {
        let idx = entry.slot;
        let hash = entry.hash;
        let deadline = entry.deadline(self.tti);
        self.segments.add(idx, hash, u64::from(entry.weight));
        self.entries[idx as usize] = Some(entry);
        self.file(idx, deadline);
        self.observe(hash, idx);
    }

    /// Puts a new value in the slot of the key's current entry.
    pub(crate) fn update(&mut self, entry: Arc<Entry<K, V>>) -> Option<Arc<Entry<K, V>>> {
        let idx = entry.slot;
        let deadline = entry.deadline(self.tti);
        if !self.segments.update(idx, u64::from(entry.weight)) {
            return None;
        }
        let old = self.entries[idx as usize].replace(entry);
        self.stamp(idx);
        self.unfile(idx);
        self.file(idx, deadline);
        old
    }

    /// Takes the entry in slot `idx` out of the policy.
    pub(crate) fn remove(&mut self, idx: u32) -> Option<Arc<Entry<K, V>>> {
        if !self.segments.remove(idx) {
            return None;
        }
        self.unfile(idx);
        self.entries[idx as usize].take()
    }

    /// Records a read hit left in the read buffer as `(slot, low 32 bits of the hash)`.
    /// A slot reused by another key since the read is recognised and skipped.
    pub(crate) fn record_read(&mut self, idx: u32, tag: u32) {
        if let Some(hash) = self.segments.record_read(idx, tag) {
            self.stamp(idx);
            self.observe(hash, idx);
        }
    }

    /// Gives the entry in slot `idx`, just moved to the back of its
    /// segment, the next mark if that segment is the protected one: every
    /// move to the protected segment's back takes a mark of its own.
    fn stamp(&mut self, idx: u32) {
        if self.segments.is_protected(idx)
            && let Some(entry) = &self.entries[idx as usize]
        {
            self.marks += 1;
            entry.mark.store(self.marks, Ordering::Relaxed);
        }
    }

    /// A read of an entry whose [`Entry::mark`] is above this may skip the
    /// read buffer: the entry is in the protected segment, among the entries
    /// most recently moved to its back, where recording the read would move
    /// it back a little further and count it once more in the sketch.
    ///
    /// Every entry outside the segment has a mark at most this, the last
    /// mark less the segment's length, since every step keeps it so: a new
    /// entry (and a replaced value's) starts at 0; a promotion gives a new
    /// mark and lengthens the segment by one; a move to the back gives a
    /// new mark; an entry that leaves the segment leaves from its front,
    /// with the lowest of the segment's distinct marks, which is at most
    /// the new threshold, and a removal only raises it. So an entry demoted
    /// to probation, whose next hit must promote it, is never skipped.
    ///
    /// A read of a key the climber samples ([`Self::sampled_below`]) is
    /// always recorded, so that the climber's replicas see every request of
    /// their share, as they would without this shortcut.
    pub(crate) fn recent_after(&self) -> u64 {
        self.marks
            .saturating_sub(u64::from(self.segments.protected_len()))
    }

    /// Reads of keys whose hash's high half is below this are always
    /// recorded: they feed the climber's replicas.
    pub(crate) fn sampled_below(&self) -> u64 {
        self.climber.sampled_below()
    }

    /// Shows a request (a hit, or the insert of a miss) to the climber if
    /// its key is in the climber's sample.
    #[inline]
    fn observe(&mut self, hash: u64, idx: u32) {
        if !self.filled {
            self.fill_check();
        }
        if self.climber.samples(hash) {
            self.climb(hash, idx);
        }
    }

    fn climb(&mut self, hash: u64, idx: u32) {
        let amount =
            self.climber
                .record(hash, self.segments.weight(idx), self.segments.window_max());
        if amount != 0 {
            self.segments.climb(amount);
        }
    }

    /// Once the cache is full, its entry count tells how many keys the
    /// climber's replicas should follow; if the entries are weighed, that is
    /// not the capacity the climber was made for, and it starts again.
    #[cold]
    fn fill_check(&mut self) {
        let segments = &self.segments;
        if segments.weighted_size() < segments.max() {
            return;
        }
        self.filled = true;
        if segments.len() != segments.weighted_size() {
            self.climber = Climber::new(segments.max(), segments.len(), segments.window_max());
        }
    }

    /// Evicts until the weight is within the maximum (see [`Segments::evict`]).
    pub(crate) fn evict(&mut self, out: &mut Vec<Removed<K, V>>) {
        self.segments.evict(&mut self.evicted);
        let mut evicted = std::mem::take(&mut self.evicted);
        for idx in evicted.drain(..) {
            self.unfile(idx);
            if let Some(entry) = self.entries[idx as usize].take() {
                out.push(Removed {
                    entry,
                    cause: RemovalCause::Size,
                });
            }
        }
        self.evicted = evicted;
    }

    /// Takes slot `idx` out of the timer wheel.
    fn unfile(&mut self, idx: u32) {
        self.wheel
            .unschedule(&mut self.timer_links, idx, self.filed[idx as usize].take());
    }

    /// Files slot `idx` in the timer wheel if its entry expires.
    fn file(&mut self, idx: u32, deadline: u64) {
        if deadline != NEVER {
            let reclaim_at = deadline.saturating_add(self.keep_stale);
            self.filed[idx as usize] =
                Some(self.wheel.schedule(&mut self.timer_links, idx, reclaim_at));
        }
    }

    /// Takes out every entry whose deadline (plus the stale allowance) has passed.
    pub(crate) fn expire(&mut self, now: u64, out: &mut Vec<Removed<K, V>>) {
        let mut due = std::mem::take(&mut self.due);
        self.wheel.advance(now, &mut due);
        for &head in &due {
            let mut at = head;
            while at != NIL {
                let next = self.timer_links[at as usize].next;
                self.timer_links[at as usize] = Links::UNLINKED;
                self.filed[at as usize] = None;
                let deadline = self.entries[at as usize]
                    .as_ref()
                    .map_or(NEVER, |e| e.deadline(self.tti));
                if deadline.saturating_add(self.keep_stale) <= now {
                    if let Some(entry) = self.remove(at) {
                        out.push(Removed {
                            entry,
                            cause: RemovalCause::Expired,
                        });
                    }
                } else {
                    self.file(at, deadline);
                }
                at = next;
            }
        }
        due.clear();
        self.due = due;
    }

    /// Every entry held, for `invalidate_all` and iteration.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Arc<Entry<K, V>>> {
        self.entries.iter().flatten()
    }
}

/// A well-mixed hash of a test's key (a Fibonacci multiplication), as the
/// cache's hasher would give.
#[cfg(test)]
fn test_hash(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

#[cfg(test)]
mod tests;
