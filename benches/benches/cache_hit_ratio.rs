//! Hit ratios of Palisade's cache against moka 0.12, quick_cache 0.7 and a
//! plain LRU (lru 0.19), next to the published reference table of
//! `shared/traces/README.md`.
//!
//! ```text
//! cargo bench -p palisade-benches --bench cache_hit_ratio
//! cargo bench -p palisade-benches --bench cache_hit_ratio -- OLTP LOOP
//! cargo bench -p palisade-benches --bench cache_hit_ratio -- --check
//! ```
//!
//! Not a criterion benchmark: it replays every trace once per cache and prints
//! a Markdown table of hit ratios in percent. Arguments that do not start with
//! `--` select the rows whose name contains one of them (`OLTP`, `LOOP 512`,
//! `Zipf 1.0`); with none, every row runs. `--check` makes the run fail
//! (exit code 1) when, on any row printed, palisade is below moka or more than
//! [`CHECK_MARGIN`] points below the best policy of the reference table; the
//! failing rows are printed.
//!
//! The traces are read from `../../shared/traces` relative to this crate's
//! manifest (that is `shared/traces` beside the workspace), or from the folder
//! named by the environment variable `PALISADE_TRACES`. They are never copied
//! into the project.
//!
//! Every request is replayed cache-aside, the way an application uses a cache:
//! `if cache.get(&k).is_none() { cache.insert(k, k) }`, and it is a hit when
//! `get` returned a value. Every cache is used as its users use it: in
//! particular nobody calls moka's `run_pending_tasks`, so moka applies its
//! policy when its own buffers or timers make it do so, as in an application,
//! and its hit ratios can vary a little from run to run (so can those of
//! quick_cache and moka through their randomly seeded hashers; LRU's cannot).
//! quick_cache's `sync::Cache` splits its capacity over `4 × cores` shards
//! (at least 32 entries each), so its hit ratios depend on the machine.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use flate2::read::GzDecoder;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Zipf};

/// Environment variable naming the traces folder, instead of the default.
const TRACES_ENV: &str = "PALISADE_TRACES";

/// The traces folder relative to this crate's manifest: `shared/traces` beside the workspace.
const TRACES_RELATIVE: &str = "../../shared/traces";

/// Number of distinct keys of the Zipf workloads.
const ZIPF_KEYS: u64 = 100_000;

/// Number of requests of each Zipf workload.
const ZIPF_REQUESTS: usize = 2_000_000;

/// Seed of the Zipf workloads' `StdRng`.
const ZIPF_SEED: u64 = 42;

/// Threads the replays are spread over.
const THREADS: usize = 2;

/// How many points palisade may fall below the best reference policy under `--check`.
const CHECK_MARGIN: f64 = 3.0;

/// The policies of the reference table, in the order of [`Row::reference`].
///
/// Its OPT column (Bélády's optimum) is left out: no real policy can reach it,
/// so it is no bar to compare against.
const POLICIES: [&str; 6] = ["LRU", "SIEVE", "S3-FIFO", "W-TinyLFU 1%", "ARC", "LIRS"];

/// What the requests of a row are.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Workload {
    /// `arc-oltp.gz`, the ARC paper's OLTP trace.
    Oltp,
    /// `lirs-loop.gz`, the LIRS paper's LOOP trace.
    Loop,
    /// [`ZIPF_REQUESTS`] draws of `rand_distr::Zipf` over [`ZIPF_KEYS`] keys with this exponent.
    Zipf(f64),
}

/// One row of the table: a workload replayed into caches of one size.
#[derive(Debug, Clone, Copy)]
struct Row {
    /// The row's name, as in the reference table.
    name: &'static str,
    /// The requests.
    workload: Workload,
    /// Maximum number of entries of every cache.
    capacity: u64,
    /// The reference hit ratios (%) of [`POLICIES`], from `shared/traces/README.md`.
    reference: [f64; 6],
}

/// Shorthand for the entries of [`ROWS`].
const fn row(name: &'static str, workload: Workload, capacity: u64, reference: [f64; 6]) -> Row {
    Row {
        name,
        workload,
        capacity,
        reference,
    }
}

