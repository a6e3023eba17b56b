//! The load driver: orders and reads at a fixed rate (open loop: a slow
//! answer does not slow the arrivals, as with real customers), a progress
//! line a second, the provider's outage on schedule, and a report.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::{Instant, MissedTickBehavior};

use super::client::HttpClient;

/// What load to send.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// How long to send it.
    pub duration: Duration,
    /// `POST /orders` a second.
    pub orders_per_second: f64,
    /// `GET /orders/{id}` a second, of recent orders.
    pub reads_per_second: f64,
    /// The provider's outage: when it begins (from the start) and how long it lasts.
    pub outage: Option<(Duration, Duration)>,
    /// How long a request may take before the driver gives up on it.
    pub timeout: Duration,
    /// Requests in flight at most; beyond, arrivals are counted as not sent.
    pub max_in_flight: usize,
    /// Print a progress line every second.
    pub progress: bool,
}

impl LoadSettings {
    /// `duration` of 40 orders and 120 reads a second, with the provider out
    /// from 40 % to 65 % of it.
    pub fn demo(duration: Duration) -> Self {
        Self {
            duration,
            orders_per_second: 40.0,
            reads_per_second: 120.0,
            outage: Some((duration.mul_f64(0.40), duration.mul_f64(0.25))),
            timeout: Duration::from_secs(3),
            max_in_flight: 2_000,
            progress: true,
        }
    }
}

/// Latencies of one kind of request, in microseconds.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    /// The `q` quantile (0.5, 0.99), or zero without samples.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut v = self.0.clone();
        if v.is_empty() {
            return Duration::ZERO;
        }
        v.sort_unstable();
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        Duration::from_micros(v[i])
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the driver saw.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// How long it sent load.
    pub elapsed: Duration,
    /// Latencies of `POST /orders` that got an answer.
    pub posts: Latencies,
    /// Latencies of `GET /orders/{id}` that got an answer.
    pub gets: Latencies,
    /// Orders answered `201`.
    pub completed: u64,
    /// Orders answered `409`: undone by their saga.
    pub cancelled: u64,
    /// Orders answered `202`: their saga was still running after a second.
    pub pending: u64,
    /// Orders answered `503`: shed while the provider's breaker was open.
    pub shed: u64,
    /// Requests answered `429`.
    pub limited: u64,
    /// Orders answered `429` (of [`limited`](Self::limited)).
    pub orders_limited: u64,
    /// Reads answered `200`.
    pub reads: u64,
    /// Reads answered `404` (not projected yet).
    pub not_found: u64,
    /// Requests that failed: another `5xx`, no answer, or over the timeout.
    pub errors: u64,
    /// Orders that failed (of [`errors`](Self::errors)).
    pub order_errors: u64,
    /// Requests answered with a status the driver does not expect (a bug).
    pub unexpected: u64,
    /// Orders answered with a status the driver does not expect (of
    /// [`unexpected`](Self::unexpected)).
    pub orders_unexpected: u64,
    /// Reads due when no order was known to read yet: not sent.
    pub unread: u64,
    /// Arrivals not sent: too many requests in flight.
    pub not_sent: u64,
    /// The service's `/status.json` at the end.
    pub status: Value,
    /// Orders sent.
    pub orders_sent: u64,
    /// Reads sent.
    pub reads_sent: u64,
}

impl Report {
    /// Requests sent.
    pub fn sent(&self) -> u64 {
        self.completed
            + self.cancelled
            + self.pending
            + self.shed
            + self.limited
            + self.reads
            + self.not_found
            + self.errors
            + self.unexpected
    }

    /// The share of requests sent that failed (errors and timeouts; not
    /// `409`, `429` or the breaker's fast `503`, which are answers).
    pub fn error_rate(&self) -> f64 {
        ratio(self.errors, self.sent())
    }

    /// The share of orders sent that completed.
    pub fn completion_rate(&self) -> f64 {
        ratio(self.completed, self.orders_sent)
    }

