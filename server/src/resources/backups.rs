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
use axum::routing::get;
use axum::Router;
use matrixhost_api::{Backup, BackupErasure, BackupStatus, Page, Restore, RestoreCreate};

use crate::backup::{self, records};
use crate::db::{lock_row, RowExt, Tx};
use crate::error::{AppError, AppResult};
use crate::http::{ApiJson, Caller, IdempotencyKey, ListParams, Versioned};
use crate::idempotency::{self, Begun};
use crate::resources::homeservers;
use crate::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/homeservers/{homeserver_id}/backups", get(list_backups).post(take_backup).delete(erase_backups))
        .route("/v1/homeservers/{homeserver_id}/backups/{backup_id}", get(read_backup).delete(delete_backup))
        .route("/v1/homeservers/{homeserver_id}/restores", get(list_restores).post(create_restore))
        .route("/v1/homeservers/{homeserver_id}/restores/{restore_id}", get(read_restore))
}

/// 404 unless the homeserver exists in the caller's organization or has backups there.
async fn check_visible(tx: &mut Tx<'_>, caller: &Caller, homeserver_id: &str) -> AppResult<()> {
    if homeservers::load(tx, &caller.org_id, homeserver_id).await?.is_some() {
        return Ok(());
    }
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM backups WHERE homeserver_id = $1 AND org_id = $2")
        .bind(homeserver_id)
        .bind(&caller.org_id)
        .fetch_one(&mut **tx)
        .await?;
    if kept == 0 {
        return Err(AppError::not_found("homeserver"));
    }
    Ok(())
}

async fn list_backups(State(app): State<Arc<App>>, caller: Caller, Path(homeserver_id): Path<String>, params: ListParams) -> AppResult<axum::Json<Page<Backup>>> {
    let mut tx = app.db.begin().await?;
    let exists = homeservers::load(&mut tx, &caller.org_id, &homeserver_id).await?.is_some();
    let rows = sqlx::query(&format!(
        "SELECT {} FROM backups WHERE homeserver_id = $1 AND org_id = $2 AND id > $3 ORDER BY id LIMIT $4",
        records::BACKUP_COLUMNS
    ))
    .bind(&homeserver_id)
    .bind(&caller.org_id)
    .bind(params.after_id())
    .bind(params.fetch())
    .fetch_all(&mut *tx)
    .await?;
    if !exists && rows.is_empty() && params.after.is_none() {
        return Err(AppError::not_found("homeserver"));
    }
    let items = rows.iter().map(records::backup_from_row).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(axum::Json(params.page(items, |b| &b.id)))
}

async fn load_backup(tx: &mut Tx<'_>, caller: &Caller, homeserver_id: &str, backup_id: &str) -> AppResult<Backup> {
    let row = sqlx::query(&format!("SELECT {} FROM backups WHERE id = $1 AND homeserver_id = $2 AND org_id = $3", records::BACKUP_COLUMNS))
        .bind(backup_id)
        .bind(homeserver_id)
        .bind(&caller.org_id)
        .fetch_optional(&mut **tx)
        .await?;
    let row = row.ok_or_else(|| AppError::not_found("backup"))?;
    Ok(records::backup_from_row(&row)?)
}

async fn read_backup(State(app): State<Arc<App>>, caller: Caller, Path((homeserver_id, backup_id)): Path<(String, String)>) -> AppResult<axum::Json<Backup>> {
    let mut tx = app.db.begin().await?;
    Ok(axum::Json(load_backup(&mut tx, &caller, &homeserver_id, &backup_id).await?))
}

/// R4: an on-demand backup, taken by the worker at once (202; poll the backup).
async fn take_backup(State(app): State<Arc<App>>, caller: Caller, key: IdempotencyKey, Path(homeserver_id): Path<String>) -> AppResult<Response> {
    let fingerprint = idempotency::fingerprint(&format!("POST /v1/homeservers/{homeserver_id}/backups"), &());
    let mut tx = match idempotency::begin(&app, &caller, &key, &fingerprint).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    homeservers::load_or_404(&mut tx, &caller, &homeserver_id).await?;
    backup::refuse_without_runtime(&app)?;
    // Serialises concurrent requests for the same homeserver (a row lock on PostgreSQL).
    lock_row(&mut tx, "homeservers", &homeserver_id).await?;
    let backup = backup::request_backup(&mut tx, &app, &caller.org_id, &homeserver_id).await?;
    tracing::info!(homeserver_id, backup_id = %backup.id, "on-demand backup requested");
    let response = idempotency::finish(tx, &caller, &key, Versioned { status: StatusCode::ACCEPTED, body: backup, version: 1 }).await?;
    app.backups_changed();
    Ok(response)
}

/// Deletes one backup (its archive, then its record). Not while it is being written.
async fn delete_backup(State(app): State<Arc<App>>, caller: Caller, Path((homeserver_id, backup_id)): Path<(String, String)>) -> AppResult<StatusCode> {
    let mut tx = app.db.begin().await?;
    let backup = load_backup(&mut tx, &caller, &homeserver_id, &backup_id).await?;
    refuse_while_in_use(&mut tx, &[backup]).await?;
    drop(tx);
    let key = records::object_key(&homeserver_id, &backup_id);
    backup::delete_backup(&app, &records::BackupRef { id: backup_id.clone(), homeserver_id, status: String::new(), object_key: Some(key) }).await?;
    tracing::info!(backup_id, "backup deleted on request");
    Ok(StatusCode::NO_CONTENT)
}

