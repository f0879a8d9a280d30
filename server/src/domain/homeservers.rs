//! Hosted homeservers (R1, R2, R9, R20, R22). Table `homeservers`.

use chrono::{DateTime, Utc};
use matrixhost_api::{
    ErrorCode, Catalog, DataController, EmailDomain, Homeserver, HomeserverCreate, HomeserverName, HomeserverSettings, HomeserverStatus, HomeserverUpdate, RegionCode, Registration,
    RegistrationPolicy, ServerName, Volume, VolumeSizeGb,
};
use sqlx::any::AnyRow;

use super::billing_plans::{self, Subscription};
use super::{check_version, DomainError, DomainResult, PageRequest, WriteContext};
use crate::db::{is_unique_violation, lock_row, ts, Db, RowExt, Tx};

const COLUMNS: &str = "id, name, server_name, region, billing_plan_id, federation_enabled, registration, allowed_email_domains, \
    guest_access, encryption_by_default, deletion_protection, volume_size_gb, dc_entity_name, dc_admin_email, status, \
    status_reason, client_url, privacy_notice_url, terms_version, terms_accepted_at, created_at, updated_at, version";

fn from_row(r: &AnyRow) -> anyhow::Result<Homeserver> {
    let domains: Vec<EmailDomain> = serde_json::from_str(&r.text("allowed_email_domains")?)?;
    Ok(Homeserver {
        id: r.text("id")?,
        name: r.parsed("name")?,
        server_name: r.parsed("server_name")?,
        region: r.parsed("region")?,
        billing_plan_id: r.text("billing_plan_id")?,
        federation_enabled: r.flag("federation_enabled")?,
        registration: Registration::parse(&r.text("registration")?).map_err(anyhow::Error::msg)?,
        allowed_email_domains: domains,
        guest_access: r.flag("guest_access")?,
        encryption_by_default: r.flag("encryption_by_default")?,
        deletion_protection: r.flag("deletion_protection")?,
        volume: Volume { size_gb: VolumeSizeGb::parse(r.int("volume_size_gb")?).map_err(anyhow::Error::msg)?, encrypted: Default::default() },
        data_controller: DataController { entity_name: r.parsed("dc_entity_name")?, admin_email: r.parsed("dc_admin_email")? },
        status: HomeserverStatus::parse(&r.text("status")?).ok_or_else(|| anyhow::anyhow!("bad status"))?,
        status_reason: r.opt_text("status_reason")?,
        client_url: r.opt_text("client_url")?,
        privacy_notice_url: r.opt_text("privacy_notice_url")?,
        terms_version: r.text("terms_version")?,
        terms_accepted_at: r.time("terms_accepted_at")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        version: r.int("version")?,
    })
}

/// A homeserver of the organization.
pub async fn load(tx: &mut Tx<'_>, org_id: &str, id: &str) -> DomainResult<Option<Homeserver>> {
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM homeservers WHERE id = $1 AND org_id = $2")).bind(id).bind(org_id).fetch_optional(&mut **tx).await?;
    Ok(row.as_ref().map(from_row).transpose()?)
}

pub async fn load_or_404(tx: &mut Tx<'_>, org_id: &str, id: &str) -> DomainResult<Homeserver> {
    load(tx, org_id, id).await?.ok_or(DomainError::NotFound("homeserver"))
}

/// The subscription paying for the homeserver, settled to `now`.
pub async fn subscription(tx: &mut Tx<'_>, org_id: &str, hs: &Homeserver, now: DateTime<Utc>) -> DomainResult<Subscription> {
    billing_plans::load(tx, org_id, &hs.billing_plan_id, now).await?.ok_or_else(|| DomainError::internal(format!("homeserver {} has no billing plan", hs.id)))
}

/// What the billing rules need to know about the homeserver on a subscription.
pub struct OnPlan {
    pub id: String,
    pub name: String,
    pub volume_size_gb: VolumeSizeGb,
    pub encryption_by_default: bool,
    pub reserved_users: u64,
}

pub async fn on_billing_plan(tx: &mut Tx<'_>, billing_plan_id: &str) -> DomainResult<Option<OnPlan>> {
    let row = sqlx::query(
        "SELECT h.id, h.name, h.volume_size_gb, h.encryption_by_default, \
         (SELECT COUNT(*) FROM reserved_users r WHERE r.homeserver_id = h.id) AS reserved \
         FROM homeservers h WHERE h.billing_plan_id = $1",
    )
    .bind(billing_plan_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(OnPlan {
        id: r.text("id")?,
        name: r.text("name")?,
        volume_size_gb: VolumeSizeGb::parse(r.int("volume_size_gb")?).map_err(anyhow::Error::msg)?,
        encryption_by_default: r.flag("encryption_by_default")?,
        reserved_users: r.int("reserved")?.max(0) as u64,
    }))
}

