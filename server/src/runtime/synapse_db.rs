//! Read-only queries on a homeserver's Synapse database, run with the venv's Python (the Rust
//! side has no SQLite binding of its own: sqlx's lives behind the `Any` pool of the control plane).

use std::path::Path;

use anyhow::Context;
use chrono::{DateTime, TimeZone, Utc};

/// Runs `script` with the database path as `sys.argv[1]`; returns its stdout.
pub fn run(python: &Path, db_path: &Path, script: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(db_path)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into()))
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", python.display()))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        anyhow::bail!("query on {} failed: {}", db_path.display(), err.lines().last().unwrap_or(""));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// R19: each user's current consent (Synapse keeps only the last): `(user_id, version, when)`.
pub fn consents(python: &Path, db_path: &Path) -> anyhow::Result<Vec<(String, String, DateTime<Utc>)>> {
    const SCRIPT: &str = r#"
import sqlite3, sys, urllib.parse
con = sqlite3.connect("file:" + urllib.parse.quote(sys.argv[1]) + "?mode=ro", uri=True, timeout=10)
for name, version, ts in con.execute("SELECT name, consent_version, consent_ts FROM users WHERE consent_version IS NOT NULL"):
    print(f"{name}\t{version}\t{ts or 0}")
"#;
    run(python, db_path, SCRIPT)?
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            let (user, version, ts) = (parts.next(), parts.next(), parts.next());
            let (Some(user), Some(version), Some(ts)) = (user, version, ts) else { anyhow::bail!("bad consent row {line:?}") };
            let ms: i64 = ts.trim().parse().context("bad consent timestamp")?;
            let at = Utc.timestamp_millis_opt(ms).single().context("consent timestamp out of range")?;
            Ok((user.to_owned(), version.to_owned(), at))
        })
        .collect()
}

/// R23: the current MAU count. Synapse 1.163 has no admin API for it (only a Prometheus metric,
/// which hosted homeservers do not enable), so it is read the way Synapse counts it for the cap:
/// rows of `monthly_active_users` that are not application-service users.
pub fn mau(python: &Path, db_path: &Path) -> anyhow::Result<u64> {
    const SCRIPT: &str = r#"
import sqlite3, sys, urllib.parse
con = sqlite3.connect("file:" + urllib.parse.quote(sys.argv[1]) + "?mode=ro", uri=True, timeout=10)
(n,) = con.execute(
    "SELECT COUNT(*) FROM monthly_active_users m LEFT JOIN users u ON m.user_id = u.name "
    "WHERE u.appservice_id IS NULL OR u.appservice_id = ''"
).fetchone()
print(n)
"#;
    run(python, db_path, SCRIPT)?.trim().parse::<u64>().context("the MAU count is not a number")
}
