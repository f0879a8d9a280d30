//! `/v1/homeservers/{id}/backups` and `/v1/homeservers/{id}/restores` (R4, R18). Tables
//! `backups` and `restores`; the work itself is done by the backup worker (`backup/`).
//!
//! Backups outlive a deleted homeserver until they expire, so the backup routes answer for a
//! deleted homeserver of the organization as long as it has backups.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use matrixhost_api::{ErrorCode, Backup, BackupErasure, Page, Restore, RestoreCreate};

use super::idempotency::{self, Begun};
use super::{ApiJson, App, AppError, AppResult, Caller, IdempotencyKey, ListParams, Versioned};
use crate::backup;
use crate::db::lock_row;
use crate::domain::{backups as domain, homeservers};

/// Without a runtime nothing is backed up: the answer says so clearly.
fn refuse_without_runtime(app: &App) -> AppResult<()> {
    if !app.platform.hosts_homeservers() {
        return Err(AppError::conflict(ErrorCode::NotRunning, "this matrixhostd runs no homeservers (--no-runtime), so it takes no backups"));
    }
    Ok(())
}

pub(super) async fn list_backups(State(app): State<Arc<App>>, caller: Caller, Path(homeserver_id): Path<String>, params: ListParams) -> AppResult<Json<Page<Backup>>> {
    let items = domain::list(&app.platform.db, &caller.org_id, &homeserver_id, params.request()).await?;
    Ok(Json(params.page(items, |b| &b.id)))
}

pub(super) async fn read_backup(State(app): State<Arc<App>>, caller: Caller, Path((homeserver_id, backup_id)): Path<(String, String)>) -> AppResult<Json<Backup>> {
    let mut tx = app.platform.db.begin().await?;
    Ok(Json(domain::load_of(&mut tx, &caller.org_id, &homeserver_id, &backup_id).await?))
}

/// R4: an on-demand backup, taken by the worker at once (202; poll the backup).
pub(super) async fn take_backup(State(app): State<Arc<App>>, caller: Caller, key: IdempotencyKey, Path(homeserver_id): Path<String>) -> AppResult<Response> {
    let p = &app.platform;
    let fingerprint = idempotency::fingerprint(&format!("POST /v1/homeservers/{homeserver_id}/backups"), &());
    let mut tx = match idempotency::begin(&app, &caller, &key, &fingerprint).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    homeservers::load_or_404(&mut tx, &caller.org_id, &homeserver_id).await?;
    refuse_without_runtime(&app)?;
    // Serialises concurrent requests for the same homeserver (a row lock on PostgreSQL).
    lock_row(&mut tx, "homeservers", &homeserver_id).await?;
    let backup = domain::request_backup(&mut tx, &caller.org_id, &homeserver_id, p.clock.now()).await?;
    tracing::info!(homeserver_id, backup_id = %backup.id, "on-demand backup requested");
    let response = idempotency::finish(tx, &caller, &key, Versioned { status: StatusCode::ACCEPTED, body: backup, version: 1 }).await?;
    p.backups_changed();
    Ok(response)
}

/// Deletes one backup (its archive, then its record). Not while it is being written.
pub(super) async fn delete_backup(State(app): State<Arc<App>>, caller: Caller, Path((homeserver_id, backup_id)): Path<(String, String)>) -> AppResult<StatusCode> {
    let b = domain::deletable(&app.platform.db, &caller.org_id, &homeserver_id, &backup_id).await?;
    backup::delete_backup(&app.platform, &b).await?;
    tracing::info!(backup_id, "backup deleted on request");
    Ok(StatusCode::NO_CONTENT)
}

/// R18: erases every backup of the homeserver, archives included, on the customer's request.
/// Works after the homeserver was deleted too (its backups are otherwise kept until they
/// expire, R4). `erase=true` is required so that this is never done by accident.
pub(super) async fn erase_backups(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(homeserver_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> AppResult<Json<BackupErasure>> {
    if query.get("erase").map(String::as_str) != Some("true") {
        return Err(AppError::field("erase", "R18: pass erase=true to delete every backup of this homeserver; this cannot be undone"));
    }
    let refs = domain::erasable(&app.platform.db, &caller.org_id, &homeserver_id).await?;
    let mut deleted = 0;
    for b in refs {
        backup::delete_backup(&app.platform, &b).await?;
        deleted += 1;
    }
    tracing::info!(homeserver_id, deleted, "erased every backup of the homeserver on request (R18)");
    Ok(Json(BackupErasure { homeserver_id, deleted }))
}

pub(super) async fn list_restores(State(app): State<Arc<App>>, caller: Caller, Path(homeserver_id): Path<String>, params: ListParams) -> AppResult<Json<Page<Restore>>> {
    let items = domain::list_restores(&app.platform.db, &caller.org_id, &homeserver_id, params.request()).await?;
    Ok(Json(params.page(items, |r| &r.id)))
}

pub(super) async fn read_restore(State(app): State<Arc<App>>, caller: Caller, Path((homeserver_id, restore_id)): Path<(String, String)>) -> AppResult<Json<Restore>> {
    Ok(Json(domain::restore_of(&app.platform.db, &caller.org_id, &homeserver_id, &restore_id).await?))
}

/// R4: restores a completed backup into its homeserver (202; poll the restore). The homeserver
/// keeps running while the archive is verified, then is offline (`updating`) for the swap.
pub(super) async fn create_restore(
    State(app): State<Arc<App>>,
    caller: Caller,
    key: IdempotencyKey,
    Path(homeserver_id): Path<String>,
    ApiJson(body): ApiJson<RestoreCreate>,
) -> AppResult<Response> {
    let p = &app.platform;
    let fingerprint = idempotency::fingerprint(&format!("POST /v1/homeservers/{homeserver_id}/restores"), &body);
    let mut tx = match idempotency::begin(&app, &caller, &key, &fingerprint).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    homeservers::load_or_404(&mut tx, &caller.org_id, &homeserver_id).await?;
    refuse_without_runtime(&app)?;
    lock_row(&mut tx, "homeservers", &homeserver_id).await?;
    let restore = domain::request_restore(&mut tx, &caller.org_id, &homeserver_id, &body.backup_id, "api", p.clock.now()).await?;
    tracing::info!(homeserver_id, restore_id = %restore.id, backup_id = %body.backup_id, "restore requested");
    let response = idempotency::finish(tx, &caller, &key, Versioned { status: StatusCode::ACCEPTED, body: restore, version: 1 }).await?;
    p.backups_changed();
    Ok(response)
}
