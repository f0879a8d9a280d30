//! Reserved users: users holding slots inside the MAU cap (R8). Table `reserved_users`.

use chrono::{DateTime, Utc};
use matrixhost_api::{
    ErrorCode, check_reserved_within_cap, Catalog, Email, Homeserver, HomeserverStatus, ReservedUser, ReservedUserCreate, ReservedUserUpdate,
};
use matrixhost_seal::Sealer;
use sqlx::any::AnyRow;

use super::apply::{applied_at_write, apply_status, HostOf};
use super::{check_version, homeservers, DomainError, DomainResult, PageRequest, WriteContext};
use crate::db::{is_unique_violation, lock_row, ts, Db, RowExt, Tx};

const COLUMNS: &str = "r.id, r.homeserver_id, r.email, r.localpart, r.display_name, r.admin, r.created_at, r.updated_at, r.version, \
    r.applied_version, r.account_error, h.server_name, h.status AS hs_status, h.status_reason AS hs_status_reason";

fn from_row(r: &AnyRow) -> anyhow::Result<ReservedUser> {
    let localpart: Option<matrixhost_api::Localpart> = r.opt_parsed("localpart")?;
    let server_name = r.text("server_name")?;
    let version = r.int("version")?;
    let hs_status = HomeserverStatus::parse(&r.text("hs_status")?).ok_or_else(|| anyhow::anyhow!("bad homeserver status"))?;
    let hs_reason = r.opt_text("hs_status_reason")?;
    let host = HostOf { status: hs_status, status_reason: hs_reason.as_deref() };
    let (apply_status, apply_error) = apply_status(version, r.opt_int("applied_version")?, r.opt_text("account_error")?.as_deref(), Some(host));
    Ok(ReservedUser {
        id: r.text("id")?,
        homeserver_id: r.text("homeserver_id")?,
        email: r.parsed("email")?,
        user_id: localpart.as_ref().map(|l| matrix_user_id(l.as_str(), &server_name)),
        localpart,
        display_name: r.opt_parsed("display_name")?,
        admin: r.flag("admin")?,
        created_at: r.time("created_at")?,
        updated_at: r.time("updated_at")?,
        version,
        apply_status,
        apply_error,
    })
}

fn matrix_user_id(localpart: &str, server_name: &str) -> String {
    format!("@{localpart}:{server_name}")
}

async fn load_or_404(tx: &mut Tx<'_>, org_id: &str, homeserver_id: &str, id: &str) -> DomainResult<ReservedUser> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM reserved_users r JOIN homeservers h ON h.id = r.homeserver_id \
         WHERE r.id = $1 AND r.homeserver_id = $2 AND r.org_id = $3"
    ))
    .bind(id)
    .bind(homeserver_id)
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await?;
    row.as_ref().map(from_row).transpose()?.ok_or(DomainError::NotFound("reserved user"))
}

pub async fn read(db: &Db, org_id: &str, homeserver_id: &str, id: &str) -> DomainResult<ReservedUser> {
    let mut tx = db.begin().await?;
    load_or_404(&mut tx, org_id, homeserver_id, id).await
}

pub async fn list(db: &Db, org_id: &str, homeserver_id: &str, email: Option<&str>, page: PageRequest<'_>) -> DomainResult<Vec<ReservedUser>> {
    let mut tx = db.begin().await?;
    homeservers::load_or_404(&mut tx, org_id, homeserver_id).await?;
    let email = match email {
        Some(raw) => Email::parse(raw).map_err(|e| DomainError::rule("email", e))?.to_string(),
        None => String::new(),
    };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM reserved_users r JOIN homeservers h ON h.id = r.homeserver_id \
         WHERE r.homeserver_id = $1 AND r.org_id = $2 AND r.id > $3 AND ($4 = '' OR r.email = $4) ORDER BY r.id LIMIT $5"
    ))
    .bind(homeserver_id)
    .bind(org_id)
    .bind(page.after)
    .bind(&email)
    .bind(page.fetch)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.iter().map(from_row).collect::<anyhow::Result<Vec<_>>>()?)
}

