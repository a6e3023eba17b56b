//! Palisade's cache against moka 0.12 (`sync::Cache`) and quick_cache 0.7
//! (`sync::Cache`): time per operation on a Zipf key stream. moka runs twice:
//! with its own default hasher (SipHash, `moka`) and with foldhash
//! (`moka_foldhash`), the hasher palisade and quick_cache use.
//!
//! ```text
//! cargo bench -p palisade-benches --bench cache_throughput -- --warm-up-time 1 --measurement-time 2
//! ```
//!
//! Every cache holds at most [`CAPACITY`] `u64 → u64` entries and is filled
//! with the keys `1 ..= CAPACITY` (the hottest ones) before it is timed. The
//! operations come from a precomputed sequence of [`OPS`] requests (so the
//! random number generator is not timed): keys drawn from `rand_distr::Zipf`
//! with exponent [`EXPONENT`] over [`KEYS`] keys, each request a read
//! (`get`) or, with the mix's share, a write (`insert(k, k)`). Reads of keys
//! that are not cached are misses and insert nothing.
//!
//! | group | what one iteration is |
//! |---|---|
//! | `read_100/1_thread` | one request of a read-only stream |
//! | `read_95_write_5/1_thread` | one request, 5% of them writes |
//! | `read_75_write_25/1_thread` | one request, 25% of them writes |
//! | `<mix>/2_threads` | the same, two threads sharing one cache |
//!
//! With two threads each thread makes `iters` requests at once (see
//! [`palisade_benches::concurrent_elapsed`]): the time reported is the
//! wall-clock time per request **per thread**, the cache serving two requests
//! in that time. Each thread walks the sequence from its own starting point.
//!
//! Instructions per request on one thread, for every cache and mix (run on
//! demand, under valgrind):
//!
//! ```text
//! benches/callgrind.sh cache_throughput
//! PALISADE_HASH_SEED=2 benches/callgrind.sh cache_throughput read_100/1_thread/palisade
//! ```
//!
//! palisade hashes its keys with a fixed seed (`PALISADE_HASH_SEED`, default
//! 1; see [`palisade_hash_seed`]); the other caches with their own.
//!
//! With the `count-allocations` feature, two Markdown tables are printed before
//! the groups run: heap allocations per operation (a hit, an insert of a new
//! key into a full cache, an insert replacing a cached key) and the memory
//! a cache of 100,000 entries holds per entry.
//!
//! ```text
//! cargo bench -p palisade-benches --bench cache_throughput --features count-allocations -- allocations
//! ```

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use criterion::{BenchmarkGroup, Criterion, measurement::WallTime};
use palisade_benches::concurrent_elapsed;
use rand::rngs::StdRng;
use rand::{RngExt as _, SeedableRng};
use rand_distr::{Distribution, Zipf};

/// Number of distinct keys the requests are drawn from.
const KEYS: u64 = 100_000;

/// Maximum number of entries of every cache under test.
const CAPACITY: u64 = 10_000;

/// Zipf exponent of the key distribution.
const EXPONENT: f64 = 1.0;

/// Length of the precomputed request sequence (a power of two: the position wraps with a mask).
const OPS: usize = 1 << 20;

/// Seed of the request sequence's `StdRng`.
const SEED: u64 = 42;

/// Distance between the starting points of successive threads in the sequence.
const THREAD_STRIDE: usize = OPS / 2 + 7_919;

/// A read/write mix: its group name and the share of writes, in %.
const MIXES: [(&str, u32); 3] = [
    ("read_100", 0),
    ("read_95_write_5", 5),
    ("read_75_write_25", 25),
];

/// One precomputed request.
#[derive(Debug, Clone, Copy)]
struct Op {
    /// The key read or written.
    key: u64,
    /// `insert(key, key)` when true, `get(&key)` otherwise.
    write: bool,
}

/// [`OPS`] requests: Zipf keys in `1 ..= KEYS`, `write_percent`% of them writes.
fn requests(write_percent: u32) -> Vec<Op> {
    let zipf = Zipf::new(KEYS as f64, EXPONENT).expect("valid Zipf parameters");
    let mut rng = StdRng::seed_from_u64(SEED);
    (0..OPS)
        .map(|_| Op {
            key: zipf.sample(&mut rng) as u64,
            write: rng.random_ratio(write_percent, 100),
        })
        .collect()
}

/// Hands out each thread's starting point in the request sequence.
static NEXT_START: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's position in the request sequence.
    static CURSOR: Cell<usize> = Cell::new(NEXT_START.fetch_add(THREAD_STRIDE, Ordering::Relaxed));
}

/// This thread's next request of `ops`, whose length is a power of two.
#[inline]
fn next_op(ops: &[Op]) -> Op {
    CURSOR.with(|cursor| {
        let i = cursor.get();
        cursor.set(i.wrapping_add(1));
        ops[i & (ops.len() - 1)]
    })
}

