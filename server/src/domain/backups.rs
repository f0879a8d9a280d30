//! Backups and restores (R4, R18): tables `backups` and `restores`. The HTTP handlers, the
//! backup worker and the operator's commands all go through these functions.

use chrono::{DateTime, Duration, Utc};
use matrixhost_api::{ErrorCode, Backup, BackupKind, BackupStatus, Restore, RestoreStatus, RetentionDays};
use sqlx::any::AnyRow;

use super::{homeservers, DomainError, DomainResult, PageRequest};
use crate::db::{ts, Db, RowExt, Tx};

/// R4: when a backup started at `started_at` expires under a retention of `days`. The one place
/// a backup's expiry is computed.
pub fn expiry(started_at: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    started_at + Duration::days(days)
}

/// Stored backup statuses. `pending` (an on-demand backup not started yet) shows as `running`.
pub const PENDING: &str = "pending";
pub const RUNNING: &str = "running";
pub const COMPLETED: &str = "completed";
pub const FAILED: &str = "failed";

pub const BACKUP_COLUMNS: &str = "id, homeserver_id, status, kind, started_at, finished_at, size_bytes, expires_at, error";
pub const RESTORE_COLUMNS: &str = "id, homeserver_id, backup_id, status, requested_by, requested_at, started_at, finished_at, error";

pub fn backup_from_row(r: &AnyRow) -> DomainResult<Backup> {
    Ok(Backup {
        id: r.text("id")?,
        homeserver_id: r.text("homeserver_id")?,
        status: match r.text("status")?.as_str() {
            COMPLETED => BackupStatus::Completed,
            FAILED => BackupStatus::Failed,
            _ => BackupStatus::Running,
        },
        kind: match r.text("kind")?.as_str() {
            "on_demand" => BackupKind::OnDemand,
            _ => BackupKind::Scheduled,
        },
        started_at: r.time("started_at")?,
        finished_at: r.opt_time("finished_at")?,
        size_bytes: r.opt_int("size_bytes")?,
        expires_at: r.time("expires_at")?,
        error: r.opt_text("error")?,
    })
}

pub fn restore_from_row(r: &AnyRow) -> DomainResult<Restore> {
    Ok(Restore {
        id: r.text("id")?,
        homeserver_id: r.text("homeserver_id")?,
        backup_id: r.text("backup_id")?,
        status: match r.text("status")?.as_str() {
            "pending" => RestoreStatus::Pending,
            "running" => RestoreStatus::Running,
            "completed" => RestoreStatus::Completed,
            _ => RestoreStatus::Failed,
        },
        requested_by: r.text("requested_by")?,
        requested_at: r.time("requested_at")?,
        started_at: r.opt_time("started_at")?,
        finished_at: r.opt_time("finished_at")?,
        error: r.opt_text("error")?,
    })
}

/// The archive's name in the store.
pub fn object_key(homeserver_id: &str, backup_id: &str) -> String {
    format!("{homeserver_id}/{backup_id}")
}

/// R4: how long a homeserver's backups are kept: its policy's retention, else the default 30.
pub async fn retention_days(tx: &mut Tx<'_>, homeserver_id: &str) -> sqlx::Result<i64> {
    let days: Option<i64> = sqlx::query_scalar("SELECT retention_days FROM backup_policies WHERE homeserver_id = $1")
        .bind(homeserver_id)
        .fetch_optional(&mut **tx)
        .await?;
    Ok(days.unwrap_or_else(|| i64::from(matrixhost_api::RetentionDays::default().get())))
}

