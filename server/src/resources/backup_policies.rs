//! `/v1/homeservers/{id}/backup-policy` (one per homeserver) and `/v1/homeservers/{id}/backups`
//! (R4). Tables `backup_policies` and `backups`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, NaiveTime, Utc};
use matrixhost_api::{Backup, BackupPolicy, BackupPolicySpec, BackupSchedule, BackupStatus, Page, RetentionDays, WindowTime};
use sqlx::any::AnyRow;

use crate::db::{is_unique_violation, ts, RowExt, Tx};
use crate::error::{AppError, AppResult};
use crate::http::{ApiJson, Caller, IdempotencyKey, IfMatch, ListParams, Versioned};
use crate::idempotency::{self, Begun};
use crate::resources::homeservers;
use crate::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/homeservers/{homeserver_id}/backup-policy", get(read).post(create).put(update).delete(remove))
        .route("/v1/homeservers/{homeserver_id}/backups", get(list_backups))
}

/// R4: the first start of the daily window strictly after `now`.
pub fn next_window(now: DateTime<Utc>, window: &WindowTime) -> DateTime<Utc> {
    let minutes = window.minutes();
    let time = NaiveTime::from_hms_opt(minutes / 60, minutes % 60, 0).expect("a parsed window is a valid time");
    let today = now.date_naive().and_time(time).and_utc();
    if today > now {
        today
    } else {
        today + Duration::days(1)
    }
}

fn from_row(r: &AnyRow, now: DateTime<Utc>) -> anyhow::Result<BackupPolicy> {
    let window_start: WindowTime = r.parsed("window_start")?;
    Ok(BackupPolicy {
            id: r.text("id")?,
            homeserver_id: r.text("homeserver_id")?,
            schedule: BackupSchedule::parse(&r.text("schedule")?).map_err(anyhow::Error::msg)?,
            next_backup_at: next_window(now, &window_start),
            window_start,
            retention_days: RetentionDays::parse(r.int("retention_days")?).map_err(anyhow::Error::msg)?,
            encrypted: true,
            last_backup_at: r.opt_time("last_backup_at")?,
            created_at: r.time("created_at")?,
            updated_at: r.time("updated_at")?,
            version: r.int("version")?,
    })
}

async fn load(tx: &mut Tx<'_>, caller: &Caller, homeserver_id: &str, now: DateTime<Utc>) -> AppResult<BackupPolicy> {
    homeservers::load_or_404(tx, caller, homeserver_id).await?;
    let row = sqlx::query(
        "SELECT p.id, p.homeserver_id, p.schedule, p.window_start, p.retention_days, p.created_at, p.updated_at, p.version, \
         (SELECT MAX(b.started_at) FROM backups b WHERE b.homeserver_id = p.homeserver_id AND b.status = 'completed') AS last_backup_at \
         FROM backup_policies p WHERE p.homeserver_id = $1 AND p.org_id = $2",
    )
    .bind(homeserver_id)
    .bind(&caller.org_id)
    .fetch_optional(&mut **tx)
    .await?;
    let row = row.ok_or_else(|| AppError::not_found("backup policy"))?;
    Ok(from_row(&row, now)?)
}

async fn read(State(app): State<Arc<App>>, caller: Caller, Path(homeserver_id): Path<String>) -> AppResult<Versioned<BackupPolicy>> {
    let mut tx = app.db.begin().await?;
    let policy = load(&mut tx, &caller, &homeserver_id, app.clock.now()).await?;
    let version = policy.version;
    Ok(Versioned::ok(policy, version))
}

async fn create(
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
    let hs = homeservers::load_or_404(&mut tx, &caller, &homeserver_id).await?;
    homeservers::refuse_if_deleting(&hs)?;
    let now = app.clock.now();
    let id = crate::ids::new_id("bkp");
    let inserted = sqlx::query(
        "INSERT INTO backup_policies (id, org_id, homeserver_id, schedule, window_start, retention_days, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(&caller.org_id)
    .bind(&hs.id)
    .bind(spec.schedule.as_str())
    .bind(spec.window_start.as_str())
    .bind(i64::from(spec.retention_days.get()))
    .bind(ts(now))
    .bind(ts(now))
    .bind(1_i64)
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(AppError::conflict(
                "conflict",
                format!("homeserver `{}` already has a backup policy; update it instead", hs.name),
            ))
        }
        Err(e) => return Err(e.into()),
    }
    let policy = load(&mut tx, &caller, &homeserver_id, now).await?;
    tracing::info!(homeserver_id = %hs.id, backup_policy_id = %policy.id, "created backup policy");
    idempotency::finish(tx, &caller, &key, Versioned::created(policy, 1)).await
}

