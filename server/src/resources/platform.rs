//! Health, the OpenAPI document, the caller's organization, the read-only catalogs (R1, R5)
//! and the test clock.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use matrixhost_api::{Health, Organization, Page, Plan, PlanTier, Region};
use serde::Deserialize;

use crate::error::{AppError, AppResult};
use crate::http::{ApiJson, Caller, ListParams};
use crate::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/healthz", get(health))
        .route("/openapi.json", get(openapi))
        .route("/v1/organization", get(organization))
        .route("/v1/regions", get(list_regions))
        .route("/v1/regions/{code}", get(read_region))
        .route("/v1/plans", get(list_plans))
        .route("/v1/plans/{tier}", get(read_plan))
        .route("/v1/_test/clock", post(advance_clock))
        .route("/v1/_test/faults", post(arm_faults))
}

async fn health(State(app): State<Arc<App>>) -> AppResult<Json<Health>> {
    sqlx::query("SELECT 1").execute(&app.db).await?;
    Ok(Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() }))
}

async fn openapi() -> Json<serde_json::Value> {
    Json(matrixhost_api::openapi::document())
}

async fn organization(State(app): State<Arc<App>>, caller: Caller) -> AppResult<Json<Organization>> {
    let org = crate::auth::get_org(&app.db, &caller.org_id).await?;
    Ok(Json(Organization {
        id: org.id,
        name: matrixhost_api::OrgName::parse(&org.name).map_err(AppError::internal)?,
        email: matrixhost_api::Email::parse(&org.email).map_err(AppError::internal)?,
        email_verified: org.email_verified,
    }))
}

fn sorted_regions(app: &App) -> Vec<Region> {
    let mut regions = app.settings.catalog.regions.clone();
    regions.sort_by(|a, b| a.code.cmp(&b.code));
    regions
}

async fn list_regions(State(app): State<Arc<App>>, _: Caller, params: ListParams) -> Json<Page<Region>> {
    Json(params.page_of(&sorted_regions(&app), |r| &r.code))
}

async fn read_region(State(app): State<Arc<App>>, _: Caller, Path(code): Path<String>) -> AppResult<Json<Region>> {
    app.settings.catalog.regions.iter().find(|r| r.code == code).cloned().map(Json).ok_or_else(|| AppError::not_found("region"))
}

fn sorted_plans(app: &App) -> Vec<Plan> {
    let mut plans = app.settings.catalog.plans.clone();
    plans.sort_by(|a, b| a.tier.cmp(&b.tier));
    plans
}

async fn list_plans(State(app): State<Arc<App>>, _: Caller, params: ListParams) -> Json<Page<Plan>> {
    Json(params.page_of(&sorted_plans(&app), |p| p.tier.as_str()))
}

async fn read_plan(State(app): State<Arc<App>>, _: Caller, Path(tier): Path<String>) -> AppResult<Json<Plan>> {
    let tier = PlanTier::parse(&tier).map_err(|_| AppError::not_found("plan"))?;
    app.settings.catalog.plan(&tier).cloned().map(Json).map_err(|_| AppError::not_found("plan"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdvanceClock {
    advance_seconds: i64,
}

/// Only with `--test-clock`; otherwise the route does not exist.
async fn advance_clock(State(app): State<Arc<App>>, _: Caller, ApiJson(body): ApiJson<AdvanceClock>) -> AppResult<Json<serde_json::Value>> {
    if !app.clock.is_adjustable() {
        return Err(AppError::not_found("route"));
    }
    let now = app.clock.advance(body.advance_seconds).map_err(|e| AppError::field("advance_seconds", e))?;
    tracing::warn!(now = %now, "test clock moved forward");
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
    if !app.clock.is_adjustable() {
        return Err(AppError::not_found("route"));
    }
    let status = axum::http::StatusCode::from_u16(body.status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .ok_or_else(|| AppError::field("status", "must be a 4xx or 5xx status"))?;
    app.faults.arm(body.path_prefix.clone(), status, body.count);
    tracing::warn!(status = body.status, count = body.count, prefix = %body.path_prefix, "armed injected faults");
    Ok(Json(serde_json::json!({ "armed": body.count })))
}
