//! One slow dependency takes every worker of a service, unless a bulkhead
//! keeps it to its share. The program runs the same traffic twice, without
//! and with a bulkhead, and prints what the callers of each dependency saw.
//!
//! The simulation: a service has 16 request workers (a request that finds
//! none free is answered `503 server busy`). Every 2 ms a request arrives,
//! alternately for the inventory (answers in 10 to 30 ms) and for recommendations,
//! which hang: every call takes 10 s. Traffic lasts 3 s. Without a bulkhead,
//! the hanging recommendation calls hold all 16 workers within a third of a
//! second, and from then on the inventory's callers are turned away too,
//! though the inventory is fine. With a bulkhead of 4 around recommendations
//! (rejecting at once when full), at most 4 workers hang; the other
//! recommendation callers get an empty fallback at once, and every inventory
//! caller is served.
//!
//! Run with `cargo run -p palisade-examples --bin bulkhead`.
//! It uses tokio's paused clock, so the traffic takes no real time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use palisade::bulkhead::{Bulkhead, CallError, Event, Reason};

/// The service's request workers.
const WORKERS: u32 = 16;
/// One request every …
const EVERY: Duration = Duration::from_millis(2);
/// … for this long.
const RUN_FOR: Duration = Duration::from_secs(3);
/// The inventory answers in 10 to 30 ms (20 ms on average).
const INVENTORY_TAKES: Duration = Duration::from_millis(20);
const RECOMMENDATIONS_HANG_FOR: Duration = Duration::from_secs(10);
/// The share of the workers the recommendations may hold, with the bulkhead.
const RECOMMENDATIONS_SHARE: u32 = 4;

/// What the callers of one dependency saw.
#[derive(Default)]
struct Seen {
    callers: AtomicU64,
    served: AtomicU64,
    server_busy: AtomicU64,
    fallback: AtomicU64,
}

impl Seen {
    fn print(&self, name: &str, in_flight: u64) {
        println!(
            "  {name:<16} callers {:>3} | served {:>3} | 503 server busy {:>3} | fallback (bulkhead full) {:>3} | still waiting {:>2}",
            self.callers.load(Ordering::Relaxed),
            self.served.load(Ordering::Relaxed),
            self.server_busy.load(Ordering::Relaxed),
            self.fallback.load(Ordering::Relaxed),
            in_flight,
        );
    }
}

/// A service with a fixed number of workers; a request without one is turned away.
struct Service {
    busy: AtomicU32,
    recommendations: Option<Bulkhead>,
    inventory: Seen,
    recs: Seen,
}

impl Service {
    fn take_worker(&self) -> bool {
        self.busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b < WORKERS).then_some(b + 1)
            })
            .is_ok()
    }

    fn free_worker(&self) {
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }

    /// `n` picks this call's time: 10 to 30 ms, spread evenly, no two neighbours alike.
    async fn inventory(&self, n: u64) {
        self.inventory.callers.fetch_add(1, Ordering::Relaxed);
        if !self.take_worker() {
            self.inventory.server_busy.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let spread = (n.wrapping_mul(7919) % 21) as u32; // 0..=20
        tokio::time::sleep(INVENTORY_TAKES / 2 + Duration::from_millis(u64::from(spread))).await;
        self.inventory.served.fetch_add(1, Ordering::Relaxed);
        self.free_worker();
    }

    async fn recommendations(&self) {
        self.recs.callers.fetch_add(1, Ordering::Relaxed);
        if !self.take_worker() {
            self.recs.server_busy.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let hang = || async {
            tokio::time::sleep(RECOMMENDATIONS_HANG_FOR).await;
            Ok::<_, std::io::Error>(vec!["a book"])
        };
        let result = match &self.recommendations {
            Some(bulkhead) => bulkhead.call(hang).await,
            None => hang().await.map_err(CallError::Inner),
        };
        match result {
            Ok(_) => {
                self.recs.served.fetch_add(1, Ordering::Relaxed);
            }
            Err(CallError::Rejected(r)) if Reason::of(&r) == Some(Reason::Full) => {
                // The page renders without recommendations, at once.
                self.recs.fallback.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => panic!("unexpected: {e}"),
        }
        self.free_worker();
    }
}

async fn run(recommendations: Option<Bulkhead>) -> Arc<Service> {
    let service = Arc::new(Service {
        busy: AtomicU32::new(0),
        recommendations,
        inventory: Seen::default(),
        recs: Seen::default(),
    });
    let mut ticker = tokio::time::interval(EVERY);
    let started = tokio::time::Instant::now();
    let mut n = 0u64;
    while started.elapsed() < RUN_FOR {
        ticker.tick().await;
        let service = Arc::clone(&service);
        if n.is_multiple_of(2) {
            tokio::spawn(async move { service.inventory(n).await });
        } else {
            tokio::spawn(async move { service.recommendations().await });
        }
        n += 1;
    }
    // Let the last inventory calls finish; the hanging ones are still hanging.
    tokio::time::sleep(INVENTORY_TAKES * 2).await; // > the slowest inventory call
    service
}

fn report(service: &Service) {
    let inventory_in_flight = service.inventory.callers.load(Ordering::Relaxed)
        - service.inventory.served.load(Ordering::Relaxed)
        - service.inventory.server_busy.load(Ordering::Relaxed);
    let recs = &service.recs;
    let recs_in_flight = recs.callers.load(Ordering::Relaxed)
        - recs.served.load(Ordering::Relaxed)
        - recs.server_busy.load(Ordering::Relaxed)
        - recs.fallback.load(Ordering::Relaxed);
    service.inventory.print("inventory", inventory_in_flight);
    service.recs.print("recommendations", recs_in_flight);
    println!(
        "  workers busy at the end: {} of {WORKERS}",
        service.busy.load(Ordering::Relaxed)
    );
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "{WORKERS} workers; a request every {EVERY:?} for {RUN_FOR:?}, alternately to the inventory (10 to 30 ms) and to recommendations, which hang for {RECOMMENDATIONS_HANG_FOR:?}.\n"
    );

    println!("without a bulkhead:");
    let service = run(None).await;
    report(&service);
    let starved = service.inventory.server_busy.load(Ordering::Relaxed);

    let first_full = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&first_full);
    let started = tokio::time::Instant::now();
    let bulkhead = Bulkhead::builder()
        .name("recommendations")
        .max_concurrent_calls(RECOMMENDATIONS_SHARE)
        .listener(move |e: &Event| {
            if let Event::Rejected { .. } = e {
                let at = started.elapsed().as_millis() as u64;
                let _ = seen.compare_exchange(0, at.max(1), Ordering::Relaxed, Ordering::Relaxed);
            }
        })
        .build()?;
    println!("\nwith a bulkhead of {RECOMMENDATIONS_SHARE} around recommendations:");
    let service = run(Some(bulkhead.clone())).await;
    report(&service);
    let snap = bulkhead.snapshot();
    println!(
        "  the bulkhead: {} of {} in flight; first rejection at {} ms",
        snap.in_flight,
        snap.limit,
        first_full.load(Ordering::Relaxed)
    );

    println!(
        "\ninventory callers turned away: {starved} without the bulkhead, {} with it.",
        service.inventory.server_busy.load(Ordering::Relaxed)
    );
    Ok(())
}