// ---- the caches under test -------------------------------------------------------

/// The operations every cache under test offers, so one generic function drives them all.
trait BenchCache: Sync + Sized {
    /// The benchmark function's name.
    const NAME: &'static str;

    /// An empty cache holding at most `capacity` entries.
    fn with_capacity(capacity: u64) -> Self;

    /// `get(&key)`.
    fn lookup(&self, key: u64) -> Option<u64>;

    /// `insert(key, value)`.
    fn store(&self, key: u64, value: u64);

    /// Applies pending work (moka's and palisade's `run_pending_tasks`), outside the timed code.
    fn settle(&self) {}

    /// How many entries the cache holds, after [`BenchCache::settle`].
    #[cfg_attr(
        not(feature = "count-allocations"),
        expect(dead_code, reason = "only the allocation report counts entries")
    )]
    fn held(&self) -> u64;
}

/// palisade's hash seed: `PALISADE_HASH_SEED`, or 1. Fixed, because the
/// climber's replicas follow the keys of a hash-sampled share: which of the
/// hot keys fall in it decides how many requests they replay, so a seed drawn
/// per process moved the instructions per request by up to 20 % between runs
/// (and `benches/callgrind.sh`, which subtracts two runs, by more).
fn palisade_hash_seed() -> u64 {
    std::env::var("PALISADE_HASH_SEED").map_or(1, |seed| {
        seed.parse().unwrap_or_else(|_| {
            panic!("PALISADE_HASH_SEED wants an unsigned integer, got {seed:?}")
        })
    })
}

impl BenchCache for palisade_cache::Cache<u64, u64> {
    const NAME: &'static str = "palisade";

    fn with_capacity(capacity: u64) -> Self {
        palisade_cache::Cache::<u64, u64>::builder()
            .max_capacity(capacity)
            .hash_seed(palisade_hash_seed())
            .build()
            .expect("valid palisade cache configuration")
    }

    #[inline]
    fn lookup(&self, key: u64) -> Option<u64> {
        self.get(&key)
    }

    #[inline]
    fn store(&self, key: u64, value: u64) {
        self.insert(key, value);
    }

    fn settle(&self) {
        self.run_pending_tasks();
    }

    fn held(&self) -> u64 {
        self.entry_count()
    }
}

/// moka with the hasher it ships with (SipHash-1-3, std's `RandomState`), as a
/// user gets it from `Cache::new`.
type MokaSipHash = moka::sync::Cache<u64, u64>;

/// moka with the hasher palisade and quick_cache use (foldhash, hashbrown's
/// `DefaultHashBuilder`), so that the hash function is not the difference.
type MokaFoldhash = moka::sync::Cache<u64, u64, hashbrown::DefaultHashBuilder>;

/// One `BenchCache` impl per moka hasher: they differ in name and constructor only.
macro_rules! moka_bench_cache {
    ($cache:ty, $name:literal, $build:expr) => {
        impl BenchCache for $cache {
            const NAME: &'static str = $name;

            fn with_capacity(capacity: u64) -> Self {
                $build(capacity)
            }

            #[inline]
            fn lookup(&self, key: u64) -> Option<u64> {
                self.get(&key)
            }

            #[inline]
            fn store(&self, key: u64, value: u64) {
                self.insert(key, value);
            }

            fn settle(&self) {
                self.run_pending_tasks();
            }

            fn held(&self) -> u64 {
                self.entry_count()
            }
        }
    };
}

moka_bench_cache!(MokaSipHash, "moka", moka::sync::Cache::new);
moka_bench_cache!(MokaFoldhash, "moka_foldhash", |capacity| {
    moka::sync::Cache::builder()
        .max_capacity(capacity)
        .build_with_hasher(hashbrown::DefaultHashBuilder::default())
});

impl BenchCache for quick_cache::sync::Cache<u64, u64> {
    const NAME: &'static str = "quick_cache";

    fn with_capacity(capacity: u64) -> Self {
        quick_cache::sync::Cache::new(usize::try_from(capacity).expect("capacity fits usize"))
    }

    #[inline]
    fn lookup(&self, key: u64) -> Option<u64> {
        self.get(&key)
    }

    #[inline]
    fn store(&self, key: u64, value: u64) {
        self.insert(key, value);
    }

    fn held(&self) -> u64 {
        self.len() as u64
    }
}

/// A cache of [`CAPACITY`] entries holding the keys `1 ..= CAPACITY`, settled.
fn prefilled<C: BenchCache>() -> C {
    let cache = C::with_capacity(CAPACITY);
    for key in 1..=CAPACITY {
        cache.store(key, key);
    }
    cache.settle();
    cache
}