async fn refuse_while_in_use(tx: &mut Tx<'_>, backups: &[Backup]) -> AppResult<()> {
    if let Some(b) = backups.iter().find(|b| b.status == BackupStatus::Running) {
        return Err(AppError::conflict("backup_running", format!("backup {} is still being written; delete it once it has finished", b.id)));
    }
    for b in backups {
        let restoring: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM restores WHERE backup_id = $1 AND status IN ('pending', 'running')")
            .bind(&b.id)
            .fetch_one(&mut **tx)
            .await?;
        if restoring > 0 {
            return Err(AppError::conflict("restore_running", format!("backup {} is being restored; delete it once the restore has finished", b.id)));
        }
    }
    Ok(())
}

/// R18: erases every backup of the homeserver, archives included, on the customer's request.
/// Works after the homeserver was deleted too (its backups are otherwise kept until they
/// expire, R4). `erase=true` is required so that this is never done by accident.
async fn erase_backups(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(homeserver_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> AppResult<axum::Json<BackupErasure>> {
    if query.get("erase").map(String::as_str) != Some("true") {
        return Err(AppError::field("erase", "R18: pass erase=true to delete every backup of this homeserver; this cannot be undone"));
    }
    let mut tx = app.db.begin().await?;
    check_visible(&mut tx, &caller, &homeserver_id).await?;
    let rows = sqlx::query(&format!("SELECT {} FROM backups WHERE homeserver_id = $1 AND org_id = $2 ORDER BY id", records::BACKUP_COLUMNS))
        .bind(&homeserver_id)
        .bind(&caller.org_id)
        .fetch_all(&mut *tx)
        .await?;
    let backups = rows.iter().map(records::backup_from_row).collect::<anyhow::Result<Vec<_>>>()?;
    refuse_while_in_use(&mut tx, &backups).await?;
    let keys: Vec<(String, Option<String>)> = sqlx::query("SELECT id, object_key FROM backups WHERE homeserver_id = $1 AND org_id = $2")
        .bind(&homeserver_id)
        .bind(&caller.org_id)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| Ok((r.text("id")?, r.opt_text("object_key")?)))
        .collect::<anyhow::Result<_>>()?;
    drop(tx);
    let mut deleted = 0;
    for (id, object_key) in keys {
        backup::delete_backup(&app, &records::BackupRef { id, homeserver_id: homeserver_id.clone(), status: String::new(), object_key }).await?;
        deleted += 1;
    }
    tracing::info!(homeserver_id, deleted, "erased every backup of the homeserver on request (R18)");
    Ok(axum::Json(BackupErasure { homeserver_id, deleted }))
}

async fn list_restores(State(app): State<Arc<App>>, caller: Caller, Path(homeserver_id): Path<String>, params: ListParams) -> AppResult<axum::Json<Page<Restore>>> {
    let mut tx = app.db.begin().await?;
    homeservers::load_or_404(&mut tx, &caller, &homeserver_id).await?;
    let rows = sqlx::query(&format!(
        "SELECT {} FROM restores WHERE homeserver_id = $1 AND org_id = $2 AND id > $3 ORDER BY id LIMIT $4",
        records::RESTORE_COLUMNS
    ))
    .bind(&homeserver_id)
    .bind(&caller.org_id)
    .bind(params.after_id())
    .bind(params.fetch())
    .fetch_all(&mut *tx)
    .await?;
    let items = rows.iter().map(records::restore_from_row).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(axum::Json(params.page(items, |r| &r.id)))
}

async fn read_restore(State(app): State<Arc<App>>, caller: Caller, Path((homeserver_id, restore_id)): Path<(String, String)>) -> AppResult<axum::Json<Restore>> {
    let mut tx = app.db.begin().await?;
    let row = sqlx::query(&format!("SELECT {} FROM restores WHERE id = $1 AND homeserver_id = $2 AND org_id = $3", records::RESTORE_COLUMNS))
        .bind(&restore_id)
        .bind(&homeserver_id)
        .bind(&caller.org_id)
        .fetch_optional(&mut *tx)
        .await?;
    let row = row.ok_or_else(|| AppError::not_found("restore"))?;
    Ok(axum::Json(records::restore_from_row(&row)?))
}

/// R4: restores a completed backup into its homeserver (202; poll the restore). The homeserver
/// keeps running while the archive is verified, then is offline (`updating`) for the swap.
async fn create_restore(
    State(app): State<Arc<App>>,
    caller: Caller,
    key: IdempotencyKey,
    Path(homeserver_id): Path<String>,
    ApiJson(body): ApiJson<RestoreCreate>,
) -> AppResult<Response> {
    let fingerprint = idempotency::fingerprint(&format!("POST /v1/homeservers/{homeserver_id}/restores"), &body);
    let mut tx = match idempotency::begin(&app, &caller, &key, &fingerprint).await? {
        Begun::Replay(response) => return Ok(response),
        Begun::Fresh(tx) => tx,
    };
    homeservers::load_or_404(&mut tx, &caller, &homeserver_id).await?;
    backup::refuse_without_runtime(&app)?;
    lock_row(&mut tx, "homeservers", &homeserver_id).await?;
    let restore = backup::request_restore(&mut tx, &app, &caller.org_id, &homeserver_id, &body.backup_id, "api").await?;
    tracing::info!(homeserver_id, restore_id = %restore.id, backup_id = %body.backup_id, "restore requested");
    let response = idempotency::finish(tx, &caller, &key, Versioned { status: StatusCode::ACCEPTED, body: restore, version: 1 }).await?;
    app.backups_changed();
    Ok(response)
}
