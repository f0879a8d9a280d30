//! Accounts on a hosted homeserver, through Synapse's admin APIs (and the client login API).
//!
//! Errors carry Synapse's `errcode` and `error` (as a [`MatrixError`] inside the `anyhow::Error`,
//! so callers can `downcast_ref::<MatrixError>()`), but never a password, the shared secret or an
//! access token: none of them is ever formatted into a message here, and request bodies are never
//! echoed.
//!
//! What Synapse answers is written by the tenant, so it is handled as untrusted: bodies are read
//! up to a bound, only error codes from the Matrix specification are kept (others become
//! `M_UNKNOWN`), and error text is escaped and cut short. It may reach the operator's log, never
//! an API field.

use std::fmt;
use std::time::Duration;

use anyhow::Context;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha1::Sha1;

/// A refusal from the homeserver: the HTTP status and the Matrix `errcode`/`error`. Transport
/// failures have status 0 and errcode `MH_UNREACHABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixError {
    pub status: u16,
    pub errcode: String,
    pub error: String,
}

impl fmt::Display for MatrixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (HTTP {})", self.errcode, self.error, self.status)
    }
}

impl std::error::Error for MatrixError {}

impl MatrixError {
    fn transport(e: reqwest::Error) -> Self {
        // reqwest errors name the URL, which holds no secret (tokens go in headers).
        MatrixError { status: 0, errcode: "MH_UNREACHABLE".into(), error: e.without_url().to_string() }
    }
}

/// Client for one homeserver's admin API.
#[derive(Clone)]
pub struct MatrixAdmin {
    base: String,
    shared_secret: String,
    http: reqwest::Client,
}

impl fmt::Debug for MatrixAdmin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatrixAdmin").field("base", &self.base).field("shared_secret", &"***").finish()
    }
}

/// Percent-encodes a Matrix ID for a URL path segment.
fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The most of a response body the control plane reads from a homeserver.
const MAX_BODY: usize = 1 << 20;

/// Matrix error codes the platform knows; anything else reads as `M_UNKNOWN`.
const KNOWN_ERRCODES: &[&str] = &[
    "M_FORBIDDEN",
    "M_UNKNOWN_TOKEN",
    "M_MISSING_TOKEN",
    "M_BAD_JSON",
    "M_NOT_JSON",
    "M_NOT_FOUND",
    "M_LIMIT_EXCEEDED",
    "M_UNRECOGNIZED",
    "M_UNKNOWN",
    "M_UNAUTHORIZED",
    "M_USER_DEACTIVATED",
    "M_USER_IN_USE",
    "M_INVALID_USERNAME",
    "M_ROOM_IN_USE",
    "M_THREEPID_IN_USE",
    "M_THREEPID_NOT_FOUND",
    "M_THREEPID_DENIED",
    "M_SERVER_NOT_TRUSTED",
    "M_UNSUPPORTED_ROOM_VERSION",
    "M_BAD_STATE",
    "M_GUEST_ACCESS_FORBIDDEN",
    "M_MISSING_PARAM",
    "M_INVALID_PARAM",
    "M_TOO_LARGE",
    "M_EXCLUSIVE",
    "M_RESOURCE_LIMIT_EXCEEDED",
    "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
    "M_CONSENT_NOT_GIVEN",
    "M_WEAK_PASSWORD",
    "M_USER_LOCKED",
    "M_USER_SUSPENDED",
];

/// Error text fit for a log line: printable, escaped, short.
fn clean(text: &str) -> String {
    let mut out: String = text.chars().take(300).flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect();
    if text.chars().count() > 300 {
        out.push('…');
    }
    out
}