/// Serves this thread's next request of `ops`.
#[inline]
fn serve<C: BenchCache>(cache: &C, ops: &[Op]) {
    let op = next_op(ops);
    if op.write {
        cache.store(black_box(op.key), op.key);
    } else {
        black_box(cache.lookup(black_box(op.key)));
    }
}

// ---- groups -------------------------------------------------------------------------

/// Times `C` serving `ops` on `threads` threads sharing one prefilled cache.
fn bench_cache<C: BenchCache>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    threads: usize,
    ops: &[Op],
) {
    group.bench_function(C::NAME, |b| {
        // Here rather than before `bench_function`: criterion runs this closure
        // only when the benchmark is selected.
        let cache = prefilled::<C>();
        if threads == 1 {
            b.iter(|| serve(&cache, ops));
        } else {
            b.iter_custom(|iters| concurrent_elapsed(threads, iters, &|| serve(&cache, ops)));
        }
    });
}

/// One group per mix and thread count, each comparing the three caches.
fn mixes(criterion: &mut Criterion) {
    for (mix, write_percent) in MIXES {
        let ops = requests(write_percent);
        for threads in [1, 2] {
            let label = if threads == 1 {
                "1_thread"
            } else {
                "2_threads"
            };
            let mut group = criterion.benchmark_group(format!("{mix}/{label}"));
            bench_cache::<palisade_cache::Cache<u64, u64>>(&mut group, threads, &ops);
            bench_cache::<MokaSipHash>(&mut group, threads, &ops);
            bench_cache::<MokaFoldhash>(&mut group, threads, &ops);
            bench_cache::<quick_cache::sync::Cache<u64, u64>>(&mut group, threads, &ops);
            group.finish();
        }
    }
}

// ---- allocations --------------------------------------------------------------------

/// Heap allocations per operation and memory per entry, counted with
/// `allocation-counter` (feature `count-allocations`; see circuit_breaker.rs
/// for why the counting allocator is not linked into the timed runs). It
/// counts the allocations of the calling thread only: none of the caches here
/// does its work on threads of its own.
#[cfg(feature = "count-allocations")]
mod allocations {
    use std::fmt::Write as _;

    use super::{BenchCache, CAPACITY, KEYS, prefilled};
    use palisade_benches::{AllocRow, alloc_table};

    /// Operations counted per row of the allocation table.
    const ALLOC_CALLS: u64 = 10_000;

    /// Entries of the caches whose memory is measured.
    const MEMORY_ENTRIES: u64 = 100_000;

    /// Runs `op(i)` for `i` in `0..100` to get past lazy set-up, then counts what
    /// `op(i)` allocates for `i` in `100 .. 100 + ALLOC_CALLS`.
    fn count(operation: &str, subject: &str, mut op: impl FnMut(u64)) -> AllocRow {
        for i in 0..100 {
            op(i);
        }
        let info = allocation_counter::measure(|| {
            for i in 100..100 + ALLOC_CALLS {
                op(i);
            }
        });
        AllocRow {
            operation: operation.to_owned(),
            subject: subject.to_owned(),
            allocs_per_call: info.count_total as f64 / ALLOC_CALLS as f64,
            bytes_per_call: info.bytes_total as f64 / ALLOC_CALLS as f64,
        }
    }

    /// The three allocation rows of `C`: a hit, an insert of a new key into a
    /// full cache (which evicts or rejects an entry), and an insert replacing a
    /// cached key.
    fn rows<C: BenchCache>(rows: &mut Vec<AllocRow>) {
        let cache = prefilled::<C>();
        // Sharded caches may not hold every prefilled key: hit only those held.
        let held: Vec<u64> = (1..=CAPACITY)
            .filter(|&k| cache.lookup(k).is_some())
            .collect();
        assert!(
            !held.is_empty(),
            "{} holds none of its prefilled keys",
            C::NAME
        );
        let held_key = |i: u64| held[(i % held.len() as u64) as usize];
        rows.push(count("hit", C::NAME, |i| {
            assert!(cache.lookup(held_key(i)).is_some(), "a held key is a hit");
        }));
        rows.push(count("insert (new key, full cache)", C::NAME, |i| {
            cache.store(KEYS + 1 + i, i);
        }));
        let cache = prefilled::<C>();
        rows.push(count("insert (replace a cached key)", C::NAME, |i| {
            cache.store(held_key(i), i);
        }));
    }

    /// What a cache of `MEMORY_ENTRIES` entries holds on the heap, per entry.
    struct MemoryRow {
        /// The crate.
        subject: &'static str,
        /// Entries held after the fill.
        entries: u64,
        /// Heap bytes still allocated after the fill (the cache's footprint), per entry held.
        retained_per_entry: f64,
        /// The most heap bytes allocated at once during the fill, per entry held.
        peak_per_entry: f64,
        /// Allocations still live after the fill, per entry held.
        live_allocs_per_entry: f64,
    }

