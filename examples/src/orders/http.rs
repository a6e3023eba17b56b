//! The HTTP API.
//!
//! | request | answer |
//! |---|---|
//! | `POST /orders` `{"sku", "quantity"}` with `x-api-key` | `201` completed, `409` cancelled by its saga (with the reason), `202` placed, its saga still running after a second (read it later), `503` + `Retry-After` while the provider's breaker is open, `429` + `Retry-After` over the key's plan, `400`/`401` for bad input, `413` for a body over 2 MB, `415` for one not sent as `application/json` |
//! | `GET /orders/{id}` with `x-api-key` | `200` the view (through the cache), `404` unknown (or not projected yet) |
//! | `GET /status` | the live status page |
//! | `GET /status.json` | the same, as JSON |
//! | `POST /provider/outage?ms=N` | the provider answers nothing for N ms (a demo control) |
//!
//! Every answer of a rate-limited route carries `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use opentelemetry::context::FutureExt as _;
use palisade::cqrs::Uuid;
use palisade::rate_limit::Decision;
use palisade::saga::Outcome;
use serde::{Deserialize, Serialize};

use super::domain::NewOrder;
use super::limits::Refusal;
use super::saga::OrderSaga;
use super::{App, CATALOGUE, status, telemetry};

/// How long `POST /orders` waits for the order's saga before it answers
/// `202` and lets the saga finish on its own.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// The service's routes over `app`.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .route("/orders/{id}", get(order))
        .route("/status", get(status_page))
        .route("/status.json", get(status_json))
        .route("/provider/outage", post(outage))
        .layer(axum::middleware::from_fn(telemetry::trace_request))
        .with_state(app)
}

/// The body of `POST /orders`.
#[derive(Debug, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// An article of the catalogue.
    pub sku: String,
    /// How many, 1 to 10.
    pub quantity: u32,
}

/// The answer to `POST /orders`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Placed {
    /// The order id.
    pub id: String,
    /// `completed` or `cancelled`.
    pub status: String,
    /// The provider's payment id, when completed.
    pub payment: Option<String>,
    /// The tracking number, when completed.
    pub tracking: Option<String>,
    /// Why it was cancelled.
    pub reason: Option<String>,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

/// Adds `name: value` pairs (`RateLimit-*`, `Retry-After`) to `response`.
fn with_headers(mut response: Response, headers: &[(&'static str, u64)]) -> Response {
    for (name, value) in headers {
        // `from_bytes` lower-cases the limiter's `RateLimit-Limit`.
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            response
                .headers_mut()
                .insert(name, HeaderValue::from(*value));
        }
    }
    response
}

/// The API key, then its rate limit: the decision's headers, or the refusal.
async fn admit(app: &App, headers: &HeaderMap) -> Result<Decision, Response> {
    let key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 64)
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "send your API key in x-api-key"))?;
    match app.limits.check(key).await {
        Ok(decision) => Ok(decision),
        Err(Refusal::Limited(denied)) => Err(with_headers(
            error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("the plan of {key} allows no more requests now"),
            ),
            &denied.headers(),
        )),
        Err(Refusal::Unavailable(why)) => Err(error(StatusCode::SERVICE_UNAVAILABLE, why)),
    }
}

async fn place_order(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Json<PlaceOrder>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let decision = match admit(&app, &headers).await {
        Ok(decision) => decision,
        Err(refused) => return refused,
    };
    let response = place(&app, &headers, body).await;
    with_headers(response, &decision.headers())
}

