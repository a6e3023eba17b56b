//! A product catalogue in front of a slow, sometimes failing database:
//! read-through loading with one query per product however many requests
//! miss at once, refresh-ahead, stale-if-error while the database is down,
//! and two service instances kept coherent through a shared remote tier.
//!
//! Run with `cargo run -p palisade-examples --bin cache`.
//! It uses tokio's paused clock, so minutes of simulated traffic take no real
//! time, and an in-memory remote tier, so no Redis is needed (with Redis,
//! swap `InMemoryTier` for `RedisTier::connect(url, "catalogue:")`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade::cache::tier::{InMemoryTier, TieredCache};
use palisade::cache::{Cache, RemovalCause};
use palisade::core::TokioClock;

/// The database: 40 ms a query, and a switch to take it down.
#[derive(Clone, Default)]
struct Database {
    queries: Arc<AtomicU64>,
    down: Arc<AtomicBool>,
}

#[derive(Debug)]
struct DatabaseDown;

impl std::fmt::Display for DatabaseDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("database unavailable")
    }
}

impl std::error::Error for DatabaseDown {}

impl Database {
    async fn price_of(&self, product: u64) -> Result<u64, DatabaseDown> {
        let n = self.queries.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
        if self.down.load(Ordering::SeqCst) {
            return Err(DatabaseDown);
        }
        // The price drifts with every query, so refreshes are visible.
        Ok(1_000 + product * 100 + n)
    }
}

#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = Database::default();

    println!("== read-through with refresh-ahead and stale-if-error");
    let loader_db = db.clone();
    let prices = Cache::builder()
        .name("prices")
        .max_capacity(10_000)
        .time_to_live(Duration::from_secs(60))
        .clock(TokioClock::shared())
        .removal_listener(|product: &u64, price: &u64, cause: RemovalCause| {
            let why = match cause {
                RemovalCause::Replaced => "a new value was written for the key",
                RemovalCause::Expired => "its time to live passed",
                RemovalCause::Size => "evicted to stay within max_capacity",
                RemovalCause::Explicit => "invalidated",
                _ => "another cause",
            };
            println!("   removal listener: price {price} of product {product} removed, cause {cause} ({why})");
        })
        .loading()
        .refresh_after(Duration::from_secs(45))
        .stale_if_error(Duration::from_secs(300))
        .hard_timeout(Duration::from_secs(2))
        .build(move |product: u64| {
            let db = loader_db.clone();
            async move { db.price_of(product).await }
        })?;

    // 100 concurrent requests for the same product: one query.
    let requests: Vec<_> = (0..100)
        .map(|_| {
            let prices = prices.clone();
            tokio::spawn(async move { prices.get(7).await })
        })
        .collect();
    for request in requests {
        request.await??;
    }
    println!(
        "100 concurrent requests for product 7 -> {} database query",
        db.queries.load(Ordering::SeqCst)
    );

    tokio::time::advance(Duration::from_secs(50)).await;
    let price = prices.get(7).await?;
    println!(
        "after 50 s (older than refresh_after = 45 s): served {price} at once, reloading it in the background"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    println!("a moment later: {}", prices.get(7).await?);

    db.down.store(true, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(70)).await;
    let price = prices.get(7).await?;
    println!("database down, value expired: still served {price} (stale-if-error)");
    match prices.get(8).await {
        Ok(price) => println!("product 8: {price}"),
        Err(error) => println!("product 8, never cached: {error}"),
    }
    db.down.store(false, Ordering::SeqCst);
    let stats = prices.cache().stats();
    println!("stats:");
    println!(
        "  {:>4} hits          lookups that found a live value",
        stats.hits
    );
    println!(
        "  {:>4} misses        lookups that found none: the 100 first requests (which shared one \
         query),\n                     then products 7 and 8 while the database was down",
        stats.misses
    );
    println!(
        "  {:>4} stale served  expired values served because their reload failed",
        stats.stale_hits
    );
    println!(
        "  {:>4} loads         loads that returned a value (the first one and the refresh)",
        stats.loads
    );
    println!(
        "  {:>4} failed loads  loads that failed (the database was down)",
        stats.load_failures
    );

    println!("\n== two service instances over one shared tier");
    let shared = InMemoryTier::<u64, u64>::new();
    let instance = |tier: InMemoryTier<u64, u64>| {
        let local = Cache::builder()
            .name("catalogue")
            .max_capacity(1_000)
            .build()?;
        TieredCache::builder(local, tier)
            .remote_ttl(Duration::from_secs(600))
            .build()
    };
    let a = instance(shared.connect())?;
    let b = instance(shared.connect())?;
    let before = db.queries.load(Ordering::SeqCst);
    let on_a = a
        .get_with(42, async { db.price_of(42).await.unwrap_or(0) })
        .await;
    let on_b = b
        .get_with(42, async { db.price_of(42).await.unwrap_or(0) })
        .await;
    println!(
        "A loaded {on_a}; B got {on_b} from the shared tier ({} database query in all)",
        db.queries.load(Ordering::SeqCst) - before
    );
    a.insert(42, 9_999).await;
    tokio::time::sleep(Duration::from_millis(1)).await; // let B's listener run
    println!(
        "A wrote 9999: B dropped its local copy ({:?}), and B now reads {}",
        b.local().get(&42),
        b.get(&42).await.unwrap_or_default()
    );
    let tier = b.tier_stats();
    println!(
        "B's remote tier: {} hits (local misses it answered), {} misses, {} errors, {} invalidation \
         received from A",
        tier.remote_hits, tier.remote_misses, tier.remote_errors, tier.invalidations_received
    );
    Ok(())
}