    /// Builds a `C` of `MEMORY_ENTRIES` entries, fills it with as many keys and
    /// settles it, counting everything from the construction on; the cache is
    /// kept alive past the count so its footprint is what is still allocated.
    fn memory<C: BenchCache>() -> MemoryRow {
        let mut kept = None;
        let info = allocation_counter::measure(|| {
            let cache = C::with_capacity(MEMORY_ENTRIES);
            for key in 1..=MEMORY_ENTRIES {
                cache.store(key, key);
            }
            cache.settle();
            kept = Some(cache);
        });
        let entries = kept.as_ref().map_or(0, BenchCache::held).max(1);
        MemoryRow {
            subject: C::NAME,
            entries,
            retained_per_entry: info.bytes_current as f64 / entries as f64,
            peak_per_entry: info.bytes_max as f64 / entries as f64,
            live_allocs_per_entry: info.count_current as f64 / entries as f64,
        }
    }

    /// Formats `rows` as a Markdown table.
    fn memory_table(rows: &[MemoryRow]) -> String {
        let mut out = String::from(
            "| crate | entries held | heap bytes / entry | peak bytes / entry during fill | live allocations / entry |\n|---|---:|---:|---:|---:|\n",
        );
        for row in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {:.1} | {:.2} |",
                row.subject,
                row.entries,
                row.retained_per_entry,
                row.peak_per_entry,
                row.live_allocs_per_entry,
            );
        }
        out
    }

    /// Prints both tables, ready for `docs/benchmarks.md`.
    pub(crate) fn report() {
        let mut ops = Vec::new();
        rows::<palisade_cache::Cache<u64, u64>>(&mut ops);
        rows::<super::MokaSipHash>(&mut ops);
        rows::<quick_cache::sync::Cache<u64, u64>>(&mut ops);
        println!(
            "\nHeap allocations per operation ({ALLOC_CALLS} operations each on a cache of {CAPACITY} u64 → u64 entries; counted by allocation-counter):\n\n{}",
            alloc_table(&ops)
        );
        let memory = [
            memory::<palisade_cache::Cache<u64, u64>>(),
            memory::<super::MokaSipHash>(),
            memory::<quick_cache::sync::Cache<u64, u64>>(),
        ];
        println!(
            "Heap memory of a cache built for {MEMORY_ENTRIES} u64 → u64 entries and filled with as many distinct keys (a u64 key and value are 16 bytes):\n\n{}",
            memory_table(&memory)
        );
    }
}

/// The `PALISADE_CALLGRIND` mode (`benches/callgrind.sh cache_throughput`,
/// see `palisade_benches::callgrind`): one thread's requests of every mix,
/// for every cache, each subject named as its criterion row.
fn callgrind() -> bool {
    if std::env::var_os("PALISADE_CALLGRIND").is_none() {
        return false;
    }
    let mixes: Vec<(String, Vec<Op>)> = MIXES
        .iter()
        .map(|&(mix, write_percent)| (format!("{mix}/1_thread"), requests(write_percent)))
        .collect();
    let mut all = Vec::new();
    all.extend(callgrind_subjects::<palisade_cache::Cache<u64, u64>>(
        &mixes,
    ));
    all.extend(callgrind_subjects::<MokaSipHash>(&mixes));
    all.extend(callgrind_subjects::<MokaFoldhash>(&mixes));
    all.extend(callgrind_subjects::<quick_cache::sync::Cache<u64, u64>>(
        &mixes,
    ));
    let mut subjects: Vec<(&str, &mut dyn FnMut())> = all
        .iter_mut()
        .map(|(name, op)| (name.as_str(), op.as_mut() as &mut dyn FnMut()))
        .collect();
    palisade_benches::callgrind(&mut subjects)
}

/// `C`'s subjects for [`callgrind`]: a prefilled cache serving each mix.
fn callgrind_subjects<'a, C: BenchCache + 'a>(
    mixes: &'a [(String, Vec<Op>)],
) -> Vec<(String, Box<dyn FnMut() + 'a>)> {
    mixes
        .iter()
        .map(|(group, ops)| {
            let cache = prefilled::<C>();
            let op: Box<dyn FnMut() + 'a> = Box::new(move || serve(&cache, ops));
            (format!("{group}/{}", C::NAME), op)
        })
        .collect()
}

fn main() {
    if callgrind() {
        return;
    }
    #[cfg(feature = "count-allocations")]
    if !std::env::args().any(|a| a == "--list") {
        allocations::report();
    }
    let mut c = Criterion::default().configure_from_args();
    mixes(&mut c);
    c.final_summary();
}
