//! A homeserver's Synapse configuration: where the product rules become Synapse knobs.
//!
//! The config, the log config and the privacy-notice templates live in a directory the agent
//! owns (`agent/config/<id>`, root:tenant-group 0750), bound read-only into the sandbox at
//! `/config`. The tenant can read them but never change them, and the agent never reads
//! anything the tenant wrote to produce them. Synapse's own data (database, media, signing key,
//! logs) is on the encrypted volume, at `/data` in the sandbox. It listens on a Unix socket in
//! `/run/matrixhost`, which only the platform's ingress reaches.
//!
//! The rule-to-knob mapping is documented in `docs/synapse.md`.

use std::path::{Path, PathBuf};

use matrixhost_agent_api::{RegistrationMode, SynapseSpec, SYNAPSE_SOCKET};
use serde_json::json;

use crate::fsat::Dir;

pub const CONFIG_FILE: &str = "homeserver.yaml";
pub const LOG_CONFIG_FILE: &str = "log.config";
pub const CONSENT_DIR: &str = "consent";
/// Files on the volume (the tenant's; the platform never reads them, except as noted in
/// `snapshot.rs`).
pub const LOG_FILE: &str = "homeserver.log";
pub const DATABASE_FILE: &str = "homeserver.db";
pub const MEDIA_DIR: &str = "media_store";
pub const SIGNING_KEY_FILE: &str = "signing.key";
pub const PID_FILE: &str = "homeserver.pid";

/// Where Synapse is told to send email when registration needs a verified email (R9
/// `email_domains`). Synapse refuses to offer email registration without an `email` section, but
/// the hosting platform has no mail relay for homeservers yet, so it points at a local port
/// nobody listens on: Synapse starts, checks the domain whitelist, and only fails when it
/// actually tries to send.
pub const SMTP_HOST: &str = "127.0.0.1";
pub const SMTP_PORT: u16 = 1;

/// R17: how long the connection logs (`user_ips`) are kept.
pub const IP_LOG_RETENTION: &str = "30d";

/// Where the config places things, as Synapse sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub data_dir: PathBuf,
    pub config_dir: PathBuf,
    pub socket_dir: PathBuf,
}

impl Placement {
    /// Inside the sandbox.
    pub fn sandboxed() -> Placement {
        Placement { data_dir: "/data".into(), config_dir: "/config".into(), socket_dir: "/run/matrixhost".into() }
    }