/// The settings' rules: R9 registration, and the plan-dependent R5 storage limit and R22,
/// checked against every plan the subscription is or will be on.
fn check_settings(s: &HomeserverSettings, sub: &Subscription, catalog: &Catalog) -> DomainResult<RegistrationPolicy> {
    let policy = RegistrationPolicy::new(s.registration, s.allowed_email_domains.clone()).map_err(|e| DomainError::rule("allowed_email_domains", e))?;
    for plan in sub.binding_plans(catalog)? {
        plan.check_volume_size(s.volume.size_gb).map_err(|e| DomainError::plan_limit("volume.size_gb", e.message))?;
        plan.check_encryption_by_default(s.encryption_by_default).map_err(|e| DomainError::plan_limit("encryption_by_default", e.message))?;
    }
    Ok(policy)
}

pub async fn list(db: &Db, org_id: &str, name: Option<&str>, page: PageRequest<'_>) -> DomainResult<Vec<Homeserver>> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM homeservers WHERE org_id = $1 AND id > $2 AND ($3 = '' OR name = $3) ORDER BY id LIMIT $4"))
        .bind(org_id)
        .bind(page.after)
        .bind(name.unwrap_or(""))
        .bind(page.fetch)
        .fetch_all(db)
        .await?;
    Ok(rows.iter().map(from_row).collect::<anyhow::Result<Vec<_>>>()?)
}

/// The default server name: `<homeserver>.<organization>.<platform domain>`.
fn default_server_name(body: &HomeserverCreate, org_name: &str, platform_domain: &str) -> DomainResult<ServerName> {
    ServerName::parse(&format!("{}.{}.{}", body.name, org_name, platform_domain)).map_err(|e| DomainError::rule("server_name", e))
}

/// Who creates a homeserver, and where default server names live.
pub struct Owner<'a> {
    pub org_id: &'a str,
    pub org_name: &'a str,
    pub platform_domain: &'a str,
}

/// R1: an available US region. One the catalog lists but has not opened yet is a conflict with
/// the catalog's state (409), not a malformed field: the same request works once it opens.
pub fn check_region(catalog: &Catalog, code: &RegionCode) -> DomainResult<()> {
    catalog.available_region(code).map(|_| ()).map_err(|e| {
        let listed = catalog.regions.iter().any(|r| r.code == code.as_str() && r.country == "US");
        if listed {
            DomainError::conflict_on(ErrorCode::RegionUnavailable, "region", e.message)
        } else {
            DomainError::rule("region", e)
        }
    })
}

/// R1: only an available US region; R20: creating it accepts the current customer terms.
pub async fn create(tx: &mut Tx<'_>, owner: &Owner<'_>, body: HomeserverCreate, now: DateTime<Utc>, catalog: &Catalog) -> DomainResult<Homeserver> {
    check_region(catalog, &body.region)?;
    let sub = billing_plans::load(tx, owner.org_id, &body.billing_plan_id, now)
        .await?
        .ok_or_else(|| DomainError::Missing { field: "billing_plan_id".into(), message: format!("billing_plan_id: billing plan `{}` not found", body.billing_plan_id) })?;
    let settings = body.settings();
    let policy = check_settings(&settings, &sub, catalog)?;
    if let Some(other) = on_billing_plan(tx, &sub.id).await? {
        return Err(DomainError::conflict_on(
            ErrorCode::Conflict,
            "billing_plan_id",
            format!("billing plan {} already pays for homeserver `{}` ({}); each homeserver needs its own billing plan", sub.id, other.name, other.id),
        ));
    }
    let server_name = match &body.server_name {
        Some(s) => s.clone(),
        None => default_server_name(&body, owner.org_name, owner.platform_domain)?,
    };
    check_unique(tx, owner.org_id, &body.name, &server_name).await?;
    let hs = Homeserver {
        id: crate::ids::new_id("hs"),
        name: body.name.clone(),
        server_name,
        region: body.region.clone(),
        billing_plan_id: sub.id.clone(),
        federation_enabled: settings.federation_enabled,
        registration: policy.mode,
        allowed_email_domains: policy.allowed_email_domains,
        guest_access: settings.guest_access,
        encryption_by_default: settings.encryption_by_default,
        deletion_protection: settings.deletion_protection,
        volume: settings.volume,
        data_controller: settings.data_controller,
        // The runtime moves it on; until then it waits here.
        status: HomeserverStatus::Provisioning,
        status_reason: None,
        client_url: None,
        privacy_notice_url: None,
        // R20: creating the homeserver accepts the current customer terms.
        terms_version: catalog.terms_version.clone(),
        terms_accepted_at: now,
        created_at: now,
        updated_at: now,
        version: 1,
    };
    insert(tx, owner.org_id, &hs).await?;
    tracing::info!(homeserver_id = %hs.id, name = %hs.name, region = %hs.region, "created homeserver");
    Ok(hs)
}

