//! The load driver against a stand-in service: it stays open loop (every
//! arrival due is sent or counted as not sent) whatever the service's
//! status page and demo controls do.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use palisade_examples::orders::load::{self, LoadSettings};

/// A service that answers every order with `placed` (naming order `o-1` if
/// a success) and every read with `read`, at once, and whose `/status.json` and
/// `/provider/outage` never answer (a store too busy to count its events).
async fn stand_in(placed: StatusCode, read: StatusCode) -> String {
    let router = Router::new()
        .route(
            "/orders",
            post(move || async move {
                let body = if placed.is_success() {
                    r#"{"id":"o-1"}"#
                } else {
                    r#"{"error":"refused"}"#
                };
                (placed, [("content-type", "application/json")], body)
            }),
        )
        .route("/orders/{id}", get(move || async move { read }))
        .route("/status.json", get(std::future::pending::<String>))
        .route("/provider/outage", post(std::future::pending::<String>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_sends_every_arrival_due_while_the_status_page_does_not_answer() {
    let base = stand_in(StatusCode::CREATED, StatusCode::OK).await;
    let settings = LoadSettings {
        duration: Duration::from_millis(1_500),
        orders_per_second: 20.0,
        reads_per_second: 0.0,
        outage: Some((Duration::from_millis(200), Duration::from_millis(100))),
        timeout: Duration::from_secs(1),
        max_in_flight: 1_000,
        progress: true,
    };
    let report = tokio::time::timeout(Duration::from_secs(20), load::run(&base, &settings))
        .await
        .expect("the driver ends, though the status page never answers");
    // 20 a second for 1.5 s: 30 orders, each answered 201.
    assert_eq!(
        (report.orders_sent, report.completed, report.not_sent),
        (30, 30, 0)
    );
    assert_eq!(report.sent(), 30);
    assert_eq!(report.status, serde_json::Value::Null);
}

fn line<'a>(summary: &'a str, name: &str) -> &'a str {
    summary
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} line in\n{summary}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_accounts_for_every_order_and_every_read_sent() {
    let settings = |orders, reads| LoadSettings {
        duration: Duration::from_secs(1),
        orders_per_second: orders,
        reads_per_second: reads,
        outage: None,
        timeout: Duration::from_secs(1),
        max_in_flight: 1_000,
        progress: false,
    };
    // Every order over its key's plan; no order to read, so no read sent.
    let limited = stand_in(StatusCode::TOO_MANY_REQUESTS, StatusCode::OK).await;
    let report = load::run(&limited, &settings(20.0, 10.0)).await;
    let summary = report.summary();
    assert_eq!(
        line(&summary, "orders"),
        "orders        0 completed (0.0 %), 0 cancelled and compensated by their saga, \
         0 accepted with their saga still running, 0 shed with 503 while the breaker was open, \
         20 refused with 429, 0 failed"
    );
    assert_eq!(
        line(&summary, "reads"),
        "reads         0 answered 200, 0 answered 404 (not projected yet), 0 refused with 429, \
         0 failed; 10 not sent (no order to read yet)"
    );
    // Every order completed, every read of it failed: the failures are the
    // reads', not the orders'.
    let failing = stand_in(StatusCode::CREATED, StatusCode::INTERNAL_SERVER_ERROR).await;
    let report = load::run(&failing, &settings(10.0, 20.0)).await;
    let summary = report.summary();
    assert_eq!(
        line(&summary, "orders"),
        "orders        10 completed (100.0 %), 0 cancelled and compensated by their saga, \
         0 accepted with their saga still running, 0 shed with 503 while the breaker was open, \
         0 refused with 429, 0 failed"
    );
    assert_eq!(
        line(&summary, "reads"),
        "reads         0 answered 200, 0 answered 404 (not projected yet), 0 refused with 429, \
         20 failed; 0 not sent (no order to read yet)"
    );
    let requests = line(&summary, "requests");
    assert!(
        requests.starts_with("requests      30 in 1 s ("),
        "{requests}"
    );
    assert!(
        requests.ends_with(
            "/s): 10 POST /orders, 20 GET /orders/{id}; 0 not sent (driver saturated); \
             20 failed (66.67 % of all requests)"
        ),
        "{requests}"
    );
}