/// Every row, with the published reference table of `shared/traces/README.md`
/// (libCacheSim's reference policies; W-TinyLFU with a fixed 1% window).
#[rustfmt::skip] // one line per row, like the reference table
const ROWS: [Row; 13] = [
    row("OLTP 250", Workload::Oltp, 250, [16.47, 11.81, 21.68, 21.73, 21.23, 17.89]),
    row("OLTP 500", Workload::Oltp, 500, [23.45, 20.62, 32.42, 26.75, 30.46, 26.49]),
    row("OLTP 1000", Workload::Oltp, 1000, [32.83, 32.56, 40.86, 31.86, 38.95, 34.58]),
    row("OLTP 2000", Workload::Oltp, 2000, [42.47, 41.19, 47.03, 37.61, 46.08, 42.45]),
    row("OLTP 4000", Workload::Oltp, 4000, [50.96, 48.65, 53.33, 45.36, 53.01, 50.39]),
    row("OLTP 8000", Workload::Oltp, 8000, [58.65, 57.64, 60.57, 53.35, 59.40, 57.81]),
    row("LOOP 256", Workload::Loop, 256, [0.00, 0.00, 22.80, 20.65, 0.00, 25.07]),
    row("LOOP 512", Workload::Loop, 512, [0.00, 0.00, 45.51, 42.87, 0.00, 50.05]),
    row("LOOP 768", Workload::Loop, 768, [0.00, 0.00, 46.41, 72.54, 0.00, 75.12]),
    row("Zipf 0.8, 1%", Workload::Zipf(0.8), 1_000, [20.39, 31.12, 31.63, 32.20, 31.01, 31.05]),
    row("Zipf 0.8, 10%", Workload::Zipf(0.8), 10_000, [46.84, 54.40, 55.12, 56.24, 53.93, 53.90]),
    row("Zipf 1.0, 1%", Workload::Zipf(1.0), 1_000, [50.65, 59.92, 59.94, 60.50, 59.54, 59.57]),
    row("Zipf 1.0, 10%", Workload::Zipf(1.0), 10_000, [73.64, 78.13, 78.35, 78.92, 77.80, 77.78]),
];

impl Row {
    /// The best reference policy of this row and its hit ratio (the first one on a tie).
    fn best_reference(&self) -> (&'static str, f64) {
        POLICIES
            .iter()
            .zip(self.reference)
            .fold(("", f64::NEG_INFINITY), |best, (&name, ratio)| {
                if ratio > best.1 { (name, ratio) } else { best }
            })
    }
}

// ---- the caches -------------------------------------------------------------------

/// The caches compared, in the order of the table's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Subject {
    /// `palisade_cache::Cache`.
    Palisade,
    /// `moka::sync::Cache`.
    Moka,
    /// `quick_cache::sync::Cache`.
    QuickCache,
    /// `lru::LruCache`, a plain LRU.
    Lru,
}

/// Every subject, in column order.
const SUBJECTS: [Subject; 4] = [
    Subject::Palisade,
    Subject::Moka,
    Subject::QuickCache,
    Subject::Lru,
];

impl Subject {
    /// The column heading.
    fn name(self) -> &'static str {
        match self {
            Subject::Palisade => "palisade",
            Subject::Moka => "moka",
            Subject::QuickCache => "quick_cache",
            Subject::Lru => "LRU",
        }
    }

    /// Replays `trace` into a fresh cache of `capacity` entries and returns its hit ratio in %.
    fn hit_ratio(self, trace: &[u64], capacity: u64) -> f64 {
        match self {
            Subject::Palisade => palisade_hit_ratio(trace, capacity),
            Subject::Moka => moka_hit_ratio(trace, capacity),
            Subject::QuickCache => quick_cache_hit_ratio(trace, capacity),
            Subject::Lru => lru_hit_ratio(trace, capacity),
        }
    }
}

/// Calls `get_or_insert` for every request of `trace` and returns the share
/// of calls that returned `true` (hits), in %.
fn replay(trace: &[u64], mut get_or_insert: impl FnMut(u64) -> bool) -> f64 {
    let hits = trace.iter().filter(|&&key| get_or_insert(key)).count();
    100.0 * hits as f64 / trace.len().max(1) as f64
}

fn palisade_hit_ratio(trace: &[u64], capacity: u64) -> f64 {
    let cache = palisade_cache::Cache::<u64, u64>::builder()
        .max_capacity(capacity)
        .build()
        .expect("valid palisade cache configuration");
    replay(trace, |key| {
        let hit = cache.get(&key).is_some();
        if !hit {
            cache.insert(key, key);
        }
        hit
    })
}

/// moka is replayed without ever calling `run_pending_tasks`, as its users do.
fn moka_hit_ratio(trace: &[u64], capacity: u64) -> f64 {
    let cache: moka::sync::Cache<u64, u64> = moka::sync::Cache::new(capacity);
    replay(trace, |key| {
        let hit = cache.get(&key).is_some();
        if !hit {
            cache.insert(key, key);
        }
        hit
    })
}

fn quick_cache_hit_ratio(trace: &[u64], capacity: u64) -> f64 {
    let cache: quick_cache::sync::Cache<u64, u64> =
        quick_cache::sync::Cache::new(usize::try_from(capacity).expect("capacity fits usize"));
    replay(trace, |key| {
        let hit = cache.get(&key).is_some();
        if !hit {
            cache.insert(key, key);
        }
        hit
    })
}

