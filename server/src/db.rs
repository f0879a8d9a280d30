//! The store: one sqlx `Any` pool over SQLite (default, WAL) or PostgreSQL, the same portable
//! migrations on both, and the conversions between rows and API values.

use std::str::FromStr;

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub type Db = AnyPool;
pub type Tx<'a> = sqlx::Transaction<'a, sqlx::Any>;

/// `server/migrations/`, embedded: each runs once, inside a transaction, on either backend.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database the URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            anyhow::bail!("database URL must start with sqlite: or postgres://")
        }
    }
}

/// Opens the pool and brings the schema up to date.
pub async fn connect(url: &str) -> anyhow::Result<Db> {
    sqlx::any::install_default_drivers();
    let backend = Backend::of(url)?;
    // SQLite allows one writer; a single connection serialises writes instead of failing them
    // with SQLITE_BUSY in the middle of a transaction.
    let max = if backend == Backend::Sqlite { 1 } else { 8 };
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .connect(url)
        .await
        .with_context(|| format!("cannot open the database ({})", redact_url(url)))?;
    if backend == Backend::Sqlite {
        // WAL: readers never block the writer, and a crash never leaves a torn write.
        sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
        sqlx::query("PRAGMA synchronous = FULL").execute(&pool).await?;
        sqlx::query("PRAGMA foreign_keys = ON").execute(&pool).await?;
        // R18: erased rows are overwritten, not left readable in free pages.
        sqlx::query("PRAGMA secure_delete = ON").execute(&pool).await?;
    }
    migrate(&pool).await?;
    Ok(pool)
}

async fn migrate(pool: &Db) -> anyhow::Result<()> {
    // The hand-rolled runner of earlier builds kept its own table; their databases predate the
    // node agent and are not carried over.
    let legacy = sqlx::query("SELECT 1 FROM schema_migrations LIMIT 1").fetch_optional(pool).await.is_ok();
    anyhow::ensure!(
        !legacy,
        "this database was made by a matrixhostd from before the node agent (it has a `schema_migrations` table); start from a new database"
    );
    MIGRATOR.run(pool).await.context("cannot apply the database migrations")?;
    Ok(())
}

/// Hides the password in a database URL before it reaches a message.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Timestamps are stored as second-precision RFC 3339 UTC text.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

pub fn parse_ts(s: &str) -> anyhow::Result<DateTime<Utc>> {
    Ok(DateTime::parse_from_rfc3339(s).with_context(|| format!("bad timestamp {s:?} in the database"))?.with_timezone(&Utc))
}

/// Typed column access with a useful error when the stored value is not what the type expects.
pub trait RowExt {
    fn text(&self, col: &str) -> anyhow::Result<String>;
    fn opt_text(&self, col: &str) -> anyhow::Result<Option<String>>;
    fn int(&self, col: &str) -> anyhow::Result<i64>;
    fn opt_int(&self, col: &str) -> anyhow::Result<Option<i64>>;
    fn flag(&self, col: &str) -> anyhow::Result<bool> {
        Ok(self.int(col)? != 0)
    }
    fn time(&self, col: &str) -> anyhow::Result<DateTime<Utc>> {
        parse_ts(&self.text(col)?)
    }
    fn opt_time(&self, col: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
        self.opt_text(col)?.as_deref().map(parse_ts).transpose()
    }
    /// A stored domain value, parsed back through its newtype.
    fn parsed<T: FromStr>(&self, col: &str) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.text(col)?;
        T::from_str(&raw).map_err(|e| anyhow::anyhow!("bad {col} {raw:?} in the database: {e}"))
    }
    fn opt_parsed<T: FromStr>(&self, col: &str) -> anyhow::Result<Option<T>>
    where
        T::Err: std::fmt::Display,
    {
        match self.opt_text(col)? {
            Some(raw) => T::from_str(&raw).map(Some).map_err(|e| anyhow::anyhow!("bad {col} {raw:?} in the database: {e}")),
            None => Ok(None),
        }
    }
}

impl RowExt for AnyRow {
    fn text(&self, col: &str) -> anyhow::Result<String> {
        self.try_get::<String, _>(col).with_context(|| format!("column {col}"))
    }
    fn opt_text(&self, col: &str) -> anyhow::Result<Option<String>> {
        self.try_get::<Option<String>, _>(col).with_context(|| format!("column {col}"))
    }
    fn int(&self, col: &str) -> anyhow::Result<i64> {
        self.try_get::<i64, _>(col).with_context(|| format!("column {col}"))
    }
    fn opt_int(&self, col: &str) -> anyhow::Result<Option<i64>> {
        self.try_get::<Option<i64>, _>(col).with_context(|| format!("column {col}"))
    }
}

/// Takes the row's write lock until the transaction ends (a row lock on PostgreSQL; SQLite has
/// one writer anyway), so a check followed by a write cannot interleave with another's.
pub async fn lock_row(tx: &mut Tx<'_>, table: &'static str, id: &str) -> sqlx::Result<()> {
    sqlx::query(&format!("UPDATE {table} SET version = version WHERE id = $1")).bind(id).execute(&mut **tx).await?;
    Ok(())
}

/// Whether a database error is a unique-constraint violation (on either backend).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => {
            db.kind() == sqlx::error::ErrorKind::UniqueViolation
                || db.code().is_some_and(|c| c == "23505" || c == "2067" || c == "1555")
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(redact_url("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert!(!redact_url("postgres://u:p@ss@h/db").contains("p@ss"));
    }
}
