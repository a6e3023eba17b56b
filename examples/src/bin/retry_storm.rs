//! A retry storm, with and without a retry budget.
//!
//! 1,000 callers in one service each call a dependency once a second through
//! one shared `Retry` (3 attempts, exponential backoff from 100 ms with full
//! jitter). The dependency fails every call from second 5 to second 15, then
//! is healthy again, but only while the load of the second before stayed
//! within its capacity of 1,500 calls per second: past that it falls over
//! again (a queue that never drains, a connection pool that never refills).
//!
//! Without a budget every failed call is tried three times: 3,000 calls a
//! second during the outage, and the dependency, back at second 15, meets
//! twice its capacity and stays down. With Finagle's budget (20 % of the last
//! 10 s of calls plus 10 retries a second) the retries stay near a fifth of
//! the load, and the dependency is back the moment its outage ends.
//!
//! Everything runs on tokio's paused clock: 30 simulated seconds take a
//! fraction of one.
//!
//! ```text
//! cargo run -p palisade-examples --bin retry_storm
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::core::{TokioClock, TokioSleeper};
use palisade::retry::{Backoff, Jitter, Retry};
use tokio::time::Instant;

const CLIENTS: u64 = 1_000;
const SECONDS: u64 = 30;
const OUTAGE: std::ops::Range<u64> = 5..15;
const CAPACITY: u64 = 1_500;

#[derive(Debug)]
struct Unavailable;

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("503 service unavailable")
    }
}

impl std::error::Error for Unavailable {}

/// The dependency: counts what it is sent, per second, and fails during its
/// outage or after a second it was overloaded.
struct Dependency {
    started: Instant,
    calls: Vec<AtomicU64>,
    answered: Vec<AtomicU64>,
}

impl Dependency {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            calls: (0..=SECONDS).map(|_| AtomicU64::new(0)).collect(),
            answered: (0..=SECONDS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn second(&self) -> usize {
        (self.started.elapsed().as_secs().min(SECONDS)) as usize
    }

    fn call(&self) -> Result<(), Unavailable> {
        let second = self.second();
        self.calls[second].fetch_add(1, Ordering::Relaxed);
        let overloaded = second > 0 && self.calls[second - 1].load(Ordering::Relaxed) > CAPACITY;
        if OUTAGE.contains(&(second as u64)) || overloaded {
            return Err(Unavailable);
        }
        self.answered[second].fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

async fn run(with_budget: bool) -> Arc<Dependency> {
    let dependency = Arc::new(Dependency::new());
    let builder = Retry::builder()
        .name(if with_budget {
            "with-budget"
        } else {
            "no-budget"
        })
        .max_attempts(3)
        .backoff(Backoff::exponential(Duration::from_millis(100)).jitter(Jitter::Full))
        .jitter_seed(42)
        .clock(TokioClock::shared())
        .sleeper(TokioSleeper::shared());
    let retry = if with_budget {
        builder.build()
    } else {
        builder.no_budget().build()
    }
    .expect("a valid retry");
    let mut clients = Vec::new();
    for client in 0..CLIENTS {
        let (retry, dependency) = (retry.clone(), Arc::clone(&dependency));
        clients.push(tokio::spawn(async move {
            // Spread over the second, as independent callers would be.
            tokio::time::sleep(Duration::from_micros(client * 1_000_000 / CLIENTS)).await;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for _ in 0..SECONDS {
                tick.tick().await;
                let dependency = Arc::clone(&dependency);
                let _ = retry
                    .call(move |_| {
                        let answer = dependency.call();
                        async move { answer }
                    })
                    .await;
            }
        }));
    }
    for client in clients {
        client.await.expect("a client finished");
    }
    dependency
}

fn report(name: &str, dependency: &Dependency) -> (f64, Option<u64>) {
    let calls = |s: u64| dependency.calls[s as usize].load(Ordering::Relaxed);
    let answered = |s: u64| dependency.answered[s as usize].load(Ordering::Relaxed);
    println!("\n{name}: calls the dependency saw, per second (offered: {CLIENTS} a second)");
    println!("  second   calls   answered   amplification");
    for s in 0..SECONDS {
        println!(
            "  {s:>6}  {:>6}  {:>9}   {:>6.2}×",
            calls(s),
            answered(s),
            calls(s) as f64 / CLIENTS as f64
        );
    }
    let outage: u64 = OUTAGE.map(calls).sum();
    let amplification = outage as f64 / (CLIENTS * (OUTAGE.end - OUTAGE.start)) as f64;
    let recovered = (OUTAGE.end..SECONDS).find(|s| answered(*s) >= CLIENTS * 99 / 100);
    println!("  during the outage: {amplification:.3}× the offered load");
    match recovered {
        Some(s) => println!(
            "  recovered: second {s}, {} s after the outage ended",
            s - OUTAGE.end
        ),
        None => println!(
            "  recovered: not within {} s of the outage's end",
            SECONDS - OUTAGE.end
        ),
    }
    (amplification, recovered)
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    println!(
        "A dependency that fails from second {} to {} and falls over above {CAPACITY} calls a second.",
        OUTAGE.start, OUTAGE.end
    );
    let without = run(false).await;
    let (storm, storm_recovered) = report("Without a budget", &without);
    let with = run(true).await;
    let (budgeted, budget_recovered) = report("With the default budget", &with);

    // What this example shows, checked so that it cannot silently stop showing it.
    assert!(storm > 2.9, "without a budget every call is tried 3 times");
    assert_eq!(storm_recovered, None, "the storm keeps the dependency down");
    assert!(
        budgeted <= 1.22,
        "the budget keeps the outage load near 1.2×"
    );
    assert_eq!(budget_recovered, Some(OUTAGE.end), "back at once");
    println!(
        "\nThe budget cut the outage load from {storm:.2}× to {budgeted:.2}× and let the dependency recover."
    );
}
