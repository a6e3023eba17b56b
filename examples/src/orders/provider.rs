//! The payment provider: a flaky HTTP service the example runs itself, on a
//! local port, with errors, latency spikes and an outage window.
//!
//! `POST /charges {"key", "order", "amount_cents"}` answers
//! `{"payment_id"}`; the idempotency key makes a repeated charge return the
//! first one's payment id without charging twice. `POST /refunds {"key"}`
//! undoes the charge of that key: refunds it if it was made, and voids the
//! key if not, so that a charge still on its way (sent, not yet arrived) is
//! refused with `409` when it arrives. A caller whose charge timed out does
//! not know whether it went through; a refund by key settles it either way.
//! During an outage the provider accepts
//! requests and answers none until the outage ends (then a `503`): the worst
//! kind of failure for a caller without a timeout.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How the provider misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// The share of requests answered `503` at once.
    pub error_rate: f64,
    /// The share of requests answered only after [`spike`](Self::spike).
    pub spike_rate: f64,
    /// How long a slow request takes.
    pub spike: Duration,
}

impl Default for Faults {
    /// 8 % errors, 3 % of requests 800 ms late.
    fn default() -> Self {
        Self {
            error_rate: 0.08,
            spike_rate: 0.03,
            spike: Duration::from_millis(800),
        }
    }
}

/// What the provider saw, counted as it answered.
#[derive(Debug, Default)]
pub struct ProviderStats {
    requests: AtomicU64,
    charges: AtomicU64,
    duplicate_charges: AtomicU64,
    refunds: AtomicU64,
    voided: AtomicU64,
    errors: AtomicU64,
    slow: AtomicU64,
    held: AtomicU64,
}

/// A copy of [`ProviderStats`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCounts {
    /// Every request received: the provider's load.
    pub requests: u64,
    /// Charges made (each idempotency key once).
    pub charges: u64,
    /// Charges asked again with a key already charged: answered, not charged.
    pub duplicate_charges: u64,
    /// Charges refunded.
    pub refunds: u64,
    /// Keys voided before their charge arrived (and charges refused for it).
    pub voided: u64,
    /// Requests answered `503` at once.
    pub errors: u64,
    /// Requests answered late (a latency spike).
    pub slow: u64,
    /// Requests held unanswered by an outage.
    pub held: u64,
}

impl ProviderStats {
    fn counts(&self) -> ProviderCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProviderCounts {
            requests: get(&self.requests),
            charges: get(&self.charges),
            duplicate_charges: get(&self.duplicate_charges),
            refunds: get(&self.refunds),
            voided: get(&self.voided),
            errors: get(&self.errors),
            slow: get(&self.slow),
            held: get(&self.held),
        }
    }
}

struct Shared {
    faults: Mutex<Faults>,
    /// No request is answered before this instant.
    outage_until: Mutex<Option<Instant>>,
    /// By idempotency key: the payment id, or `None` once voided.
    charged: Mutex<HashMap<String, Option<String>>>,
    refunded: Mutex<HashSet<String>>,
    stats: ProviderStats,
}

/// The running provider; stopped when dropped.
pub struct Provider {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: JoinHandle<()>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A charge asked of the provider.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChargeRequest {
    /// The idempotency key: the same on every attempt of one charge.
    pub key: String,
    /// The order paid for.
    pub order: String,
    /// How much.
    pub amount_cents: u64,
}

/// A charge made.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChargeResponse {
    /// The payment's id, for a refund.
    pub payment_id: String,
}

/// A refund asked of the provider: of the charge made with `key`, or of
/// none, which voids the key.
#[derive(Debug, Serialize, Deserialize)]
pub struct RefundRequest {
    /// The charge's idempotency key.
    pub key: String,
}

impl Provider {
    /// Starts the provider on `127.0.0.1` on a free port.
    ///
    /// # Errors
    /// When no port can be bound.
    pub async fn start(faults: Faults) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            faults: Mutex::new(faults),
            outage_until: Mutex::new(None),
            charged: Mutex::new(HashMap::new()),
            refunded: Mutex::new(HashSet::new()),
            stats: ProviderStats::default(),
        });
        let app = axum::Router::new()
            .route("/charges", post(charge))
            .route("/refunds", post(refund))
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it has seen so far.
    pub fn counts(&self) -> ProviderCounts {
        self.shared.stats.counts()
    }

    /// Changes how it misbehaves from now on.
    pub fn set_faults(&self, faults: Faults) {
        *self.shared.faults.lock() = faults;
    }

    /// Answers nothing for `length` from now: requests are held, then
    /// answered `503`.
    pub fn outage(&self, length: Duration) {
        *self.shared.outage_until.lock() = Some(Instant::now() + length);
    }

    /// Whether an outage is under way.
    pub fn in_outage(&self) -> bool {
        self.shared
            .outage_until
            .lock()
            .is_some_and(|until| Instant::now() < until)
    }
}

/// Every request's fate: held by an outage, failed, slowed, or answered.
async fn misbehave(shared: &Shared) -> Result<(), StatusCode> {
    let stats = &shared.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let until = *shared.outage_until.lock();
    if let Some(until) = until
        && Instant::now() < until
    {
        stats.held.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep_until(until).await;
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    let faults = *shared.faults.lock();
    let roll = fastrand::f64();
    if roll < faults.error_rate {
        stats.errors.fetch_add(1, Ordering::Relaxed);
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    if roll < faults.error_rate + faults.spike_rate {
        stats.slow.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(faults.spike).await;
    }
    Ok(())
}

async fn charge(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<ChargeRequest>,
) -> Result<Json<ChargeResponse>, StatusCode> {
    misbehave(&shared).await?;
    let mut charged = shared.charged.lock();
    let count = charged.len();
    let payment_id = match charged.get(&request.key) {
        Some(Some(payment_id)) => {
            shared
                .stats
                .duplicate_charges
                .fetch_add(1, Ordering::Relaxed);
            payment_id.clone()
        }
        Some(None) => return Err(StatusCode::CONFLICT), // voided by a refund
        None => {
            let payment_id = format!("pay_{:06}", count + 1);
            charged.insert(request.key, Some(payment_id.clone()));
            shared.stats.charges.fetch_add(1, Ordering::Relaxed);
            payment_id
        }
    };
    Ok(Json(ChargeResponse { payment_id }))
}

async fn refund(
    State(shared): State<Arc<Shared>>,
    Json(request): Json<RefundRequest>,
) -> Result<StatusCode, StatusCode> {
    misbehave(&shared).await?;
    let mut charged = shared.charged.lock();
    match charged.get(&request.key) {
        Some(Some(_)) => {
            if shared.refunded.lock().insert(request.key) {
                shared.stats.refunds.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(None) => {} // voided already
        None => {
            charged.insert(request.key, None);
            shared.stats.voided.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(StatusCode::OK)
}
