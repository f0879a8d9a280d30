//! Organizations and API tokens. A token is 256 random bits shown once; only its SHA-256 hash
//! is stored, so a copy of the database cannot be used to call the API.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use matrixhost_api::{ErrorCode, Email, OrgName};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::{DomainError, DomainResult};
use crate::db::{ts, Db, RowExt};

pub const TOKEN_PREFIX: &str = "mh_";

/// 256 random bits as hex: API tokens, one-time links and session secrets.
pub fn generate_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn generate_token() -> String {
    format!("{TOKEN_PREFIX}{}", generate_secret())
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// When each token's `last_used_at` was last written, so a busy token costs one write a minute.
#[derive(Debug, Default)]
pub struct LastUsed(Mutex<HashMap<String, DateTime<Utc>>>);

impl LastUsed {
    fn due(&self, token_id: &str, now: DateTime<Utc>) -> bool {
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(token_id) {
            Some(at) if now - *at < chrono::Duration::seconds(60) => false,
            _ => {
                seen.insert(token_id.to_owned(), now);
                true
            }
        }
    }
}

/// Who a valid token speaks for.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub org_id: String,
    pub org_name: String,
    pub email_verified: bool,
}

/// The token's principal, or `None` for an unknown or revoked token.
pub async fn authenticate(db: &Db, last_used: &LastUsed, token: &str, now: DateTime<Utc>) -> DomainResult<Option<Principal>> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT t.id AS token_id, o.id AS org_id, o.name, o.email_verified FROM api_tokens t \
         JOIN organizations o ON o.id = t.org_id WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $2)",
    )
    .bind(hash_token(token))
    .bind(ts(now))
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let token_id = row.text("token_id")?;
    if last_used.due(&token_id, now) {
        sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2").bind(ts(now)).bind(&token_id).execute(db).await?;
    }
    Ok(Some(Principal { token_id, org_id: row.text("org_id")?, org_name: row.text("name")?, email_verified: row.flag("email_verified")? }))
}

/// Whether `token` is an active token of `org_id`.
pub async fn token_is_active(db: &Db, org_id: &str, token: &str) -> DomainResult<bool> {
    let found: Option<String> = sqlx::query_scalar("SELECT id FROM api_tokens WHERE token_hash = $1 AND org_id = $2 AND revoked_at IS NULL")
        .bind(hash_token(token))
        .bind(org_id)
        .fetch_optional(db)
        .await?;
    Ok(found.is_some())
}

pub struct Org {
    pub id: String,
    pub name: String,
    pub email: String,
    pub email_verified: bool,
}

pub async fn find_org(db: &Db, name: &str) -> DomainResult<Option<Org>> {
    let row = sqlx::query("SELECT id, name, email, email_verified FROM organizations WHERE name = $1").bind(name).fetch_optional(db).await?;
    row.map(|r| Ok::<_, DomainError>(Org { id: r.text("id")?, name: r.text("name")?, email: r.text("email")?, email_verified: r.flag("email_verified")? }))
        .transpose()
}

pub async fn get_org(db: &Db, id: &str) -> DomainResult<Org> {
    let r = sqlx::query("SELECT id, name, email, email_verified FROM organizations WHERE id = $1").bind(id).fetch_one(db).await?;
    Ok(Org { id: r.text("id")?, name: r.text("name")?, email: r.text("email")?, email_verified: r.flag("email_verified")? })
}

pub async fn create_org(db: &Db, name: &OrgName, email: &Email, verified: bool, now: DateTime<Utc>) -> DomainResult<Org> {
    if find_org(db, name.as_str()).await?.is_some() {
        return Err(DomainError::conflict(ErrorCode::Conflict, format!("organization {name} already exists")));
    }
    let id = crate::ids::new_id("org");
    sqlx::query("INSERT INTO organizations (id, name, email, email_verified, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(name.as_str())
        .bind(email.as_str())
        .bind(i64::from(verified))
        .bind(ts(now))
        .execute(db)
        .await?;
    Ok(Org { id, name: name.to_string(), email: email.to_string(), email_verified: verified })
}

/// R15: marks the organization's email as verified.
pub async fn verify_org(db: &Db, name: &str) -> DomainResult<()> {
    let done = sqlx::query("UPDATE organizations SET email_verified = 1 WHERE name = $1").bind(name).execute(db).await?;
    if done.rows_affected() != 1 {
        return Err(DomainError::NotFound("organization"));
    }
    Ok(())
}

/// Creates a token and returns `(id, secret)`. The secret is not stored.
pub async fn create_token(db: &Db, org_id: &str, description: &str, now: DateTime<Utc>) -> DomainResult<(String, String)> {
    create_expiring_token(db, org_id, description, None, now).await
}

/// A token that stops working at `expires_at` (`None`: when revoked).
pub async fn create_expiring_token(db: &Db, org_id: &str, description: &str, expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DomainResult<(String, String)> {
    let id = crate::ids::new_id("tok");
    let token = generate_token();
    sqlx::query("INSERT INTO api_tokens (id, org_id, token_hash, description, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&id)
        .bind(org_id)
        .bind(hash_token(&token))
        .bind(description)
        .bind(ts(now))
        .bind(expires_at.map(ts))
        .execute(db)
        .await?;
    Ok((id, token))
}

pub struct TokenInfo {
    pub id: String,
    pub description: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    pub expires_at: Option<String>,
}

pub async fn list_tokens(db: &Db, org_id: &str) -> DomainResult<Vec<TokenInfo>> {
    let rows = sqlx::query("SELECT id, description, created_at, last_used_at, revoked_at, expires_at FROM api_tokens WHERE org_id = $1 ORDER BY created_at, id")
        .bind(org_id)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| {
            Ok::<_, DomainError>(TokenInfo {
                id: r.text("id")?,
                description: r.text("description")?,
                created_at: r.text("created_at")?,
                last_used_at: r.opt_text("last_used_at")?,
                revoked_at: r.opt_text("revoked_at")?,
                expires_at: r.opt_text("expires_at")?,
            })
        })
        .collect()
}

/// Revokes a token: any token for the operator (`org_id` `None`), one of its own
/// organization's for a customer.
pub async fn revoke_token(db: &Db, org_id: Option<&str>, id: &str, now: DateTime<Utc>) -> DomainResult<()> {
    let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND ($3 = '' OR org_id = $3) AND revoked_at IS NULL")
        .bind(ts(now))
        .bind(id)
        .bind(org_id.unwrap_or(""))
        .execute(db)
        .await?;
    if done.rows_affected() != 1 {
        return Err(DomainError::NotFound("active token"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = generate_token();
        assert!(a.starts_with("mh_") && a.len() == 67);
        assert_ne!(a, generate_token());
        assert_eq!(hash_token(&a).len(), 64);
        assert!(!hash_token(&a).contains(&a[3..]));
    }
}
