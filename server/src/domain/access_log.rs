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

/// Rows per INSERT: a batch costs a few statements, not one per request (8 parameters a row
/// stays far below SQLite's and PostgreSQL's limits).
const ROWS_PER_STATEMENT: usize = 200;
const COLUMNS: usize = 8;

pub async fn insert_batch(db: &Db, entries: &[Entry]) -> DomainResult<()> {
    let mut tx = db.begin().await?;
    for chunk in entries.chunks(ROWS_PER_STATEMENT) {
        // `$n` placeholders, which both databases take (the `Any` driver does not rewrite `?`).
        let rows: Vec<String> = (0..chunk.len())
            .map(|r| format!("({})", (1..=COLUMNS).map(|c| format!("${}", r * COLUMNS + c)).collect::<Vec<_>>().join(", ")))
            .collect();
        let sql = format!("INSERT INTO access_log (id, at, ip, org_id, method, path, status, request_id) VALUES {}", rows.join(", "));
        let mut insert = sqlx::query(&sql);
        for e in chunk {
            insert = insert
                .bind(crate::ids::new_id("log"))
                .bind(ts(e.at))
                .bind(&e.ip)
                .bind(&e.org_id)
                .bind(&e.method)
                .bind(&e.path)
                .bind(i64::from(e.status))
                .bind(&e.request_id);
        }
        insert.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// R17: deletes entries older than the retention period; returns how many.
pub async fn prune(db: &Db, now: DateTime<Utc>) -> DomainResult<u64> {
    let done = sqlx::query("DELETE FROM access_log WHERE at < $1").bind(ts(now - RETENTION)).execute(db).await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_larger_than_one_statement_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display())).await.unwrap();
        let at = Utc::now();
        let entries: Vec<Entry> = (0..ROWS_PER_STATEMENT * 2 + 7)
            .map(|i| Entry { at, ip: "127.0.0.1".into(), org_id: None, method: "GET".into(), path: format!("/v1/x/{i}"), status: 200, request_id: format!("req_{i}") })
            .collect();
        insert_batch(&db, &entries).await.unwrap();
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM access_log").fetch_one(&db).await.unwrap();
        assert_eq!(count as usize, entries.len());
        let last: String = sqlx::query_scalar("SELECT path FROM access_log WHERE request_id = $1").bind(format!("req_{}", entries.len() - 1)).fetch_one(&db).await.unwrap();
        assert_eq!(last, format!("/v1/x/{}", entries.len() - 1));
    }
}