/// Names are unique in the organization and server names everywhere.
async fn check_unique(tx: &mut Tx<'_>, org_id: &str, name: &HomeserverName, server_name: &ServerName) -> DomainResult<()> {
    let same_name: Option<String> =
        sqlx::query_scalar("SELECT id FROM homeservers WHERE org_id = $1 AND name = $2").bind(org_id).bind(name.as_str()).fetch_optional(&mut **tx).await?;
    if let Some(id) = same_name {
        return Err(DomainError::conflict_on(ErrorCode::Conflict, "name", format!("homeserver `{name}` already exists ({id})")));
    }
    let same_server: Option<String> = sqlx::query_scalar("SELECT id FROM homeservers WHERE server_name = $1")
        .bind(server_name.as_str())
        .fetch_optional(&mut **tx)
        .await?;
    if same_server.is_some() {
        return Err(DomainError::conflict_on(ErrorCode::Conflict, "server_name", format!("server name `{server_name}` is taken")));
    }
    Ok(())
}

async fn insert(tx: &mut Tx<'_>, org_id: &str, hs: &Homeserver) -> DomainResult<()> {
    let result = sqlx::query(&format!(
        "INSERT INTO homeservers (org_id, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24)"
    ))
    .bind(org_id)
    .bind(&hs.id)
    .bind(hs.name.as_str())
    .bind(hs.server_name.as_str())
    .bind(hs.region.as_str())
    .bind(&hs.billing_plan_id)
    .bind(i64::from(hs.federation_enabled))
    .bind(hs.registration.as_str())
    .bind(serde_json::to_string(&hs.allowed_email_domains).map_err(DomainError::internal)?)
    .bind(i64::from(hs.guest_access))
    .bind(i64::from(hs.encryption_by_default))
    .bind(i64::from(hs.deletion_protection))
    .bind(i64::from(hs.volume.size_gb.get()))
    .bind(hs.data_controller.entity_name.as_str())
    .bind(hs.data_controller.admin_email.as_str())
    .bind(hs.status.as_str())
    .bind(hs.status_reason.clone())
    .bind(hs.client_url.clone())
    .bind(hs.privacy_notice_url.clone())
    .bind(&hs.terms_version)
    .bind(ts(hs.terms_accepted_at))
    .bind(ts(hs.created_at))
    .bind(ts(hs.updated_at))
    .bind(hs.version)
    .execute(&mut **tx)
    .await;
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_unique_violation(&e) => {
            Err(DomainError::conflict(ErrorCode::Conflict, format!("a homeserver named `{}` or with server name `{}` already exists", hs.name, hs.server_name)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Applies new settings. When hosted, a change the homeserver must apply shows `updating` at
/// once, so a client polling for `running` never mistakes the old state for the new one.
pub async fn update(tx: &mut Tx<'_>, org_id: &str, id: &str, expected_version: Option<i64>, body: HomeserverUpdate, ctx: WriteContext<'_>) -> DomainResult<Homeserver> {
    let WriteContext { hosted, now, catalog } = ctx;
    lock_row(tx, "homeservers", id).await?;
    let mut hs = load_or_404(tx, org_id, id).await?;
    check_version(expected_version, hs.version, "homeserver")?;
    refuse_if_deleting(&hs)?;
    let sub = subscription(tx, org_id, &hs, now).await?;
    let policy = check_settings(&body, &sub, catalog)?;
    if body.volume.size_gb < hs.volume.size_gb {
        // Well-formed, but the volume is already larger: a conflict with its state.
        return Err(DomainError::conflict_on(
            ErrorCode::VolumeShrink,
            "volume.size_gb",
            format!("volume.size_gb: volumes only grow: {} GB is smaller than the current {} GB", body.volume.size_gb, hs.volume.size_gb),
        ));
    }
    let stored_version = hs.version;
    let before = hs.clone();
    hs.federation_enabled = body.federation_enabled;
    hs.registration = policy.mode;
    hs.allowed_email_domains = policy.allowed_email_domains;
    hs.guest_access = body.guest_access;
    hs.encryption_by_default = body.encryption_by_default;
    hs.deletion_protection = body.deletion_protection;
    hs.volume = body.volume;
    hs.data_controller = body.data_controller;
    hs.updated_at = now;
    hs.version += 1;
    if hosted && needs_apply(&before, &hs) && matches!(hs.status, HomeserverStatus::Running | HomeserverStatus::Blocked) {
        hs.status = HomeserverStatus::Updating;
    }
    let done = sqlx::query(
        "UPDATE homeservers SET federation_enabled = $1, registration = $2, allowed_email_domains = $3, guest_access = $4, \
         encryption_by_default = $5, deletion_protection = $6, volume_size_gb = $7, dc_entity_name = $8, dc_admin_email = $9, \
         updated_at = $10, version = $11, status = $14 WHERE id = $12 AND version = $13",
    )
    .bind(i64::from(hs.federation_enabled))
    .bind(hs.registration.as_str())
    .bind(serde_json::to_string(&hs.allowed_email_domains).map_err(DomainError::internal)?)
    .bind(i64::from(hs.guest_access))
    .bind(i64::from(hs.encryption_by_default))
    .bind(i64::from(hs.deletion_protection))
    .bind(i64::from(hs.volume.size_gb.get()))
    .bind(hs.data_controller.entity_name.as_str())
    .bind(hs.data_controller.admin_email.as_str())
    .bind(ts(now))
    .bind(hs.version)
    .bind(&hs.id)
    .bind(stored_version)
    .bind(hs.status.as_str())
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(DomainError::version_conflict("homeserver"));
    }
    tracing::info!(homeserver_id = %hs.id, "updated homeserver");
    Ok(hs)
}

/// Whether a change reaches the running homeserver (deletion protection is the control plane's).
fn needs_apply(before: &Homeserver, after: &Homeserver) -> bool {
    let mut unchanged = after.clone();
    unchanged.deletion_protection = before.deletion_protection;
    unchanged.updated_at = before.updated_at;
    unchanged.version = before.version;
    unchanged != *before
}

/// A homeserver being torn down takes no more changes.
pub fn refuse_if_deleting(hs: &Homeserver) -> DomainResult<()> {
    if hs.status == HomeserverStatus::Deleting {
        return Err(DomainError::conflict(ErrorCode::Deleting, format!("homeserver `{}` is being deleted", hs.name)));
    }
    Ok(())
}

/// What a delete did.
pub enum Deleted {
    /// Nothing runs (no runtime): the records are gone.
    Gone,
    /// The runtime tears it down; it shows `deleting` until then.
    Deleting(Box<Homeserver>),
}

/// With the runtime, deletion is long work: the homeserver shows `deleting` until its
/// process, volume, key and user are gone, then it is not found. Without a runtime nothing
/// runs, so the records go at once.
pub async fn delete(tx: &mut Tx<'_>, org_id: &str, id: &str, expected_version: Option<i64>, hosted: bool, now: DateTime<Utc>) -> DomainResult<Deleted> {
    lock_row(tx, "homeservers", id).await?;
    let mut hs = load_or_404(tx, org_id, id).await?;
    check_version(expected_version, hs.version, "homeserver")?;
    if hs.deletion_protection {
        return Err(DomainError::conflict(ErrorCode::DeletionProtected, format!("homeserver `{}` has deletion_protection = true; set it to false before deleting", hs.name)));
    }
    if hs.status == HomeserverStatus::Deleting {
        return Ok(Deleted::Deleting(Box::new(hs)));
    }
    if !hosted {
        super::runtime::forget_homeserver_in(tx, &hs.id).await?;
        tracing::info!(homeserver_id = %hs.id, "deleted homeserver");
        return Ok(Deleted::Gone);
    }
    sqlx::query("UPDATE homeservers SET status = 'deleting', status_reason = NULL, updated_at = $1, version = version + 1 WHERE id = $2")
        .bind(ts(now))
        .bind(&hs.id)
        .execute(&mut **tx)
        .await?;
    hs.status = HomeserverStatus::Deleting;
    hs.status_reason = None;
    hs.updated_at = now;
    hs.version += 1;
    tracing::info!(homeserver_id = %hs.id, "deleting homeserver");
    Ok(Deleted::Deleting(Box::new(hs)))
}

/// R12: an operator block (users see `reason`), or `None` to lift it.
pub async fn set_operator_block(db: &Db, id: &str, reason: Option<&str>) -> DomainResult<()> {
    let done = sqlx::query("UPDATE homeservers SET blocked_reason = $1, version = version + 1 WHERE id = $2").bind(reason).bind(id).execute(db).await?;
    if done.rows_affected() != 1 {
        return Err(DomainError::NotFound("homeserver"));
    }
    Ok(())
}

/// R18: the organization's homeservers not yet being deleted.
pub async fn ids_of_org(db: &Db, org_id: &str) -> DomainResult<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT id FROM homeservers WHERE org_id = $1 AND status <> 'deleting' ORDER BY id").bind(org_id).fetch_all(db).await?)
}

/// R18: an erasure the customer confirmed overrides the protection against stray deletes.
pub async fn lift_deletion_protection(tx: &mut Tx<'_>, id: &str) -> DomainResult<()> {
    sqlx::query("UPDATE homeservers SET deletion_protection = 0 WHERE id = $1").bind(id).execute(&mut **tx).await?;
    Ok(())
}
