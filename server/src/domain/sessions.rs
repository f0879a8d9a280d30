//! R16: console sessions, signed with rotating server-side keys.
//!
//! A session cookie is `<key id>.<secret>.<mac>`: 256 random bits and an HMAC-SHA256 over the
//! key id and the secret, under a key from the ring in `session_keys`. A new key is made every
//! day and signs every new cookie; older keys keep verifying until they retire, 15 days after
//! they were made (longer than any session lives), and an active session's cookie is re-signed
//! with the newest key. An operator who fears a key leaked rotates at once and retires the rest
//! (`matrixhostd session-keys rotate --retire-old`), which ends every session they signed.
//! The database holds the keys sealed and the sessions' secrets only as hashes.

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use matrixhost_seal::Sealer;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::orgs::{generate_secret, hash_token};
use super::{DomainError, DomainResult};
use crate::db::{ts, Db, RowExt};

/// How often a new signing key is made.
pub const KEY_ROTATION: Duration = Duration::days(1);
/// A session ends this long after log-in, whatever happens.
pub const LIFETIME: Duration = Duration::days(14);
/// ... or after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::days(3);

/// When a key made at `created` stops verifying: after every session it could have signed.
fn retirement(created: DateTime<Utc>) -> DateTime<Utc> {
    created + KEY_ROTATION + LIFETIME
}

fn key_context(id: &str) -> String {
    format!("session-key:{id}")
}

struct SigningKey {
    id: String,
    secret: Zeroizing<Vec<u8>>,
}

impl SigningKey {
    fn mac(&self, session_secret: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        mac.update(self.id.as_bytes());
        mac.update(b".");
        mac.update(session_secret.as_bytes());
        mac
    }

    fn sign(&self, session_secret: &str) -> String {
        format!("{}.{session_secret}.{}", self.id, hex::encode(self.mac(session_secret).finalize().into_bytes()))
    }

    /// Constant-time check of a cookie's MAC.
    fn verifies(&self, session_secret: &str, mac_hex: &str) -> bool {
        hex::decode(mac_hex).is_ok_and(|mac| self.mac(session_secret).verify_slice(&mac).is_ok())
    }
}

async fn insert_key(db: &Db, sealer: &Sealer, now: DateTime<Utc>) -> DomainResult<SigningKey> {
    let id = crate::ids::new_id("sk");
    let mut secret = Zeroizing::new(vec![0u8; 32]);
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let sealed = sealer.seal(&secret, &key_context(&id)).map_err(DomainError::internal)?;
    sqlx::query("INSERT INTO session_keys (id, key_sealed, created_at, retires_at) VALUES ($1, $2, $3, $4)")
        .bind(&id)
        .bind(sealed)
        .bind(ts(now))
        .bind(ts(retirement(now)))
        .execute(db)
        .await?;
    tracing::info!(key_id = %id, "made a new session signing key");
    Ok(SigningKey { id, secret })
}

fn open_key(sealer: &Sealer, id: String, sealed: &str) -> DomainResult<SigningKey> {
    let secret = sealer.open(sealed, &key_context(&id)).map_err(DomainError::internal)?;
    Ok(SigningKey { id, secret })
}

/// The key that signs new cookies: the newest one, or a new one when it is due.
async fn signing_key(db: &Db, sealer: &Sealer, now: DateTime<Utc>) -> DomainResult<SigningKey> {
    let row = sqlx::query("SELECT id, key_sealed, created_at FROM session_keys WHERE retires_at > $1 ORDER BY created_at DESC, id DESC LIMIT 1")
        .bind(ts(now))
        .fetch_optional(db)
        .await?;
    match row {
        Some(r) if r.time("created_at")? > now - KEY_ROTATION => open_key(sealer, r.text("id")?, &r.text("key_sealed")?),
        _ => insert_key(db, sealer, now).await,
    }
}

/// A key that still verifies.
async fn verifying_key(db: &Db, sealer: &Sealer, id: &str, now: DateTime<Utc>) -> DomainResult<Option<SigningKey>> {
    let row = sqlx::query("SELECT key_sealed FROM session_keys WHERE id = $1 AND retires_at > $2").bind(id).bind(ts(now)).fetch_optional(db).await?;
    row.map(|r| open_key(sealer, id.to_owned(), &r.text("key_sealed")?)).transpose()
}

/// Makes the key due today (the housekeeping worker calls it daily) and deletes retired ones.
pub async fn rotate_keys(db: &Db, sealer: &Sealer, now: DateTime<Utc>) -> DomainResult<()> {
    signing_key(db, sealer, now).await?;
    sqlx::query("DELETE FROM session_keys WHERE retires_at <= $1").bind(ts(now)).execute(db).await?;
    Ok(())
}

/// The operator's rotation: a new key now; with `retire_old`, every older key stops verifying
/// at once, and the sessions it signed with them end. Returns how many keys were retired.
pub async fn rotate_now(db: &Db, sealer: &Sealer, retire_old: bool, now: DateTime<Utc>) -> DomainResult<u64> {
    let key = insert_key(db, sealer, now).await?;
    if !retire_old {
        return Ok(0);
    }
    let done = sqlx::query("DELETE FROM session_keys WHERE id <> $1").bind(&key.id).execute(db).await?;
    Ok(done.rows_affected())
}