/// Records an on-demand backup request; the worker starts it. Returns it as the API shows it.
async fn insert_pending_backup(tx: &mut Tx<'_>, org_id: &str, homeserver_id: &str, now: DateTime<Utc>) -> DomainResult<Backup> {
    let id = crate::ids::new_id("bk");
    let days = retention_days(tx, homeserver_id).await?;
    sqlx::query(
        "INSERT INTO backups (id, org_id, homeserver_id, status, kind, started_at, expires_at, object_key) \
         VALUES ($1, $2, $3, $4, 'on_demand', $5, $6, $7)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(homeserver_id)
    .bind(PENDING)
    .bind(ts(now))
    .bind(ts(expiry(now, days)))
    .bind(object_key(homeserver_id, &id))
    .execute(&mut **tx)
    .await?;
    load_backup(tx, &id).await?.ok_or_else(|| DomainError::internal(format!("backup {id} vanished")))
}

pub async fn load_backup(tx: &mut Tx<'_>, id: &str) -> DomainResult<Option<Backup>> {
    let row = sqlx::query(&format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE id = $1")).bind(id).fetch_optional(&mut **tx).await?;
    row.as_ref().map(backup_from_row).transpose()
}

/// Whether a backup of the homeserver is queued or being written.
pub async fn backup_in_progress(tx: &mut Tx<'_>, homeserver_id: &str) -> sqlx::Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM backups WHERE homeserver_id = $1 AND status IN ('pending', 'running')")
        .bind(homeserver_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(n > 0)
}

pub async fn restore_in_progress(tx: &mut Tx<'_>, homeserver_id: &str) -> sqlx::Result<bool> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM restores WHERE homeserver_id = $1 AND status IN ('pending', 'running')")
        .bind(homeserver_id)
        .fetch_one(&mut **tx)
        .await?;
    Ok(n > 0)
}

/// Records a restore request (`api` or `operator`); the worker carries it out.
async fn insert_restore(tx: &mut Tx<'_>, org_id: &str, homeserver_id: &str, backup_id: &str, requested_by: &str, now: DateTime<Utc>) -> DomainResult<Restore> {
    let id = crate::ids::new_id("rs");
    sqlx::query("INSERT INTO restores (id, org_id, homeserver_id, backup_id, status, requested_by, requested_at) VALUES ($1, $2, $3, $4, 'pending', $5, $6)")
        .bind(&id)
        .bind(org_id)
        .bind(homeserver_id)
        .bind(backup_id)
        .bind(requested_by)
        .bind(ts(now))
        .execute(&mut **tx)
        .await?;
    load_restore(tx, &id).await?.ok_or_else(|| DomainError::internal(format!("restore {id} vanished")))
}

pub async fn load_restore(tx: &mut Tx<'_>, id: &str) -> DomainResult<Option<Restore>> {
    let row = sqlx::query(&format!("SELECT {RESTORE_COLUMNS} FROM restores WHERE id = $1")).bind(id).fetch_optional(&mut **tx).await?;
    row.as_ref().map(restore_from_row).transpose()
}

/// After a crash: nothing can still be running. Interrupted backups and restores are failed
/// (never counted as complete); queued ones stay queued.
pub async fn fail_interrupted(db: &Db, now: DateTime<Utc>) -> DomainResult<(u64, u64)> {
    let backups = sqlx::query("UPDATE backups SET status = 'failed', finished_at = $1, error = $2 WHERE status = 'running'")
        .bind(ts(now))
        .bind("interrupted: matrixhostd stopped while this backup was being written; the partial archive was discarded")
        .execute(db)
        .await?
        .rows_affected();
    let restores = sqlx::query("UPDATE restores SET status = 'failed', finished_at = $1, error = $2 WHERE status = 'running'")
        .bind(ts(now))
        .bind("interrupted: matrixhostd stopped during this restore; run it again to finish it")
        .execute(db)
        .await?
        .rows_affected();
    Ok((backups, restores))
}

/// A policy as the scheduler needs it.
#[derive(Debug, Clone)]
pub struct PolicyRow {
    pub org_id: String,
    pub homeserver_id: String,
    pub homeserver_status: String,
    pub window_start: matrixhost_api::WindowTime,
    pub retention_days: i64,
    pub created_at: DateTime<Utc>,
}

pub async fn policies(db: &Db) -> DomainResult<Vec<PolicyRow>> {
    let rows = sqlx::query(
        "SELECT p.org_id, p.homeserver_id, h.status, p.window_start, p.retention_days, p.created_at \
         FROM backup_policies p JOIN homeservers h ON h.id = p.homeserver_id ORDER BY p.homeserver_id",
    )
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok::<_, DomainError>(PolicyRow {
                org_id: r.text("org_id")?,
                homeserver_id: r.text("homeserver_id")?,
                homeserver_status: r.text("status")?,
                window_start: r.parsed("window_start")?,
                retention_days: r.int("retention_days")?,
                created_at: r.time("created_at")?,
            })
        })
        .collect()
}

/// Scheduled backups started since `since`, by homeserver (the scheduler's memory).
pub async fn recent_attempts(db: &Db, homeserver_id: Option<&str>, since: DateTime<Utc>) -> DomainResult<Vec<(String, super::backup_schedule::Attempt)>> {
    let rows = sqlx::query(
        "SELECT homeserver_id, status, started_at, finished_at FROM backups \
         WHERE kind = 'scheduled' AND started_at >= $1 AND ($2 = '' OR homeserver_id = $2)",
    )
    .bind(ts(since))
    .bind(homeserver_id.unwrap_or(""))
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok::<_, DomainError>((
                r.text("homeserver_id")?,
                super::backup_schedule::Attempt {
                    failed: r.text("status")? == FAILED,
                    started_at: r.time("started_at")?,
                    finished_at: r.opt_time("finished_at")?,
                },
            ))
        })
        .collect()
}

