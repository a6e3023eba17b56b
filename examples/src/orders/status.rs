//! The live status of every part: `GET /status.json`, and `GET /status`,
//! a page that shows it and refreshes itself every second.

use serde::Serialize;

use super::App;
use super::limits::LimitCounts;
use super::payments::PaymentCounts;
use super::provider::ProviderCounts;
use super::saga::SagaCounts;
use super::views::PROJECTION;

/// The breaker around the provider.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerStatus {
    /// `closed`, `open`, `half_open`, ….
    pub state: &'static str,
    /// Calls in the window.
    pub calls: u64,
    /// Failed calls in the window.
    pub failed_calls: u64,
    /// Their share, once the window has its minimum of calls.
    pub failure_rate: Option<f64>,
}

/// The bulkhead around the provider.
#[derive(Debug, Clone, Serialize)]
pub struct BulkheadStatus {
    /// Calls running.
    pub in_flight: u32,
    /// Calls waiting for a slot.
    pub waiting: usize,
    /// Calls allowed at once.
    pub limit: u32,
}

/// The view cache.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    /// `in-process`, or `in-process + Redis` with the second tier.
    pub backend: &'static str,
    /// Local misses answered by Redis, with the second tier.
    pub remote_hits: Option<u64>,
    /// Local misses Redis did not have either.
    pub remote_misses: Option<u64>,
    /// Calls to Redis that failed or timed out (the cache went on without them).
    pub remote_errors: Option<u64>,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that read the read model.
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 before the first lookup.
    pub hit_ratio: f64,
    /// Entries held.
    pub entries: u64,
}

/// The projection of the order views.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    /// Events applied.
    pub handled: u64,
    /// Events appended and not applied yet.
    pub lag: Option<u64>,
    /// Why it stopped, if it did.
    pub stopped: Option<String>,
}

/// Everything `GET /status.json` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Since the service started.
    pub uptime_ms: u64,
    /// `SQLite` or `PostgreSQL`.
    pub event_store: &'static str,
    /// Events in the store.
    pub events: u64,
    /// Whether provider calls go through the standard stack.
    pub stack: bool,
    /// The breaker, with the stack.
    pub breaker: Option<BreakerStatus>,
    /// The bulkhead, with the stack.
    pub bulkhead: Option<BulkheadStatus>,
    /// Retries the budget would allow now, with the stack.
    pub retry_budget: Option<u64>,
    /// What the calls to the provider did.
    pub payments: PaymentCounts,
    /// What the provider saw.
    pub provider: ProviderCounts,
    /// Whether the provider is in an outage now.
    pub provider_outage: bool,
    /// The order sagas.
    pub sagas: SagaCounts,
    /// The rate limits: `in-process` or `Redis`, and their counts.
    pub rate_limit_backend: &'static str,
    /// Requests admitted and refused.
    pub rate_limits: LimitCounts,
    /// The view cache.
    pub cache: CacheStatus,
    /// The projection.
    pub projection: ProjectionStatus,
}

impl Status {
    /// The status of `app` now.
    pub async fn of(app: &App) -> Self {
        let stack = app.payments.stack();
        let breaker = stack.and_then(|s| s.circuit_breaker()).map(|b| {
            let s = b.snapshot();
            BreakerStatus {
                state: s.state.as_str(),
                calls: s.calls,
                failed_calls: s.failed_calls,
                failure_rate: s.failure_rate,
            }
        });
        let bulkhead = stack.and_then(|s| s.bulkhead()).map(|b| {
            let s = b.snapshot();
            BulkheadStatus {
                in_flight: s.in_flight,
                waiting: s.waiting,
                limit: s.limit,
            }
        });
        let retry_budget = stack
            .and_then(|s| s.retry())
            .and_then(|r| r.budget())
            .map(palisade::retry::RetryBudget::available);
        let stats = app.cache.stats();
        let tier = app
            .tier
            .as_ref()
            .map(palisade::cache::tier::TieredCache::tier_stats);
        let lookups = stats.hits + stats.misses;
        let projection = app.runner.status(PROJECTION).ok();
        Self {
            uptime_ms: app.started.elapsed().as_millis() as u64,
            event_store: if app.settings.database_url.is_some() {
                "PostgreSQL"
            } else {
                "SQLite"
            },
            events: app.store.head().await.map_or(0, |h| h.sequence),
            stack: stack.is_some(),
            breaker,
            bulkhead,
            retry_budget,
            payments: app.payments.counts(),
            provider: app.provider.counts(),
            provider_outage: app.provider.in_outage(),
            sagas: app.sagas.counts(),
            rate_limit_backend: app.limits.backend(),
            rate_limits: app.limits.counts(),
            cache: CacheStatus {
                backend: if tier.is_some() {
                    "in-process + Redis"
                } else {
                    "in-process"
                },
                remote_hits: tier.map(|t| t.remote_hits),
                remote_misses: tier.map(|t| t.remote_misses),
                remote_errors: tier.map(|t| t.remote_errors),
                hits: stats.hits,
                misses: stats.misses,
                hit_ratio: if lookups == 0 {
                    0.0
                } else {
                    stats.hits as f64 / lookups as f64
                },
                entries: app.cache.entry_count(),
            },
            projection: ProjectionStatus {
                handled: projection.as_ref().map_or(0, |p| p.handled),
                lag: app.runner.lag(PROJECTION).await.ok(),
                stopped: projection.and_then(|p| p.stopped),
            },
        }
    }
}

/// The status page: plain HTML, CSS and a script that renders
/// `/status.json` every second.
pub const PAGE: &str = include_str!("status.html");
