//! The orders service from the outside: its HTTP API, its saga's
//! compensations, its rate limits and its status, on a provider that fails
//! only when a test says so.

use std::time::Duration;

use palisade::core::ManualClock;
use palisade_examples::orders::client::{Answer, HttpClient};
use palisade_examples::orders::provider::Faults;
use palisade_examples::orders::views::OrderView;
use palisade_examples::orders::{Service, Settings};
use serde_json::Value;

/// A provider that always answers at once.
const RELIABLE: Faults = Faults {
    error_rate: 0.0,
    spike_rate: 0.0,
    spike: Duration::ZERO,
};

async fn service(clock: Option<&ManualClock>) -> Service {
    Service::start(Settings {
        faults: RELIABLE,
        rate_limit_clock: clock.map(ManualClock::shared),
        ..Settings::default()
    })
    .await
    .expect("the service starts")
}

async fn place(service: &Service, key: &str, body: &str) -> Answer {
    HttpClient::new()
        .post_json(
            &format!("{}/orders", service.url()),
            &[("x-api-key", key)],
            body.as_bytes().to_vec(),
        )
        .await
        .expect("an answer")
}

async fn read(service: &Service, key: &str, id: &str) -> Answer {
    HttpClient::new()
        .get(
            &format!("{}/orders/{id}", service.url()),
            &[("x-api-key", key)],
        )
        .await
        .expect("an answer")
}