// R8: reserved users hold slots inside the cap, so one more must still fit under it, for the
// plan in force and for a downgrade already scheduled.
async fn check_cap(tx: &mut Tx<'_>, org_id: &str, hs: &Homeserver, now: DateTime<Utc>, catalog: &Catalog) -> DomainResult<()> {
    let sub = homeservers::subscription(tx, org_id, hs, now).await?;
    let (cap, plan) = sub.binding_cap(catalog)?;
    let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM reserved_users WHERE homeserver_id = $1").bind(&hs.id).fetch_one(&mut **tx).await?;
    check_reserved_within_cap(existing.max(0) as u64 + 1, cap).map_err(|e| DomainError::Conflict {
        code: ErrorCode::MauCapExceeded,
        field: None,
        message: format!(
            "{} (homeserver `{}` on the {} plan with {} additional users); raise additional_users or upgrade the plan",
            e.message, hs.name, plan.tier, sub.additional_users
        ),
    })
}

/// Where invitation mail is queued and what its links point at.
pub struct Mailer<'a> {
    pub sealer: &'a Sealer,
    pub console_url: &'a str,
}

pub async fn create(
    tx: &mut Tx<'_>,
    org_id: &str,
    homeserver_id: &str,
    body: ReservedUserCreate,
    mailer: &Mailer<'_>,
    ctx: WriteContext<'_>,
) -> DomainResult<ReservedUser> {
    let WriteContext { hosted, now, catalog } = ctx;
    let sealer = mailer.sealer;
    // Serialises creates on one homeserver (and plan changes) so two cannot both take the last slot.
    lock_row(tx, "homeservers", homeserver_id).await?;
    let hs = homeservers::load_or_404(tx, org_id, homeserver_id).await?;
    homeservers::refuse_if_deleting(&hs)?;
    lock_row(tx, "billing_plans", &hs.billing_plan_id).await?;
    check_unique(tx, &hs, &body).await?;
    check_cap(tx, org_id, &hs, now, catalog).await?;
    let id = crate::ids::new_id("ru");
    // Kept only until the runtime creates the account, sealed to this record.
    let sealed_password = body.initial_password.as_ref().map(|p| sealer.seal(p.expose().as_bytes(), &id)).transpose().map_err(DomainError::internal)?;
    // Without an initial password the person chooses their own through an invitation, so no
    // password passes through Terraform or its state. The link goes in with the row.
    let invitation = (body.localpart.is_some() && body.initial_password.is_none()).then(|| Invitation::new(now));
    let inserted = sqlx::query(
        "INSERT INTO reserved_users (id, org_id, homeserver_id, email, localpart, display_name, admin, initial_password_sealed, created_at, updated_at, version, applied_version, invite_token_hash, invite_expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(&hs.id)
    .bind(body.email.as_str())
    .bind(body.localpart.as_ref().map(|l| l.to_string()))
    .bind(body.display_name.as_ref().map(|d| d.to_string()))
    .bind(i64::from(body.admin))
    .bind(sealed_password)
    .bind(ts(now))
    .bind(ts(now))
    .bind(1_i64)
    .bind(applied_at_write(hosted, 1))
    .bind(invitation.as_ref().map(|i| super::orgs::hash_token(&i.token)))
    .bind(invitation.as_ref().map(|i| ts(i.expires)))
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => {}
        Err(e) if is_unique_violation(&e) => {
            return Err(DomainError::conflict(ErrorCode::Conflict, format!("`{}` or its localpart is already reserved on this homeserver", body.email)))
        }
        Err(e) => return Err(e.into()),
    }
    let host = HostOf { status: hs.status, status_reason: hs.status_reason.as_deref() };
    let (apply_status, apply_error) = apply_status(1, applied_at_write(hosted, 1), None, Some(host));
    let user = ReservedUser {
        id,
        homeserver_id: hs.id.clone(),
        email: body.email,
        user_id: body.localpart.as_ref().map(|l| matrix_user_id(l.as_str(), hs.server_name.as_str())),
        localpart: body.localpart,
        display_name: body.display_name,
        admin: body.admin,
        created_at: now,
        updated_at: now,
        version: 1,
        apply_status,
        apply_error,
    };
    if let (Some(user_id), Some(invitation)) = (&user.user_id, &invitation) {
        invitation.mail(tx, mailer, user.email.as_str(), user_id, hs.server_name.as_str(), now).await?;
    }
    tracing::info!(homeserver_id = %hs.id, reserved_user_id = %user.id, "created reserved user");
    Ok(user)
}

/// How long an invitation link works.
pub const INVITATION_LIFETIME: chrono::Duration = chrono::Duration::hours(72);

/// A new invitation link: the token the mail carries (only its hash is stored) and its expiry.
struct Invitation {
    token: String,
    expires: DateTime<Utc>,
}

