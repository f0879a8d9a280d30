//! `/v1/homeservers/{id}/reserved-users`: users holding slots inside the MAU cap (R8); the rules
//! are in `domain/reserved_users.rs`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use matrixhost_api::{Page, ReservedUser, ReservedUserCreate, ReservedUserUpdate};

use super::idempotency::{self, Begun};
use super::{ApiJson, App, AppResult, Caller, IdempotencyKey, IfMatch, ListParams, Versioned};
use crate::domain::reserved_users as domain;
use crate::domain::WriteContext;

pub(super) async fn list(State(app): State<Arc<App>>, caller: Caller, Path(homeserver_id): Path<String>, params: ListParams) -> AppResult<Json<Page<ReservedUser>>> {
    let email = params.filters.get("email").map(String::as_str);
    let items = domain::list(&app.platform.db, &caller.org_id, &homeserver_id, email, params.request()).await?;
    Ok(Json(params.page(items, |u| &u.id)))
}

pub(super) async fn read(State(app): State<Arc<App>>, caller: Caller, Path((homeserver_id, id)): Path<(String, String)>) -> AppResult<Versioned<ReservedUser>> {
    let user = domain::read(&app.platform.db, &caller.org_id, &homeserver_id, &id).await?;
    let version = user.version;
    Ok(Versioned::ok(user, version))
}

pub(super) async fn create(
    State(app): State<Arc<App>>,
    caller: Caller,
    key: IdempotencyKey,
    Path(homeserver_id): Path<String>,
    ApiJson(body): ApiJson<ReservedUserCreate>,
) -> AppResult<Response> {
    let p = &app.platform;
    let fingerprint = idempotency::fingerprint(&format!("POST /v1/homeservers/{homeserver_id}/reserved-users"), &body);
    let mut tx = match idempotency::begin(&app, &caller, &key, &fingerprint).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    let mailer = domain::Mailer { sealer: &p.sealer, console_url: p.console_url() };
    let ctx = WriteContext { hosted: p.hosts_homeservers(), now: p.clock.now(), catalog: &p.settings.catalog };
    let user = domain::create(&mut tx, &caller.org_id, &homeserver_id, body, &mailer, ctx).await?;
    let response = idempotency::finish(tx, &caller, &key, Versioned::created(user, 1)).await?;
    p.changed();
    p.mail_queued();
    Ok(response)
}

pub(super) async fn update(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path((homeserver_id, id)): Path<(String, String)>,
    if_match: IfMatch,
    ApiJson(body): ApiJson<ReservedUserUpdate>,
) -> AppResult<Versioned<ReservedUser>> {
    let p = &app.platform;
    let mut tx = p.db.begin().await?;
    let ctx = WriteContext { hosted: p.hosts_homeservers(), now: p.clock.now(), catalog: &p.settings.catalog };
    let user = domain::update(&mut tx, &caller.org_id, &homeserver_id, &id, if_match.0, body, ctx).await?;
    tx.commit().await?;
    p.changed();
    let version = user.version;
    Ok(Versioned::ok(user, version))
}

pub(super) async fn remove(State(app): State<Arc<App>>, caller: Caller, Path((homeserver_id, id)): Path<(String, String)>, if_match: IfMatch) -> AppResult<StatusCode> {
    let p = &app.platform;
    let mut tx = p.db.begin().await?;
    domain::delete(&mut tx, &caller.org_id, &homeserver_id, &id, if_match.0).await?;
    tx.commit().await?;
    p.changed();
    Ok(StatusCode::NO_CONTENT)
}
