//! The calls to the payment provider, through Palisade's standard stack
//! (or bare, to compare), with what the stack did counted for the report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade::bulkhead::Bulkhead;
use palisade::circuit_breaker::{self, CircuitBreaker, SlidingWindow, State};
use palisade::core::{Classifier, ConfigError, Outcome};
use palisade::retry::{self, Backoff, Jitter, Retry};
use palisade::stack::{Stack, StackError};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;

use super::client::{HttpClient, TransportError};
use super::provider::ChargeResponse;
#[cfg(doc)]
use super::provider::{ChargeRequest, RefundRequest};

/// Why one request to the provider failed.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// It answered with an error status.
    #[error("the payment provider answered {0}")]
    Status(u16),
    /// It did not answer.
    #[error("the payment provider did not answer: {0}")]
    Transport(#[from] TransportError),
    /// Its answer was not what the API says.
    #[error("the payment provider's answer was malformed: {0}")]
    Malformed(String),
}

/// Why a payment (or a refund) did not go through.
#[derive(Debug, thiserror::Error)]
#[error("{failure}")]
pub struct PaymentError {
    failure: Failure,
    outcome_unknown: bool,
}

/// What failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// Without the stack: the one request failed.
    #[error(transparent)]
    Provider(ProviderError),
    /// With the stack: rejected (open breaker, full bulkhead), timed out, or
    /// the last attempt's error.
    #[error(transparent)]
    Stack(StackError<ProviderError>),
}

impl PaymentError {
    /// Whether the provider may have acted on the call anyway: an attempt
    /// was cut short by a timeout, or got no answer. `false` when every
    /// attempt was refused unsent or answered with an error (which the
    /// provider's API says is a request not carried out).
    pub fn outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    /// The stack's error, when the call went through the stack.
    pub fn stack_error(&self) -> Option<&StackError<ProviderError>> {
        match &self.failure {
            Failure::Stack(e) => Some(e),
            Failure::Provider(_) => None,
        }
    }
}

/// What the breaker counts and the retry retries: a `4xx` is the caller's
/// own (a voided key's `409`), so neither; every other error is.
struct Transient;

impl<T> Classifier<T, ProviderError> for Transient {
    fn classify(&self, result: &Result<T, ProviderError>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(ProviderError::Status(400..=499)) => Outcome::Ignored,
            Err(_) => Outcome::Failure,
        }
    }
}

/// Counts an attempt dropped before it finished (by a timeout), and marks
/// the call's outcome unknown.
struct CutShort<'a>(Option<(&'a AtomicU64, &'a AtomicBool)>);

impl CutShort<'_> {
    fn finished(mut self) {
        self.0 = None;
    }
}

impl Drop for CutShort<'_> {
    fn drop(&mut self) {
        if let Some((counter, unknown)) = self.0 {
            counter.fetch_add(1, Ordering::Relaxed);
            unknown.store(true, Ordering::Relaxed);
        }
    }
}

/// A breaker transition, when it happened.
#[derive(Debug, Clone, Serialize)]
pub struct Transition {
    /// Since the service started.
    pub at_ms: u64,
    /// The state left.
    pub from: &'static str,
    /// The state entered.
    pub to: &'static str,
}

/// What the calls to the provider did.
#[derive(Debug)]
pub struct PaymentStats {
    started: Instant,
    calls: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    attempt_timeouts: AtomicU64,
    budget_exhausted: AtomicU64,
    rejected: AtomicU64,
    failed: AtomicU64,
    transitions: Mutex<Vec<Transition>>,
}

/// A copy of [`PaymentStats`] at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PaymentCounts {
    /// Charges and refunds asked for.
    pub calls: u64,
    /// Requests sent to the provider for them (retries included).
    pub attempts: u64,
    /// Retries scheduled.
    pub retries: u64,
    /// Attempts dropped before they ended, by the attempt or the total timeout.
    pub attempt_timeouts: u64,
    /// Retries the budget refused.
    pub budget_exhausted: u64,
    /// Calls refused by the breaker or the bulkhead, never sent.
    pub rejected: u64,
    /// Calls that failed in the end (rejections included).
    pub failed: u64,
    /// The breaker's transitions, in order.
    pub transitions: Vec<Transition>,
}

impl PaymentCounts {
    /// Requests sent per call asked for: the retry amplification.
    pub fn amplification(&self) -> f64 {
        if self.calls == 0 {
            return 0.0;
        }
        self.attempts as f64 / self.calls as f64
    }
}

impl PaymentStats {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            calls: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            attempt_timeouts: AtomicU64::new(0),
            budget_exhausted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            transitions: Mutex::new(Vec::new()),
        }
    }

    fn counts(&self) -> PaymentCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PaymentCounts {
            calls: get(&self.calls),
            attempts: get(&self.attempts),
            retries: get(&self.retries),
            attempt_timeouts: get(&self.attempt_timeouts),
            budget_exhausted: get(&self.budget_exhausted),
            rejected: get(&self.rejected),
            failed: get(&self.failed),
            transitions: self.transitions.lock().clone(),
        }
    }
}

/// The provider's client: every charge and refund through the stack, if any.
#[derive(Clone)]
pub struct Payments {
    http: HttpClient,
    base: Arc<str>,
    stack: Option<Stack>,
    stats: Arc<PaymentStats>,
}

/// How long the breaker stays open before it lets probes through.
const OPEN_DURATION: Duration = Duration::from_secs(2);

