//! Helpers shared by Palisade's criterion benchmarks.
//!
//! The benchmarks themselves live in `benches/`; run them with
//! `cargo bench -p palisade-benches`. What is here has no dependency on the
//! crates under test (only on criterion), so every benchmark can drive any of
//! them the same way:
//!
//! - [`concurrent_elapsed`]: time `iters` calls made by each of several threads at once.
//! - [`FilledWindow`]: time calls against a window pre-filled with N calls, rebuilding
//!   it before the measured calls have grown it by more than a set share.
//! - [`AllocRow`] and [`alloc_table`]: the allocation table printed by the benchmarks.
//! - [`callgrind`]: one subject run N times for `benches/callgrind.sh`, which counts instructions per call.
//! - [`own_settings`]: a group's own sample size and times, each applied only
//!   when the command line does not give it.
//! - [`poll_now`] and [`service_call`]: one call polled once with a no-op
//!   waker, and one `poll_ready` + `call` of a tower service on a runtime.

use std::fmt::Write as _;

use criterion::BenchmarkGroup;
use criterion::measurement::Measurement;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// Polls `future` once with a no-op waker: for calls that must be ready at
/// once, timed without a runtime's `block_on` around them.
///
/// # Panics
/// If the future is pending.
#[inline]
pub fn poll_now<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("a call that succeeds at once was pending"),
    }
}

/// One `poll_ready` until ready, then `call(1)`, on `rt`: a tower layer's
/// happy path, timed the same way for every layer and peer.
///
/// # Panics
/// If the service reports an error when polled for readiness.
#[inline]
pub fn service_call<S>(rt: &tokio::runtime::Runtime, svc: &mut S) -> Result<S::Response, S::Error>
where
    S: tower_service::Service<u32>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        std::future::poll_fn(|cx| svc.poll_ready(cx))
            .await
            .expect("service is ready");
        svc.call(std::hint::black_box(1)).await
    })
}

/// Runs `op` `iters` times on each of `threads` threads at once and returns
/// the longest time any thread took for its `iters` calls.
///
/// The threads are spawned first and released together by a barrier; each one
/// starts its clock after the barrier and stops it after its last call, so
/// thread start-up and joining are not measured. Handed to criterion's
/// `iter_custom`, which divides by `iters`, the result is the wall-clock time
/// per call **per thread** while all threads are calling: with 2 threads the
/// breaker serves 2 calls in that time.
///
/// # Panics
/// If `op` panics on any thread.
pub fn concurrent_elapsed<F>(threads: usize, iters: u64, op: &F) -> Duration
where
    F: Fn() + Sync,
{
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        op();
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("benchmark thread panicked"))
            .max()
            .unwrap_or_default()
    })
}

/// A subject (a breaker or a service) whose window holds about `fill` calls
/// whenever a call is timed.
///
/// Each measured call adds one more call to the window. For a window whose
/// cost grows with its content that would let the measurement drift away from
/// the size it claims, so [`FilledWindow::time`] throws the subject away and
/// builds and fills a new one (untimed) before the measured calls have added
/// more than `fill / growth_divisor` calls to it.
pub struct FilledWindow<T> {
    make: Box<dyn FnMut(u64) -> T>,
    fill: u64,
    max_added: u64,
    current: Option<T>,
    added: u64,
}

impl<T> FilledWindow<T> {
    /// `make(fill)` must return a subject whose window already holds `fill`
    /// calls. At most `max(fill / growth_divisor, 1)` measured calls go into
    /// one subject (10 gives a window between `fill` and 1.1 × `fill`).
    pub fn new(fill: u64, growth_divisor: u64, make: impl FnMut(u64) -> T + 'static) -> Self {
        Self {
            make: Box::new(make),
            fill,
            max_added: (fill / growth_divisor.max(1)).max(1),
            current: None,
            added: 0,
        }
    }

    /// How many calls the window holds before any measured call.
    pub fn fill(&self) -> u64 {
        self.fill
    }

    /// Builds and fills the first subject now, so that the first timed calls
    /// (criterion's warm-up, which counts wall-clock time) do not wait for it.
    pub fn prepare(&mut self) {
        if self.current.is_none() {
            self.current = Some((self.make)(self.fill));
            self.added = 0;
        }
    }

    /// Makes `iters` calls with `op` and returns the time they took, excluding
    /// the time spent building and filling fresh subjects between them.
    pub fn time(&mut self, iters: u64, mut op: impl FnMut(&mut T)) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            if self.added >= self.max_added {
                // Drop the old subject first so two large windows never coexist.
                self.current = None;
            }
            if self.current.is_none() {
                self.added = 0;
            }
            let (make, fill) = (&mut self.make, self.fill);
            let subject = self.current.get_or_insert_with(|| make(fill));
            let chunk = left.min(self.max_added - self.added);
            let start = Instant::now();
            for _ in 0..chunk {
                op(subject);
            }
            total += start.elapsed();
            self.added += chunk;
            left -= chunk;
        }
        total
    }
}

/// One line of the allocation table: how much one operation of one crate allocates.
#[derive(Debug, Clone, PartialEq)]
pub struct AllocRow {
    /// The operation, named like the benchmark group that times it.
    pub operation: String,
    /// The crate and variant, named like the benchmark function.
    pub subject: String,
    /// Heap allocations per call (reallocations count as allocations).
    pub allocs_per_call: f64,
    /// Bytes allocated per call.
    pub bytes_per_call: f64,
}