/// Starts a session and returns its cookie value.
pub async fn start(db: &Db, sealer: &Sealer, account_id: &str, user_agent: &str, now: DateTime<Utc>) -> DomainResult<String> {
    let key = signing_key(db, sealer, now).await?;
    let secret = generate_secret();
    let agent: String = user_agent.chars().filter(|c| !c.is_control()).take(200).collect();
    sqlx::query(
        "INSERT INTO sessions (id, secret_hash, account_id, user_agent, created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $5, $5, $6)",
    )
    .bind(crate::ids::new_id("ses"))
    .bind(hash_token(&secret))
    .bind(account_id)
    .bind(agent)
    .bind(ts(now))
    .bind(ts(now + LIFETIME))
    .execute(db)
    .await?;
    Ok(key.sign(&secret))
}

/// A valid session.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub account_id: String,
    /// The cookie signed with the newest key, when it was signed with an older one.
    pub resigned: Option<String>,
}

/// The session behind a cookie, or `None` when the cookie is malformed, forged, signed with a
/// retired key, or its session ended.
pub async fn authenticate(db: &Db, sealer: &Sealer, cookie: &str, now: DateTime<Utc>) -> DomainResult<Option<Session>> {
    let mut parts = cookie.splitn(3, '.');
    let (Some(key_id), Some(secret), Some(mac)) = (parts.next(), parts.next(), parts.next()) else { return Ok(None) };
    if !crate::ids::looks_like_id(key_id) || secret.len() != 64 {
        return Ok(None);
    }
    let Some(key) = verifying_key(db, sealer, key_id, now).await? else { return Ok(None) };
    if !key.verifies(secret, mac) {
        return Ok(None);
    }
    let row = sqlx::query(
        "SELECT id, account_id, last_seen_at FROM sessions WHERE secret_hash = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_seen_at > $3",
    )
    .bind(hash_token(secret))
    .bind(ts(now))
    .bind(ts(now - IDLE_TIMEOUT))
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let id = row.text("id")?;
    // One write a minute per session is enough for the idle timeout and the sessions list.
    if row.time("last_seen_at")? < now - Duration::minutes(1) {
        sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE id = $2").bind(ts(now)).bind(&id).execute(db).await?;
    }
    let newest = signing_key(db, sealer, now).await?;
    let resigned = (newest.id != key.id).then(|| newest.sign(secret));
    Ok(Some(Session { id, account_id: row.text("account_id")?, resigned }))
}

/// A session as its owner sees it in the list.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: String,
    pub user_agent: String,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

pub async fn list(db: &Db, account_id: &str, now: DateTime<Utc>) -> DomainResult<Vec<SessionInfo>> {
    let rows = sqlx::query(
        "SELECT id, user_agent, created_at, last_seen_at FROM sessions WHERE account_id = $1 AND revoked_at IS NULL AND expires_at > $2 AND last_seen_at > $3 ORDER BY created_at, id",
    )
    .bind(account_id)
    .bind(ts(now))
    .bind(ts(now - IDLE_TIMEOUT))
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok(SessionInfo { id: r.text("id")?, user_agent: r.text("user_agent")?, created_at: r.time("created_at")?, last_seen_at: r.time("last_seen_at")? }))
        .collect()
}

/// Logs one session out.
pub async fn end(db: &Db, account_id: &str, session_id: &str, now: DateTime<Utc>) -> DomainResult<()> {
    let done = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND account_id = $3 AND revoked_at IS NULL")
        .bind(ts(now))
        .bind(session_id)
        .bind(account_id)
        .execute(db)
        .await?;
    if done.rows_affected() != 1 {
        return Err(DomainError::NotFound("session"));
    }
    Ok(())
}

/// Logs every session of the account out (log out everywhere; a password reset).
pub async fn end_all<'e, E: sqlx::Executor<'e, Database = sqlx::Any>>(db: E, account_id: &str, now: DateTime<Utc>) -> DomainResult<u64> {
    let done = sqlx::query("UPDATE sessions SET revoked_at = $1 WHERE account_id = $2 AND revoked_at IS NULL").bind(ts(now)).bind(account_id).execute(db).await?;
    Ok(done.rows_affected())
}

/// Ended sessions are deleted a day after they end.
pub async fn prune(db: &Db, now: DateTime<Utc>) -> DomainResult<u64> {
    let cutoff = now - Duration::days(1);
    let done = sqlx::query("DELETE FROM sessions WHERE expires_at < $1 OR revoked_at < $1 OR last_seen_at < $2")
        .bind(ts(cutoff))
        .bind(ts(cutoff - IDLE_TIMEOUT))
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> SigningKey {
        SigningKey { id: id.into(), secret: Zeroizing::new(vec![byte; 32]) }
    }

    #[test]
    fn cookies_verify_only_under_their_key() {
        let k = key("sk_a", 1);
        let cookie = k.sign("s3cret");
        let (kid, rest) = cookie.split_once('.').unwrap();
        let (secret, mac) = rest.split_once('.').unwrap();
        assert_eq!(kid, "sk_a");
        assert!(k.verifies(secret, mac));
        assert!(!k.verifies("s3creT", mac));
        assert!(!key("sk_a", 2).verifies(secret, mac), "another key");
        assert!(!key("sk_b", 1).verifies(secret, mac), "the key id is signed too");
        assert!(!k.verifies(secret, "zz"));
    }

    #[test]
    fn keys_outlive_every_session_they_sign() {
        let made = Utc::now();
        assert!(retirement(made) > made + KEY_ROTATION + LIFETIME - Duration::seconds(1));
    }
}
