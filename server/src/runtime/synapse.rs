//! A hosted homeserver's Synapse: its config (where the product rules become Synapse knobs),
//! its files on the encrypted volume, and its process.
//!
//! The rule-to-knob mapping is documented in `docs/synapse.md`; every knob written here was
//! checked against the installed Synapse (1.163) and the behaviours are exercised by the
//! integration tests at the bottom of this file, which run a real Synapse.

use std::fmt;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use matrixhost_api::Registration;
use serde_json::json;

use super::privacy_notice;

/// File names inside a homeserver's data directory.
pub const CONFIG_FILE: &str = "homeserver.yaml";
pub const LOG_CONFIG_FILE: &str = "log.config";
pub const LOG_FILE: &str = "homeserver.log";
/// Synapse's own stdout/stderr (start-up failures land here, before logging is set up).
pub const STDOUT_FILE: &str = "synapse.out";
pub const DATABASE_FILE: &str = "homeserver.db";
pub const MEDIA_DIR: &str = "media_store";
pub const SIGNING_KEY_FILE: &str = "signing.key";
pub const PID_FILE: &str = "homeserver.pid";
pub const CONSENT_DIR: &str = "consent_templates";

/// Where Synapse is told to send email when registration needs a verified email (R9
/// `email_domains`). Synapse refuses to offer email registration without an `email` section, but
/// the hosting platform has no mail relay yet, so it points at a local port nobody listens on:
/// Synapse starts, checks the domain whitelist, and only fails when it actually tries to send.
pub const SMTP_HOST: &str = "127.0.0.1";
pub const SMTP_PORT: u16 = 1;

/// How long the connection logs (`user_ips`) are kept: the privacy notice promises 30 days.
pub const IP_LOG_RETENTION: &str = "30d";

/// Everything that decides a homeserver's Synapse config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynapseSpec {
    pub server_name: String,
    /// Client (and, with federation, federation) listener on 127.0.0.1.
    pub port: u16,
    /// On the encrypted volume: database, media, signing key, config and logs all live here.
    pub data_dir: PathBuf,
    pub federation_enabled: bool,
    pub registration: Registration,
    /// With `Registration::EmailDomains`: the whitelisted domains (lower case).
    pub allowed_email_domains: Vec<String>,
    pub guest_access: bool,
    pub encryption_by_default: bool,
    /// R5/R8/R10: plan MAU + Additional Users.
    pub mau_cap: u32,
    /// R6: a user counts only once the account is this many days old. The product uses 2
    /// ([`DEFAULT_MAU_TRIAL_DAYS`]); 0 makes every user count at once (tests).
    pub mau_trial_days: u32,
    /// R8 -> `mau_limit_reserved_threepids` (takes effect when Synapse restarts).
    pub reserved_emails: Vec<String>,
    /// R12 -> `hs_disabled` + `hs_disabled_message`.
    pub blocked: Option<String>,
    /// R19 -> `user_consent.version` (see [`privacy_notice::version_of`]).
    pub privacy_notice_version: String,
    /// e.g. `http://127.0.0.1:PORT/`.
    pub public_base_url: String,
    /// Given to users in resource-limit errors (e.g. `mailto:it@acme.example`).
    pub admin_contact: Option<String>,
}

/// R6: accounts younger than this do not count towards the MAU cap.
pub const DEFAULT_MAU_TRIAL_DAYS: u32 = 2;

/// The per-homeserver secrets that go into its config.
#[derive(Clone, PartialEq, Eq)]
pub struct SynapseSecrets {
    pub registration_shared_secret: String,
    pub macaroon_secret_key: String,
    pub form_secret: String,
}

impl SynapseSecrets {
    /// Three fresh 32-byte random secrets, hex-encoded.
    pub fn generate() -> Self {
        let hex32 = || hex::encode(rand::random::<[u8; 32]>());
        Self { registration_shared_secret: hex32(), macaroon_secret_key: hex32(), form_secret: hex32() }
    }
}

