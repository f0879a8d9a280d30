//! Reads from a homeserver's own database (R19, R23), made by Python running as the tenant
//! inside its sandbox: root never runs Python over tenant data. What comes back is the tenant's
//! to write, so it is parsed strictly: bounded sizes, plain characters, numbers that parse.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use matrixhost_agent_api::Consent;

use crate::snapshot::InTenant;
use crate::supervisor::{Supervisor, Tenant};

/// A job as the tenant: the venv's Python on paths inside its data directory.
pub struct TenantJobs<'a> {
    pub supervisor: &'a Supervisor,
    pub tenant: &'a Tenant,
    pub timeout: Duration,
    pub max_output: usize,
}

impl InTenant for TenantJobs<'_> {
    fn python(&self, script: &str, args: &[&str]) -> Result<String> {
        let sandbox = self.supervisor.sandbox.clone();
        let data = match sandbox.kind {
            crate::sandbox::Kind::Bubblewrap => std::path::PathBuf::from("/data"),
            #[cfg(feature = "test-hooks")]
            crate::sandbox::Kind::Unsandboxed => self.tenant.data_dir.clone(),
        };
        let mut argv = vec![sandbox.python().to_string_lossy().into_owned(), "-c".into(), script.into()];
        argv.extend(args.iter().map(|a| data.join(a).to_string_lossy().into_owned()));
        let out = self.supervisor.run_helper(self.tenant, argv, self.timeout, self.max_output)?;
        String::from_utf8(out).context("the job's output is not UTF-8")
    }
}

const MAU_PY: &str = r#"
import sqlite3, sys, urllib.parse
con = sqlite3.connect("file:" + urllib.parse.quote(sys.argv[1]) + "?mode=ro", uri=True, timeout=10)
(n,) = con.execute(
    "SELECT COUNT(*) FROM monthly_active_users m LEFT JOIN users u ON m.user_id = u.name "
    "WHERE u.appservice_id IS NULL OR u.appservice_id = ''"
).fetchone()
print(n)
"#;

/// R23: the current MAU count. Synapse 1.163 has no admin API for it (only a Prometheus metric,
/// which hosted homeservers do not enable), so it is read the way Synapse counts it for the cap:
/// rows of `monthly_active_users` that are not application-service users.
pub fn monthly_active_users(jobs: &TenantJobs) -> Result<u64> {
    let out = jobs.python(MAU_PY, &["homeserver.db"])?;
    parse_count(&out)
}

fn parse_count(text: &str) -> Result<u64> {
    let t = text.trim();
    if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
        bail!("the MAU count is not a number");
    }
    Ok(t.parse()?)
}

const CONSENTS_PY: &str = r#"
import sqlite3, sys, urllib.parse
con = sqlite3.connect("file:" + urllib.parse.quote(sys.argv[1]) + "?mode=ro", uri=True, timeout=10)
for name, version, ts in con.execute("SELECT name, consent_version, consent_ts FROM users WHERE consent_version IS NOT NULL"):
    print(f"{name}\t{version}\t{ts or 0}")
"#;

/// The most consent rows the agent accepts from one homeserver.
const MAX_CONSENTS: usize = 100_000;

/// R19: each user's current consent (Synapse keeps only the last).
pub fn consents(jobs: &TenantJobs) -> Result<Vec<Consent>> {
    parse_consents(&jobs.python(CONSENTS_PY, &["homeserver.db"])?)
}

fn plain(s: &str, max: usize, extra: &[u8]) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// `user_id \t version \t millis` lines. A line that does not fit is dropped (and counted in
/// the log); it never reaches the control plane.
fn parse_consents(text: &str) -> Result<Vec<Consent>> {
    let mut out = Vec::new();
    let mut dropped = 0usize;
    for line in text.lines() {
        if out.len() >= MAX_CONSENTS {
            bail!("more than {MAX_CONSENTS} consent rows");
        }
        let mut parts = line.split('\t');
        let (Some(user), Some(version), Some(ts), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            dropped += 1;
            continue;
        };
        // Matrix user ids: @localpart:server, localparts from Synapse's historical set.
        let user_ok = user.starts_with('@') && user.contains(':') && plain(&user[1..], 255, b"._=-/:+");
        let version_ok = plain(version, 64, b"._-");
        let at = ts.parse::<i64>().ok().filter(|t| (0..=253_402_300_799_999).contains(t));
        match (user_ok, version_ok, at) {
            (true, true, Some(at)) => out.push(Consent { user_id: user.to_owned(), version: version.to_owned(), accepted_at_ms: at }),
            _ => dropped += 1,
        }
    }
    if dropped > 0 {
        tracing::warn!(dropped, "consent rows that do not parse were dropped");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_must_be_plain_numbers() {
        assert_eq!(parse_count("12\n").unwrap(), 12);
        for bad in ["", "-1", "1e9", "12 13", "99999999999999999999999", "<script>"] {
            assert!(parse_count(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn consent_rows_from_the_tenant_are_checked() {
        let text = "@alice:acme.test\tv0123456789ab\t1700000000000\n\
                    @bob:acme.test\tv1\t0\textra\n\
                    @eve:acme.test\tv1<script>\t1\n\
                    @mallory:acme.test\tv1\t-5\n\
                    no-at:acme.test\tv1\t1\n\
                    @carol:acme.test\tv1\t99\n";
        let c = parse_consents(text).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].user_id.as_str(), c[0].version.as_str(), c[0].accepted_at_ms), ("@alice:acme.test", "v0123456789ab", 1_700_000_000_000));
        assert_eq!(c[1].user_id, "@carol:acme.test");
    }
}
