//! `/v1/billing-plans`: subscriptions (R5, R8, R10, R11, R15); the rules are in
//! `domain/billing_plans.rs`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use matrixhost_api::{BillingPlan, BillingPlanCreate, BillingPlanUpdate, Page};

use super::idempotency::{self, Begun};
use super::{ApiJson, App, AppResult, Caller, IdempotencyKey, IfMatch, ListParams, Versioned};
use crate::domain::billing_plans as domain;
use crate::domain::billing_profiles;
use crate::domain::WriteContext;

pub(super) async fn list(State(app): State<Arc<App>>, caller: Caller, params: ListParams) -> AppResult<Json<Page<BillingPlan>>> {
    let p = &app.platform;
    let items = domain::list(&p.db, &caller.org_id, params.request(), p.clock.now(), &p.settings.catalog).await?;
    Ok(Json(params.page(items, |b| &b.id)))
}

pub(super) async fn read(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> AppResult<Versioned<BillingPlan>> {
    let p = &app.platform;
    let mut tx = p.db.begin().await?;
    let sub = domain::load_or_404(&mut tx, &caller.org_id, &id, p.clock.now()).await?;
    Ok(Versioned::ok(sub.to_api(&p.settings.catalog)?, sub.version))
}

pub(super) async fn create(State(app): State<Arc<App>>, caller: Caller, key: IdempotencyKey, ApiJson(body): ApiJson<BillingPlanCreate>) -> AppResult<Response> {
    let p = &app.platform;
    let fingerprint = idempotency::fingerprint("POST /v1/billing-plans", &body);
    ensure_customer(&app, &caller).await?;
    let mut tx = match idempotency::begin(&app, &caller, &key, &fingerprint).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    let plan = domain::create(&mut tx, &caller.org_id, caller.email_verified, body, p.clock.now(), &p.settings.catalog, p.payments()).await?;
    let version = plan.version;
    idempotency::finish(tx, &caller, &key, Versioned::created(plan, version)).await
}

pub(super) async fn update(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
    ApiJson(body): ApiJson<BillingPlanUpdate>,
) -> AppResult<Versioned<BillingPlan>> {
    let p = &app.platform;
    ensure_customer(&app, &caller).await?;
    let mut tx = p.db.begin().await?;
    let ctx = WriteContext { hosted: p.hosts_homeservers(), now: p.clock.now(), catalog: &p.settings.catalog };
    let plan = domain::update(&mut tx, &caller.org_id, &id, if_match.0, body, ctx, p.payments()).await?;
    tx.commit().await?;
    p.changed();
    let version = plan.version;
    Ok(Versioned::ok(plan, version))
}

pub(super) async fn remove(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>, if_match: IfMatch) -> AppResult<StatusCode> {
    let p = &app.platform;
    let mut tx = p.db.begin().await?;
    domain::delete(&mut tx, &caller.org_id, &id, if_match.0, p.clock.now(), p.payments()).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// With a payment processor, the organization's customer there exists before the request's
/// transaction begins (see `billing_profiles::ensure_customer_committed`).
async fn ensure_customer(app: &App, caller: &Caller) -> AppResult<()> {
    let p = &app.platform;
    if let (Some(stripe), true) = (&p.stripe, caller.email_verified) {
        billing_profiles::ensure_customer_committed(&p.db, stripe, &caller.org_id, p.clock.now()).await?;
    }
    Ok(())
}
