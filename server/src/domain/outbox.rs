//! The mail outbox. A message is queued in the same transaction as the change it tells about,
//! and sent by the housekeeping worker; a relay that is down delays it, with growing pauses,
//! but never loses it. The body (which may hold a one-time link) is sealed with the control
//! plane's secrets key and dropped once the relay has taken the message.

use chrono::{DateTime, Duration, Utc};
use matrixhost_seal::Sealer;

use super::{DomainError, DomainResult};
use crate::db::{ts, Db, RowExt, Tx};
use crate::mail::Mail;

fn context(id: &str) -> String {
    format!("mail-outbox:{id}")
}

/// Queues `mail`; it goes out once the transaction commits and the worker runs.
pub async fn enqueue(tx: &mut Tx<'_>, sealer: &Sealer, account_id: Option<&str>, mail: &Mail, now: DateTime<Utc>) -> DomainResult<()> {
    let id = crate::ids::new_id("mail");
    let body = serde_json::to_vec(mail).map_err(DomainError::internal)?;
    let sealed = sealer.seal(&body, &context(&id)).map_err(DomainError::internal)?;
    sqlx::query("INSERT INTO mail_outbox (id, account_id, recipient, subject, body_sealed, created_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, $6, $6)")
        .bind(&id)
        .bind(account_id)
        .bind(&mail.to)
        .bind(&mail.subject)
        .bind(sealed)
        .bind(ts(now))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A queued message, opened.
pub struct Queued {
    pub id: String,
    pub attempts: i64,
    pub mail: Mail,
}

/// Messages due for an attempt, oldest first.
pub async fn due(db: &Db, sealer: &Sealer, now: DateTime<Utc>, limit: i64) -> DomainResult<Vec<Queued>> {
    let rows = sqlx::query(
        "SELECT id, attempts, body_sealed FROM mail_outbox WHERE sent_at IS NULL AND body_sealed IS NOT NULL AND next_attempt_at <= $1 ORDER BY created_at, id LIMIT $2",
    )
    .bind(ts(now))
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            let id = r.text("id")?;
            let body = sealer.open(&r.text("body_sealed")?, &context(&id)).map_err(DomainError::internal)?;
            let mail = serde_json::from_slice(&body).map_err(DomainError::internal)?;
            Ok(Queued { id, attempts: r.int("attempts")?, mail })
        })
        .collect()
}

/// Marks messages sent and drops their bodies, in one transaction (a burst of mail costs one
/// commit). A message that belongs to no account (an invitation, the farewell after an
/// erasure, R18) leaves no row at all.
pub async fn mark_sent(db: &Db, ids: &[String], now: DateTime<Utc>) -> DomainResult<()> {
    let mut tx = db.begin().await?;
    for id in ids {
        sqlx::query("UPDATE mail_outbox SET sent_at = $1, body_sealed = NULL, last_error = NULL, attempts = attempts + 1 WHERE id = $2")
            .bind(ts(now))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM mail_outbox WHERE id = $1 AND account_id IS NULL").bind(id).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// The pause after `attempts` failures: 30 s doubling, at most an hour.
pub fn retry_delay(attempts: i64) -> Duration {
    Duration::seconds((30i64 << attempts.clamp(0, 7)).min(3600))
}

/// Keeps the message for later. `error` is the platform's own sentence, never the relay's
/// answer verbatim (which may quote the message).
pub async fn mark_failed(db: &Db, q: &Queued, error: &str, now: DateTime<Utc>) -> DomainResult<()> {
    sqlx::query("UPDATE mail_outbox SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2 WHERE id = $3")
        .bind(ts(now + retry_delay(q.attempts)))
        .bind(error)
        .bind(&q.id)
        .execute(db)
        .await?;
    Ok(())
}

/// Mail sent to an account, for its data export (R18): who, what and when; never the body.
pub async fn sent_to_account(db: &Db, account_id: &str) -> DomainResult<Vec<serde_json::Value>> {
    let rows = sqlx::query("SELECT recipient, subject, created_at, sent_at FROM mail_outbox WHERE account_id = $1 ORDER BY created_at, id")
        .bind(account_id)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|r| Ok(serde_json::json!({ "to": r.text("recipient")?, "subject": r.text("subject")?, "queued_at": r.text("created_at")?, "sent_at": r.opt_text("sent_at")? })))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(retry_delay(0), Duration::seconds(30));
        assert_eq!(retry_delay(1), Duration::seconds(60));
        assert_eq!(retry_delay(6), Duration::seconds(1920));
        assert_eq!(retry_delay(50), Duration::seconds(3600));
    }
}