impl fmt::Debug for SynapseSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SynapseSecrets")
            .field("registration_shared_secret", &"***")
            .field("macaroon_secret_key", &"***")
            .field("form_secret", &"***")
            .finish()
    }
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

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Renders `homeserver.yaml`. The output is JSON (which YAML parsers accept) with sorted keys,
/// so it is deterministic: the same spec and secrets always give the same bytes.
pub fn render_config(spec: &SynapseSpec, secrets: &SynapseSecrets) -> String {
    let dir = &spec.data_dir;
    let mut names = vec!["client", "consent"];
    if spec.federation_enabled {
        names.push("federation");
    }
    let mut c = json!({
        "server_name": spec.server_name,
        "pid_file": path_str(&dir.join(PID_FILE)),
        "listeners": [{
            "port": spec.port,
            "bind_addresses": ["127.0.0.1"],
            "type": "http",
            "tls": false,
            "x_forwarded": false,
            "resources": [{ "names": names, "compress": false }],
        }],
        "database": { "name": "sqlite3", "args": { "database": path_str(&dir.join(DATABASE_FILE)) } },
        "media_store_path": path_str(&dir.join(MEDIA_DIR)),
        "signing_key_path": path_str(&dir.join(SIGNING_KEY_FILE)),
        "log_config": path_str(&dir.join(LOG_CONFIG_FILE)),
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
        // The listener is loopback-only without X-Forwarded-For, so every client shares one
        // address: the per-address login limit would be a server-wide one. It is raised; the
        // per-account and failed-attempt limits keep Synapse's defaults.
        "rc_login": { "address": { "per_second": 1.0, "burst_count": 50 } },

        "registration_shared_secret": secrets.registration_shared_secret,
        "macaroon_secret_key": secrets.macaroon_secret_key,
        "form_secret": secrets.form_secret,

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
            "template_dir": path_str(&dir.join(CONSENT_DIR)),
            "version": spec.privacy_notice_version,
            "block_events_error": "You must accept the privacy notice of this server before you can send messages or join rooms. Read and accept it at %(consent_uri)s",
            "require_at_registration": true,
            "policy_name": "Privacy notice",
        },
    });
    let o = c.as_object_mut().expect("an object");

    if !spec.federation_enabled {
        // R9: no server is whitelisted, so every outbound and inbound federation request is
        // refused, on top of there being no federation listener at all.
        o.insert("federation_domain_whitelist".into(), json!([]));
        o.insert("allow_public_rooms_over_federation".into(), json!(false));
    }

    match spec.registration {
        Registration::InviteOnly => {
            o.insert("enable_registration".into(), json!(false));
        }
        Registration::Open => {
            o.insert("enable_registration".into(), json!(true));
            o.insert("enable_registration_without_verification".into(), json!(true));
        }
        Registration::EmailDomains => {
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

    if let Some(message) = &spec.blocked {
        // R12
        o.insert("hs_disabled".into(), json!(true));
        o.insert("hs_disabled_message".into(), json!(message));
    }
    if let Some(contact) = &spec.admin_contact {
        o.insert("admin_contact".into(), json!(contact));
    }

    let body = serde_json::to_string_pretty(&c).expect("JSON always serialises");
    format!("# Generated by matrixhostd; do not edit (it is rewritten on every change).\n{body}\n")
}

/// The Python logging config: INFO to `homeserver.log` in the data directory, rotated at
/// midnight and kept 30 days (the logs hold IP addresses).
pub fn render_log_config(data_dir: &Path) -> String {
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
                "filename": path_str(&data_dir.join(LOG_FILE)),
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

/// Writes the config, the log config and the privacy-notice templates into the data directory,
/// creates the media store and generates the signing key if there is none. Returns the path of
/// the config.
///
/// The data directory may already belong to the tenant user (R3) while matrixhostd runs as
/// root. Then every file written here is handed to that user (Synapse must read its config;
/// nobody else may), files are replaced through exclusive temporary files and renames so a
/// symlink planted by the tenant is never followed, and the signing key is generated by Synapse
/// running as the tenant, not as root. Files holding secrets are 0600. A data directory that
/// does not exist yet is created 0700.
pub fn write_files(spec: &SynapseSpec, secrets: &SynapseSecrets, notice_html: &str, python: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = &spec.data_dir;
    if !dir.exists() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let owner = (meta.uid(), meta.gid());
    // Only root can (and needs to) act for another owner.
    let run_as = (unsafe { libc::geteuid() } == 0 && owner.0 != 0).then_some(owner);

    privacy_notice::ensure_real_dir(&dir.join(MEDIA_DIR))?;
    let consent_dir = dir.join(CONSENT_DIR);
    privacy_notice::write_templates(&consent_dir, &spec.privacy_notice_version, notice_html)?;
    let config = dir.join(CONFIG_FILE);
    privacy_notice::write_atomic(&dir.join(LOG_CONFIG_FILE), render_log_config(dir).as_bytes(), 0o600)?;
    privacy_notice::write_atomic(&config, render_config(spec, secrets).as_bytes(), 0o600)?;

    let mut written = vec![dir.join(MEDIA_DIR), config.clone(), dir.join(LOG_CONFIG_FILE), consent_dir.clone()];
    for entry in std::fs::read_dir(&consent_dir)? {
        let entry = entry?.path();
        if entry.is_dir() {
            for file in std::fs::read_dir(&entry)? {
                written.push(file?.path());
            }
        }
        written.push(entry);
    }
    give_to(owner, &written)?;

    let key = dir.join(SIGNING_KEY_FILE);
    if std::fs::symlink_metadata(&key).is_err() {
        let mut cmd = synapse_command(python, &config, dir, run_as);
        let out = cmd
            .arg("--generate-keys")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("cannot run {}", python.display()))?;
        if !out.status.success() {
            anyhow::bail!(
                "generating the Synapse signing key failed ({}): {}",
                out.status,
                tail_str(&String::from_utf8_lossy(&out.stderr), 2000)
            );
        }
        anyhow::ensure!(key.exists(), "Synapse did not write the signing key {}", key.display());
    }
    {
        // Opened without following a symlink, then fchmod: the key is 0600 whoever wrote it.
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&key)
            .with_context(|| format!("cannot open {}", key.display()))?;
        anyhow::ensure!(f.metadata()?.is_file(), "{} is not a regular file", key.display());
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    give_to(owner, &[key])?;
    Ok(config)
}

/// Hands files to the data directory's owner when they belong to someone else.
fn give_to(owner: (u32, u32), paths: &[PathBuf]) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for p in paths {
        let m = std::fs::symlink_metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if (m.uid(), m.gid()) != owner {
            std::os::unix::fs::lchown(p, Some(owner.0), Some(owner.1))
                .with_context(|| format!("cannot give {} to {}:{}", p.display(), owner.0, owner.1))?;
        }
    }
    Ok(())
}

fn base_env(data_dir: &Path) -> Vec<(String, String)> {
    let mut env = vec![("HOME".to_owned(), path_str(data_dir))];
    env.push(("PATH".to_owned(), std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into())));
    if let Ok(lang) = std::env::var("LANG") {
        env.push(("LANG".to_owned(), lang));
    }
    env
}

/// `python -m synapse.app.homeserver --config-path CONFIG` in the data directory, with an
/// environment of PATH, LANG and HOME (= the data directory) only, in a new process group, and
/// with `run_as = Some((uid, gid))` as that user and group with no supplementary groups.
fn synapse_command(python: &Path, config: &Path, data_dir: &Path, run_as: Option<(u32, u32)>) -> std::process::Command {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(python);
    cmd.args(["-m", "synapse.app.homeserver", "--config-path"])
        .arg(config)
        .env_clear()
        .envs(base_env(data_dir))
        .current_dir(data_dir)
        .stdin(Stdio::null())
        .process_group(0);
    if let Some((uid, gid)) = run_as {
        // std sets the gid, then (as root) clears the supplementary groups and sets the uid, all
        // before the pre_exec hook runs. The hook makes the empty group list a hard requirement:
        // it clears the groups itself while it still can, and refuses to exec if a supplementary
        // group or the old identity survived.
        cmd.uid(uid).gid(gid);
        unsafe {
            cmd.pre_exec(move || {
                if libc::geteuid() == 0 && libc::setgroups(0, std::ptr::null()) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let mut groups = [0 as libc::gid_t; 64];
                let n = libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr());
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if groups[..n as usize].iter().any(|&g| g != gid) {
                    return Err(std::io::Error::from_raw_os_error(libc::EPERM));
                }
                if libc::getuid() != uid || libc::geteuid() != uid || libc::getgid() != gid || libc::getegid() != gid {
                    return Err(std::io::Error::from_raw_os_error(libc::EPERM));
                }
                Ok(())
            });
        }
    }
    cmd
}