async fn place(
    app: &App,
    headers: &HeaderMap,
    body: Result<Json<PlaceOrder>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(request) = match body {
        Ok(body) => body,
        // Too large (413) and not JSON (415) keep their own codes; every
        // other body the order cannot be read from is a 400.
        Err(e) => {
            let status = match e.status() {
                s @ (StatusCode::PAYLOAD_TOO_LARGE | StatusCode::UNSUPPORTED_MEDIA_TYPE) => s,
                _ => StatusCode::BAD_REQUEST,
            };
            return error(status, e.body_text());
        }
    };
    let Some((_, price, _)) = CATALOGUE.iter().find(|(sku, ..)| *sku == request.sku) else {
        let skus: Vec<_> = CATALOGUE.iter().map(|(sku, ..)| *sku).collect();
        return error(
            StatusCode::BAD_REQUEST,
            format!("unknown sku {:?}; the catalogue has {skus:?}", request.sku),
        );
    };
    if !(1..=10).contains(&request.quantity) {
        return error(StatusCode::BAD_REQUEST, "quantity must be 1 to 10");
    }
    // Shed load while the provider's breaker is open: an order now could
    // only be placed and undone.
    if let Some(retry_after) = app.payments.open_for() {
        return with_headers(
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the payment provider is failing; try again later",
            ),
            // Whole seconds, rounded up: a client back after them finds the
            // breaker out of its open state.
            &[(
                "Retry-After",
                retry_after.as_millis().div_ceil(1_000).max(1) as u64,
            )],
        );
    }
    let customer = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let id = Uuid::now_v7().to_string();
    let state = OrderSaga {
        order_id: id.clone(),
        order: NewOrder {
            sku: request.sku,
            quantity: request.quantity,
            total_cents: price * u64::from(request.quantity),
            customer,
        },
        payment: None,
        tracking: None,
    };
    // The saga runs in a task of its own: a client that hangs up does not
    // stop it halfway, and a saga that must wait (a refund while the
    // provider is down) goes on after the answer.
    let saga = app.saga.clone();
    let run = {
        let id = id.clone();
        tokio::spawn(async move { saga.start(&id, state).await }.with_current_context())
    };
    let outcome = match tokio::time::timeout(ANSWER_WITHIN, run).await {
        Err(_) => {
            return (
                StatusCode::ACCEPTED,
                Json(Placed {
                    id,
                    status: "placed".into(),
                    payment: None,
                    tracking: None,
                    reason: None,
                }),
            )
                .into_response();
        }
        Ok(Err(panicked)) => Err(panicked.to_string()),
        Ok(Ok(outcome)) => outcome.map_err(|e| e.to_string()),
    };
    match outcome {
        Ok(Outcome::Completed { state }) => (
            StatusCode::CREATED,
            Json(Placed {
                id,
                status: "completed".into(),
                payment: state.payment,
                tracking: state.tracking,
                reason: None,
            }),
        )
            .into_response(),
        Ok(Outcome::Compensated { error, .. }) => (
            StatusCode::CONFLICT,
            Json(Placed {
                id,
                status: "cancelled".into(),
                payment: None,
                tracking: None,
                reason: Some(error),
            }),
        )
            .into_response(),
        Ok(Outcome::Failed { step, error, .. }) => self::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("order {id} stopped in {step}: {error}; an operator must finish it"),
        ),
        Err(e) => self::error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("order {id} could not run: {e}"),
        ),
    }
}

async fn order(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let decision = match admit(&app, &headers).await {
        Ok(decision) => decision,
        Err(refused) => return refused,
    };
    let response = match app.queries.ask(id.clone()).await {
        Ok(Some(view)) => Json(view).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no order {id}")),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    with_headers(response, &decision.headers())
}

async fn status_page() -> Html<&'static str> {
    Html(status::PAGE)
}

async fn status_json(State(app): State<Arc<App>>) -> Json<status::Status> {
    Json(status::Status::of(&app).await)
}

/// `?ms=` of `POST /provider/outage`.
#[derive(Debug, Deserialize)]
struct OutageLength {
    ms: u64,
}

async fn outage(State(app): State<Arc<App>>, Query(q): Query<OutageLength>) -> Response {
    if q.ms == 0 || q.ms > 600_000 {
        return error(StatusCode::BAD_REQUEST, "ms must be 1 to 600000");
    }
    app.provider.outage(Duration::from_millis(q.ms));
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "outage_ms": q.ms })),
    )
        .into_response()
}
