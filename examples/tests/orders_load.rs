//! The load driver against a stand-in service: it stays open loop (every
//! arrival due is sent or counted as not sent) whatever the service's
//! status page and demo controls do.

use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use palisade_examples::orders::load::{self, LoadSettings};

/// A service that places every order at once, and whose `/status.json` and
/// `/provider/outage` never answer (a store too busy to count its events).
async fn stand_in() -> String {
    let router = Router::new()
        .route(
            "/orders",
            post(|| async {
                (
                    StatusCode::CREATED,
                    [("content-type", "application/json")],
                    r#"{"id":"o-1","status":"completed"}"#,
                )
            }),
        )
        .route("/orders/{id}", get(|| async { StatusCode::OK }))
        .route("/status.json", get(std::future::pending::<String>))
        .route("/provider/outage", post(std::future::pending::<String>));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_driver_sends_every_arrival_due_while_the_status_page_does_not_answer() {
    let base = stand_in().await;
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
