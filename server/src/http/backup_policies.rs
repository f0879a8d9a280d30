//! `/v1/homeservers/{id}/backup-policy`, one per homeserver (R4); the rules are in
//! `domain/backup_policies.rs`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use matrixhost_api::{BackupPolicy, BackupPolicySpec};

use super::idempotency::{self, Begun};
use super::{ApiJson, App, AppResult, Caller, IdempotencyKey, IfMatch, Versioned};
use crate::domain::backup_policies as domain;

pub(super) async fn read(State(app): State<Arc<App>>, caller: Caller, Path(homeserver_id): Path<String>) -> AppResult<Versioned<BackupPolicy>> {
    let p = &app.platform;
    let mut tx = p.db.begin().await?;
    let policy = domain::load(&mut tx, &caller.org_id, &homeserver_id, p.clock.now()).await?;
    let version = policy.version;
    Ok(Versioned::ok(policy, version))
}

pub(super) async fn create(
    State(app): State<Arc<App>>,
    caller: Caller,
    key: IdempotencyKey,
    Path(homeserver_id): Path<String>,
    ApiJson(spec): ApiJson<BackupPolicySpec>,
) -> AppResult<Response> {
    let fingerprint = idempotency::fingerprint(&format!("POST /v1/homeservers/{homeserver_id}/backup-policy"), &spec);
    let mut tx = match idempotency::begin(&app, &caller, &key, &fingerprint).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    let policy = domain::create(&mut tx, &caller.org_id, &homeserver_id, spec, app.platform.clock.now()).await?;
    idempotency::finish(tx, &caller, &key, Versioned::created(policy, 1)).await
}

pub(super) async fn update(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(homeserver_id): Path<String>,
    if_match: IfMatch,
    ApiJson(spec): ApiJson<BackupPolicySpec>,
) -> AppResult<Versioned<BackupPolicy>> {
    let p = &app.platform;
    let mut tx = p.db.begin().await?;
    let policy = domain::update(&mut tx, &caller.org_id, &homeserver_id, if_match.0, spec, p.clock.now()).await?;
    tx.commit().await?;
    let version = policy.version;
    Ok(Versioned::ok(policy, version))
}

pub(super) async fn remove(State(app): State<Arc<App>>, caller: Caller, Path(homeserver_id): Path<String>, if_match: IfMatch) -> AppResult<StatusCode> {
    let p = &app.platform;
    let mut tx = p.db.begin().await?;
    domain::delete(&mut tx, &caller.org_id, &homeserver_id, if_match.0, p.clock.now()).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