/// Starts Synapse on `config`. With `uid = Some((uid, gid))` it runs as that user and group with
/// no supplementary groups. It gets its own process group (stop it with `kill(-pid, SIGTERM)`),
/// an environment holding only PATH, LANG and HOME (= the data directory), and its
/// stdout/stderr go to `synapse.out` in the data directory.
pub fn spawn(python: &Path, config: &Path, data_dir: &Path, uid: Option<(u32, u32)>) -> anyhow::Result<tokio::process::Child> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let out_path = data_dir.join(STDOUT_FILE);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&out_path)
        .with_context(|| format!("cannot open {}", out_path.display()))?;
    let m = std::fs::metadata(data_dir)?;
    give_to((m.uid(), m.gid()), std::slice::from_ref(&out_path))?;
    let err = out.try_clone()?;
    let mut cmd = synapse_command(python, config, data_dir, uid);
    cmd.stdout(out).stderr(err);
    tokio::process::Command::from(cmd).spawn().with_context(|| format!("cannot start Synapse with {}", python.display()))
}

/// Polls `GET http://127.0.0.1:PORT/_matrix/client/versions` until it answers 200. On timeout
/// the error carries the tail of Synapse's log and of its stdout/stderr.
pub async fn wait_ready(port: u16, timeout: Duration, data_dir: &Path) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let url = format!("http://127.0.0.1:{port}/_matrix/client/versions");
    let deadline = Instant::now() + timeout;
    loop {
        let last = match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => e.without_url().to_string(),
        };
        if Instant::now() >= deadline {
            anyhow::bail!(
                "Synapse on port {port} was not ready after {:?} (last: {last})\n--- {LOG_FILE} (tail) ---\n{}\n--- {STDOUT_FILE} (tail) ---\n{}",
                timeout,
                tail_file(&data_dir.join(LOG_FILE), 4000),
                tail_file(&data_dir.join(STDOUT_FILE), 4000),
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The last `max` bytes of a file (lossy UTF-8), or a note that it cannot be read.
pub fn tail_file(path: &Path, max: u64) -> String {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        let len = f.metadata()?.len();
        f.seek(SeekFrom::Start(len.saturating_sub(max)))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    read().unwrap_or_else(|e| format!("({} unreadable: {e})", path.display()))
}

fn tail_str(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn spec() -> SynapseSpec {
        SynapseSpec {
            server_name: "chat.acme.example".into(),
            port: 18008,
            data_dir: PathBuf::from("/vol/hs1"),
            federation_enabled: true,
            registration: Registration::InviteOnly,
            allowed_email_domains: vec![],
            guest_access: false,
            encryption_by_default: true,
            mau_cap: 50,
            mau_trial_days: DEFAULT_MAU_TRIAL_DAYS,
            reserved_emails: vec![],
            blocked: None,
            privacy_notice_version: "v0123456789ab".into(),
            public_base_url: "http://127.0.0.1:18008/".into(),
            admin_contact: None,
        }
    }

    fn secrets() -> SynapseSecrets {
        SynapseSecrets { registration_shared_secret: "rss".into(), macaroon_secret_key: "msk".into(), form_secret: "fs".into() }
    }

    fn parse(spec: &SynapseSpec) -> Value {
        let text = render_config(spec, &secrets());
        let body: String = text.lines().filter(|l| !l.starts_with('#')).collect::<Vec<_>>().join("\n");
        serde_json::from_str(&body).unwrap()
    }

    #[test]
    fn secrets_are_random_and_redacted() {
        let a = SynapseSecrets::generate();
        let b = SynapseSecrets::generate();
        assert_ne!(a, b);
        assert_eq!(a.form_secret.len(), 64);
        let dbg = format!("{a:?}");
        assert!(!dbg.contains(&a.registration_shared_secret) && !dbg.contains(&a.macaroon_secret_key) && !dbg.contains(&a.form_secret));
    }

    #[test]
    fn config_is_deterministic_and_offline_safe() {
        let s = spec();
        assert_eq!(render_config(&s, &secrets()), render_config(&s, &secrets()));
        let c = parse(&s);
        assert_eq!(c["server_name"], "chat.acme.example");
        assert_eq!(c["report_stats"], false);
        assert_eq!(c["trusted_key_servers"], json!([]));
        assert_eq!(c["suppress_key_server_warning"], true);
        assert_eq!(c["enable_metrics"], false);
        assert_eq!(c["url_preview_enabled"], false);
        assert_eq!(c["enable_3pid_changes"], false);
        assert_eq!(c["auto_join_rooms"], json!([]));
        assert_eq!(c["rc_login"]["address"]["burst_count"], 50);
        assert!(c["rc_login"].get("account").is_none());
        assert_eq!(c["database"]["args"]["database"], "/vol/hs1/homeserver.db");
        assert_eq!(c["media_store_path"], "/vol/hs1/media_store");
        assert_eq!(c["signing_key_path"], "/vol/hs1/signing.key");
        assert_eq!(c["log_config"], "/vol/hs1/log.config");
        assert_eq!(c["pid_file"], "/vol/hs1/homeserver.pid");
        let l = &c["listeners"][0];
        assert_eq!(l["bind_addresses"], json!(["127.0.0.1"]));
        assert_eq!(l["port"], 18008);
        assert_eq!(l["x_forwarded"], false);
        assert_eq!(l["type"], "http");
        assert_eq!(c["registration_shared_secret"], "rss");
        assert_eq!(c["macaroon_secret_key"], "msk");
        assert_eq!(c["form_secret"], "fs");
        assert_eq!(c["public_baseurl"], "http://127.0.0.1:18008/");
        // A change of any input changes the bytes (and so the hash).
        let mut s2 = spec();
        s2.mau_cap = 51;
        assert_ne!(render_config(&s, &secrets()), render_config(&s2, &secrets()));
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
        assert_eq!(parse(&spec())["mau_limit_reserved_threepids"], json!([]));
    }

    #[test]
    fn r9_registration_modes() {
        let c = parse(&spec());
        assert_eq!(c["enable_registration"], false);
        assert!(c.get("registrations_require_3pid").is_none() && c.get("email").is_none());

        let mut s = spec();
        s.registration = Registration::Open;
        let c = parse(&s);
        assert_eq!(c["enable_registration"], true);
        assert_eq!(c["enable_registration_without_verification"], true);
        assert!(c.get("allowed_local_3pids").is_none());

        let mut s = spec();
        s.registration = Registration::EmailDomains;
        s.allowed_email_domains = vec!["acme.example".into(), "acme-labs.co.uk".into()];
        let c = parse(&s);
        assert_eq!(c["enable_registration"], true);
        assert!(c.get("enable_registration_without_verification").is_none());
        assert_eq!(c["registrations_require_3pid"], json!(["email"]));
        assert_eq!(
            c["allowed_local_3pids"],
            json!([{ "medium": "email", "pattern": r"^[^@]+@(acme\.example|acme\-labs\.co\.uk)$" }])
        );
        assert_eq!(c["email"]["smtp_host"], "127.0.0.1");
        assert!(c["email"]["notif_from"].as_str().unwrap().contains("@chat.acme.example>"));
    }

    #[test]
    fn r9_guests_and_federation() {
        let c = parse(&spec());
        assert_eq!(c["allow_guest_access"], false);
        assert_eq!(c["listeners"][0]["resources"][0]["names"], json!(["client", "consent", "federation"]));
        assert!(c.get("federation_domain_whitelist").is_none());

        let mut s = spec();
        s.guest_access = true;
        s.federation_enabled = false;
        let c = parse(&s);
        assert_eq!(c["allow_guest_access"], true);
        assert_eq!(c["federation_domain_whitelist"], json!([]));
        assert_eq!(c["listeners"][0]["resources"][0]["names"], json!(["client", "consent"]));
    }

    #[test]
    fn r12_blocked_disables_the_homeserver() {
        let c = parse(&spec());
        assert!(c.get("hs_disabled").is_none());
        let mut s = spec();
        s.blocked = Some("R12: payment failed".into());
        s.admin_contact = Some("mailto:it@acme.example".into());
        let c = parse(&s);
        assert_eq!(c["hs_disabled"], true);
        assert_eq!(c["hs_disabled_message"], "R12: payment failed");
        assert_eq!(c["admin_contact"], "mailto:it@acme.example");
    }

    #[test]
    fn r19_r22_consent_and_encryption() {
        let c = parse(&spec());
        assert_eq!(c["encryption_enabled_by_default_for_room_type"], "all");
        let u = &c["user_consent"];
        assert_eq!(u["version"], "v0123456789ab");
        assert_eq!(u["template_dir"], "/vol/hs1/consent_templates");
        assert_eq!(u["require_at_registration"], true);
        assert!(u["block_events_error"].as_str().unwrap().contains("%(consent_uri)s"));
        assert_eq!(u["block_events_error"].as_str().unwrap().matches('%').count(), 1);
        let mut s = spec();
        s.encryption_by_default = false;
        assert_eq!(parse(&s)["encryption_enabled_by_default_for_room_type"], "off");
    }

    #[test]
    fn email_pattern_escapes_domains() {
        assert_eq!(email_domain_pattern(&["A.com".into()]), r"^[^@]+@(a\.com)$");
    }

    fn scratch_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mh-{tag}-{}", hex::encode(rand::random::<[u8; 8]>())));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn write_files_is_private_and_does_not_follow_planted_symlinks() {
        use std::os::unix::fs::PermissionsExt;
        let root = scratch_dir("write-files");
        let data = root.join("data");
        std::fs::create_dir(&data).unwrap();
        // An existing signing key: no Synapse needed to write the rest.
        std::fs::write(data.join(SIGNING_KEY_FILE), "ed25519 a_abcd AAAA\n").unwrap();
        // Things a tenant could plant in its own data directory.
        let victim = root.join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, data.join(CONFIG_FILE)).unwrap();
        std::os::unix::fs::symlink(&root, data.join(CONSENT_DIR)).unwrap();
        let mut s = spec();
        s.data_dir = data.clone();
        let config = write_files(&s, &secrets(), "<p>notice</p>", Path::new("/nonexistent/python")).unwrap();
        assert_eq!(config, data.join(CONFIG_FILE));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(std::fs::symlink_metadata(&config).unwrap().is_file());
        assert_eq!(std::fs::read_to_string(&config).unwrap(), render_config(&s, &secrets()));
        assert!(std::fs::symlink_metadata(data.join(CONSENT_DIR)).unwrap().is_dir());
        let notice = data.join(CONSENT_DIR).join("en").join("v0123456789ab.html");
        assert_eq!(std::fs::read_to_string(notice).unwrap(), "<p>notice</p>");
        for f in [CONFIG_FILE, LOG_CONFIG_FILE, SIGNING_KEY_FILE] {
            let mode = std::fs::metadata(data.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f}");
        }
        assert!(data.join(MEDIA_DIR).is_dir());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[tokio::test]
    async fn spawn_clears_the_environment_and_starts_a_process_group() {
        use std::os::unix::fs::PermissionsExt;
        let dir = scratch_dir("spawn");
        let fake = dir.join("fake-python");
        std::fs::write(&fake, "#!/bin/sh\n{ env; echo \"args=$*\"; echo \"pgid=$(cut -d' ' -f5 /proc/$$/stat) pid=$$\"; } > \"$HOME/fake.out\"\necho to-stderr >&2\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut child = spawn(&fake, &dir.join(CONFIG_FILE), &dir, None).unwrap();
        assert!(child.wait().await.unwrap().success());
        let out = std::fs::read_to_string(dir.join("fake.out")).unwrap();
        assert!(out.contains(&format!("HOME={}", dir.display())), "{out}");
        assert!(out.contains("PATH="));
        // Only what spawn passes (and what sh itself adds) is there.
        for var in out.lines().take_while(|l| !l.starts_with("args=")).filter_map(|l| l.split_once('=')).map(|(k, _)| k) {
            assert!(["HOME", "PATH", "LANG", "PWD", "SHLVL", "_", "OLDPWD"].contains(&var), "{var} leaked into Synapse's environment");
        }
        assert!(out.contains(&format!("args=-m synapse.app.homeserver --config-path {}", dir.join(CONFIG_FILE).display())));
        let line = out.lines().find(|l| l.starts_with("pgid=")).unwrap();
        let (pgid, pid) = line.split_once(' ').unwrap();
        assert_eq!(pgid.trim_start_matches("pgid="), pid.trim_start_matches("pid="), "{line}");
        assert_eq!(std::fs::read_to_string(dir.join(STDOUT_FILE)).unwrap(), "to-stderr\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_config_writes_to_the_data_dir() {
        let v: Value = serde_json::from_str(&render_log_config(Path::new("/vol/hs1"))).unwrap();
        assert_eq!(v["handlers"]["file"]["filename"], "/vol/hs1/homeserver.log");
        assert_eq!(v["root"]["level"], "INFO");
    }
}

/// Integration tests against a real Synapse from the project's venv (`scripts/setup.sh`). They
/// skip, with a message, when the venv is missing, unless `MATRIXHOST_REQUIRE_SYNAPSE=1`.
#[cfg(test)]
mod integration {
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use hmac::{Hmac, Mac};
    use matrixhost_api::Registration;
    use reqwest::Method;
    use serde_json::{json, Value};
    use sha2::Sha256;

    use super::super::matrix_admin::{MatrixAdmin, MatrixError};
    use super::super::synapse_db;
    use super::super::privacy_notice::{self, NoticeInput};
    use super::*;

    const DEFAULT_PYTHON: &str = "/work/main/.tools/synapse-venv/bin/python";
    const SERVER: &str = "acme.test";
    const ENTITY: &str = "Acme Corp <Testing & Co>";
    const PW: &str = "correct horse battery staple";

    fn python() -> Option<PathBuf> {
        let candidates = [
            std::env::var_os("MATRIXHOST_SYNAPSE_PYTHON").map(PathBuf::from),
            std::env::var_os("MATRIXHOST_TOOLS_DIR").map(|d| PathBuf::from(d).join("synapse-venv/bin/python")),
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/synapse-venv/bin/python")),
            Some(PathBuf::from(DEFAULT_PYTHON)),
        ];
        if let Some(p) = candidates.into_iter().flatten().find(|p| p.exists()) {
            return Some(p);
        }
        if std::env::var("MATRIXHOST_REQUIRE_SYNAPSE").as_deref() == Ok("1") {
            panic!("MATRIXHOST_REQUIRE_SYNAPSE=1 but there is no Synapse venv at {DEFAULT_PYTHON} (run scripts/setup.sh)");
        }
        eprintln!("SKIPPED: no Synapse venv at {DEFAULT_PYTHON} (run scripts/setup.sh to install it)");
        None
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let p = std::env::temp_dir().join(format!("mh-synapse-{}", hex::encode(rand::random::<[u8; 8]>())));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    /// A running Synapse; dropping it kills the process group (then removes the data dir).
    struct Hs {
        python: PathBuf,
        spec: SynapseSpec,
        secrets: SynapseSecrets,
        notice: String,
        child: Option<tokio::process::Child>,
        http: reqwest::Client,
        _dir: TempDir,
    }

    impl Hs {
        async fn start(python: PathBuf, tweak: impl FnOnce(&mut SynapseSpec)) -> Hs {
            let dir = TempDir::new();
            let port = free_port();
            let notice = privacy_notice::render(&NoticeInput {
                entity_name: ENTITY,
                admin_email: "it@acme.test",
                server_name: SERVER,
                processor_name: "matrixhost",
            });
            let mut spec = SynapseSpec {
                server_name: SERVER.into(),
                port,
                data_dir: dir.0.join("data"),
                federation_enabled: false,
                registration: Registration::InviteOnly,
                allowed_email_domains: vec![],
                guest_access: false,
                encryption_by_default: true,
                mau_cap: 10,
                mau_trial_days: DEFAULT_MAU_TRIAL_DAYS,
                reserved_emails: vec![],
                blocked: None,
                privacy_notice_version: privacy_notice::version_of(&notice),
                public_base_url: format!("http://127.0.0.1:{port}/"),
                admin_contact: Some("mailto:it@acme.test".into()),
            };
            tweak(&mut spec);
            let mut hs = Hs {
                python,
                spec,
                secrets: SynapseSecrets::generate(),
                notice,
                child: None,
                http: reqwest::Client::new(),
                _dir: dir,
            };
            hs.boot().await;
            hs
        }

        async fn boot(&mut self) {
            let t = Instant::now();
            let config = write_files(&self.spec, &self.secrets, &self.notice, &self.python).unwrap();
            self.child = Some(spawn(&self.python, &config, &self.spec.data_dir, None).unwrap());
            wait_ready(self.spec.port, Duration::from_secs(90), &self.spec.data_dir).await.unwrap();
            eprintln!("Synapse ready on port {} in {:?}", self.spec.port, t.elapsed());
        }

        async fn stop(&mut self) {
            if let Some(mut child) = self.child.take() {
                if let Some(pid) = child.id() {
                    unsafe { libc::kill(-(pid as i32), libc::SIGTERM) };
                    if tokio::time::timeout(Duration::from_secs(20), child.wait()).await.is_err() {
                        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                    }
                }
                let _ = child.wait().await;
            }
        }

        /// Rewrites the config from the (changed) spec and restarts Synapse.
        async fn restart(&mut self) {
            self.stop().await;
            self.boot().await;
        }

        fn admin(&self) -> MatrixAdmin {
            MatrixAdmin::new(format!("http://127.0.0.1:{}", self.spec.port), self.secrets.registration_shared_secret.clone())
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{}", self.spec.port, path)
        }

        fn mau(&self) -> u64 {
            synapse_db::mau(&self.python, &self.spec.data_dir.join(DATABASE_FILE)).unwrap()
        }

        /// A raw client call: (status, JSON body or Null).
        async fn call(&self, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
            let mut req = self.http.request(method, self.url(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        }

        async fn text(&self, method: Method, path: &str) -> (u16, String) {
            let resp = self.http.request(method, self.url(path)).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }

        /// Any authenticated request makes the user active (it lands in the MAU table).
        async fn make_active(&self, token: &str) {
            let (s, v) = self.call(Method::GET, "/_matrix/client/v3/account/whoami", Some(token), None).await;
            assert_eq!(s, 200, "{v}");
        }

        fn consent_hmac(&self, user: &str) -> String {
            let mut mac = Hmac::<Sha256>::new_from_slice(self.secrets.form_secret.as_bytes()).unwrap();
            mac.update(user.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }

        /// Accepts the privacy notice the way the notice's form does.
        async fn consent(&self, localpart: &str) {
            let path = format!(
                "/_matrix/consent?u={localpart}&h={}&v={}",
                self.consent_hmac(localpart),
                self.spec.privacy_notice_version
            );
            let (s, body) = self.text(Method::POST, &path).await;
            assert_eq!(s, 200, "{body}");
            assert!(body.contains("acceptance of the privacy notice has been recorded"), "{body}");
        }

        async fn create_room(&self, token: &str) -> (u16, Value) {
            self.call(Method::POST, "/_matrix/client/v3/createRoom", Some(token), Some(json!({ "preset": "private_chat" }))).await
        }
    }

    impl Drop for Hs {
        fn drop(&mut self) {
            if let Some(mut child) = self.child.take() {
                if let Some(pid) = child.id() {
                    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
                }
                for _ in 0..100 {
                    if !matches!(child.try_wait(), Ok(None)) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            if std::thread::panicking() {
                eprintln!("--- Synapse log tail ---\n{}", tail_file(&self.spec.data_dir.join(LOG_FILE), 6000));
                eprintln!("--- Synapse stdout/stderr tail ---\n{}", tail_file(&self.spec.data_dir.join(STDOUT_FILE), 3000));
            }
        }
    }

    fn matrix_err(e: &anyhow::Error) -> &MatrixError {
        e.downcast_ref::<MatrixError>().unwrap_or_else(|| panic!("not a Matrix error: {e:#}"))
    }

    /// Accounts, R19 consent, R22 encryption, R9 (invite-only, no guests, no federation) and R6
    /// (trial users do not count) on one homeserver with a MAU cap of 1.
    #[tokio::test(flavor = "multi_thread")]
    async fn synapse_accounts_notice_e2ee_and_r9_refusals() {
        let Some(python) = python() else { return };
        let t = Instant::now();
        let hs = Hs::start(python, |s| s.mau_cap = 1).await;
        let admin = hs.admin();

        // Shared-secret registration and password login.
        let boss = admin.register("boss", PW, true, Some("The Boss")).await.unwrap();
        let alice = admin.register("alice", PW, false, None).await.unwrap();
        assert!(!boss.is_empty() && !alice.is_empty());
        admin.login("alice", PW).await.unwrap();
        admin.login("@boss:acme.test", PW).await.unwrap();
        let e = admin.login("alice", "wrong password").await.unwrap_err();
        assert_eq!((e.status, e.errcode.as_str()), (403, "M_FORBIDDEN"), "{e}");
        // A bad shared secret is refused and the error names neither secret nor password.
        let bad = MatrixAdmin::new(admin.base(), "not-the-secret");
        let e = bad.register("mallory", "mallory-password", false, None).await.unwrap_err();
        let text = format!("{e:#}");
        assert!(text.contains("HMAC incorrect") && !text.contains("mallory-password") && !text.contains("not-the-secret"), "{text}");
        assert_eq!(matrix_err(&e).status, 403);

        // Admin-API accounts: the password is set on creation only.
        admin.upsert_user(&boss, "@carol:acme.test", "Carol@Acme.test", Some("Carol"), false, Some(PW)).await.unwrap();
        admin.login("carol", PW).await.unwrap();
        admin.upsert_user(&boss, "@carol:acme.test", "carol@acme.test", Some("Carol C."), false, Some("another password")).await.unwrap();
        admin.login("carol", PW).await.unwrap();
        let (s, v) = hs.call(Method::GET, "/_synapse/admin/v2/users/@carol:acme.test", Some(&boss), None).await;
        assert_eq!(s, 200);
        assert_eq!(v["displayname"], "Carol C.");
        assert_eq!(v["threepids"][0]["address"], "carol@acme.test");
        assert_eq!(admin.registered_users(&boss).await.unwrap(), 3);
        admin.deactivate(&boss, "@carol:acme.test", true).await.unwrap();
        assert_eq!(admin.registered_users(&boss).await.unwrap(), 2);
        let e = admin.login("carol", PW).await.unwrap_err();
        eprintln!("login of a deactivated user: {e}");
        assert_eq!((e.status, e.errcode.as_str()), (403, "M_FORBIDDEN"));

        // R6: with mau_trial_days = 2, brand-new accounts are trial users: three of them are
        // active on a cap of 1 and none counts yet.
        hs.make_active(&boss).await;
        hs.make_active(&alice).await;
        assert_eq!(hs.mau(), 0);

        // R9 invite-only: client registration is refused.
        let (s, v) = hs
            .call(Method::POST, "/_matrix/client/v3/register", None, Some(json!({ "username": "eve", "password": PW, "auth": { "type": "m.login.dummy" } })))
            .await;
        eprintln!("registration on an invite-only server: {s} {v}");
        assert_eq!((s, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")));

        // R9 guests off.
        let (s, v) = hs.call(Method::POST, "/_matrix/client/v3/register?kind=guest", None, Some(json!({}))).await;
        eprintln!("guest registration: {s} {v}");
        // Synapse 1.163 answers this one with M_UNKNOWN (M_GUEST_ACCESS_FORBIDDEN is for rooms).
        assert_eq!((s, v["errcode"].as_str(), v["error"].as_str()), (403, Some("M_UNKNOWN"), Some("Guest access is disabled")));

        // R19: the public notice names the controller, the processor and the server.
        let (s, html) = hs.text(Method::GET, "/_matrix/consent").await;
        assert_eq!(s, 200);
        assert!(html.contains("<strong>Data controller:</strong> Acme Corp &lt;Testing &amp; Co&gt;"), "{html}");
        assert!(html.contains("<strong>Data processor:</strong> matrixhost") && html.contains("acme.test"));
        assert!(html.contains("After you sign in") && !html.contains("<form"));
        // Before accepting, alice cannot create rooms or send messages.
        let (s, v) = hs.create_room(&alice).await;
        eprintln!("room creation before consent: {s} {v}");
        assert_eq!((s, v["errcode"].as_str()), (403, Some("M_CONSENT_NOT_GIVEN")));
        assert!(v["consent_uri"].as_str().unwrap().contains("/_matrix/consent?u=alice&h="), "{v}");
        // Her personal link shows the form with Synapse's hidden fields; a wrong HMAC is refused.
        let (s, html) = hs.text(Method::GET, &format!("/_matrix/consent?u=alice&h={}", hs.consent_hmac("alice"))).await;
        assert_eq!(s, 200);
        assert!(html.contains("Acme Corp &lt;Testing &amp; Co&gt;"));
        assert!(html.contains(r#"name="u" value="alice""#), "{html}");
        assert!(html.contains(&format!(r#"name="v" value="{}""#, hs.spec.privacy_notice_version)));
        assert!(html.contains(&format!(r#"name="h" value="{}""#, hs.consent_hmac("alice"))));
        let (s, _) = hs.text(Method::GET, &format!("/_matrix/consent?u=alice&h={}", hs.consent_hmac("bob"))).await;
        assert_eq!(s, 403);
        hs.consent("alice").await;
        let (_, html) = hs.text(Method::GET, &format!("/_matrix/consent?u=alice&h={}", hs.consent_hmac("alice"))).await;
        assert!(html.contains("You have accepted this version") && !html.contains("<form"));

        // R22: new rooms are end-to-end encrypted.
        let (s, v) = hs.create_room(&alice).await;
        assert_eq!(s, 200, "{v}");
        let room = v["room_id"].as_str().unwrap().to_owned();
        let (s, v) = hs.call(Method::GET, &format!("/_matrix/client/v3/rooms/{room}/state/m.room.encryption/"), Some(&alice), None).await;
        assert_eq!((s, v["algorithm"].as_str()), (200, Some("m.megolm.v1.aes-sha2")), "{v}");

        // R9 federation off: a remote invite is refused.
        let (s, v) = hs
            .call(Method::POST, &format!("/_matrix/client/v3/rooms/{room}/invite"), Some(&alice), Some(json!({ "user_id": "@someone:other.example" })))
            .await;
        eprintln!("remote invite with federation off: {s} {v}");
        assert_eq!((s, v["errcode"].as_str()), (403, Some("M_FORBIDDEN")));
        assert!(v["error"].as_str().unwrap().contains("Federation denied with other.example"), "{v}");

        // R19: a changed notice is a new version that alice must accept again.
        let mut hs = hs;
        hs.notice = privacy_notice::render(&NoticeInput {
            entity_name: "Acme Corporation",
            admin_email: "privacy@acme.test",
            server_name: SERVER,
            processor_name: "matrixhost",
        });
        let old_version = std::mem::replace(&mut hs.spec.privacy_notice_version, privacy_notice::version_of(&hs.notice));
        assert_ne!(old_version, hs.spec.privacy_notice_version);
        hs.restart().await;
        let (s, v) = hs.create_room(&alice).await;
        assert_eq!((s, v["errcode"].as_str()), (403, Some("M_CONSENT_NOT_GIVEN")), "{v}");
        let (_, html) = hs.text(Method::GET, &format!("/_matrix/consent?u=alice&h={}", hs.consent_hmac("alice"))).await;
        assert!(html.contains("Acme Corporation") && html.contains("privacy@acme.test") && html.contains("<form"));
        hs.consent("alice").await;
        let (s, v) = hs.create_room(&alice).await;
        assert_eq!(s, 200, "{v}");
        eprintln!("test took {:?}", t.elapsed());
    }

    /// R7/R8: a cap of 3 with one reserved user. Reserved threepids apply at start-up, so the
    /// reserved account is created first and Synapse restarted; then admin + reserved + one more
    /// user fill the cap, the next users are locked out and the reserved user still gets in.
    #[tokio::test(flavor = "multi_thread")]
    async fn synapse_mau_cap_with_reserved_user() {
        let Some(python) = python() else { return };
        let t = Instant::now();
        let mut hs = Hs::start(python, |s| {
            s.mau_cap = 3;
            s.mau_trial_days = 0;
            s.reserved_emails = vec!["VIP@acme.test".into()];
        })
        .await;
        let admin = hs.admin();
        let boss = admin.register("boss", PW, true, None).await.unwrap();
        hs.make_active(&boss).await;
        admin.upsert_user(&boss, "@vip:acme.test", "vip@acme.test", Some("VIP"), false, Some(PW)).await.unwrap();
        assert_eq!(hs.mau(), 1, "the reserved user is not counted before a restart");

        hs.restart().await;
        assert_eq!(hs.mau(), 2, "after the restart the reserved user holds a slot");

        let u1 = admin.register("u1", PW, false, None).await.unwrap();
        hs.make_active(&u1).await;
        assert_eq!(hs.mau(), 3);

        // R7: the cap is reached; a new user is locked out (Synapse creates the account but
        // refuses its token), and so is their login.
        let e = admin.register("u2", PW, false, None).await.unwrap_err();
        let m = matrix_err(&e);
        eprintln!("registration over the cap: {m}");
        assert_eq!((m.status, m.errcode.as_str()), (403, "M_RESOURCE_LIMIT_EXCEEDED"));
        assert_eq!(m.error, "Monthly Active User Limit Exceeded");
        let e = admin.login("u2", PW).await.unwrap_err();
        assert_eq!((e.status, e.errcode.as_str()), (403, "M_RESOURCE_LIMIT_EXCEEDED"));
        let (s, v) = hs
            .call(Method::POST, "/_matrix/client/v3/login", None, Some(json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "u2" }, "password": PW })))
            .await;
        eprintln!("login of a new user over the cap: {s} {v}");
        assert_eq!(v["limit_type"], "monthly_active_user");
        assert_eq!(v["admin_contact"], "mailto:it@acme.test");
        let e = admin.register("u3", PW, false, None).await.unwrap_err();
        assert_eq!(matrix_err(&e).errcode, "M_RESOURCE_LIMIT_EXCEEDED");

        // R8: the reserved user still logs in; R7: active users go on.
        let vip = admin.login("vip", PW).await.unwrap();
        hs.make_active(&vip).await;
        admin.login("u1", PW).await.unwrap();
        admin.login("boss", PW).await.unwrap();
        assert_eq!(hs.mau(), 3);
        assert_eq!(admin.registered_users(&boss).await.unwrap(), 5);
        eprintln!("test took {:?}", t.elapsed());
    }

    /// R8 when the reserved user arrives after the cap is full: it cannot log in until a
    /// restart; on restart Synapse puts it in the MAU table and trims the other users back to
    /// cap - reserved, dropping the least recently active one.
    #[tokio::test(flavor = "multi_thread")]
    async fn synapse_reserved_user_added_when_cap_is_full() {
        let Some(python) = python() else { return };
        let t = Instant::now();
        let mut hs = Hs::start(python, |s| {
            s.mau_cap = 3;
            s.mau_trial_days = 0;
            s.reserved_emails = vec!["vip@acme.test".into()];
        })
        .await;
        let admin = hs.admin();
        let boss = admin.register("boss", PW, true, None).await.unwrap();
        hs.make_active(&boss).await;
        for u in ["u1", "u2"] {
            let tok = admin.register(u, PW, false, None).await.unwrap();
            hs.make_active(&tok).await;
        }
        assert_eq!(hs.mau(), 3);
        let e = admin.register("u3", PW, false, None).await.unwrap_err();
        assert_eq!(matrix_err(&e).errcode, "M_RESOURCE_LIMIT_EXCEEDED");

        admin.upsert_user(&boss, "@vip:acme.test", "vip@acme.test", None, false, Some(PW)).await.unwrap();
        let e = admin.login("vip", PW).await.unwrap_err();
        assert_eq!(e.errcode, "M_RESOURCE_LIMIT_EXCEEDED", "before a restart the reservation is not in force");

        hs.restart().await;
        admin.login("vip", PW).await.unwrap();
        // The start-up reaper runs in the background: wait for it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while hs.mau() != 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(hs.mau(), 3, "reserved user + the two most recently active users");
        let e = admin.login("boss", PW).await.unwrap_err();
        assert_eq!(e.errcode, "M_RESOURCE_LIMIT_EXCEEDED", "the least recently active user lost its slot");
        admin.login("u2", PW).await.unwrap();
        eprintln!("test took {:?}", t.elapsed());
    }

    /// R9 email domains: Synapse refuses to start a registration for another domain's email;
    /// R22 off: rooms are created unencrypted.
    #[tokio::test(flavor = "multi_thread")]
    async fn synapse_email_domain_registration_and_e2ee_off() {
        let Some(python) = python() else { return };
        let t = Instant::now();
        let hs = Hs::start(python, |s| {
            s.registration = Registration::EmailDomains;
            s.allowed_email_domains = vec!["acme.test".into(), "acme-labs.test".into()];
            s.encryption_by_default = false;
            s.federation_enabled = true;
        })
        .await;
        let request = |email: &str| {
            json!({ "client_secret": "s3cr3t-client", "email": email, "send_attempt": 1 })
        };
        let (s, v) = hs.call(Method::POST, "/_matrix/client/v3/register/email/requestToken", None, Some(request("eve@evil.example"))).await;
        eprintln!("requestToken for another domain: {s} {v}");
        assert_eq!((s, v["errcode"].as_str()), (403, Some("M_THREEPID_DENIED")));
        let (s, v) = hs.call(Method::POST, "/_matrix/client/v3/register/email/requestToken", None, Some(request("eve@sub.acme.test"))).await;
        assert_eq!((s, v["errcode"].as_str()), (403, Some("M_THREEPID_DENIED")), "subdomains are not whitelisted");
        let (s, v) = hs.call(Method::POST, "/_matrix/client/v3/register/email/requestToken", None, Some(request("Bob@ACME-labs.test"))).await;
        eprintln!("requestToken for a whitelisted domain (no mail relay): {s} {v}");
        assert_ne!(v["errcode"].as_str(), Some("M_THREEPID_DENIED"), "{v}");
        // Every registration flow needs the email step (and the privacy notice).
        let (s, v) = hs.call(Method::POST, "/_matrix/client/v3/register", None, Some(json!({ "username": "eve", "password": PW }))).await;
        eprintln!("registration flows: {s} {}", v["flows"]);
        assert_eq!(s, 401);
        for flow in v["flows"].as_array().unwrap() {
            let stages: Vec<&str> = flow["stages"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
            assert!(stages.contains(&"m.login.email.identity") && stages.contains(&"m.login.terms"), "{stages:?}");
        }

        let admin = hs.admin();
        let boss = admin.register("boss", PW, true, None).await.unwrap();
        hs.consent("boss").await;
        let (s, v) = hs.create_room(&boss).await;
        assert_eq!(s, 200, "{v}");
        let room = v["room_id"].as_str().unwrap();
        let (s, v) = hs.call(Method::GET, &format!("/_matrix/client/v3/rooms/{room}/state/m.room.encryption/"), Some(&boss), None).await;
        assert_eq!((s, v["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{v}");
        // With federation on, the federation listener answers.
        let (s, _) = hs.call(Method::GET, "/_matrix/federation/v1/version", None, None).await;
        assert_eq!(s, 200);
        eprintln!("test took {:?}", t.elapsed());
    }

    /// R12: blocking (hs_disabled + restart) refuses logins with the block message; unblocking
    /// restores them.
    #[tokio::test(flavor = "multi_thread")]
    async fn synapse_blocked_and_unblocked() {
        let Some(python) = python() else { return };
        let t = Instant::now();
        let mut hs = Hs::start(python, |_| {}).await;
        let admin = hs.admin();
        let alice = admin.register("alice", PW, false, None).await.unwrap();
        hs.make_active(&alice).await;
        // Federation off: no federation listener.
        let (s, _) = hs.call(Method::GET, "/_matrix/federation/v1/version", None, None).await;
        assert_eq!(s, 404);

        hs.spec.blocked = Some("R12: this homeserver is blocked until its invoice is paid.".into());
        hs.restart().await;
        let e = admin.login("alice", PW).await.unwrap_err();
        eprintln!("login while blocked: {e}");
        assert_eq!((e.status, e.errcode.as_str()), (403, "M_RESOURCE_LIMIT_EXCEEDED"));
        assert_eq!(e.error, "R12: this homeserver is blocked until its invoice is paid.");
        let (s, v) = hs.call(Method::GET, "/_matrix/client/v3/sync?timeout=0", Some(&alice), None).await;
        eprintln!("sync while blocked: {s} {v}");
        assert_eq!((s, v["errcode"].as_str()), (403, Some("M_RESOURCE_LIMIT_EXCEEDED")));
        assert_eq!(v["limit_type"], "hs_disabled");
        assert_eq!(v["admin_contact"], "mailto:it@acme.test");
        let e = admin.register("bob", PW, false, None).await.unwrap_err();
        assert_eq!(matrix_err(&e).errcode, "M_RESOURCE_LIMIT_EXCEEDED");

        hs.spec.blocked = None;
        hs.restart().await;
        admin.login("alice", PW).await.unwrap();
        let (s, _) = hs.call(Method::GET, "/_matrix/client/v3/sync?timeout=0", Some(&alice), None).await;
        assert_eq!(s, 200);
        eprintln!("test took {:?}", t.elapsed());
    }
}
