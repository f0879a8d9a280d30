//! Test hooks, compiled only into test builds (the `test-hooks` feature; release builds never
//! enable it, see `lib.rs`): moving the clock forward (`POST /v1/_test/clock`, with
//! `--test-clock`) and injecting error answers (`POST /v1/_test/faults`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use matrixhost_api::ErrorCode;
use serde::Deserialize;

use super::{ApiJson, App, AppError, AppResult, Caller};

/// Injected responses: the next `count` requests under `path_prefix` get `status`.
#[derive(Debug, Default)]
pub struct Faults(std::sync::Mutex<Vec<(String, StatusCode, u32)>>);

impl Faults {
    fn arm(&self, path_prefix: String, status: StatusCode, count: u32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push((path_prefix, status, count));
    }

    fn take(&self, path: &str) -> Option<StatusCode> {
        let mut faults = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let fault = faults.iter_mut().find(|(prefix, _, count)| *count > 0 && path.starts_with(prefix.as_str()))?;
        fault.2 -= 1;
        let status = fault.1;
        faults.retain(|(_, _, count)| *count > 0);
        Some(status)
    }
}

/// The test routes and the fault injector, on top of the real routes.
pub fn install(routes: Router<Arc<App>>, app: Arc<App>) -> Router<Arc<App>> {
    routes
        .route("/v1/_test/clock", post(advance_clock))
        .route("/v1/_test/faults", post(arm_faults))
        .layer(axum::middleware::from_fn_with_state(app, injected_faults))
}

/// Answers the next matching requests with an injected status, before anything else runs, so
/// clients' retries can be tested against the real server.
async fn injected_faults(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !path.starts_with("/v1/_test/") {
        if let Some(status) = app.faults.take(&path) {
            tracing::warn!(status = status.as_u16(), "injected fault");
            let mut err = AppError::new(status, ErrorCode::InjectedFault, "injected fault (test hook)");
            err.retry_after = Some(1);
            return err.into_response();
        }
    }
    next.run(req).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceClock {
    advance_seconds: i64,
}

/// Only with `--test-clock`; otherwise the route answers as if it did not exist.
async fn advance_clock(State(app): State<Arc<App>>, _: Caller, ApiJson(body): ApiJson<AdvanceClock>) -> AppResult<Json<serde_json::Value>> {
    let clock = &app.platform.clock;
    if !clock.is_adjustable() {
        return Err(AppError::not_found("route"));
    }
    let now = clock.advance(body.advance_seconds).map_err(|e| AppError::field("advance_seconds", e))?;
    tracing::warn!(now = %now, "test clock moved forward");
    app.platform.time_moved();
    Ok(Json(serde_json::json!({ "now": crate::db::ts(now) })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArmFaults {
    status: u16,
    count: u32,
    #[serde(default = "all_of_v1")]
    path_prefix: String,
}

fn all_of_v1() -> String {
    "/v1/".into()
}

/// Only with `--test-clock`: the next `count` requests under `path_prefix` answer `status`.
async fn arm_faults(State(app): State<Arc<App>>, _: Caller, ApiJson(body): ApiJson<ArmFaults>) -> AppResult<Json<serde_json::Value>> {
    if !app.platform.clock.is_adjustable() {
        return Err(AppError::not_found("route"));
    }
    let status = StatusCode::from_u16(body.status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .ok_or_else(|| AppError::field("status", "must be a 4xx or 5xx status"))?;
    app.faults.arm(body.path_prefix.clone(), status, body.count);
    tracing::warn!(status = body.status, count = body.count, prefix = %body.path_prefix, "armed injected faults");
    Ok(Json(serde_json::json!({ "armed": body.count })))
}
