//! `/v1/homeservers/{id}/backup-policy`, one per homeserver (R4). Table `backup_policies`. The
//! backups themselves are in `resources/backups.rs`; when they run is `backup::scheduler`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Duration, Utc};
use matrixhost_api::{BackupPolicy, BackupPolicySpec, BackupSchedule, RetentionDays, WindowTime};
use sqlx::any::AnyRow;

use crate::db::{is_unique_violation, ts, RowExt, Tx};
use crate::error::{AppError, AppResult};
use crate::http::{ApiJson, Caller, IdempotencyKey, IfMatch, Versioned};
use crate::idempotency::{self, Begun};
use crate::backup::scheduler;
use crate::resources::homeservers;
use crate::App;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/v1/homeservers/{homeserver_id}/backup-policy", get(read).post(create).put(update).delete(remove))
}

/// R4: `next_backup_at` is the scheduler's own answer: the next window, or now when a backup
/// is due (a catch-up after an outage), or a retry after a failure.
fn from_row(r: &AnyRow, now: DateTime<Utc>, attempts: &[scheduler::Attempt]) -> anyhow::Result<BackupPolicy> {
    let window_start: WindowTime = r.parsed("window_start")?;
    let created_at = r.time("created_at")?;
    Ok(BackupPolicy {
            id: r.text("id")?,
            homeserver_id: r.text("homeserver_id")?,
            schedule: BackupSchedule::parse(&r.text("schedule")?).map_err(anyhow::Error::msg)?,
            next_backup_at: scheduler::plan(&window_start, created_at, attempts, now).next_at,
            window_start,
            retention_days: RetentionDays::parse(r.int("retention_days")?).map_err(anyhow::Error::msg)?,
            encrypted: true,
            last_backup_at: r.opt_time("last_backup_at")?,
            created_at,
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
    let attempts = sqlx::query(
        "SELECT status, started_at, finished_at FROM backups WHERE homeserver_id = $1 AND kind = 'scheduled' AND started_at >= $2",
    )
    .bind(homeserver_id)
    .bind(ts(now - scheduler::LOOKBACK))
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|a| Ok(scheduler::Attempt { failed: a.text("status")? == "failed", started_at: a.time("started_at")?, finished_at: a.opt_time("finished_at")? }))
    .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(from_row(&row, now, &attempts)?)
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
    if spec.retention_days != current.retention_days {
        // R4: the retention applies to the backups already taken, too.
        let days = Duration::days(i64::from(spec.retention_days.get()));
        let rows = sqlx::query("SELECT id, started_at FROM backups WHERE homeserver_id = $1").bind(&homeserver_id).fetch_all(&mut *tx).await?;
        for r in &rows {
            sqlx::query("UPDATE backups SET expires_at = $1 WHERE id = $2")
                .bind(ts(r.time("started_at")? + days))
                .bind(r.text("id")?)
                .execute(&mut *tx)
                .await?;
        }
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
