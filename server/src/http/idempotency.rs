//! Idempotent creates. The key is claimed inside the create's transaction: a concurrent retry
//! waits on the key's row and then replays the stored response; a create that fails releases it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use matrixhost_api::ErrorCode;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::error::{AppError, AppResult};
use super::{App, Caller, IdempotencyKey, Versioned};
use crate::db::{ts, RowExt, Tx};
use crate::domain::idempotency_keys;

/// A create's transaction, or the stored response of an earlier create with the same key.
pub enum Begun<'a> {
    Fresh(Tx<'a>),
    Replay(Response),
}

/// What the request was, so a key reused for a different request is caught.
pub fn fingerprint(route: &str, body: &impl Serialize) -> String {
    let json = serde_json::to_string(body).unwrap_or_default();
    hex::encode(Sha256::digest(format!("{route}\n{json}").as_bytes()))
}

/// Starts a create. With a key already used for this request, replays its response.
pub async fn begin<'a>(app: &'a App, caller: &Caller, key: &IdempotencyKey, fingerprint: &str) -> AppResult<Begun<'a>> {
    let Some(key) = key.0.as_deref() else {
        return Ok(Begun::Fresh(app.platform.db.begin().await?));
    };
    let now = app.platform.clock.now();
    for _ in 0..3 {
        let mut tx = app.platform.db.begin().await?;
        // The usual case is a new key: one statement claims it. A concurrent request with the
        // same key makes this wait (PostgreSQL) until that one commits or rolls back.
        if claim(&mut tx, caller, key, fingerprint, now).await? {
            return Ok(Begun::Fresh(tx));
        }
        // Taken. An expired key (housekeeping deletes the rest) is forgotten and claimed anew:
        // a lookup by the key, never a scan of the table inside a create.
        let expired = sqlx::query("DELETE FROM idempotency_keys WHERE org_id = $1 AND idem_key = $2 AND created_at < $3")
            .bind(&caller.org_id)
            .bind(key)
            .bind(idempotency_keys::cutoff(now))
            .execute(&mut *tx)
            .await?;
        if expired.rows_affected() > 0 && claim(&mut tx, caller, key, fingerprint, now).await? {
            return Ok(Begun::Fresh(tx));
        }
        if let Some(replay) = stored(&mut tx, caller, key, fingerprint).await? {
            return Ok(Begun::Replay(replay));
        }
    }
    Err(AppError::conflict(ErrorCode::IdempotencyKeyBusy, "another request with this Idempotency-Key is in progress; retry"))
}

/// Claims the key for this request; false when it is already taken.
async fn claim(tx: &mut Tx<'_>, caller: &Caller, key: &str, fingerprint: &str, now: chrono::DateTime<chrono::Utc>) -> AppResult<bool> {
    let claimed = sqlx::query("INSERT INTO idempotency_keys (org_id, idem_key, fingerprint, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING")
        .bind(&caller.org_id)
        .bind(key)
        .bind(fingerprint)
        .bind(ts(now))
        .execute(&mut **tx)
        .await?;
    Ok(claimed.rows_affected() == 1)
}

async fn stored(tx: &mut Tx<'_>, caller: &Caller, key: &str, fingerprint: &str) -> AppResult<Option<Response>> {
    let row = sqlx::query("SELECT fingerprint, status_code, response_body FROM idempotency_keys WHERE org_id = $1 AND idem_key = $2")
        .bind(&caller.org_id)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(row) = row else { return Ok(None) };
    if row.text("fingerprint")? != fingerprint {
        // The key is fine; what it was used for before conflicts with this request.
        return Err(AppError::new(
            StatusCode::CONFLICT,
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was used for a different request; use a new key",
        )
        .with_field("Idempotency-Key"));
    }
    let (Some(status), Some(body)) = (row.opt_int("status_code")?, row.opt_text("response_body")?) else {
        return Ok(None);
    };
    tracing::info!("replaying the response stored for this Idempotency-Key");
    let status = StatusCode::from_u16(status as u16).map_err(AppError::internal)?;
    let mut response = (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body.clone()).into_response();
    if let Some(version) = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v["version"].as_i64()) {
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{version}\"")) {
            response.headers_mut().insert(header::ETAG, etag);
        }
    }
    Ok(Some(response))
}

/// Stores the response under the key and commits the create.
pub async fn finish<T: Serialize>(mut tx: Tx<'_>, caller: &Caller, key: &IdempotencyKey, created: Versioned<T>) -> AppResult<Response> {
    if let Some(key) = key.0.as_deref() {
        let body = serde_json::to_string(&created.body).map_err(AppError::internal)?;
        sqlx::query("UPDATE idempotency_keys SET status_code = $1, response_body = $2 WHERE org_id = $3 AND idem_key = $4")
            .bind(i64::from(created.status.as_u16()))
            .bind(body)
            .bind(&caller.org_id)
            .bind(key)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(created.into_response())
}
