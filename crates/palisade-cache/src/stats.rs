//! Counters of what the cache did, kept per thread stripe so that counting a
//! hit does not make two cores fight over one cache line.

use std::sync::atomic::{AtomicU64, Ordering};

use palisade_core::CachePadded;

use crate::event::RemovalCause;
use crate::stripe::{stripe_count, thread_hint};

/// One stripe of counters.
#[derive(Debug, Default)]
struct Cells {
    hits: AtomicU64,
    misses: AtomicU64,
    stale_hits: AtomicU64,
    loads: AtomicU64,
    load_failures: AtomicU64,
    load_nanos: AtomicU64,
    /// Size, expired, explicit, replaced.
    removals: [AtomicU64; 4],
}

#[derive(Debug)]
pub(crate) struct StatsCounter {
    stripes: Box<[CachePadded<Cells>]>,
    mask: usize,
}

fn cause_index(cause: RemovalCause) -> usize {
    match cause {
        RemovalCause::Size => 0,
        RemovalCause::Expired => 1,
        RemovalCause::Explicit => 2,
        RemovalCause::Replaced => 3,
    }
}

impl StatsCounter {
    pub(crate) fn new() -> Self {
        let stripes = stripe_count(1);
        Self {
            stripes: (0..stripes).map(|_| CachePadded::default()).collect(),
            mask: stripes - 1,
        }
    }

    #[inline]
    fn cells(&self) -> &Cells {
        &self.stripes[thread_hint() & self.mask]
    }

    /// A hit not left in the read buffer: on an entry the policy moved to
    /// the protected segment recently (see `Policy::recent_after`), or with
    /// the buffer full and the maintenance lock busy. Every other hit is
    /// counted as the buffer is drained. Returns how many such hits this
    /// stripe had counted before.
    #[inline]
    pub(crate) fn unbuffered_hit(&self) -> u64 {
        self.cells().hits.fetch_add(1, Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn miss(&self) {
        self.cells().misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stale_hit(&self) {
        self.cells().stale_hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn load(&self, ok: bool, nanos: u64) {
        let cells = self.cells();
        if ok {
            cells.loads.fetch_add(1, Ordering::Relaxed);
        } else {
            cells.load_failures.fetch_add(1, Ordering::Relaxed);
        }
        cells.load_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(crate) fn removal(&self, cause: RemovalCause) {
        self.cells().removals[cause_index(cause)].fetch_add(1, Ordering::Relaxed);
    }

    /// Sums the stripes (hits: only the unbuffered ones).
    pub(crate) fn snapshot(&self) -> CacheStats {
        let mut s = CacheStats::default();
        for cells in &*self.stripes {
            let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
            s.hits += get(&cells.hits);
            s.misses += get(&cells.misses);
            s.stale_hits += get(&cells.stale_hits);
            s.loads += get(&cells.loads);
            s.load_failures += get(&cells.load_failures);
            s.total_load_nanos += get(&cells.load_nanos);
            s.evicted_size += get(&cells.removals[0]);
            s.expired += get(&cells.removals[1]);
            s.invalidated += get(&cells.removals[2]);
            s.replaced += get(&cells.removals[3]);
        }
        s
    }
}

/// What a cache has done since it was built; from [`Cache::stats`](crate::Cache::stats).
///
/// Counters only grow. Under concurrent use a snapshot is a sum of per-thread
/// counters read one after the other, so it may be a few events behind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Lookups that found a live value.
    pub hits: u64,
    /// Lookups that found no live value.
    pub misses: u64,
    /// Expired values served because a reload failed or was slow (stale-if-error).
    pub stale_hits: u64,
    /// Loads that produced a value.
    pub loads: u64,
    /// Loads that failed, timed out, panicked, or whose caller gave up on them.
    pub load_failures: u64,
    /// Time spent in loads, in nanoseconds.
    pub total_load_nanos: u64,
    /// Entries evicted to stay within capacity.
    pub evicted_size: u64,
    /// Entries removed because they expired.
    pub expired: u64,
    /// Entries removed by `invalidate`, `invalidate_all` or a remote invalidation.
    pub invalidated: u64,
    /// Entries replaced by a new value for their key.
    pub replaced: u64,
}

impl CacheStats {
    /// Hits over lookups, 0.0 to 1.0 (1.0 when there were none).
    pub fn hit_rate(&self) -> f64 {
        let requests = self.hits + self.misses;
        if requests == 0 {
            1.0
        } else {
            self.hits as f64 / requests as f64
        }
    }

    /// Entries the cache dropped by itself: size evictions plus expirations.
    pub fn evictions(&self) -> u64 {
        self.evicted_size + self.expired
    }
}