    pub fn config_file(&self) -> PathBuf {
        self.config_dir.join(CONFIG_FILE)
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// `^[^@]+@(a\.com|b\.com)$`: Synapse matches `allowed_local_3pids` patterns with Python's
/// `re.match` against the canonicalised (lower-case) address.
pub fn email_domain_pattern(domains: &[String]) -> String {
    let alternatives: Vec<String> = domains.iter().map(|d| regex_escape(&d.to_ascii_lowercase())).collect();
    format!("^[^@]+@({})$", alternatives.join("|"))
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if !c.is_ascii_alphanumeric() {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Renders `homeserver.yaml`. The output is JSON (which YAML parsers accept), so no value can
/// break out of its string; keys are sorted, so the same spec always gives the same bytes.
pub fn render_config(spec: &SynapseSpec, at: &Placement) -> String {
    let data = &at.data_dir;
    let mut names = vec!["client", "consent"];
    if spec.federation_enabled {
        names.push("federation");
    }
    let mut c = json!({
        "server_name": spec.server_name,
        "pid_file": path_str(&data.join(PID_FILE)),
        // R3: a Unix socket in a directory only the platform's ingress can reach. The directory
        // does the access control, so the socket itself may be 0666.
        "listeners": [{
            "path": path_str(&at.socket_dir.join(SYNAPSE_SOCKET)),
            "mode": 0o666,
            "type": "http",
            "x_forwarded": true,
            "resources": [{ "names": names, "compress": false }],
        }],
        "database": { "name": "sqlite3", "args": { "database": path_str(&data.join(DATABASE_FILE)) } },
        "media_store_path": path_str(&data.join(MEDIA_DIR)),
        "signing_key_path": path_str(&data.join(SIGNING_KEY_FILE)),
        "log_config": path_str(&at.config_dir.join(LOG_CONFIG_FILE)),
        "public_baseurl": spec.public_base_url,

        // Offline-safe: no phoning home, no key servers, no previews, no metrics.
        "report_stats": false,
        "trusted_key_servers": [],
        "suppress_key_server_warning": true,
        "enable_metrics": false,
        "url_preview_enabled": false,
        "presence": { "enabled": false },
        "auto_join_rooms": [],
        "enable_3pid_lookup": false,
        "enable_3pid_changes": false,
        "user_ips_max_age": IP_LOG_RETENTION,
        // The ingress passes each client's address (X-Forwarded-For). Clients behind one address
        // (an office NAT, the platform's own loopback) share the per-address login limit, so it
        // is raised; the per-account and failed-attempt limits keep Synapse's defaults.
        "rc_login": { "address": { "per_second": 1.0, "burst_count": 50 } },

        "registration_shared_secret": spec.secrets.registration_shared_secret,
        "macaroon_secret_key": spec.secrets.macaroon_secret_key,
        "form_secret": spec.secrets.form_secret,

        // R5-R8, R10: the MAU cap, the trial period and the reserved users.
        "limit_usage_by_mau": true,
        "max_mau_value": spec.mau_cap,
        "mau_trial_days": spec.mau_trial_days,
        "mau_limit_reserved_threepids": spec
            .reserved_emails
            .iter()
            .map(|e| json!({ "medium": "email", "address": e.to_ascii_lowercase() }))
            .collect::<Vec<_>>(),

        // R9
        "allow_guest_access": spec.guest_access,

        // R22
        "encryption_enabled_by_default_for_room_type": if spec.encryption_by_default { "all" } else { "off" },

        // R19
        "user_consent": {
            "template_dir": path_str(&at.config_dir.join(CONSENT_DIR)),
            "version": spec.privacy_notice.version,
            "block_events_error": "You must accept the privacy notice of this server before you can send messages or join rooms. Read and accept it at %(consent_uri)s",
            "require_at_registration": true,
            "policy_name": "Privacy notice",
        },
    });
    let o = c.as_object_mut().expect("an object");

    if !spec.federation_enabled {
        // R9: no server is whitelisted, so every outbound and inbound federation request is
        // refused, on top of there being no federation resource and no network in the sandbox.
        o.insert("federation_domain_whitelist".into(), json!([]));
        o.insert("allow_public_rooms_over_federation".into(), json!(false));
    }

    match spec.registration {
        RegistrationMode::InviteOnly => {
            o.insert("enable_registration".into(), json!(false));
        }
        RegistrationMode::Open => {
            o.insert("enable_registration".into(), json!(true));
            o.insert("enable_registration_without_verification".into(), json!(true));
        }
        RegistrationMode::EmailDomains => {
            o.insert("enable_registration".into(), json!(true));
            o.insert("registrations_require_3pid".into(), json!(["email"]));
            o.insert(
                "allowed_local_3pids".into(),
                json!([{ "medium": "email", "pattern": email_domain_pattern(&spec.allowed_email_domains) }]),
            );
            o.insert(
                "email".into(),
                json!({
                    "smtp_host": SMTP_HOST,
                    "smtp_port": SMTP_PORT,
                    "enable_tls": false,
                    "notif_from": format!("{} <noreply@{}>", spec.server_name, spec.server_name),
                    "app_name": spec.server_name,
                    "enable_notifs": false,
                }),
            );
        }
    }

    if let Some(message) = &spec.blocked_message {
        // R12
        o.insert("hs_disabled".into(), json!(true));
        o.insert("hs_disabled_message".into(), json!(message));
    }
    if let Some(contact) = &spec.admin_contact {
        o.insert("admin_contact".into(), json!(contact));
    }

    let body = serde_json::to_string_pretty(&c).expect("JSON always serialises");
    format!("# Generated by matrixhost-agent; do not edit (it is rewritten on every change).\n{body}\n")
}

/// The Python logging config: INFO to `homeserver.log` on the volume, rotated at midnight and
/// kept 30 days (R17: the logs hold IP addresses).
pub fn render_log_config(at: &Placement) -> String {
    let c = json!({
        "version": 1,
        "disable_existing_loggers": false,
        "formatters": {
            "precise": { "format": "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s" }
        },
        "handlers": {
            "file": {
                "class": "logging.handlers.TimedRotatingFileHandler",
                "formatter": "precise",
                "filename": path_str(&at.data_dir.join(LOG_FILE)),
                "when": "midnight",
                "backupCount": 30,
                "encoding": "utf8",
            }
        },
        "loggers": { "synapse.storage.SQL": { "level": "INFO" } },
        "root": { "level": "INFO", "handlers": ["file"] },
    });
    serde_json::to_string_pretty(&c).expect("JSON always serialises") + "\n"
}

/// The page Synapse shows once a user has accepted the notice.
const CONSENT_SUCCESS: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="robots" content="noindex">
<title>Privacy notice accepted</title>
</head>
<body>
<p>Thank you: your acceptance of the privacy notice has been recorded. You can go back to your
Matrix client.</p>
</body>
</html>
"#;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("`{0}` is not a usable privacy notice version")]
    NoticeVersion(String),
    #[error("the server name is not a DNS name")]
    ServerName,
}

/// What the agent insists on before it writes a spec into files (the control plane checked it
/// already; a second check keeps a confused caller from writing odd paths).
pub fn check(spec: &SynapseSpec) -> Result<(), SpecError> {
    let v = &spec.privacy_notice.version;
    if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_') {
        return Err(SpecError::NoticeVersion(v.chars().take(64).filter(|c| !c.is_control()).collect()));
    }
    let name = &spec.server_name;
    if name.is_empty() || name.len() > 253 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':') {
        return Err(SpecError::ServerName);
    }
    Ok(())
}

/// Writes the config, the log config and the notice templates into `dir` (the agent's config
/// directory for this homeserver), readable by the tenant's group only.
pub fn write_config(dir: &Dir, spec: &SynapseSpec, at: &Placement, tenant_gid: u32) -> std::io::Result<()> {
    let files: [(&str, String); 2] = [(CONFIG_FILE, render_config(spec, at)), (LOG_CONFIG_FILE, render_log_config(at))];
    for (name, text) in files {
        let f = dir.replace_file(name, text.as_bytes(), 0o640)?;
        crate::fsat::set_owner_mode(&f, 0, tenant_gid, 0o640)?;
    }
    let consent = dir.ensure_dir(CONSENT_DIR, 0o750)?;
    consent.set_owner_mode(0, tenant_gid, 0o750)?;
    let en = consent.ensure_dir("en", 0o750)?;
    en.set_owner_mode(0, tenant_gid, 0o750)?;
    for (name, text) in [(format!("{}.html", spec.privacy_notice.version), spec.privacy_notice.html.as_str()), ("success.html".to_owned(), CONSENT_SUCCESS)] {
        let f = en.replace_file(&name, text.as_bytes(), 0o640)?;
        crate::fsat::set_owner_mode(&f, 0, tenant_gid, 0o640)?;
    }
    // Old versions of the notice are not needed: Synapse serves only the current one.
    let current = format!("{}.html", spec.privacy_notice.version);
    for (name, _) in en.entries()? {
        if name != current && name != "success.html" {
            en.remove_all(&name)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use matrixhost_agent_api::{PrivacyNotice, SynapseSecrets};
    use serde_json::Value;

    fn spec() -> SynapseSpec {
        SynapseSpec {
            server_name: "chat.acme.example".into(),
            public_base_url: "http://127.0.0.1:18008/".into(),
            federation_enabled: true,
            registration: RegistrationMode::InviteOnly,
            allowed_email_domains: vec![],
            guest_access: false,
            encryption_by_default: true,
            mau_cap: 50,
            mau_trial_days: 2,
            reserved_emails: vec![],
            blocked_message: None,
            privacy_notice: PrivacyNotice { version: "v0123456789ab".into(), html: "<p>notice</p>".into() },
            admin_contact: None,
            secrets: SynapseSecrets { registration_shared_secret: "rss".into(), macaroon_secret_key: "msk".into(), form_secret: "fs".into() },
        }
    }

    fn parse(spec: &SynapseSpec) -> Value {
        let text = render_config(spec, &Placement::sandboxed());
        let body: String = text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
        serde_json::from_str(&body).unwrap()
    }

    #[test]
    fn config_is_deterministic_offline_safe_and_listens_on_a_unix_socket() {
        let s = spec();
        let at = Placement::sandboxed();
        assert_eq!(render_config(&s, &at), render_config(&s, &at));
        let c = parse(&s);
        assert_eq!(c["server_name"], "chat.acme.example");
        assert_eq!(c["report_stats"], false);
        assert_eq!(c["trusted_key_servers"], json!([]));
        assert_eq!(c["enable_metrics"], false);
        assert_eq!(c["url_preview_enabled"], false);
        assert_eq!(c["enable_3pid_changes"], false);
        assert_eq!(c["rc_login"]["address"]["burst_count"], 50);
        assert_eq!(c["database"]["args"]["database"], "/data/homeserver.db");
        assert_eq!(c["media_store_path"], "/data/media_store");
        assert_eq!(c["signing_key_path"], "/data/signing.key");
        assert_eq!(c["log_config"], "/config/log.config");
        let l = &c["listeners"][0];
        // R3: no TCP port at all, only the socket in the directory the ingress reaches.
        assert_eq!(l["path"], "/run/matrixhost/synapse.sock");
        assert!(l.get("port").is_none() && l.get("bind_addresses").is_none());
        // The ingress sets X-Forwarded-For; Synapse on a socket has no other way to know the client.
        assert_eq!(l["x_forwarded"], true);
        assert_eq!(c["registration_shared_secret"], "rss");
        assert_eq!(c["form_secret"], "fs");
        let mut s2 = spec();
        s2.mau_cap = 51;
        assert_ne!(render_config(&s, &at), render_config(&s2, &at));
    }

    #[test]
    fn values_cannot_break_out_of_their_strings() {
        let mut s = spec();
        s.blocked_message = Some("paid\"\n  hs_disabled: false\nx: {{".into());
        let c = parse(&s);
        assert_eq!(c["hs_disabled"], true);
        assert_eq!(c["hs_disabled_message"], "paid\"\n  hs_disabled: false\nx: {{");
    }

    #[test]
    fn r5_r6_r8_mau_cap_trial_and_reserved_users() {
        let mut s = spec();
        s.mau_cap = 60;
        s.reserved_emails = vec!["CEO@acme.example".into(), "it@acme.example".into()];
        let c = parse(&s);
        assert_eq!(c["limit_usage_by_mau"], true);
        assert_eq!(c["max_mau_value"], 60);
        assert_eq!(c["mau_trial_days"], 2);
        assert_eq!(
            c["mau_limit_reserved_threepids"],
            json!([{ "medium": "email", "address": "ceo@acme.example" }, { "medium": "email", "address": "it@acme.example" }])
        );
    }

    #[test]
    fn r9_registration_modes_guests_and_federation() {
        let c = parse(&spec());
        assert_eq!(c["enable_registration"], false);
        assert!(c.get("registrations_require_3pid").is_none() && c.get("email").is_none());
        assert_eq!(c["allow_guest_access"], false);
        assert_eq!(c["listeners"][0]["resources"][0]["names"], json!(["client", "consent", "federation"]));

        let mut s = spec();
        s.registration = RegistrationMode::Open;
        let c = parse(&s);
        assert_eq!((c["enable_registration"].clone(), c["enable_registration_without_verification"].clone()), (json!(true), json!(true)));

        let mut s = spec();
        s.registration = RegistrationMode::EmailDomains;
        s.allowed_email_domains = vec!["acme.example".into(), "acme-labs.co.uk".into()];
        s.federation_enabled = false;
        s.guest_access = true;
        let c = parse(&s);
        assert_eq!(c["registrations_require_3pid"], json!(["email"]));
        assert_eq!(
            c["allowed_local_3pids"],
            json!([{ "medium": "email", "pattern": r"^[^@]+@(acme\.example|acme\-labs\.co\.uk)$" }])
        );
        assert_eq!(c["email"]["smtp_host"], "127.0.0.1");
        assert_eq!(c["allow_guest_access"], true);
        assert_eq!(c["federation_domain_whitelist"], json!([]));
        assert_eq!(c["listeners"][0]["resources"][0]["names"], json!(["client", "consent"]));
    }

    #[test]
    fn r12_r19_r22_block_consent_and_encryption() {
        let c = parse(&spec());
        assert!(c.get("hs_disabled").is_none());
        assert_eq!(c["encryption_enabled_by_default_for_room_type"], "all");
        let u = &c["user_consent"];
        assert_eq!(u["version"], "v0123456789ab");
        assert_eq!(u["template_dir"], "/config/consent");
        assert_eq!(u["require_at_registration"], true);
        assert_eq!(u["block_events_error"].as_str().unwrap().matches('%').count(), 1);
        let mut s = spec();
        s.blocked_message = Some("R12: payment failed".into());
        s.admin_contact = Some("mailto:it@acme.example".into());
        s.encryption_by_default = false;
        let c = parse(&s);
        assert_eq!((c["hs_disabled"].clone(), c["hs_disabled_message"].clone()), (json!(true), json!("R12: payment failed")));
        assert_eq!(c["admin_contact"], "mailto:it@acme.example");
        assert_eq!(c["encryption_enabled_by_default_for_room_type"], "off");
    }

    #[test]
    fn the_agent_refuses_odd_versions_and_names() {
        let mut s = spec();
        s.privacy_notice.version = "../x".into();
        assert!(check(&s).is_err());
        let mut s = spec();
        s.server_name = "a/b".into();
        assert!(check(&s).is_err());
        assert!(check(&spec()).is_ok());
    }

    #[test]
    fn config_files_are_root_owned_and_replace_planted_links() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let dir_path = tmp.path().join("config");
        std::fs::create_dir(&dir_path).unwrap();
        std::os::unix::fs::symlink(&victim, dir_path.join(CONFIG_FILE)).unwrap();
        let dir = Dir::open(&dir_path).unwrap();
        write_config(&dir, &spec(), &Placement::sandboxed(), 4242).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(dir_path.join(CONFIG_FILE)).unwrap();
        assert!(m.is_file());
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (0, 4242, 0o640));
        assert_eq!(std::fs::read_to_string(dir_path.join("consent/en/v0123456789ab.html")).unwrap(), "<p>notice</p>");
        let mut s = spec();
        s.privacy_notice.version = "v2".into();
        write_config(&dir, &s, &Placement::sandboxed(), 4242).unwrap();
        assert!(!dir_path.join("consent/en/v0123456789ab.html").exists(), "old notices are dropped");
        assert!(dir_path.join("consent/en/v2.html").exists() && dir_path.join("consent/en/success.html").exists());
    }

    #[test]
    fn email_pattern_escapes_domains() {
        assert_eq!(email_domain_pattern(&["A.com".into()]), r"^[^@]+@(a\.com)$");
    }
}