/// Starts a scheduled backup: a `running` row from now.
pub async fn insert_running_backup(db: &Db, p: &PolicyRow, now: DateTime<Utc>) -> DomainResult<String> {
    let id = crate::ids::new_id("bk");
    sqlx::query(
        "INSERT INTO backups (id, org_id, homeserver_id, status, kind, started_at, expires_at, object_key) \
         VALUES ($1, $2, $3, 'running', 'scheduled', $4, $5, $6)",
    )
    .bind(&id)
    .bind(&p.org_id)
    .bind(&p.homeserver_id)
    .bind(ts(now))
    .bind(ts(expiry(now, p.retention_days)))
    .bind(object_key(&p.homeserver_id, &id))
    .execute(db)
    .await?;
    Ok(id)
}

/// Starts a queued on-demand backup; false if it is no longer queued (erased meanwhile).
pub async fn claim_pending_backup(db: &Db, id: &str, homeserver_id: &str, now: DateTime<Utc>) -> DomainResult<bool> {
    let mut tx = db.begin().await?;
    let days = retention_days(&mut tx, homeserver_id).await?;
    let done = sqlx::query("UPDATE backups SET status = 'running', started_at = $1, expires_at = $2 WHERE id = $3 AND status = 'pending'")
        .bind(ts(now))
        .bind(ts(expiry(now, days)))
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(done.rows_affected() == 1)
}

/// Counted complete only now, after the archive is durable under its final name.
pub async fn complete_backup(db: &Db, id: &str, size: u64, now: DateTime<Utc>) -> DomainResult<()> {
    sqlx::query("UPDATE backups SET status = 'completed', finished_at = $1, size_bytes = $2, error = NULL WHERE id = $3 AND status = 'running'")
        .bind(ts(now))
        .bind(i64::try_from(size).map_err(DomainError::internal)?)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn fail_backup(db: &Db, id: &str, error: &str, now: DateTime<Utc>) -> DomainResult<()> {
    sqlx::query("UPDATE backups SET status = 'failed', finished_at = $1, error = $2 WHERE id = $3 AND status IN ('pending', 'running')")
        .bind(ts(now))
        .bind(error)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Queued work: `(id, homeserver_id)`, oldest first.
pub async fn pending_backups(db: &Db) -> DomainResult<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT id, homeserver_id FROM backups WHERE status = 'pending' ORDER BY started_at, id").fetch_all(db).await?;
    rows.iter().map(|r| Ok::<_, DomainError>((r.text("id")?, r.text("homeserver_id")?))).collect()
}

pub async fn pending_restores(db: &Db) -> DomainResult<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT id, homeserver_id FROM restores WHERE status = 'pending' ORDER BY requested_at, id").fetch_all(db).await?;
    rows.iter().map(|r| Ok::<_, DomainError>((r.text("id")?, r.text("homeserver_id")?))).collect()
}