    fn record(&mut self, post: bool, outcome: Result<(u16, Duration), ()>) {
        if post {
            self.orders_sent += 1;
        } else {
            self.reads_sent += 1;
        }
        let Ok((status, latency)) = outcome else {
            self.errors += 1;
            if post {
                self.order_errors += 1;
            }
            return;
        };
        let micros = latency.as_micros() as u64;
        if post {
            self.posts.0.push(micros);
        } else {
            self.gets.0.push(micros);
        }
        let counter = match (post, status) {
            (_, 429) => &mut self.limited,
            (true, 201) => &mut self.completed,
            (true, 409) => &mut self.cancelled,
            (true, 202) => &mut self.pending,
            (true, 503) => &mut self.shed,
            (false, 200) => &mut self.reads,
            (false, 404) => &mut self.not_found,
            (_, 500..=599) => &mut self.errors,
            _ => &mut self.unexpected,
        };
        *counter += 1;
        if post {
            match status {
                429 => self.orders_limited += 1,
                201 | 409 | 202 | 503 => {}
                500..=599 => self.order_errors += 1,
                _ => self.orders_unexpected += 1,
            }
        }
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

const KEYS: [(&str, f64); 3] = [("pro-1", 0.45), ("pro-2", 0.45), ("free-1", 0.10)];
const SKUS: [(&str, f64); 5] = [
    ("book", 0.40),
    ("mug", 0.25),
    ("lamp", 0.25),
    ("vinyl", 0.08),
    ("piano", 0.02),
];

fn pick<'a>(choices: &[(&'a str, f64)]) -> &'a str {
    let mut roll = fastrand::f64();
    for (choice, weight) in choices {
        if roll < *weight {
            return choice;
        }
        roll -= weight;
    }
    choices[choices.len() - 1].0
}

/// The ids of recent orders, for the reads: newest most often.
#[derive(Default)]
struct Recent(Mutex<VecDeque<String>>);

impl Recent {
    const KEEP: usize = 512;

    fn push(&self, id: String) {
        let mut ids = self.0.lock();
        if ids.len() == Self::KEEP {
            ids.pop_front();
        }
        ids.push_back(id);
    }

    fn known(&self) -> bool {
        !self.0.lock().is_empty()
    }

    fn pick(&self) -> Option<String> {
        let ids = self.0.lock();
        if ids.is_empty() {
            return None;
        }
        // Squaring skews the pick towards the newest ids.
        let back = (fastrand::f64().powi(2) * ids.len() as f64) as usize;
        ids.get(ids.len() - 1 - back.min(ids.len() - 1)).cloned()
    }
}

struct Driver {
    client: HttpClient,
    base: String,
    timeout: Duration,
    report: Mutex<Report>,
    recent: Recent,
}

impl Driver {
    async fn order(&self) {
        let (key, sku) = (pick(&KEYS), pick(&SKUS));
        let quantity = if sku == "vinyl" {
            1
        } else {
            fastrand::u32(1..=3)
        };
        let body = serde_json::json!({ "sku": sku, "quantity": quantity }).to_string();
        let url = format!("{}/orders", self.base);
        let headers = [("x-api-key", key)];
        let began = Instant::now();
        let sent = self.client.post_json(&url, &headers, body.into_bytes());
        let outcome = match tokio::time::timeout(self.timeout, sent).await {
            Ok(Ok(answer)) => {
                if let Ok(placed) = serde_json::from_slice::<Value>(&answer.body)
                    && let Some(id) = placed.get("id").and_then(Value::as_str)
                {
                    self.recent.push(id.to_owned());
                }
                Ok((answer.status.as_u16(), began.elapsed()))
            }
            _ => Err(()),
        };
        self.report.lock().record(true, outcome);
    }

    async fn read(&self) {
        let Some(id) = self.recent.pick() else {
            self.report.lock().unread += 1;
            return;
        };
        let url = format!("{}/orders/{id}", self.base);
        let key = pick(&KEYS);
        let began = Instant::now();
        let outcome =
            match tokio::time::timeout(self.timeout, self.client.get(&url, &[("x-api-key", key)]))
                .await
            {
                Ok(Ok(answer)) => Ok((answer.status.as_u16(), began.elapsed())),
                _ => Err(()),
            };
        self.report.lock().record(false, outcome);
    }
}