async fn update(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(homeserver_id): Path<String>,
    if_match: IfMatch,
    ApiJson(spec): ApiJson<BackupPolicySpec>,
) -> AppResult<Versioned<BackupPolicy>> {
    let now = app.clock.now();
    let mut tx = app.db.begin().await?;
    let current = load(&mut tx, &caller, &homeserver_id, now).await?;
    if_match.check(current.version, "backup policy")?;
    let done = sqlx::query(
        "UPDATE backup_policies SET schedule = $1, window_start = $2, retention_days = $3, updated_at = $4, version = $5 \
         WHERE id = $6 AND version = $7",
    )
    .bind(spec.schedule.as_str())
    .bind(spec.window_start.as_str())
    .bind(i64::from(spec.retention_days.get()))
    .bind(ts(now))
    .bind(current.version + 1)
    .bind(&current.id)
    .bind(current.version)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(AppError::conflict("version_conflict", "backup policy changed concurrently; read it again and retry"));
    }
    let policy = load(&mut tx, &caller, &homeserver_id, now).await?;
    tx.commit().await?;
    let version = policy.version;
    Ok(Versioned::ok(policy, version))
}

async fn remove(State(app): State<Arc<App>>, caller: Caller, Path(homeserver_id): Path<String>, if_match: IfMatch) -> AppResult<StatusCode> {
    let mut tx = app.db.begin().await?;
    let current = load(&mut tx, &caller, &homeserver_id, app.clock.now()).await?;
    if_match.check(current.version, "backup policy")?;
    sqlx::query("DELETE FROM backup_policies WHERE id = $1").bind(&current.id).execute(&mut *tx).await?;
    tx.commit().await?;
    tracing::info!(backup_policy_id = %current.id, "deleted backup policy; existing backups stay until they expire");
    Ok(StatusCode::NO_CONTENT)
}

fn backup_from_row(r: &AnyRow) -> anyhow::Result<Backup> {
    Ok(Backup {
        id: r.text("id")?,
        homeserver_id: r.text("homeserver_id")?,
        status: match r.text("status")?.as_str() {
            "completed" => BackupStatus::Completed,
            "failed" => BackupStatus::Failed,
            _ => BackupStatus::Running,
        },
        started_at: r.time("started_at")?,
        finished_at: r.opt_time("finished_at")?,
        size_bytes: r.opt_int("size_bytes")?,
        expires_at: r.time("expires_at")?,
        error: r.opt_text("error")?,
    })
}

/// Backups outlive a deleted homeserver until they expire, so the list answers for a deleted
/// homeserver of the organization as long as it has backups.
async fn list_backups(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(homeserver_id): Path<String>,
    params: ListParams,
) -> AppResult<axum::Json<Page<Backup>>> {
    let mut tx = app.db.begin().await?;
    let exists = homeservers::load(&mut tx, &caller.org_id, &homeserver_id).await?.is_some();
    let rows = sqlx::query(
        "SELECT id, homeserver_id, status, started_at, finished_at, size_bytes, expires_at, error FROM backups \
         WHERE homeserver_id = $1 AND org_id = $2 AND id > $3 ORDER BY id LIMIT $4",
    )
    .bind(&homeserver_id)
    .bind(&caller.org_id)
    .bind(params.after_id())
    .bind(params.fetch())
    .fetch_all(&mut *tx)
    .await?;
    if !exists && rows.is_empty() && params.after.is_none() {
        return Err(AppError::not_found("homeserver"));
    }
    let items = rows.iter().map(backup_from_row).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(axum::Json(params.page(items, |b| &b.id)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn r4_next_window_is_the_next_daily_start() {
        let w = WindowTime::parse("03:00").unwrap();
        let at = |h, m| Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap();
        assert_eq!(next_window(at(1, 0), &w), at(3, 0));
        assert_eq!(next_window(at(3, 0), &w), at(3, 0) + Duration::days(1));
        assert_eq!(next_window(at(23, 59), &w), at(3, 0) + Duration::days(1));
    }
}