impl Invitation {
    fn new(now: DateTime<Utc>) -> Invitation {
        Invitation { token: super::orgs::generate_secret(), expires: now + INVITATION_LIFETIME }
    }

    /// Queues the invitation mail with the link.
    async fn mail(&self, tx: &mut Tx<'_>, mailer: &Mailer<'_>, email: &str, user_id: &str, server_name: &str, now: DateTime<Utc>) -> DomainResult<()> {
        let link = format!("{}/console/invite?token={}", mailer.console_url.trim_end_matches('/'), self.token);
        let mail = crate::mail::messages::reserved_user_invitation(email, user_id, server_name, &link, self.expires);
        super::outbox::enqueue(tx, mailer.sealer, None, &mail, now).await
    }
}

/// Makes a new invitation link for an existing reserved user (an older one stops working) and
/// mails it.
async fn invite(tx: &mut Tx<'_>, mailer: &Mailer<'_>, id: &str, email: &str, user_id: &str, server_name: &str, now: DateTime<Utc>) -> DomainResult<()> {
    let invitation = Invitation::new(now);
    sqlx::query("UPDATE reserved_users SET invite_token_hash = $1, invite_expires_at = $2 WHERE id = $3")
        .bind(super::orgs::hash_token(&invitation.token))
        .bind(ts(invitation.expires))
        .bind(id)
        .execute(&mut **tx)
        .await?;
    invitation.mail(tx, mailer, email, user_id, server_name, now).await
}

/// An invitation being accepted: the account to set the password on.
#[derive(Debug)]
pub struct Invited {
    pub id: String,
    pub homeserver_id: String,
    pub user_id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub admin: bool,
}

const INVITED_COLUMNS: &str = "r.id, r.homeserver_id, r.email, r.localpart, r.display_name, r.admin, h.server_name";

fn invited_from_row(r: &AnyRow) -> DomainResult<Invited> {
    Ok(Invited {
        id: r.text("id")?,
        homeserver_id: r.text("homeserver_id")?,
        user_id: matrix_user_id(&r.text("localpart")?, &r.text("server_name")?),
        email: r.text("email")?,
        display_name: r.opt_text("display_name")?,
        admin: r.flag("admin")?,
    })
}

/// The invitation behind a link that can still be used: not accepted, not expired, and its
/// account already made by the runtime. `Err(false)`: no such invitation; `Err(true)`: valid
/// but the account is not ready yet.
pub async fn usable_invitation(db: &Db, token: &str, now: DateTime<Utc>) -> DomainResult<Result<Invited, bool>> {
    let row = sqlx::query(&format!(
        "SELECT {INVITED_COLUMNS}, r.account_synced_version FROM reserved_users r JOIN homeservers h ON h.id = r.homeserver_id \
         WHERE r.invite_token_hash = $1 AND r.invite_accepted_at IS NULL AND r.invite_expires_at > $2 AND r.localpart IS NOT NULL"
    ))
    .bind(super::orgs::hash_token(token))
    .bind(ts(now))
    .fetch_optional(db)
    .await?;
    match row {
        None => Ok(Err(false)),
        Some(r) if r.opt_int("account_synced_version")?.is_none() => Ok(Err(true)),
        Some(r) => Ok(Ok(invited_from_row(&r)?)),
    }
}

/// Claims the link (once); the caller sets the password and, if that fails, reopens it.
pub async fn accept_invitation(tx: &mut Tx<'_>, token: &str, now: DateTime<Utc>) -> DomainResult<Option<Invited>> {
    let hash = super::orgs::hash_token(token);
    let row = sqlx::query(&format!(
        "SELECT {INVITED_COLUMNS} FROM reserved_users r JOIN homeservers h ON h.id = r.homeserver_id \
         WHERE r.invite_token_hash = $1 AND r.invite_accepted_at IS NULL AND r.invite_expires_at > $2 AND r.localpart IS NOT NULL \
         AND r.account_synced_version IS NOT NULL"
    ))
    .bind(&hash)
    .bind(ts(now))
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let done = sqlx::query("UPDATE reserved_users SET invite_accepted_at = $1, invite_token_hash = NULL WHERE invite_token_hash = $2 AND invite_accepted_at IS NULL")
        .bind(ts(now))
        .bind(&hash)
        .execute(&mut **tx)
        .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    invited_from_row(&row).map(Some)
}

