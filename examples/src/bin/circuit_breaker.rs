//! Protects a flaky simulated dependency with a circuit breaker and prints
//! what happened: the outage, every state transition as it occurs, the first
//! failure and the first rejection of each streak, then the metrics the
//! breaker recorded.
//!
//! The simulation: an inventory service answers in 20 ms, except from t=10 s
//! to t=30 s, when every call fails after 800 ms. One caller sends a request,
//! waits for the answer, and sends the next one 100 ms later, for 45 s. The
//! breaker opens once at least half of the last 20 calls have failed, which
//! takes 10 failures (about 9 s at 0.9 s a failing call); it stays open 5 s,
//! then lets 3 probe calls through and closes if fewer than half of them fail.
//!
//! Run with `cargo run -p palisade-examples --bin circuit_breaker`.
//! It uses tokio's paused clock, so 45 s of simulated traffic take no real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreaker, Event, Outcome, SlidingWindow, State};
use palisade::core::TokioClock;

/// When the inventory goes down, and when it is back (from the start of the run).
const OUTAGE_START: Duration = Duration::from_secs(10);
const OUTAGE_END: Duration = Duration::from_secs(30);
/// How long the simulated traffic lasts.
const RUN_FOR: Duration = Duration::from_secs(45);

/// A dependency that is healthy, then fails every call from `OUTAGE_START`
/// to `OUTAGE_END`, slowly, then recovers.
struct FlakyInventory {
    started: tokio::time::Instant,
}

#[derive(Debug)]
struct InventoryError(&'static str);

impl std::fmt::Display for InventoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "inventory unavailable: {}", self.0)
    }
}

impl std::error::Error for InventoryError {}

impl FlakyInventory {
    async fn stock(&self, sku: u32) -> Result<u32, InventoryError> {
        let t = self.started.elapsed();
        if (OUTAGE_START..OUTAGE_END).contains(&t) {
            // During the outage the dependency is slow *and* failing.
            tokio::time::sleep(Duration::from_millis(800)).await;
            Err(InventoryError("connection reset"))
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(sku % 17)
        }
    }
}

/// What a call came to; the first of each streak is printed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Answer {
    Stock,
    Failed,
    Rejected,
}

/// Why the breaker moved, in the words of its configuration below.
fn why(from: State, to: State) -> &'static str {
    match (from, to) {
        (State::Closed, State::Open) => "at least half of the last 20 calls failed",
        (State::Open, State::HalfOpen) => "5 s passed; 3 probe calls may go through",
        (State::HalfOpen, State::Open) => "half or more of the probes failed",
        (State::HalfOpen, State::Closed) => "fewer than half of the probes failed",
        _ => "",
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "Simulated: the inventory answers in 20 ms, but from t={}s to t={}s every call fails \
         after 800 ms.\n\
         One caller sends a request 100 ms after each answer, for {} s.\n\
         The breaker opens when at least half of the last 20 calls failed (10 failures, 0.9 s \
         apart:\n\
         about 9 s into the outage), stays open 5 s, then lets 3 probe calls through.\n",
        OUTAGE_START.as_secs(),
        OUTAGE_END.as_secs(),
        RUN_FOR.as_secs()
    );

    let inventory = FlakyInventory {
        started: tokio::time::Instant::now(),
    };
    let started = inventory.started;
    let at = move || started.elapsed().as_secs_f64();
    let (ok, failed, rejected, slow) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let counters = (ok.clone(), failed.clone(), rejected.clone(), slow.clone());
    let breaker = CircuitBreaker::builder()
        .name("inventory")
        .clock(TokioClock::shared())
        .sliding_window(SlidingWindow::count(20))
        .minimum_calls(10)
        .failure_rate_threshold(0.5)
        .slow_call_duration(Duration::from_millis(500))
        .half_open_probes(3)
        .open_duration(Duration::from_secs(5))
        .listener(move |event: &Event| match *event {
            Event::StateTransition { from, to } => {
                println!("t={:>5.1}s  {from} -> {to}: {}", at(), why(from, to));
            }
            Event::CallFinished { outcome, slow, .. } => {
                match outcome {
                    Outcome::Success => counters.0.fetch_add(1, Ordering::Relaxed),
                    _ => counters.1.fetch_add(1, Ordering::Relaxed),
                };
                if slow {
                    counters.3.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::CallRejected { .. } => {
                counters.2.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        })
        .build()?;

    // The outage, announced when it happens (the paused clock runs the timers in order).
    tokio::spawn(async move {
        tokio::time::sleep_until(started + OUTAGE_START).await;
        println!("t={:>5.1}s  the inventory goes down", at());
        tokio::time::sleep_until(started + OUTAGE_END).await;
        println!("t={:>5.1}s  the inventory is back", at());
    });

    let mut previous = Answer::Stock;
    let mut sku = 0;
    while started.elapsed() < RUN_FOR {
        let answer = match breaker.call(|| inventory.stock(sku)).await {
            Ok(_) => Answer::Stock,
            Err(e) => {
                let answer = if e.rejected().is_some() {
                    Answer::Rejected
                } else {
                    Answer::Failed
                };
                if answer != previous {
                    let what = if answer == Answer::Rejected {
                        "calls are rejected at once"
                    } else {
                        "calls fail"
                    };
                    println!("t={:>5.1}s  {what}: {e}", at());
                }
                answer
            }
        };
        previous = answer;
        sku += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let snap = breaker.snapshot();
    println!();
    println!(
        "calls that ran:     {} ok, {} failed ({} slow: 500 ms or more)",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        slow.load(Ordering::Relaxed)
    );
    println!(
        "calls rejected:     {} (answered at once, the inventory was not called)",
        rejected.load(Ordering::Relaxed)
    );
    println!("final state:        {}", snap.state);
    println!(
        "window:             the last {} calls, {} failed, {} slow",
        snap.calls, snap.failed_calls, snap.slow_calls
    );
    assert_eq!(
        snap.state,
        State::Closed,
        "the dependency recovered, so should the breaker"
    );
    Ok(())
}
