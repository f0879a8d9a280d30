//! What the runtime needs to know and records about each hosted homeserver: the target (the
//! homeserver as the API wants it, with what its subscription says) and table
//! `homeserver_runtime` (its ingress port, Synapse secrets sealed with the control plane's key,
//! and what was last applied). Volume keys are not here: only the node agent holds them.

use chrono::{DateTime, Utc};
use matrixhost_api::{BillingStatus, Catalog, Homeserver, HomeserverStatus, Plan};

use super::{homeservers, DomainError, DomainResult};
use crate::db::{ts, Db, RowExt, Tx};

/// A homeserver as the API wants it, with what the runtime needs from its subscription.
#[derive(Debug, Clone)]
pub struct Target {
    pub homeserver: Homeserver,
    /// R5/R10: the plan in force plus Additional Users.
    pub mau_cap: u32,
    /// The plan in force: its resource limits (R5) and storage limit (R12).
    pub plan: Plan,
    /// R12: why logins are blocked by billing or the operator, if they are.
    pub blocked: Option<String>,
    pub reserved: Vec<ReservedAccount>,
    /// The version of the subscription this target was read at.
    pub plan_version: i64,
}

#[derive(Debug, Clone)]
pub struct ReservedAccount {
    pub id: String,
    pub email: String,
    pub localpart: Option<String>,
    pub display_name: Option<String>,
    pub admin: bool,
    pub password_sealed: Option<String>,
    pub version: i64,
    pub synced_version: Option<i64>,
    /// The version the homeserver last put into effect (see `domain::apply`).
    pub applied_version: Option<i64>,
}

/// The message users see while a payment is outstanding (R12).
pub const PAYMENT_BLOCK: &str = "R12: this homeserver is blocked until an outstanding payment is settled.";

pub async fn homeserver_ids(db: &Db) -> DomainResult<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT id, org_id FROM homeservers ORDER BY id").fetch_all(db).await?;
    rows.iter().map(|r| Ok::<_, DomainError>((r.text("id")?, r.text("org_id")?))).collect()
}

pub async fn target(db: &Db, org_id: &str, id: &str, now: DateTime<Utc>, catalog: &Catalog) -> DomainResult<Option<Target>> {
    let mut tx = db.begin().await?;
    let Some(hs) = homeservers::load(&mut tx, org_id, id).await? else {
        return Ok(None);
    };
    let sub = homeservers::subscription(&mut tx, org_id, &hs, now).await?;
    let plan = sub.active(catalog)?.clone();
    let operator_block: Option<String> = sqlx::query_scalar("SELECT blocked_reason FROM homeservers WHERE id = $1").bind(id).fetch_one(&mut *tx).await?;
    // R12: a failed payment blocks every user until it is paid.
    let blocked = match (sub.status, operator_block) {
        (BillingStatus::PastDue, _) => Some(PAYMENT_BLOCK.to_owned()),
        (_, Some(reason)) => Some(reason),
        _ => None,
    };
    let rows = sqlx::query(
        "SELECT id, email, localpart, display_name, admin, initial_password_sealed, version, account_synced_version, applied_version \
         FROM reserved_users WHERE homeserver_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let reserved = rows
        .iter()
        .map(|r| {
            Ok::<_, DomainError>(ReservedAccount {
                id: r.text("id")?,
                email: r.text("email")?,
                localpart: r.opt_text("localpart")?,
                display_name: r.opt_text("display_name")?,
                admin: r.flag("admin")?,
                password_sealed: r.opt_text("initial_password_sealed")?,
                version: r.int("version")?,
                synced_version: r.opt_int("account_synced_version")?,
                applied_version: r.opt_int("applied_version")?,
            })
        })
        .collect::<DomainResult<Vec<_>>>()?;
    Ok(Some(Target { mau_cap: sub.mau_cap(catalog)?, plan, blocked, reserved, plan_version: sub.version, homeserver: hs }))
}

/// What the runtime keeps per homeserver.
#[derive(Debug, Clone)]
pub struct RuntimeRow {
    pub port: u16,
    pub secrets_sealed: String,
    pub admin_token_sealed: Option<String>,
    /// The fingerprint of the spec last started.
    pub applied_fingerprint: Option<String>,
    /// The limits last given to the agent (`memory_mb/cpu_millicores`).
    pub applied_limits: Option<String>,
    pub tenant_uid: Option<u32>,
    /// OOM kills already recorded as events.
    pub oom_kills_seen: u64,
    /// R12: whether the homeserver is blocked for storage (for events on change).
    pub storage_blocked: bool,
}

pub async fn runtime_row(db: &Db, id: &str) -> DomainResult<Option<RuntimeRow>> {
    let row = sqlx::query(
        "SELECT port, secrets_sealed, admin_token_sealed, applied_config_hash, applied_limits, tenant_uid, oom_kills_seen, storage_blocked \
         FROM homeserver_runtime WHERE homeserver_id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok::<_, DomainError>(RuntimeRow {
            port: u16::try_from(r.int("port")?).map_err(DomainError::internal)?,
            secrets_sealed: r.text("secrets_sealed")?,
            admin_token_sealed: r.opt_text("admin_token_sealed")?,
            applied_fingerprint: r.opt_text("applied_config_hash")?,
            applied_limits: r.opt_text("applied_limits")?,
            tenant_uid: r.opt_int("tenant_uid")?.and_then(|u| u32::try_from(u).ok()),
            oom_kills_seen: u64::try_from(r.int("oom_kills_seen")?).unwrap_or(0),
            storage_blocked: r.flag("storage_blocked")?,
        })
    })
    .transpose()
}