pub async fn claim_restore(db: &Db, id: &str, now: DateTime<Utc>) -> DomainResult<bool> {
    let done =
        sqlx::query("UPDATE restores SET status = 'running', started_at = $1 WHERE id = $2 AND status = 'pending'").bind(ts(now)).bind(id).execute(db).await?;
    Ok(done.rows_affected() == 1)
}

pub async fn finish_restore(db: &Db, id: &str, error: Option<&str>, now: DateTime<Utc>) -> DomainResult<()> {
    sqlx::query("UPDATE restores SET status = $1, finished_at = $2, error = $3 WHERE id = $4")
        .bind(if error.is_some() { FAILED } else { COMPLETED })
        .bind(ts(now))
        .bind(error)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// What a restore needs to know about its backup.
#[derive(Debug, Clone)]
pub struct BackupRef {
    pub id: String,
    pub homeserver_id: String,
    pub status: String,
    pub object_key: Option<String>,
}

fn backup_ref_from_row(r: &AnyRow) -> DomainResult<BackupRef> {
    Ok(BackupRef { id: r.text("id")?, homeserver_id: r.text("homeserver_id")?, status: r.text("status")?, object_key: r.opt_text("object_key")? })
}

pub async fn backup_ref(db: &Db, id: &str) -> DomainResult<Option<BackupRef>> {
    let row = sqlx::query("SELECT id, homeserver_id, status, object_key FROM backups WHERE id = $1").bind(id).fetch_optional(db).await?;
    row.as_ref().map(backup_ref_from_row).transpose()
}

/// R4: backups past their expiry, never one still being written, nor one a restore is reading.
pub async fn expired(db: &Db, now: DateTime<Utc>) -> DomainResult<Vec<BackupRef>> {
    let rows = sqlx::query(
        "SELECT id, homeserver_id, status, object_key FROM backups \
         WHERE status IN ('completed', 'failed') AND expires_at <= $1 \
         AND id NOT IN (SELECT backup_id FROM restores WHERE status IN ('pending', 'running')) ORDER BY expires_at, id",
    )
    .bind(ts(now))
    .fetch_all(db)
    .await?;
    rows.iter().map(backup_ref_from_row).collect()
}

/// R18: an organization being erased: its queued backups are cancelled, and every backup
/// that is not being written or read is returned for deletion.
pub async fn erasable_of_org(db: &Db, org_id: &str, now: DateTime<Utc>) -> DomainResult<Vec<BackupRef>> {
    sqlx::query("UPDATE backups SET status = 'failed', finished_at = $1, error = 'the account is being erased' WHERE org_id = $2 AND status = 'pending'")
        .bind(ts(now))
        .bind(org_id)
        .execute(db)
        .await?;
    let rows = sqlx::query(
        "SELECT id, homeserver_id, status, object_key FROM backups WHERE org_id = $1 AND status IN ('completed', 'failed') \
         AND id NOT IN (SELECT backup_id FROM restores WHERE status IN ('pending', 'running')) ORDER BY id",
    )
    .bind(org_id)
    .fetch_all(db)
    .await?;
    rows.iter().map(backup_ref_from_row).collect()
}

/// The row goes after its archive, so a crash in between leaves a row whose archive is
/// already gone, and deleting it again is harmless (idempotent).
pub async fn delete_backup_row(db: &Db, id: &str) -> DomainResult<bool> {
    let done = sqlx::query("DELETE FROM backups WHERE id = $1 AND status IN ('completed', 'failed')").bind(id).execute(db).await?;
    Ok(done.rows_affected() == 1)
}

/// The homeserver's status and why, as the restore waits for it to come back.
pub async fn homeserver_status(db: &Db, id: &str) -> DomainResult<Option<(String, Option<String>)>> {
    let row = sqlx::query("SELECT status, status_reason FROM homeservers WHERE id = $1").bind(id).fetch_optional(db).await?;
    row.map(|r| Ok::<_, DomainError>((r.text("status")?, r.opt_text("status_reason")?))).transpose()
}

/// The status the API shows for a homeserver (as the runtime sets it; never over `deleting`).
pub async fn set_homeserver_status(db: &Db, id: &str, status: matrixhost_api::HomeserverStatus, reason: Option<&str>, now: DateTime<Utc>) -> DomainResult<()> {
    sqlx::query("UPDATE homeservers SET status = $1, status_reason = $2, updated_at = $3 WHERE id = $4 AND status <> 'deleting'")
        .bind(status.as_str())
        .bind(reason)
        .bind(ts(now))
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// After a restore: reserved users changed since the backup was taken are synced to the
/// restored database again (an account created since then is missing from it).
pub async fn resync_reserved_accounts(db: &Db, homeserver_id: &str, backup_id: &str) -> DomainResult<()> {
    sqlx::query(
        "UPDATE reserved_users SET account_synced_version = NULL WHERE homeserver_id = $1 \
         AND updated_at >= (SELECT started_at FROM backups WHERE id = $2)",
    )
    .bind(homeserver_id)
    .bind(backup_id)
    .execute(db)
    .await?;
    Ok(())
}

/// R4: a new retention applies to the backups already taken, too.
pub async fn apply_retention(tx: &mut Tx<'_>, homeserver_id: &str, days: RetentionDays) -> DomainResult<()> {
    let rows = sqlx::query("SELECT id, started_at FROM backups WHERE homeserver_id = $1").bind(homeserver_id).fetch_all(&mut **tx).await?;
    for r in &rows {
        sqlx::query("UPDATE backups SET expires_at = $1 WHERE id = $2")
            .bind(ts(expiry(r.time("started_at")?, i64::from(days.get()))))
            .bind(r.text("id")?)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

fn status_of(status: &str) -> Option<&str> {
    matches!(status, "running" | "blocked" | "updating" | "failed").then_some(status)
}

/// R4: records an on-demand backup of a homeserver of the organization `org_id`.
pub async fn request_backup(tx: &mut Tx<'_>, org_id: &str, homeserver_id: &str, now: DateTime<Utc>) -> DomainResult<Backup> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM homeservers WHERE id = $1 AND org_id = $2").bind(homeserver_id).bind(org_id).fetch_optional(&mut **tx).await?;
    let status = status.ok_or(DomainError::NotFound("homeserver"))?;
    if status_of(&status).is_none() {
        return Err(DomainError::conflict(ErrorCode::NotRunning, format!("homeserver {homeserver_id} is {status}; it can be backed up once it runs")));
    }
    if backup_in_progress(tx, homeserver_id).await? {
        return Err(DomainError::conflict(ErrorCode::BackupRunning, "a backup of this homeserver is already running; wait for it to finish"));
    }
    insert_pending_backup(tx, org_id, homeserver_id, now).await
}

/// R4: records a restore of `backup_id` into `homeserver_id`, after checking that it can run.
pub async fn request_restore(
    tx: &mut Tx<'_>,
    org_id: &str,
    homeserver_id: &str,
    backup_id: &str,
    requested_by: &str,
    now: DateTime<Utc>,
) -> DomainResult<Restore> {
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM homeservers WHERE id = $1 AND org_id = $2").bind(homeserver_id).bind(org_id).fetch_optional(&mut **tx).await?;
    let status = status.ok_or(DomainError::NotFound("homeserver"))?;
    let found = sqlx::query_scalar::<_, String>("SELECT id FROM backups WHERE id = $1 AND homeserver_id = $2 AND org_id = $3")
        .bind(backup_id)
        .bind(homeserver_id)
        .bind(org_id)
        .fetch_optional(&mut **tx)
        .await?;
    if found.is_none() {
        return Err(DomainError::Missing { field: "backup_id".into(), message: format!("backup_id: no backup {backup_id} of this homeserver") });
    }
    let backup = load_backup(tx, backup_id).await?.ok_or(DomainError::NotFound("backup"))?;
    if backup.status != BackupStatus::Completed {
        let what = match backup.status {
            BackupStatus::Running => "still being written",
            _ => "failed",
        };
        return Err(DomainError::conflict_on(
            ErrorCode::BackupNotRestorable,
            "backup_id",
            format!("R4: backup {backup_id} is {what}; only a completed backup can be restored"),
        ));
    }
    if matches!(status.as_str(), "provisioning" | "deleting") {
        return Err(DomainError::conflict(ErrorCode::NotRunning, format!("homeserver {homeserver_id} is {status}; it cannot take a restore")));
    }
    if restore_in_progress(tx, homeserver_id).await? {
        return Err(DomainError::conflict(ErrorCode::RestoreRunning, "a restore of this homeserver is already pending or running"));
    }
    insert_restore(tx, org_id, homeserver_id, backup_id, requested_by, now).await
}

/// Not found unless the homeserver exists in the organization or still has backups there
/// (backups outlive a deleted homeserver until they expire).
pub async fn check_visible(tx: &mut Tx<'_>, org_id: &str, homeserver_id: &str) -> DomainResult<()> {
    if homeservers::load(tx, org_id, homeserver_id).await?.is_some() {
        return Ok(());
    }
    let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM backups WHERE homeserver_id = $1 AND org_id = $2")
        .bind(homeserver_id)
        .bind(org_id)
        .fetch_one(&mut **tx)
        .await?;
    if kept == 0 {
        return Err(DomainError::NotFound("homeserver"));
    }
    Ok(())
}

pub async fn list(db: &Db, org_id: &str, homeserver_id: &str, page: PageRequest<'_>) -> DomainResult<Vec<Backup>> {
    let mut tx = db.begin().await?;
    let exists = homeservers::load(&mut tx, org_id, homeserver_id).await?.is_some();
    let rows = sqlx::query(&format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE homeserver_id = $1 AND org_id = $2 AND id > $3 ORDER BY id LIMIT $4"))
        .bind(homeserver_id)
        .bind(org_id)
        .bind(page.after)
        .bind(page.fetch)
        .fetch_all(&mut *tx)
        .await?;
    if !exists && rows.is_empty() && page.after.is_empty() {
        return Err(DomainError::NotFound("homeserver"));
    }
    rows.iter().map(backup_from_row).collect::<DomainResult<Vec<_>>>()
}

pub async fn load_of(tx: &mut Tx<'_>, org_id: &str, homeserver_id: &str, backup_id: &str) -> DomainResult<Backup> {
    let row = sqlx::query(&format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE id = $1 AND homeserver_id = $2 AND org_id = $3"))
        .bind(backup_id)
        .bind(homeserver_id)
        .bind(org_id)
        .fetch_optional(&mut **tx)
        .await?;
    let row = row.ok_or(DomainError::NotFound("backup"))?;
    backup_from_row(&row)
}

/// A backup being written or read by a restore is not deleted.
pub async fn refuse_while_in_use(tx: &mut Tx<'_>, backups: &[Backup]) -> DomainResult<()> {
    if let Some(b) = backups.iter().find(|b| b.status == BackupStatus::Running) {
        return Err(DomainError::conflict(ErrorCode::BackupRunning, format!("backup {} is still being written; delete it once it has finished", b.id)));
    }
    for b in backups {
        let restoring: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM restores WHERE backup_id = $1 AND status IN ('pending', 'running')")
            .bind(&b.id)
            .fetch_one(&mut **tx)
            .await?;
        if restoring > 0 {
            return Err(DomainError::conflict(ErrorCode::RestoreRunning, format!("backup {} is being restored; delete it once the restore has finished", b.id)));
        }
    }
    Ok(())
}

/// R18: every backup of the homeserver, checked to be deletable now.
pub async fn erasable(db: &Db, org_id: &str, homeserver_id: &str) -> DomainResult<Vec<BackupRef>> {
    let mut tx = db.begin().await?;
    check_visible(&mut tx, org_id, homeserver_id).await?;
    let rows = sqlx::query(&format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE homeserver_id = $1 AND org_id = $2 ORDER BY id"))
        .bind(homeserver_id)
        .bind(org_id)
        .fetch_all(&mut *tx)
        .await?;
    let backups = rows.iter().map(backup_from_row).collect::<DomainResult<Vec<_>>>()?;
    refuse_while_in_use(&mut tx, &backups).await?;
    let refs = sqlx::query("SELECT id, homeserver_id, status, object_key FROM backups WHERE homeserver_id = $1 AND org_id = $2")
        .bind(homeserver_id)
        .bind(org_id)
        .fetch_all(&mut *tx)
        .await?;
    refs.iter().map(backup_ref_from_row).collect()
}

/// One backup, checked to be deletable now.
pub async fn deletable(db: &Db, org_id: &str, homeserver_id: &str, backup_id: &str) -> DomainResult<BackupRef> {
    let mut tx = db.begin().await?;
    let backup = load_of(&mut tx, org_id, homeserver_id, backup_id).await?;
    refuse_while_in_use(&mut tx, std::slice::from_ref(&backup)).await?;
    let object_key: Option<String> = sqlx::query_scalar("SELECT object_key FROM backups WHERE id = $1").bind(backup_id).fetch_one(&mut *tx).await?;
    Ok(BackupRef { id: backup.id, homeserver_id: backup.homeserver_id, status: String::new(), object_key })
}

pub async fn list_restores(db: &Db, org_id: &str, homeserver_id: &str, page: PageRequest<'_>) -> DomainResult<Vec<Restore>> {
    let mut tx = db.begin().await?;
    homeservers::load_or_404(&mut tx, org_id, homeserver_id).await?;
    let rows = sqlx::query(&format!("SELECT {RESTORE_COLUMNS} FROM restores WHERE homeserver_id = $1 AND org_id = $2 AND id > $3 ORDER BY id LIMIT $4"))
        .bind(homeserver_id)
        .bind(org_id)
        .bind(page.after)
        .bind(page.fetch)
        .fetch_all(&mut *tx)
        .await?;
    rows.iter().map(restore_from_row).collect::<DomainResult<Vec<_>>>()
}

pub async fn restore_of(db: &Db, org_id: &str, homeserver_id: &str, restore_id: &str) -> DomainResult<Restore> {
    let row = sqlx::query(&format!("SELECT {RESTORE_COLUMNS} FROM restores WHERE id = $1 AND homeserver_id = $2 AND org_id = $3"))
        .bind(restore_id)
        .bind(homeserver_id)
        .bind(org_id)
        .fetch_optional(db)
        .await?;
    let row = row.ok_or(DomainError::NotFound("restore"))?;
    restore_from_row(&row)
}

/// `matrixhostd backup list`: a homeserver's backups, oldest first (also of a deleted one).
pub async fn all_of(db: &Db, homeserver_id: &str) -> DomainResult<Vec<Backup>> {
    let rows = sqlx::query(&format!("SELECT {BACKUP_COLUMNS} FROM backups WHERE homeserver_id = $1 ORDER BY started_at, id"))
        .bind(homeserver_id)
        .fetch_all(db)
        .await?;
    rows.iter().map(backup_from_row).collect::<DomainResult<Vec<_>>>()
}

/// The organization a homeserver belongs to, or one whose backups outlive it.
pub async fn org_of_homeserver(db: &Db, homeserver_id: &str) -> DomainResult<Option<String>> {
    Ok(sqlx::query_scalar("SELECT org_id FROM homeservers WHERE id = $1").bind(homeserver_id).fetch_optional(db).await?)
}

/// The homeserver a backup belongs to.
pub async fn homeserver_of_backup(db: &Db, backup_id: &str) -> DomainResult<Option<String>> {
    Ok(sqlx::query_scalar("SELECT homeserver_id FROM backups WHERE id = $1").bind(backup_id).fetch_optional(db).await?)
}
