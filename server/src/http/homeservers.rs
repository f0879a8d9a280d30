//! `/v1/homeservers`: hosted homeservers (R1, R2, R9, R20, R22), their usage (R23) and their
//! events (R12, R24). The rules are in `domain/homeservers.rs`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use matrixhost_api::{ErrorCode, Homeserver, HomeserverCreate, HomeserverEvent, HomeserverStatus, HomeserverUpdate, HomeserverUsage, Page};

use super::idempotency::{self, Begun};
use super::{ApiJson, App, AppError, AppResult, Caller, IdempotencyKey, IfMatch, ListParams, Versioned};
use crate::domain::events;
use crate::domain::homeservers::{self as domain, Deleted, Owner};

pub(super) async fn list(State(app): State<Arc<App>>, caller: Caller, params: ListParams) -> AppResult<Json<Page<Homeserver>>> {
    let name = params.filters.get("name").map(String::as_str);
    let items = domain::list(&app.platform.db, &caller.org_id, name, params.request()).await?;
    Ok(Json(params.page(items, |h| &h.id)))
}

pub(super) async fn read(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> AppResult<Versioned<Homeserver>> {
    let mut tx = app.platform.db.begin().await?;
    let hs = domain::load_or_404(&mut tx, &caller.org_id, &id).await?;
    let version = hs.version;
    Ok(Versioned::ok(hs, version))
}

pub(super) async fn create(State(app): State<Arc<App>>, caller: Caller, key: IdempotencyKey, ApiJson(body): ApiJson<HomeserverCreate>) -> AppResult<Response> {
    let p = &app.platform;
    // R1 before anything is claimed, so a refused region never takes an idempotency key.
    domain::check_region(&p.settings.catalog, &body.region)?;
    let fingerprint = idempotency::fingerprint("POST /v1/homeservers", &body);
    let mut tx = match idempotency::begin(&app, &caller, &key, &fingerprint).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    let owner = Owner { org_id: &caller.org_id, org_name: &caller.org_name, platform_domain: &p.settings.platform_domain };
    let hs = domain::create(&mut tx, &owner, body, p.clock.now(), &p.settings.catalog).await?;
    let version = hs.version;
    let response = idempotency::finish(tx, &caller, &key, Versioned::created(hs, version)).await?;
    p.changed();
    Ok(response)
}

pub(super) async fn update(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    if_match: IfMatch,
    ApiJson(body): ApiJson<HomeserverUpdate>,
) -> AppResult<Versioned<Homeserver>> {
    let p = &app.platform;
    let mut tx = p.db.begin().await?;
    let ctx = crate::domain::WriteContext { hosted: p.hosts_homeservers(), now: p.clock.now(), catalog: &p.settings.catalog };
    let hs = domain::update(&mut tx, &caller.org_id, &id, if_match.0, body, ctx).await?;
    tx.commit().await?;
    p.changed();
    let version = hs.version;
    Ok(Versioned::ok(hs, version))
}

/// With the runtime, deletion is long work: 202 and `deleting`, then reads answer 404. Without
/// one, the records go at once (204).
pub(super) async fn remove(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>, if_match: IfMatch) -> AppResult<Response> {
    let p = &app.platform;
    let mut tx = p.db.begin().await?;
    let deleted = domain::delete(&mut tx, &caller.org_id, &id, if_match.0, p.hosts_homeservers(), p.clock.now()).await?;
    tx.commit().await?;
    match deleted {
        Deleted::Gone => Ok(StatusCode::NO_CONTENT.into_response()),
        Deleted::Deleting(hs) => {
            p.changed();
            let version = hs.version;
            Ok(Versioned { status: StatusCode::ACCEPTED, body: *hs, version }.into_response())
        }
    }
}

/// R23: counts and sizes from the running homeserver; never contents.
pub(super) async fn usage(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>) -> AppResult<Json<HomeserverUsage>> {
    Ok(Json(measure_usage(&app, &caller.org_id, &id).await?))
}

/// The usage of one of `org_id`'s homeservers, for the API and the console.
pub(super) async fn measure_usage(app: &App, org_id: &str, id: &str) -> AppResult<HomeserverUsage> {
    let p = &app.platform;
    let mut tx = p.db.begin().await?;
    let hs = domain::load_or_404(&mut tx, org_id, id).await?;
    let sub = domain::subscription(&mut tx, org_id, &hs, p.clock.now()).await?;
    drop(tx);
    let runtime = app.runtime.as_ref().ok_or_else(|| AppError::conflict(ErrorCode::NotRunning, "this matrixhostd runs no homeservers (--no-runtime)"))?;
    if !matches!(hs.status, HomeserverStatus::Running | HomeserverStatus::Blocked | HomeserverStatus::Updating) {
        return Err(AppError::conflict(ErrorCode::NotRunning, format!("homeserver `{}` is {}; usage is measured once it runs", hs.name, hs.status.as_str())));
    }
    let measured = runtime.usage(&hs.id).await?;
    Ok(HomeserverUsage {
        homeserver_id: hs.id,
        monthly_active_users: measured.monthly_active_users,
        mau_cap: sub.mau_cap(&p.settings.catalog)?,
        registered_users: measured.registered_users,
        volume_bytes_used: measured.volume_bytes_used,
        volume_size_bytes: measured.volume_size_bytes,
        measured_at: p.clock.now(),
    })
}

pub(super) async fn list_events(State(app): State<Arc<App>>, caller: Caller, Path(id): Path<String>, params: ListParams) -> AppResult<Json<Page<HomeserverEvent>>> {
    let items = events::list(&app.platform.db, &caller.org_id, &id, params.request()).await?;
    Ok(Json(params.page(items, |e| &e.id)))
}