async fn bounded_body(mut resp: reqwest::Response) -> Result<Vec<u8>, MatrixError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(MatrixError::transport)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(MatrixError { status: 0, errcode: "MH_TOO_LARGE".into(), error: "the homeserver's answer is too large".into() });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Reads a response: the JSON body on success, a [`MatrixError`] otherwise.
async fn read(resp: Result<reqwest::Response, reqwest::Error>) -> Result<Value, MatrixError> {
    let resp = resp.map_err(MatrixError::transport)?;
    let status = resp.status().as_u16();
    let bytes = bounded_body(resp).await?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let errcode = body["errcode"].as_str().filter(|c| KNOWN_ERRCODES.contains(c)).unwrap_or("M_UNKNOWN").to_owned();
    let error = match body["error"].as_str() {
        Some(e) => clean(e),
        None => format!("HTTP {status} without a Matrix error body"),
    };
    Err(MatrixError { status, errcode, error })
}

impl MatrixAdmin {
    /// `base` is `http://127.0.0.1:PORT` (a trailing `/` is ignored).
    pub fn new(base: impl Into<String>, shared_secret: impl Into<String>) -> Self {
        let base = base.into().trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("a plain reqwest client always builds");
        MatrixAdmin { base, shared_secret: shared_secret.into(), http }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The HMAC-SHA1 Synapse expects for shared-secret registration.
    fn registration_mac(&self, nonce: &str, user: &str, password: &str, admin: bool) -> String {
        let mut mac = Hmac::<Sha1>::new_from_slice(self.shared_secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(nonce.as_bytes());
        mac.update(b"\0");
        mac.update(user.as_bytes());
        mac.update(b"\0");
        mac.update(password.as_bytes());
        mac.update(b"\0");
        mac.update(if admin { b"admin" } else { b"notadmin" });
        hex::encode(mac.finalize().into_bytes())
    }

    /// Shared-secret registration (`/_synapse/admin/v1/register`). Returns the new account's
    /// access token. Note that Synapse issues the token through its normal login path, so a
    /// full MAU cap or a blocked homeserver refuses the token (M_RESOURCE_LIMIT_EXCEEDED) after
    /// the account itself was created.
    pub async fn register(&self, localpart: &str, password: &str, admin: bool, displayname: Option<&str>) -> anyhow::Result<String> {
        let what = || format!("shared-secret registration of `{localpart}`");
        let nonce = read(self.http.get(self.url("/_synapse/admin/v1/register")).send().await).await.with_context(what)?;
        let nonce = nonce["nonce"].as_str().context("Synapse sent no registration nonce").with_context(what)?.to_owned();
        let mut body = json!({
            "nonce": nonce,
            "username": localpart,
            "password": password,
            "admin": admin,
            "mac": self.registration_mac(&nonce, localpart, password, admin),
        });
        if let Some(d) = displayname {
            body["displayname"] = json!(d);
        }
        let resp = read(self.http.post(self.url("/_synapse/admin/v1/register")).json(&body).send().await).await.with_context(what)?;
        resp["access_token"].as_str().map(str::to_owned).context("Synapse returned no access token").with_context(what)
    }

    /// Creates `user_id` or updates it (`PUT /_synapse/admin/v2/users/<user_id>`): display name,
    /// admin flag and the email as its only threepid. The password is set only when the account
    /// is created; an existing account keeps its password.
    pub async fn upsert_user(
        &self,
        admin_token: &str,
        user_id: &str,
        email: &str,
        displayname: Option<&str>,
        admin: bool,
        password: Option<&str>,
    ) -> anyhow::Result<()> {
        let what = || format!("creating or updating `{user_id}`");
        let url = self.url(&format!("/_synapse/admin/v2/users/{}", path_segment(user_id)));
        let exists = match read(self.http.get(&url).bearer_auth(admin_token).send().await).await {
            Ok(_) => true,
            Err(e) if e.status == 404 => false,
            Err(e) => return Err(e).with_context(what),
        };
        let mut body = json!({
            "admin": admin,
            "threepids": [{ "medium": "email", "address": email.to_ascii_lowercase() }],
        });
        if let Some(d) = displayname {
            body["displayname"] = json!(d);
        }
        if let (false, Some(p)) = (exists, password) {
            body["password"] = json!(p);
        }
        read(self.http.put(&url).bearer_auth(admin_token).json(&body).send().await).await.with_context(what)?;
        Ok(())
    }

    /// Sets the password of an existing account, keeping its devices logged in.
    pub async fn set_password(&self, admin_token: &str, user_id: &str, password: &str) -> anyhow::Result<()> {
        let url = self.url(&format!("/_synapse/admin/v2/users/{}", path_segment(user_id)));
        let body = json!({ "password": password, "logout_devices": false });
        read(self.http.put(&url).bearer_auth(admin_token).json(&body).send().await).await.with_context(|| format!("setting the password of `{user_id}`"))?;
        Ok(())
    }

    /// Deactivates `user_id` (`POST /_synapse/admin/v1/deactivate/<user_id>`); with `erase`,
    /// Synapse also erases the user's messages for users who join later, and their profile.
    pub async fn deactivate(&self, admin_token: &str, user_id: &str, erase: bool) -> anyhow::Result<()> {
        let url = self.url(&format!("/_synapse/admin/v1/deactivate/{}", path_segment(user_id)));
        read(self.http.post(url).bearer_auth(admin_token).json(&json!({ "erase": erase })).send().await)
            .await
            .with_context(|| format!("deactivating `{user_id}`"))?;
        Ok(())
    }

    /// R23: the number of registered accounts, not counting guests and deactivated accounts.
    pub async fn registered_users(&self, admin_token: &str) -> anyhow::Result<u64> {
        let url = self.url("/_synapse/admin/v2/users?guests=false&deactivated=false&limit=1");
        let v = read(self.http.get(url).bearer_auth(admin_token).send().await).await.context("listing users")?;
        v["total"].as_u64().context("Synapse's user list has no `total`")
    }

    /// Password login (`POST /_matrix/client/v3/login`, `m.login.password`). Returns the access
    /// token or the homeserver's refusal.
    pub async fn login(&self, user: &str, password: &str) -> Result<String, MatrixError> {
        let body = json!({
            "type": "m.login.password",
            "identifier": { "type": "m.id.user", "user": user },
            "password": password,
        });
        let v = read(self.http.post(self.url("/_matrix/client/v3/login")).json(&body).send().await).await?;
        v["access_token"].as_str().map(str::to_owned).ok_or_else(|| MatrixError {
            status: 200,
            errcode: "M_UNKNOWN".into(),
            error: "login answered without an access token".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_mac_matches_synapse() {
        // Computed with Python: hmac.new(b"secret", b"abc\x00alice\x00pw\x00admin", hashlib.sha1).hexdigest()
        let a = MatrixAdmin::new("http://127.0.0.1:1/", "secret");
        assert_eq!(a.base(), "http://127.0.0.1:1");
        assert_eq!(a.registration_mac("abc", "alice", "pw", true), "dc5ed98b283077684552e3f72d67f26b3366bf58");
    }

    #[test]
    fn debug_hides_the_shared_secret() {
        let a = MatrixAdmin::new("http://127.0.0.1:1", "topsecret");
        assert!(!format!("{a:?}").contains("topsecret"));
    }

    #[test]
    fn tenant_text_is_escaped_and_cut() {
        let c = clean(&format!("line\nforged {}", "x".repeat(400)));
        assert!(!c.contains('\n') && c.chars().count() <= 301 + 2, "{c}");
        assert!(KNOWN_ERRCODES.contains(&"M_RESOURCE_LIMIT_EXCEEDED"));
    }

    #[test]
    fn user_ids_are_encoded_for_paths() {
        assert_eq!(path_segment("@a/b:chat.example.com"), "%40a%2Fb%3Achat.example.com");
    }

    #[tokio::test]
    async fn transport_errors_do_not_leak_secrets() {
        let a = MatrixAdmin::new("http://127.0.0.1:1", "topsecret");
        let e = a.register("alice", "hunter2hunter2", false, None).await.unwrap_err();
        let text = format!("{e:#} {e:?}");
        assert!(!text.contains("topsecret") && !text.contains("hunter2"), "{text}");
        assert_eq!(e.downcast_ref::<MatrixError>().unwrap().errcode, "MH_UNREACHABLE");
        let e = a.login("alice", "hunter2hunter2").await.unwrap_err();
        assert_eq!(e.status, 0);
        assert!(!e.to_string().contains("hunter2"));
    }
}