/// `/status.json` of the service at `base`, or `Null` if it does not answer
/// within `within`.
async fn status(client: &HttpClient, base: &str, within: Duration) -> Value {
    match tokio::time::timeout(within, client.get(&format!("{base}/status.json"), &[])).await {
        Ok(Ok(answer)) => serde_json::from_slice(&answer.body).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// How many arrivals at `per_second` are due `after` the start.
fn due(per_second: f64, after: Duration) -> u64 {
    // The epsilon keeps 20/s × 1.5 s at 30, not 29.999….
    (per_second * after.as_secs_f64() + 1e-9).floor() as u64
}

/// Prints a line a second: what the driver saw, and the service's breaker
/// and provider as its `/status.json` says (`?` when it does not answer
/// within the second). It runs beside the arrivals, never in their way.
async fn progress(driver: Arc<Driver>, started: Instant) {
    let mut last = 0;
    let mut ticker =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let now = started.elapsed();
        let s = status(&driver.client, &driver.base, Duration::from_secs(1)).await;
        let r = driver.report.lock().clone();
        let sent = r.sent();
        println!(
            "{:>4} s │ {:>4} req/s │ orders {} completed, {} cancelled, {} shed, {} failed │ {} reads │ {} × 429 │ breaker {} │ provider {}",
            now.as_secs(),
            sent - last,
            r.completed,
            r.cancelled,
            r.shed,
            r.errors,
            r.reads,
            r.limited,
            s.pointer("/breaker/state")
                .and_then(Value::as_str)
                .unwrap_or(if s.is_null() { "?" } else { "none" }),
            match s.get("provider_outage").and_then(Value::as_bool) {
                Some(true) => "OUT",
                Some(false) => "up",
                None => "?",
            },
        );
        last = sent;
    }
}

/// Sends `settings`' load to the service at `base` (`http://host:port`),
/// and reports what happened.
///
/// The arrivals keep their schedule whatever the service does: the
/// progress lines and the outage's request run in tasks of their own, and
/// the arrivals due are counted from the time elapsed, so a late tick sends
/// those it missed. Every arrival due is sent, or counted as not sent when
/// `max_in_flight` requests are still waiting for their answer.
pub async fn run(base: &str, settings: &LoadSettings) -> Report {
    let driver = Arc::new(Driver {
        client: HttpClient::new(),
        base: base.trim_end_matches('/').to_owned(),
        timeout: settings.timeout,
        report: Mutex::new(Report::default()),
        recent: Recent::default(),
    });
    let slots = Arc::new(Semaphore::new(settings.max_in_flight));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let progress = settings
        .progress
        .then(|| tokio::spawn(progress(Arc::clone(&driver), started)));
    let outage = settings.outage.map(|(at, length)| {
        let driver = Arc::clone(&driver);
        tokio::spawn(async move {
            tokio::time::sleep_until(started + at).await;
            let url = format!("{}/provider/outage?ms={}", driver.base, length.as_millis());
            let _ = tokio::time::timeout(
                driver.timeout,
                driver.client.post_json(&url, &[], Vec::new()),
            )
            .await;
        })
    });
    let (mut orders, mut reads) = (0, 0);
    loop {
        ticker.tick().await;
        let now = started.elapsed().min(settings.duration);
        let (orders_due, reads_due) = (
            due(settings.orders_per_second, now),
            due(settings.reads_per_second, now),
        );
        // Reads wait for the first order known to read.
        let readable = driver.recent.known();
        while orders < orders_due || (readable && reads < reads_due) {
            // Orders and reads alternating while both are due.
            let is_order =
                orders < orders_due && (orders <= reads || !readable || reads >= reads_due);
            if is_order {
                orders += 1;
            } else {
                reads += 1;
            }
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                driver.report.lock().not_sent += 1;
                continue;
            };
            let driver = Arc::clone(&driver);
            tokio::spawn(async move {
                if is_order {
                    driver.order().await;
                } else {
                    driver.read().await;
                }
                drop(slot);
            });
        }
        if now >= settings.duration {
            break;
        }
    }
    let elapsed = started.elapsed();
    if !driver.recent.known() {
        driver.report.lock().unread +=
            due(settings.reads_per_second, settings.duration).saturating_sub(reads);
    }
    if let Some(outage) = outage {
        outage.abort();
    }
    // The requests still in flight finish (or time out) before the report.
    let _ = slots.acquire_many(settings.max_in_flight as u32).await;
    if let Some(progress) = progress {
        progress.abort();
    }
    let mut report = driver.report.lock().clone();
    report.elapsed = elapsed;
    report.status = status(&driver.client, &driver.base, settings.timeout).await;
    report
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    }
}

fn num(v: &Value, path: &str) -> u64 {
    v.pointer(path).and_then(Value::as_u64).unwrap_or(0)
}

