//! R17: the platform's log of customer requests, with the caller's IP address. Entries are
//! written in batches (a request never waits for this write) and deleted after 30 days.

use chrono::{DateTime, Duration, Utc};

use super::DomainResult;
use crate::db::{ts, Db};

/// R17: how long an IP address is kept.
pub const RETENTION: Duration = Duration::days(30);

/// One request.
#[derive(Debug, Clone)]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub ip: String,
    pub org_id: Option<String>,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub request_id: String,
}

pub async fn insert_batch(db: &Db, entries: &[Entry]) -> DomainResult<()> {
    let mut tx = db.begin().await?;
    for e in entries {
        sqlx::query("INSERT INTO access_log (id, at, ip, org_id, method, path, status, request_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(crate::ids::new_id("log"))
            .bind(ts(e.at))
            .bind(&e.ip)
            .bind(&e.org_id)
            .bind(&e.method)
            .bind(&e.path)
            .bind(i64::from(e.status))
            .bind(&e.request_id)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// R17: deletes entries older than the retention period; returns how many.
pub async fn prune(db: &Db, now: DateTime<Utc>) -> DomainResult<u64> {
    let done = sqlx::query("DELETE FROM access_log WHERE at < $1").bind(ts(now - RETENTION)).execute(db).await?;
    Ok(done.rows_affected())
}
