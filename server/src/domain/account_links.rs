//! One-time links (R15, R16): verifying an email address, resetting a password, confirming a
//! new address. A link carries 256 random bits; only their SHA-256 is stored. It works once,
//! until it expires, and a newer link of the same kind replaces the older one.

use chrono::{DateTime, Duration, Utc};

use super::orgs::{generate_secret, hash_token};
use super::DomainResult;
use crate::db::{ts, Db, RowExt, Tx};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// R15: proves the sign-up address; 24 hours.
    VerifyEmail,
    /// R16: 1 hour.
    ResetPassword,
    /// R16: proves the new address; 1 hour.
    ChangeEmail,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
            Purpose::ChangeEmail => "change_email",
        }
    }

    pub fn lifetime(self) -> Duration {
        match self {
            Purpose::VerifyEmail => Duration::hours(24),
            Purpose::ResetPassword | Purpose::ChangeEmail => Duration::hours(1),
        }
    }
}

/// Makes a link for `account_id`, retiring its unused links of the same kind, and returns the
/// token (shown only in the mail).
pub async fn issue(tx: &mut Tx<'_>, account_id: &str, purpose: Purpose, new_email: Option<&str>, now: DateTime<Utc>) -> DomainResult<String> {
    retire(tx, account_id, purpose, now).await?;
    let token = generate_secret();
    sqlx::query("INSERT INTO account_links (token_hash, account_id, purpose, new_email, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(hash_token(&token))
        .bind(account_id)
        .bind(purpose.as_str())
        .bind(new_email)
        .bind(ts(now))
        .bind(ts(now + purpose.lifetime()))
        .execute(&mut **tx)
        .await?;
    Ok(token)
}

/// Makes every unused link of that kind unusable (a reset ends older reset links).
pub async fn retire(tx: &mut Tx<'_>, account_id: &str, purpose: Purpose, now: DateTime<Utc>) -> DomainResult<()> {
    sqlx::query("UPDATE account_links SET used_at = $1 WHERE account_id = $2 AND purpose = $3 AND used_at IS NULL")
        .bind(ts(now))
        .bind(account_id)
        .bind(purpose.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A link that was redeemed.
#[derive(Debug)]
pub struct Redeemed {
    pub account_id: String,
    pub new_email: Option<String>,
}

/// Uses the link: `None` when it is unknown, forged, of another kind, used or expired (one
/// answer for all, so a guess learns nothing).
pub async fn redeem(tx: &mut Tx<'_>, token: &str, purpose: Purpose, now: DateTime<Utc>) -> DomainResult<Option<Redeemed>> {
    let hash = hash_token(token);
    let used = sqlx::query("UPDATE account_links SET used_at = $1 WHERE token_hash = $2 AND purpose = $3 AND used_at IS NULL AND expires_at > $1")
        .bind(ts(now))
        .bind(&hash)
        .bind(purpose.as_str())
        .execute(&mut **tx)
        .await?;
    if used.rows_affected() != 1 {
        return Ok(None);
    }
    let row = sqlx::query("SELECT account_id, new_email FROM account_links WHERE token_hash = $1").bind(&hash).fetch_one(&mut **tx).await?;
    Ok(Some(Redeemed { account_id: row.text("account_id")?, new_email: row.opt_text("new_email")? }))
}

/// Whether the link would be accepted now, without using it (to decide which page to show).
pub async fn is_usable(db: &Db, token: &str, purpose: Purpose, now: DateTime<Utc>) -> DomainResult<bool> {
    let found: Option<String> =
        sqlx::query_scalar("SELECT account_id FROM account_links WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3")
            .bind(hash_token(token))
            .bind(purpose.as_str())
            .bind(ts(now))
            .fetch_optional(db)
            .await?;
    Ok(found.is_some())
}

/// Links that can no longer be used are kept a day for support questions, then deleted.
pub async fn prune(db: &Db, now: DateTime<Utc>) -> DomainResult<u64> {
    let cutoff = ts(now - Duration::days(1));
    let done = sqlx::query("DELETE FROM account_links WHERE expires_at < $1 OR (used_at IS NOT NULL AND used_at < $1)").bind(cutoff).execute(db).await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_are_the_promised_ones() {
        assert_eq!(Purpose::VerifyEmail.lifetime(), Duration::hours(24));
        assert_eq!(Purpose::ResetPassword.lifetime(), Duration::hours(1));
        assert_eq!(Purpose::ChangeEmail.lifetime(), Duration::hours(1));
    }
}