fn lru_hit_ratio(trace: &[u64], capacity: u64) -> f64 {
    let capacity = usize::try_from(capacity)
        .ok()
        .and_then(NonZeroUsize::new)
        .expect("capacity is a non-zero usize");
    let mut cache = lru::LruCache::new(capacity);
    replay(trace, |key| {
        let hit = cache.get(&key).is_some();
        if !hit {
            cache.put(key, key);
        }
        hit
    })
}

// ---- the workloads -----------------------------------------------------------------

/// The traces folder: `$PALISADE_TRACES`, or [`TRACES_RELATIVE`] from this
/// crate's manifest; made absolute when it exists, for the printed header.
fn traces_dir() -> PathBuf {
    let dir = std::env::var_os(TRACES_ENV).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join(TRACES_RELATIVE),
        PathBuf::from,
    );
    dir.canonicalize().unwrap_or(dir)
}

/// The requests of `workload`, read from `dir` or generated.
fn load(workload: Workload, dir: &Path) -> Result<Vec<u64>, String> {
    match workload {
        Workload::Oltp => read_trace(&dir.join("arc-oltp.gz"), parse_arc_line),
        Workload::Loop => read_trace(&dir.join("lirs-loop.gz"), parse_lirs_line),
        Workload::Zipf(exponent) => Ok(zipf_requests(exponent)),
    }
}

/// Reads the gzipped trace at `path`, one line at a time; `parse` appends the
/// requests of one line to the trace, or says what is wrong with the line.
fn read_trace(
    path: &Path,
    parse: fn(&str, &mut Vec<u64>) -> Result<(), String>,
) -> Result<Vec<u64>, String> {
    let file = File::open(path).map_err(|e| {
        format!(
            "cannot open {}: {e} (set {TRACES_ENV} to the traces folder)",
            path.display()
        )
    })?;
    let mut trace = Vec::new();
    for (number, line) in BufReader::new(GzDecoder::new(file)).lines().enumerate() {
        let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
        parse(&line, &mut trace)
            .map_err(|e| format!("{}, line {}: {e}", path.display(), number + 1))?;
    }
    Ok(trace)
}

/// An ARC trace line, `start count _ _`: the requests `start ..= start + count - 1`.
fn parse_arc_line(line: &str, trace: &mut Vec<u64>) -> Result<(), String> {
    let mut fields = line.split_whitespace();
    let mut next = |what: &str| -> Result<u64, String> {
        let field = fields
            .next()
            .ok_or_else(|| format!("no {what} in {line:?}"))?;
        field
            .parse()
            .map_err(|e| format!("{what} {field:?} in {line:?}: {e}"))
    };
    let start = next("start")?;
    let count = next("count")?;
    trace.extend(start..start + count);
    Ok(())
}

/// A LIRS trace line: one key, or nothing on blank lines and `*`.
fn parse_lirs_line(line: &str, trace: &mut Vec<u64>) -> Result<(), String> {
    let line = line.trim();
    if line.is_empty() || line == "*" {
        return Ok(());
    }
    let key = line.parse().map_err(|e| format!("key {line:?}: {e}"))?;
    trace.push(key);
    Ok(())
}

/// [`ZIPF_REQUESTS`] keys in `1 ..= ZIPF_KEYS` drawn from `rand_distr::Zipf`
/// with `exponent`, by a `StdRng` seeded with [`ZIPF_SEED`].
fn zipf_requests(exponent: f64) -> Vec<u64> {
    let zipf = Zipf::new(ZIPF_KEYS as f64, exponent).expect("valid Zipf parameters");
    let mut rng = StdRng::seed_from_u64(ZIPF_SEED);
    (0..ZIPF_REQUESTS)
        .map(|_| zipf.sample(&mut rng) as u64)
        .collect()
}

// ---- running -----------------------------------------------------------------------

/// The command line: row filters and flags.
#[derive(Debug, Default)]
struct Args {
    /// Run only the rows whose name contains one of these (all rows when empty).
    filters: Vec<String>,
    /// `--check`: fail when palisade trails moka or the reference.
    check: bool,
}

impl Args {
    /// Reads the process's arguments. Flags other than `--check` are ignored:
    /// `cargo bench` passes `--bench` to every benchmark binary.
    fn parse() -> Self {
        let mut args = Self::default();
        for arg in std::env::args().skip(1) {
            if arg == "--check" {
                args.check = true;
            } else if !arg.starts_with("--") {
                args.filters.push(arg);
            }
        }
        args
    }

