//! Backup policies, one per homeserver (R4). Table `backup_policies`. The backups themselves
//! are in `backups.rs`; when they run is `backup_schedule.rs`.

use chrono::{DateTime, Utc};
use matrixhost_api::{ErrorCode, BackupPolicy, BackupPolicySpec, BackupSchedule, RetentionDays, WindowTime};
use sqlx::any::AnyRow;

use super::backup_schedule as scheduler;
use super::{backups, check_version, homeservers, DomainError, DomainResult};
use crate::db::{is_unique_violation, ts, RowExt, Tx};

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

pub async fn load(tx: &mut Tx<'_>, org_id: &str, homeserver_id: &str, now: DateTime<Utc>) -> DomainResult<BackupPolicy> {
    homeservers::load_or_404(tx, org_id, homeserver_id).await?;
    let row = sqlx::query(
        "SELECT p.id, p.homeserver_id, p.schedule, p.window_start, p.retention_days, p.created_at, p.updated_at, p.version, \
         (SELECT MAX(b.started_at) FROM backups b WHERE b.homeserver_id = p.homeserver_id AND b.status = 'completed') AS last_backup_at \
         FROM backup_policies p WHERE p.homeserver_id = $1 AND p.org_id = $2",
    )
    .bind(homeserver_id)
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await?;
    let row = row.ok_or(DomainError::NotFound("backup policy"))?;
    let attempts = sqlx::query("SELECT status, started_at, finished_at FROM backups WHERE homeserver_id = $1 AND kind = 'scheduled' AND started_at >= $2")
        .bind(homeserver_id)
        .bind(ts(now - scheduler::LOOKBACK))
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|a| Ok(scheduler::Attempt { failed: a.text("status")? == "failed", started_at: a.time("started_at")?, finished_at: a.opt_time("finished_at")? }))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(from_row(&row, now, &attempts)?)
}

pub async fn create(tx: &mut Tx<'_>, org_id: &str, homeserver_id: &str, spec: BackupPolicySpec, now: DateTime<Utc>) -> DomainResult<BackupPolicy> {
    let hs = homeservers::load_or_404(tx, org_id, homeserver_id).await?;
    homeservers::refuse_if_deleting(&hs)?;
    let id = crate::ids::new_id("bkp");
    let inserted = sqlx::query(
        "INSERT INTO backup_policies (id, org_id, homeserver_id, schedule, window_start, retention_days, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(&hs.id)
    .bind(spec.schedule.as_str())
    .bind(spec.window_start.as_str())
    .bind(i64::from(spec.retention_days.get()))
    .bind(ts(now))
    .bind(ts(now))
    .bind(1_i64)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(DomainError::conflict(ErrorCode::Conflict, format!("homeserver `{}` already has a backup policy; update it instead", hs.name)))
        }
        Err(e) => return Err(e.into()),
    }
    let policy = load(tx, org_id, homeserver_id, now).await?;
    tracing::info!(homeserver_id = %hs.id, backup_policy_id = %policy.id, "created backup policy");
    Ok(policy)
}

pub async fn update(
    tx: &mut Tx<'_>,
    org_id: &str,
    homeserver_id: &str,
    expected_version: Option<i64>,
    spec: BackupPolicySpec,
    now: DateTime<Utc>,
) -> DomainResult<BackupPolicy> {
    let current = load(tx, org_id, homeserver_id, now).await?;
    check_version(expected_version, current.version, "backup policy")?;
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
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(DomainError::version_conflict("backup policy"));
    }
    if spec.retention_days != current.retention_days {
        // R4: the retention applies to the backups already taken, too.
        backups::apply_retention(tx, homeserver_id, spec.retention_days).await?;
    }
    load(tx, org_id, homeserver_id, now).await
}

pub async fn delete(tx: &mut Tx<'_>, org_id: &str, homeserver_id: &str, expected_version: Option<i64>, now: DateTime<Utc>) -> DomainResult<()> {
    let current = load(tx, org_id, homeserver_id, now).await?;
    check_version(expected_version, current.version, "backup policy")?;
    sqlx::query("DELETE FROM backup_policies WHERE id = $1").bind(&current.id).execute(&mut **tx).await?;
    tracing::info!(backup_policy_id = %current.id, "deleted backup policy; existing backups stay until they expire");
    Ok(())
}