fn json(answer: &Answer) -> Value {
    serde_json::from_slice(&answer.body).expect("a JSON body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_completes_through_every_step_and_its_view_is_then_served_from_the_cache() {
    let service = service(None).await;
    let placed = place(&service, "pro-1", r#"{"sku":"book","quantity":2}"#).await;
    assert_eq!(placed.status, 201);
    let body = json(&placed);
    assert_eq!(body["status"], "completed");
    assert_eq!(body["payment"], "pay_000001");
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(body["tracking"], format!("TRK-{id}"));

    service.caught_up().await.unwrap();
    let first = read(&service, "pro-1", &id).await;
    assert_eq!(first.status, 200);
    let view: OrderView = serde_json::from_slice(&first.body).unwrap();
    assert_eq!(
        view,
        OrderView {
            id: id.clone(),
            status: "completed".into(),
            sku: "book".into(),
            quantity: 2,
            total_cents: 2_598,
            customer: "pro-1".into(),
            payment: Some("pay_000001".into()),
            tracking: Some(format!("TRK-{id}")),
            version: 2,
        }
    );
    assert_eq!(read(&service, "pro-1", &id).await.body, first.body);

    let status = service.status().await;
    assert_eq!((status.cache.hits, status.cache.misses), (1, 1));
    assert_eq!(status.provider.requests, 1);
    assert_eq!(status.provider.charges, 1);
    assert_eq!((status.payments.calls, status.payments.attempts), (1, 1));
    assert_eq!((status.sagas.completed, status.sagas.running), (1, 0));
    assert_eq!(status.breaker.unwrap().state, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_piano_is_refused_by_the_courier_after_the_charge_which_is_refunded() {
    let service = service(None).await;
    let placed = place(&service, "pro-1", r#"{"sku":"piano","quantity":1}"#).await;
    assert_eq!(placed.status, 409);
    let body = json(&placed);
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["reason"], "the courier does not take a piano");

    service.caught_up().await.unwrap();
    let id = body["id"].as_str().unwrap();
    let view: OrderView = serde_json::from_slice(&read(&service, "pro-1", id).await.body).unwrap();
    assert_eq!((view.status.as_str(), view.version), ("cancelled", 2));
    let status = service.status().await;
    // Charged, then refunded by the charge's key: nothing kept.
    assert_eq!((status.provider.charges, status.provider.refunds), (1, 1));
    assert_eq!((status.sagas.compensated, status.sagas.completed), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vinyl_sells_out_and_the_order_that_finds_none_left_is_undone_before_any_charge() {
    let service = service(None).await;
    for _ in 0..4 {
        let placed = place(&service, "pro-1", r#"{"sku":"vinyl","quantity":10}"#).await;
        assert_eq!(placed.status, 201);
    }
    let refused = place(&service, "pro-1", r#"{"sku":"vinyl","quantity":1}"#).await;
    assert_eq!(refused.status, 409);
    assert_eq!(
        json(&refused)["reason"],
        "the command was refused: out of stock: 0 free, 1 asked"
    );
    let status = service.status().await;
    assert_eq!(
        status.provider.requests, 4,
        "the refused order never reached the provider"
    );
    assert_eq!((status.sagas.completed, status.sagas.compensated), (4, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_charge_is_answered_503_is_undone_without_a_call_to_refund_it() {
    let service = service(None).await;
    // Every request fails at once: three attempts, each answered 503.
    service.provider_faults(Faults {
        error_rate: 1.0,
        ..RELIABLE
    });
    let placed = place(&service, "pro-1", r#"{"sku":"mug","quantity":1}"#).await;
    assert_eq!(placed.status, 409);
    assert_eq!(json(&placed)["reason"], "the payment provider answered 503");
    let status = service.status().await;
    assert_eq!(status.provider.requests, 3);
    assert_eq!((status.payments.calls, status.payments.retries), (1, 2));
    assert_eq!(
        (
            status.provider.charges,
            status.provider.refunds,
            status.provider.voided
        ),
        (0, 0, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_over_its_plan_is_refused_with_429_and_retry_after_until_its_quota_refills() {
    let clock = ManualClock::new();
    let service = service(Some(&clock)).await;
    // free-…: 5 a second, in bursts of 5.
    for remaining in (0..5).rev() {
        let answer = read(&service, "free-7", "no-such-order").await;
        assert_eq!(answer.status, 404);
        assert_eq!(
            header(&answer, "ratelimit-remaining"),
            remaining.to_string()
        );
    }
    let refused = read(&service, "free-7", "no-such-order").await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.retry_after, Some(1));
    assert_eq!(header(&refused, "ratelimit-limit"), "5");
    assert_eq!(header(&refused, "ratelimit-remaining"), "0");
    // Another key has its own quota.
    assert_eq!(read(&service, "free-8", "no-such-order").await.status, 404);
    clock.advance(Duration::from_millis(200));
    assert_eq!(read(&service, "free-7", "no-such-order").await.status, 404);
    let status = service.status().await;
    assert_eq!(
        (status.rate_limits.admitted, status.rate_limits.limited),
        (7, 1)
    );
}

fn header(answer: &Answer, name: &str) -> String {
    answer
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("missing")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_places_nothing() {
    let service = service(None).await;
    let cases = [
        (
            "pro-1",
            r#"{"sku":"yacht","quantity":1}"#,
            400,
            r#"unknown sku "yacht"; the catalogue has ["book", "mug", "lamp", "vinyl", "piano"]"#,
        ),
        (
            "pro-1",
            r#"{"sku":"book","quantity":0}"#,
            400,
            "quantity must be 1 to 10",
        ),
        (
            "pro-1",
            r#"{"sku":"book","quantity":11}"#,
            400,
            "quantity must be 1 to 10",
        ),
        (
            "",
            r#"{"sku":"book","quantity":1}"#,
            401,
            "send your API key in x-api-key",
        ),
    ];
    for (key, body, status, message) in cases {
        let answer = place(&service, key, body).await;
        assert_eq!(answer.status, status, "{body}");
        assert_eq!(json(&answer)["error"], message, "{body}");
    }
    let malformed = place(&service, "pro-1", r#"{"sku":"book""#).await;
    assert_eq!(malformed.status, 400);
    assert!(
        json(&malformed)["error"]
            .as_str()
            .unwrap()
            .starts_with("Failed to parse the request body as JSON"),
        "{:?}",
        json(&malformed)
    );
    let status = service.status().await;
    assert_eq!((status.sagas.started, status.provider.requests), (0, 0));
}

#[test]
fn a_saga_whose_run_lost_its_claim_to_the_recovery_is_not_counted_running_forever() {
    use palisade::saga::{Event, ExecutionOutcome};
    use palisade_examples::orders::saga::SagaStats;
    use std::sync::Arc;

    let stats = SagaStats::default();
    let started = |id: &str, resumed: bool| Event::Started {
        saga: Arc::from("order"),
        id: Arc::from(id),
        resumed,
        traceparent: None,
    };
    let finished = |id: &str, outcome: ExecutionOutcome| Event::Finished {
        saga: Arc::from("order"),
        id: Arc::from(id),
        outcome,
        duration: Duration::from_secs(1),
    };
    // Order a: a step outlived the lease, the recovery claimed the saga and
    // finished it; the first run stopped on its lost claim, with no end.
    stats.record(&started("a", false));
    stats.record(&started("a", true));
    stats.record(&finished("a", ExecutionOutcome::Completed));
    // Order b: still running. Order c: undone.
    stats.record(&started("b", false));
    stats.record(&started("c", false));
    stats.record(&finished("c", ExecutionOutcome::Compensated));
    let counts = stats.counts();
    assert_eq!(
        (
            counts.started,
            counts.completed,
            counts.compensated,
            counts.failed,
            counts.running
        ),
        (4, 1, 1, 0, 1)
    );
}

/// The status code and JSON body of `request`, sent as is (read up to the
/// answer's `content-length`: a service that refused a body before reading
/// it all need not close the connection).
async fn raw(service: &Service, request: String) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(service.addr())
        .await
        .expect("the service listens");
    stream.write_all(request.as_bytes()).await.expect("sent");
    let mut answer = Vec::new();
    let mut buffer = [0; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map_or(0, |n| n.trim().parse().expect("a length"));
            if body.len() >= length {
                let status = head[9..12].parse().expect("a status line");
                let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
                return (status, body);
            }
        }
        let n = stream.read(&mut buffer).await.expect("an answer");
        assert_ne!(n, 0, "the connection closed within the answer: {text}");
        answer.extend_from_slice(&buffer[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_is_413_and_one_that_is_not_json_is_415() {
    let service = service(None).await;
    let order = |content_type: &str, body: &str| {
        format!(
            "POST /orders HTTP/1.1\r\nhost: x\r\nx-api-key: pro-1\r\nconnection: close\r\n\
             content-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let huge = format!(r#"{{"sku":"{}","quantity":1}}"#, "a".repeat(3_000_000));
    let answer = place(&service, "pro-1", &huge).await;
    let (status, body) = (answer.status.as_u16(), json(&answer));
    assert_eq!(status, 413);
    assert_eq!(
        body["error"],
        "Failed to buffer the request body: length limit exceeded"
    );
    let (status, body) = raw(
        &service,
        order("text/plain", r#"{"sku":"book","quantity":1}"#),
    )
    .await;
    assert_eq!(status, 415);
    assert_eq!(
        body["error"],
        "Expected request with `Content-Type: application/json`"
    );
    let status = service.status().await;
    assert_eq!((status.sagas.started, status.provider.requests), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_shed_while_the_breaker_is_open_is_told_to_retry_once_it_closes() {
    let service = service(None).await;
    // Every charge answered 503: the breaker opens after 20 calls.
    service.provider_faults(Faults {
        error_rate: 1.0,
        ..RELIABLE
    });
    let shed = loop {
        let answer = place(&service, "pro-1", r#"{"sku":"mug","quantity":1}"#).await;
        if answer.status == 503 {
            break answer;
        }
        assert_eq!(answer.status, 409);
    };
    // Opened a moment ago for 2 s: more than a second is left, so a client
    // told 1 s would come back while it is still open.
    assert_eq!(shed.retry_after, Some(2));
}
