//! Idempotency keys of creates: how long one is remembered, and forgetting the old ones.

use chrono::{DateTime, Duration, Utc};

use super::DomainResult;
use crate::db::{ts, Db};

/// How long a create's key and its stored response are kept.
pub const LIFETIME: Duration = Duration::hours(24);

/// The oldest creation time a key still in force can have.
pub fn cutoff(now: DateTime<Utc>) -> String {
    ts(now - LIFETIME)
}

/// Deletes keys past their lifetime (by the `created_at` index; housekeeping calls it, so a
/// create never scans the table).
pub async fn prune(db: &Db, now: DateTime<Utc>) -> DomainResult<u64> {
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1").bind(cutoff(now)).execute(db).await?;
    Ok(done.rows_affected())
}
