//! Customer accounts (R14-R18, R20, R21): sign-up, email verification, log-in, password
//! reset, email change, correction, export and erasure. One account owns one organization.
//!
//! Answers never tell whether an address has an account: sign-up with a known address and a
//! reset for an unknown one look exactly like the ordinary case, and only the owner of the
//! mailbox learns more, by mail. An unknown address costs the same password hashing as a
//! known one.

use chrono::{DateTime, Duration, Utc};
use matrixhost_api::{ErrorCode, Email, OrgName};
use matrixhost_seal::Sealer;
use serde_json::{json, Value};

use super::account_links::{self, Purpose};
use super::passwords::{Hasher, NewPassword};
use super::{outbox, sessions, DomainError, DomainResult};
use crate::db::{ts, Db, RowExt, Tx};
use crate::mail::{messages, Mail};

/// R18: how long a requested erasure waits, so the customer can change their mind.
pub const DELETION_GRACE: Duration = Duration::days(7);

/// What accounts need from the platform.
pub struct Accounts<'a> {
    pub db: &'a Db,
    pub sealer: &'a Sealer,
    pub hasher: &'a Hasher,
    /// The console's public base URL, for the links in mail.
    pub console_url: &'a str,
    /// R20: the customer-terms version in force.
    pub terms_version: &'a str,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: String,
    pub org_id: String,
    pub org_name: String,
    pub email: String,
    pub full_name: String,
    pub email_verified_at: Option<DateTime<Utc>>,
    pub age_confirmed_at: DateTime<Utc>,
    pub terms_version: String,
    pub terms_accepted_at: DateTime<Utc>,
    pub deletion_due_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "a.id, a.org_id, o.name AS org_name, a.email, a.full_name, a.email_verified_at, a.age_confirmed_at, a.terms_version, \
    a.terms_accepted_at, a.deletion_due_at, a.created_at";

fn from_row(r: &sqlx::any::AnyRow) -> DomainResult<Account> {
    Ok(Account {
        id: r.text("id")?,
        org_id: r.text("org_id")?,
        org_name: r.text("org_name")?,
        email: r.text("email")?,
        full_name: r.text("full_name")?,
        email_verified_at: r.opt_time("email_verified_at")?,
        age_confirmed_at: r.time("age_confirmed_at")?,
        terms_version: r.text("terms_version")?,
        terms_accepted_at: r.time("terms_accepted_at")?,
        deletion_due_at: r.opt_time("deletion_due_at")?,
        created_at: r.time("created_at")?,
    })
}

async fn find<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(db: E, column: &str, value: &str) -> DomainResult<Option<Account>> {
    let sql = format!("SELECT {COLUMNS} FROM accounts a JOIN organizations o ON o.id = a.org_id WHERE a.{column} = $1");
    sqlx::query(&sql).bind(value).fetch_optional(db).await?.as_ref().map(from_row).transpose()
}

/// The sign-up form as submitted.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct SignUpForm {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub organization: String,
    #[serde(default)]
    pub password: String,
    /// R21: "I am at least 16 years old" (a checkbox: present when ticked).
    #[serde(default)]
    pub age_confirmed: Option<String>,
    /// R20: "I accept the customer terms".
    #[serde(default)]
    pub terms_accepted: Option<String>,
}

/// A sign-up that met every rule.
struct SignUp {
    email: Email,
    full_name: String,
    organization: OrgName,
    password: NewPassword,
}

/// A person's name as they write it: 1-100 characters, no control characters.
pub fn parse_full_name(field: &str, s: &str) -> DomainResult<String> {
    let name = s.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(DomainError::field(field, "enter your name, 1-100 characters"));
    }
    Ok(name.to_owned())
}

pub fn parse_email(field: &str, s: &str) -> DomainResult<Email> {
    Email::parse(s).map_err(|e| DomainError::rule(field, e))
}