/// The stack around the provider: the HTTP-client preset, tightened for a
/// provider on the same machine whose good answers take a few milliseconds.
fn stack(stats: &Arc<PaymentStats>) -> Result<Stack, ConfigError> {
    let on_retry = Arc::clone(stats);
    let on_breaker = Arc::clone(stats);
    Stack::http_client("payments")
        .total_timeout(Duration::from_secs(2))
        .retry(
            Retry::builder()
                .max_attempts(3)
                .backoff(
                    Backoff::exponential(Duration::from_millis(20))
                        .max(Duration::from_millis(200))
                        .jitter(Jitter::Full),
                )
                .listener(move |e: &retry::Event| match e {
                    retry::Event::RetryScheduled { .. } => {
                        on_retry.retries.fetch_add(1, Ordering::Relaxed);
                    }
                    retry::Event::BudgetExhausted { .. } => {
                        on_retry.budget_exhausted.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }),
        )
        .circuit_breaker(
            CircuitBreaker::builder()
                .sliding_window(SlidingWindow::count(40))
                .minimum_calls(20)
                .failure_rate_threshold(0.5)
                .open_duration(OPEN_DURATION)
                .listener(move |e: &circuit_breaker::Event| {
                    if let circuit_breaker::Event::StateTransition { from, to } = e {
                        let at_ms = on_breaker.started.elapsed().as_millis() as u64;
                        on_breaker.transitions.lock().push(Transition {
                            at_ms,
                            from: from.as_str(),
                            to: to.as_str(),
                        });
                    }
                }),
        )
        .bulkhead(
            Bulkhead::builder()
                .max_concurrent_calls(64)
                .max_wait(Duration::from_millis(100)),
        )
        .attempt_timeout(Duration::from_millis(250))
        .build()
}

impl Payments {
    /// A client of the provider at `base` (`http://127.0.0.1:port`), with
    /// the standard stack around every call when `with_stack`.
    ///
    /// # Errors
    /// A [`ConfigError`] from the stack's builder.
    pub fn new(base: &str, with_stack: bool) -> Result<Self, ConfigError> {
        let stats = Arc::new(PaymentStats::new());
        let stack = with_stack.then(|| stack(&stats)).transpose()?;
        Ok(Self {
            http: HttpClient::new(),
            base: base.into(),
            stack,
            stats,
        })
    }

    /// The stack, when calls go through one.
    pub fn stack(&self) -> Option<&Stack> {
        self.stack.as_ref()
    }

    /// The breaker's state, `"none"` without the stack.
    pub fn breaker_state(&self) -> &'static str {
        self.stack
            .as_ref()
            .and_then(Stack::circuit_breaker)
            .map_or("none", |b| b.state().as_str())
    }

    /// How long the breaker stays open, when it is open now.
    pub fn open_for(&self) -> Option<Duration> {
        let breaker = self.stack.as_ref().and_then(Stack::circuit_breaker)?;
        if breaker.state() != State::Open {
            return None;
        }
        let opened_at = self
            .stats
            .transitions
            .lock()
            .iter()
            .rev()
            .find(|t| t.to == State::Open.as_str())
            .map_or(0, |t| t.at_ms);
        let open_ms = self.stats.started.elapsed().as_millis() as u64 - opened_at;
        Some(OPEN_DURATION.saturating_sub(Duration::from_millis(open_ms)))
    }

    /// What the calls did so far.
    pub fn counts(&self) -> PaymentCounts {
        self.stats.counts()
    }

    /// Charges `amount_cents` for `order`, once per `key` however often it
    /// is sent; the payment id.
    ///
    /// # Errors
    /// A [`PaymentError`]; with the stack, the outcome is unknown when the
    /// last attempt timed out (the provider may have charged): a later
    /// charge with the same key finds out without charging twice.
    pub async fn charge(
        &self,
        key: &str,
        order: &str,
        amount_cents: u64,
    ) -> Result<String, PaymentError> {
        let body = serde_json::json!({ "key": key, "order": order, "amount_cents": amount_cents });
        let answer = self.call("/charges", body).await?;
        serde_json::from_slice::<ChargeResponse>(&answer)
            .map(|r| r.payment_id)
            .map_err(|e| PaymentError {
                failure: Failure::Provider(ProviderError::Malformed(e.to_string())),
                outcome_unknown: false,
            })
    }

    /// Undoes the charge made with `key`: refunds it if it went through,
    /// voids the key if not (a charge with it arriving later is refused), so
    /// it settles a charge whose outcome is unknown too.
    ///
    /// # Errors
    /// As [`charge`](Self::charge).
    pub async fn refund(&self, key: &str) -> Result<(), PaymentError> {
        let body = serde_json::json!({ "key": key });
        self.call("/refunds", body).await.map(drop)
    }

    /// Sends `body` (a [`ChargeRequest`], a [`RefundRequest`]) to `path`.
    async fn call(&self, path: &str, body: serde_json::Value) -> Result<Vec<u8>, PaymentError> {
        let body = body.to_string().into_bytes();
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}{path}", self.base);
        let unknown = AtomicBool::new(false);
        let attempt = || async {
            self.stats.attempts.fetch_add(1, Ordering::Relaxed);
            // A timeout drops the attempt before it ends: counted then.
            let cut = CutShort(Some((&self.stats.attempt_timeouts, &unknown)));
            let answer = self.http.post_json(&url, &[], body.clone()).await;
            cut.finished();
            let answer = answer.inspect_err(|_| unknown.store(true, Ordering::Relaxed))?;
            if answer.status.is_success() {
                Ok(answer.body.to_vec())
            } else {
                Err(ProviderError::Status(answer.status.as_u16()))
            }
        };
        let result = match &self.stack {
            Some(stack) => stack.call_with(&Transient, attempt).await.map_err(|e| {
                if e.rejected().is_some() {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                }
                Failure::Stack(e)
            }),
            None => attempt().await.map_err(Failure::Provider),
        }
        .map_err(|failure| PaymentError {
            failure,
            outcome_unknown: unknown.load(Ordering::Relaxed),
        });
        if result.is_err() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }
}
