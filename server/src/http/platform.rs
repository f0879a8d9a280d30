//! Health, the OpenAPI document, the caller's organization and the read-only catalogs (R1, R5).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use matrixhost_api::{Health, Organization, Page, Plan, PlanTier, Region};

use super::{App, AppError, AppResult, Caller, ListParams};

pub(super) async fn health(State(app): State<Arc<App>>) -> AppResult<Json<Health>> {
    sqlx::query("SELECT 1").execute(&app.platform.db).await?;
    Ok(Json(Health { status: "ok".into(), version: env!("CARGO_PKG_VERSION").into() }))
}

pub(super) async fn openapi(State(app): State<Arc<App>>) -> Json<serde_json::Value> {
    Json(matrixhost_api::openapi::document_for(&app.platform.settings.catalog))
}

pub(super) async fn organization(State(app): State<Arc<App>>, caller: Caller) -> AppResult<Json<Organization>> {
    let org = crate::domain::orgs::get_org(&app.platform.db, &caller.org_id).await?;
    Ok(Json(Organization {
        id: org.id,
        name: matrixhost_api::OrgName::parse(&org.name).map_err(AppError::internal)?,
        email: matrixhost_api::Email::parse(&org.email).map_err(AppError::internal)?,
        email_verified: org.email_verified,
    }))
}

fn sorted_regions(app: &App) -> Vec<Region> {
    let mut regions = app.platform.settings.catalog.regions.clone();
    regions.sort_by(|a, b| a.code.cmp(&b.code));
    regions
}

pub(super) async fn list_regions(State(app): State<Arc<App>>, _: Caller, params: ListParams) -> Json<Page<Region>> {
    Json(params.page_of(&sorted_regions(&app), |r| &r.code))
}

pub(super) async fn read_region(State(app): State<Arc<App>>, _: Caller, Path(code): Path<String>) -> AppResult<Json<Region>> {
    app.platform.settings.catalog.regions.iter().find(|r| r.code == code).cloned().map(Json).ok_or_else(|| AppError::not_found("region"))
}

fn sorted_plans(app: &App) -> Vec<Plan> {
    let mut plans = app.platform.settings.catalog.plans.clone();
    plans.sort_by(|a, b| a.tier.cmp(&b.tier));
    plans
}

pub(super) async fn list_plans(State(app): State<Arc<App>>, _: Caller, params: ListParams) -> Json<Page<Plan>> {
    Json(params.page_of(&sorted_plans(&app), |p| p.tier.as_str()))
}

pub(super) async fn read_plan(State(app): State<Arc<App>>, _: Caller, Path(tier): Path<String>) -> AppResult<Json<Plan>> {
    let tier = PlanTier::parse(&tier).map_err(|_| AppError::not_found("plan"))?;
    app.platform.settings.catalog.plan(&tier).cloned().map(Json).map_err(|_| AppError::not_found("plan"))
}