/// Records a new homeserver's runtime row with the lowest free port in the range.
pub async fn insert_runtime_row(db: &Db, id: &str, range: (u16, u16), secrets_sealed: &str, now: DateTime<Utc>) -> DomainResult<u16> {
    let mut tx = db.begin().await?;
    let used: Vec<i64> = sqlx::query_scalar("SELECT port FROM homeserver_runtime").fetch_all(&mut *tx).await?;
    let port = (range.0..=range.1)
        .find(|p| !used.contains(&i64::from(*p)) && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .ok_or_else(|| DomainError::internal(format!("no free homeserver port in {}-{}", range.0, range.1)))?;
    sqlx::query(
        "INSERT INTO homeserver_runtime (homeserver_id, port, secrets_sealed, volume_size_gb, created_at, updated_at, version) \
         VALUES ($1, $2, $3, 0, $4, $5, 1)",
    )
    .bind(id)
    .bind(i64::from(port))
    .bind(secrets_sealed)
    .bind(ts(now))
    .bind(ts(now))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(port)
}

/// A column of `homeserver_runtime` the runtime records.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    AdminTokenSealed,
    AppliedFingerprint,
    AppliedLimits,
}

impl Field {
    fn column(self) -> &'static str {
        match self {
            Field::AdminTokenSealed => "admin_token_sealed",
            Field::AppliedFingerprint => "applied_config_hash",
            Field::AppliedLimits => "applied_limits",
        }
    }
}

