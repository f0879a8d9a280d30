//! HTTP plumbing: the router, the request context (request id, span, access log), and the
//! extractors every handler shares (caller, JSON body, pagination, If-Match, Idempotency-Key).

mod extract;
mod ratelimit;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tracing::Instrument;

pub use extract::{ApiJson, Caller, IdempotencyKey, IfMatch, ListParams, Versioned};
pub use ratelimit::RateLimiter;

use crate::error::AppError;
use crate::App;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being handled, for error bodies. Outside a request: `-`.
pub fn request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_else(|_| "-".into())
}

/// A client-chosen request id is kept when it is a plain token; otherwise a new one is made.
fn choose_request_id(req: &Request) -> String {
    req.headers()
        .get(matrixhost_api::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req_{}", crate::ids::random_suffix()))
}

/// Runs the request inside a span carrying its id, so every log line it causes names it.
async fn request_context(req: Request, next: Next) -> Response {
    let id = choose_request_id(&req);
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path());
    let started = Instant::now();
    let mut response = REQUEST_ID.scope(id.clone(), next.run(req).instrument(span.clone())).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(matrixhost_api::REQUEST_ID, value);
    }
    span.in_scope(|| {
        tracing::info!(status = response.status().as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request finished")
    });
    response
}

/// Test hook: answers the next matching requests with an injected status, before anything else
/// runs, so clients' retries can be tested against the real server.
async fn injected_faults(axum::extract::State(app): axum::extract::State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !path.starts_with("/v1/_test/") {
        if let Some(status) = app.faults.take(&path) {
            tracing::warn!(status = status.as_u16(), "injected fault");
            let mut err = AppError::new(status, "injected_fault", "injected fault (test hook)");
            err.retry_after = Some(1);
            return err.into_response();
        }
    }
    next.run(req).await
}

async fn not_found() -> AppError {
    AppError::not_found("route")
}

async fn method_not_allowed() -> AppError {
    AppError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this path")
}

/// A panic becomes a 500 in the usual shape instead of a dropped connection.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    AppError::internal("handler panicked").into_response()
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .merge(crate::resources::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .layer(DefaultBodyLimit::max(1 << 20))
        .layer(axum::middleware::from_fn_with_state(app.clone(), injected_faults))
        .layer(axum::middleware::from_fn(request_context))
        .with_state(app)
}