    /// Whether `row` is selected.
    fn selects(&self, row: &Row) -> bool {
        self.filters.is_empty() || self.filters.iter().any(|f| row.name.contains(f.as_str()))
    }
}

/// The hit ratio of one subject on one row.
type Measured = HashMap<(usize, Subject), f64>;

/// Replays every `(row, subject)` pair of `rows` on [`THREADS`] threads, each
/// taking the next pair left, longest traces first.
fn measure_all(rows: &[Row], traces: &[(Workload, Vec<u64>)]) -> Measured {
    let trace_of = |workload: Workload| -> &[u64] {
        traces
            .iter()
            .find(|(w, _)| *w == workload)
            .map(|(_, trace)| trace.as_slice())
            .expect("every selected workload is loaded")
    };
    let mut jobs: Vec<(usize, Subject)> = (0..rows.len())
        .flat_map(|i| SUBJECTS.map(|subject| (i, subject)))
        .collect();
    jobs.sort_by_key(|&(i, _)| std::cmp::Reverse(trace_of(rows[i].workload).len()));
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        while let Some(&(i, subject)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
            let row = &rows[i];
            let ratio = subject.hit_ratio(trace_of(row.workload), row.capacity);
            done.push(((i, subject), ratio));
        }
        done
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS).map(|_| scope.spawn(work)).collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("replay thread panicked"))
            .collect()
    })
}

/// The Markdown table of `rows`, in their order.
fn table(rows: &[Row], measured: &Measured) -> String {
    let mut out = String::from("| trace, size |");
    for subject in SUBJECTS {
        let _ = write!(out, " {} |", subject.name());
    }
    out.push_str(" best reference | best policy | palisade − best |\n|---|");
    out.push_str(&"---:|".repeat(SUBJECTS.len() + 1));
    out.push_str("---|---:|\n");
    for (i, row) in rows.iter().enumerate() {
        let _ = write!(out, "| {} |", row.name);
        for subject in SUBJECTS {
            let _ = write!(out, " {:.2} |", measured[&(i, subject)]);
        }
        let (policy, best) = row.best_reference();
        let gap = measured[&(i, Subject::Palisade)] - best;
        let _ = writeln!(out, " {best:.2} | {policy} | {gap:+.2} |");
    }
    out
}

/// What `--check` finds wrong with the rows, one line per failure.
fn check_failures(rows: &[Row], measured: &Measured) -> Vec<String> {
    let mut failures = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let palisade = measured[&(i, Subject::Palisade)];
        let moka = measured[&(i, Subject::Moka)];
        let (policy, best) = row.best_reference();
        if palisade < moka {
            failures.push(format!(
                "{}: palisade {palisade:.2} < moka {moka:.2}",
                row.name
            ));
        }
        if palisade < best - CHECK_MARGIN {
            failures.push(format!(
                "{}: palisade {palisade:.2} is more than {CHECK_MARGIN} points below {policy} {best:.2}",
                row.name
            ));
        }
    }
    failures
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rows: Vec<Row> = ROWS.into_iter().filter(|r| args.selects(r)).collect();
    if rows.is_empty() {
        eprintln!("no row matches {:?}", args.filters);
        return ExitCode::FAILURE;
    }
    let dir = traces_dir();
    let mut traces: Vec<(Workload, Vec<u64>)> = Vec::new();
    for row in &rows {
        if traces.iter().all(|(w, _)| *w != row.workload) {
            match load(row.workload, &dir) {
                Ok(trace) => traces.push((row.workload, trace)),
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    let start = Instant::now();
    let measured = measure_all(&rows, &traces);
    println!(
        "\nHit ratios (%), cache-aside replay, count-bounded caches. Traces from {}.\n\
         Zipf: rand_distr::Zipf over {ZIPF_KEYS} keys (1% = 1000 entries, 10% = 10000), \
         {ZIPF_REQUESTS} requests, StdRng seed {ZIPF_SEED}.\n\
         Reference: shared/traces/README.md (libCacheSim), best of {}; OPT left out.\n",
        dir.display(),
        POLICIES.join(", "),
    );
    println!("{}", table(&rows, &measured));
    eprintln!(
        "replayed {} rows × {} caches in {:.1} s on {THREADS} threads",
        rows.len(),
        SUBJECTS.len(),
        start.elapsed().as_secs_f64()
    );
    if args.check {
        let failures = check_failures(&rows, &measured);
        if !failures.is_empty() {
            eprintln!("--check failed on {} row(s):", failures.len());
            for failure in &failures {
                eprintln!("  {failure}");
            }
            return ExitCode::FAILURE;
        }
        eprintln!("--check passed");
    }
    ExitCode::SUCCESS
}