/// Gives a claimed link back (the homeserver did not take the password), so it can be used again.
pub async fn reopen_invitation(db: &Db, id: &str, token: &str) -> DomainResult<()> {
    sqlx::query("UPDATE reserved_users SET invite_accepted_at = NULL, invite_token_hash = $1 WHERE id = $2 AND invite_token_hash IS NULL")
        .bind(super::orgs::hash_token(token))
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// A new link for an invitation whose link expired, mailed to the address on record (so the
/// person holding the old link learns nothing and gains nothing else).
pub async fn renew_invitation(tx: &mut Tx<'_>, mailer: &Mailer<'_>, token: &str, now: DateTime<Utc>) -> DomainResult<bool> {
    let row = sqlx::query(&format!(
        "SELECT {INVITED_COLUMNS} FROM reserved_users r JOIN homeservers h ON h.id = r.homeserver_id \
         WHERE r.invite_token_hash = $1 AND r.invite_accepted_at IS NULL AND r.localpart IS NOT NULL"
    ))
    .bind(super::orgs::hash_token(token))
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let invited = invited_from_row(&row)?;
    let server_name = row.text("server_name")?;
    invite(tx, mailer, &invited.id, &invited.email, &invited.user_id, &server_name, now).await?;
    Ok(true)
}

/// One reservation per email and per localpart on a homeserver (one query for both).
async fn check_unique(tx: &mut Tx<'_>, hs: &Homeserver, body: &ReservedUserCreate) -> DomainResult<()> {
    let taken = sqlx::query("SELECT id, email FROM reserved_users WHERE homeserver_id = $1 AND (email = $2 OR localpart = $3) LIMIT 2")
        .bind(&hs.id)
        .bind(body.email.as_str())
        .bind(body.localpart.as_ref().map(|l| l.to_string()))
        .fetch_all(&mut **tx)
        .await?;
    let taken = taken.iter().map(|r| Ok::<_, DomainError>((r.text("id")?, r.text("email")?))).collect::<Result<Vec<_>, _>>()?;
    // The email's reservation is the one to name when both are taken.
    if let Some((id, _)) = taken.iter().find(|(_, email)| email == body.email.as_str()) {
        return Err(DomainError::conflict_on(ErrorCode::Conflict, "email", format!("`{}` is already a reserved user of `{}` ({id})", body.email, hs.name)));
    }
    match (taken.first(), &body.localpart) {
        (Some((id, _)), Some(localpart)) => Err(DomainError::conflict_on(ErrorCode::Conflict, "localpart", format!("localpart `{localpart}` is already reserved on `{}` ({id})", hs.name))),
        _ => Ok(()),
    }
}

pub async fn update(
    tx: &mut Tx<'_>,
    org_id: &str,
    homeserver_id: &str,
    id: &str,
    expected_version: Option<i64>,
    body: ReservedUserUpdate,
    ctx: WriteContext<'_>,
) -> DomainResult<ReservedUser> {
    let WriteContext { hosted, now, .. } = ctx;
    let user = load_or_404(tx, org_id, homeserver_id, id).await?;
    check_version(expected_version, user.version, "reserved user")?;
    // A new version starts with no error: the runtime tries it afresh.
    let done = sqlx::query(
        "UPDATE reserved_users SET display_name = $1, admin = $2, updated_at = $3, version = $4, applied_version = COALESCE($7, applied_version), \
         account_error = NULL WHERE id = $5 AND version = $6",
    )
    .bind(body.display_name.as_ref().map(|d| d.to_string()))
    .bind(i64::from(body.admin))
    .bind(ts(now))
    .bind(user.version + 1)
    .bind(&user.id)
    .bind(user.version)
    .bind(applied_at_write(hosted, user.version + 1))
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(DomainError::version_conflict("reserved user"));
    }
    load_or_404(tx, org_id, homeserver_id, id).await
}

/// Frees the slot; the Matrix account is kept (see `docs/runtime.md`).
pub async fn delete(tx: &mut Tx<'_>, org_id: &str, homeserver_id: &str, id: &str, expected_version: Option<i64>) -> DomainResult<()> {
    let user = load_or_404(tx, org_id, homeserver_id, id).await?;
    check_version(expected_version, user.version, "reserved user")?;
    sqlx::query("DELETE FROM reserved_users WHERE id = $1").bind(&user.id).execute(&mut **tx).await?;
    tracing::info!(reserved_user_id = %user.id, "deleted reserved user; its slot is free");
    Ok(())
}