/// Every rule the form breaks, each naming its field, or the parsed sign-up.
fn parse_sign_up(form: &SignUpForm) -> Result<SignUp, Vec<DomainError>> {
    let mut errors = Vec::new();
    let email = parse_email("email", &form.email).map_err(|e| errors.push(e)).ok();
    let full_name = parse_full_name("full_name", &form.full_name).map_err(|e| errors.push(e)).ok();
    let organization = OrgName::parse(form.organization.trim()).map_err(|e| errors.push(DomainError::rule("organization", e))).ok();
    let password = NewPassword::parse("password", &form.password, &form.email).map_err(|e| errors.push(e)).ok();
    if form.age_confirmed.is_none() {
        errors.push(DomainError::field("age_confirmed", "confirm that you are at least 16 years old; matrixhost is not for younger people (R21)"));
    }
    if form.terms_accepted.is_none() {
        errors.push(DomainError::field("terms_accepted", "accept the customer terms to use matrixhost (R20)"));
    }
    match (email, full_name, organization, password) {
        (Some(email), Some(full_name), Some(organization), Some(password)) if errors.is_empty() => Ok(SignUp { email, full_name, organization, password }),
        _ => Err(errors),
    }
}

impl Accounts<'_> {
    fn link(&self, path: &str, token: &str) -> String {
        format!("{}{path}?token={token}", self.console_url.trim_end_matches('/'))
    }

    fn page(&self, path: &str) -> String {
        format!("{}{path}", self.console_url.trim_end_matches('/'))
    }

    async fn send(&self, tx: &mut Tx<'_>, account_id: Option<&str>, mail: Mail, now: DateTime<Utc>) -> DomainResult<()> {
        outbox::enqueue(tx, self.sealer, account_id, &mail, now).await
    }

    pub async fn get(&self, id: &str) -> DomainResult<Account> {
        find(self.db, "id", id).await?.ok_or(DomainError::NotFound("account"))
    }

    /// Creates the account and its organization, unverified, and mails the verification link.
    /// A known address gets a mail instead, and the same answer.
    pub async fn sign_up(&self, form: &SignUpForm, now: DateTime<Utc>) -> Result<(), Vec<DomainError>> {
        let s = parse_sign_up(form)?;
        // Hashed before anything is looked up, so a known address costs the same time.
        let hash = self.hasher.hash(&s.password).map_err(|e| vec![e])?;
        self.create(s, hash, now).await.map_err(|e| vec![e])
    }

    async fn create(&self, s: SignUp, password_hash: String, now: DateTime<Utc>) -> DomainResult<()> {
        let mut tx = self.db.begin().await?;
        if let Some(existing) = find(&mut *tx, "email", s.email.as_str()).await? {
            let mail = messages::already_registered(&existing.email, &self.page("/console/login"), &self.page("/console/reset"));
            self.send(&mut tx, Some(&existing.id), mail, now).await?;
            tx.commit().await?;
            return Ok(());
        }
        let taken: Option<String> = sqlx::query_scalar("SELECT id FROM organizations WHERE name = $1").bind(s.organization.as_str()).fetch_optional(&mut *tx).await?;
        if taken.is_some() {
            return Err(DomainError::conflict_on(ErrorCode::NameTaken, "organization", format!("organization: `{}` is taken; choose another name", s.organization)));
        }
        let org_id = crate::ids::new_id("org");
        sqlx::query("INSERT INTO organizations (id, name, email, email_verified, created_at) VALUES ($1, $2, $3, 0, $4)")
            .bind(&org_id)
            .bind(s.organization.as_str())
            .bind(s.email.as_str())
            .bind(ts(now))
            .execute(&mut *tx)
            .await?;
        let id = crate::ids::new_id("acct");
        sqlx::query(
            "INSERT INTO accounts (id, org_id, email, full_name, password_hash, age_confirmed_at, terms_version, terms_accepted_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $6, $6, $6)",
        )
        .bind(&id)
        .bind(&org_id)
        .bind(s.email.as_str())
        .bind(&s.full_name)
        .bind(password_hash)
        .bind(ts(now))
        .bind(self.terms_version)
        .execute(&mut *tx)
        .await?;
        let token = account_links::issue(&mut tx, &id, Purpose::VerifyEmail, None, now).await?;
        self.send(&mut tx, Some(&id), messages::verify_email(s.email.as_str(), &self.link("/console/verify", &token)), now).await?;
        tx.commit().await?;
        tracing::info!(account_id = %id, org_id = %org_id, "account signed up");
        Ok(())
    }

    /// R15: a new verification link, for an account whose address is not verified yet.
    pub async fn resend_verification(&self, account: &Account, now: DateTime<Utc>) -> DomainResult<()> {
        if account.email_verified_at.is_some() {
            return Ok(());
        }
        let mut tx = self.db.begin().await?;
        let token = account_links::issue(&mut tx, &account.id, Purpose::VerifyEmail, None, now).await?;
        self.send(&mut tx, Some(&account.id), messages::verify_email(&account.email, &self.link("/console/verify", &token)), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// R15: marks the address verified. `None`: the link is not valid (any reason).
    pub async fn verify_email(&self, token: &str, now: DateTime<Utc>) -> DomainResult<Option<Account>> {
        let mut tx = self.db.begin().await?;
        let Some(link) = account_links::redeem(&mut tx, token, Purpose::VerifyEmail, now).await? else { return Ok(None) };
        sqlx::query("UPDATE accounts SET email_verified_at = $1, updated_at = $1 WHERE id = $2").bind(ts(now)).bind(&link.account_id).execute(&mut *tx).await?;
        sqlx::query("UPDATE organizations SET email_verified = 1 WHERE id = (SELECT org_id FROM accounts WHERE id = $1)").bind(&link.account_id).execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(account_id = %link.account_id, "email address verified");
        self.get(&link.account_id).await.map(Some)
    }

    /// The account if `password` is its password. Unknown addresses spend the same time.
    pub async fn check_password(&self, email: &str, password: &str) -> DomainResult<Option<Account>> {
        let stored = match Email::parse(email) {
            Ok(email) => sqlx::query("SELECT id, password_hash FROM accounts WHERE email = $1").bind(email.as_str()).fetch_optional(self.db).await?,
            Err(_) => None,
        };
        let Some(row) = stored else {
            self.hasher.verify_nothing(password);
            return Ok(None);
        };
        if !self.hasher.verify(password, &row.text("password_hash")?) {
            return Ok(None);
        }
        self.get(&row.text("id")?).await.map(Some)
    }

    /// R16: mails a reset link when the address has an account; the same answer either way.
    pub async fn request_reset(&self, email: &str, now: DateTime<Utc>) -> DomainResult<()> {
        let Ok(email) = Email::parse(email) else { return Ok(()) };
        let Some(account) = find(self.db, "email", email.as_str()).await? else { return Ok(()) };
        let mut tx = self.db.begin().await?;
        let token = account_links::issue(&mut tx, &account.id, Purpose::ResetPassword, None, now).await?;
        self.send(&mut tx, Some(&account.id), messages::password_reset(&account.email, &self.link("/console/reset/confirm", &token)), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// R16: sets a new password through a reset link and ends every session. `Ok(None)`: the
    /// link is not valid. A password that breaks the policy leaves the link usable.
    pub async fn reset_password(&self, token: &str, password: &str, now: DateTime<Utc>) -> DomainResult<Option<Account>> {
        let mut tx = self.db.begin().await?;
        let Some(link) = account_links::redeem(&mut tx, token, Purpose::ResetPassword, now).await? else { return Ok(None) };
        let account = find(&mut *tx, "id", &link.account_id).await?.ok_or(DomainError::NotFound("account"))?;
        let new = NewPassword::parse("password", password, &account.email)?;
        self.set_password(&mut tx, &account, &new, now).await?;
        // Following the link proved the mailbox, so the address counts as verified too.
        sqlx::query("UPDATE accounts SET email_verified_at = COALESCE(email_verified_at, $1) WHERE id = $2").bind(ts(now)).bind(&account.id).execute(&mut *tx).await?;
        sqlx::query("UPDATE organizations SET email_verified = 1 WHERE id = $1").bind(&account.org_id).execute(&mut *tx).await?;
        tx.commit().await?;
        tracing::info!(account_id = %account.id, "password reset; every session ended");
        Ok(Some(account))
    }

    /// A logged-in customer changes their password; every session ends (the caller starts a
    /// new one for the browser that made the change).
    pub async fn change_password(&self, account: &Account, current: &str, new: &str, now: DateTime<Utc>) -> DomainResult<()> {
        if self.check_password(&account.email, current).await?.is_none() {
            return Err(DomainError::field("current_password", "is not your current password"));
        }
        let new = NewPassword::parse("new_password", new, &account.email)?;
        let mut tx = self.db.begin().await?;
        self.set_password(&mut tx, account, &new, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn set_password(&self, tx: &mut Tx<'_>, account: &Account, new: &NewPassword, now: DateTime<Utc>) -> DomainResult<()> {
        let hash = self.hasher.hash(new)?;
        sqlx::query("UPDATE accounts SET password_hash = $1, updated_at = $2 WHERE id = $3").bind(hash).bind(ts(now)).bind(&account.id).execute(&mut **tx).await?;
        sessions::end_all(&mut **tx, &account.id, now).await?;
        account_links::retire(tx, &account.id, Purpose::ResetPassword, now).await?;
        self.send(tx, Some(&account.id), messages::password_changed(&account.email, &self.page("/console/reset")), now).await
    }

    /// R16: mails a confirmation link to the new address and a notice to the current one.
    pub async fn request_email_change(&self, account: &Account, new_email: &str, password: &str, now: DateTime<Utc>) -> DomainResult<()> {
        let new_email = parse_email("new_email", new_email)?;
        if new_email.as_str() == account.email {
            return Err(DomainError::field("new_email", "is already your address"));
        }
        if self.check_password(&account.email, password).await?.is_none() {
            return Err(DomainError::field("current_password", "is not your current password"));
        }
        let mut tx = self.db.begin().await?;
        let token = account_links::issue(&mut tx, &account.id, Purpose::ChangeEmail, Some(new_email.as_str()), now).await?;
        self.send(&mut tx, Some(&account.id), messages::confirm_new_email(new_email.as_str(), &self.link("/console/email/confirm", &token)), now).await?;
        self.send(&mut tx, Some(&account.id), messages::email_change_requested(&account.email, new_email.as_str()), now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// R16: the new address confirmed. `Ok(None)`: the link is not valid.
    pub async fn confirm_email_change(&self, token: &str, now: DateTime<Utc>) -> DomainResult<Option<Account>> {
        let mut tx = self.db.begin().await?;
        let Some(link) = account_links::redeem(&mut tx, token, Purpose::ChangeEmail, now).await? else { return Ok(None) };
        let account = find(&mut *tx, "id", &link.account_id).await?.ok_or(DomainError::NotFound("account"))?;
        let new_email = link.new_email.ok_or_else(|| DomainError::internal("an email-change link without its address"))?;
        if find(&mut *tx, "email", &new_email).await?.is_some() {
            return Err(DomainError::conflict_on(ErrorCode::EmailTaken, "new_email", "new_email: that address belongs to another account; nothing was changed"));
        }
        sqlx::query("UPDATE accounts SET email = $1, email_verified_at = $2, updated_at = $2 WHERE id = $3").bind(&new_email).bind(ts(now)).bind(&account.id).execute(&mut *tx).await?;
        sqlx::query("UPDATE organizations SET email = $1, email_verified = 1 WHERE id = $2").bind(&new_email).bind(&account.org_id).execute(&mut *tx).await?;
        self.send(&mut tx, Some(&account.id), messages::email_changed(&account.email, &new_email), now).await?;
        tx.commit().await?;
        tracing::info!(account_id = %account.id, "email address changed");
        self.get(&account.id).await.map(Some)
    }

    /// R18: corrects the name on the account.
    pub async fn correct_name(&self, account: &Account, full_name: &str, now: DateTime<Utc>) -> DomainResult<()> {
        let name = parse_full_name("full_name", full_name)?;
        sqlx::query("UPDATE accounts SET full_name = $1, updated_at = $2 WHERE id = $3").bind(name).bind(ts(now)).bind(&account.id).execute(self.db).await?;
        Ok(())
    }

    /// R18: schedules the erasure after the grace period. Needs the password and the
    /// organization's name typed out, so it is never one stray click.
    pub async fn request_deletion(&self, account: &Account, password: &str, confirm: &str, now: DateTime<Utc>) -> DomainResult<DateTime<Utc>> {
        if confirm.trim() != account.org_name {
            return Err(DomainError::field("confirm", format!("type the organization's name, `{}`, to confirm", account.org_name)));
        }
        if self.check_password(&account.email, password).await?.is_none() {
            return Err(DomainError::field("current_password", "is not your current password"));
        }
        let due = now + DELETION_GRACE;
        let mut tx = self.db.begin().await?;
        sqlx::query("UPDATE accounts SET deletion_requested_at = $1, deletion_due_at = $2, updated_at = $1 WHERE id = $3")
            .bind(ts(now))
            .bind(ts(due))
            .bind(&account.id)
            .execute(&mut *tx)
            .await?;
        self.send(&mut tx, Some(&account.id), messages::deletion_scheduled(&account.email, due, &self.page("/console/account")), now).await?;
        tx.commit().await?;
        tracing::info!(account_id = %account.id, due = %ts(due), "account deletion scheduled");
        Ok(due)
    }

    pub async fn cancel_deletion(&self, account: &Account, now: DateTime<Utc>) -> DomainResult<()> {
        let mut tx = self.db.begin().await?;
        let done = sqlx::query("UPDATE accounts SET deletion_requested_at = NULL, deletion_due_at = NULL, updated_at = $1 WHERE id = $2 AND deletion_due_at IS NOT NULL")
            .bind(ts(now))
            .bind(&account.id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 1 {
            self.send(&mut tx, Some(&account.id), messages::deletion_cancelled(&account.email), now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// R18: everything held about the customer, as JSON: the account, the organization, its
    /// billing records, homeserver settings, tokens (never their secrets), sessions, mail sent
    /// and the access-log entries with IP addresses.
    pub async fn export(&self, account: &Account, now: DateTime<Utc>) -> DomainResult<Value> {
        let org = &account.org_id;
        Ok(json!({
            "exported_at": ts(now),
            "account": {
                "id": account.id,
                "email": account.email,
                "full_name": account.full_name,
                "email_verified_at": account.email_verified_at.map(ts),
                "age_confirmed_at": ts(account.age_confirmed_at),
                "terms_version": account.terms_version,
                "terms_accepted_at": ts(account.terms_accepted_at),
                "deletion_due_at": account.deletion_due_at.map(ts),
                "created_at": ts(account.created_at),
            },
            "organization": rows(self.db, "SELECT id, name, email, email_verified, created_at FROM organizations WHERE id = $1", org).await?.pop(),
            "billing_plans": rows(self.db, "SELECT id, plan, active_plan, pending_plan, billing_period, additional_users, payment_method_id, status, \
                anniversary_anchor, current_period_start, current_period_end, created_at, updated_at FROM billing_plans WHERE org_id = $1 ORDER BY id", org).await?,
            "billing_profile": rows(self.db, "SELECT contact_name, contact_email, card_brand, card_last4, updated_at FROM billing_profiles WHERE org_id = $1", org).await?.pop(),
            "billing_contact_changes": rows(self.db, "SELECT changed_by, changed_at, field, old_value, new_value FROM billing_contact_changes WHERE org_id = $1 ORDER BY changed_at, id", org).await?,
            "invoices": rows(self.db, "SELECT id, status, total_cents, amount_due_cents, amount_paid_cents, currency, created_at FROM invoices WHERE org_id = $1 ORDER BY created_at, id", org).await?,
            "homeservers": rows(self.db, "SELECT id, name, server_name, region, billing_plan_id, federation_enabled, registration, allowed_email_domains, \
                guest_access, encryption_by_default, deletion_protection, volume_size_gb, dc_entity_name, dc_admin_email, status, terms_version, \
                terms_accepted_at, created_at, updated_at FROM homeservers WHERE org_id = $1 ORDER BY id", org).await?,
            "reserved_users": rows(self.db, "SELECT id, homeserver_id, email, localpart, display_name, admin, created_at FROM reserved_users WHERE org_id = $1 ORDER BY id", org).await?,
            "backup_policies": rows(self.db, "SELECT id, homeserver_id, schedule, window_start, retention_days, created_at FROM backup_policies WHERE org_id = $1 ORDER BY id", org).await?,
            "backups": rows(self.db, "SELECT id, homeserver_id, status, started_at, finished_at, size_bytes, expires_at FROM backups WHERE org_id = $1 ORDER BY id", org).await?,
            "api_tokens": rows(self.db, "SELECT id, description, created_at, last_used_at, expires_at, revoked_at FROM api_tokens WHERE org_id = $1 ORDER BY id", org).await?,
            "sessions": rows(self.db, "SELECT id, user_agent, created_at, last_seen_at, expires_at, revoked_at FROM sessions WHERE account_id = $1 ORDER BY id", &account.id).await?,
            "mail": outbox::sent_to_account(self.db, &account.id).await?,
            "access_log": rows(self.db, "SELECT at, ip, method, path, status, request_id FROM access_log WHERE org_id = $1 ORDER BY at, id", org).await?,
        }))
    }
}

/// Rows as JSON objects, column by column (text and integers; NULL as null).
async fn rows(db: &Db, sql: &str, key: &str) -> DomainResult<Vec<Value>> {
    use sqlx::{Column, Row, ValueRef};
    let found = sqlx::query(sql).bind(key).fetch_all(db).await?;
    found
        .iter()
        .map(|r| {
            let mut object = serde_json::Map::new();
            for (i, column) in r.columns().iter().enumerate() {
                let raw = r.try_get_raw(i)?;
                let value = if raw.is_null() {
                    Value::Null
                } else if let Ok(n) = r.try_get::<i64, _>(i) {
                    Value::from(n)
                } else {
                    Value::from(r.try_get::<String, _>(i)?)
                };
                object.insert(column.name().to_owned(), value);
            }
            Ok(Value::Object(object))
        })
        .collect()
}

/// Accounts whose erasure is due.
pub async fn due_for_erasure(db: &Db, now: DateTime<Utc>) -> DomainResult<Vec<Account>> {
    let sql = format!("SELECT {COLUMNS} FROM accounts a JOIN organizations o ON o.id = a.org_id WHERE a.deletion_due_at IS NOT NULL AND a.deletion_due_at <= $1");
    sqlx::query(&sql).bind(ts(now)).fetch_all(db).await?.iter().map(from_row).collect()
}

/// R18, last step: once the organization has no homeservers and no backups left, every row
/// that names the customer goes, in one transaction. Returns false while something remains.
pub async fn erase_records(db: &Db, sealer: &Sealer, account: &Account, now: DateTime<Utc>) -> DomainResult<bool> {
    let mut tx = db.begin().await?;
    let left: i64 = sqlx::query_scalar("SELECT (SELECT COUNT(*) FROM homeservers WHERE org_id = $1) + (SELECT COUNT(*) FROM backups WHERE org_id = $1)")
        .bind(&account.org_id)
        .fetch_one(&mut *tx)
        .await?;
    if left > 0 {
        return Ok(false);
    }
    for (table, column, key) in [
        ("restores", "org_id", &account.org_id),
        ("homeserver_events", "org_id", &account.org_id),
        ("idempotency_keys", "org_id", &account.org_id),
        ("billing_plans", "org_id", &account.org_id),
        ("invoice_links", "org_id", &account.org_id),
        ("invoices", "org_id", &account.org_id),
        ("billing_contact_changes", "org_id", &account.org_id),
        ("billing_profiles", "org_id", &account.org_id),
        ("api_tokens", "org_id", &account.org_id),
        ("access_log", "org_id", &account.org_id),
        ("sessions", "account_id", &account.id),
        ("account_links", "account_id", &account.id),
        ("mail_outbox", "account_id", &account.id),
        ("accounts", "id", &account.id),
        ("organizations", "id", &account.org_id),
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE {column} = $1")).bind(key).execute(&mut *tx).await?;
    }
    // The farewell is the only trace, and it names no account.
    outbox::enqueue(&mut tx, sealer, None, &messages::account_deleted(&account.email), now).await?;
    tx.commit().await?;
    tracing::info!(account_id = %account.id, org_id = %account.org_id, "account erased");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_up_names_every_field_at_fault() {
        let errors = parse_sign_up(&SignUpForm { email: "nope".into(), password: "short".into(), ..Default::default() }).err().unwrap();
        let fields: Vec<String> = errors
            .iter()
            .map(|e| match e {
                DomainError::Invalid { field, .. } => field.clone(),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(fields, ["email", "full_name", "organization", "password", "age_confirmed", "terms_accepted"]);
        assert!(errors[4].to_string().contains("R21") && errors[5].to_string().contains("R20"));
    }

    #[test]
    fn a_complete_sign_up_parses() {
        let form = SignUpForm {
            email: "Ops@Example.com".into(),
            full_name: "Ada Ops".into(),
            organization: "acme".into(),
            password: "plum harbour ninety".into(),
            age_confirmed: Some("on".into()),
            terms_accepted: Some("on".into()),
        };
        let s = parse_sign_up(&form).ok().unwrap();
        assert_eq!(s.email.as_str(), "ops@example.com");
    }
}
