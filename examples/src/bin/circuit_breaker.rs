//! Protects a flaky simulated dependency with a circuit breaker and prints
//! what happened: every state transition as it occurs, then the metrics the
//! breaker recorded.
//!
//! Run with `cargo run -p palisade-examples --bin circuit_breaker`.
//! It uses tokio's paused clock, so a minute of simulated traffic takes no real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::circuit_breaker::{CircuitBreaker, Event, Outcome, SlidingWindow, State};
use palisade::core::TokioClock;

/// A dependency that is healthy, then fails for 20 seconds, then recovers.
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
        let outage = t >= Duration::from_secs(10) && t < Duration::from_secs(30);
        if outage {
            // During the outage the dependency is slow *and* failing.
            tokio::time::sleep(Duration::from_millis(800)).await;
            Err(InventoryError("connection reset"))
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(sku % 17)
        }
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let inventory = FlakyInventory {
        started: tokio::time::Instant::now(),
    };
    let (ok, failed, rejected, slow) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let counters = (ok.clone(), failed.clone(), rejected.clone(), slow.clone());
    let started = inventory.started;
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
                println!(
                    "t={:>5.1}s  {from} -> {to}",
                    started.elapsed().as_secs_f64()
                );
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

    // One request every 100 ms for 45 s.
    for sku in 0..450u32 {
        let result = breaker.call(|| inventory.stock(sku)).await;
        if let Err(e) = result
            && sku % 25 == 0
        {
            println!("t={:>5.1}s  {e}", started.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let snap = breaker.snapshot();
    println!();
    println!(
        "calls that ran:     {} ok, {} failed ({} slow)",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        slow.load(Ordering::Relaxed)
    );
    println!("calls rejected:     {}", rejected.load(Ordering::Relaxed));
    println!("final state:        {}", snap.state);
    println!(
        "window:             {} calls, {} failed, {} slow",
        snap.calls, snap.failed_calls, snap.slow_calls
    );
    assert_eq!(
        snap.state,
        State::Closed,
        "the dependency recovered, so should the breaker"
    );
    Ok(())
}
