//! The runtime's queries: what each homeserver should be, and what the runtime has done about it
//! (table `homeserver_runtime`).

use chrono::{DateTime, Utc};
use matrixhost_api::{BillingStatus, Homeserver, HomeserverStatus};

use crate::db::{ts, Db, RowExt};
use crate::resources::{billing_plans, homeservers};

/// A homeserver as the API wants it, with what the runtime needs from its subscription.
#[derive(Debug, Clone)]
pub struct Target {
    pub homeserver: Homeserver,
    /// R5/R10: the plan in force plus Additional Users.
    pub mau_cap: u32,
    /// R12: why logins are blocked, if they are.
    pub blocked: Option<String>,
    pub reserved: Vec<ReservedAccount>,
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
}

pub async fn homeserver_ids(db: &Db) -> anyhow::Result<Vec<(String, String)>> {
    let rows = sqlx::query("SELECT id, org_id FROM homeservers ORDER BY id").fetch_all(db).await?;
    rows.iter().map(|r| Ok((r.text("id")?, r.text("org_id")?))).collect()
}

pub async fn target(db: &Db, org_id: &str, id: &str, now: DateTime<Utc>, catalog: &matrixhost_api::Catalog) -> anyhow::Result<Option<Target>> {
    let mut tx = db.begin().await?;
    let Some(hs) = homeservers::load(&mut tx, org_id, id).await.map_err(|e| anyhow::anyhow!(e.message))? else { return Ok(None) };
    let sub = billing_plans::load(&mut tx, org_id, &hs.billing_plan_id, now)
        .await
        .map_err(|e| anyhow::anyhow!(e.message))?
        .ok_or_else(|| anyhow::anyhow!("homeserver {id} has no billing plan"))?;
    let plan = catalog.plan(&sub.active_plan).map_err(|e| anyhow::anyhow!(e.message))?;
    let operator_block: Option<String> = sqlx::query_scalar("SELECT blocked_reason FROM homeservers WHERE id = $1").bind(id).fetch_one(&mut *tx).await?;
    // R12: a failed payment blocks every user until it is paid.
    let blocked = match (sub.status, operator_block) {
        (BillingStatus::PastDue, _) => Some("This homeserver is blocked until an outstanding payment is settled.".to_owned()),
        (_, Some(reason)) => Some(reason),
        _ => None,
    };
    let rows = sqlx::query(
        "SELECT id, email, localpart, display_name, admin, initial_password_sealed, version, account_synced_version \
         FROM reserved_users WHERE homeserver_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    let reserved = rows
        .iter()
        .map(|r| {
            Ok(ReservedAccount {
                id: r.text("id")?,
                email: r.text("email")?,
                localpart: r.opt_text("localpart")?,
                display_name: r.opt_text("display_name")?,
                admin: r.flag("admin")?,
                password_sealed: r.opt_text("initial_password_sealed")?,
                version: r.int("version")?,
                synced_version: r.opt_int("account_synced_version")?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(Target { mau_cap: plan.mau_cap(sub.additional_users), blocked, reserved, homeserver: hs }))
}

/// What the runtime keeps per homeserver.
#[derive(Debug, Clone)]
pub struct RuntimeRow {
    pub port: u16,
    pub volume_key_sealed: String,
    pub secrets_sealed: String,
    pub admin_token_sealed: Option<String>,
    pub volume_size_gb: u32,
    pub applied_config_hash: Option<String>,
}

pub async fn runtime_row(db: &Db, id: &str) -> anyhow::Result<Option<RuntimeRow>> {
    let row = sqlx::query(
        "SELECT port, volume_key_sealed, secrets_sealed, admin_token_sealed, volume_size_gb, applied_config_hash \
         FROM homeserver_runtime WHERE homeserver_id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    row.map(|r| {
        Ok(RuntimeRow {
            port: u16::try_from(r.int("port")?)?,
            volume_key_sealed: r.text("volume_key_sealed")?,
            secrets_sealed: r.text("secrets_sealed")?,
            admin_token_sealed: r.opt_text("admin_token_sealed")?,
            volume_size_gb: u32::try_from(r.int("volume_size_gb")?)?,
            applied_config_hash: r.opt_text("applied_config_hash")?,
        })
    })
    .transpose()
}

/// Records a new homeserver's runtime row with the lowest free port in the range.
pub async fn insert_runtime_row(db: &Db, id: &str, range: (u16, u16), row: &RuntimeRow, now: DateTime<Utc>) -> anyhow::Result<u16> {
    let mut tx = db.begin().await?;
    let used: Vec<i64> = sqlx::query_scalar("SELECT port FROM homeserver_runtime").fetch_all(&mut *tx).await?;
    let port = (range.0..=range.1)
        .find(|p| !used.contains(&i64::from(*p)) && std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .ok_or_else(|| anyhow::anyhow!("no free homeserver port in {}-{}", range.0, range.1))?;
    sqlx::query(
        "INSERT INTO homeserver_runtime (homeserver_id, port, volume_key_sealed, secrets_sealed, volume_size_gb, created_at, updated_at, version) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 1)",
    )
    .bind(id)
    .bind(i64::from(port))
    .bind(&row.volume_key_sealed)
    .bind(&row.secrets_sealed)
    .bind(i64::from(row.volume_size_gb))
    .bind(ts(now))
    .bind(ts(now))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(port)
}

pub async fn set_runtime_field(db: &Db, id: &str, column: &'static str, value: Option<String>, now: DateTime<Utc>) -> anyhow::Result<()> {
    sqlx::query(&format!("UPDATE homeserver_runtime SET {column} = $1, updated_at = $2 WHERE homeserver_id = $3"))
        .bind(value)
        .bind(ts(now))
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn set_volume_size(db: &Db, id: &str, size_gb: u32) -> anyhow::Result<()> {
    sqlx::query("UPDATE homeserver_runtime SET volume_size_gb = $1 WHERE homeserver_id = $2").bind(i64::from(size_gb)).bind(id).execute(db).await?;
    Ok(())
}

/// Sets the status the API shows. Only the runtime moves a homeserver out of `provisioning`.
pub async fn set_status(
    db: &Db,
    id: &str,
    status: HomeserverStatus,
    reason: Option<&str>,
    urls: Option<(&str, &str)>,
    now: DateTime<Utc>,
    only_at_version: Option<i64>,
) -> anyhow::Result<()> {
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
    // A pass that read the homeserver before a newer change must not report on it.
    .bind(only_at_version.unwrap_or(-1))
    .execute(db)
    .await?;
    Ok(())
}

/// The account now reflects this version of the reserved user; the initial password is dropped.
pub async fn mark_account_synced(db: &Db, reserved_id: &str, version: i64, error: Option<&str>) -> anyhow::Result<()> {
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
pub async fn forget_homeserver(db: &Db, id: &str) -> anyhow::Result<()> {
    let mut tx = db.begin().await?;
    forget_homeserver_in(&mut tx, id).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn forget_homeserver_in(tx: &mut crate::db::Tx<'_>, id: &str) -> sqlx::Result<()> {
    for table in ["reserved_users", "backup_policies", "homeserver_runtime", "consent_acceptances"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE homeserver_id = $1")).bind(id).execute(&mut **tx).await?;
    }
    sqlx::query("DELETE FROM homeservers WHERE id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}

/// Runtime rows whose homeserver no longer exists (after a crash mid-delete).
pub async fn orphan_runtime_ids(db: &Db) -> anyhow::Result<Vec<String>> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT homeserver_id FROM homeserver_runtime WHERE homeserver_id NOT IN (SELECT id FROM homeservers)",
    )
    .fetch_all(db)
    .await?;
    Ok(rows)
}

/// R19: appends acceptances Synapse reports; the history keeps every version a user accepted.
pub async fn record_consents(db: &Db, id: &str, consents: &[(String, String, DateTime<Utc>)]) -> anyhow::Result<()> {
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