impl Report {
    /// What happened, for a person: requests and latencies, orders,
    /// rate limits, what the stack did, the provider's load, the cache.
    pub fn summary(&self) -> String {
        let s = &self.status;
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "requests      {} in {:.0} s ({:.0}/s): {} POST /orders, {} GET /orders/{{id}}; {} not sent (driver saturated); {} failed ({:.2} % of all requests)",
            self.sent(),
            secs,
            self.sent() as f64 / secs,
            self.orders_sent,
            self.reads_sent,
            self.not_sent,
            self.errors,
            self.error_rate() * 100.0,
        );
        let _ = writeln!(
            out,
            "latency       POST p50 {} p99 {} · GET p50 {} p99 {}",
            ms(self.posts.quantile(0.5)),
            ms(self.posts.quantile(0.99)),
            ms(self.gets.quantile(0.5)),
            ms(self.gets.quantile(0.99)),
        );
        let unexpected = |n: u64| {
            if n == 0 {
                String::new()
            } else {
                format!(", {n} answered with a status not expected (a bug)")
            }
        };
        let _ = writeln!(
            out,
            "orders        {} completed ({:.1} %), {} cancelled and compensated by their saga, {} accepted with their saga still running, {} shed with 503 while the breaker was open, {} refused with 429, {} failed{}",
            self.completed,
            self.completion_rate() * 100.0,
            self.cancelled,
            self.pending,
            self.shed,
            self.orders_limited,
            self.order_errors,
            unexpected(self.orders_unexpected),
        );
        let _ = writeln!(
            out,
            "reads         {} answered 200, {} answered 404 (not projected yet), {} refused with 429, {} failed{}; {} not sent (no order to read yet)",
            self.reads,
            self.not_found,
            self.limited - self.orders_limited,
            self.errors - self.order_errors,
            unexpected(self.unexpected - self.orders_unexpected),
            self.unread,
        );
        let _ = writeln!(
            out,
            "sagas         {} completed, {} compensated, {} failed (operator needed), {} running",
            num(s, "/sagas/completed"),
            num(s, "/sagas/compensated"),
            num(s, "/sagas/failed"),
            num(s, "/sagas/running"),
        );
        let _ = writeln!(
            out,
            "rate limits   {} requests refused with 429 ({} backend)",
            self.limited,
            s.get("rate_limit_backend")
                .and_then(Value::as_str)
                .unwrap_or("?"),
        );
        let calls = num(s, "/payments/calls");
        let attempts = num(s, "/payments/attempts");
        let rejected = num(s, "/payments/rejected");
        let _ = writeln!(
            out,
            "payments      {calls} calls, {attempts} requests sent: {:.2} per call, {:.2} per call let through (the retry amplification) · {} retries, {} attempt timeouts, {} retries refused by the budget, {rejected} calls rejected unsent by the breaker or the bulkhead",
            ratio(attempts, calls),
            ratio(attempts, calls.saturating_sub(rejected)),
            num(s, "/payments/retries"),
            num(s, "/payments/attempt_timeouts"),
            num(s, "/payments/budget_exhausted"),
        );
        let transitions: Vec<String> = s
            .pointer("/payments/transitions")
            .and_then(Value::as_array)
            .map(|ts| {
                ts.iter()
                    .map(|t| {
                        format!(
                            "{} → {} at {:.1} s",
                            t["from"].as_str().unwrap_or("?"),
                            t["to"].as_str().unwrap_or("?"),
                            num(t, "/at_ms") as f64 / 1e3
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "breaker       {}",
            if s.get("stack").and_then(Value::as_bool) == Some(false) {
                "none (no stack)".to_owned()
            } else if transitions.is_empty() {
                "no transition".to_owned()
            } else {
                format!(
                    "{} transitions: {}",
                    transitions.len(),
                    transitions.join(", ")
                )
            }
        );
        let _ = writeln!(
            out,
            "provider      {} requests received ({:.0}/s): {} answered 503, {} late, {} held by the outage; {} charges, {} duplicates answered, {} refunds, {} voided",
            num(s, "/provider/requests"),
            num(s, "/provider/requests") as f64 / secs,
            num(s, "/provider/errors"),
            num(s, "/provider/slow"),
            num(s, "/provider/held"),
            num(s, "/provider/charges"),
            num(s, "/provider/duplicate_charges"),
            num(s, "/provider/refunds"),
            num(s, "/provider/voided"),
        );
        let _ = writeln!(
            out,
            "cache         hit ratio {:.1} % ({} hits, {} misses) · projection {} order events applied, {} events of the log after its last",
            s.pointer("/cache/hit_ratio")
                .and_then(Value::as_f64)
                .unwrap_or(0.0)
                * 100.0,
            num(s, "/cache/hits"),
            num(s, "/cache/misses"),
            num(s, "/projection/handled"),
            num(s, "/projection/lag"),
        );
        out
    }
}