pub async fn set_runtime_field(db: &Db, id: &str, field: Field, value: Option<String>, now: DateTime<Utc>) -> DomainResult<()> {
    sqlx::query(&format!("UPDATE homeserver_runtime SET {} = $1, updated_at = $2 WHERE homeserver_id = $3", field.column()))
        .bind(value)
        .bind(ts(now))
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_tenant_uid(db: &Db, id: &str, uid: u32) -> DomainResult<()> {
    sqlx::query("UPDATE homeserver_runtime SET tenant_uid = $1 WHERE homeserver_id = $2").bind(i64::from(uid)).bind(id).execute(db).await?;
    Ok(())
}

pub async fn set_oom_kills_seen(db: &Db, id: &str, seen: u64) -> DomainResult<()> {
    sqlx::query("UPDATE homeserver_runtime SET oom_kills_seen = $1 WHERE homeserver_id = $2")
        .bind(i64::try_from(seen).unwrap_or(i64::MAX))
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_storage_blocked(db: &Db, id: &str, blocked: bool) -> DomainResult<()> {
    sqlx::query("UPDATE homeserver_runtime SET storage_blocked = $1 WHERE homeserver_id = $2").bind(i64::from(blocked)).bind(id).execute(db).await?;
    Ok(())
}

/// Sets the status the API shows. Only the runtime moves a homeserver out of `provisioning`.
/// With `only_at_version`, a pass that read the homeserver before a newer change does not
/// report on it.
pub async fn set_status(
    db: &Db,
    id: &str,
    status: HomeserverStatus,
    reason: Option<&str>,
    urls: Option<(&str, &str)>,
    now: DateTime<Utc>,
    only_at_version: Option<i64>,
) -> DomainResult<()> {
    sqlx::query(
        "UPDATE homeservers SET status = $1, status_reason = $2, client_url = COALESCE($3, client_url), \
         privacy_notice_url = COALESCE($4, privacy_notice_url), updated_at = $5 WHERE id = $6 AND status <> 'deleting' \
         AND ($7 < 0 OR version = $7)",
    )
    .bind(status.as_str())
    .bind(reason)
    .bind(urls.map(|u| u.0.to_owned()))
    .bind(urls.map(|u| u.1.to_owned()))
    .bind(ts(now))
    .bind(id)
    .bind(only_at_version.unwrap_or(-1))
    .execute(db)
    .await?;
    Ok(())
}

/// Reserved user id -> the version its account was last synced at, for one homeserver.
pub async fn account_synced_versions(db: &Db, homeserver_id: &str) -> DomainResult<std::collections::HashMap<String, Option<i64>>> {
    let rows = sqlx::query("SELECT id, account_synced_version FROM reserved_users WHERE homeserver_id = $1").bind(homeserver_id).fetch_all(db).await?;
    rows.iter().map(|r| Ok::<_, DomainError>((r.text("id")?, r.opt_int("account_synced_version")?))).collect()
}

/// The homeserver runs with `target` in effect: each reserved user's slot (and its account,
/// when it has one, synced at that version) and the subscription at the version read. A row
/// changed since the target was read keeps its newer version pending.
pub async fn mark_applied(db: &Db, target: &Target) -> DomainResult<()> {
    let mut tx = db.begin().await?;
    for r in target.reserved.iter().filter(|r| r.applied_version != Some(r.version)) {
        sqlx::query(
            "UPDATE reserved_users SET applied_version = version WHERE id = $1 AND version = $2 \
             AND (localpart IS NULL OR account_synced_version = version)",
        )
        .bind(&r.id)
        .bind(r.version)
        .execute(&mut *tx)
        .await?;
    }
    sqlx::query("UPDATE billing_plans SET applied_version = version WHERE id = $1 AND version = $2")
        .bind(&target.homeserver.billing_plan_id)
        .bind(target.plan_version)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The account now reflects this version of the reserved user; the initial password is
/// dropped. `error` is the platform's own words (never the homeserver's).
pub async fn mark_account_synced(db: &Db, reserved_id: &str, version: i64, error: Option<&str>) -> DomainResult<()> {
    if let Some(error) = error {
        sqlx::query("UPDATE reserved_users SET account_error = $1 WHERE id = $2").bind(error).bind(reserved_id).execute(db).await?;
        return Ok(());
    }
    sqlx::query(
        "UPDATE reserved_users SET account_synced_version = $1, account_error = NULL, initial_password_sealed = NULL WHERE id = $2 AND version = $1",
    )
    .bind(version)
    .bind(reserved_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Removes a deleted homeserver's rows once its runtime resources are gone. Backups stay (R4).
pub async fn forget_homeserver(db: &Db, id: &str) -> DomainResult<()> {
    let mut tx = db.begin().await?;
    forget_homeserver_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn forget_homeserver_in(tx: &mut Tx<'_>, id: &str) -> DomainResult<()> {
    for table in ["reserved_users", "backup_policies", "homeserver_runtime", "consent_acceptances", "homeserver_events"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE homeserver_id = $1")).bind(id).execute(&mut **tx).await?;
    }
    sqlx::query("DELETE FROM homeservers WHERE id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}

/// Runtime rows whose homeserver no longer exists (after a crash mid-delete).
pub async fn orphan_runtime_ids(db: &Db) -> DomainResult<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT homeserver_id FROM homeserver_runtime WHERE homeserver_id NOT IN (SELECT id FROM homeservers)").fetch_all(db).await?)
}

/// R19: appends acceptances Synapse reports; the history keeps every version a user accepted.
pub async fn record_consents(db: &Db, id: &str, consents: &[(String, String, DateTime<Utc>)]) -> DomainResult<()> {
    for (user_id, version, at) in consents {
        sqlx::query(
            "INSERT INTO consent_acceptances (homeserver_id, user_id, notice_version, accepted_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(user_id)
        .bind(version)
        .bind(ts(*at))
        .execute(db)
        .await?;
    }
    Ok(())
}