/// Formats `rows` as a Markdown table, ready to paste into `docs/benchmarks.md`.
pub fn alloc_table(rows: &[AllocRow]) -> String {
    let mut out = String::from(
        "| operation | crate | allocations / call | bytes / call |\n|---|---|---:|---:|\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            row.operation,
            row.subject,
            format_per_call(row.allocs_per_call),
            format_per_call(row.bytes_per_call),
        );
    }
    out
}

/// Whole numbers without decimals, anything else with two.
fn format_per_call(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

/// The callgrind mode every benchmark binary shares: with
/// `PALISADE_CALLGRIND=<subject>:<calls>` set, [`callgrind`] runs that one
/// subject `calls` times and returns `true`, and the binary exits without
/// running criterion. `benches/callgrind.sh` runs each subject under
/// `valgrind --tool=callgrind` for two call counts and prints the difference
/// in instructions divided by the difference in calls: the instructions per
/// call, free of the set-up and of the noise of a shared machine.
///
/// `subjects` pairs each name (as in the criterion group, `group/row`) with
/// the operation; an unknown name lists the known ones and panics.
///
/// Never inlined: `benches/callgrind.sh` collects instructions only inside
/// this function (`--toggle-collect`), which leaves out the set-up.
///
/// # Panics
/// If the variable is set but malformed, or names no subject.
#[inline(never)]
pub fn callgrind(subjects: &mut [(&str, &mut dyn FnMut())]) -> bool {
    let Ok(spec) = std::env::var("PALISADE_CALLGRIND") else {
        return false;
    };
    let (subject, calls) = spec
        .rsplit_once(':')
        .expect("PALISADE_CALLGRIND=<subject>:<calls>");
    let calls: u64 = calls.parse().expect("a number of calls");
    let Some((_, op)) = subjects.iter_mut().find(|(name, _)| *name == subject) else {
        let known: Vec<&str> = subjects.iter().map(|(name, _)| *name).collect();
        panic!("no subject {subject:?}; known: {known:?}");
    };
    for _ in 0..calls {
        op();
    }
    true
}

/// Sets a group's own sample size, warm-up and measurement times, each only
/// when the command line does not give it.
///
/// Criterion lets a group's `sample_size`, `warm_up_time` and
/// `measurement_time` win over the command line's `--sample-size`,
/// `--warm-up-time` and `--measurement-time`. Groups whose iterations are slow
/// (a database round trip, a rebuilt window) need other defaults than
/// criterion's, and set them here, so that the times a documented command
/// gives apply to every group of the bench.
pub fn own_settings<M: Measurement>(
    group: &mut BenchmarkGroup<'_, M>,
    samples: usize,
    warm_up: Duration,
    measurement: Duration,
) {
    if !cli_sets("--sample-size") {
        group.sample_size(samples);
    }
    if !cli_sets("--warm-up-time") {
        group.warm_up_time(warm_up);
    }
    if !cli_sets("--measurement-time") {
        group.measurement_time(measurement);
    }
}

/// Whether criterion's command line (this process's arguments) sets `option`,
/// given as its long name (`"--warm-up-time"`), as `--option value` or
/// `--option=value`.
///
/// Criterion lets a group's own `warm_up_time`, `measurement_time` and
/// `sample_size` win over the command line's: see [`own_settings`].
pub fn cli_sets(option: &str) -> bool {
    args_set(std::env::args().skip(1), option)
}

fn args_set(mut args: impl Iterator<Item = String>, option: &str) -> bool {
    args.any(|arg| {
        arg == option
            || arg
                .strip_prefix(option)
                .is_some_and(|rest| rest.starts_with('='))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_set_finds_both_spellings_and_nothing_else() {
        let args = |list: &[&str]| list.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>();
        let set = |list: &[&str], option| args_set(args(list).into_iter(), option);
        assert!(set(&["--bench", "--warm-up-time", "1"], "--warm-up-time"));
        assert!(set(&["--measurement-time=2"], "--measurement-time"));
        assert!(!set(&["--warm-up-time", "1"], "--measurement-time"));
        assert!(!set(&["--warm-up-times", "1"], "--warm-up-time"));
        assert!(!set(&["warm-up-time"], "--warm-up-time"));
    }

    #[test]
    fn filled_window_rebuilds_before_growing_past_its_share() {
        let mut builds = Vec::new();
        let built = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let counter = std::rc::Rc::clone(&built);
        let mut w = FilledWindow::new(100, 10, move |fill| {
            counter.set(counter.get() + 1);
            fill
        });
        w.time(25, |held| {
            *held += 1;
            builds.push(*held);
        });
        // 25 calls in chunks of at most 10: three subjects, each holding at most 110.
        assert_eq!(built.get(), 3);
        assert!(builds.iter().all(|&held| (101..=110).contains(&held)));
    }

    #[test]
    fn concurrent_elapsed_runs_every_call() {
        let calls = std::sync::atomic::AtomicU64::new(0);
        concurrent_elapsed(2, 1000, &|| {
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(calls.into_inner(), 2000);
    }

    #[test]
    fn table_formats_whole_and_fractional_counts() {
        let table = alloc_table(&[AllocRow {
            operation: "closed_call".into(),
            subject: "x".into(),
            allocs_per_call: 3.0,
            bytes_per_call: 12.5,
        }]);
        assert!(table.ends_with("| closed_call | x | 3 | 12.50 |\n"));
    }
}
